"""metad side by side: the same `meshkit metad` in front of a real etcd 3.4 and in front
of meshkit's server.

* /self requests per second and p50/p99 latency at N concurrent clients (default 100),
  each client its own loopback address 127.0.0.X with its own mapping: answers come
  from metad's memory, so the backend should not matter (that is the point).
* change propagation: the time from the start of a cluster put to a waiting long poll
  (?wait=true) answering the new value, p50/p99 over R rounds.

    python benchmarks/metad_bench.py              # 3 s load, 100 clients, 50 rounds
    python benchmarks/metad_bench.py --quick      # 1 s load, 20 rounds

Not a test; loopback only; everything bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import ServerProc, WorkDir, free_port, proc_cpu_seconds

from meshkit.client import Client


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def start_metad(endpoint: str, workdir: Path, name: str) -> tuple[asyncio.subprocess.Process, int, int]:
    port, mport = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshkit.cli.metad", "--endpoints", endpoint,
        "--listen", f"127.0.0.1:{port}", "--manage-listen", f"127.0.0.1:{mport}",
        "--prefix", "/bench", "--log-level", "warn",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(f"http://127.0.0.1:{mport}/health") as r:
                    if r.status == 200:
                        return proc, port, mport
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"metad for {name} did not become healthy")


async def load_fixture(mport: int, clients: int) -> None:
    nodes = {str(i): {"ip": f"10.0.{i // 250}.{i % 250}", "name": f"node{i}", "zone": f"z{i % 3}",
                      "labels": {"role": "web", "rack": str(i % 7)}} for i in range(clients)}
    mapping = {f"127.0.0.{i + 2}": {"node": f"/nodes/{i}"} for i in range(clients)}
    async with aiohttp.ClientSession() as s:
        # 5 keys per node: post the nodes in slices under etcd's 128 ops per txn
        ids = sorted(nodes, key=int)
        for k in range(0, len(ids), 20):
            part = {i: nodes[i] for i in ids[k:k + 20]}
            async with s.put(f"http://127.0.0.1:{mport}/v1/data/nodes", data=json.dumps(part)) as r:
                assert r.status == 200, await r.text()
        for k in range(0, len(mapping), 100):
            part = dict(list(mapping.items())[k:k + 100])
            async with s.put(f"http://127.0.0.1:{mport}/v1/mapping", data=json.dumps(part)) as r:
                assert r.status == 200, await r.text()


async def self_load(port: int, clients: int, duration: float) -> tuple[int, list[float], int]:
    lat: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration

    async def one(i: int) -> None:
        nonlocal errors
        conn = aiohttp.TCPConnector(local_addr=(f"127.0.0.{i + 2}", 0), limit=1)
        async with aiohttp.ClientSession(connector=conn) as s:
            url = f"http://127.0.0.1:{port}/self"
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                async with s.get(url) as r:
                    body = await r.read()
                    if r.status != 200 or f"node{i}".encode() not in body:
                        errors += 1
                lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(one(i) for i in range(clients)))
    return len(lat), lat, errors


async def propagation(port: int, endpoint: str, rounds: int) -> list[float]:
    out: list[float] = []
    conn = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with Client([endpoint]) as c, aiohttp.ClientSession(connector=conn) as s:
        for n in range(rounds):
            async with s.get(f"http://127.0.0.1:{port}/self") as r:
                version = r.headers["X-Metad-Version"]
            poll = asyncio.ensure_future(s.get(
                f"http://127.0.0.1:{port}/self/node/name?wait=true&prev_version={version}&timeout=10"))
            await asyncio.sleep(0.02)  # let the long poll register
            value = f"renamed-{n}"
            t_put = time.perf_counter()  # from the put's start: includes its own latency
            await c.put("/bench/nodes/0/name", value)
            async with await poll as r:
                body = await r.text()
            out.append(time.perf_counter() - t_put)
            if body != value:
                raise RuntimeError(f"long poll answered {body!r}, expected {value!r}")
    return out


async def run_one(kind: str, workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    srv = ServerProc(kind, workdir)
    srv.start()
    proc = None
    try:
        proc, port, mport = await start_metad(srv.address, workdir, kind)
        await load_fixture(mport, args.clients)
        await self_load(port, args.clients, 0.5)  # warm-up
        cpu0 = proc_cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        n, lat, errors = await self_load(port, args.clients, args.duration)
        wall = time.perf_counter() - t0
        cpu = proc_cpu_seconds(proc.pid) - cpu0
        prop = await propagation(port, srv.address, args.rounds)
        return {"rps": n / wall, "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
                "errors": errors, "metad_cpu_us_per_req": cpu / max(n, 1) * 1e6,
                "prop_p50_ms": statistics.median(prop) * 1e3, "prop_p99_ms": pct(prop, 99) * 1e3}
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)
        srv.stop()


async def amain(args: argparse.Namespace) -> None:
    results: dict[str, dict[str, float]] = {}
    with WorkDir() as wd:
        for kind in ("etcd", "meshkit"):
            results[kind] = await run_one(kind, wd, args)
    cols = ["rps", "p50_ms", "p99_ms", "errors", "metad_cpu_us_per_req", "prop_p50_ms", "prop_p99_ms"]
    print(f"metad /self at {args.clients} clients for {args.duration:g} s; propagation over "
          f"{args.rounds} rounds (cpus: {os.cpu_count()})")
    print(f"{'backend':<9}" + "".join(f"{c:>22}" for c in cols))
    for kind, r in results.items():
        print(f"{kind:<9}" + "".join(f"{r[c]:>22.1f}" for c in cols))
    e, m = results["etcd"], results["meshkit"]
    print(f"{'ratio m/e':<9}" + "".join(
        f"{(m[c] / e[c] if e[c] else float('nan')):>22.2f}" for c in cols))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.rounds = 1.0, 20
    if not 1 <= args.clients <= 250:
        ap.error("--clients must be 1..250 (one loopback address 127.0.0.2.. each)")
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
