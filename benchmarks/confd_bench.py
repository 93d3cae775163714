"""confd latency and render cost, side by side on the real etcd and meshkit.

* put -> file: a value is put; the time until ``meshkit confd --watch``'s rendered
  destination contains it (p50/p99 over ``--changes`` puts, one at a time).
* put -> reload: the same put until the resource's ``reload_cmd`` has run.
* render of a template over 1,000 keys: a ``--onetime`` run (fetch at one
  revision + render + compare with the existing file), median of several.

Usage: python benchmarks/confd_bench.py [--changes 50] [--keys 1000]
Not a test; loopback only; every wait bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ServerProc, WorkDir

from meshkit.client import Client
from meshkit.confd import Confd, ConfdConfig

WAIT_LIMIT = 5.0


def _write_confdir(root: Path, name: str, keys_prefix: str, dest: Path, reloads: Path) -> Path:
    confdir = root / name
    (confdir / "conf.d").mkdir(parents=True)
    (confdir / "templates").mkdir()
    (confdir / "templates" / f"{name}.tmpl").write_text(
        "{% for kv in gets('" + keys_prefix + "/*') %}{{ kv.Key }}={{ kv.Value }}\n{% endfor %}"
    )
    (confdir / "conf.d" / f"{name}.toml").write_text(
        "[template]\n"
        f'src = "{name}.tmpl"\n'
        f'dest = "{dest}"\n'
        f'keys = ["{keys_prefix}"]\n'
        f"reload_cmd = \"sh -c 'date +%s.%N >> {reloads}'\"\n"
    )
    return confdir


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


async def _latency(endpoint: str, work: Path, changes: int) -> tuple[list[float], list[float]]:
    dest, reloads = work / "watch.out", work / "reloads.txt"
    reloads.touch()
    confdir = _write_confdir(work, "watch", "/lat", dest, reloads)
    to_file: list[float] = []
    to_reload: list[float] = []
    async with Client([endpoint], timeout=10) as c:
        await c.put("/lat/seed", "0")
        async with Confd(c, ConfdConfig(str(confdir), mode="watch")):
            deadline = time.monotonic() + WAIT_LIMIT
            # Polling is the measurement: the file appearing is what is timed.
            while not dest.exists() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            for i in range(changes):
                n_reloads = len(reloads.read_text().splitlines())
                marker = f"v{i}-{time.time_ns()}"
                t0 = time.monotonic()
                await c.put("/lat/k", marker)
                got_file = got_reload = 0.0
                deadline = t0 + WAIT_LIMIT
                while time.monotonic() < deadline and not (got_file and got_reload):
                    now = time.monotonic()
                    if not got_file and marker in dest.read_text():
                        got_file = now
                    if not got_reload and got_file and len(reloads.read_text().splitlines()) > n_reloads:
                        got_reload = now
                    await asyncio.sleep(0.001)
                if not (got_file and got_reload):
                    raise RuntimeError(f"change {i} not rendered/reloaded within {WAIT_LIMIT}s")
                to_file.append(got_file - t0)
                to_reload.append(got_reload - t0)
    return to_file, to_reload


async def _render(endpoint: str, work: Path, keys: int, runs: int) -> float:
    dest, reloads = work / "big.out", work / "big-reloads.txt"
    confdir = _write_confdir(work, "big", "/big", dest, reloads)
    async with Client([endpoint], timeout=30) as c:
        for start in range(0, keys, 100):
            txn = c.txn().then(*[c.op.put(f"/big/k{j:05d}", "x" * 64) for j in range(start, min(keys, start + 100))])
            await txn.commit()
        times = []
        for i in range(runs):
            await c.put("/big/k00000", f"changed-{i}")  # so every run writes the file
            t0 = time.perf_counter()
            outcomes = await Confd(c, ConfdConfig(str(confdir), mode="onetime")).run_once()
            times.append(time.perf_counter() - t0)
            if len(dest.read_text().splitlines()) != keys:
                raise RuntimeError(f"rendered {len(dest.read_text().splitlines())} lines, want {keys}: {outcomes}")
    return statistics.median(times)


def run(kind: str, work: Path, ns: argparse.Namespace) -> dict[str, float]:
    srv = ServerProc(kind, work, name=kind)
    srv.start()
    try:
        sub = work / f"{kind}-confd"
        sub.mkdir()
        to_file, to_reload = asyncio.run(_latency(srv.address, sub, ns.changes))
        render = asyncio.run(_render(srv.address, sub, ns.keys, ns.runs))
    finally:
        srv.stop()
    return {"file_p50": _pct(to_file, 0.5), "file_p99": _pct(to_file, 0.99),
            "reload_p50": _pct(to_reload, 0.5), "reload_p99": _pct(to_reload, 0.99),
            "render_ms": render * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=int, default=50)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ns = ap.parse_args()
    with WorkDir() as work:
        res = {kind: run(kind, work, ns) for kind in ("etcd", "meshkit")}
    e, m = res["etcd"], res["meshkit"]
    print(f"confd watch mode, {ns.changes} puts one at a time; onetime render over {ns.keys} keys")
    print(f"{'':30s}{'etcd':>10s}{'meshkit':>10s}{'ratio':>8s}")
    for label, key in [("put -> file p50 (ms)", "file_p50"), ("put -> file p99 (ms)", "file_p99"),
                       ("put -> reload p50 (ms)", "reload_p50"), ("put -> reload p99 (ms)", "reload_p99"),
                       (f"render {ns.keys} keys (ms)", "render_ms")]:
        print(f"{label:30s}{e[key]:10.1f}{m[key]:10.1f}{m[key] / e[key]:8.2f}")


if __name__ == "__main__":
    main()
