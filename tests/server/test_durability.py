"""kill -9 in the middle of a write load loses no acknowledged write, and the history
stays gap-free and duplicate-free across three crash/restart cycles."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from meshkit.client import Client, Cmp, MeshkitError, Op
from tests.server.conftest import Procs, restart_line
from tests.support.procs import ServerProc

WORKERS = 32
OPS_PER_WORKER = 150  # a hard bound; the kill normally comes long before
CYCLES = 3
KILL_AFTER_ACKS = 400  # per cycle: keeps the verification (reads per revision) bounded


@dataclass
class Ledger:
    """Every write attempted, and those acknowledged with their revision."""

    attempted: dict[str, dict[bytes, bytes]] = field(default_factory=dict)  # op id -> writes
    by_value: dict[bytes, str] = field(default_factory=dict)  # value -> op id
    acked: dict[str, int] = field(default_factory=dict)  # op id -> response revision

    def attempt(self, op_id: str, writes: dict[bytes, bytes]) -> None:
        self.attempted[op_id] = writes
        for v in writes.values():
            self.by_value[v] = op_id


async def _worker(c: Client, ledger: Ledger, cycle: int, w: int, stop: asyncio.Event) -> None:
    for i in range(OPS_PER_WORKER):
        if stop.is_set():
            return
        op_id = f"{cycle}:{w}:{i}"
        v = op_id.encode()
        kind = i % 3
        try:
            if kind == 0:  # a key only this worker writes
                key = f"own/{w}/{i % 5}".encode()
                ledger.attempt(op_id, {key: v})
                rev = (await c.put(key, v)).header.revision
            elif kind == 1:  # a key all workers fight over
                key = f"shared/{(w + i) % 8}".encode()
                ledger.attempt(op_id, {key: v})
                rev = (await c.put(key, v)).header.revision
            else:  # a txn over one private and one shared key; either branch writes both
                a, b = f"txn/{w}/{i % 4}".encode(), f"shared/t{i % 4}".encode()
                ledger.attempt(op_id, {a: v + b"/a", b: v + b"/b"})
                ops = (Op.put(a, v + b"/a"), Op.put(b, v + b"/b"))
                r = await c.txn().if_(Cmp.version(a) > 0).then(*ops).else_(*ops).commit()
                rev = r.header.revision
        except MeshkitError:
            return  # in doubt: the server went away with the request in flight
        ledger.acked[op_id] = rev


async def _load_then_kill(sp: ServerProc, ledger: Ledger, cycle: int, load_s: float) -> None:
    stop = asyncio.Event()
    async with Client([sp.endpoint], timeout=5.0) as c:
        tasks = [asyncio.create_task(_worker(c, ledger, cycle, w, stop)) for w in range(WORKERS)]
        try:
            t0 = time.monotonic()
            acked_before = len(ledger.acked)
            # Kill mid-load: after load_s or KILL_AFTER_ACKS writes, whichever comes first,
            # and only once this cycle has acknowledged something.
            while len(ledger.acked) == acked_before or (
                time.monotonic() - t0 < load_s and len(ledger.acked) - acked_before < KILL_AFTER_ACKS
            ):
                assert time.monotonic() - t0 < 15, "no write acknowledged within 15 s"
                assert not all(t.done() for t in tasks), "the load ended before the kill"
                await asyncio.sleep(0.02)
            sp.proc.kill()
            await asyncio.to_thread(sp.proc.wait, 10)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert len(ledger.acked) > acked_before


async def _verify(c: Client, ledger: Ledger, seen: dict[str, int], checked_to: int) -> int:
    """Every acknowledged write is there at its revision; the history after
    ``checked_to`` (earlier cycles checked what came before) is consistent."""
    current = (await c.get(b"\0", from_key=True, count_only=True)).header.revision
    assert current >= max(ledger.acked.values())
    revs = list(ledger.acked.values())
    assert len(set(revs)) == len(revs), "two acknowledged writes share a revision"

    sem = asyncio.Semaphore(64)

    async def at(key: bytes, rev: int) -> tuple[bytes, int] | None:
        async with sem:
            r = await c.get(key, revision=rev)
        return (r.kvs[0].value, r.kvs[0].mod_revision) if r.kvs else None

    checks = [(k, v, rev) for op_id, rev in ledger.acked.items()
              for k, v in ledger.attempted[op_id].items()]
    got = await asyncio.gather(*(at(k, rev) for k, _, rev in checks))
    lost = [(k, v, rev, g) for (k, v, rev), g in zip(checks, got, strict=True) if g != (v, rev)]
    assert not lost, f"{len(lost)} acknowledged writes lost or changed, e.g. {lost[:5]}"

    # History: every revision after 1 holds exactly the writes of one attempted op
    # (nothing is ever deleted, so each revision shows as keys with that mod_revision).
    async def changed_at(rev: int) -> dict[bytes, bytes]:
        async with sem:
            r = await c.get(b"\0", from_key=True, revision=rev, min_mod_revision=rev,
                            max_mod_revision=rev)
        return {kv.key: kv.value for kv in r.kvs}

    history = await asyncio.gather(*(changed_at(rev) for rev in range(checked_to + 1, current + 1)))
    for rev, writes in enumerate(history, start=checked_to + 1):
        assert writes, f"revision {rev} is a gap: no key was modified at it"
        op_ids = {ledger.by_value.get(v) for v in writes.values()}
        assert len(op_ids) == 1 and None not in op_ids, f"revision {rev} holds {writes!r}"
        op_id = op_ids.pop()
        assert op_id is not None
        assert writes == ledger.attempted[op_id], f"revision {rev} applied part of {op_id}"
        assert op_id not in seen, f"{op_id} applied twice: revisions {seen[op_id]} and {rev}"
        seen[op_id] = rev
    for op_id, rev in ledger.acked.items():
        assert seen.get(op_id) == rev
    return current


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_kill9_mid_load_loses_no_acknowledged_write(procs: Procs) -> None:
    ledger = Ledger()
    last_current = 1
    seen: dict[str, int] = {}  # op id -> the revision that holds its writes
    replayed: list[int] = []  # WAL entries past the store's consistent index, per restart
    sp = await procs.start_ready()
    for cycle in range(CYCLES):
        await _load_then_kill(sp, ledger, cycle, load_s=0.8 + 0.4 * cycle)
        sp = await procs.restart_ready(sp)  # same data dir; this member takes the next load
        applied, to_replay = restart_line(sp)
        assert applied > 0
        replayed.append(to_replay)
        async with Client([sp.endpoint], timeout=10.0) as c:
            current = await _verify(c, ledger, seen, last_current)
            assert current > last_current  # state accumulates across cycles
            last_current = current
            # The member keeps working after recovery: the next write follows the history.
            ledger.attempt(f"after:{cycle}", {b"after-restart": str(cycle).encode()})
            r = await c.put(b"after-restart", str(cycle))
            assert r.header.revision == current + 1
            ledger.acked[f"after:{cycle}"] = r.header.revision
    sp.stop()
    assert sp.proc.returncode == 0, sp.log_path.read_text()
    assert len(ledger.acked) > 100
    # Killed mid-load, the store had not committed everything: the WAL replay did the rest.
    assert any(replayed), replayed
