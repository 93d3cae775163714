"""Watch-fed data for the pages, and the server-sent events response that carries it.

``PrefixFeed`` yields a consistent snapshot of a key range (paged reads at one
revision) and then every change after it (one watch from that revision + 1); when the
revision it needs was compacted, it reads a new snapshot (``resync=True``) and
watches again, so a page never misses a change. ``EventStream`` is one
``text/event-stream`` response: it runs a producer, writes a comment line while idle,
and ends when the browser goes, the session ends or the dashboard stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

from meshkit._internal.errors import MeshkitError
from meshkit._internal.logging import get_logger
from meshkit.client import Client, Event, KeyValue, WatchCompactedError, Watcher

__all__ = [
    "Changes",
    "EventStream",
    "FeedItem",
    "PrefixFeed",
    "Snapshot",
    "TooManyKeysError",
    "scan",
]

_log = get_logger("dashboard.feeds")


class TooManyKeysError(MeshkitError):
    """A range holds more keys than the dashboard scans (``limit``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} keys in the range")
        self.limit = limit


async def scan(client: Client, key: bytes, range_end: bytes, *, revision: int = 0,
               keys_only: bool = False, page: int = 1000, limit: int = 100_000,
               ) -> tuple[list[KeyValue], int]:
    """Every key in ``[key, range_end)`` as of one revision, read in pages; returns
    ``(kvs, revision)``. Raises :class:`TooManyKeysError` past ``limit`` keys."""
    out: list[KeyValue] = []
    cursor = key
    rev = revision
    while True:
        r = await client.get(cursor, range_end, revision=rev, limit=page, keys_only=keys_only)
        if rev == 0:
            rev = r.header.revision
        out.extend(r.kvs)
        if len(out) > limit:
            raise TooManyKeysError(limit)
        if not r.more or not r.kvs:
            return out, rev
        cursor = r.kvs[-1].key + b"\x00"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every key of the range as of ``revision`` (``resync``: read again after compaction)."""

    kvs: list[KeyValue]
    revision: int
    resync: bool = False


@dataclass(frozen=True, slots=True)
class Changes:
    """Events of whole revisions, in order."""

    events: list[Event]
    revision: int


FeedItem = Snapshot | Changes


class PrefixFeed:
    """``async with PrefixFeed(client, key, end) as feed: async for item in feed: ...``

    With ``start_revision`` the first snapshot is skipped and changes start after it
    (the page already read that revision).
    """

    def __init__(self, client: Client, key: bytes, range_end: bytes, *, keys_only: bool = False,
                 start_revision: int | None = None, limit: int = 100_000) -> None:
        self.client = client
        self.key = key
        self.range_end = range_end
        self.keys_only = keys_only
        self.start_revision = start_revision
        self.limit = limit
        self.revision = 0  # everything up to here was delivered
        self._watcher: Watcher | None = None
        self._closed = False

    async def __aenter__(self) -> PrefixFeed:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        w, self._watcher = self._watcher, None
        if w is not None:
            await w.cancel()

    async def _snapshot(self, resync: bool) -> Snapshot:
        kvs, rev = await scan(self.client, self.key, self.range_end, keys_only=self.keys_only,
                              limit=self.limit)
        self.revision = rev
        return Snapshot(kvs, rev, resync)

    async def __aiter__(self) -> AsyncIterator[FeedItem]:
        if self.start_revision is None:
            yield await self._snapshot(False)
        else:
            self.revision = self.start_revision
        while not self._closed:
            self._watcher = self.client.watch(self.key, self.range_end,
                                              start_revision=self.revision + 1)
            compacted = 0
            try:
                async for resp in self._watcher:
                    if resp.events:
                        self.revision = resp.events[-1].kv.mod_revision
                        yield Changes(resp.events, self.revision)
                    elif resp.progress_notify:
                        self.revision = max(self.revision, resp.header.revision)
            except WatchCompactedError as e:
                compacted = e.compact_revision
            finally:
                w, self._watcher = self._watcher, None
                if w is not None:
                    await w.cancel()
            if not compacted:
                return  # the watch ended: closed
            _log.info("watch of %r compacted at %d: reading again", self.key, compacted)
            yield await self._snapshot(True)


def _leaf(err: BaseException | None) -> BaseException | None:
    """The first real error inside (nested) exception groups (a TaskGroup wraps them)."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    return err


def sse_message(event: str, data: Any) -> bytes:
    """One server-sent event. ``json.dumps`` escapes newlines, so ``data`` is one line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


Producer = Callable[["EventStream"], Awaitable[None]]


class EventStream:
    """One server-sent events response (an async context manager owning its tasks)."""

    def __init__(self, request: web.Request, *, heartbeat: float,
                 stop: Sequence[asyncio.Event] = (),
                 still_wanted: Callable[[], bool] | None = None) -> None:
        """``stop``: events that end the stream; ``still_wanted`` is asked at each
        heartbeat (False ends the stream: the session is gone)."""
        self.request = request
        self.heartbeat = heartbeat
        self.stop = list(stop)
        self.still_wanted = still_wanted
        self.response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        })
        self._lock = asyncio.Lock()
        self.sent = 0

    async def __aenter__(self) -> EventStream:
        await self.response.prepare(self.request)
        await self._write(b"retry: 2000\n\n")
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.response.write_eof()

    async def _write(self, data: bytes) -> None:
        async with self._lock:
            await self.response.write(data)

    async def send(self, event: str, data: Any) -> None:
        await self._write(sse_message(event, data))
        self.sent += 1

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            if self.still_wanted is not None and not self.still_wanted():
                return
            await self._write(b": keep-alive\n\n")

    async def run(self, producer: Producer) -> None:
        """Run ``producer(self)`` until it returns, fails, the browser goes or a stop
        event is set. A failure is sent as a ``failure`` event with its text."""
        main = asyncio.ensure_future(producer(self))
        others: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._beat())]
        others += [asyncio.ensure_future(ev.wait()) for ev in self.stop]
        try:
            await asyncio.wait([main, *others], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (main, *others):
                t.cancel()
            await asyncio.gather(main, *others, return_exceptions=True)
        if main.cancelled():
            return
        err = _leaf(main.exception())
        if err is None or isinstance(err, ConnectionError):
            return
        if not isinstance(err, MeshkitError):
            _log.error("event stream %s failed: %r", self.request.path, err)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.send("failure", {"error": str(err) or type(err).__name__})
