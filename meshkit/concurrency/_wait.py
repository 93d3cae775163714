"""Waiting helpers shared by the recipes: etcd's ``waitDelete(s)``, raced against
session loss and a deadline."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from meshkit.client import Client, EventType, ResponseHeader
from meshkit.client.kv import prefix_end
from meshkit.concurrency.errors import LockTimeoutError
from meshkit.concurrency.session import Session

T = TypeVar("T")


async def wait_delete(client: Client, key: bytes, rev: int) -> None:
    """Return at the first delete of ``key`` at or after revision ``rev``."""
    async with client.watch(key, start_revision=rev) as w:
        async for resp in w:
            if any(ev.type == EventType.DELETE for ev in resp.events):
                return
    raise asyncio.CancelledError("watch ended while waiting for a delete")  # pragma: no cover


async def wait_deletes(client: Client, prefix: bytes, max_create_rev: int,
                       range_end: bytes | None = None) -> ResponseHeader:
    """etcd's ``waitDeletes``: until no key of the range created at or before
    ``max_create_rev`` is left. Each round waits for one such key to be deleted (new
    keys are newer), so the rounds are bounded by the number of older keys."""
    end = range_end if range_end is not None else prefix_end(prefix)
    while True:
        got = await client.get(prefix, end, sort_order="descend", sort_target="create", limit=1,
                               max_create_revision=max_create_rev)
        if not got.kvs:
            return got.header
        await wait_delete(client, got.kvs[0].key, got.header.revision)


async def race(work: Awaitable[T], session: Session, deadline: float | None, what: str) -> T:
    """Run ``work`` until done, the session is lost (``SessionLostError``) or the loop
    time ``deadline`` passes (``LockTimeoutError``). The loser is canceled and awaited."""
    loop = asyncio.get_running_loop()
    session.check()
    task: asyncio.Task[T] = loop.create_task(_as_coro(work))
    lost = loop.create_task(session.lost.wait())
    try:
        timeout = None if deadline is None else max(deadline - loop.time(), 0.0)
        done, _ = await asyncio.wait({task, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        if lost in done:
            session.check()
        raise LockTimeoutError(f"{what}: not acquired before the timeout")
    finally:
        for t in (task, lost):
            if not t.done():
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


async def _as_coro(aw: Awaitable[T]) -> T:
    return await aw


def deadline_of(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError("timeout must be >= 0")
    return asyncio.get_running_loop().time() + timeout

