"""Client-side load balancing: per-call overhead and registry-change-to-traffic time.

Three gRPC backends on loopback (in a separate process, so the client's CPU is its
own) are registered in a real etcd and in meshkit's server (side by side). For each
store, sequential unary calls from one asyncio client:

* direct: a plain grpc.aio channel to one backend (the floor);
* balanced: ``meshkit.lb.BalancedChannel`` (round robin over the three);
* xds: grpcio's own xDS client on ``xds:///bench`` fed by ``meshkit.lb.xds.XdsServer``.

Reported: µs per call and the ratio to direct. Then the time from a registry change
(a fourth backend registered) until it answers a call through each way (p50/max over
``--changes`` rounds).

Usage: python benchmarks/lb_bench.py [--calls 3000] [--changes 5] [--stores etcd,meshkit]
Not a test; loopback only; every phase bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import ServerProc, WorkDir

SERVICE = "bench"
WHO = "/meshkit.test.Echo/Who"


def _backends(ports: list[int], ready: mp.Event, stop: mp.Event) -> None:  # type: ignore[valid-type]
    from tests.tools.lb.backends import Backend

    async def run() -> None:
        bs = [Backend(f"b{i}", p) for i, p in enumerate(ports)]
        for b in bs:
            await b.start()
        ready.set()
        await asyncio.to_thread(stop.wait)
        for b in bs:
            await b.stop(0)

    asyncio.run(run())


async def _per_call(call: object, n: int) -> float:
    assert callable(call)
    for _ in range(200):  # warm up
        await call(b"", timeout=5)
    t0 = time.perf_counter()
    for _ in range(n):
        await call(b"", timeout=5)
    return (time.perf_counter() - t0) / n * 1e6


async def bench_store(endpoint: str, ports: list[int], calls: int, changes: int) -> dict[str, float]:
    import grpc

    from meshkit.client import Client
    from meshkit.lb import BalancedChannel
    from meshkit.lb.xds import XdsServer, use_xds
    from meshkit.registry import Instance, Registrar

    out: dict[str, float] = {}
    async with Client([endpoint]) as c:
        regs = [Registrar(c, Instance(SERVICE, f"127.0.0.1:{p}", id=f"b{i}"), ttl=30)
                for i, p in enumerate(ports[:3])]
        for r in regs:
            await r.start()
            await r.wait_registered(10)
        async with XdsServer(c, "127.0.0.1:0") as x:
            use_xds(x.address, node_id="bench")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{ports[0]}") as direct, \
                    BalancedChannel(c, SERVICE) as bal, \
                    grpc.aio.insecure_channel(f"xds:///{SERVICE}") as xch:
                out["direct"] = await _per_call(direct.unary_unary(WHO), calls)
                out["balanced"] = await _per_call(bal.unary_unary(WHO), calls)
                out["xds"] = await _per_call(xch.unary_unary(WHO), calls)
                waits: dict[str, list[float]] = {"balanced": [], "xds": []}
                for _ in range(changes):
                    r4 = Registrar(c, Instance(SERVICE, f"127.0.0.1:{ports[3]}", id="b3"), ttl=30)
                    t0 = time.perf_counter()
                    await r4.start()
                    await r4.wait_registered(10)
                    for name, ch in (("balanced", bal), ("xds", xch)):
                        who = ch.unary_unary(WHO)
                        async with asyncio.timeout(10):
                            while (await who(b"", timeout=5)) != b"b3":
                                pass
                        waits[name].append(time.perf_counter() - t0)
                    await r4.close()
                    await asyncio.sleep(0.5)
                for name, w in waits.items():
                    out[f"{name}_change_p50_ms"] = statistics.median(w) * 1e3
                    out[f"{name}_change_max_ms"] = max(w) * 1e3
        for r in regs:
            await r.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--stores", default="etcd,meshkit")
    args = ap.parse_args()
    from _common import free_port

    ports = [free_port() for _ in range(4)]
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    backends = ctx.Process(target=_backends, args=(ports, ready, stop), daemon=True)
    backends.start()
    try:
        if not ready.wait(30):
            print("backends did not start", file=sys.stderr)
            return 1
        with WorkDir() as wd:
            for kind in args.stores.split(","):
                srv = ServerProc(kind, wd)
                srv.start()
                try:
                    r = asyncio.run(bench_store(srv.address, ports, args.calls, args.changes))
                finally:
                    srv.stop()
                print(f"store={kind}")
                for way in ("direct", "balanced", "xds"):
                    print(f"  {way:9s} {r[way]:8.1f} us/call  ratio {r[way] / r['direct']:.2f}x")
                for way in ("balanced", "xds"):
                    print(f"  {way:9s} registry change -> traffic: p50 {r[f'{way}_change_p50_ms']:.1f} ms,"
                          f" max {r[f'{way}_change_max_ms']:.1f} ms")
    finally:
        stop.set()
        backends.join(10)
        if backends.is_alive():
            backends.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
