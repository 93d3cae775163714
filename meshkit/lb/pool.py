"""``Pool``: the sub-channels of one service, kept in step with a ``Discovery``.

Shared by the grpc.aio channel and the blocking one; it runs on an event loop, while
``pick``/``release`` may be called from any thread (one lock guards the state).

* added instance -> a sub-channel (a gRPC channel to its address) and, when asked,
  a task probing ``grpc.health.v1.Health/Check`` through it every ``health_interval``;
* updated instance -> the new weight/zone take effect at once (a new address
  replaces the sub-channel: the old one drains);
* removed instance -> withdrawn: no new calls; its channel closes when its calls in
  flight have finished (or after ``drain_timeout``: then the rest are cancelled).
  With a protect threshold it stays known for ``protect_window`` seconds, so the
  threshold can count it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Awaitable, Callable
from typing import Protocol

from meshkit._internal.clock import Clock, RealClock
from meshkit._internal.logging import get_logger
from meshkit.lb.policy import Endpoint, PolicyName, candidates, make_policy
from meshkit.registry.discovery import Change, Discovery
from meshkit.registry.model import Instance

__all__ = ["BalancerOptions", "Pool", "Transport"]

_log = get_logger("lb")


class Transport(Protocol):
    """How the pool opens, watches, probes and closes one kind of gRPC channel."""

    def open(self, ep: Endpoint, on_state: Callable[[], None]) -> Awaitable[None] | None:
        """Set ``ep.channel``; may return a coroutine watching connectivity (run as a task)."""
        ...

    async def probe(self, ep: Endpoint, service: str, timeout: float) -> bool: ...  # noqa: ASYNC109

    async def close(self, ep: Endpoint) -> None: ...


class BalancerOptions:
    """Everything that shapes picking; ``validate()`` names every broken rule."""

    def __init__(self, *, policy: PolicyName = "round_robin", local_zone: str = "",
                 protect_threshold: float = 0.0, protect_window: float = 30.0,
                 health_check: bool = False, health_service: str = "",
                 health_interval: float = 5.0, health_timeout: float = 2.0,
                 drain_timeout: float = 30.0, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.local_zone = local_zone
        self.protect_threshold = protect_threshold
        self.protect_window = protect_window
        self.health_check = health_check
        self.health_service = health_service
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.drain_timeout = drain_timeout
        self.rng = rng
        self.validate()

    def validate(self) -> None:
        problems = []
        if self.policy not in ("round_robin", "p2c", "weighted"):
            problems.append(f"policy {self.policy!r} must be round_robin, p2c or weighted")
        if not 0.0 <= self.protect_threshold <= 1.0:
            problems.append("protect_threshold must be in 0..1")
        if self.protect_window < 0:
            problems.append("protect_window must be >= 0")
        if self.health_interval <= 0 or self.health_timeout <= 0:
            problems.append("health_interval and health_timeout must be > 0")
        if self.drain_timeout < 0:
            problems.append("drain_timeout must be >= 0")
        if problems:
            raise ValueError("invalid balancer options: " + "; ".join(problems))


class Pool:
    def __init__(self, discovery: Discovery, service: str, transport: Transport,
                 options: BalancerOptions, *, clock: Clock | None = None) -> None:
        self.discovery = discovery
        self.service = service
        self.options = options
        self._transport = transport
        self._clock: Clock = clock or RealClock()
        self._policy = make_policy(options.policy, options.rng)
        self._lock = threading.Lock()
        self._active: dict[str, Endpoint] = {}
        self._withdrawn: set[Endpoint] = set()
        self._tasks: dict[Endpoint, list[asyncio.Task[None]]] = {}
        self._drained: dict[Endpoint, asyncio.Event] = {}
        # Every drain task, also one that already took its endpoint off the lists:
        # close() finishes them all, so none outlives the pool.
        self._drain_tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._changed = asyncio.Event()
        self._closed = False

    # ---- reading --------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        """Every open sub-channel: listed ones (by key), then withdrawn ones."""
        with self._lock:
            return ([self._active[k] for k in sorted(self._active)]
                    + sorted(self._withdrawn, key=lambda e: e.key))

    def candidates(self) -> list[Endpoint]:
        with self._lock:
            return self._candidates()

    def _candidates(self) -> list[Endpoint]:
        return candidates([*self._active.values(), *self._withdrawn],
                          local_zone=self.options.local_zone,
                          protect_threshold=self.options.protect_threshold)

    # ---- picking (any thread) ---------------------------------------------------------

    def pick(self) -> Endpoint | None:
        """One endpoint for a new call (its in-flight count already raised), or None."""
        with self._lock:
            if self._closed:
                return None
            cands = self._candidates()
            if not cands:
                return None
            ep = self._policy.pick(cands)
            ep.in_flight += 1
            ep.calls += 1
            return ep

    def release(self, ep: Endpoint) -> None:
        """A call on ``ep`` has finished."""
        with self._lock:
            ep.in_flight -= 1
            idle = ep.in_flight == 0 and ep.withdrawn
        if idle and ep in self._drained and self._loop is not None:
            ev = self._drained[ep]
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is self._loop:
                ev.set()
            else:
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    self._loop.call_soon_threadsafe(ev.set)

    # ---- lifecycle (the loop) ---------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for key, inst in sorted(self.discovery.snapshot().items()):
            if inst.service == self.service:
                self._add(key, inst)
        self._remove_listener = self.discovery.add_listener(self._on_change)

    async def close(self) -> None:
        if self._closed:
            return
        with self._lock:
            self._closed = True
            eps = [*self._active.values(), *self._withdrawn]
            self._active.clear()
            self._withdrawn.clear()
        if self._remove_listener is not None:
            self._remove_listener()
        for ep in eps:
            await self._close_endpoint(ep)
        me = asyncio.current_task()
        pending = [t for t in self._drain_tasks if t is not me]
        for t in pending:
            t.cancel()
        for t in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._changed.set()

    async def wait_changed(self) -> None:
        """Wait for the next change of any endpoint's state."""
        self._changed.clear()
        await self._changed.wait()

    def notify(self) -> None:
        if self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._changed.set()
        else:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._changed.set)

    # ---- following the registry -----------------------------------------------------

    def _on_change(self, ch: Change) -> None:
        if self._closed or ch.instance.service != self.service:
            return
        if ch.kind == "removed":
            self._withdraw(ch.key)
        else:
            with self._lock:
                cur = self._active.get(ch.key)
                same = cur is not None and cur.addr == ch.instance.addr
                if cur is not None and same:
                    cur.instance = ch.instance  # weight, zone, metadata take effect now
            if not same:
                if cur is not None:
                    self._withdraw(ch.key)  # a new address: the old sub-channel drains
                self._add(ch.key, ch.instance)
        self.notify()

    def _add(self, key: str, inst: Instance) -> None:
        assert self._loop is not None
        # An instance that comes back while its old sub-channel still drains reuses it.
        with self._lock:
            back = next((e for e in self._withdrawn if e.key == key and e.addr == inst.addr), None)
            if back is not None:
                self._withdrawn.discard(back)
                back.withdrawn_at = None
                back.instance = inst
                self._active[key] = back
                ev = self._drained.pop(back, None)
        if back is not None:
            if ev is not None:
                ev.set()  # stops its drain task (it sees the endpoint listed again)
            _log.info("instance %s (%s) is back", key, inst.addr)
            return
        ep = Endpoint(key, inst)
        watch = self._transport.open(ep, self.notify)
        tasks: list[asyncio.Task[None]] = []
        if watch is not None:
            tasks.append(self._loop.create_task(_quiet(watch), name=f"meshkit-lb-watch-{key}"))
        if self.options.health_check:
            tasks.append(self._loop.create_task(self._health(ep), name=f"meshkit-lb-health-{key}"))
        with self._lock:
            self._active[key] = ep
            self._tasks[ep] = tasks
        _log.info("sub-channel for %s (%s) opened", key, inst.addr)

    def _withdraw(self, key: str) -> None:
        assert self._loop is not None
        with self._lock:
            ep = self._active.pop(key, None)
            if ep is None:
                return
            ep.withdrawn_at = self._clock.monotonic()
            self._withdrawn.add(ep)
            ev = asyncio.Event()
            self._drained[ep] = ev
            if ep.in_flight == 0:
                ev.set()
        _log.info("instance %s (%s) withdrawn: draining %d calls", key, ep.addr, ep.in_flight)
        task = self._loop.create_task(self._drain(ep, ev), name=f"meshkit-lb-drain-{key}")
        self._tasks.setdefault(ep, []).append(task)
        self._drain_tasks.add(task)
        task.add_done_callback(self._drain_tasks.discard)

    async def _drain(self, ep: Endpoint, idle: asyncio.Event) -> None:
        """Close a withdrawn sub-channel once its calls finished (bounded by drain_timeout);
        with a protect threshold, not before protect_window has passed."""
        start = self._clock.monotonic()
        keep = self.options.protect_window if self.options.protect_threshold > 0 else 0.0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.options.drain_timeout):
                await idle.wait()
        if not ep.withdrawn:
            return  # listed again
        left = keep - (self._clock.monotonic() - start)
        if left > 0:
            await self._clock.sleep(left)
        with self._lock:
            if not ep.withdrawn or ep not in self._withdrawn:
                return
            self._withdrawn.discard(ep)
            self._drained.pop(ep, None)
        if ep.in_flight:
            _log.warning("drain of %s timed out: cancelling %d calls", ep.addr, ep.in_flight)
        self.notify()
        await self._close_endpoint(ep, skip=asyncio.current_task())

    async def _close_endpoint(self, ep: Endpoint, skip: asyncio.Task[None] | None = None) -> None:
        ep.closed = True
        tasks = self._tasks.pop(ep, [])
        for t in tasks:
            if t is not skip and t is not asyncio.current_task():
                t.cancel()
        for t in tasks:
            if t is not skip and t is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        await self._transport.close(ep)
        _log.info("sub-channel for %s (%s) closed", ep.key, ep.addr)

    async def _health(self, ep: Endpoint) -> None:
        o = self.options
        while not ep.closed:
            try:
                ok = await self._transport.probe(ep, o.health_service, o.health_timeout)
            except Exception as e:  # a probe that cannot run counts as a failure
                _log.debug("health probe of %s failed: %s", ep.addr, e)
                ok = False
            if ok != ep.health_ok:
                ep.health_ok = ok
                _log.info("instance %s (%s) is now %s", ep.key, ep.addr,
                          "healthy" if ok else "unhealthy")
                self.notify()
            await self._clock.sleep(o.health_interval)


async def _quiet(aw: Awaitable[None]) -> None:
    try:
        await aw
    except asyncio.CancelledError:
        raise
    except Exception as e:  # the channel was closed under the watcher
        _log.debug("connectivity watch ended: %s", e)
