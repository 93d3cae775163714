"""etcdctl 3.4's ``snapshot save|status|restore`` (also ``meshkit snapshot ...``).

* ``save FILE``: streams Maintenance.Snapshot from the one endpoint into
  ``FILE.part``, checks the trailing sha256 against the received database
  (etcdctl 3.4 itself does not; ``restore`` does), fsyncs, renames to ``FILE``.
  Works against meshkit and a real etcd: both send the same framing.
* ``status FILE``: opens the file as bbolt the way etcdctl does (bbolt's own
  error texts), prints hash, revision, total keys and total size.
* ``restore FILE``: etcdctl's flags and checks (``--name``, ``--initial-cluster``
  ...), then :func:`meshkit.server.backend.restore.restore_snapshot` writes a
  *meshkit* data dir that ``meshkit server`` started with the same flags
  bootstraps from (the real etcdctl's restore writes an etcd data dir).

Messages, exit codes and etcdctl's zap log lines on stderr are etcdctl 3.4.23's
(checked side by side in ``tests/tools/ctl/test_ctl_snapshot.py``). On a terminal,
save and restore show a progress bar on stderr (tqdm); stdout never changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import os
import posixpath
import sys
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from meshkit.api.etcdserverpb import rpc_pb2
from meshkit.client.raw import RpcFailure
from meshkit.ctl.errors import EXIT_BAD_ARGS, EXIT_ERROR, EXIT_INTERRUPTED, CtlExit, rpc_text
from meshkit.ctl.flags import Command, Opt, Parsed
from meshkit.ctl.gofmt import human_bytes, quote
from meshkit.server.backend import bbolt
from meshkit.server.backend.restore import (
    DirExistsError,
    RestoreError,
    check_dirs,
    go_byte_slice,
    go_errno_text,
    restore_snapshot,
)

if TYPE_CHECKING:
    from meshkit.ctl.app import Ctx

__all__ = ["RESTORE_OPTS", "ZapLog", "cmd_restore", "cmd_save", "cmd_status", "read_status",
           "snapshot_commands"]

DEFAULT_NAME = "default"
DEFAULT_PEER_URL = "http://localhost:2380"

RESTORE_OPTS = [
    Opt("data-dir", "string", "", "Path to the data directory"),
    Opt("wal-dir", "string", "", "Path to the WAL directory (use --data-dir if none given)"),
    Opt("initial-cluster", "string", f"{DEFAULT_NAME}={DEFAULT_PEER_URL}",
        "Initial cluster configuration for restore bootstrap"),
    Opt("initial-cluster-token", "string", "etcd-cluster",
        "Initial cluster token for the etcd cluster during restore bootstrap"),
    Opt("initial-advertise-peer-urls", "string", DEFAULT_PEER_URL,
        "List of this member's peer URLs to advertise to the rest of the cluster"),
    Opt("name", "string", DEFAULT_NAME, "Human-readable name for this member"),
    Opt("skip-hash-check", "bool", False,
        "Ignore snapshot integrity hash value (required if copied from data directory)"),
]


def snapshot_commands() -> list[Command]:
    """The three subcommands of ``snapshot``, as etcdctl 3.4 declares them."""
    return [
        Command("save", "Stores an etcd node backend snapshot to a given file", use="save <filename>",
                run=cmd_save),
        Command("status", "Gets backend snapshot status of a given file", use="status <filename>",
                run=cmd_status,
                long="When --write-out is set to simple, this command prints out comma-separated "
                     "status lists for each endpoint.\nThe items in the lists are hash, revision, "
                     "total keys, total size.\n"),
        Command("restore", "Restores an etcd member snapshot to an etcd directory",
                use="restore <filename> [options]", opts=list(RESTORE_OPTS), run=cmd_restore),
    ]


# ---------------------------------------------------------------- etcdctl's zap lines


def _go_float(x: float) -> str:
    """``strconv.FormatFloat(x, 'f', -1, 64)``: shortest digits, never an exponent."""
    r = repr(float(x))
    if "e" in r or "E" in r:
        r = format(Decimal(r), "f")
    return r[:-2] if r.endswith(".0") else r


def _zap_value(v: Any) -> str:
    if isinstance(v, float):
        return _go_float(v)
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


class ZapLog:
    """etcdctl's ``zap.NewProduction()`` JSON lines on stderr (epoch ``ts``), and the
    client library's (``ts`` as ISO 8601 with milliseconds)."""

    def __init__(self, out: Any = None) -> None:
        self.out = out

    def _write(self, ts: str, caller: str, msg: str, fields: list[tuple[str, Any]]) -> None:
        out = self.out or sys.stderr
        body = "".join(f",{json.dumps(k)}:{_zap_value(v)}" for k, v in fields)
        out.write(f'{{"level":"info","ts":{ts},"caller":{json.dumps(caller)},"msg":{json.dumps(msg)}{body}}}\n')
        out.flush()

    def info(self, caller: str, msg: str, *fields: tuple[str, Any]) -> None:
        self._write(_go_float(time.time()), caller, msg, list(fields))

    def client_info(self, caller: str, msg: str) -> None:
        now = datetime.datetime.now().astimezone()
        off = now.utcoffset()
        tz = "Z" if not off else now.strftime("%z")
        ts = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}" + tz
        self._write(json.dumps(ts), caller, msg, [])


