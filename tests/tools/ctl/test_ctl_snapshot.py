"""`meshkit ctl snapshot save|status|restore` against the real etcdctl 3.4.

Every case runs the real etcdctl and `meshkit ctl` with the same arguments (paths
under one directory per tool) and compares exit code, stdout and stderr byte for
byte after normalising what differs between two runs: zap's timestamps, the `took`
of a save, the endpoint and the per-tool directory. The zap log lines themselves
(`{"level":"info",...,"msg":"restoring snapshot",...}`) are compared, not dropped.

`status` reads the same file with both tools: a snapshot saved from the real etcd
and one saved from meshkit, in every output format, plus damaged files.
`restore` compares the messages and exit codes; the data dirs differ by design
(etcdctl writes an etcd member, meshkit ctl a meshkit one: tests/server/snapshot).
"""

from __future__ import annotations

import difflib
import hashlib
import io
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshkit.server.backend import bbolt
from tests.server.snapshot.test_snapshot_etcd import ctl as etcdctl
from tests.support.procs import (
    ETCDCTL,
    ServerProc,
    require_reference_binaries,
    start_etcd,
    start_meshkit,
)
from tests.tools.ctl.conftest import Twins
from tests.tools.ctl.harness import CTL, Result, decode, env_for, run

pytestmark = pytest.mark.etcd

_TS = re.compile(r'"ts":("[^"]*"|[0-9.e+-]+)')
_TOOK = re.compile(r'"took":[0-9.e+-]+')
_SIZE = re.compile(r'"size":"[^"]*"')


def _norm(r: Result, base: Path, *servers: ServerProc) -> tuple[int, str, str]:
    def n(t: str) -> str:
        t = t.replace(str(base), "<dir>")
        for sp in servers:
            t = t.replace(sp.endpoint, "<ep>")
        t = _TS.sub('"ts":<ts>', t)
        t = _TOOK.sub('"took":<took>', t)
        return _SIZE.sub('"size":<size>', t)

    return r.code, n(r.out), n(r.err)


def same(ref: tuple[int, str, str], ours: tuple[int, str, str], what: object) -> None:
    """Assert both tools answered alike; show a line diff when not."""
    if ours == ref:
        return
    diff = "\n".join(difflib.unified_diff((ref[1] + ref[2]).splitlines(), (ours[1] + ours[2]).splitlines(),
                                          "etcdctl", "meshkit ctl", lineterm=""))
    raise AssertionError(f"{what}: exit {ref[0]} vs {ours[0]}\n{diff}")


def run_tool(tool: str, args: list[str], cwd: Path | None = None, timeout: float = 60) -> Result:
    """One command without a server (status, restore), as harness.run does it."""
    assert ETCDCTL is not None
    argv = [ETCDCTL] if tool == "etcdctl" else list(CTL)
    p = subprocess.run([*argv, *args], capture_output=True, env=env_for(), cwd=cwd, timeout=timeout)
    return Result(p.returncode, decode(p.stdout), decode(p.stderr), p.stdout)


def both(tmp: Path, args: list[str], *, servers: tuple[ServerProc, ServerProc] | None = None,
         ) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    """Run ``args`` (``{d}`` = the tool's own directory) with both tools; with
    ``servers``, etcdctl talks to the first and meshkit ctl to the second."""
    out = []
    for i, tool in enumerate(("etcdctl", "meshkit")):
        d = tmp / tool
        d.mkdir(exist_ok=True)
        argv = [a.replace("{d}", str(d)) for a in args]
        if servers is None:
            r = run_tool(tool, argv)
            out.append(_norm(r, d))
        else:
            r = run(tool, servers[i], argv, timeout=60)
            out.append(_norm(r, d, servers[i]))
    return out[0], out[1]


# ---------------------------------------------------------------- files to read


