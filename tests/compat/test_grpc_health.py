"""grpc.health.v1 on the client port, side by side with the real etcd 3.4: the
server ("") is SERVING, any other service is unknown (Check: NOT_FOUND "unknown
service"; Watch: SERVICE_UNKNOWN), List is unknown to etcd 3.4's grpc-go."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.compat.conftest import Pair
from tests.server.conftest import wait_ready

S = health_pb2.HealthCheckResponse


async def _answers(endpoint: str) -> dict[str, object]:
    await wait_ready(endpoint)
    out: dict[str, object] = {}
    async with grpc.aio.insecure_channel(endpoint) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "etcdserverpb.KV", "grpc.health.v1.Health", "nope"):
            try:
                r = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                out[f"check {service}"] = S.ServingStatus.Name(r.status)
            except grpc.aio.AioRpcError as e:
                out[f"check {service}"] = (e.code(), e.details())
            call = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=5)
            first = await call.read()
            assert not isinstance(first, type(grpc.aio.EOF))
            out[f"watch {service}"] = S.ServingStatus.Name(first.status)
            call.cancel()
        try:
            await stub.List(health_pb2.HealthListRequest(), timeout=5)
            out["list"] = "answered"
        except grpc.aio.AioRpcError as e:
            out["list"] = (e.code(), e.details())
    return out


async def test_health_service_like_etcd(pair: Pair) -> None:
    etcd = await _answers(pair.etcd.endpoint)
    mesh = await _answers(pair.meshkit.endpoint)
    assert etcd["check "] == "SERVING" and etcd["watch "] == "SERVING"
    assert etcd["check nope"] == (grpc.StatusCode.NOT_FOUND, "unknown service")
    assert etcd["watch nope"] == "SERVICE_UNKNOWN"
    assert mesh == etcd
