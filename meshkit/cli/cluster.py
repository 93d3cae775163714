"""``meshkit cluster``: start N members on loopback for development (etcd's Procfile).

    meshkit cluster --size 3 [--data-dir DIR] [--base-port 2379] [--token T]

Member i (from 1) is named ``infra<i>``, with client port base+10000*(i-1) and
peer port one above it, as etcd's Procfile (2379/2380, 12379/12380, ...). Each
member is a ``meshkit server`` child process with etcd's flags; their output is
prefixed with the member's name. Ctrl-C (SIGINT/SIGTERM) stops them all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

MAX_SIZE = 9


def member_ports(base: int, i: int) -> tuple[int, int]:
    """(client, peer) ports of member i (from 0): base+10000*i and the one above."""
    return base + 10000 * i, base + 10000 * i + 1


def member_argv(i: int, size: int, data_dir: Path, base: int, token: str) -> list[str]:
    names = [f"infra{j + 1}" for j in range(size)]
    cluster = ",".join(f"{names[j]}=http://127.0.0.1:{member_ports(base, j)[1]}" for j in range(size))
    cport, pport = member_ports(base, i)
    return [
        sys.executable, "-m", "meshkit", "server",
        "--name", names[i],
        "--data-dir", str(data_dir / f"{names[i]}.etcd"),
        "--listen-client-urls", f"http://127.0.0.1:{cport}",
        "--advertise-client-urls", f"http://127.0.0.1:{cport}",
        "--listen-peer-urls", f"http://127.0.0.1:{pport}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
        "--initial-cluster-token", token,
        "--initial-cluster", cluster,
        "--initial-cluster-state", "new",
    ]


async def _pump(name: str, stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        sys.stdout.write(f"{name:>7} | {line.decode(errors='replace')}")
        sys.stdout.flush()


async def run(size: int, data_dir: Path, base: int, token: str) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    procs: list[asyncio.subprocess.Process] = []
    try:
        async with asyncio.TaskGroup() as tg:
            for i in range(size):
                argv = member_argv(i, size, data_dir, base, token)
                p = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                         stderr=asyncio.subprocess.STDOUT)
                procs.append(p)
                assert p.stdout is not None
                tg.create_task(_pump(f"infra{i + 1}", p.stdout))
            endpoints = ",".join(f"127.0.0.1:{member_ports(base, i)[0]}" for i in range(size))
            print(f"meshkit cluster: {size} members; ETCDCTL_API=3 etcdctl --endpoints={endpoints} member list",
                  flush=True)
            waits = [tg.create_task(p.wait()) for p in procs]
            done = tg.create_task(stop.wait())
            await asyncio.wait([done, *waits], return_when=asyncio.FIRST_COMPLETED)
            for p in procs:
                if p.returncode is None:
                    p.send_signal(signal.SIGTERM)
            for w in waits:
                await w
            done.cancel()
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    return max((p.returncode or 0) for p in procs) if not stop.is_set() else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="meshkit cluster", description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=3, help="number of members (1-9)")
    ap.add_argument("--data-dir", type=Path, default=Path("."), help="where each member's data dir goes")
    ap.add_argument("--base-port", type=int, default=2379, help="client port of the first member")
    ap.add_argument("--token", default="meshkit-cluster", help="--initial-cluster-token")
    ns = ap.parse_args(argv)
    if not 1 <= ns.size <= MAX_SIZE:
        ap.error(f"--size must be between 1 and {MAX_SIZE}")
    if ns.base_port + 10000 * (ns.size - 1) + 1 > 65535:
        ap.error("--base-port too high for that many members")
    return asyncio.run(run(ns.size, ns.data_dir, ns.base_port, ns.token))


if __name__ == "__main__":
    sys.exit(main())
