"""Endpoints, failover and the retry rule; status and member list; auth tokens."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from meshkit._internal.errors import UserEmptyError
from meshkit.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from meshkit.client import Client, ConnectionFailedError, NoEndpointAvailableError
from meshkit.client.endpoints import parse_endpoint
from tests.client.proxy import proxy_to
from tests.support.procs import free_port


def test_parse_endpoint() -> None:
    assert parse_endpoint("127.0.0.1:2379") == "127.0.0.1:2379"
    assert parse_endpoint("http://127.0.0.1:2379") == "127.0.0.1:2379"
    assert parse_endpoint(" localhost:1 ") == "localhost:1"
    assert parse_endpoint("http://[::1]:2379") == "[::1]:2379"
    for bad in ("", "127.0.0.1", "ftp://h:1", "http://h", "h:port"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)
    assert parse_endpoint("https://127.0.0.1:2379") == "127.0.0.1:2379"  # TLS: tests/server/tls
    with pytest.raises(ValueError):
        Client([])
    with pytest.raises(ValueError):
        Client(["127.0.0.1:1", "http://127.0.0.1:1"])


async def test_from_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    monkeypatch.setenv("ETCDCTL_ENDPOINTS", f"http://127.0.0.1:{free_port()},{endpoint}")
    async with Client.from_env(timeout=5) as c:
        assert c.endpoints[1] == endpoint
        await c.put(b"env", b"1")
        assert (await c.get(b"env")).kvs[0].value == b"1"
        assert c.current_endpoint == endpoint


async def test_first_endpoint_dead_port(endpoint: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with Client([dead, endpoint], timeout=5.0) as c:
        t0 = time.monotonic()
        await c.put(b"k", b"v")  # never sent to the dead port: safe to retry
        assert (await c.get(b"k")).kvs[0].value == b"v"
        r = await c.txn().then(c.op.put(b"k", b"w")).commit()
        assert r.succeeded
        assert (await c.delete(b"k")).deleted == 1
        assert time.monotonic() - t0 < 3.0
        assert c.current_endpoint == endpoint  # sticky after failover


async def test_all_endpoints_dead_is_bounded_by_timeout() -> None:
    eps = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    async with Client(eps, timeout=1.0) as c:
        for call in (c.get(b"k"), c.put(b"k", b"v")):
            t0 = time.monotonic()
            with pytest.raises(NoEndpointAvailableError) as ei:
                await call
            assert 0.9 < time.monotonic() - t0 < 2.5
            assert set(ei.value.errors) == set(eps)
            assert all(isinstance(e, ConnectionFailedError) and not e.sent
                       for e in ei.value.errors.values())


async def test_failover_when_the_current_endpoint_goes_down(endpoint: str) -> None:
    async with proxy_to(endpoint) as p, Client([p.endpoint, endpoint], timeout=5.0) as c:
        await c.put(b"k", b"1")
        assert c.current_endpoint == p.endpoint
        await p.stop()  # the member "stops": connections cut, port refuses
        assert (await c.get(b"k")).kvs[0].value == b"1"
        assert c.current_endpoint == endpoint
        await c.put(b"k", b"2")
        assert (await c.get(b"k")).kvs[0].version == 2


async def test_server_restart_on_same_endpoint(endpoint: str) -> None:
    async with proxy_to(endpoint) as p, Client([p.endpoint], timeout=5.0) as c:
        await c.put(b"k", b"1")
        p.refuse = True
        p.cut()

        async def back() -> None:
            await asyncio.sleep(0.5)
            p.refuse = False

        task = asyncio.create_task(back())
        assert (await c.get(b"k")).kvs[0].value == b"1"  # retried within the timeout
        await task


async def test_mutation_failing_after_send_is_not_retried(endpoint: str) -> None:
    async with proxy_to(endpoint) as p, Client([p.endpoint, endpoint], timeout=5.0) as c:
        await c.get(b"warmup")  # connect through the proxy
        p.drop_replies = True
        loop = asyncio.get_running_loop()
        loop.call_later(0.5, p.cut)
        with pytest.raises(ConnectionFailedError) as ei:
            await c.put(b"once", b"v")
        assert ei.value.sent
        # It was applied exactly once; the client did not replay it on the other endpoint.
        kv = (await c.get(b"once")).kvs[0]
        assert kv.version == 1
        # An idempotent call in the same situation fails over.
        p.drop_replies = True
        c._pool.prefer(p.endpoint)
        await c.get(b"warmup2")  # reconnects through the proxy, then...
        loop.call_later(0.5, p.cut)
        assert (await c.get(b"once")).kvs[0].value == b"v"


async def test_status_and_member_list(endpoint: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with Client([dead, endpoint], timeout=3.0) as c:
        st = await c.status()
        assert st.version.startswith("3.") or st.version
        assert st.leader == st.header.member_id and st.raft_index > 0 and st.db_size > 0
        st2 = await c.status(endpoint=f"http://{endpoint}")
        assert st2.header.member_id == st.header.member_id
        with pytest.raises(NoEndpointAvailableError):
            await c.status(endpoint=dead, timeout=0.5)
        with pytest.raises(ValueError):
            await c.status(endpoint="127.0.0.1:1")
        ml = await c.member_list()
        assert len(ml.members) == 1
        m = ml.members[0]
        assert m.id == st.header.member_id and m.name and m.peer_urls
        assert m.client_urls == [f"http://{endpoint}"] and not m.is_learner


async def test_closed_client(endpoint: str) -> None:
    c = Client([endpoint])
    await c.put(b"k", b"v")
    await c.close()
    await c.close()
    with pytest.raises(RuntimeError):
        await c.get(b"k")


async def _enable_auth(endpoint: str, password: str) -> None:
    async with grpc.aio.insecure_channel(endpoint) as ch:
        auth = rpc_pb2_grpc.AuthStub(ch)
        await auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password=password))
        await auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="root"))
        await auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
        await auth.AuthEnable(rpc_pb2.AuthEnableRequest())


async def test_auth_token(endpoint: str) -> None:
    await _enable_auth(endpoint, "s3cret")
    async with Client([endpoint], user="root", password="s3cret") as c:
        await c.put(b"k", b"v")
        assert (await c.get(b"k")).kvs[0].value == b"v"
        c._token = "bogus.token"  # an expired/invalid token is replaced transparently
        assert (await c.get(b"k")).kvs[0].value == b"v"
        async with c.watch(b"w") as w:
            await w.wait_created(5)
            await c.put(b"w", b"1")
            resp = await asyncio.wait_for(w.__anext__(), 5)
            assert resp.events[0].kv.value == b"1"
    async with Client([endpoint]) as anon:
        with pytest.raises(UserEmptyError):
            await anon.get(b"k")
    with pytest.raises(ValueError):
        Client([endpoint], user="root")
