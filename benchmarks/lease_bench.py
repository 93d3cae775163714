"""Side-by-side lease benchmark: meshkit's server against a real etcd 3.4 (not a test).

Both servers run at once on loopback. Each gets --leases leases (granted over a
few concurrent unary calls), then load processes keep all of them alive over
bidirectional LeaseKeepAlive streams (one stream per worker, a bounded window of
requests in flight, leases renewed round-robin) for --duration seconds. Printed:
grant rate, keep-alives per second, server CPU per keep-alive, and the ratios
meshkit/etcd. Finally, what share of one core each server spends keeping the
leases alive at the rate real clients use (every TTL/3 with --ttl).

    python benchmarks/lease_bench.py                  # 10,000 leases, about a minute
    python benchmarks/lease_bench.py --quick          # 2,000 leases, short phases

On a 2-core machine the Python load generator shares the cores with the server,
so throughput ratios understate etcd; server CPU per keep-alive is the honest
efficiency figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc as rpc

ETCD_BIN = os.environ.get("ETCD_BIN", shutil.which("etcd") or "/usr/bin/etcd")
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass
class Server:
    kind: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.port = free_port()
        self.peer = free_port()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        client, peer = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.peer}"
        flags = ["--name", "default", "--data-dir", str(self.workdir / f"{self.kind}.data"),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"default={peer}"]
        argv = [ETCD_BIN, *flags] if self.kind == "etcd" else [sys.executable, "-m", "meshkit", "server", *flags]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        with open(self.workdir / f"{self.kind}.log", "ab") as log:  # the child keeps its own fd
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}")
            try:
                with grpc.insecure_channel(self.address) as ch:
                    rpc.KVStub(ch).Range(pb.RangeRequest(key=b"\0"), timeout=0.5)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def cpu(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)


# ---------------------------------------------------------------- load (child processes)

async def _grant(address: str, n: int, ttl: int, concurrency: int = 32) -> list[int]:
    async with grpc.aio.insecure_channel(address) as ch:
        stub = rpc.LeaseStub(ch)
        ids: list[int] = []
        left = n

        async def one() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                r = await stub.LeaseGrant(pb.LeaseGrantRequest(TTL=ttl), timeout=30)
                ids.append(r.ID)

        await asyncio.gather(*(one() for _ in range(concurrency)))
        return ids


async def _keep_alive(address: str, ids: list[int], duration: float, window: int) -> tuple[int, int]:
    """Renew ``ids`` round-robin over one stream for ``duration`` s; (ok, lost)."""
    async with grpc.aio.insecure_channel(address) as ch:
        call = rpc.LeaseStub(ch).LeaseKeepAlive()
        slots = asyncio.Semaphore(window)
        ok = lost = 0
        stop_at = time.monotonic() + duration

        async def reader() -> None:
            nonlocal ok, lost
            async for r in call:
                if r.TTL > 0:
                    ok += 1
                else:
                    lost += 1
                slots.release()

        rt = asyncio.create_task(reader())
        i = 0
        while time.monotonic() < stop_at:
            await slots.acquire()
            await call.write(pb.LeaseKeepAliveRequest(ID=ids[i % len(ids)]))
            i += 1
        for _ in range(window):  # drain what is in flight
            await asyncio.wait_for(slots.acquire(), 30)
        await call.done_writing()
        await asyncio.wait_for(rt, 30)
        return ok, lost


def _worker(address: str, ids: list[int], duration: float, window: int, q: Any) -> None:
    q.put(asyncio.run(_keep_alive(address, ids, duration, window)))


def _granter(address: str, n: int, ttl: int, q: Any) -> None:
    q.put(asyncio.run(_grant(address, n, ttl)))


# ---------------------------------------------------------------- driver

@dataclass
class Result:
    grants_per_s: float
    grant_cpu_us: float
    ka_per_s: float
    ka_cpu_us: float
    lost: int


def measure(srv: Server, n: int, ttl: int, workers: int, duration: float, window: int) -> Result:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    cpu0, t0 = srv.cpu(), time.perf_counter()
    per = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    procs = [ctx.Process(target=_granter, args=(srv.address, k, ttl, q)) for k in per]
    for p in procs:
        p.start()
    ids: list[int] = []
    for _ in procs:
        ids.extend(q.get(timeout=300))
    for p in procs:
        p.join()
    dt, dcpu = time.perf_counter() - t0, srv.cpu() - cpu0
    grants = Result(n / dt, dcpu / n * 1e6, 0, 0, 0)

    shards = [ids[i::workers] for i in range(workers)]
    procs = [ctx.Process(target=_worker, args=(srv.address, s, duration, window, q)) for s in shards]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let the streams open; count from here
    cpu0, t0 = srv.cpu(), time.perf_counter()
    results = [q.get(timeout=duration + 120) for _ in procs]
    dt, dcpu = time.perf_counter() - t0, srv.cpu() - cpu0
    for p in procs:
        p.join()
    ok = sum(r[0] for r in results)
    lost = sum(r[1] for r in results)
    grants.ka_per_s = ok / dt
    grants.ka_cpu_us = dcpu / max(1, ok) * 1e6
    grants.lost = lost
    return grants


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--leases", type=int, default=10_000)
    ap.add_argument("--ttl", type=int, default=60, help="TTL of the leases (and the steady-state estimate)")
    ap.add_argument("--workers", type=int, default=2, help="load processes (one keep-alive stream each)")
    ap.add_argument("--window", type=int, default=256, help="keep-alive requests in flight per stream")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2, help="measurements per server, alternating")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.leases, a.duration, a.rounds = 2000, 4.0, 1

    work = Path(tempfile.mkdtemp(prefix="lease-bench-"))
    servers = {k: Server(k, work) for k in ("etcd", "meshkit")}
    try:
        for s in servers.values():
            s.start()
        res: dict[str, list[Result]] = {k: [] for k in servers}
        order = ["etcd", "meshkit", "meshkit", "etcd"] * a.rounds
        for kind in order[: 2 * a.rounds]:
            r = measure(servers[kind], a.leases, a.ttl, a.workers, a.duration, a.window)
            res[kind].append(r)
            print(f"  {kind:8s} grant {r.grants_per_s:8,.0f}/s ({r.grant_cpu_us:6.0f} us cpu each)  "
                  f"keep-alive {r.ka_per_s:8,.0f}/s ({r.ka_cpu_us:6.1f} us cpu each)  lost {r.lost}",
                  flush=True)

        def best(kind: str) -> Result:
            return max(res[kind], key=lambda r: r.ka_per_s)

        e, m = best("etcd"), best("meshkit")
        print()
        print(f"{a.leases:,} leases (TTL {a.ttl}s), {a.workers} keep-alive streams, window {a.window}")
        print(f"{'':22s}{'etcd':>12s}{'meshkit':>12s}{'meshkit/etcd':>14s}")
        rows = [
            ("grants/s", e.grants_per_s, m.grants_per_s),
            ("grant cpu us", e.grant_cpu_us, m.grant_cpu_us),
            ("keep-alives/s", e.ka_per_s, m.ka_per_s),
            ("keep-alive cpu us", e.ka_cpu_us, m.ka_cpu_us),
        ]
        for name, ev, mv in rows:
            print(f"{name:22s}{ev:12,.1f}{mv:12,.1f}{mv / ev:14.2f}")
        need = a.leases / (a.ttl / 3)
        print(f"\nkeeping {a.leases:,} leases alive at TTL/3 needs {need:,.0f} keep-alives/s:")
        for kind, r in (("etcd", e), ("meshkit", m)):
            print(f"  {kind:8s} {need * r.ka_cpu_us / 1e6 * 100:5.1f}% of one core, "
                  f"headroom {r.ka_per_s / need:5.1f}x")
    finally:
        for s in servers.values():
            with contextlib.suppress(Exception):
                s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
