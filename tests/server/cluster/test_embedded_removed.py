"""An in-process (embedded) member that is removed from the cluster stops serving
by itself, as etcd's server stops (``EtcdServer.StopNotify()``; `etcd` then exits):
its client port is closed, so it no longer answers serializable reads from a
store that stopped following the cluster, and the embedder learns it from
``stopped`` / ``stop_error``. Closing it afterwards is a clean no-op."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import grpc
import pytest

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc
from meshkit.server.embed import EmbeddedServer
from meshkit.server.etcdserver.server import MemberRemovedError
from tests.server.cluster.conftest import Cluster, Member

# A removed member learns it within a few heartbeats (it applies its removal, or
# a peer refuses its traffic); generous for a loaded machine.
STOP_LIMIT = 10.0


async def _serializable_get(m: Member, key: bytes) -> pb.RangeResponse:
    async with grpc.aio.insecure_channel(m.endpoint) as ch:
        resp: pb.RangeResponse = await rpc_pb2_grpc.KVStub(ch).Range(
            pb.RangeRequest(key=key, serializable=True), timeout=3.0)
        return resp


async def _assert_stopped_serving(srv: EmbeddedServer, m: Member) -> float:
    """Waits for ``stopped``; then the client port refuses connections (gRPC and
    HTTP). Returns the seconds waited."""
    t0 = time.monotonic()
    await asyncio.wait_for(srv.stopped.wait(), STOP_LIMIT)
    took = time.monotonic() - t0
    assert isinstance(srv.stop_error, MemberRemovedError)
    assert srv.stop_error.detail == "the member has been permanently removed from the cluster"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", m.port), timeout=2.0).close()
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await _serializable_get(m, b"k")
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectorError):
            await http.get(f"http://{m.endpoint}/health", timeout=aiohttp.ClientTimeout(total=3))
    return took


async def _close_twice(c: Cluster, m: Member, srv: EmbeddedServer) -> None:
    await srv.close()
    await srv.close(grace=0)
    await c.stop(m)  # the fixture's way, once more
    assert srv.stopped.is_set() and isinstance(srv.stop_error, MemberRemovedError)


async def test_a_removed_follower_stops_serving_by_itself(cluster3: Cluster) -> None:
    c = cluster3
    lead = await c.wait_leader()
    victim = next(m for m in c.members if m is not lead)
    srv = victim.server
    assert srv is not None
    async with c.client(lead) as cl:
        await cl.put(b"k", b"v1")
    t0 = time.monotonic()
    while not (await _serializable_get(victim, b"k")).kvs:  # it serves, up to date
        assert time.monotonic() - t0 < 5, "the follower never applied the put"
        await asyncio.sleep(0.02)
    assert not srv.stopped.is_set() and srv.stop_error is None
    await lead.server.etcd.member_remove(victim.id)  # type: ignore[union-attr]
    took = await _assert_stopped_serving(srv, victim)
    print(f"the removed follower stopped serving after {took:.2f}s")
    # the two left carry on
    rest = [m for m in c.members if m is not victim]
    async with c.client(*rest) as cl:
        await cl.put(b"k", b"v2")
    await _close_twice(c, victim, srv)


async def test_a_leader_removing_itself_answers_then_stops_serving(cluster3: Cluster) -> None:
    """Through its own client port, as etcd: the MemberRemove is answered (etcd waits
    a second before stopping), then the port closes."""
    c = cluster3
    lead = await c.wait_leader()
    srv = lead.server
    assert srv is not None
    async with grpc.aio.insecure_channel(lead.endpoint) as ch:
        resp = await rpc_pb2_grpc.ClusterStub(ch).MemberRemove(pb.MemberRemoveRequest(ID=lead.id), timeout=10)
    assert len(resp.members) == 2 and lead.id not in {m.ID for m in resp.members}
    took = await _assert_stopped_serving(srv, lead)
    print(f"the removed leader stopped serving after {took:.2f}s")
    rest = [m for m in c.members if m is not lead]
    await c.wait_leader(among=rest)
    async with c.client(*rest) as cl:
        await cl.put(b"after", b"1")
    await _close_twice(c, lead, srv)


async def test_closing_before_any_removal_sets_stopped_without_an_error(cluster3: Cluster) -> None:
    c = cluster3
    m = c.members[0]
    srv = m.server
    assert srv is not None
    await c.stop(m)
    assert srv.stopped.is_set() and srv.stop_error is None
    await srv.close()  # idempotent
