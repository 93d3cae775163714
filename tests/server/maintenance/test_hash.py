"""Maintenance.Hash: etcd 3.4's CRC-32C over the backend's buckets, minus the meta
bucket's consistent index.

* the algorithm on known contents (``bbolt.buckets_hash``);
* the same value as the snapshot file of the same backend;
* equal on the 3 members of a cluster at the same applied state, changed by a write;
  ``etcdctl endpoint hashkv`` still agrees;
* the same value as the real etcd 3.4 for a member restored from the same snapshot
  with the same name and URLs (the bucket contents are then byte-identical).
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc
from meshkit.server.backend import bbolt
from meshkit.server.backend.backend import Backend
from meshkit.server.mvcc.hash import marshal_kv
from tests.server.cluster.conftest import Cluster
from tests.support.procs import (
    ETCD,
    ETCDCTL,
    ServerProc,
    etcd_flags,
    free_ports,
    require_reference_binaries,
    wait_port,
)

# ---------------------------------------------------------------- the algorithm


def test_hash_is_one_crc32c_over_names_keys_and_values_in_order() -> None:
    # CRC-32C("123456789") is the standard check value 0xE3069283.
    assert bbolt.buckets_hash({b"123": [(b"45", b"6789")]}) == 0xE3069283
    assert bbolt.buckets_hash({b"1": [(b"23", b"4")], b"56": [(b"789", b"")]}) == 0xE3069283
    # Buckets in name order whatever the mapping's order; an empty bucket's name counts.
    assert bbolt.buckets_hash({b"56": [(b"789", b"")], b"1": [(b"23", b"4")]}) == 0xE3069283
    assert bbolt.buckets_hash({b"1": [(b"23", b"4")], b"56": [(b"789", b"")], b"x": []}) != 0xE3069283


def test_hash_leaves_out_the_consistent_index_only() -> None:
    base = {b"key": [(bbolt.rev_key(2, 0), b"v")], b"meta": [(b"finishedCompactRev", bbolt.rev_key(1, 0))]}
    h = bbolt.buckets_hash(base)
    with_ci = {**base, b"meta": [(b"consistent_index", (7).to_bytes(8, "big")), *base[b"meta"]]}
    assert bbolt.buckets_hash(with_ci) == h
    assert bbolt.buckets_hash(with_ci, frozenset()) != h  # status's hash counts it
    other = {**base, b"meta": [(b"finishedCompactRev", bbolt.rev_key(2, 0))]}
    assert bbolt.buckets_hash(other) != h
    assert bbolt.DEFAULT_HASH_IGNORES == frozenset({(b"meta", b"consistent_index")})


def _backend_with_data(path: Path, consistent_index: int) -> bytes:
    be = Backend.open(path)
    try:
        be.put_kvs([(2, 0, b"a", 2, 2, 1, b"1", 0, 0), (3, 0, b"b", 3, 3, 1, b"2", 0x1234, 0),
                    (4, 0, b"a", 0, 4, 0, b"", 0, 1)])
        be.bucket_put("lease", (0x1234).to_bytes(8, "big"), (60).to_bytes(8, "big") + (0).to_bytes(8, "big"))
        be.bucket_put("members", (5).to_bytes(8, "big"),
                      b'{"name": "m", "peerURLs": ["http://p"], "clientURLs": [], "isLearner": false}')
        be.set_consistent_index(consistent_index)
        return be.snapshot_bytes()
    finally:
        be.close()


def test_hash_of_a_backend_is_the_hash_of_its_snapshot_buckets(tmp_path: Path) -> None:
    image = _backend_with_data(tmp_path / "a" / "db", consistent_index=9)
    out = io.BytesIO()
    bbolt.snapshot_from_sqlite(image, out)
    db = bbolt.read_bbolt(out.getvalue())
    h = bbolt.hash_from_sqlite(image)
    assert h == bbolt.buckets_hash(db.buckets)
    # by hand: every bucket etcd has, in name order, the key bucket's rows as etcd stores them
    assert db.buckets[b"key"][1] == (bbolt.rev_key(3, 0), marshal_kv(b"b", 3, 3, 1, b"2", 0x1234))
    assert sorted(db.buckets) == sorted(bbolt.ETCD_BUCKETS)
    # The same data under another consistent index: the same hash.
    assert bbolt.hash_from_sqlite(_backend_with_data(tmp_path / "b" / "db", consistent_index=900)) == h


# ---------------------------------------------------------------- a 3-member cluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster.build(tmp_path, 3)
    try:
        await c.start_all()
        yield c
    finally:
        await c.stop_all()


async def _rpc(ep: str, method: str, req: object) -> object:
    async with grpc.aio.insecure_channel(ep) as ch:
        return await getattr(rpc_pb2_grpc.MaintenanceStub(ch), method)(req, timeout=10)


async def _settle(c: Cluster) -> None:
    """Until every member published itself and all applied the same log index."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        applied = {m.server.etcd.applied_index for m in c.members if m.server is not None}
        published = all(x.client_urls for m in c.members if m.server is not None
                        for x in m.server.etcd.members.values())
        if published and len(applied) == 1:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("members did not reach the same applied index")


