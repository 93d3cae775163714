"""``Registrar``: one instance under a key bound to a kept-alive lease.

One task (the supervisor) owns every write, so the state never races:

* no lease -> grant one (``ttl``) and keep it alive (``Client.keep_alive``);
* serving and the key not written on this lease -> put the key with the lease;
* not serving (unhealthy, draining) -> delete the key if it still holds our lease;
* the keep-alive reports the lease lost (expired after a pause, lost across a
  restart), or a watch on the key sees it deleted or taken by another lease (a
  revoke by anyone, ``etcdctl del``) -> look at the key and the lease, and register
  again at once (a new lease if ours is gone); failures are retried
  with capped exponential backoff, so the instance never stays silently
  unregistered while the registrar runs.

Leaving (``close()``) revokes the lease: the key is gone at once, not after the TTL.
One instance id is one key; a restarted registrar overwrites its own key.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from types import TracebackType

from meshkit._internal.clock import Clock, RealClock
from meshkit._internal.errors import MeshkitError
from meshkit._internal.logging import get_logger
from meshkit.client import Client, Cmp, EventType, KeepAlive, LeaseLostError, Op
from meshkit.registry.model import DEFAULT_PREFIX, Instance, encode_value, instance_key

__all__ = ["Backoff", "Registrar"]

_log = get_logger("registry.registrar")


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter (seeded for tests)."""

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    rng: random.Random | None = None

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum or self.factor < 1:
            raise ValueError("need 0 < initial <= maximum and factor >= 1")
        self._next = self.initial
        self._rng = self.rng or random.Random()

    def reset(self) -> None:
        self._next = self.initial

    def delay(self) -> float:
        """The next pause: uniform in [cap/2, cap], the cap doubling up to ``maximum``."""
        cap = self._next
        self._next = min(self._next * self.factor, self.maximum)
        return cap / 2 + self._rng.random() * cap / 2


