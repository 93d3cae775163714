"""What grpcio's server costs per call before meshkit does any work.

Serves a do-nothing etcdserverpb.KV/Put (grpc.aio with registered handlers, with
generic handlers only, or the thread-pool server) and drives it from two load
processes with 32 concurrent calls each, like benchmarks/kv_bench.py does; prints
calls/s and server CPU per call. On the 2-core development machine a do-nothing
grpc.aio server measured 230-290 us of CPU per call and about 4,000 calls/s,
which bounds what a single-process Python etcd can reach (etcd 3.4 does a whole
Put in 60-90 us there). Not part of the test run.

Usage: python benchmarks/grpc_floor.py [--calls N] [--mode aio-registered|aio-generic|sync]
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


def _serve(mode: str, port: int, ready: Any) -> None:
    if mode == "sync":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=OPTIONS)
        server.add_generic_rpc_handlers((_handler(_SyncKV().Put),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        ready.set()
        server.wait_for_termination()
        return

    async def main() -> None:
        server = grpc.aio.server(options=OPTIONS)
        if mode == "aio-generic":
            server.add_generic_rpc_handlers((_handler(_AsyncKV().Put),))
        else:
            pbg.add_KVServicer_to_server(_AsyncKV(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    _run(main())


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
    ap.add_argument("--mode", choices=["aio-registered", "aio-generic", "sync"], action="append")
    ns = ap.parse_args()
    for mode in ns.mode or ["aio-registered", "aio-generic", "sync"]:
        port = free_port()
        ready = mp.Event()
        server = mp.Process(target=_serve, args=(mode, port, ready), daemon=True)
        server.start()
        if not ready.wait(15):
            raise SystemExit("server did not start")
        assert server.pid is not None
        c0, t0 = _cpu(server.pid), time.perf_counter()
        loaders = [mp.Process(target=_load, args=(port, ns.calls // 2, 32)) for _ in range(2)]
        for p in loaders:
            p.start()
        for p in loaders:
            p.join(120)
        dt, cpu = time.perf_counter() - t0, _cpu(server.pid) - c0
        server.kill()
        server.join(5)
        print(f"{mode:15s} {ns.calls / dt:8,.0f} calls/s   server CPU {cpu / ns.calls * 1e6:5.0f} us/call")


if __name__ == "__main__":
    main()
