"""Service registry load, side by side on the real etcd and meshkit.

1,000 instances register through ``meshkit.registry.Registrar`` (lease + keep-alive,
TTL 10 s) from one process; 100 ``Discovery`` watchers follow the service from
four other processes. Then a probe instance is registered and withdrawn
``--changes`` times, and each watcher reports when it saw each change: the
figure is the time from the change until *every* watcher saw it (p50/p99), plus
the per-watcher latency, the time to register the 1,000 instances and the
server CPU spent on the steady keep-alive load.

Usage: python benchmarks/registry_bench.py [--instances 1000] [--watchers 100] [--changes 30]
Not a test; loopback only; every phase bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ServerProc, WorkDir

SERVICE = "bench"
WATCHER_PROCS = 4
PHASE_TIMEOUT = 120.0


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


def _registrars(endpoint: str, n: int, ready: Any, stop: Any, out: Any) -> None:
    from meshkit.client import Client
    from meshkit.registry import Instance, Registrar

    async def main() -> None:
        async with Client([endpoint], timeout=30) as c:
            t0 = time.perf_counter()
            regs = [Registrar(c, Instance(SERVICE, f"127.0.0.1:{10000 + i}", id=f"i{i}"), ttl=10)
                    for i in range(n)]
            for r in regs:
                await r.__aenter__()
            await asyncio.wait_for(asyncio.gather(*[r.wait_registered() for r in regs]), PHASE_TIMEOUT)
            out.put(("registered", time.perf_counter() - t0))
            ready.set()
            await asyncio.to_thread(stop.wait, PHASE_TIMEOUT * 3)  # a process-shared event
            # Report before tearing down: closing 1,000 registrars (one revoke
            # each) is not what is measured.
            out.put(("lease_losses", sum(r.lease_losses for r in regs)))
            await asyncio.gather(*[r.close() for r in regs])

    _run(main())


def _watchers(endpoint: str, n: int, expect: int, ready: Any, stop: Any, out: Any) -> None:
    from meshkit.client import Client
    from meshkit.registry import Discovery

    async def main() -> None:
        async with Client([endpoint], timeout=30) as c:
            ds = [Discovery(c, SERVICE) for _ in range(n)]
            for d in ds:
                await d.__aenter__()
            await asyncio.wait_for(asyncio.gather(
                *[d.wait_for(lambda d: len(d.instances()) >= expect, timeout=PHASE_TIMEOUT)
                  for d in ds]), PHASE_TIMEOUT)
            seen: list[tuple[str, str, float]] = []  # (probe id, kind, wall time)

            def listener(change: Any) -> None:
                if change.instance is not None and change.instance.instance_id.startswith("probe"):
                    seen.append((change.instance.instance_id, str(change.kind), time.time()))

            for d in ds:
                d.add_listener(listener)
            ready.set()
            await asyncio.to_thread(stop.wait, PHASE_TIMEOUT * 3)
            out.put(("seen", seen))
            await asyncio.gather(*[d.__aexit__(None, None, None) for d in ds])

    _run(main())


async def _probe(endpoint: str, changes: int, gap: float) -> list[tuple[str, str, float]]:
    from meshkit.client import Client
    from meshkit.registry import Instance, Registrar

    made: list[tuple[str, str, float]] = []
    async with Client([endpoint], timeout=30) as c:
        for i in range(changes):
            pid = f"probe{i}"
            reg = Registrar(c, Instance(SERVICE, f"127.0.0.1:{20000 + i}", id=pid), ttl=10)
            t = time.time()
            await reg.__aenter__()
            await reg.wait_registered()
            made.append((pid, "added", t))
            await asyncio.sleep(gap)
            t = time.time()
            await reg.close()
            made.append((pid, "removed", t))
            await asyncio.sleep(gap)
    return made


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _say(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_one(kind: str, work: Path, ns: argparse.Namespace) -> dict[str, float]:
    _say(f"{kind}: starting")
    srv = ServerProc(kind, work, name=kind)
    srv.start()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    stop = ctx.Event()
    procs: list[Any] = []
    try:
        reg_ready = ctx.Event()
        p = ctx.Process(target=_registrars, args=(srv.address, ns.instances, reg_ready, stop, out))
        p.start()
        procs.append(p)
        if not reg_ready.wait(PHASE_TIMEOUT):
            raise RuntimeError(f"{kind}: registrars not ready")
        _say(f"{kind}: {ns.instances} instances registered")
        per = ns.watchers // WATCHER_PROCS
        readies = []
        for _ in range(WATCHER_PROCS):
            ev = ctx.Event()
            wp = ctx.Process(target=_watchers, args=(srv.address, per, ns.instances, ev, stop, out))
            wp.start()
            procs.append(wp)
            readies.append(ev)
        for ev in readies:
            if not ev.wait(PHASE_TIMEOUT):
                raise RuntimeError(f"{kind}: watchers not ready")
        _say(f"{kind}: {ns.watchers} watchers synced; measuring")
        cpu0, t0 = srv.cpu_seconds(), time.perf_counter()
        time.sleep(ns.steady)
        steady_cpu = (srv.cpu_seconds() - cpu0) / (time.perf_counter() - t0)
        made = _run(_probe(srv.address, ns.changes, ns.gap))
        time.sleep(1.0)
        stop.set()
        results: dict[str, Any] = {"seen": []}
        for _ in range(1 + WATCHER_PROCS + 1):
            k, v = out.get(timeout=PHASE_TIMEOUT)
            if k == "seen":
                results["seen"].extend(v)
            else:
                results[k] = v
    finally:
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
        srv.stop()
    by_change: dict[tuple[str, str], list[float]] = {}
    for pid, kind_, t in results["seen"]:
        by_change.setdefault((pid, kind_), []).append(t)
    all_seen, per_watcher, missing = [], [], 0
    for pid, what, t in made:
        ts = by_change.get((pid, what), [])
        missing += ns.watchers - len(ts)
        if ts:
            per_watcher.extend(x - t for x in ts)
            if len(ts) == ns.watchers:
                all_seen.append(max(ts) - t)
    return {
        "register_s": results.get("registered", float("nan")),
        "lease_losses": results.get("lease_losses", float("nan")),
        "steady_cpu": steady_cpu,
        "all_p50": _pct(all_seen, 0.5) * 1000, "all_p99": _pct(all_seen, 0.99) * 1000,
        "one_p50": _pct(per_watcher, 0.5) * 1000, "one_p99": _pct(per_watcher, 0.99) * 1000,
        "missed": missing, "changes": len(made),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--changes", type=int, default=30)
    ap.add_argument("--gap", type=float, default=0.2, help="seconds between changes")
    ap.add_argument("--steady", type=float, default=10.0, help="seconds of keep-alive load measured")
    ns = ap.parse_args()
    res = {}
    with WorkDir() as work:
        for kind in ("etcd", "meshkit"):
            res[kind] = run_one(kind, work, ns)
    e, m = res["etcd"], res["meshkit"]
    print(f"{ns.instances} instances (TTL 10 s, keep-alive), {ns.watchers} discovery watchers "
          f"in {WATCHER_PROCS} processes, {2 * ns.changes} changes")
    print(f"{'':34s}{'etcd':>10s}{'meshkit':>10s}{'ratio':>8s}")
    rows = [("register all instances (s)", "register_s", "{:10.2f}"),
            ("server CPU, steady keep-alives (%)", "steady_cpu", "{:10.1%}"),
            ("change -> every watcher, p50 (ms)", "all_p50", "{:10.1f}"),
            ("change -> every watcher, p99 (ms)", "all_p99", "{:10.1f}"),
            ("change -> one watcher, p50 (ms)", "one_p50", "{:10.1f}"),
            ("change -> one watcher, p99 (ms)", "one_p99", "{:10.1f}"),
            ("changes a watcher missed", "missed", "{:10.0f}"),
            ("leases lost during the run", "lease_losses", "{:10.0f}")]
    for label, key, fmt in rows:
        ratio = m[key] / e[key] if e[key] else float("nan")
        print(f"{label:34s}{fmt.format(e[key])}{fmt.format(m[key])}{ratio:8.2f}")


if __name__ == "__main__":
    main()
