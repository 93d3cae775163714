"""Auto-compaction on a fake clock: which revision, when."""

from __future__ import annotations

import asyncio

from meshkit._internal.clock import FakeClock
from meshkit._internal.errors import CompactedError
from meshkit.server.etcdserver.compactor import REVISION_CHECK_INTERVAL, Compactor


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _compactor(clock: FakeClock, rev: list[int], done: list[int], **kw: object) -> Compactor:
    async def compact(r: int) -> None:
        if done and r <= done[-1]:
            raise CompactedError(compact_revision=done[-1])
        done.append(r)

    return Compactor(current_revision=lambda: rev[0], compact=compact, is_leader=lambda: True,
                     clock=clock, **kw)  # type: ignore[arg-type]


async def test_periodic_keeps_one_retention_of_history() -> None:
    clock, rev, done = FakeClock(), [1], []
    async with _compactor(clock, rev, done, mode="periodic", period_s=10.0):
        await _settle()
        # 10 writes per second; the sampled revision advances with time.
        for _ in range(25):
            rev[0] += 10
            clock.advance(1.0)
            await _settle()
    # Samples are taken every retention/10 = 1 s (revision 1 + 10*t at time t).
    # The first compaction happens once a full retention of samples exists
    # (t=12, to the revision of t=1), then every retention (t=22, to t=11):
    # the last 10 s of history always stay readable.
    assert done == [11, 111]


async def test_revision_mode_compacts_to_current_minus_retention() -> None:
    clock, rev, done = FakeClock(), [1000], []
    async with _compactor(clock, rev, done, mode="revision", revisions=100):
        await _settle()
        clock.advance(REVISION_CHECK_INTERVAL)
        await _settle()
        assert done == [900]
        clock.advance(REVISION_CHECK_INTERVAL)  # no new writes: nothing to do
        await _settle()
        assert done == [900]
        rev[0] = 1500
        clock.advance(REVISION_CHECK_INTERVAL)
        await _settle()
        assert done == [900, 1400]


async def test_disabled_and_follower_do_nothing() -> None:
    clock, rev, done = FakeClock(), [1000], []
    c = _compactor(clock, rev, done, mode="periodic", period_s=0.0)
    assert not c.enabled
    async with c:
        clock.advance(10_000)
        await _settle()
    follower = Compactor(mode="revision", revisions=10, current_revision=lambda: 500,
                         compact=lambda r: asyncio.sleep(0), is_leader=lambda: False, clock=clock)
    async with follower:
        clock.advance(REVISION_CHECK_INTERVAL)
        await _settle()
    assert done == [] and follower.compacted == []
