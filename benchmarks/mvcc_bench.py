"""MVCC store alone: puts/s, ranges/s, restart time and RSS (not a test).

python benchmarks/mvcc_bench.py [--keys 100000] [--value-size 256]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from meshkit.server.backend import Backend
from meshkit.server.mvcc import KVStore


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def restart_child(path: str) -> None:
    base = rss_mib()
    t = time.perf_counter()
    s = KVStore(Backend.open(Path(path)))
    dt = time.perf_counter() - t
    print(f"{dt:.3f} {rss_mib():.1f} {base:.1f} {len(s)} {s.current_revision}")


def rate(n: int, dt: float) -> str:
    return f"{n / dt:>10,.0f}/s  ({dt / n * 1e6:.1f} us each)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--commit-every", type=int, default=1000)
    ap.add_argument("--restart-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.restart_child:
        restart_child(a.restart_child)
        return

    d = Path(tempfile.mkdtemp(prefix="mvcc-bench-"))
    path = d / "db.sqlite"
    s = KVStore(Backend.open(path))
    value = os.urandom(a.value_size)
    keys = [b"/registry/key/%08d" % i for i in range(a.keys)]

    # puts: one put per write txn (one Raft entry), commit every N entries
    t = time.perf_counter()
    for i, k in enumerate(keys, 1):
        with s.write() as txn:
            txn.put(k, value)
        s.set_consistent_index(i)
        if i % a.commit_every == 0:
            s.commit()
    s.commit()
    print(f"put new key, commit every {a.commit_every}:   {rate(a.keys, time.perf_counter() - t)}")

    n_over = min(a.keys, 50_000)
    t = time.perf_counter()
    for i, k in enumerate(keys[:n_over], 1):
        with s.write() as txn:
            txn.put(k, value)
        if i % a.commit_every == 0:
            s.commit()
    s.commit()
    print(f"put overwrite:                      {rate(n_over, time.perf_counter() - t)}")

    n = 200_000
    t = time.perf_counter()
    for i in range(n):
        s.range(keys[i % a.keys])
    print(f"range 1 key, current rev:           {rate(n, time.perf_counter() - t)}")

    n = 20_000
    t = time.perf_counter()
    for i in range(n):
        j = (i * 37) % (a.keys - 10)
        s.range(keys[j], keys[j + 10])
    print(f"range 10 keys, current rev:         {rate(n, time.perf_counter() - t)}")

    old = a.keys + 1  # every key exists there; half were overwritten since
    t = time.perf_counter()
    for i in range(n):
        s.range(keys[(i * 7919) % a.keys], rev=old)
    print(f"range 1 key, old rev (1/2 backend): {rate(n, time.perf_counter() - t)}")

    t = time.perf_counter()
    r = s.range(b"\0", b"\0", limit=1)
    print(f"range all keys limit 1 (count {r.count:,}): {(time.perf_counter() - t) * 1e3:.1f} ms")

    rows = s.backend.kv_count()
    t = time.perf_counter()
    s.hash_kv()
    print(f"hash_kv over {rows:,} rows:        {time.perf_counter() - t:.2f} s")

    s.close()
    print(f"db file size: {path.stat().st_size / 2**20:.1f} MiB")

    out = subprocess.run(
        [sys.executable, __file__, "--restart-child", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    print(
        f"restart ({int(out[3]):,} keys x {a.value_size} B, {int(out[4]) - 1:,} revisions): "
        f"{float(out[0]):.2f} s, RSS {float(out[1]):.0f} MiB "
        f"(interpreter+imports {float(out[2]):.0f} MiB)"
    )

    s = KVStore(Backend.open(path))
    t = time.perf_counter()
    s.compact(s.current_revision)
    s.commit()
    print(f"compact away {n_over:,} old revisions:  {time.perf_counter() - t:.2f} s")
    s.close()
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


if __name__ == "__main__":
    main()
