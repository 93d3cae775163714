"""``Discovery``: a local cache of a service's instances that never misses a change.

Start: one consistent Range of ``<prefix>/<service>/`` at revision R, then one watch
from R + 1, so every change after the snapshot arrives, in revision order (the
client's watch resumes on another endpoint after a failure, from the revision after
the last one delivered). When the revision it needs was compacted, the cache
re-lists and emits the difference as changes, then watches again from the new
revision + 1. Changes reach ``async for change in discovery.changes()`` streams
and ``add_listener(callback)`` callbacks, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from meshkit._internal.clock import Clock, RealClock
from meshkit._internal.errors import MeshkitError
from meshkit._internal.logging import get_logger
from meshkit.client import Client, EventType, WatchCompactedError
from meshkit.registry.model import (
    DEFAULT_PREFIX,
    Instance,
    InvalidValueError,
    instance_from_value,
    service_prefix,
)
from meshkit.registry.registrar import Backoff

__all__ = ["Change", "ChangeKind", "ChangeStream", "Discovery"]

_log = get_logger("registry.discovery")

ChangeKind = Literal["added", "updated", "removed"]


@dataclass(frozen=True, slots=True)
class Change:
    """One change to the cache. ``instance`` is the new state, or the last known
    one for ``removed``. ``revision`` is the store revision of the change (for a
    resync, the revision of the re-list). ``resync`` marks changes found by re-listing."""

    kind: ChangeKind
    key: str
    instance: Instance
    revision: int
    resync: bool = False


class ChangeStream:
    """``async for change in stream``; ``async with`` (or ``close()``) unsubscribes."""

    def __init__(self, owner: Discovery) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[Change | BaseException | None] = asyncio.Queue()
        self.closed = False

    def _push(self, item: Change | BaseException | None) -> None:
        if not self.closed:
            self._queue.put_nowait(item)

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> Change:
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            self.closed = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def next(self, timeout: float) -> Change:  # noqa: ASYNC109
        """The next change within ``timeout`` seconds (``TimeoutError`` otherwise)."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def __aenter__(self) -> ChangeStream:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self._push(None)
            self.closed = True
            self._owner._streams.discard(self)


Listener = Callable[[Change], None]


