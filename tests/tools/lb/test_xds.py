"""grpcio's own xDS client against meshkit's control plane: ``xds:///web`` with real
gRPC backends on 127.0.0.1, registry in the real etcd and in `meshkit server`."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from meshkit.client import Client
from meshkit.lb.xds import BOOTSTRAP_CONFIG_ENV, BOOTSTRAP_ENV, XdsServer, use_xds, xds_target
from meshkit.lb.xds import resources as res
from tests.tools.lb.backends import SLOW, WHO, spread_ok
from tests.tools.lb.conftest import Fleet


@pytest.fixture
async def xds(client: Client, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[XdsServer]:
    monkeypatch.delenv(BOOTSTRAP_ENV, raising=False)  # restored after the test
    monkeypatch.delenv(BOOTSTRAP_CONFIG_ENV, raising=False)
    async with XdsServer(client, "127.0.0.1:0") as x:
        use_xds(x.address, node_id="test-node")
        yield x


async def _count(who: grpc.aio.UnaryUnaryMultiCallable, n: int) -> Counter[str]:
    got: Counter[str] = Counter()

    async def worker() -> None:
        for _ in range(n // 8):
            got[(await who(b"", timeout=5)).decode()] += 1

    await asyncio.gather(*(worker() for _ in range(8)))
    return got


async def test_grpc_xds_client_balances_drains_and_follows_the_registry(
        fleet: Fleet, xds: XdsServer) -> None:
    for i in (1, 2, 3):
        await fleet.add(f"b{i}")
    async with grpc.aio.insecure_channel(xds_target("web")) as ch:
        who, slow = ch.unary_unary(WHO), ch.unary_unary(SLOW)
        got = await _count(who, 3000)
        assert spread_ok(got, {"b1": 1, "b2": 1, "b3": 1}), got
        # A call in flight on b3, then b3 is deregistered mid-run.
        b3 = fleet.backends["b3"]
        slow_calls = []
        async with asyncio.timeout(10):
            while not b3.slow_started.is_set():
                slow_calls.append(asyncio.ensure_future(slow(b"", timeout=20)))
                await asyncio.sleep(0.02)
        failures: list[BaseException] = []
        live: Counter[str] = Counter()
        stop = asyncio.Event()
        b4_seen = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                try:
                    ident = (await who(b"", timeout=5)).decode()
                    live[ident] += 1
                    if ident == "b4":
                        b4_seen.set()
                except grpc.aio.AioRpcError as e:
                    failures.append(e)

        runners = [asyncio.ensure_future(load()) for _ in range(4)]
        try:
            await asyncio.sleep(0.2)
            await fleet.deregister("b3")
            await asyncio.sleep(0.5)  # the EDS update reaches the client
            calls_after = b3.calls
            await asyncio.sleep(0.5)
            assert b3.calls == calls_after  # no new calls on the removed instance
            assert b3.in_flight >= 1  # its call in flight was not cancelled
            for b in fleet.backends.values():
                b.release.set()
            answers = await asyncio.gather(*slow_calls)
            assert b"b3" in answers
            await fleet.add("b4", register=False)
            t0 = time.monotonic()
            await fleet.register("b4")
            async with asyncio.timeout(1.0):
                await b4_seen.wait()
            reached = time.monotonic() - t0
        finally:
            stop.set()
            for b in fleet.backends.values():
                b.release.set()
            await asyncio.gather(*runners, *slow_calls, return_exceptions=True)
        assert failures == []
        assert reached < 1.0
    assert xds.nacks == 0


async def test_grpc_xds_client_honours_weights_and_draining(fleet: Fleet, xds: XdsServer) -> None:
    await fleet.add("b1", weight=1, zone="z1")
    await fleet.add("b2", weight=3, zone="z1")
    await fleet.add("b3", weight=0, zone="z2")  # draining: no new calls
    async with grpc.aio.insecure_channel(xds_target("web")) as ch:
        got = await _count(ch.unary_unary(WHO), 4000)
    assert "b3" not in got
    assert spread_ok(got, {"b1": 1, "b2": 3}), got
    assert xds.nacks == 0


async def _ads_get(addr: str, type_url: str, names: list[str],
                   zone: str = "") -> discovery_pb2.DiscoveryResponse:
    async with grpc.aio.insecure_channel(addr) as ch:
        stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).StreamAggregatedResources()
        req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names)
        req.node.id = "probe"
        req.node.locality.zone = zone
        await stream.write(req)
        resp: discovery_pb2.DiscoveryResponse = await asyncio.wait_for(stream.read(), 5)
        stream.cancel()
        return resp


async def test_eds_localities_and_local_zone_priority(fleet: Fleet, xds: XdsServer) -> None:
    await fleet.add("a1", weight=2, zone="a")
    await fleet.add("b1", weight=5, zone="b")
    resp = await _ads_get(xds.address, res.ENDPOINT_TYPE, ["web"], zone="a")
    cla = endpoint_pb2.ClusterLoadAssignment()
    assert resp.resources[0].Unpack(cla)
    got = {(g.locality.zone, g.locality.sub_zone): (g.load_balancing_weight.value, g.priority)
           for g in cla.endpoints}
    assert got == {("a", "a1"): (2, 0), ("b", "b1"): (5, 1)}
    resp = await _ads_get(xds.address, res.ENDPOINT_TYPE, ["web"])  # no zone: one priority
    assert resp.resources[0].Unpack(cla)
    assert {g.priority for g in cla.endpoints} == {0}


async def test_cli_serves_ads_and_writes_the_bootstrap(client: Client, fleet: Fleet,
                                                       tmp_path: Path) -> None:
    from tests.support.procs import free_port

    await fleet.add("b1")
    port = free_port()
    boot = tmp_path / "bootstrap.json"
    endpoint = client.endpoints[0]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshkit.cli.xds", "--endpoints", endpoint,
        "--listen", f"127.0.0.1:{port}", "--bootstrap", str(boot), "--node-zone", "z9",
        stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(20):
            while not boot.exists():  # noqa: ASYNC110 (written by another process)
                await asyncio.sleep(0.05)
        cfg = json.loads(boot.read_text())
        assert cfg["xds_servers"][0]["server_uri"] == f"127.0.0.1:{port}"
        assert cfg["node"]["locality"] == {"zone": "z9"}
        resp = await _ads_get(f"127.0.0.1:{port}", res.LISTENER_TYPE, ["web"])
        lis = listener_pb2.Listener()
        assert resp.resources[0].Unpack(lis) and lis.name == "web"
        resp = await _ads_get(f"127.0.0.1:{port}", res.ENDPOINT_TYPE, ["web"])
        cla = endpoint_pb2.ClusterLoadAssignment()
        assert resp.resources[0].Unpack(cla)
        addr = cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
        assert f"{addr.address}:{addr.port_value}" == fleet.backends["b1"].addr
    finally:
        proc.terminate()
        async with asyncio.timeout(10):
            rc = await proc.wait()
    assert rc == 0
