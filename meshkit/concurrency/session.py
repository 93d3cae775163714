"""``Session``: a lease kept alive while the session is open (etcd's ``concurrency.Session``)."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import NoReturn

from meshkit._internal.errors import MeshkitError
from meshkit.client import Client, KeepAlive, LeaseLostError
from meshkit.concurrency.errors import SessionLostError

DEFAULT_TTL = 60  # etcd's concurrency.defaultSessionTTL


class Session:
    """``async with Session(client, ttl=10) as s:``: a lease renewed at a third of its TTL.

    ``s.lease_id`` is the lease; ``s.lost`` (an ``asyncio.Event``) is set the moment the
    keeper knows the lease is gone (the server answered TTL 0, or no renewal landed
    before the TTL ran out); ``await s.wait_lost()`` raises :class:`SessionLostError`
    then, and ``s.check()`` raises it at once. Leaving revokes the lease (so every
    key the session holds, locks included, is deleted); ``orphan()`` first to keep it.
    Give ``lease_id`` to adopt an existing lease instead of granting one.
    """

    def __init__(self, client: Client, *, ttl: int = DEFAULT_TTL, lease_id: int = 0) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.client = client
        self.ttl = ttl
        self._lease_id = lease_id
        self._ka: KeepAlive | None = None
        self.lost = asyncio.Event()
        self.reason = ""
        self._watch: asyncio.Task[None] | None = None
        self._orphaned = False
        self._closed = False

    @property
    def lease_id(self) -> int:
        if not self._lease_id:
            raise RuntimeError("the session is not open")
        return self._lease_id

    async def __aenter__(self) -> Session:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        if self._ka is not None:
            return
        if not self._lease_id:
            self._lease_id = (await self.client.grant(self.ttl)).id
        ka = self.client.keep_alive(self._lease_id)
        try:
            await ka.start()
        except LeaseLostError as e:
            self._mark_lost(e.reason)
            raise SessionLostError(self._lease_id, e.reason) from None
        self._ka = ka
        self._watch = asyncio.get_running_loop().create_task(
            self._forward(ka), name=f"meshkit-session-{self._lease_id:x}")

    async def _forward(self, ka: KeepAlive) -> None:
        await ka.lost.wait()
        self._mark_lost(ka.reason)

    def _mark_lost(self, reason: str) -> None:
        if not self.lost.is_set():
            self.reason = reason
            self.lost.set()

    def check(self) -> None:
        """Raise :class:`SessionLostError` if the lease is known to be gone."""
        if self.lost.is_set():
            raise SessionLostError(self._lease_id, self.reason)

    async def wait_lost(self) -> NoReturn:
        await self.lost.wait()
        raise SessionLostError(self._lease_id, self.reason)

    def orphan(self) -> None:
        """Stop renewing when closed but do not revoke: the lease runs out its TTL."""
        self._orphaned = True

    async def _stop_keepalive(self) -> None:
        task, self._watch = self._watch, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        ka, self._ka = self._ka, None
        if ka is not None:
            await ka.close()

    async def close(self) -> None:
        """Stop renewing and revoke the lease (unless orphaned). Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._stop_keepalive()
        if self._lease_id and not self._orphaned and not self.lost.is_set():
            with contextlib.suppress(MeshkitError):
                await self.client.revoke(self._lease_id, timeout=max(1.0, min(self.ttl, 5.0)))
        self._mark_lost("session closed")