async def _hashes(c: Cluster) -> list[pb.HashResponse]:
    out = []
    for m in c.members:
        r = await _rpc(m.endpoint, "Hash", pb.HashRequest())
        assert isinstance(r, pb.HashResponse)
        out.append(r)
    return out


async def test_hash_is_equal_on_every_member_and_changes_with_a_write(cluster: Cluster) -> None:
    c = cluster
    await c.wait_leader()
    async with c.client() as cl:
        for i in range(20):
            await cl.put(f"k{i % 5}".encode(), b"v%d" % i)
        await cl.delete(b"k1")
    await _settle(c)
    first = await _hashes(c)
    assert len({r.hash for r in first}) == 1, [r.hash for r in first]
    assert {r.header.revision for r in first} == {22}
    assert {r.header.member_id for r in first} == {m.id for m in c.members}

    async with c.client(c.members[1]) as cl:
        await cl.put(b"k0", b"changed")
    await _settle(c)
    second = await _hashes(c)
    assert len({r.hash for r in second}) == 1
    assert second[0].hash != first[0].hash
    assert {r.header.revision for r in second} == {23}

    # HashKV is untouched by Hash: equal everywhere too, and different from Hash.
    kv = [await _rpc(m.endpoint, "HashKV", pb.HashKVRequest()) for m in c.members]
    assert len({r.hash for r in kv}) == 1  # type: ignore[attr-defined]
    if ETCDCTL is not None:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}, "ETCDCTL_API": "3"}
        eps = ",".join(m.endpoint for m in c.members)
        p = await asyncio.to_thread(
            subprocess.run, [ETCDCTL, f"--endpoints={eps}", "endpoint", "hashkv"],
            capture_output=True, text=True, env=env, timeout=30)
        assert p.returncode == 0, p.stderr
        assert {line.split(", ")[1] for line in p.stdout.splitlines()} == {str(kv[0].hash)}  # type: ignore[attr-defined]


# ---------------------------------------------------------------- against the real etcd


def _hash_when_published(ep: str) -> tuple[int, int]:
    with grpc.insecure_channel(ep) as ch:
        deadline = time.monotonic() + 20
        while True:
            ml = rpc_pb2_grpc.ClusterStub(ch).MemberList(pb.MemberListRequest(), timeout=5)
            if all(m.clientURLs for m in ml.members):
                break
            if time.monotonic() > deadline:
                raise AssertionError("the member never published its client URLs")
            time.sleep(0.1)
        r = rpc_pb2_grpc.MaintenanceStub(ch).Hash(pb.HashRequest(), timeout=10)
        return r.hash, r.header.revision


@pytest.mark.slow
def test_hash_matches_the_real_etcd_on_the_same_restored_snapshot(tmp_path: Path) -> None:
    """A real etcd's snapshot restored, with the same name and URLs, into the real etcd
    (etcdctl) and into meshkit (meshkit snapshot restore): the two members' backends hold
    the same bucket bytes, so Hash is the same number."""
    from tests.server.snapshot.test_snapshot_etcd import ctl, write_history

    require_reference_binaries()
    assert ETCD is not None
    cport, pport = free_ports(2)
    name = "h1"
    peer = f"http://127.0.0.1:{pport}"
    restore_flags = ["--name", name, "--initial-cluster", f"{name}={peer}", "--initial-advertise-peer-urls", peer]

    def serve(kind: str, data: Path) -> ServerProc:
        argv = ([ETCD] if kind == "etcd" else [sys.executable, "-m", "meshkit", "server"])
        log = tmp_path / f"{kind}-{data.name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([*argv, *etcd_flags(name, data, cport, pport)], stdout=out,
                                    stderr=subprocess.STDOUT, cwd=tmp_path)
        sp = ServerProc(proc, cport, pport, data, log)
        try:
            wait_port(cport, proc=proc)
        except BaseException:
            sp.stop()
            raise
        return sp

    orig = serve("etcd", tmp_path / "orig")
    try:
        write_history(orig.endpoint)
        snap = tmp_path / "snap.db"
        ctl(orig.endpoint, "snapshot", "save", str(snap))
    finally:
        orig.stop()

    ctl(None, "snapshot", "restore", str(snap), "--data-dir", str(tmp_path / "e"), *restore_flags)
    p = subprocess.run([sys.executable, "-m", "meshkit", "snapshot", "restore", str(snap),
                        "--data-dir", str(tmp_path / "m"), *restore_flags],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr

    got = {}
    for kind, data in (("etcd", tmp_path / "e"), ("meshkit", tmp_path / "m")):
        sp = serve(kind, data)
        try:
            got[kind] = _hash_when_published(sp.endpoint)
        finally:
            sp.stop()
    assert got["meshkit"] == got["etcd"]
    assert got["etcd"][1] > 30