class _Progress:
    """A tqdm bar on stderr, only when stderr is a terminal."""

    def __init__(self, desc: str, unit: str, scale: bool) -> None:
        self._bar: Any = None
        self._desc, self._unit, self._scale = desc, unit, scale
        self._on = sys.stderr.isatty()

    def update(self, done: int, total: int) -> None:
        if not self._on:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self._desc, unit=self._unit, unit_scale=self._scale,
                             unit_divisor=1024 if self._scale else 1000, file=sys.stderr, leave=False)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# ---------------------------------------------------------------- save

# "No deadline" for a stream's connection (etcdctl waits for as long as it takes).
_FOREVER = 1e9


def _command_timeout_set(ctx: Ctx) -> bool:
    """cobra's ``Flags().Changed``: on the command line or from ETCDCTL_COMMAND_TIMEOUT."""
    if any(a == "--command-timeout" or a.startswith("--command-timeout=") for a in ctx.argv):
        return True
    return bool(os.environ.get("ETCDCTL_COMMAND_TIMEOUT"))


async def cmd_save(ctx: Ctx, p: Parsed) -> int:
    if len(p.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "snapshot save expects one argument")
    eps = ctx.endpoints
    if len(eps) != 1:
        raise CtlExit(EXIT_INTERRUPTED,
                      f"snapshot must be requested to one selected node, not multiple [{' '.join(eps)}]")
    path = p.args[0]
    part = path + ".part"
    log = ZapLog()
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise CtlExit(EXIT_INTERRUPTED, f"could not open {part} (open {part}: {go_errno_text(e)})") from None
    log.info("snapshot/v3_snapshot.go:119", "created temporary db file", ("path", part))
    try:
        # etcdctl: no deadline for the whole save unless --command-timeout was given.
        limit = ctx.timeout if _command_timeout_set(ctx) else None
        try:
            async with asyncio.timeout(limit):
                started = time.monotonic()
                size = await _fetch(ctx, eps[0], fd, log)
                os.fsync(fd)
        except TimeoutError:
            raise CtlExit(EXIT_INTERRUPTED, "context deadline exceeded") from None
        except RpcFailure as e:
            raise CtlExit(EXIT_INTERRUPTED, rpc_text(e)) from None
        except OSError as e:
            raise CtlExit(EXIT_INTERRUPTED, f"write {part}: {go_errno_text(e)}") from None
        os.close(fd)
        fd = -1
        log.info("snapshot/v3_snapshot.go:142", "fetched snapshot", ("endpoint", eps[0]),
                 ("size", human_bytes(size)), ("took", time.monotonic() - started))
        try:
            os.rename(part, path)
        except OSError as e:
            raise CtlExit(EXIT_INTERRUPTED,
                          f"could not rename {part} to {path} (rename {part} {path}: {go_errno_text(e)})") from None
        log.info("snapshot/v3_snapshot.go:152", "saved", ("path", path))
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)
    ctx.printer.line(f"Snapshot saved at {path}")
    return 0