class Discovery:
    """``async with Discovery(client, "web") as d:`` then ``d.instances()``.

    ``service=None`` follows every service under ``prefix``.
    """

    def __init__(self, client: Client, service: str | None = None, *, prefix: str = DEFAULT_PREFIX,
                 clock: Clock | None = None, backoff: Backoff | None = None) -> None:
        self.client = client
        self.service = service
        self.prefix = prefix
        base = service_prefix(prefix, service) if service is not None else prefix.rstrip("/")
        self.watch_prefix = base + "/"
        self.revision = 0  # the cache reflects the store up to this revision
        self.resyncs = 0
        self.ignored: dict[str, str] = {}  # key -> why its value was not understood
        self._cache: dict[str, Instance] = {}
        self._streams: set[ChangeStream] = set()
        self._listeners: list[Listener] = []
        self._changed = asyncio.Event()
        self._clock: Clock = clock or RealClock()
        self._backoff = backoff or Backoff()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # ---- reading the cache -----------------------------------------------------------

    def instances(self, service: str | None = None) -> list[Instance]:
        """The cached instances (of ``service`` when following all), sorted by key."""
        return [inst for key, inst in sorted(self._cache.items())
                if service is None or inst.service == service]

    def snapshot(self) -> dict[str, Instance]:
        """key -> instance, a copy of the cache."""
        return dict(self._cache)

    async def wait_for(self, predicate: Callable[[Discovery], bool],
                       timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until ``predicate(self)`` holds (checked after each change)."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self._changed.clear()
                if self._task is not None and self._task.done():
                    raise RuntimeError("discovery stopped") from (
                        None if self._task.cancelled() else self._task.exception())
                await self._changed.wait()

    # ---- subscribing -------------------------------------------------------------------

    def changes(self) -> ChangeStream:
        """A stream of every change from now on (unbounded queue: keep reading it)."""
        s = ChangeStream(self)
        if self._closed:
            s.close()
        else:
            self._streams.add(s)
        return s

    def add_listener(self, callback: Listener) -> Callable[[], None]:
        """Call ``callback(change)`` for each change; returns the function that removes it."""
        self._listeners.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)
        return remove

    # ---- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        """Take the initial snapshot (errors raise) and start following changes."""
        if self._task is not None:
            return
        if self._closed:
            raise RuntimeError("discovery is closed")
        await self._relist(initial=True)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="meshkit-discovery")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for s in list(self._streams):
            s.close()
        self._changed.set()

    # ---- internals ---------------------------------------------------------------------

    def _decode(self, key: str, value: bytes) -> Instance | None:
        try:
            inst = instance_from_value(self.prefix, key, value)
        except InvalidValueError as e:
            if self.ignored.get(key) != e.detail:
                _log.warning("ignoring %s: %s", key, e.detail)
            self.ignored[key] = e.detail
            return None
        self.ignored.pop(key, None)
        return inst

    def _emit(self, change: Change) -> None:
        for s in list(self._streams):
            s._push(change)
        for cb in list(self._listeners):
            try:
                cb(change)
            except Exception:
                _log.exception("a discovery listener failed on %s %s", change.kind, change.key)
        self._changed.set()

    def _set(self, key: str, inst: Instance | None, revision: int, resync: bool) -> None:
        old = self._cache.get(key)
        if inst is None:
            if old is not None:
                del self._cache[key]
                self._emit(Change("removed", key, old, revision, resync))
            return
        if old == inst:
            return
        self._cache[key] = inst
        self._emit(Change("added" if old is None else "updated", key, inst, revision, resync))

    async def _relist(self, initial: bool = False) -> None:
        res = await self.client.get(self.watch_prefix, prefix=True)
        rev = res.header.revision
        fresh: dict[str, Instance] = {}
        for kv in res.kvs:
            key = kv.key.decode("utf-8", "replace")
            inst = self._decode(key, kv.value)
            if inst is not None:
                fresh[key] = inst
        for key in sorted(set(self._cache) - set(fresh)):
            self._set(key, None, rev, not initial)
        for key in sorted(fresh):
            self._set(key, fresh[key], rev, not initial)
        self.revision = rev
        if not initial:
            self.resyncs += 1
            _log.info("re-listed %s at revision %d (%d instances)", self.watch_prefix, rev, len(fresh))

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except WatchCompactedError as e:
                _log.info("watch of %s from %d hit compaction at %d: re-listing",
                          self.watch_prefix, self.revision + 1, e.compact_revision)
            except MeshkitError as e:
                pause = self._backoff.delay()
                _log.warning("watch of %s failed (%s); re-listing in %.2fs", self.watch_prefix, e, pause)
                await self._clock.sleep(pause)
            while True:
                try:
                    await self._relist()
                    self._backoff.reset()
                    break
                except MeshkitError as e:
                    pause = self._backoff.delay()
                    _log.warning("re-listing %s failed (%s); again in %.2fs", self.watch_prefix, e, pause)
                    await self._clock.sleep(pause)

    async def _follow(self) -> None:
        async with self.client.watch(self.watch_prefix, prefix=True,
                                     start_revision=self.revision + 1) as w:
            async for resp in w:
                for ev in resp.events:
                    key = ev.kv.key.decode("utf-8", "replace")
                    if ev.type == EventType.DELETE:
                        self.ignored.pop(key, None)
                        self._set(key, None, ev.kv.mod_revision, False)
                    else:
                        self._set(key, self._decode(key, ev.kv.value), ev.kv.mod_revision, False)
                    self.revision = max(self.revision, ev.kv.mod_revision)
                if not resp.events:
                    self.revision = max(self.revision, resp.header.revision)
        raise MeshkitError("the watch ended")

