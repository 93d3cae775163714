"""Side-by-side Watch benchmark: meshkit's server against a real etcd 3.4 (not a test).

1,000 watchers (by default) on one prefix, spread over a few processes with a
few streams each, and one writer putting at a steady rate. Each value carries
its send time (CLOCK_MONOTONIC is system-wide on Linux), so every watcher
measures every event's latency. Prints, per server: events delivered (must be
watchers x puts, each watcher in order), latency p50/p99/max, server CPU per
second and per delivered event; then the ratios meshkit/etcd.

    python benchmarks/watch_bench.py                     # 1000 watchers, 20 puts/s, 10 s
    python benchmarks/watch_bench.py --quick             # 200 watchers, 4 s
    python benchmarks/watch_bench.py --watchers 1000 --rate 50 --duration 10

The load generator is Python too: at high rates the watcher processes, not the
servers, saturate the two cores first; server CPU per event is the honest
efficiency figure.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ServerProc, WorkDir

PREFIX = b"bench/"
_VAL = struct.Struct(">Qd")


def _prefix_end(p: bytes) -> bytes:
    return p[:-1] + bytes((p[-1] + 1,))


def watcher_proc(address: str, n_watchers: int, n_streams: int, n_events: int,
                 ready: Any, out: Any) -> None:
    import grpc

    from meshkit.api.etcdserverpb import rpc_pb2 as pb
    from meshkit.api.etcdserverpb import rpc_pb2_grpc as stubs

    async def main() -> None:
        lat: list[float] = []
        bad = 0
        got = 0
        opts = [("grpc.max_receive_message_length", -1)]
        async with grpc.aio.insecure_channel(address, options=opts) as ch:
            per = [n_watchers // n_streams + (1 if i < n_watchers % n_streams else 0)
                   for i in range(n_streams)]

            async def one_stream(k: int) -> None:
                nonlocal bad, got
                q: asyncio.Queue[Any] = asyncio.Queue()
                for _ in range(k):
                    q.put_nowait(pb.WatchRequest(create_request=pb.WatchCreateRequest(
                        key=PREFIX, range_end=_prefix_end(PREFIX))))

                async def reqs() -> Any:
                    while True:
                        r = await q.get()
                        if r is None:
                            return
                        yield r

                call = stubs.WatchStub(ch).Watch(reqs())
                created = 0
                while created < k:
                    r = await call.read()
                    created += r.created
                ready.put(k)
                want = k * n_events
                last: dict[int, int] = {}
                mono = time.monotonic
                while want > 0:
                    r = await call.read()
                    if r is grpc.aio.EOF:
                        break
                    now = mono()
                    for e in r.events:
                        seq, sent = _VAL.unpack(e.kv.value)
                        if last.get(r.watch_id, -1) + 1 != seq:
                            bad += 1
                        last[r.watch_id] = seq
                        lat.append(now - sent)
                        got += 1
                        want -= 1
                    if want == 0:
                        break
                call.cancel()

            tasks = [asyncio.create_task(one_stream(k)) for k in per if k]
            _done, pending = await asyncio.wait(tasks, timeout=120)
            for t in pending:
                t.cancel()
        out.put((got, bad, lat))

    asyncio.run(main())


def writer_proc(address: str, rate: float, n_events: int, out: Any) -> None:
    import grpc

    from meshkit.api.etcdserverpb import rpc_pb2 as pb
    from meshkit.api.etcdserverpb import rpc_pb2_grpc as stubs

    with grpc.insecure_channel(address) as ch:
        kv = stubs.KVStub(ch)
        t0 = time.monotonic()
        for i in range(n_events):
            target = t0 + i / rate
            d = target - time.monotonic()
            if d > 0:
                time.sleep(d)
            kv.Put(pb.PutRequest(key=PREFIX + b"%d" % (i % 100),
                                 value=_VAL.pack(i, time.monotonic())))
        out.put(time.monotonic() - t0)


@dataclass
class Result:
    kind: str
    delivered: int
    expected: int
    out_of_order: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_s: float
    wall_s: float

    @property
    def cpu_per_event_us(self) -> float:
        return self.cpu_s / max(1, self.delivered) * 1e6


def run_one(srv: ServerProc, watchers: int, procs: int, streams: int, rate: float,
            duration: float) -> Result:
    n_events = int(rate * duration)
    ctx = mp.get_context("spawn")
    ready, out, wout = ctx.Queue(), ctx.Queue(), ctx.Queue()
    per = [watchers // procs + (1 if i < watchers % procs else 0) for i in range(procs)]
    ps = [ctx.Process(target=watcher_proc, args=(srv.address, k, streams, n_events, ready, out))
          for k in per if k]
    for p in ps:
        p.start()
    n = 0
    while n < watchers:
        n += ready.get(timeout=120)
    time.sleep(0.5)
    cpu0, t0 = srv.cpu_seconds(), time.monotonic()
    w = ctx.Process(target=writer_proc, args=(srv.address, rate, n_events, wout))
    w.start()
    results = [out.get(timeout=300) for _ in ps]
    wall = time.monotonic() - t0
    cpu = srv.cpu_seconds() - cpu0
    wout.get(timeout=60)
    w.join()
    for p in ps:
        p.join(10)
    lat = sorted(x for r in results for x in r[2])
    got = sum(r[0] for r in results)
    bad = sum(r[1] for r in results)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    return Result(srv.kind, got, watchers * n_events, bad, pct(0.5), pct(0.99),
                  lat[-1] * 1000 if lat else float("nan"), cpu, wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=4, help="watcher processes")
    ap.add_argument("--streams", type=int, default=5, help="streams per watcher process")
    ap.add_argument("--rate", type=float, default=20.0, help="puts per second")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    if a.quick:
        a.watchers, a.duration = 200, 4.0
    print(f"{a.watchers} watchers on {PREFIX!r} ({a.procs} processes x {a.streams} streams), "
          f"{a.rate:g} puts/s for {a.duration:g} s")
    results: dict[str, Result] = {}
    with WorkDir(a.keep) as wd:
        for kind in ("etcd", "meshkit"):
            srv = ServerProc(kind, wd)
            srv.start()
            try:
                results[kind] = r = run_one(srv, a.watchers, a.procs, a.streams, a.rate, a.duration)
            finally:
                srv.stop()
            ok = "all delivered" if r.delivered == r.expected and not r.out_of_order else "MISSING/DISORDER"
            print(f"{kind:8s} events {r.delivered}/{r.expected} ({ok}, out of order {r.out_of_order})  "
                  f"latency p50 {r.p50_ms:.2f} ms  p99 {r.p99_ms:.2f} ms  max {r.max_ms:.1f} ms  "
                  f"server CPU {r.cpu_s:.2f} s ({r.cpu_s / r.wall_s * 100:.0f}% of a core, "
                  f"{r.cpu_per_event_us:.1f} us/event)")
    e, m = results["etcd"], results["meshkit"]
    print(f"ratios meshkit/etcd: latency p50 {m.p50_ms / e.p50_ms:.2f}x  p99 {m.p99_ms / e.p99_ms:.2f}x  "
          f"server CPU per event {m.cpu_per_event_us / e.cpu_per_event_us:.2f}x")


if __name__ == "__main__":
    main()