async def _fetch(ctx: Ctx, ep: str, fd: int, log: ZapLog) -> int:
    """Write the stream's blobs to ``fd`` as etcdctl saves them (the database, then
    its sha256) and check that digest. Returns the bytes written."""
    raw = ctx.raw()
    # The Go client logs once the stream is open (connected, request sent).
    await raw.connect_stream(ep, _FOREVER)
    log.client_info("clientv3/maintenance.go:200", "opened snapshot stream; downloading")
    log.info("snapshot/v3_snapshot.go:127", "fetching snapshot", ("endpoint", ep))
    h = hashlib.sha256()
    written = 0
    db_done = False  # the data blob with remaining_bytes 0 has come
    digest: bytes | None = None
    bar = _Progress("snapshot save", "B", True)
    try:
        async for resp in raw.server_stream("maintenance", "Snapshot", rpc_pb2.SnapshotRequest(),
                                            endpoint=ep, timeout=_FOREVER):
            blob = bytes(resp.blob)
            _write_all(fd, blob)
            written += len(blob)
            if digest is not None:
                continue  # nothing follows the digest in etcd's framing
            if db_done:
                digest = blob
                continue
            h.update(blob)
            bar.update(written, written + resp.remaining_bytes)
            if resp.remaining_bytes == 0:
                db_done = True
    finally:
        bar.close()
    log.client_info("clientv3/maintenance.go:208", "completed snapshot read; closing")
    if digest is None:
        raise CtlExit(EXIT_INTERRUPTED, "snapshot stream ended before the sha256 of the database")
    if h.digest() != digest:
        raise CtlExit(EXIT_INTERRUPTED,
                      f"expected sha256 {go_byte_slice(digest)}, got {go_byte_slice(h.digest())}")
    return written


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# ---------------------------------------------------------------- status


