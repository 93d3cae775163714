"""Snapshots both ways between meshkit and the real etcd 3.4, with the real etcdctl.

* meshkit -> etcd: `etcdctl snapshot save` against `meshkit server`, `snapshot status`
  and `snapshot restore` with the real etcdctl, then the real etcd started on the
  restored data dir serves exactly meshkit's keys, revisions, history, HashKV and leases.
* etcd -> meshkit's reader: a snapshot saved from the real etcd is read by
  `meshkit.server.backend.bbolt` and holds exactly what the real etcd serves.
* the stream framing (blob sizes, remaining_bytes, trailing sha256, no header) is the
  same from both servers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc
from meshkit.server.backend import bbolt
from tests.support.procs import (
    ETCD,
    ETCDCTL,
    ServerProc,
    etcd_flags,
    free_ports,
    require_reference_binaries,
    start_etcd,
    start_meshkit,
    wait_port,
)


def ctl(endpoint: str | None, *args: str, stdin: str | None = None) -> str:
    assert ETCDCTL is not None
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}, "ETCDCTL_API": "3"}
    argv = [ETCDCTL, *([f"--endpoints={endpoint}", "--command-timeout=10s"] if endpoint else []), *args]
    p = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, f"etcdctl {args}: {p.stderr}"
    return p.stdout


def write_history(ep: str) -> None:
    """Puts, overwrites, deletes, a txn, a lease with keys, a compaction, more writes."""
    for i in range(30):
        ctl(ep, "put", f"k{i % 7}", f"v{i}" * (i % 5))
    ctl(ep, "put", "big", "B" * 9000)
    ctl(ep, "del", "k3")
    ctl(ep, "txn", stdin="\nput t1 a\nput t2 b\ndel k4\n\n\n")
    lease = ctl(ep, "lease", "grant", "600").split()[1]
    ctl(ep, "put", "leased", "x", "--lease", lease)
    ctl(ep, "compaction", "12")
    ctl(ep, "put", "k0", "after")
    ctl(ep, "del", "k", "--prefix")
    ctl(ep, "put", "k5", "back")


def state(ep: str, compact_rev: int) -> dict[str, Any]:
    """Everything a client can see: key space at every revision since compaction,
    HashKV at the head, leases."""
    head = json.loads(ctl(ep, "get", "", "--prefix", "-w", "json"))
    rev = int(head["header"]["revision"])
    views = {}
    for r in range(compact_rev, rev + 1):
        out = json.loads(ctl(ep, "get", "", "--prefix", f"--rev={r}", "-w", "json"))
        views[r] = out.get("kvs", [])
    hkv = json.loads(ctl(ep, "endpoint", "hashkv", "-w", "json"))[0]["HashKV"]
    leases = json.loads(ctl(ep, "lease", "list", "-w", "json"))
    return {
        "revision": rev,
        "views": views,
        "hashkv": (hkv["hash"], hkv["compact_revision"]),
        "leases": sorted(le["id"] for le in leases.get("leases", [])),
    }


def start_etcd_on(tmp: Path, data_dir: Path, name: str, cport: int, pport: int) -> ServerProc:
    assert ETCD is not None
    log = tmp / f"etcd-{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([ETCD, *etcd_flags(name, data_dir, cport, pport)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    sp = ServerProc(proc, cport, pport, data_dir, log)
    try:
        wait_port(cport, proc=proc)
    except BaseException:
        sp.stop()
        raise
    return sp


def stream_snapshot(ep: str) -> list[pb.SnapshotResponse]:
    with grpc.insecure_channel(ep) as ch:
        return list(rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(pb.SnapshotRequest(), timeout=30))


def check_framing(msgs: list[pb.SnapshotResponse]) -> bytes:
    """etcd 3.4's framing: 32 KiB blobs counting remaining_bytes down to 0, then the
    sha256 of the db in one more message; no header anywhere. Returns the db."""
    *chunks, last = msgs
    db = b"".join(m.blob for m in chunks)
    assert len(db) % bbolt.PAGE_SIZE == 0 and db
    sent = 0
    for m in chunks:
        assert not m.HasField("header")
        assert len(m.blob) == min(32 * 1024, len(db) - sent)
        sent += len(m.blob)
        assert m.remaining_bytes == len(db) - sent
    assert not last.HasField("header") and last.remaining_bytes == 0
    assert last.blob == hashlib.sha256(db).digest()
    return db


@pytest.fixture
def meshkit_server(tmp_path: Path) -> Iterator[ServerProc]:
    require_reference_binaries()
    (tmp_path / "m").mkdir()
    sp = start_meshkit(tmp_path / "m")
    try:
        yield sp
    finally:
        sp.stop()


def test_meshkit_snapshot_restores_into_the_real_etcd(tmp_path: Path, meshkit_server: ServerProc) -> None:
    ep = meshkit_server.endpoint
    write_history(ep)
    before = state(ep, compact_rev=12)

    snap = tmp_path / "meshkit.db"
    ctl(ep, "snapshot", "save", str(snap))
    blob = snap.read_bytes()
    db = bbolt.read_bbolt(bbolt.verify_snapshot_hash(blob))
    ours = bbolt.snapshot_status(db)
    status = json.loads(ctl(None, "snapshot", "status", str(snap), "-w", "json"))
    assert status == {"hash": ours.hash, "revision": before["revision"],
                      "totalKey": ours.total_key, "totalSize": len(blob) - 32}
    assert set(db.buckets) == set(bbolt.ETCD_BUCKETS)
    assert [k for k, _ in db.buckets[b"meta"]] == [b"consistent_index", b"finishedCompactRev",
                                                    b"scheduledCompactRev"]

    # The raw stream: etcd's framing, and the same bytes etcdctl saved.
    assert check_framing(stream_snapshot(ep)) == blob[:-32]
    # `meshkit ctl snapshot save` saves the same file (the consistent index aside).
    mine = tmp_path / "meshkit-ctl.db"
    p = subprocess.run([sys.executable, "-m", "meshkit", "ctl", f"--endpoints={ep}", "snapshot", "save",
                        str(mine)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == f"Snapshot saved at {mine}\n", p.stderr
    db2 = bbolt.read_bbolt(bbolt.verify_snapshot_hash(mine.read_bytes()))
    assert {k: v for k, v in db2.buckets.items() if k != b"meta"} == {
        k: v for k, v in db.buckets.items() if k != b"meta"}

    cport, pport = free_ports(2)
    restored = tmp_path / "restored"
    ctl(None, "snapshot", "restore", str(snap), "--data-dir", str(restored), "--name", "r",
        "--initial-cluster", f"r=http://127.0.0.1:{pport}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}")
    etcd = start_etcd_on(tmp_path, restored, "r", cport, pport)
    try:
        after = state(etcd.endpoint, compact_rev=12)
        # and it goes on from meshkit's revisions
        ctl(etcd.endpoint, "put", "after-restore", "x")
        put = json.loads(ctl(etcd.endpoint, "get", "after-restore", "-w", "json"))
    finally:
        etcd.stop()
    assert after == before
    assert put["kvs"][0]["create_revision"] == before["revision"] + 1
    assert before["leases"] and len(before["views"]) > 10


def test_reader_reads_a_real_etcd_snapshot(tmp_path: Path) -> None:
    require_reference_binaries()
    (tmp_path / "e").mkdir()
    etcd = start_etcd(tmp_path / "e")
    try:
        ep = etcd.endpoint
        write_history(ep)
        seen = state(ep, compact_rev=12)
        check_framing(stream_snapshot(ep))
        snap = tmp_path / "etcd.db"
        ctl(ep, "snapshot", "save", str(snap))
    finally:
        etcd.stop()
    db = bbolt.read_bbolt(bbolt.verify_snapshot_hash(snap.read_bytes()))
    ours = bbolt.snapshot_status(db)
    status = json.loads(ctl(None, "snapshot", "status", str(snap), "-w", "json"))
    assert status == {"hash": ours.hash, "revision": ours.revision,
                      "totalKey": ours.total_key, "totalSize": ours.total_size}
    assert ours.revision == seen["revision"]

    # Rebuild every revision's key space from the key bucket alone.
    rows = list(bbolt.kv_rows(db))
    for r, kvs in seen["views"].items():
        live: dict[bytes, tuple[Any, ...]] = {}
        for main, _sub, key, create, mod, ver, value, lease, tomb in rows:
            if main > r:
                break
            if tomb:
                live.pop(key, None)
            else:
                live[key] = (create, mod, ver, value, lease)
        assert len(kvs) == len(live), r
        for kv in kvs:
            key = base64.b64decode(kv["key"])
            create, mod, ver, value, lease = live[key]
            assert (create, mod, ver) == (kv["create_revision"], kv["mod_revision"], kv["version"])
            assert value == base64.b64decode(kv.get("value", ""))
            assert lease == kv.get("lease", 0)
    lease_ids = {bbolt.parse_varint_fields(v)[1] for _, v in db.buckets[b"lease"]}
    assert sorted(lease_ids) == seen["leases"]
    assert db.buckets[b"members"] and db.get(b"cluster", b"clusterVersion") == b"3.4.0"


def test_real_etcd_snapshot_restores_into_meshkit(tmp_path: Path) -> None:
    """etcd -> meshkit: restore_snapshot() on a real etcd's snapshot, then `meshkit
    server` on that data dir serves what the real etcd served."""
    from meshkit.server.backend.restore import RestoreError, restore_snapshot

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
    data = tmp_path / "m" / "restored"
    res = restore_snapshot(snap, data)
    assert res.revision == seen["revision"] and res.leases == 1
    with pytest.raises(RestoreError, match="exists"):
        restore_snapshot(snap, data)
    bad = tmp_path / "bad.db"
    bad.write_bytes(snap.read_bytes()[:-1] + b"\0")
    with pytest.raises(RestoreError, match="sha256"):
        restore_snapshot(bad, tmp_path / "other")
    mesh = start_meshkit(tmp_path / "m", data_dir=data)
    try:
        assert state(mesh.endpoint, compact_rev=12) == seen
    finally:
        mesh.stop()
