"""MemberAdd (voter and learner) then a member started with
--initial-cluster-state existing joins; MemberPromote, MemberUpdate,
MemberRemove and MoveLeader with etcd's answers and errors."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc
from meshkit.server.etcdserver.server import ServerSettings
from tests.server.cluster.conftest import ELECTION_MS, HEARTBEAT_MS, Cluster, Member
from tests.support.procs import free_port


def _stubs(m: Member) -> tuple[grpc.aio.Channel, rpc_pb2_grpc.ClusterStub, rpc_pb2_grpc.MaintenanceStub]:
    ch = grpc.aio.insecure_channel(m.endpoint)
    return ch, rpc_pb2_grpc.ClusterStub(ch), rpc_pb2_grpc.MaintenanceStub(ch)


def _new_member(c: Cluster, name: str, peer: str) -> Member:
    port = free_port()
    base = c.members[0].settings
    s = ServerSettings(
        name=name, data_dir=c.tmp / name, wal_dir=None,
        initial_cluster=(*base.initial_cluster, (name, peer)), initial_cluster_token="test-cluster",
        initial_cluster_state="existing",
        advertise_peer_urls=(peer,), advertise_client_urls=(f"http://127.0.0.1:{port}",),
        heartbeat_ms=HEARTBEAT_MS, election_ms=ELECTION_MS,
    )
    return Member(name, s, port)


async def _until(pred, limit: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_learner_added_joins_is_promoted_and_removed(cluster3: Cluster) -> None:
    c = cluster3
    await c.wait_leader()
    follower = next(m for m in c.members if not m.server.etcd.is_leader())  # type: ignore[union-attr]
    async with c.client(follower) as cl:
        await cl.put(b"before-join", b"1")
    peer = f"http://127.0.0.1:{free_port()}"
    ch, cluster, _ = _stubs(follower)
    async with ch:
        added = await cluster.MemberAdd(pb.MemberAddRequest(peerURLs=[peer], isLearner=True))
        assert added.member.isLearner and list(added.member.peerURLs) == [peer]
        assert len(added.members) == 4
        # etcd: a second add of the same peer URL
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await cluster.MemberAdd(pb.MemberAddRequest(peerURLs=[peer]))
        assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert ei.value.details() in ("etcdserver: Peer URLs already exists",
                                      "etcdserver: too many learner members in cluster",
                                      "etcdserver: re-configuration failed due to not enough started members")
        # promoting a learner that has not caught up (not started yet)
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await cluster.MemberPromote(pb.MemberPromoteRequest(ID=added.member.ID))
        assert ei.value.details() == "etcdserver: can only promote a learner member which is in sync with leader"
        new = _new_member(c, "m3", peer)
        c.members.append(new)
        await c.start(new)
        assert new.id == added.member.ID
        etcd = new.server.etcd  # type: ignore[union-attr]
        leader_etcd = (await c.wait_leader()).server.etcd  # type: ignore[union-attr]
        await _until(lambda: etcd.applied_index >= leader_etcd.applied_index)
        # promote once in sync (the leader decides; asked of a follower, forwarded)
        for _ in range(100):
            try:
                await cluster.MemberPromote(pb.MemberPromoteRequest(ID=new.id))
                break
            except grpc.aio.AioRpcError as e:
                assert "in sync" in (e.details() or "")
                await asyncio.sleep(0.1)
        ml = await cluster.MemberList(pb.MemberListRequest())
        assert {m.ID: m.isLearner for m in ml.members}[new.id] is False
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await cluster.MemberPromote(pb.MemberPromoteRequest(ID=new.id))
        assert ei.value.details() == "etcdserver: can only promote a learner member"
        async with c.client(new) as cl:
            r = await cl.get(b"before-join")
            assert r.kvs[0].value == b"1"
        # the joined member names itself through the log
        await _until(lambda: any(m.name == "m3" for m in follower.server.etcd.members.values()))  # type: ignore[union-attr]
        # remove it again
        resp = await cluster.MemberRemove(pb.MemberRemoveRequest(ID=new.id))
        assert new.id not in {m.ID for m in resp.members}
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await cluster.MemberRemove(pb.MemberRemoveRequest(ID=new.id))
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND
        assert ei.value.details() == "etcdserver: member not found"
    await c.stop(new)
    c.members.remove(new)
    async with c.client() as cl:
        await cl.put(b"after-remove", b"1")


async def test_member_update_changes_peer_urls(cluster3: Cluster) -> None:
    c = cluster3
    await c.wait_leader()
    m0 = c.members[0]
    ch, cluster, _ = _stubs(m0)
    async with ch:
        target = c.members[1]
        url = f"http://127.0.0.1:{free_port()}"
        resp = await cluster.MemberUpdate(pb.MemberUpdateRequest(ID=target.id, peerURLs=[url]))
        assert [list(m.peerURLs) for m in resp.members if m.ID == target.id] == [[url]]
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await cluster.MemberUpdate(pb.MemberUpdateRequest(ID=12345, peerURLs=[url]))
        assert ei.value.details() == "etcdserver: member not found"


async def test_move_leader(cluster3: Cluster) -> None:
    c = cluster3
    leader = await c.wait_leader()
    target = next(m for m in c.members if m is not leader)
    other = next(m for m in c.members if m is not leader and m is not target)
    ch, _, maint = _stubs(other)
    async with ch:
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await maint.MoveLeader(pb.MoveLeaderRequest(targetID=target.id))
        assert ei.value.details() == "etcdserver: not leader"
    ch, _, maint = _stubs(leader)
    async with ch:
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await maint.MoveLeader(pb.MoveLeaderRequest(targetID=12345))
        assert ei.value.details() == "etcdserver: bad leader transferee"
        await maint.MoveLeader(pb.MoveLeaderRequest(targetID=target.id))
    assert (await c.wait_leader()) is target
