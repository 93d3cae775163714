"""``Mutex``: etcd's Go ``concurrency.Mutex`` (same keys, same algorithm), plus fencing.

Key layout (shared with Go programs and ``etcdctl lock``): the waiter's key is
``prefix + "/" + lease id in lowercase hex``, put with the session's lease only if
its create revision is 0 (a session that already queued reuses its key). Waiters are
served in create-revision order; each waits only for the delete of its predecessor
(the newest older key), never for the whole prefix: no herd.

The fencing token is the key's create revision: it grows with every new holder.
``guarded_txn()``/``guarded_put()`` apply writes only while the key still exists with
that create revision, so a holder whose lease expired (a paused process, Jepsen's
2020 finding) cannot write through.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import NoReturn

from meshkit._internal.errors import MeshkitError
from meshkit.client import Cmp, Compare, EventType, Op, Operation, ResponseHeader, Txn, TxnResult
from meshkit.client.kv import KeyLike, prefix_end, to_bytes
from meshkit.concurrency._wait import deadline_of, race, wait_deletes
from meshkit.concurrency.errors import LockLostError, NotHeldError, SessionExpiredError
from meshkit.concurrency.session import Session


class Mutex:
    """A distributed lock on ``prefix`` held by ``session``.

    ``await m.lock(timeout=5)`` returns holding the lock or raises (``LockTimeoutError``,
    ``SessionLostError``, ``CancelledError``), never entering otherwise; ``try_lock()``
    returns False at once if another session holds it; ``async with m:`` locks and
    unlocks. While held, ``m.lost`` is set the moment the key is deleted (unlocked
    elsewhere, lease revoked or expired) or the session is lost.

    Two ``Mutex`` objects on one session and prefix share one key (as in Go): the lock
    belongs to the session.
    """

    def __init__(self, session: Session, prefix: KeyLike) -> None:
        self.session = session
        self.client = session.client
        self.prefix = to_bytes(prefix) + b"/"
        self.key = b""
        self.token = -1  # the key's create revision while queued or held
        self.header: ResponseHeader | None = None
        self.lost = asyncio.Event()
        self._monitor: asyncio.Task[None] | None = None
        self._held = False

    # ---- state ---------------------------------------------------------------------

    @property
    def held(self) -> bool:
        return self._held and not self.lost.is_set()

    def _check_held(self) -> None:
        if not self._held:
            raise NotHeldError(f"lock {self.prefix!r} is not held")
        if self.lost.is_set():
            raise LockLostError(self.key, self.token)

    async def wait_lost(self) -> NoReturn:
        """Wait until the held lock is lost, then raise :class:`LockLostError`."""
        self._check_held()
        await self.lost.wait()
        raise LockLostError(self.key, self.token)

    # ---- locking ---------------------------------------------------------------------

    async def _try_acquire(self) -> tuple[TxnResult, bool]:
        s = self.session
        key = self.prefix + f"{s.lease_id:x}".encode()
        owner = Op.get(self.prefix, prefix_end(self.prefix), sort_order="ascend", sort_target="create", limit=1)
        resp = await (self.client.txn()
                      .if_(Cmp.create(key) == 0)
                      .then(Op.put(key, b"", lease=s.lease_id), owner)
                      .else_(Op.get(key), owner)
                      .commit())
        self.key = key
        self.token = resp.header.revision
        if not resp.succeeded:
            self.token = resp.responses[0].kvs[0].create_revision  # type: ignore[union-attr]
        kvs = resp.responses[1].kvs  # type: ignore[union-attr]
        return resp, (not kvs or kvs[0].create_revision == self.token)

    async def lock(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Acquire, waiting at most ``timeout`` seconds (None: until acquired)."""
        if self._held:
            raise RuntimeError("this Mutex already holds the lock")
        self.session.check()
        deadline = deadline_of(timeout)
        ok = False
        try:
            resp, mine = await self._try_acquire()
            if mine:
                self.header = resp.header
            else:
                await race(wait_deletes(self.client, self.prefix, self.token - 1), self.session,
                           deadline, f"lock {self.prefix!r}")
                got = await self.client.get(self.key)
                if not got.kvs:  # the lease ran out while we waited
                    raise SessionExpiredError(self.session.lease_id, "mutex: session is expired")
                self.header = got.header
            self.session.check()
            ok = True
        finally:
            if not ok and self.key:
                await self._release_quietly()
        self._start_holding()

    async def try_lock(self) -> bool:
        """Acquire if nobody else holds the lock; otherwise remove our key and return False."""
        if self._held:
            raise RuntimeError("this Mutex already holds the lock")
        self.session.check()
        ok = False
        try:
            resp, mine = await self._try_acquire()
            if mine:
                self.header = resp.header
                ok = True
        finally:
            if not ok and self.key:
                await self._release_quietly()
        if ok:
            self._start_holding()
        return ok

    async def _release_quietly(self) -> None:
        key = self.key
        self.key, self.token = b"", -1
        # Shielded: a canceled lock() must still take its key out of the queue.
        with contextlib.suppress(MeshkitError, asyncio.CancelledError):
            await asyncio.shield(self.client.delete(key))

    def _start_holding(self) -> None:
        self._held = True
        self.lost = asyncio.Event()
        assert self.header is not None
        self._monitor = asyncio.get_running_loop().create_task(
            self._watch_key(self.key, self.header.revision + 1), name=f"meshkit-mutex-{self.key!r}")

    async def _watch_key(self, key: bytes, rev: int) -> None:
        lost_wait = asyncio.get_running_loop().create_task(self.session.lost.wait())
        released = False  # unlock() canceled us: not a loss
        try:
            async with self.client.watch(key, start_revision=rev, filters=("noput",)) as w:
                watch_next = asyncio.ensure_future(anext(w))
                try:
                    while True:
                        done, _ = await asyncio.wait({watch_next, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
                        if lost_wait in done:
                            return
                        resp = watch_next.result()
                        if any(ev.type == EventType.DELETE for ev in resp.events):
                            return
                        watch_next = asyncio.ensure_future(anext(w))
                finally:
                    watch_next.cancel()
        except StopAsyncIteration:
            return
        except MeshkitError:
            return  # the watch failed for good: we can no longer vouch for the lock
        except asyncio.CancelledError:
            released = True
            raise
        finally:
            lost_wait.cancel()
            if not released:
                self.lost.set()

    async def unlock(self) -> None:
        """Release: delete the key (idempotent once released)."""
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        if not self._held:
            return
        self._held = False
        key = self.key
        self.key, self.token = b"", -1
        await self.client.delete(key)

    async def __aenter__(self) -> Mutex:
        await self.lock()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.unlock()

    # ---- fencing ---------------------------------------------------------------------

    def is_owner(self) -> Compare:
        """The guard ``create_revision(key) == token`` (etcd's ``IsOwner``)."""
        return Cmp.create(self.key) == self.token

    def guarded(self) -> Txn:
        """A txn builder already guarded by :meth:`is_owner`; add more with ``if_``."""
        self._check_held()
        return self.client.txn().if_(self.is_owner())

    async def guarded_txn(self, *ops: Operation, compares: tuple[Compare, ...] = ()) -> TxnResult:
        """Apply ``ops`` only while this session still holds the lock with this token.

        Raises :class:`LockLostError` (nothing applied) when the key is gone or was
        re-created, i.e. the token is stale; other ``compares`` failing raise nothing
        and return the result with ``succeeded`` False.
        """
        self._check_held()
        key, token = self.key, self.token
        own = Cmp.create(key) == token
        res = await (self.client.txn().if_(own, *compares).then(*ops)
                     .else_(Op.txn(if_=[own], then=[], else_=[])).commit())
        if not res.succeeded:
            inner = res.responses[0]
            if not getattr(inner, "succeeded", False):
                self.lost.set()
                raise LockLostError(key, token)
        return res

    async def guarded_put(self, key: KeyLike, value: KeyLike, *, lease: int = 0) -> TxnResult:
        return await self.guarded_txn(Op.put(key, value, lease=lease))