def read_status(path: str) -> bbolt.SnapshotStatus:
    """etcdctl's ``snapshot status``: bbolt's open checks and texts, then the
    integrity walk, then hash/revision/keys/size. Raises CtlExit(1) as etcdctl exits."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise CtlExit(EXIT_ERROR, f"stat {path}: {go_errno_text(e)}") from None
    if os.path.isdir(path):
        raise CtlExit(EXIT_ERROR, f"open {path}: is a directory")
    if st.st_size == 0:
        # bbolt initialises an empty file with meta pages: a write to a read-only fd.
        raise CtlExit(EXIT_ERROR, f"write {path}: bad file descriptor")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CtlExit(EXIT_ERROR, f"open {path}: {go_errno_text(e)}") from None
    try:
        bbolt.check_open(data)
    except bbolt.BoltFormatError as e:
        raise CtlExit(EXIT_ERROR, str(e)) from None
    try:
        db = bbolt.read_bbolt(data)
    except bbolt.BoltFormatError as e:
        raise CtlExit(EXIT_ERROR, f"snapshot file integrity check failed. 1 errors found.\n{e}") from None
    return bbolt.snapshot_status(db)


async def cmd_status(ctx: Ctx, p: Parsed) -> int:
    if len(p.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "snapshot status requires exactly one argument")
    st = await asyncio.to_thread(read_status, p.args[0])
    pr = ctx.printer
    row = [f"{st.hash:x}", str(st.revision), str(st.total_key), human_bytes(st.total_size)]
    if pr.fmt == "simple":
        pr.line(", ".join(row))
    elif pr.fmt == "table":
        pr.table(["hash", "revision", "total keys", "total size"], [row])
    elif pr.fmt == "json":
        pr.line(f'{{"hash":{st.hash},"revision":{st.revision},"totalKey":{st.total_key},'
                f'"totalSize":{st.total_size}}}')
    elif pr.fmt == "fields":
        pr.line(f'"Hash" : {st.hash}')
        pr.line(f'"Revision" : {st.revision}')
        pr.line(f'"Keys" : {st.total_key}')
        pr.line(f'"Size" : {st.total_size}')
    else:
        pr.unsupported()
    return 0


# ---------------------------------------------------------------- restore


def _go_join(*parts: str) -> str:
    """``filepath.Join``: joined and cleaned."""
    joined = posixpath.join(*[q for q in parts if q])
    return posixpath.normpath(joined) if joined else ""


def _cluster(v: dict[str, Any]) -> tuple[int, list[tuple[int, list[str]]]]:
    """etcdctl's ``types.NewURLs`` + ``NewURLsMap`` + ``VerifyBootstrap`` on the restore
    flags, then ``NewClusterFromURLsMap``: (cluster id, [(member id, peer URLs)] by id)."""
    from meshkit._internal.goflags import ValueError_
    from meshkit.server.config import ServerConfig, parse_initial_cluster, parse_url
    from meshkit.server.etcdserver import ids

    name = v["name"]
    try:
        peer_urls = tuple(sorted(parse_url(u) for u in v["initial-advertise-peer-urls"].split(",")))
        pairs = parse_initial_cluster(v["initial-cluster"])
    except ValueError_ as e:
        raise CtlExit(EXIT_ERROR, str(e)) from None
    if name not in {n for n, _ in pairs}:
        raise CtlExit(EXIT_ERROR, f'couldn\'t find local name "{name}" in the initial cluster configuration')
    cfg = ServerConfig(name=name, initial_cluster=pairs, initial_advertise_peer_urls=peer_urls,
                       initial_cluster_token=v["initial-cluster-token"])
    problems = cfg._cluster_problems()
    # etcd's VerifyBootstrap order: local member, advertise URLs match, duplicate URLs.
    for marker in ("couldn't find local name", "--initial-cluster has", "has duplicate url"):
        for text in problems:
            if marker in text:
                raise CtlExit(EXIT_ERROR, text)
    if problems:
        raise CtlExit(EXIT_ERROR, problems[0])
    by_name: dict[str, list[str]] = {}
    for n, u in pairs:
        by_name.setdefault(n, []).append(u)
    members = sorted((ids.member_id(urls, v["initial-cluster-token"]), sorted(urls))
                     for urls in by_name.values())
    return ids.cluster_id(m for m, _ in members), members


async def cmd_restore(ctx: Ctx, p: Parsed) -> int:
    if len(p.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "snapshot restore requires exactly one argument")
    v = p.values
    path = p.args[0]
    data_dir = v["data-dir"] or v["name"] + ".etcd"
    wal_dir = v["wal-dir"] or _go_join(data_dir, "member", "wal")
    snap_dir = _go_join(data_dir, "member", "snap")
    cluster_id, members = _cluster(v)
    try:
        check_dirs(data_dir, v["wal-dir"] or None)
    except DirExistsError as e:
        raise CtlExit(EXIT_ERROR, f"{e.flag} {quote(e.path)} exists") from None
    log = ZapLog()
    where = (("path", path), ("wal-dir", wal_dir), ("data-dir", data_dir), ("snap-dir", snap_dir))
    log.info("snapshot/v3_snapshot.go:296", "restoring snapshot", *where)
    bar = _Progress("snapshot restore", " keys", False)
    loop = asyncio.get_running_loop()

    def progress(done: int, total: int) -> None:
        loop.call_soon_threadsafe(bar.update, done, total)

    try:
        res = await asyncio.to_thread(restore_snapshot, path, data_dir, skip_hash_check=v["skip-hash-check"],
                                      wal_dir=v["wal-dir"] or None, progress=progress)
    except RestoreError as e:
        raise CtlExit(EXIT_ERROR, str(e)) from None
    finally:
        await asyncio.sleep(0)  # let queued progress updates run before the bar closes
        bar.close()
    # etcd's mvcc store, opened on the copied db by etcdctl, logs the compaction marks.
    finished = res.compact_revision
    if finished is not None:
        log.info("mvcc/kvstore.go:388", "restored last compact revision", ("meta-bucket-name", "meta"),
                 ("meta-bucket-name-key", "finishedCompactRev"), ("restored-compact-revision", finished))
    scheduled = res.scheduled_compact_revision
    if scheduled and scheduled > (finished if finished is not None else -1):
        log.info("mvcc/kvstore.go:468", "resume scheduled compaction", ("meta-bucket-name", "meta"),
                 ("meta-bucket-name-key", "scheduledCompactRev"), ("scheduled-compact-revision", scheduled))
    for mid, urls in members:
        log.info("membership/cluster.go:392", "added member", ("cluster-id", f"{cluster_id:x}"),
                 ("local-member-id", "0"), ("added-peer-id", f"{mid:x}"), ("added-peer-peer-urls", urls))
    log.info("snapshot/v3_snapshot.go:309", "restored snapshot", *where)
    return 0

