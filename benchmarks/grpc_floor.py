"""What grpcio's server costs per call before meshkit does any work.

Serves a do-nothing etcdserverpb.KV/Put (meshkit's own gRPC server in the event
loop, grpc.aio with registered handlers, with generic handlers only, or the
thread-pool server) and drives it from two load
processes with 32 concurrent calls each, like benchmarks/kv_bench.py does; prints
calls/s and server CPU per call. On the 2-core development machine a do-nothing
grpc.aio server measured 230-290 us of CPU per call and about 4,000 calls/s,
which bounds what a single-process Python etcd can reach on grpcio (etcd 3.4
does a whole Put in 60-90 us there); hence meshkit's own server (mode native),
which measured 35-50 us per call and ~12,000 calls/s. Not part of the test run.

The aio-shim mode is aio-generic with meshkit.server.runtime's grpc.aio fast
paths installed (measured 5-15% less CPU per call than aio-generic). The sync
server's floor was ~25% lower here, but it needs a thread per open stream (Watch,
LeaseKeepAlive) and a hand-off into the event loop per call, so it is no option
for etcd's API. Extra grpc server options (``--option grpc.http2.bdp_probe=0``)
alternate with the plain mode; ``--rounds N`` repeats everything, alternating,
and prints medians.

Usage: python benchmarks/grpc_floor.py [--calls N] [--mode MODE ...] [--option K=V ...] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import time
from concurrent import futures
from typing import Any

import grpc

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc as pbg

MODES = ["native", "aio-registered", "aio-generic", "aio-shim", "sync", "sync-bridge"]
OPTIONS = [("grpc.server.max_pending_requests", 100_000), ("grpc.so_reuseport", 0)]


class _AsyncKV(pbg.KVServicer):
    async def Put(self, request: pb.PutRequest, context: Any) -> pb.PutResponse:
        return pb.PutResponse()


class _SyncKV(pbg.KVServicer):
    def Put(self, request: pb.PutRequest, context: Any) -> pb.PutResponse:
        return pb.PutResponse()


def _handler(put: Any) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler("etcdserverpb.KV", {
        "Put": grpc.unary_unary_rpc_method_handler(
            put, request_deserializer=pb.PutRequest.FromString,
            response_serializer=pb.PutResponse.SerializeToString)})


def _serve(mode: str, port: int, ready: Any, extra: list[tuple[str, Any]]) -> None:
    options = [*OPTIONS, *extra]
    if mode in ("sync", "sync-bridge"):
        put = _SyncKV().Put
        if mode == "sync-bridge":
            # Each call handed to an asyncio loop in another thread and waited
            # for: what serving etcd's API from the thread-pool server would add.
            import threading

            loop = _new_loop()
            threading.Thread(target=loop.run_forever, daemon=True).start()
            aput = _AsyncKV().Put

            def put(request: pb.PutRequest, context: Any) -> pb.PutResponse:
                return asyncio.run_coroutine_threadsafe(aput(request, None), loop).result()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
        server.add_generic_rpc_handlers((_handler(put),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        ready.set()
        server.wait_for_termination()
        return

    async def main() -> None:
        if mode == "native":
            # meshkit's own gRPC server (meshkit.server.h2grpc), as the client port runs it
            from meshkit.server.h2grpc import GrpcServer

            native = GrpcServer(max_receive_message_length=4 << 20)
            native.add_generic_rpc_handlers((_handler(_AsyncKV().Put),))
            listener = await asyncio.get_running_loop().create_server(
                native.protocol_factory, "127.0.0.1", port)
            ready.set()
            await listener.serve_forever()
            return
        if mode == "aio-shim":
            from meshkit.server.runtime import install_grpc_aio_fast_paths

            install_grpc_aio_fast_paths()
        server = grpc.aio.server(options=options)
        if mode in ("aio-generic", "aio-shim"):
            server.add_generic_rpc_handlers((_handler(_AsyncKV().Put),))
        else:
            pbg.add_KVServicer_to_server(_AsyncKV(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    _run(main())


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()  # type: ignore[no-any-return]
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


def _run(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:  # pragma: no cover
        asyncio.run(coro)


def _load(port: int, calls: int, concurrency: int) -> None:
    async def main() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            kv = pbg.KVStub(ch)
            req = pb.PutRequest(key=b"k", value=b"x" * 256)

            async def worker() -> None:
                for _ in range(calls // concurrency):
                    await kv.Put(req, timeout=30)

            await asyncio.gather(*[worker() for _ in range(concurrency)])

    _run(main())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--mode", choices=MODES, action="append")
    ap.add_argument("--option", action="append", default=[], metavar="NAME=INT",
                    help="an extra grpc server option (repeat); a run without them alternates with each mode")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole set, alternating")
    ns = ap.parse_args()
    extra = [(k, int(v)) for k, _, v in (o.partition("=") for o in ns.option)]
    variants: list[tuple[str, list[tuple[str, Any]]]] = [(m, []) for m in ns.mode or MODES]
    if extra:
        variants = [v for m, _ in variants for v in ((m, []), (m, extra))]
    results: dict[str, list[float]] = {}
    for rnd in range(ns.rounds):
        for mode, opts in (variants if rnd % 2 == 0 else variants[::-1]):
            label = mode + (" +" + ",".join(f"{k}={v}" for k, v in opts) if opts else "")
            results.setdefault(label, []).append(_measure(mode, opts, ns.calls))
            print(f"{label:40s} {results[label][-1]:5.0f} us/call", flush=True)
    if ns.rounds > 1:
        import statistics

        for label, v in results.items():
            print(f"{label:40s} median {statistics.median(v):5.0f} us/call [{min(v):.0f}-{max(v):.0f}]")


def _measure(mode: str, opts: list[tuple[str, Any]], calls: int) -> float:
    """One server, two load processes with 32 concurrent calls each; CPU us/call."""
    port = free_port()
    ready = mp.Event()
    server = mp.Process(target=_serve, args=(mode, port, ready, opts), daemon=True)
    server.start()
    if not ready.wait(15):
        raise SystemExit("server did not start")
    assert server.pid is not None
    c0, t0 = _cpu(server.pid), time.perf_counter()
    loaders = [mp.Process(target=_load, args=(port, calls // 2, 32)) for _ in range(2)]
    for p in loaders:
        p.start()
    for p in loaders:
        p.join(120)
    dt, cpu = time.perf_counter() - t0, _cpu(server.pid) - c0
    server.kill()
    server.join(5)
    print(f"{mode:15s} {calls / dt:8,.0f} calls/s   server CPU {cpu / calls * 1e6:5.0f} us/call")
    return cpu / calls * 1e6


if __name__ == "__main__":
    main()
