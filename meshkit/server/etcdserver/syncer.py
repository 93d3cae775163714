"""One thread that runs the WAL's fdatasync for the raft loop (group commit).

The raft loop must not block on the disk: while one batch is being made
durable, requests keep arriving and form the next batch. ``asyncio.to_thread``
per batch did that, but each call is a thread-pool round trip (a context copy,
a work item, a concurrent future chained to an asyncio future with callbacks on
both sides, a semaphore) on top of the two thread wake-ups that cannot be
avoided. Here a single long-lived thread takes futures from a queue, syncs, and
completes each future with one ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable


def _done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _failed(fut: asyncio.Future[None], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class SyncThread:
    """``await st.sync()`` runs ``fn`` in the thread; calls are served in order.
    ``close()`` (idempotent) lets the current call finish and stops the thread."""

    def __init__(self, fn: Callable[[], None], loop: asyncio.AbstractEventLoop, name: str = "wal-sync") -> None:
        self._fn = fn
        self._loop = loop
        self._q: queue.SimpleQueue[asyncio.Future[None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    def sync(self) -> asyncio.Future[None]:
        if self._closed:
            raise RuntimeError("sync thread is closed")
        fut: asyncio.Future[None] = self._loop.create_future()
        self._q.put(fut)
        return fut

    def _run(self) -> None:
        q, fn, loop = self._q, self._fn, self._loop
        while True:
            fut = q.get()
            if fut is None:
                return
            try:
                fn()
            except BaseException as e:  # handed to the awaiting raft loop
                done: Callable[..., None] = _failed
                args: tuple[object, ...] = (fut, e)
            else:
                done, args = _done, (fut,)
            try:
                loop.call_soon_threadsafe(done, *args)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def close(self, timeout: float = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put(None)
        self._thread.join(timeout)
