"""A/B: server CPU per operation of meshkit built from different source trees.

Starts one ``meshkit server`` per tree (each imports ``meshkit`` from its own
directory, e.g. a copy of the package before a change and the working tree) and
drives them in alternation with the same load processes as kv_bench.py, so the
machine's noise hits every tree alike. Prints, per tree and operation, the
median server CPU per op over the rounds with its spread (min-max), and
throughput. Not a test.

    python benchmarks/server_ab.py --tree base=/tmp/mk_base --tree new=. --ops put,range
    python benchmarks/server_ab.py --tree new=. --ops put --rounds 1 --duration 30 --keep
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import WorkDir
from kv_bench import (
    CALL_TIMEOUT,
    Agg,
    LoadPool,
    MeshkitProc,
    _populate_range_keys,
    one_round,
    split,
)

_LAUNCH = ("import sys, runpy; sys.path.insert(0, {tree!r}); sys.argv = sys.argv[1:]; "
           "runpy.run_module('meshkit', run_name='__main__', alter_sys=True)")
# The same under cProfile, the stats written to a file when the server exits.
_LAUNCH_PROFILED = ("import sys, runpy, cProfile; sys.path.insert(0, {tree!r}); sys.argv = sys.argv[1:]; "
                    "import time; p = cProfile.Profile(time.thread_time); p.enable()\n"
                    "try:\n runpy.run_module('meshkit', run_name='__main__', alter_sys=True)\n"
                    "except SystemExit:\n pass\n"
                    "p.disable(); p.dump_stats({out!r})")


def together_round(pools: list[LoadPool], servers: list[MeshkitProc], op: str, clients: int,
                   duration: float, value_size: int) -> list[dict[str, Any]]:
    """One round with every server under its own load at the same time (so the
    machine's state is the same for all of them); a summary per server."""
    start_at = time.monotonic() + 0.3
    busy: list[list[Any]] = []
    for pool, srv in zip(pools, servers, strict=True):
        conns = []
        for conn, c in zip(pool.conns, split(clients, len(pool.conns)), strict=True):
            if c:
                conn.send({"op": op, "addr": srv.address, "clients": c, "start_at": start_at,
                           "duration": duration, "max_ops": 10_000_000, "value_size": value_size})
                conns.append(conn)
        busy.append(conns)
    time.sleep(max(0.0, start_at - time.monotonic()))
    cpu0 = [srv.cpu_seconds() for srv in servers]
    deadline = time.monotonic() + duration + CALL_TIMEOUT + 40
    out = []
    for conns, srv, c0 in zip(busy, servers, cpu0, strict=True):
        res = []
        for conn in conns:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("a load worker did not answer in time")
            res.append(conn.recv())
        agg = Agg(ops=sum(r["ops"] for r in res), errors=sum(r["errors"] for r in res),
                  seconds=max(r["t_end"] for r in res) - start_at, server_cpu=srv.cpu_seconds() - c0)
        out.append(agg.summary())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", required=True, metavar="NAME=DIR[:MODE]",
                    help="a directory holding the meshkit package to run (repeat); "
                         "MODE overrides --client-port for this one")
    ap.add_argument("--ops", default="put,range")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--client-port", choices=("mux", "grpc"), default="grpc")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--together", action="store_true",
                    help="load all servers at the same time (each with its own load processes) "
                         "instead of one after the other")
    ap.add_argument("--profile", metavar="DIR", help="run the servers under cProfile, stats to DIR/NAME.prof")
    a = ap.parse_args(argv)
    trees = []
    for t in a.tree:
        name, _, d = t.partition("=")
        d, _, mode = d.partition(":")
        trees.append((name, str(Path(d).resolve()), mode or a.client_port))
    pool = LoadPool(a.workers)
    pools = [pool, *(LoadPool(a.workers) for _ in trees[1:])] if a.together else [pool]
    servers: list[MeshkitProc] = []
    try:
        with WorkDir(keep=a.keep) as workdir:
            for name, d, mode in trees:
                if a.profile:
                    out = str(Path(a.profile).resolve() / f"{name}.prof")
                    prefix = [sys.executable, "-c", _LAUNCH_PROFILED.format(tree=d, out=out)]
                else:
                    prefix = [sys.executable, "-c", _LAUNCH.format(tree=d)]
                s = MeshkitProc(workdir, name, python_prefix=prefix, client_port_mode=mode)
                s.start()
                servers.append(s)
                print(f"{name:10s} pid {s.pid} tree {d}", flush=True)
            ops = [o for o in a.ops.split(",") if o]
            if any(o.startswith("range") for o in ops):
                for s in servers:
                    try:
                        _populate_range_keys(s, a.value_size)
                    except RuntimeError as e:  # e.g. a do-nothing tree measuring the floor
                        print(f"warning: {e}")
            for op in ops:
                for s in servers:
                    one_round(pool, s, op, a.clients, 1.0, a.value_size, None)
                cpu: dict[str, list[float]] = {s.name: [] for s in servers}
                rate: dict[str, list[float]] = {s.name: [] for s in servers}
                errors: dict[str, int] = {s.name: 0 for s in servers}
                for r in range(a.rounds):
                    if a.together:
                        for s, sm in zip(servers, together_round(pools, servers, op, a.clients, a.duration,
                                                                 a.value_size), strict=True):
                            cpu[s.name].append(sm["server_cpu_us_per_op"])
                            rate[s.name].append(sm["ops_per_s"])
                            errors[s.name] += sm["errors"]
                        continue
                    order = servers if r % 2 == 0 else servers[::-1]
                    for s in order:
                        agg = Agg()
                        one_round(pool, s, op, a.clients, a.duration, a.value_size, agg)
                        sm: dict[str, Any] = agg.summary()
                        cpu[s.name].append(sm["server_cpu_us_per_op"])
                        rate[s.name].append(sm["ops_per_s"])
                        errors[s.name] += sm["errors"]
                for s in servers:
                    c, t = cpu[s.name], rate[s.name]
                    print(f"{op:8s} {a.clients:3d} {s.name:10s} CPU/op median {statistics.median(c):6.0f} us "
                          f"[{min(c):.0f}-{max(c):.0f}]   ops/s median {statistics.median(t):7,.0f} "
                          f"[{min(t):,.0f}-{max(t):,.0f}]  errors {errors[s.name]}", flush=True)
                    print("          rounds: " + " ".join(f"{x:.0f}" for x in c), flush=True)
                    if s is not servers[0]:
                        # Paired by round: the machine's noise largely cancels.
                        ratios = [x / y for x, y in zip(c, cpu[servers[0].name], strict=True)]
                        print(f"          CPU/op vs {servers[0].name}: median ratio {statistics.median(ratios):.3f} "
                              f"[{min(ratios):.3f}-{max(ratios):.3f}]", flush=True)
    finally:
        for s in servers:
            s.stop()
        for p in pools:
            p.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
