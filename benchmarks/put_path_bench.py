"""meshkit's own request path without gRPC: CPU per Put / Range (not a test).

Runs a lone member in this process (real WAL with group-commit fdatasync, real
SQLite backend) and calls the KV servicer directly from ``--clients``
concurrent coroutines with a stand-in for the grpc.aio context, on uvloop. What
it prints (process CPU per op, all threads) is the part of a request that is
meshkit's: KVService -> auth -> propose -> raft loop -> WAL -> apply -> answer,
and for Range the linearizable barrier, MVCC read and response building. gRPC's
own cost per call comes on top (benchmarks/grpc_floor.py measures it).

    python benchmarks/put_path_bench.py [--ops put,range] [--n 20000] [--clients 64]
    python benchmarks/put_path_bench.py --profile /tmp/put.prof   # cProfile (CPU timer)

Compare source trees with ``--tree DIR`` (imports meshkit from DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


class FakeContext:
    """What the KV servicer asks of a grpc.aio ServicerContext on the OK path."""

    def invocation_metadata(self) -> tuple[Any, ...]:
        return ()

    def auth_context(self) -> dict[str, Any]:
        return {}

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    async def abort(self, code: Any, details: str = "", trailing_metadata: Any = ()) -> None:
        raise RuntimeError(f"abort {code} {details}")


async def run(a: argparse.Namespace) -> list[tuple[str, float, float, float]]:
    from meshkit.api.etcdserverpb import rpc_pb2 as pb
    from meshkit.server.api.kv import KVService
    from meshkit.server.etcdserver.server import EtcdServer, ServerSettings

    d = Path(tempfile.mkdtemp(prefix="put-path-bench-"))
    peer = "http://127.0.0.1:2380"
    settings = ServerSettings(
        name="default", data_dir=d, wal_dir=None, initial_cluster=(("default", peer),),
        initial_cluster_token="bench", advertise_peer_urls=(peer,),
        advertise_client_urls=("http://127.0.0.1:2379",),
    )
    out = []
    async with EtcdServer(settings) as s:
        kv = KVService(s)
        if a.gc:
            import gc

            gc.freeze()
            gc.set_threshold(*(int(x) for x in a.gc.split(",")))
        ctx = FakeContext()
        value = os.urandom(a.value_size)
        for i in range(1000):
            await kv.Put(pb.PutRequest(key=b"bench/range/%04d" % i, value=value), ctx)
        for op in a.ops.split(","):
            if op == "put":
                reqs = [pb.PutRequest(key=b"bench/put/%05d" % (i * 7919 % 10_000), value=value)
                        for i in range(1024)]
                call = kv.Put
            else:
                reqs = [pb.RangeRequest(key=b"bench/range/%04d" % (i * 7919 % 1000), serializable=op == "range-s")
                        for i in range(1024)]
                call = kv.Range
            for rnd in range(a.rounds + 1):
                left = a.n

                async def client(c: int) -> None:
                    nonlocal left
                    i = c * 37
                    while left > 0:
                        left -= 1
                        await call(reqs[i % 1024], ctx)  # noqa: B023
                        i += 1

                c0, t0 = time.process_time(), time.perf_counter()
                await asyncio.gather(*(client(c) for c in range(a.clients)))
                cpu, wall = time.process_time() - c0, time.perf_counter() - t0
                if rnd:  # the first round warms up
                    out.append((op, cpu / a.n * 1e6, a.n / wall, wall))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", default="put,range")
    ap.add_argument("--n", type=int, default=10_000, help="ops per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--tree", help="import meshkit from this directory")
    ap.add_argument("--profile", metavar="FILE", help="cProfile (thread CPU timer) to FILE")
    ap.add_argument("--gc", metavar="T0,T1,T2", help="gc.freeze() after start and these thresholds")
    a = ap.parse_args()
    if a.tree:
        sys.path.insert(0, str(Path(a.tree).resolve()))
    import uvloop

    prof = None
    if a.profile:
        import cProfile

        prof = cProfile.Profile(time.thread_time)
        prof.enable()
    res = uvloop.run(run(a))
    if prof is not None:
        prof.disable()
        prof.dump_stats(a.profile)
    by: dict[str, list[tuple[float, float]]] = {}
    for op, us, rate, _ in res:
        by.setdefault(op, []).append((us, rate))
    for op, v in by.items():
        cpus = [x for x, _ in v]
        rates = [y for _, y in v]
        print(f"{op:8s} CPU/op median {statistics.median(cpus):6.1f} us [{min(cpus):.1f}-{max(cpus):.1f}]  "
              f"ops/s median {statistics.median(rates):8,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
