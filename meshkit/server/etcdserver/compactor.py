"""Auto-compaction (``--auto-compaction-mode``/``--auto-compaction-retention``).

Follows etcd 3.4's compactors:

* periodic: keep ``retention`` worth of history. Every ``retention/10`` (at
  most every 6 minutes, as the interval is capped at one hour) the current
  revision is sampled; once ``retention`` has passed since the last success
  the oldest sample — the revision current ``retention`` ago — is compacted.
  After the first compaction, it compacts every ``min(retention, 1h)``.
* revision: every 5 minutes compact to ``current - retention``.

Only the leader runs it; the compaction itself goes through the log like any
client's Compact. Time comes from an injected clock so tests can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from meshkit._internal.clock import Clock
from meshkit._internal.errors import CompactedError, EtcdError

log = logging.getLogger("meshkit.server")

HOUR = 3600.0
REVISION_CHECK_INTERVAL = 300.0


class Compactor:
    def __init__(
        self,
        *,
        mode: str,
        period_s: float = 0.0,
        revisions: int = 0,
        current_revision: Callable[[], int],
        compact: Callable[[int], Awaitable[object]],
        is_leader: Callable[[], bool],
        clock: Clock,
    ) -> None:
        self.mode = mode
        self.period = period_s
        self.revisions = revisions
        self._rev = current_revision
        self._compact = compact
        self._is_leader = is_leader
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.compacted: list[int] = []  # what it compacted to, in order (for status and tests)

    @property
    def enabled(self) -> bool:
        return (self.mode == "revision" and self.revisions > 0) or (
            self.mode != "revision" and self.period > 0
        )

    async def __aenter__(self) -> Compactor:
        if self.enabled:
            runner = self._run_revision if self.mode == "revision" else self._run_periodic
            self._task = asyncio.get_running_loop().create_task(runner(), name="auto-compactor")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _try(self, rev: int) -> bool:
        if not self._is_leader():
            return False
        try:
            await self._compact(rev)
        except CompactedError:
            return True  # someone compacted further already: nothing to do
        except EtcdError as e:
            log.warning("auto-compaction to revision %d failed: %s", rev, e)
            return False
        self.compacted.append(rev)
        log.info("auto-compacted to revision %d (%s mode)", rev, self.mode)
        return True

    async def _run_revision(self) -> None:
        last = 0
        while True:
            await self._clock.sleep(REVISION_CHECK_INTERVAL)
            rev = self._rev() - self.revisions
            if rev <= 0 or rev == last:
                continue
            if await self._try(rev):
                last = rev

    async def _run_periodic(self) -> None:
        compact_interval = min(self.period, HOUR)
        retry = compact_interval / 10
        keep = int(self.period / retry) + 1
        samples: list[int] = []
        last_rev = 0
        last_success = self._clock.monotonic()
        base = self.period
        while True:
            samples.append(self._rev())
            if len(samples) > keep:
                del samples[0]  # samples[0] is the revision current `period` ago
            await self._clock.sleep(retry)
            if self._clock.monotonic() - last_success < base:
                continue
            base = compact_interval
            rev = samples[0]
            if rev == last_rev or rev <= 1:
                continue
            if await self._try(rev):
                last_rev = rev
                last_success = self._clock.monotonic()
