"""Software transactional memory over etcd (etcd's Go ``concurrency.NewSTM``).

``await run_stm(client, apply)`` calls ``apply(stm)``; reads go through ``stm.get``,
writes are buffered by ``stm.put``/``stm.delete`` and committed in one txn guarded by
what was read. On conflict the function runs again (at most ``max_attempts`` times)
with the conflicting keys pre-fetched from the failed commit.

Isolation levels are etcd's:

* ``SERIALIZABLE_SNAPSHOT`` (default): every read at the revision of the first read;
  commit requires the read keys unchanged and the written keys not modified since.
* ``SERIALIZABLE``: reads at the first read's revision; read keys unchanged.
* ``REPEATABLE_READ``: reads at the latest revision, each key read once; read keys
  unchanged at commit.
* ``READ_COMMITTED``: no checks at commit.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from meshkit.client import Client, Cmp, Compare, GetResult, Op, Operation, TxnResult
from meshkit.client.kv import KeyLike, to_bytes
from meshkit.concurrency.errors import STMConflictError

T = TypeVar("T")


class Isolation(enum.Enum):
    SERIALIZABLE_SNAPSHOT = "serializable-snapshot"
    SERIALIZABLE = "serializable"
    REPEATABLE_READ = "repeatable-read"
    READ_COMMITTED = "read-committed"


_MAX_REV = 2**63 - 2


class STM:
    """The view a transaction function gets: ``get``, ``rev``, ``put``, ``delete``."""

    def __init__(self, client: Client, isolation: Isolation, prefetch: dict[bytes, GetResult]) -> None:
        self._client = client
        self._iso = isolation
        self._rset: dict[bytes, GetResult] = {}
        self._wset: dict[bytes, Operation] = {}
        self._wvals: dict[bytes, bytes | None] = {}
        self._prefetch = prefetch
        self._rev = 0  # pinned read revision (serializable levels), 0: latest

    async def _fetch(self, key: bytes) -> GetResult:
        if key in self._rset:
            return self._rset[key]
        if key in self._prefetch:
            got = self._prefetch.pop(key)
        elif self._rev:
            got = await self._client.get(key, revision=self._rev, serializable=True)
        else:
            got = await self._client.get(key)
        pinned = self._iso in (Isolation.SERIALIZABLE, Isolation.SERIALIZABLE_SNAPSHOT)
        if pinned and not self._rset and not self._rev:
            self._rev = got.header.revision  # the first read fixes the snapshot
        if self._iso != Isolation.READ_COMMITTED:
            self._rset[key] = got
        return got

    async def get(self, key: KeyLike) -> bytes | None:
        """The value (None if absent), seeing this transaction's own writes."""
        k = to_bytes(key)
        if k in self._wvals:
            return self._wvals[k]
        got = await self._fetch(k)
        return got.kvs[0].value if got.kvs else None

    async def rev(self, key: KeyLike) -> int:
        """The key's mod revision as read (0 if absent)."""
        got = await self._fetch(to_bytes(key))
        return got.kvs[0].mod_revision if got.kvs else 0

    def put(self, key: KeyLike, value: KeyLike, *, lease: int = 0) -> None:
        k = to_bytes(key)
        self._wset[k] = Op.put(k, value, lease=lease)
        self._wvals[k] = to_bytes(value)

    def delete(self, key: KeyLike) -> None:
        k = to_bytes(key)
        self._wset[k] = Op.delete(k)
        self._wvals[k] = None

    def _conflicts(self) -> list[Compare]:
        if self._iso == Isolation.READ_COMMITTED:
            return []
        cmps = [Cmp.mod(k) == (g.kvs[0].mod_revision if g.kvs else 0) for k, g in self._rset.items()]
        if self._iso == Isolation.SERIALIZABLE_SNAPSHOT:
            first = min((g.header.revision for g in self._rset.values()), default=_MAX_REV)
            cmps += [Cmp.mod(k) < first + 1 for k in self._wset]
        return cmps


async def run_stm(
    client: Client,
    apply: Callable[[STM], Awaitable[T]],
    *,
    isolation: Isolation = Isolation.SERIALIZABLE_SNAPSHOT,
    prefetch: Iterable[KeyLike] = (),
    max_attempts: int = 100,
) -> tuple[T, TxnResult]:
    """Run ``apply`` transactionally; returns its result and the commit's ``TxnResult``.

    Raises :class:`STMConflictError` when every one of ``max_attempts`` conflicted;
    an exception from ``apply`` aborts (nothing is written).
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    pre: dict[bytes, GetResult] = {}
    for k in prefetch:
        kb = to_bytes(k)
        pre[kb] = await client.get(kb)
    for _ in range(max_attempts):
        stm = STM(client, isolation, pre)
        out = await apply(stm)
        keys = list(stm._rset)
        res = await (client.txn().if_(*stm._conflicts()).then(*stm._wset.values())
                     .else_(*(Op.get(k) for k in keys)).commit())
        if res.succeeded:
            return out, res
        # Retry with what the failed commit read: one round trip saved per attempt.
        pre = {k: r for k, r in zip(keys, res.responses, strict=True) if isinstance(r, GetResult)}
    raise STMConflictError(f"STM still conflicting after {max_attempts} attempts")
