"""Side-by-side KV benchmark: meshkit's server against a real etcd 3.4 (not a test).

Both servers run at once on loopback; the same load processes alternate between
them (etcd, meshkit, meshkit, etcd, ...) so the machine's noise hits both alike.
For put, range (linearizable) and range (serializable) at 1, 16 and 64 concurrent
clients it prints throughput, p50/p99 latency, server CPU per operation and the
ratios meshkit/etcd. Then it loads --keys keys of --value-size bytes into a fresh
pair of servers and prints their resident memory and restart times (SIGTERM and
SIGKILL) with that data.

    python benchmarks/kv_bench.py                 # defaults, a few minutes
    python benchmarks/kv_bench.py --quick         # under 2 minutes
    python benchmarks/kv_bench.py --clients 64 --ops put --duration 10 --skip-memory
    python benchmarks/kv_bench.py --json out.json # also dump the results
    python benchmarks/kv_bench.py --meshkit-client-port grpc  # grpc owns meshkit's client port

On a 2-core machine the Python load generator saturates before etcd does, so
throughput ratios understate etcd; server CPU per operation is the honest
efficiency figure.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import json
import multiprocessing as mp
import os
import random
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LOOPBACK, ServerProc, WorkDir, count_keys, dir_size_mib, free_port

OPS = ("put", "range", "range-s")
PUT_KEYSPACE = 10_000
RANGE_KEYS = 1_000
CALL_TIMEOUT = 10.0


class MeshkitProc(ServerProc):
    """meshkit with its client-port mode: ``mux`` (the default: gRPC and HTTP on
    the client URL, through the forwarding mux) or ``grpc`` (HTTP moved to
    ``--listen-client-http-urls``, grpc binds the client URL itself)."""

    def __init__(self, *args: Any, client_port_mode: str = "mux", **kwargs: Any) -> None:
        super().__init__("meshkit", *args, **kwargs)
        self.client_port_mode = client_port_mode
        self.http_port = free_port() if client_port_mode == "grpc" else 0

    def argv(self) -> list[str]:
        extra = []
        if self.client_port_mode == "grpc":
            extra = ["--listen-client-http-urls", f"http://{LOOPBACK}:{self.http_port}"]
        return [*super().argv(), *extra]


# --------------------------------------------------------------------------
# load worker (a separate process; one grpc.aio channel per server)
# --------------------------------------------------------------------------

def _worker_main(conn: Any, index: int) -> None:
    with contextlib.suppress(KeyboardInterrupt, EOFError, BrokenPipeError):
        _worker_loop(conn, index)


def _worker_loop(conn: Any, index: int) -> None:
    import asyncio

    import grpc

    from meshkit.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc

    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()

    channels: dict[str, Any] = {}
    stubs: dict[str, Any] = {}
    rng = random.Random(1000 + index)
    value_cache: dict[int, bytes] = {}

    def value(size: int) -> bytes:
        if size not in value_cache:
            value_cache[size] = bytes(rng.getrandbits(8) for _ in range(size))
        return value_cache[size]

    async def stub_for(addr: str) -> Any:
        if addr not in stubs:
            ch = grpc.aio.insecure_channel(addr)
            await asyncio.wait_for(ch.channel_ready(), 30)
            channels[addr] = ch
            stubs[addr] = rpc_pb2_grpc.KVStub(ch)
        return stubs[addr]

    def requests(cmd: dict[str, Any]) -> tuple[str, list[Any]]:
        op = cmd["op"]
        if op == "put":
            v = value(cmd["value_size"])
            reqs = [rpc_pb2.PutRequest(key=b"bench/put/%05d" % rng.randrange(PUT_KEYSPACE), value=v)
                    for _ in range(1024)]
            return "Put", reqs
        ser = op == "range-s"
        reqs = [rpc_pb2.RangeRequest(key=b"bench/range/%04d" % rng.randrange(RANGE_KEYS),
                                     serializable=ser)
                for _ in range(1024)]
        return "Range", reqs

    async def run_round(cmd: dict[str, Any]) -> dict[str, Any]:
        stub = await stub_for(cmd["addr"])
        method_name, reqs = requests(cmd)
        method = getattr(stub, method_name)
        nclients = cmd["clients"]
        max_ops = cmd["max_ops"]
        lat = array.array("d")
        errors = 0
        first_error = ""
        done = 0
        start_at = cmd["start_at"]
        deadline = start_at + cmd["duration"]
        now = time.monotonic()
        if start_at > now:
            await asyncio.sleep(start_at - now)
        cpu0 = time.process_time()
        clock = time.perf_counter
        mono = time.monotonic

        async def client(c: int) -> None:
            nonlocal done, errors, first_error
            i = c * 37
            nreq = len(reqs)
            while mono() < deadline and done < max_ops:
                req = reqs[i % nreq]
                i += 1
                t = clock()
                try:
                    await method(req, timeout=CALL_TIMEOUT)
                except grpc.aio.AioRpcError as e:
                    errors += 1
                    if not first_error:
                        first_error = f"{e.code().name}: {e.details()}"
                    if errors > 1000:
                        return
                    continue
                lat.append(clock() - t)
                done += 1

        await asyncio.gather(*(client(c) for c in range(nclients)))
        return {"ops": done, "errors": errors, "first_error": first_error,
                "t_end": time.monotonic(), "lat": lat.tobytes(),
                "client_cpu": time.process_time() - cpu0}

    async def run_load(cmd: dict[str, Any]) -> dict[str, Any]:
        """Put keys prefix+%08d for i in [lo, hi) with ``clients`` coroutines."""
        stub = await stub_for(cmd["addr"])
        v = value(cmd["value_size"])
        prefix = cmd["prefix"]
        it = iter(range(cmd["lo"], cmd["hi"]))
        deadline = time.monotonic() + cmd["timeout"]
        done = 0
        errors = 0
        first_error = ""

        async def client() -> None:
            nonlocal done, errors, first_error
            for i in it:
                if time.monotonic() > deadline:
                    return
                req = rpc_pb2.PutRequest(key=prefix + b"%08d" % i, value=v)
                for _attempt in range(5):
                    try:
                        await stub.Put(req, timeout=CALL_TIMEOUT)
                        done += 1
                        break
                    except grpc.aio.AioRpcError as e:
                        errors += 1
                        first_error = first_error or f"{e.code().name}: {e.details()}"
                        await asyncio.sleep(0.05)

        await asyncio.gather(*(client() for _ in range(cmd["clients"])))
        return {"ops": done, "errors": errors, "first_error": first_error,
                "t_end": time.monotonic()}

    async def forget(addr: str) -> dict[str, Any]:
        ch = channels.pop(addr, None)
        stubs.pop(addr, None)
        if ch is not None:
            await ch.close()
        return {}

    async def close_all() -> None:
        for addr in list(channels):
            await forget(addr)

    with runner:
        for _ in range(1_000_000):  # bounded; the parent sends None to stop
            cmd = conn.recv()
            if cmd is None:
                break
            try:
                if cmd["op"] == "load":
                    res = runner.run(run_load(cmd))
                elif cmd["op"] == "forget":
                    res = runner.run(forget(cmd["addr"]))
                else:
                    res = runner.run(run_round(cmd))
            except Exception as e:  # report, keep serving
                res = {"ops": 0, "errors": 1, "first_error": f"{type(e).__name__}: {e}",
                       "t_end": time.monotonic(), "lat": b"", "client_cpu": 0.0}
            conn.send(res)
        runner.run(close_all())


class LoadPool:
    """``n`` worker processes driven over pipes."""

    def __init__(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self.conns = []
        self.procs = []
        for i in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(child, i), daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)

    def run(self, cmds: list[dict[str, Any] | None], timeout: float) -> list[dict[str, Any]]:
        """Send cmds[i] to worker i (None = idle), wait for all replies."""
        busy = []
        for conn, cmd in zip(self.conns, cmds, strict=True):
            if cmd is not None:
                conn.send(cmd)
                busy.append(conn)
        out = []
        deadline = time.monotonic() + timeout
        for conn in busy:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("a load worker did not answer in time")
            out.append(conn.recv())
        return out

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.send(None)
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)


# --------------------------------------------------------------------------
# rounds and aggregation
# --------------------------------------------------------------------------

@dataclass
class Agg:
    ops: int = 0
    errors: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    first_error: str = ""
    lat: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.lat)

        def pct(p: float) -> float:
            if not lat:
                return float("nan")
            return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3

        return {
            "ops": self.ops,
            "errors": self.errors,
            "first_error": self.first_error,
            "seconds": round(self.seconds, 3),
            "ops_per_s": self.ops / self.seconds if self.seconds else 0.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "server_cpu_us_per_op": self.server_cpu / self.ops * 1e6 if self.ops else float("nan"),
            "server_cores": self.server_cpu / self.seconds if self.seconds else 0.0,
            "loadgen_cores": self.client_cpu / self.seconds if self.seconds else 0.0,
        }


def split(n: int, workers: int) -> list[int]:
    base, extra = divmod(n, workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


def one_round(pool: LoadPool, srv: ServerProc, op: str, clients: int, duration: float,
              value_size: int, agg: Agg | None) -> None:
    per = split(clients, len(pool.conns))
    start_at = time.monotonic() + 0.2
    cmds: list[dict[str, Any] | None] = []
    for c in per:
        if c == 0:
            cmds.append(None)
            continue
        cmds.append({"op": op, "addr": srv.address, "clients": c, "start_at": start_at,
                     "duration": duration, "max_ops": 10_000_000, "value_size": value_size})
    # workers sleep until start_at; the server's CPU is read at start_at
    res: list[dict[str, Any]] = []
    busy = []
    for conn, cmd in zip(pool.conns, cmds, strict=True):
        if cmd is not None:
            conn.send(cmd)
            busy.append(conn)
    wait = start_at - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    cpu0 = srv.cpu_seconds()
    deadline = time.monotonic() + duration + CALL_TIMEOUT + 40
    for conn in busy:
        if not conn.poll(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("a load worker did not answer in time")
        res.append(conn.recv())
    cpu1 = srv.cpu_seconds()
    if agg is None:
        return
    agg.ops += sum(r["ops"] for r in res)
    agg.errors += sum(r["errors"] for r in res)
    agg.first_error = agg.first_error or next((r["first_error"] for r in res if r["first_error"]), "")
    agg.seconds += max(r["t_end"] for r in res) - start_at
    agg.server_cpu += cpu1 - cpu0
    agg.client_cpu += sum(r.get("client_cpu", 0.0) for r in res)
    for r in res:
        a = array.array("d")
        a.frombytes(r["lat"])
        agg.lat.extend(a)


def load_keys(pool: LoadPool, srv: ServerProc, prefix: bytes, n: int, clients: int,
              value_size: int, timeout: float) -> dict[str, Any]:
    w = len(pool.conns)
    bounds = [n * i // w for i in range(w + 1)]
    per = split(clients, w)
    cmds: list[dict[str, Any] | None] = [
        {"op": "load", "addr": srv.address, "prefix": prefix, "lo": bounds[i], "hi": bounds[i + 1],
         "clients": max(1, per[i]), "value_size": value_size, "timeout": timeout}
        for i in range(w)
    ]
    t0 = time.monotonic()
    res = pool.run(cmds, timeout + CALL_TIMEOUT + 30)
    dt = max(r["t_end"] for r in res) - t0
    ops = sum(r["ops"] for r in res)
    return {"keys": ops, "seconds": dt, "puts_per_s": ops / dt if dt else 0.0,
            "errors": sum(r["errors"] for r in res),
            "first_error": next((r["first_error"] for r in res if r["first_error"]), "")}


def forget(pool: LoadPool, srv: ServerProc) -> None:
    pool.run([{"op": "forget", "addr": srv.address} for _ in pool.conns], 30)


# --------------------------------------------------------------------------
# phases
# --------------------------------------------------------------------------

def throughput_phase(a: argparse.Namespace, pool: LoadPool, workdir: Path,
                     servers: list[ServerProc]) -> list[dict[str, Any]]:
    etcd, mesh = servers
    for s in servers:
        s.start()
        print(f"  {s.name:8s} pid {s.pid:<7d} client {s.address}", flush=True)
    print_header()
    ops = [o for o in a.ops.split(",") if o]
    if any(o.startswith("range") for o in ops):
        for s in servers:
            _populate_range_keys(s, a.value_size)
    rows = []
    for op in ops:
        for s in servers:  # warm-up (connections, caches, JIT-free but page-in)
            one_round(pool, s, op, max(a.clients_list), min(1.0, a.duration), a.value_size, None)
        for clients in a.clients_list:
            aggs = {s.name: Agg() for s in servers}
            order: list[ServerProc] = []
            for rep in range(a.reps):
                order += [etcd, mesh] if rep % 2 == 0 else [mesh, etcd]
            for s in order:
                one_round(pool, s, op, clients, a.duration, a.value_size, aggs[s.name])
            row = {"op": op, "clients": clients,
                   "etcd": aggs["etcd"].summary(), "meshkit": aggs["meshkit"].summary()}
            rows.append(row)
            print_row(row, flush=True)
    return rows


def _populate_range_keys(srv: ServerProc, value_size: int) -> None:
    import grpc

    from meshkit.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc

    v = os.urandom(value_size)
    with grpc.insecure_channel(srv.address) as ch:
        stub = rpc_pb2_grpc.KVStub(ch)
        futs = [stub.Put.future(rpc_pb2.PutRequest(key=b"bench/range/%04d" % i, value=v),
                                timeout=CALL_TIMEOUT) for i in range(RANGE_KEYS)]
        for f in futs:
            f.result()
    n = count_keys(srv, b"bench/range/")
    if n < RANGE_KEYS:
        raise RuntimeError(f"{srv.name}: expected >= {RANGE_KEYS} range keys, found {n}")


def memory_phase(a: argparse.Namespace, pool: LoadPool, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"keys": a.keys, "value_size": a.value_size}
    servers = [ServerProc("etcd", workdir, "etcd-mem"),
               MeshkitProc(workdir, "meshkit-mem", client_port_mode=a.meshkit_client_port)]
    try:
        for s in servers:
            t = s.start()
            out[s.kind] = {"first_start_s": t, "rss_empty_mib": s.rss_mib()}
        for s in servers:
            print(f"  loading {a.keys:,} keys x {a.value_size} B into {s.kind} ...", flush=True)
            r = load_keys(pool, s, b"mem/", a.keys, 64, a.value_size, a.load_timeout)
            forget(pool, s)
            time.sleep(0.5)
            o = out[s.kind]
            o["load"] = r
            o["count"] = count_keys(s, b"mem/")
            o["rss_loaded_mib"] = s.rss_mib()
        for s in servers:
            o = out[s.kind]
            o["stop_sigterm_s"] = s.stop(signal.SIGTERM)
            o["data_dir_mib"] = dir_size_mib(s.data_dir)
            o["restart_after_sigterm_s"] = s.start(timeout=a.load_timeout)
            o["count_after_sigterm"] = count_keys(s, b"mem/")
            time.sleep(0.5)
            o["rss_after_restart_mib"] = s.rss_mib()
            s.stop(signal.SIGKILL)
            o["restart_after_sigkill_s"] = s.start(timeout=a.load_timeout)
            o["count_after_sigkill"] = count_keys(s, b"mem/")
    finally:
        for s in servers:
            s.stop()
    return out


# --------------------------------------------------------------------------
# printing
# --------------------------------------------------------------------------

HEADER = (f"{'op':8s} {'cli':>3s} | {'etcd ops/s':>10s} {'meshkit':>9s} {'ratio':>5s} | "
          f"{'etcd p50/p99 ms':>15s} {'meshkit p50/p99':>15s} | "
          f"{'etcd CPU':>8s} {'meshkit':>8s} {'ratio':>5s} | {'gen cores':>9s}")


def print_header() -> None:
    print(HEADER)
    print("-" * len(HEADER))


def _ratio(m: float, e: float) -> str:
    return f"{m / e:5.2f}" if e and e == e and m == m else "  n/a"


def print_row(row: dict[str, Any], flush: bool = False) -> None:
    e, m = row["etcd"], row["meshkit"]
    err = ""
    if e["errors"] or m["errors"]:
        err = f"  errors etcd={e['errors']} meshkit={m['errors']} ({e['first_error'] or m['first_error']})"
    print(f"{row['op']:8s} {row['clients']:>3d} | {e['ops_per_s']:>10,.0f} {m['ops_per_s']:>9,.0f} "
          f"{_ratio(m['ops_per_s'], e['ops_per_s'])} | "
          f"{e['p50_ms']:>6.2f} / {e['p99_ms']:>6.2f} {m['p50_ms']:>6.2f} / {m['p99_ms']:>6.2f} | "
          f"{e['server_cpu_us_per_op']:>6.0f}us {m['server_cpu_us_per_op']:>6.0f}us "
          f"{_ratio(m['server_cpu_us_per_op'], e['server_cpu_us_per_op'])} | "
          f"{e['loadgen_cores']:>4.2f}/{m['loadgen_cores']:<4.2f}{err}", flush=flush)


def print_memory(mem: dict[str, Any]) -> None:
    e, m = mem["etcd"], mem["meshkit"]
    print()
    print(f"memory and restart with {mem['keys']:,} keys x {mem['value_size']} B "
          f"(loaded by 64 clients, one Put each)")
    print(f"{'':34s} {'etcd':>10s} {'meshkit':>10s} {'ratio':>6s}")

    def line(label: str, key: str, fmt: str, sub: str | None = None) -> None:
        ev = e[key][sub] if sub else e[key]
        mv = m[key][sub] if sub else m[key]
        print(f"{label:34s} {format(ev, fmt):>10s} {format(mv, fmt):>10s} {_ratio(mv, ev):>6s}")

    line("load puts/s", "load", ",.0f", "puts_per_s")
    line("keys counted after load", "count", "d")
    line("RSS empty (MiB)", "rss_empty_mib", ".1f")
    line("RSS loaded (MiB)", "rss_loaded_mib", ".1f")
    line("RSS after restart (MiB)", "rss_after_restart_mib", ".1f")
    line("data dir on disk (MiB)", "data_dir_mib", ".1f")
    line("first start, empty (s)", "first_start_s", ".3f")
    line("stop after SIGTERM (s)", "stop_sigterm_s", ".3f")
    line("restart after SIGTERM (s)", "restart_after_sigterm_s", ".3f")
    line("restart after SIGKILL (s)", "restart_after_sigkill_s", ".3f")
    line("keys counted after SIGKILL", "count_after_sigkill", "d")
    for k, v in (("etcd", e), ("meshkit", m)):
        if v["load"]["errors"]:
            print(f"  {k} load errors: {v['load']['errors']} ({v['load']['first_error']})")


def print_targets(rows: list[dict[str, Any]], mem: dict[str, Any] | None) -> None:
    print()
    print("targets (single member):")
    top = max((r["clients"] for r in rows), default=0)
    for r in rows:
        if r["clients"] != top:
            continue
        tr = r["meshkit"]["ops_per_s"] / r["etcd"]["ops_per_s"] if r["etcd"]["ops_per_s"] else 0
        print(f"  {r['op']:8s} throughput at {top} clients >= 0.5x etcd: {tr:.2f}x "
              f"{'ok' if tr >= 0.5 else 'MISSED'}")
        if r["op"] == "put":
            cr = r["meshkit"]["server_cpu_us_per_op"] / r["etcd"]["server_cpu_us_per_op"]
            print(f"  put CPU/op at {top} clients <= 3x etcd: {cr:.2f}x "
                  f"{'ok' if cr <= 3 else 'MISSED'}")
    if mem:
        mr = mem["meshkit"]["rss_loaded_mib"] / mem["etcd"]["rss_loaded_mib"]
        print(f"  RSS with {mem['keys']:,} keys <= 3x etcd: {mr:.2f}x {'ok' if mr <= 3 else 'MISSED'}")


# --------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=None, help="seconds per round (3; quick 1)")
    ap.add_argument("--reps", type=int, default=None,
                    help="rounds per server per row, alternating (2; quick 1)")
    ap.add_argument("--clients", default="1,16,64", help="concurrent clients per row")
    ap.add_argument("--ops", default=",".join(OPS), help=f"comma list of {', '.join(OPS)}")
    ap.add_argument("--keys", type=int, default=None, help="keys for the memory phase (100000; quick 20000)")
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2, help="load generator processes")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--quick", action="store_true", help="short rounds, 20k keys")
    ap.add_argument("--load-timeout", type=float, default=240.0,
                    help="bound on loading the memory-phase keys and on a restart")
    ap.add_argument("--json", nargs="?", const="-", metavar="PATH",
                    help="dump results as JSON to PATH (or stdout)")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dirs and logs")
    ap.add_argument("--meshkit-prefix", default="",
                    help="argv before 'meshkit server' (default: python -m), e.g. "
                         "'python -m cProfile -o /tmp/prof.out -m' to profile the server")
    ap.add_argument("--meshkit-client-port", choices=("mux", "grpc"), default="mux",
                    help="mux: meshkit's client URL serves gRPC and HTTP (forwarded to grpc); "
                         "grpc: HTTP on --listen-client-http-urls, grpc binds the client URL")
    a = ap.parse_args(argv)
    if a.duration is None:
        a.duration = 1.0 if a.quick else 3.0
    if a.reps is None:
        a.reps = 1 if a.quick else 2
    if a.keys is None:
        a.keys = 20_000 if a.quick else 100_000
    a.clients_list = [int(c) for c in a.clients.split(",") if c]
    bad = [o for o in a.ops.split(",") if o and o not in OPS]
    if bad:
        ap.error(f"unknown ops {bad}")
    if min(a.clients_list) < 1 or a.duration <= 0 or a.reps < 1 or a.workers < 1:
        ap.error("clients, duration, reps and workers must be positive")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    t_start = time.monotonic()
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "args": {k: v for k, v in vars(a).items() if k != "json"},
    }
    pool = LoadPool(a.workers)
    servers: list[ServerProc] = []
    try:
        with WorkDir(keep=a.keep) as workdir:
            print(f"kv_bench: {os.cpu_count()} cpus, {a.workers} load processes (grpc.aio), "
                  f"{a.duration:g}s rounds x {a.reps} per server, alternating; "
                  f"meshkit client port: {a.meshkit_client_port}; work dir {workdir}")
            if not a.skip_throughput:
                prefix = shlex.split(a.meshkit_prefix) or None
                servers = [ServerProc("etcd", workdir),
                           MeshkitProc(workdir, python_prefix=prefix,
                                       client_port_mode=a.meshkit_client_port)]
                print()
                print("put = 256 B value on 10,000 keys; range = one key of 1,000 (linearizable); "
                      "range-s = serializable")
                print("CPU = server CPU time per op (user+sys, all threads); "
                      "gen cores = load generator CPU use etcd/meshkit")
                rows = throughput_phase(a, pool, workdir, servers)
                results["throughput"] = rows
                for s in servers:
                    s.stop()
                servers = []
            mem = None
            if not a.skip_memory:
                print()
                mem = memory_phase(a, pool, workdir)
                results["memory"] = mem
                print_memory(mem)
            if not a.skip_throughput:
                print_targets(results["throughput"], mem)
            results["wall_s"] = time.monotonic() - t_start
            print(f"\ntotal wall time {results['wall_s']:.0f}s")
            if a.keep:
                print(f"kept {workdir}")
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        for s in servers:
            s.stop()
        pool.close()
    if a.json:
        text = json.dumps(results, indent=2, default=float)
        if a.json == "-":
            print(text)
        else:
            Path(a.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