def _fill(ep: str) -> None:
    for i in range(20):
        etcdctl(ep, "put", f"k{i % 6}", f"v{i}")
    etcdctl(ep, "del", "k2")
    lease = etcdctl(ep, "lease", "grant", "600").split()[1]
    etcdctl(ep, "put", "leased", "x", "--lease", lease)
    etcdctl(ep, "compaction", "10")
    etcdctl(ep, "put", "big", "B" * 5000)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A snapshot saved (by the real etcdctl) from the real etcd and one from meshkit,
    with keys, a delete, a lease and a compaction; plus damaged copies."""
    require_reference_binaries()
    tmp = tmp_path_factory.mktemp("snapfiles")
    out: dict[str, Path] = {}
    for kind, start in (("etcd", start_etcd), ("meshkit", start_meshkit)):
        (tmp / kind).mkdir()
        sp = start(tmp / kind)
        try:
            _fill(sp.endpoint)
            out[kind] = tmp / f"{kind}.db"
            etcdctl(sp.endpoint, "snapshot", "save", str(out[kind]))
        finally:
            sp.stop()
    blob = out["etcd"].read_bytes()
    damaged = {
        "badhash": blob[:-1] + bytes([blob[-1] ^ 1]),
        "nohash": blob[:-32],
        "empty": b"",
        "tiny": b"x" * 100,
        "small": b"\x01" * 5000,
        "random": bytes((i * 7919 + 13) % 251 for i in range(20000)),
    }
    meta0 = bytearray(blob)
    meta0[16 + 56] ^= 0xFF  # meta 0's checksum: bbolt falls back on meta 1
    damaged["meta0bad"] = bytes(meta0)
    both_bad = bytearray(meta0)
    both_bad[4096 + 16 + 56] ^= 0xFF
    damaged["checksum"] = bytes(both_bad)
    magic = bytearray(blob)
    magic[16] ^= 0xFF
    magic[4096 + 16] ^= 0xFF
    damaged["magic"] = bytes(magic)
    version = bytearray(blob)
    version[16 + 4] = version[4096 + 16 + 4] = 3
    damaged["version"] = bytes(version)
    # a compaction scheduled but not finished (etcd resumes it when it opens the db)
    db = bbolt.read_bbolt(blob[:-32])
    buckets = dict(db.buckets)
    buckets[b"meta"] = sorted([(k, v) for k, v in buckets[b"meta"] if not k.endswith(b"CompactRev")]
                              + [(b"finishedCompactRev", bbolt.rev_key(2, 0)),
                                 (b"scheduledCompactRev", bbolt.rev_key(3, 0))])
    f = io.BytesIO()
    bbolt.write_bbolt(f, buckets)
    damaged["sched"] = f.getvalue() + hashlib.sha256(f.getvalue()).digest()
    for name, data in damaged.items():
        out[name] = tmp / f"{name}.db"
        out[name].write_bytes(data)
    out["dir"] = tmp / "adir"
    out["dir"].mkdir()
    yield out
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("kind", ["etcd", "meshkit"])
@pytest.mark.parametrize("fmt", ["simple", "table", "json", "fields", "protobuf"])
def test_status_prints_what_etcdctl_prints(files: dict[str, Path], tmp_path: Path,
                                          kind: str, fmt: str) -> None:
    ref, ours = both(tmp_path, ["snapshot", "status", str(files[kind]), "-w", fmt])
    same(ref, ours, fmt)
    if fmt == "json":
        st = bbolt.snapshot_status(bbolt.read_bbolt(files[kind].read_bytes()[:-32]))
        assert f'"hash":{st.hash},' in ours[1]


STATUS_ERRORS = ["badhash", "nohash", "empty", "tiny", "small", "random", "meta0bad", "checksum",
                 "magic", "version", "dir", "missing"]


@pytest.mark.slow
def test_status_errors_are_etcdctls(files: dict[str, Path], tmp_path: Path) -> None:
    for name in STATUS_ERRORS:
        path = str(files.get(name, tmp_path / "no-such.db"))
        ref, ours = both(tmp_path, ["snapshot", "status", path])
        same(ref, ours, name)
    for args in (["snapshot", "status"], ["snapshot", "status", "a", "b"]):
        ref, ours = both(tmp_path, args)
        assert ours == ref and ref[0] == 128, args


def _restore_cases(files: dict[str, Path]) -> list[list[str]]:
    snap = str(files["etcd"])
    one = ["--name", "a", "--initial-cluster", "a=http://127.0.0.1:1",
           "--initial-advertise-peer-urls", "http://127.0.0.1:1"]
    three = ["--initial-cluster", "a=http://127.0.0.1:1,b=http://127.0.0.1:2,c=http://127.0.0.1:3",
             "--initial-cluster-token", "tok", "--initial-advertise-peer-urls", "http://127.0.0.1:2",
             "--name", "b"]
    return [
        ["snapshot", "restore", snap, "--data-dir", "{d}/r1"],
        ["snapshot", "restore", snap, "--data-dir", "{d}/r1"],  # exists now
        ["snapshot", "restore", snap, "--data-dir", "{d}"],  # an empty dir exists too
        ["snapshot", "restore", str(files["meshkit"]), "--data-dir", "{d}/r2", *one],
        ["snapshot", "restore", snap, "--data-dir", "{d}/r3", *three],
        ["snapshot", "restore", snap, "--data-dir", "{d}/r4", "--wal-dir", "{d}/w4"],
        ["snapshot", "restore", snap, "--data-dir", "{d}/r5", "--wal-dir", "{d}/r1"],
        ["snapshot", "restore", str(files["nohash"]), "--data-dir", "{d}/r6"],
        ["snapshot", "restore", str(files["nohash"]), "--data-dir", "{d}/r7", "--skip-hash-check"],
        ["snapshot", "restore", str(files["badhash"]), "--data-dir", "{d}/r8"],
        ["snapshot", "restore", str(files["empty"]), "--data-dir", "{d}/r9"],
        ["snapshot", "restore", str(files["dir"]), "--data-dir", "{d}/r10"],
        ["snapshot", "restore", "{d}/no-such.db", "--data-dir", "{d}/r11"],
        ["snapshot", "restore", snap, "--data-dir", "{d}/r12", "--name", "x"],
        ["snapshot", "restore", snap, "--data-dir", "{d}/r13", "--initial-cluster", "a=foo", "--name", "a"],
        ["snapshot", "restore", snap, "--data-dir", "{d}/r14", "--initial-advertise-peer-urls", "bad url"],
        ["snapshot", "restore", snap, "--data-dir", "{d}/r15", "--name", "a", "--initial-cluster",
         "a=http://127.0.0.1:1,b=http://127.0.0.1:1", "--initial-advertise-peer-urls", "http://127.0.0.1:1"],
        ["snapshot", "restore", snap, "--data-dir", "{d}/r16", "--name", "a", "--initial-cluster",
         "a=http://127.0.0.1:1", "--initial-advertise-peer-urls", "http://127.0.0.1:9"],
        ["snapshot", "restore"],
        ["snapshot", "restore", snap, "--data-dir", "{d}/r17", "--bogus"],
    ]


@pytest.mark.slow
def test_restore_messages_and_exit_codes_are_etcdctls(files: dict[str, Path], tmp_path: Path) -> None:
    for args in _restore_cases(files):
        ref, ours = both(tmp_path, args)
        same(ref, ours, args)
    # A scheduled, unfinished compaction: etcdctl's mvcc store resumes it on a goroutine
    # and logs its progress if it wins the race with the exit; meshkit server resumes it
    # when it starts. The lines up to "resume scheduled compaction" are the same.
    ref, ours = both(tmp_path, ["snapshot", "restore", str(files["sched"]), "--data-dir", "{d}/sched"])
    racy = ('"msg":"compact tree index"', '"msg":"finished scheduled compaction"')
    ref = (ref[0], ref[1], "".join(ln for ln in ref[2].splitlines(True) if not any(r in ln for r in racy)))
    same(ref, ours, "sched")
    assert '"msg":"resume scheduled compaction"' in ours[2]
    ours_dir = tmp_path / "meshkit"
    # meshkit ctl wrote meshkit data dirs; a failed restore leaves nothing behind
    # (etcdctl leaves a half-written member/snap/db after a hash mismatch).
    assert (ours_dir / "r1" / "member" / "snap" / "db").is_file()
    assert (ours_dir / "r7" / "member" / "snap" / "db").is_file()
    assert not (ours_dir / "r8").exists() and (tmp_path / "etcdctl" / "r8").exists()


def test_restore_default_data_dir_is_name_dot_etcd(files: dict[str, Path], tmp_path: Path) -> None:
    for tool in ("etcdctl", "meshkit"):
        d = tmp_path / tool
        d.mkdir()
        r = run_tool(tool, ["snapshot", "restore", str(files["etcd"]), "--name", "n1",
                            "--initial-cluster", "n1=http://localhost:2380"], cwd=d)
        assert r.code == 0, r.err
        assert (d / "n1.etcd" / "member" / "snap" / "db").is_file()


# ---------------------------------------------------------------- save (against servers)


def _wrote_same(twins: Twins) -> None:
    for tool, sp in (("etcdctl", twins.ref), ("meshkit", twins.ours)):
        for step in (["put", "a", "1"], ["put", "b", "2"], ["del", "a"]):
            assert run(tool, sp, step).code == 0


@pytest.mark.slow
def test_save_is_etcdctls(twins: Twins, tmp_path: Path) -> None:
    _wrote_same(twins)
    ref, ours = both(tmp_path, ["snapshot", "save", "{d}/s.db"], servers=(twins.ref, twins.ours))
    assert ours == ref
    assert ref[1] == "Snapshot saved at <dir>/s.db\n"
    assert [ln.split('"msg":')[1].split('"')[1] for ln in ours[2].splitlines()] == [
        "created temporary db file", "opened snapshot stream; downloading", "fetching snapshot",
        "completed snapshot read; closing", "fetched snapshot", "saved"]
    saved = {t: (tmp_path / t / "s.db").read_bytes() for t in ("etcdctl", "meshkit")}
    for blob in saved.values():
        db = bbolt.read_bbolt(bbolt.verify_snapshot_hash(blob))  # the db and its sha256
        assert bbolt.snapshot_status(db).revision == 4
    assert not list((tmp_path / "meshkit").glob("*.part"))
    # Both files read the same through either tool.
    for t in saved:
        a, b = both(tmp_path, ["snapshot", "status", str(tmp_path / t / "s.db"), "-w", "json"])
        assert a == b and a[0] == 0

    cases = [
        ["snapshot", "save"],
        ["snapshot", "save", "a", "b"],
        ["snapshot", "save", "{d}/no-such-dir/s.db"],
    ]
    for args in cases:
        ref, ours = both(tmp_path, args, servers=(twins.ref, twins.ours))
        same(ref, ours, args)
    # Two endpoints: refused before connecting.
    for tool, sp in (("etcdctl", twins.ref), ("meshkit", twins.ours)):
        r = run(tool, sp, ["--endpoints", f"{sp.endpoint},{sp.endpoint}", "snapshot", "save",
                           str(tmp_path / "two.db")], endpoint=False)
        assert r.code == 5
        assert r.err == (f"Error: snapshot must be requested to one selected node, not multiple "
                         f"[{sp.endpoint} {sp.endpoint}]\n")


def test_save_to_a_dead_endpoint_times_out_like_etcdctl(twins: Twins, tmp_path: Path) -> None:
    from tests.support.procs import free_port

    if twins.kind != "etcd":
        pytest.skip("no server involved: once is enough")
    dead = f"127.0.0.1:{free_port()}"
    for tool, sp in (("etcdctl", twins.ref), ("meshkit", twins.ours)):
        d = tmp_path / tool
        d.mkdir()
        r = run(tool, sp, [f"--endpoints={dead}", "--command-timeout=1s", "snapshot", "save",
                           str(d / "s.db")], endpoint=False)
        assert r.code == 5, r
        assert r.err.splitlines()[-1] == "Error: context deadline exceeded"
        assert '"msg":"created temporary db file"' in r.err.splitlines()[0]
        assert not list(d.iterdir())  # the .part file is removed
