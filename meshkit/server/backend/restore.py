"""Restore a meshkit data dir from an etcd snapshot file (etcd -> meshkit migration).

``restore_snapshot(path, data_dir)`` does for meshkit what ``etcdctl snapshot
restore`` does for etcd, with etcdctl 3.4's checks in its order and its error
texts: the data dir must not exist (nor ``--wal-dir``, when given), the file's
trailing sha256 must match (unless ``skip_hash_check``; a file without one, a
``cp`` of a member's ``db``, needs ``skip_hash_check``), the rest must open as a
bbolt database. It then writes ``<data-dir>/member/snap/db`` with the
snapshot's keys and revisions (the whole history the snapshot holds),
compaction marks, leases, alarms and auth data. Nothing is written until every
check passed, and a failed restore leaves nothing behind.

Membership is *not* taken from the snapshot (etcd's restore replaces it too):
``meshkit server`` started on the data dir with ``--name``/``--initial-cluster``/
``--initial-cluster-token`` bootstraps a new cluster whose store starts where the
snapshot ended. For a cluster, restore the same file into every member's data
dir and start them with the same ``--initial-cluster``. The consistent index is
reset to 0, so the new cluster's Raft log (which starts at index 1) is applied on
top of the restored store.

``meshkit ctl snapshot restore`` and ``meshkit snapshot restore`` are the command
line front ends (etcdctl's flags and messages: ``meshkit/ctl/cmd_snapshot.py``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from meshkit._internal.errors import MeshkitError
from meshkit.server.backend import bbolt, schema
from meshkit.server.backend.backend import Backend, KVRow

# etcd buckets whose bytes meshkit keeps in its generic table in etcd's layout.
_PASSTHROUGH = bbolt.PASSTHROUGH_BUCKETS
# kv rows written per backend batch (and per progress report)
_CHUNK = 10_000

Progress = Callable[[int, int], None]


class RestoreError(MeshkitError):
    """The snapshot cannot be restored; the text is etcdctl 3.4's where it has one."""


class DirExistsError(RestoreError):
    """etcdctl's ``data-dir "X" exists`` / ``wal-dir "X" exists`` (``flag`` is
    ``data-dir`` or ``wal-dir``); front ends quote ``path`` as Go's ``%q``."""

    def __init__(self, flag: str, path: str) -> None:
        super().__init__(f'{flag} "{path}" exists')
        self.flag = flag
        self.path = path


class SnapshotFileError(RestoreError):
    """The snapshot file cannot be read: ``op`` (``open``, ``seek``, ``read``) failed
    with ``reason`` (Go's lower-case errno text), as Go's ``*PathError`` prints."""

    def __init__(self, op: str, path: str, reason: str) -> None:
        super().__init__(f"{op} {path}: {reason}")
        self.op = op
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class RestoreResult:
    db_path: Path
    revision: int
    kv_rows: int
    leases: int
    # the snapshot's finishedCompactRev / scheduledCompactRev (main revisions), if any
    compact_revision: int | None = None
    scheduled_compact_revision: int | None = None


def go_errno_text(e: OSError) -> str:
    """Go's text for an errno (``syscall.Errno.Error()``): the C message, lower case."""
    text = e.strerror or str(e)
    return text[:1].lower() + text[1:]


def go_byte_slice(b: bytes) -> str:
    """``fmt.Sprintf("%v", []byte)``: ``[20 181 115 ...]``."""
    return "[" + " ".join(str(c) for c in b) + "]"


def check_dirs(data_dir: Path | str, wal_dir: Path | str | None = None) -> None:
    """etcdctl 3.4.23's refusal: an existing data dir (even empty), or an existing
    ``--wal-dir`` when one is given."""
    if os.path.lexists(data_dir):
        raise DirExistsError("data-dir", str(data_dir))
    if wal_dir is not None and str(wal_dir) != "" and os.path.lexists(wal_dir):
        raise DirExistsError("wal-dir", str(wal_dir))


def read_snapshot_db(snapshot: Path | str, *, skip_hash_check: bool = False) -> bytes:
    """The bbolt bytes of a snapshot file, checked the way etcdctl's restore does:
    a trailing sha256 is present when the size is 32 bytes past a multiple of 512;
    it must match unless ``skip_hash_check``; a file without one needs
    ``skip_hash_check``; the rest must open as a bbolt database."""
    path = str(snapshot)
    try:
        blob = Path(snapshot).read_bytes()
    except IsADirectoryError:
        # Go opens a directory fine; reading its sha256 fails.
        raise SnapshotFileError("read", path, "is a directory") from None
    except OSError as e:
        raise SnapshotFileError("open", path, go_errno_text(e)) from None
    if len(blob) < bbolt.SHA256_SIZE:
        raise SnapshotFileError("seek", path, "invalid argument")
    raw, sha = bbolt.split_snapshot(blob)
    if sha is None and not skip_hash_check:
        raise RestoreError("snapshot missing hash but --skip-hash-check=false")
    if sha is not None and not skip_hash_check:
        got = hashlib.sha256(raw).digest()
        if got != sha:
            raise RestoreError(f"expected sha256 {go_byte_slice(sha)}, got {go_byte_slice(got)}")
    return raw


