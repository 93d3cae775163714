"""A contender process for the kill -9 tests (run as a script: imports meshkit only).

    lock ENDPOINT PREFIX HIST TTL   loop: lock, guarded writes "begin"/"end", unlock
    elect ENDPOINT PREFIX VALUE TTL campaign, print "leader", hold until killed
"""

from __future__ import annotations

import asyncio
import os
import sys

from meshkit.client import Client, Op
from meshkit.concurrency import ConcurrencyError, Election, Mutex, Session


async def lock_loop(endpoint: str, prefix: str, hist: str, ttl: int) -> None:
    pid = os.getpid()
    async with Client([endpoint], timeout=5.0) as c, Session(c, ttl=ttl) as s:
        print(f"ready {s.lease_id:x}", flush=True)
        for seq in range(10_000):  # bounded; the test kills or stops us long before
            m = Mutex(s, prefix)
            await m.lock(timeout=30)
            try:
                t = m.token
                await m.guarded_txn(Op.put(f"{hist}/{t:012d}/{pid}/{seq}/0-begin", str(t)))
                await asyncio.sleep(0.05)
                await m.guarded_txn(Op.put(f"{hist}/{t:012d}/{pid}/{seq}/1-end", str(t)))
            except ConcurrencyError:
                pass
            finally:
                await m.unlock()


async def elect(endpoint: str, prefix: str, value: str, ttl: int) -> None:
    async with Client([endpoint], timeout=5.0) as c, Session(c, ttl=ttl) as s:
        print("ready", flush=True)
        e = Election(s, prefix)
        await e.campaign(value)
        print("leader", flush=True)
        await s.wait_lost()


def main() -> None:
    cmd, endpoint, prefix, arg, ttl = sys.argv[1:6]
    if cmd == "lock":
        asyncio.run(lock_loop(endpoint, prefix, arg, int(ttl)))
    else:
        asyncio.run(elect(endpoint, prefix, arg, int(ttl)))


if __name__ == "__main__":
    main()
