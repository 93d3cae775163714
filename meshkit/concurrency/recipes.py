"""ZooKeeper-style recipes on etcd's primitives: a read-write lock, a counting
semaphore and a barrier. Keys are lease-bound, so a dead process's hold ends with
its session, and waiters are ordered by create revision (FIFO, no herd where the
recipe allows it)."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from meshkit._internal.errors import MeshkitError
from meshkit.client import Client, Cmp, EventType, Op, ResponseHeader
from meshkit.client.kv import KeyLike, prefix_end, to_bytes
from meshkit.concurrency._wait import deadline_of, race, wait_deletes
from meshkit.concurrency.errors import NotHeldError, SessionExpiredError
from meshkit.concurrency.session import Session


class _Queued:
    """A lease-bound queue entry ``base + lease hex`` and its create revision."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.client = session.client
        self.key = b""
        self.token = -1  # the entry's create revision while queued or held
        self.header: ResponseHeader | None = None

    async def _enqueue(self, key: bytes) -> None:
        s = self.session
        s.check()
        res = await (self.client.txn()
                     .if_(Cmp.create(key) == 0)
                     .then(Op.put(key, b"", lease=s.lease_id))
                     .else_(Op.get(key))
                     .commit())
        self.key = key
        self.token = res.header.revision
        self.header = res.header
        if not res.succeeded:
            self.token = res.responses[0].kvs[0].create_revision  # type: ignore[union-attr]

    async def _confirm(self) -> None:
        got = await self.client.get(self.key)
        if not got.kvs:
            raise SessionExpiredError(self.session.lease_id, "the queue entry vanished while waiting")
        self.header = got.header

    async def _dequeue_quietly(self) -> None:
        key, self.key, self.token = self.key, b"", -1
        if key:
            with contextlib.suppress(MeshkitError, asyncio.CancelledError):
                await asyncio.shield(self.client.delete(key))

    async def release(self) -> None:
        if not self.key:
            raise NotHeldError("not held")
        key, self.key, self.token = self.key, b"", -1
        await self.client.delete(key)


class _RWSide(_Queued):
    def __init__(self, rw: RWLock, write: bool) -> None:
        super().__init__(rw.session)
        self._rw = rw
        self._write = write

    async def acquire(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if self.key:
            raise RuntimeError("already held")
        rw = self._rw
        deadline = deadline_of(timeout)
        ok = False
        try:
            sub = rw.write_prefix if self._write else rw.read_prefix
            await self._enqueue(sub + f"{self.session.lease_id:x}".encode())
            # A writer waits for every older entry; a reader only for older writers.
            wait_on = rw.prefix if self._write else rw.write_prefix
            await race(wait_deletes(self.client, wait_on, self.token - 1), self.session, deadline,
                       f"rwlock {rw.prefix!r}")
            await self._confirm()
            ok = True
        finally:
            if not ok:
                await self._dequeue_quietly()

    async def __aenter__(self) -> _RWSide:
        await self.acquire()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()


class RWLock:
    """Readers share, writers exclude everyone; FIFO by create revision.

    ``async with rw.read(): ...`` / ``async with rw.write(): ...``; or
    ``r = rw.read(); await r.acquire(timeout=5); ...; await r.release()``.
    Keys: ``prefix/read/<lease hex>`` and ``prefix/write/<lease hex>``. A writer waits
    for every older entry, a reader for older writers only.
    """

    def __init__(self, session: Session, prefix: KeyLike) -> None:
        self.session = session
        self.prefix = to_bytes(prefix) + b"/"
        self.read_prefix = self.prefix + b"read/"
        self.write_prefix = self.prefix + b"write/"

    def read(self) -> _RWSide:
        return _RWSide(self, write=False)

    def write(self) -> _RWSide:
        return _RWSide(self, write=True)


class Semaphore(_Queued):
    """A counting semaphore: at most ``limit`` sessions hold ``prefix`` at once.

    Holders are the ``limit`` oldest entries ``prefix/<lease hex>``; every participant
    must use the same ``limit``. ``acquire(timeout)`` / ``release()`` /
    ``async with``.
    """

    def __init__(self, session: Session, prefix: KeyLike, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        super().__init__(session)
        self.prefix = to_bytes(prefix) + b"/"
        self.limit = limit

    async def acquire(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if self.key:
            raise RuntimeError("already held")
        deadline = deadline_of(timeout)
        ok = False
        try:
            await self._enqueue(self.prefix + f"{self.session.lease_id:x}".encode())
            await race(self._wait_turn(), self.session, deadline, f"semaphore {self.prefix!r}")
            await self._confirm()
            ok = True
        finally:
            if not ok:
                await self._dequeue_quietly()

    async def _wait_turn(self) -> None:
        client = self.client
        end = prefix_end(self.prefix)
        # Each round needs one older entry deleted (new ones are newer): bounded by their count.
        while True:
            got = await client.get(self.prefix, end, keys_only=True, max_create_revision=self.token - 1)
            older = {kv.key for kv in got.kvs}
            if len(older) < self.limit:
                return
            async with client.watch(self.prefix, end, start_revision=got.header.revision + 1,
                                    filters=("noput",)) as w:
                async for resp in w:
                    if any(ev.type == EventType.DELETE and ev.kv.key in older for ev in resp.events):
                        break

    async def __aenter__(self) -> Semaphore:
        await self.acquire()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()


class Barrier:
    """etcd's recipe barrier: ``hold()`` raises it, ``release()`` lowers it, ``wait()``
    blocks until it is not raised. The key is not lease-bound unless a ``lease`` is given
    (a barrier that should fall with its holder's session)."""

    def __init__(self, client: Client, key: KeyLike) -> None:
        self.client = client
        self.key = to_bytes(key)

    async def hold(self, *, lease: int = 0) -> bool:
        """Raise the barrier; False if it was already raised."""
        res = await (self.client.txn().if_(Cmp.create(self.key) == 0)
                     .then(Op.put(self.key, b"", lease=lease)).commit())
        return res.succeeded

    async def release(self) -> None:
        await self.client.delete(self.key)

    async def wait(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Return once the barrier key does not exist (``TimeoutError`` after ``timeout``)."""
        async with asyncio.timeout(timeout):
            got = await self.client.get(self.key)
            if not got.kvs:
                return
            await wait_deletes(self.client, self.key, got.header.revision, range_end=self.key + b"\0")
