"""gRPC-level errors side by side with the real etcd 3.4: what grpc-go itself
answers before any etcd handler runs (unknown service or method, malformed
method names, oversized or compressed messages, malformed requests,
deadlines). Both servers are asked through the same client, so whatever text
the client adds is the same on both sides.
"""

from __future__ import annotations

import grpc
import pytest

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.v3electionpb import v3election_pb2 as epb
from meshkit.api.v3lockpb import v3lock_pb2 as lpb
from meshkit.api.v3lockpb import v3lock_pb2_grpc as lrpc
from tests.compat.conftest import Pair
from tests.server.conftest import wait_ready
from tests.server.h2client import H2Client

pytestmark = pytest.mark.timeout(90)

PATHS = [
    "/etcdserverpb.KV/Nope",  # unknown method of a known service
    "/etcdserverpb.Nope/Range",  # unknown service
    "/etcdserverpb.Watch/Nope",  # a service registered as generic handlers only
    "/v3lockpb.Lock/Nope",
    "/grpc.health.v1.Health/Nope",
    "/etcdserverpb.KV/",
    "/etcdserverpb.KV/Range/x",
    "//etcdserverpb.KV/Range",
    "x/y",
    "/nope",  # malformed: grpc-go answers RESOURCE_EXHAUSTED
    "nope",
    "/",
    '/a"b',
]

Answer = tuple[grpc.StatusCode, str] | str


async def _call(ch: grpc.aio.Channel, path: str, request: bytes,
                compression: grpc.Compression | None = None) -> Answer:
    try:
        await ch.unary_unary(path)(request, timeout=10, compression=compression)  # type: ignore[call-arg]
    except grpc.aio.AioRpcError as e:
        return e.code(), e.details() or ""
    return "ok"


async def _grpcio_answers(endpoint: str) -> dict[str, Answer]:
    await wait_ready(endpoint)
    out: dict[str, Answer] = {}
    async with grpc.aio.insecure_channel(endpoint) as ch:
        for path in PATHS:
            out[path] = await _call(ch, path, b"")
        # larger than --max-request-bytes (1.5 MiB) but within grpc's limit
        # (+512 KiB): etcd's own check answers; above it, grpc-go's
        for size in (1_700_000, 3 << 20):
            out[f"put {size}"] = await _call(ch, "/etcdserverpb.KV/Put",
                                             pb.PutRequest(key=b"k", value=b"x" * size).SerializeToString())
        out["unparsable"] = await _call(ch, "/etcdserverpb.KV/Range", b"\x0a\xff")
        out["empty request"] = await _call(ch, "/etcdserverpb.KV/Range", b"")
    return out


async def test_grpc_errors_like_etcd(pair: Pair) -> None:
    etcd = await _grpcio_answers(pair.etcd.endpoint)
    mesh = await _grpcio_answers(pair.meshkit.endpoint)
    unimplemented = grpc.StatusCode.UNIMPLEMENTED
    assert etcd["/etcdserverpb.KV/Nope"] == (unimplemented, "unknown method Nope for service etcdserverpb.KV")
    assert etcd["/etcdserverpb.Nope/Range"] == (unimplemented, "unknown service etcdserverpb.Nope")
    assert etcd["/nope"] == (grpc.StatusCode.RESOURCE_EXHAUSTED, 'malformed method name: "/nope"')
    assert etcd["put 3145728"] == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   "grpc: received message larger than max (3145736 vs. 2097152)")
    assert etcd["put 1700000"] == (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large")
    # protobuf's own parse errors are worded differently in Go and Python
    for side in (etcd, mesh):
        answer = side.pop("unparsable")
        assert answer[0] == grpc.StatusCode.INTERNAL and answer[1].startswith("grpc: error unmarshalling request: ")
    assert mesh == etcd


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
async def test_compressed_requests(pair: Pair, compression: grpc.Compression) -> None:
    """etcd 3.4 registers no decompressor: grpc-go answers UNIMPLEMENTED; so does meshkit."""
    answers = []
    for endpoint in (pair.etcd.endpoint, pair.meshkit.endpoint):
        await wait_ready(endpoint)
        async with grpc.aio.insecure_channel(endpoint) as ch:
            answers.append(await _call(ch, "/etcdserverpb.KV/Put", pb.PutRequest(key=b"k").SerializeToString(),
                                       compression=compression))
    etcd, mesh = answers
    name = "gzip" if compression == grpc.Compression.Gzip else "deflate"
    assert etcd == (grpc.StatusCode.UNIMPLEMENTED, f'grpc: Decompressor is not installed for grpc-encoding "{name}"')
    assert mesh == etcd


async def _raw_answers(port: int, endpoint: str) -> dict[str, object]:
    """What the server itself sends (no client-side deadline or text in between)."""
    await wait_ready(endpoint)
    async with grpc.aio.insecure_channel(endpoint) as ch:
        await lrpc.LockStub(ch).Lock(lpb.LockRequest(name=b"mutex"), timeout=10)
    c = await H2Client.connect(port)
    out: dict[str, object] = {}
    try:
        lock = lpb.LockRequest(name=b"mutex").SerializeToString()
        rng = pb.RangeRequest(key=b"k").SerializeToString()
        cases: list[tuple[str, str, bytes, str | None, list[tuple[str, str]]]] = [
            ("lock deadline", "/v3lockpb.Lock/Lock", lock, "300m", []),
            ("observe deadline", "/v3electionpb.Election/Observe",
             epb.LeaderRequest(name=b"nobody").SerializeToString(), "200m", []),
            ("malformed deadline", "/etcdserverpb.KV/Range", rng, "1x", []),
            ("nine-digit deadline", "/etcdserverpb.KV/Range", rng, "123456789m", []),
            ("unknown encoding", "/etcdserverpb.KV/Range", rng, None, [("grpc-encoding", "br")]),
        ]
        for name, path, msg, timeout, metadata in cases:
            call = await c.call(path, msg, grpc_timeout=timeout, metadata=metadata)
            status = call.status if call.reset is None else {}
            out[name] = (call.reset, status.get(b"grpc-status"), status.get(b"grpc-message"), bytes(call.body))
        for name, content_type in (("no content-type", None), ("text/plain", "text/plain")):
            headers = [h for h in c.request_headers("/etcdserverpb.KV/Range") if h[0] != "content-type"]
            if content_type is not None:
                headers.append(("content-type", content_type))
            sid = c.open_stream(headers)
            c.send_message(sid, rng, end=True)
            call = await c.finish(sid)
            out[name] = (call.reset, call.headers)
    finally:
        await c.close()
    return out


async def test_raw_answers_like_etcd(pair: Pair) -> None:
    etcd = await _raw_answers(pair.etcd.client_port, pair.etcd.endpoint)
    mesh = await _raw_answers(pair.meshkit.client_port, pair.meshkit.endpoint)
    assert etcd["lock deadline"] == (None, b"2", b"context deadline exceeded", b"")
    assert etcd["malformed deadline"] == (1, None, None, b"")  # RST_STREAM PROTOCOL_ERROR
    assert mesh == etcd
