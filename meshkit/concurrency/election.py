"""``Election``: etcd's Go ``concurrency.Election`` (same keys and algorithm).

Each candidate's key is ``prefix + "/" + lease id in hex`` holding its proposal; the
leader is the oldest key (lowest create revision). A campaign waits only for older
candidates' keys to be deleted, so ``etcdctl elect`` and Go programs take part in the
same election.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from meshkit._internal.errors import MeshkitError
from meshkit.client import Cmp, EventType, KeyValue, Op, ResponseHeader
from meshkit.client.kv import KeyLike, prefix_end, to_bytes
from meshkit.concurrency._wait import deadline_of, race, wait_deletes
from meshkit.concurrency.errors import NoLeaderError, NotLeaderError
from meshkit.concurrency.session import Session


class Election:
    """An election on ``prefix`` in which ``session`` can run.

    ``await e.campaign(b"me")`` returns once elected (raises ``SessionLostError`` if the
    session dies first, ``LockTimeoutError`` after ``timeout``; a failed or canceled
    campaign resigns). ``proclaim``/``resign`` act on our leadership; ``leader()``
    reads the current leader's key-value; ``observe()`` iterates leadership changes.
    """

    def __init__(self, session: Session, prefix: KeyLike) -> None:
        self.session = session
        self.client = session.client
        self.prefix = to_bytes(prefix) + b"/"
        self.key = b""
        self.rev = 0  # the leader key's create revision (our fencing token once elected)
        self.header: ResponseHeader | None = None
        self._leading = False

    @property
    def is_leader(self) -> bool:
        return self._leading and not self.session.lost.is_set()

    async def campaign(self, value: KeyLike, timeout: float | None = None) -> None:  # noqa: ASYNC109
        val = to_bytes(value)
        s = self.session
        s.check()
        deadline = deadline_of(timeout)
        key = self.prefix + f"{s.lease_id:x}".encode()
        resp = await (self.client.txn()
                      .if_(Cmp.create(key) == 0)
                      .then(Op.put(key, val, lease=s.lease_id))
                      .else_(Op.get(key))
                      .commit())
        self.key, self.rev, self._leading = key, resp.header.revision, False
        ok = False
        try:
            if not resp.succeeded:
                kv = resp.responses[0].kvs[0]  # type: ignore[union-attr]
                self.rev = kv.create_revision
                if kv.value != val:
                    await self._proclaim(val)
            await race(wait_deletes(self.client, self.prefix, self.rev - 1), s, deadline,
                       f"campaign {self.prefix!r}")
            s.check()
            ok = True
        finally:
            if not ok:
                with contextlib.suppress(MeshkitError, asyncio.CancelledError):
                    await asyncio.shield(self._resign())
        self.header = resp.header
        self._leading = True

    async def _proclaim(self, val: bytes) -> None:
        res = await (self.client.txn()
                     .if_(Cmp.create(self.key) == self.rev)
                     .then(Op.put(self.key, val, lease=self.session.lease_id))
                     .commit())
        if not res.succeeded:
            self._leading = False
            raise NotLeaderError("election: not leader")
        self.header = res.header

    async def proclaim(self, value: KeyLike) -> None:
        """Announce a new value while leader; ``NotLeaderError`` if leadership was lost."""
        if not self._leading:
            raise NotLeaderError("election: not leader")
        await self._proclaim(to_bytes(value))

    async def _resign(self) -> None:
        if not self.key:
            return
        res = await (self.client.txn()
                     .if_(Cmp.create(self.key) == self.rev)
                     .then(Op.delete(self.key))
                     .commit())
        self.header = res.header

    async def resign(self) -> None:
        """Step down (delete our key if it is still ours). Idempotent."""
        try:
            if self._leading:
                await self._resign()
        finally:
            self._leading = False
            self.key = b""

    async def leader(self) -> KeyValue:
        """The current leader's key-value; ``NoLeaderError`` when nobody leads."""
        got = await self.client.get(self.prefix, prefix_end(self.prefix), sort_order="ascend",
                                    sort_target="create", limit=1)
        if not got.kvs:
            raise NoLeaderError("election: no leader")
        return got.kvs[0]

    async def observe(self) -> AsyncIterator[KeyValue]:
        """Leadership changes in order: the current leader, each value it proclaims,
        then the next leader after it is gone (etcd's ``Observe``). Use with
        ``contextlib.aclosing`` so the watch ends with the loop."""
        client = self.client
        end = prefix_end(self.prefix)
        while True:  # one round per leader; ends when the caller stops iterating
            got = await client.get(self.prefix, end, sort_order="ascend", sort_target="create", limit=1)
            leader: KeyValue | None = got.kvs[0] if got.kvs else None
            rev = got.header.revision
            if leader is None:
                async with client.watch(self.prefix, end, start_revision=rev) as w:
                    async for resp in w:
                        puts = [ev.kv for ev in resp.events if ev.type == EventType.PUT]
                        if puts:
                            leader = puts[0]
                            rev = leader.mod_revision
                            break
                if leader is None:
                    return
            yield leader
            async with client.watch(leader.key, start_revision=rev + 1) as w:
                deleted = False
                async for resp in w:
                    for ev in resp.events:
                        if ev.type == EventType.DELETE:
                            deleted = True
                            break
                        yield ev.kv
                    if deleted:
                        break
                if not deleted:
                    return