def restore_snapshot(snapshot: Path | str, data_dir: Path | str, *, skip_hash_check: bool = False,
                     wal_dir: Path | str | None = None, progress: Progress | None = None) -> RestoreResult:
    """Write a fresh meshkit backend at ``<data_dir>/member/snap/db`` from an etcd
    (or meshkit) snapshot file. Refuses an existing data dir or ``wal_dir`` (the
    WAL itself is created by ``meshkit server`` when it bootstraps). ``progress``,
    if given, is called with (kv rows written, kv rows in all) as the store fills."""
    check_dirs(data_dir, wal_dir)
    raw = read_snapshot_db(snapshot, skip_hash_check=skip_hash_check)
    db_file = Path(data_dir) / "member" / "snap" / "db"
    try:
        bbolt.check_open(raw)
        db = bbolt.read_bbolt(raw)
        rows = list(bbolt.kv_rows(db))
        leases = []
        for k, v in db.buckets.get(b"lease", []):
            f = bbolt.parse_varint_fields(v)
            lid, ttl, remaining = (f.get(n, 0) for n in (1, 2, 3))
            if not (isinstance(lid, int) and isinstance(ttl, int) and isinstance(remaining, int)):
                raise bbolt.BoltFormatError(f"lease {k.hex()} is not a leasepb.Lease")
            leases.append((lid, ttl, remaining))
        compact_marks = []
        for theirs, ours in ((b"finishedCompactRev", schema.META_COMPACT_REV),
                             (b"scheduledCompactRev", schema.META_SCHEDULED_COMPACT_REV)):
            mark = db.get(b"meta", theirs)
            if mark is not None:
                compact_marks.append((ours, bbolt.parse_rev_key(mark)[0]))
    except bbolt.BoltFormatError as e:
        # etcdctl opens the copied db with etcd's backend, which panics with this text.
        raise RestoreError(f"cannot open database at {db_file} ({e})") from e
    if b"key" not in db.buckets or b"meta" not in db.buckets:
        raise RestoreError(f"cannot open database at {db_file} (not an etcd snapshot: no key/meta bucket)")

    data = Path(data_dir)
    try:
        _write_backend(db_file, db, rows, leases, compact_marks, progress)
    except BaseException:
        # Undo a half-written restore (the data dir did not exist before it).
        shutil.rmtree(data, ignore_errors=True)
        raise
    revision = rows[-1][0] if rows else 1
    marks = dict(compact_marks)
    return RestoreResult(db_file, revision, len(rows), len(leases),
                         marks.get(schema.META_COMPACT_REV), marks.get(schema.META_SCHEDULED_COMPACT_REV))


def _write_backend(db_file: Path, db: bbolt.BoltDB, rows: list[KVRow],
                   leases: list[tuple[int, int, int]], compact_marks: list[tuple[str, int]],
                   progress: Progress | None) -> None:
    snap_dir = db_file.parent
    snap_dir.mkdir(parents=True, exist_ok=True)
    tmp = snap_dir / "db.restore-tmp"
    be = Backend.open(tmp)
    try:
        total = len(rows)
        if progress is not None:
            progress(0, total)
        for i in range(0, total, _CHUNK):
            be.put_kvs(rows[i: i + _CHUNK])
            be.flush()
            if progress is not None:
                progress(min(i + _CHUNK, total), total)
        for name, rev in compact_marks:
            be.set_meta_int(name, rev)
        for lid, ttl, remaining in leases:
            be.bucket_put("lease", struct.pack(">q", lid), struct.pack(">qq", ttl, remaining))
        for name in _PASSTHROUGH:
            for k, v in db.buckets.get(name.encode(), []):
                be.bucket_put(name, k, v)
        be.set_consistent_index(0)
        be.sync()
    finally:
        be.close()
    os.replace(tmp, db_file)
    for side in ("-wal", "-shm"):
        Path(f"{tmp}{side}").unlink(missing_ok=True)
    _fsync_dir(snap_dir)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
