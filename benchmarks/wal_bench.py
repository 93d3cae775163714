"""Micro-benchmark of the WAL's group commit (not a test).

    python benchmarks/wal_bench.py [--dir DIR] [--seconds S]

For batches of 1, 10 and 100 entries of 300 bytes it runs save()+sync() in a
loop and prints entries appended per second, fsyncs per second, entries per
fsync, and the time split between save() (encode + one write) and sync()
(fdatasync).  A last line measures save() alone on 1000-entry batches.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from meshkit.server.raft.types import Entry, HardState
from meshkit.server.wal import WAL


def run(base: Path, batch: int, seconds: float) -> None:
    d = Path(tempfile.mkdtemp(prefix=f"walbench{batch}-", dir=base))
    wal = WAL.create(d, b"bench")
    payload = os.urandom(300)
    index = 0
    syncs = 0
    t_save = t_sync = 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        ents = [Entry(1, i, data=payload) for i in range(index + 1, index + batch + 1)]
        t0 = time.perf_counter()
        wal.save(HardState(1, 1, index), ents)
        t1 = time.perf_counter()
        wal.sync()
        t2 = time.perf_counter()
        t_save += t1 - t0
        t_sync += t2 - t1
        index += batch
        syncs += 1
    elapsed = time.perf_counter() - start
    wal.close()
    print(
        f"batch {batch:>4}: {index / elapsed:>9.0f} appends/s  {syncs / elapsed:>7.0f} fsync/s  "
        f"{index / syncs:>6.1f} entries/fsync  save {t_save / syncs * 1e6:>7.1f} us  "
        f"sync {t_sync / syncs * 1e6:>7.1f} us"
    )


def encode_only(base: Path, seconds: float) -> None:
    d = Path(tempfile.mkdtemp(prefix="walbench-enc-", dir=base))
    wal = WAL.create(d, b"bench", segment_bytes=1 << 30)
    payload = os.urandom(300)
    batch = 1000
    index = 0
    spent = 0.0
    while spent < seconds:
        ents = [Entry(1, i, data=payload) for i in range(index + 1, index + batch + 1)]
        t0 = time.perf_counter()
        wal.save(None, ents)
        spent += time.perf_counter() - t0
        index += batch
    wal.close()
    print(
        f"save() only, 1000-entry batches: {index / spent:,.0f} entries/s "
        f"({spent / index * 1e6:.2f} us/entry)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as td:
        for batch in (1, 10, 100):
            run(Path(td), batch, args.seconds)
        encode_only(Path(td), args.seconds / 2)


if __name__ == "__main__":
    main()
