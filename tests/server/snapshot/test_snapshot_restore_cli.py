"""`meshkit snapshot restore`: a real etcd's snapshot bootstraps a meshkit cluster.

The real etcd gets keys, overwrites, deletes, a txn, a lease, a compaction and more
writes; `etcdctl snapshot save` takes its snapshot; `meshkit snapshot restore`
(etcdctl's flags) writes three data dirs; three `meshkit server` processes started
with the same --name/--initial-cluster serve exactly what the real etcd served (every
revision since the compaction, create/mod revisions, versions, HashKV, leases), agree
on Maintenance.Hash, and take writes. The other direction (meshkit snapshot -> real
etcd) is test_snapshot_etcd.py::test_meshkit_snapshot_restores_into_the_real_etcd.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc
from meshkit.server.backend.restore import DirExistsError, RestoreError, restore_snapshot
from tests.server.snapshot.test_snapshot_etcd import ctl, state, write_history
from tests.support.procs import free_ports, require_reference_binaries, start_etcd, wait_port


class Members:
    """Three `meshkit server` processes on loopback ports, named p0..p2."""

    def __init__(self, tmp: Path, token: str) -> None:
        self.tmp = tmp
        self.token = token
        self.names = ["p0", "p1", "p2"]
        ports = free_ports(6)
        self.cport = dict(zip(self.names, ports[:3], strict=True))
        self.pport = dict(zip(self.names, ports[3:], strict=True))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def cluster_flag(self) -> str:
        return ",".join(f"{n}=http://127.0.0.1:{self.pport[n]}" for n in self.names)

    def start(self, n: str) -> None:
        flags = [
            "--name", n, "--data-dir", str(self.tmp / n),
            "--listen-client-urls", f"http://127.0.0.1:{self.cport[n]}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.cport[n]}",
            "--listen-peer-urls", f"http://127.0.0.1:{self.pport[n]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.pport[n]}",
            "--initial-cluster", self.cluster_flag(), "--initial-cluster-token", self.token,
        ]
        with open(self.tmp / f"{n}.log", "ab") as log:
            self.procs[n] = subprocess.Popen([sys.executable, "-m", "meshkit", "server", *flags],
                                             stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def _restore(snap: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshkit", "snapshot", "restore", str(snap), *args],
                          capture_output=True, text=True, timeout=120)


def _published(ep: str, n: int, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    with grpc.insecure_channel(ep) as ch:
        while True:
            try:
                ml = rpc_pb2_grpc.ClusterStub(ch).MemberList(pb.MemberListRequest(), timeout=5)
                if len(ml.members) == n and all(m.clientURLs for m in ml.members):
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{ep}: members never all published")
            time.sleep(0.1)


@pytest.mark.slow
def test_real_etcd_snapshot_bootstraps_a_three_member_meshkit_cluster(tmp_path: Path) -> None:
    require_reference_binaries()
    (tmp_path / "e").mkdir()
    etcd = start_etcd(tmp_path / "e")
    try:
        write_history(etcd.endpoint)
        seen = state(etcd.endpoint, compact_rev=12)
        snap = tmp_path / "etcd.db"
        ctl(etcd.endpoint, "snapshot", "save", str(snap))
    finally:
        etcd.stop()

    mesh = tmp_path / "mesh"
    mesh.mkdir()
    c = Members(mesh, token="restored")
    for n in c.names:
        p = _restore(snap, "--data-dir", str(mesh / n), "--name", n, "--initial-cluster", c.cluster_flag(),
                     "--initial-cluster-token", c.token,
                     "--initial-advertise-peer-urls", f"http://127.0.0.1:{c.pport[n]}")
        assert p.returncode == 0, p.stderr
        assert p.stdout == ""
        assert [json.loads(line)["msg"] for line in p.stderr.splitlines()] == [
            "restoring snapshot", "restored last compact revision",
            "added member", "added member", "added member", "restored snapshot"]
    try:
        for n in c.names:
            c.start(n)
        for n in c.names:
            wait_port(c.cport[n], timeout=30, proc=c.procs[n])
        for n in c.names:
            _published(f"127.0.0.1:{c.cport[n]}", 3)
        for n in c.names:
            assert state(f"127.0.0.1:{c.cport[n]}", compact_rev=12) == seen, n

        hashes = set()
        for n in c.names:
            with grpc.insecure_channel(f"127.0.0.1:{c.cport[n]}") as ch:
                r = rpc_pb2_grpc.MaintenanceStub(ch).Hash(pb.HashRequest(), timeout=10)
                hashes.add((r.hash, r.header.revision))
        assert len(hashes) == 1, hashes

        # The restored cluster takes writes on top of the snapshot's revisions.
        eps = [f"127.0.0.1:{c.cport[n]}" for n in c.names]
        ctl(eps[0], "put", "after-restore", "yes")
        got = json.loads(ctl(eps[2], "get", "after-restore", "-w", "json"))
        assert got["header"]["revision"] == seen["revision"] + 1
        assert got["kvs"][0]["create_revision"] == seen["revision"] + 1
        ml = json.loads(ctl(eps[1], "member", "list", "-w", "json"))
        assert sorted(m["name"] for m in ml["members"]) == c.names
    finally:
        c.stop_all()


def _snapshot_file(tmp_path: Path) -> Path:
    """A small meshkit-written snapshot (what Maintenance.Snapshot streams)."""
    import hashlib
    import io

    from meshkit.server.backend import bbolt
    from meshkit.server.mvcc.hash import marshal_kv

    f = io.BytesIO()
    bbolt.write_bbolt(f, {
        b"key": [(bbolt.rev_key(2, 0), marshal_kv(b"a", 2, 2, 1, b"x", 0)),
                 (bbolt.rev_key(3, 0), marshal_kv(b"b", 3, 3, 1, b"y", 0))],
        b"meta": [(b"consistent_index", (9).to_bytes(8, "big"))],
    })
    path = tmp_path / "s.db"
    path.write_bytes(f.getvalue() + hashlib.sha256(f.getvalue()).digest())
    return path


def test_restore_function_refuses_like_etcdctl_and_leaves_nothing(tmp_path: Path) -> None:
    snap = _snapshot_file(tmp_path)
    res = restore_snapshot(snap, tmp_path / "ok")
    assert (res.revision, res.kv_rows, res.leases) == (3, 2, 0)
    assert res.db_path == tmp_path / "ok" / "member" / "snap" / "db"
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "ok", tmp_path / "empty"):
        with pytest.raises(DirExistsError) as e:
            restore_snapshot(snap, target)
        assert (e.value.flag, e.value.path) == ("data-dir", str(target))
    with pytest.raises(DirExistsError, match="wal-dir"):
        restore_snapshot(snap, tmp_path / "w", wal_dir=tmp_path / "empty")

    blob = snap.read_bytes()
    copied = tmp_path / "copied.db"  # a `cp` of a member's db: no sha256 after it
    copied.write_bytes(blob[:-32])
    with pytest.raises(RestoreError, match=r"^snapshot missing hash but --skip-hash-check=false$"):
        restore_snapshot(copied, tmp_path / "c1")
    assert not (tmp_path / "c1").exists()
    assert restore_snapshot(copied, tmp_path / "c2", skip_hash_check=True).revision == 3

    bad = tmp_path / "bad.db"
    bad.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(RestoreError, match=r"^expected sha256 \[[0-9 ]+\], got \[[0-9 ]+\]$"):
        restore_snapshot(bad, tmp_path / "b1")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x01" * 20000)
    with pytest.raises(RestoreError, match="invalid database"):
        restore_snapshot(junk, tmp_path / "j1", skip_hash_check=True)
    with pytest.raises(RestoreError, match=r"^open .*: no such file or directory$"):
        restore_snapshot(tmp_path / "nope.db", tmp_path / "n1")
    for d in ("b1", "j1", "n1"):
        assert not (tmp_path / d).exists()

    seen = []
    restore_snapshot(snap, tmp_path / "p", progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 2) and seen[-1] == (2, 2)
