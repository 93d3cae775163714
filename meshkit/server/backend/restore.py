"""Restore a meshkit data dir from an etcd snapshot file (etcd -> meshkit migration).

``restore_snapshot(path, data_dir)`` does for meshkit what ``etcdctl snapshot
restore`` does for etcd: it checks the trailing sha256 (unless told not to),
reads the bbolt file and writes ``<data-dir>/member/snap/db`` with the snapshot's
keys and revisions (the whole history the snapshot holds), compaction marks,
leases, alarms and auth data. Membership is *not* taken from the snapshot
(as etcd's restore drops ``members``): start ``meshkit server`` on the data dir
with ``--initial-cluster`` and friends and it bootstraps a new cluster whose
store starts where the snapshot ended. For a cluster, restore the same file
into every member's data dir and start them with the same ``--initial-cluster``.

The consistent index is reset to 0, so the new cluster's Raft log (which starts
at index 1) is applied on top of the restored store.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from meshkit.server.backend import bbolt, schema
from meshkit.server.backend.backend import Backend

# etcd buckets whose bytes meshkit keeps in its generic table in etcd's layout.
_PASSTHROUGH = bbolt.PASSTHROUGH_BUCKETS


class RestoreError(Exception):
    """The snapshot cannot be restored (bad hash, bad file, data dir in use)."""


@dataclass(frozen=True)
class RestoreResult:
    db_path: Path
    revision: int
    kv_rows: int
    leases: int


def restore_snapshot(snapshot: Path | str, data_dir: Path | str, *, skip_hash_check: bool = False,
                     wal_dir: Path | str | None = None) -> RestoreResult:
    """Write a fresh meshkit backend at ``<data_dir>/member/snap/db`` from an etcd
    (or meshkit) snapshot file; refuses a data dir that already has a member."""
    data = Path(data_dir)
    member = data / "member"
    wal = Path(wal_dir) if wal_dir is not None else member / "wal"
    if member.exists() and any(member.iterdir()):
        raise RestoreError(f"data-dir {str(data)!r} exists")
    if wal.exists() and any(wal.iterdir()):
        raise RestoreError(f"wal-dir {str(wal)!r} exists")
    blob = Path(snapshot).read_bytes()
    try:
        if skip_hash_check:
            raw, _ = bbolt.split_snapshot(blob)
        else:
            raw = bbolt.verify_snapshot_hash(blob)
        db = bbolt.read_bbolt(raw)
        rows = list(bbolt.kv_rows(db))
    except bbolt.BoltFormatError as e:
        raise RestoreError(f"cannot restore {snapshot}: {e}") from e
    if b"key" not in db.buckets or b"meta" not in db.buckets:
        raise RestoreError(f"{snapshot} is not an etcd snapshot (no key/meta bucket)")

    snap_dir = member / "snap"
    snap_dir.mkdir(parents=True, exist_ok=True)
    final = snap_dir / "db"
    tmp = snap_dir / "db.restore-tmp"
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    be = Backend.open(tmp)
    try:
        be.put_kvs(rows)
        for theirs, ours in ((b"finishedCompactRev", schema.META_COMPACT_REV),
                             (b"scheduledCompactRev", schema.META_SCHEDULED_COMPACT_REV)):
            v = db.get(b"meta", theirs)
            if v is not None:
                be.set_meta_int(ours, bbolt.parse_rev_key(v)[0])
        leases = 0
        for k, v in db.buckets.get(b"lease", []):
            f = bbolt.parse_varint_fields(v)
            lid, ttl, remaining = (f.get(n, 0) for n in (1, 2, 3))
            if not (isinstance(lid, int) and isinstance(ttl, int) and isinstance(remaining, int)):
                raise RestoreError(f"lease {k.hex()} in {snapshot} is not a leasepb.Lease")
            be.bucket_put("lease", struct.pack(">q", lid), struct.pack(">qq", ttl, remaining))
            leases += 1
        for name in _PASSTHROUGH:
            for k, v in db.buckets.get(name.encode(), []):
                be.bucket_put(name, k, v)
        be.set_consistent_index(0)
        be.sync()
    finally:
        be.close()
    os.replace(tmp, final)
    for side in ("-wal", "-shm"):
        Path(f"{tmp}{side}").unlink(missing_ok=True)
    revision = rows[-1][0] if rows else 1
    return RestoreResult(final, revision, len(rows), leases)
