"""Separate processes: kill -9 of lock holders and of the leader; Python against etcdctl."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from meshkit.client import Client
from meshkit.concurrency import Election, LockTimeoutError, Mutex, Session
from tests.support.procs import ETCDCTL, require_reference_binaries

WORKER = str(Path(__file__).with_name("_worker.py"))
TTL = 2  # seconds: a killed holder's lock is freed by lease expiry


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, WORKER, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)


def etcdctl_popen(endpoint: str, *args: str) -> subprocess.Popen[bytes]:
    assert ETCDCTL is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return subprocess.Popen([ETCDCTL, f"--endpoints={endpoint}", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait(10)


async def test_kill9_holders_never_overlap(client: Client, endpoint: str, pfx: str) -> None:
    hist = pfx + "-hist"
    by_lease: dict[bytes, subprocess.Popen[bytes]] = {}
    procs: list[subprocess.Popen[bytes]] = []

    async def add() -> None:
        p = spawn("lock", endpoint, pfx, hist, str(TTL))
        procs.append(p)
        assert p.stdout is not None
        line = (await asyncio.to_thread(p.stdout.readline)).split()
        assert line[0] == b"ready"
        by_lease[line[1]] = p

    try:
        for _ in range(3):
            await add()
        loop = asyncio.get_running_loop()
        end = loop.time() + 7
        kills = 0
        while loop.time() < end and kills < 3:  # bounded by time and count
            await asyncio.sleep(1.0)
            # kill -9 the process holding the lock now: the oldest key's lease owner
            got = await client.get(pfx + "/", prefix=True, sort_order="ascend", sort_target="create", limit=1)
            if not got.kvs:
                continue
            holder = by_lease.get(got.kvs[0].key.rsplit(b"/", 1)[1])
            if holder is None or holder.poll() is not None:
                continue
            holder.send_signal(signal.SIGKILL)
            kills += 1
            await add()
        await asyncio.sleep(max(0.0, end - loop.time()))
        assert kills >= 2
    finally:
        stop_all(procs)
    got = await client.get(hist + "/", prefix=True, sort_order="ascend", sort_target="mod")
    writes = [(kv.mod_revision, int(kv.value), kv.key.decode()) for kv in got.kvs]
    assert len(writes) >= 10, "the contenders made progress"
    # Ordered by when they were applied: tokens never go back (no stale write applied
    # after a newer holder's), and a section's begin and end are not interleaved with
    # another holder's writes.
    tokens = [t for _, t, _ in writes]
    assert tokens == sorted(tokens)
    open_section: str | None = None
    for _, _t, key in writes:
        section, kind = key.rsplit("/", 1)
        if kind == "0-begin":
            # a section left open here was a holder killed inside it
            open_section = section
        else:
            # an end is only ever right after its own begin
            assert open_section == section, f"{key} ended a section it did not begin"
            open_section = None


async def test_kill9_leader_hands_over_and_observers_see_every_change(
    client: Client, endpoint: str, pfx: str
) -> None:
    async with Session(client, ttl=10) as so:
        seen: list[bytes] = []
        done = asyncio.Event()

        async def observe() -> None:
            it = Election(so, pfx).observe()
            try:
                async for kv in it:
                    seen.append(kv.value)
                    if kv.value == b"c":
                        done.set()
                        return
            finally:
                await it.aclose()

        obs = asyncio.create_task(observe())
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for v in ("a", "b", "c"):
                p = spawn("elect", endpoint, pfx, v, str(TTL))
                procs.append(p)
                assert p.stdout is not None
                assert p.stdout.readline().strip() == b"ready"
                await asyncio.sleep(0.3)
            e = Election(so, pfx)
            assert (await e.leader()).value == b"a"
            loop = asyncio.get_running_loop()
            for killed, nxt in ((0, b"b"), (1, b"c")):
                procs[killed].send_signal(signal.SIGKILL)
                t0 = loop.time()
                deadline = t0 + TTL + 3
                while (await e.leader()).value != nxt:  # bounded by the deadline
                    assert loop.time() < deadline, "no new leader within the session TTL"
                    await asyncio.sleep(0.1)
                assert loop.time() - t0 <= TTL + 1.5
            await asyncio.wait_for(done.wait(), 5)
            assert seen == [b"a", b"b", b"c"]
        finally:
            obs.cancel()
            await asyncio.gather(obs, return_exceptions=True)
            stop_all(procs)


async def test_python_mutex_and_etcdctl_lock_exclude_each_other(client: Client, endpoint: str, pfx: str) -> None:
    require_reference_binaries()
    async with Session(client, ttl=10) as s:
        m = Mutex(s, pfx)
        # 1. Python holds: etcdctl's command waits until Python unlocks.
        await m.lock()
        p = etcdctl_popen(endpoint, "lock", pfx, "--", "sh", "-c", "echo key=$ETCD_LOCK_KEY")
        try:
            await asyncio.sleep(1.0)
            assert p.poll() is None, "etcdctl entered while Python held the lock"
            # etcdctl queued under the same prefix, after us (Go's layout)
            keys = [kv.key for kv in (await client.get(pfx + "/", prefix=True, sort_order="ascend",
                                                       sort_target="create")).kvs]
            assert len(keys) == 2 and keys[0] == m.key and keys[1].startswith(pfx.encode() + b"/")
            await m.unlock()
            out, _ = await asyncio.to_thread(p.communicate, timeout=10)
            assert out.decode().strip() == f"key={keys[1].decode()}"
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        # 2. etcdctl holds: Python times out, then gets it once etcdctl lets go.
        h = etcdctl_popen(endpoint, "lock", pfx)
        try:
            assert h.stdout is not None
            line = await asyncio.to_thread(h.stdout.readline)
            assert line.startswith(pfx.encode() + b"/")
            with pytest.raises(LockTimeoutError):
                await m.lock(timeout=0.5)
            t = asyncio.create_task(m.lock(timeout=10))
            await asyncio.sleep(0.3)
            assert not t.done()
            h.send_signal(signal.SIGINT)
            await asyncio.wait_for(t, 10)
            assert m.held
            await m.unlock()
        finally:
            if h.poll() is None:
                h.kill()
            h.wait(5)
    # everything released
    assert (await client.get(pfx + "/", prefix=True)).kvs == []