class Registrar:
    """``async with Registrar(client, Instance("web", "10.0.0.7:8080", id="web-1")) as r:``.

    ``serving=False`` starts it withdrawn (a sidecar waits for the first passing
    check). ``await r.wait_registered()`` waits until the key is written.
    """

    def __init__(self, client: Client, instance: Instance, *, prefix: str = DEFAULT_PREFIX,
                 ttl: int = 10, serving: bool = True, clock: Clock | None = None,
                 backoff: Backoff | None = None, revoke_timeout: float = 3.0) -> None:
        instance.validate()
        if ttl < 1:
            raise ValueError("ttl must be >= 1 second")
        self.client = client
        self.instance = instance
        self.prefix = prefix
        self.ttl = ttl
        self.key = instance_key(prefix, instance.service, instance.instance_id)
        self.value = encode_value(instance)
        self.lease_id = 0
        self.registrations = 0  # successful puts of the key
        self.lease_losses = 0
        self.last_error: BaseException | None = None
        self._serving = serving
        self._written = False
        self._ka: KeepAlive | None = None
        self._clock: Clock = clock or RealClock()
        self._backoff = backoff or Backoff()
        self._revoke_timeout = revoke_timeout
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()  # the store matches the wanted state
        self._task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._lease_gone = False  # the key's deletion showed the lease is gone
        self._key_changed = False  # the watch saw the key change under us
        self._yielded = False  # another lease holds the key (same id registered elsewhere)
        self._closed = False

    # ---- state ---------------------------------------------------------------------

    @property
    def serving(self) -> bool:
        """Whether the instance should be registered (healthy and not draining)."""
        return self._serving

    @property
    def registered(self) -> bool:
        """Whether the key is written on a lease that is still kept alive."""
        return self._written and self._ka is not None and not self._ka.lost.is_set()

    def _log_state(self, event: str, **fields: object) -> None:
        detail = " ".join(f"{k}={v}" for k, v in fields.items())
        _log.info("%s service=%s id=%s key=%s%s", event, self.instance.service,
                  self.instance.instance_id, self.key, f" {detail}" if detail else "")

    # ---- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Registrar:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("the registrar is closed")
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._watch_task = loop.create_task(self._watch_key(), name=f"meshkit-registrar-watch-{self.key}")
            self._task = loop.create_task(self._run(), name=f"meshkit-registrar-{self.key}")

    async def wait_registered(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the key is written (raises ``TimeoutError``)."""
        async with asyncio.timeout(timeout):
            while not (self.registered and self._settled.is_set()):
                self._check_task()
                await self._wait_settled()

    async def set_serving(self, serving: bool, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Register (True) or withdraw (False) the key, keeping the lease; waits until
        the store matches (bounded by ``timeout``; retries continue afterwards)."""
        if self._serving == serving and self._settled.is_set():
            return
        self._serving = serving
        self._settled.clear()
        self._wake.set()
        self._log_state("serving" if serving else "withdrawing")
        async with asyncio.timeout(timeout):
            while not self._settled.is_set():
                self._check_task()
                await self._wait_settled()

    async def _wait_settled(self) -> None:
        """Wait for the supervisor to settle (or stop); callers loop under a timeout."""
        assert self._task is not None
        if self._settled.is_set():
            # Settled, but what the caller waits for is not true yet (the lease was
            # lost a moment ago and the supervisor has not woken): look again shortly.
            await asyncio.sleep(0.01)
            return
        waiter = asyncio.ensure_future(self._settled.wait())
        try:
            await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    def _check_task(self) -> None:
        if self._task is None:
            raise RuntimeError("the registrar is not started")
        if self._task.done():
            exc = self._task.exception() if not self._task.cancelled() else None
            raise RuntimeError("the registrar stopped") from exc

    async def close(self) -> None:
        """Stop, and revoke the lease so the key disappears at once (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for task in (self._watch_task, self._task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._watch_task = None
        await self._drop_keepalive()
        if self.lease_id:
            lease, self.lease_id = self.lease_id, 0
            try:
                await self.client.revoke(lease, timeout=self._revoke_timeout)
                self._log_state("deregistered", lease=f"{lease:x}")
            except MeshkitError as e:
                _log.warning("revoking lease %x failed (%s); the key expires with its TTL", lease, e)
        self._written = False

    async def _drop_keepalive(self) -> None:
        ka, self._ka = self._ka, None
        if ka is not None:
            await ka.close()

    # ---- the supervisor ------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._reconcile()
            except (MeshkitError, LeaseLostError) as e:
                self.last_error = e
                pause = self._backoff.delay()
                self._log_state("retrying", error=repr(str(e)), backoff=f"{pause:.2f}s")
                await self._clock.sleep(pause)
                continue
            self._backoff.reset()
            self.last_error = None
            self._settled.set()
            await self._wait_event()

    async def _watch_key(self) -> None:
        """Wake the supervisor when the key is deleted or written with another lease."""
        while True:
            try:
                async with self.client.watch(self.key) as w:
                    async for resp in w:
                        for ev in resp.events:
                            if ev.type == EventType.DELETE or ev.kv.lease != self.lease_id:
                                self._key_changed = True
                                self._settled.clear()
                                self._wake.set()
            except MeshkitError as e:
                _log.warning("watch of %s failed (%s); watching again", self.key, e)
            # The watch ended or failed: look at the key once, then watch again.
            self._key_changed = True
            self._wake.set()
            await self._clock.sleep(self._backoff.delay())

    async def _check_key(self) -> None:
        """After the watch saw a change: is our registration still there?"""
        self._key_changed = False
        res = await self.client.get(self.key)
        owner = res.kvs[0].lease if res.kvs else 0
        if owner and owner != self.lease_id:
            if not self._yielded:
                self._log_state("taken-over", lease=f"{owner:x}")
            self._yielded = True
            self._written = False
            return
        self._yielded = False
        if owner == 0 and self._written:
            self._written = False
            if self.lease_id and (await self.client.time_to_live(self.lease_id)).ttl <= 0:
                self._lease_gone = True
            else:
                self._log_state("key-deleted", lease=f"{self.lease_id:x}")

    async def _reconcile(self) -> None:
        if self._key_changed:
            await self._check_key()
        if self._ka is not None and (self._ka.lost.is_set() or self._lease_gone):
            self.lease_losses += 1
            reason = self._ka.reason or "revoked or expired (its key was deleted with it)"
            self._log_state("lease-lost", lease=f"{self.lease_id:x}", reason=repr(reason))
            self._lease_gone = False
            await self._drop_keepalive()
            self.lease_id = 0
            self._written = False
            self._settled.clear()
        if self._serving:
            if self._ka is None:
                grant = await self.client.grant(self.ttl)
                self.lease_id = grant.id
                ka = self.client.keep_alive(grant.id)
                await ka.start()  # raises LeaseLostError if it is already gone
                self._ka = ka
                self._written = False
                self._log_state("lease-granted", lease=f"{grant.id:x}", ttl=grant.ttl)
            if not self._written and not self._yielded:
                await self.client.put(self.key, self.value, lease=self.lease_id)
                self._written = True
                self.registrations += 1
                self._log_state("registered", addr=self.instance.addr, lease=f"{self.lease_id:x}")
        elif self._written:
            # Delete only our own registration (a newer registrar may own the key).
            await (self.client.txn()
                   .if_(Cmp.lease(self.key) == self.lease_id)
                   .then(Op.delete(self.key))
                   .commit())
            self._written = False
            self._log_state("withdrawn", lease=f"{self.lease_id:x}")

    async def _wait_event(self) -> None:
        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(self._wake.wait())]
        if self._ka is not None:
            waits.append(asyncio.ensure_future(self._ka.lost.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        self._wake.clear()
        if self._ka is not None and self._ka.lost.is_set():
            self._settled.clear()
