"""``BlockingBalancedChannel``: the balancer for grpc's synchronous API::

    with BlockingBalancedChannel(["127.0.0.1:2379"], "web", policy="weighted") as ch:
        ch.wait_for_instances(1, timeout=10)
        reply = GreeterStub(ch).SayHello(req)

A background thread runs an event loop with the etcd client and the
:class:`~meshkit.registry.Discovery`; sub-channels are blocking ``grpc.Channel``\\ s
and calls run in the caller's thread. Picking, weights, zones, health, draining and
the protect threshold are the same as :class:`~meshkit.lb.BalancedChannel`'s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from meshkit.client import Client
from meshkit.lb.aio import HEALTH_METHOD, ChannelOptions, no_instance_error
from meshkit.lb.policy import Endpoint, PolicyName
from meshkit.lb.pool import BalancerOptions, Pool
from meshkit.registry.discovery import Discovery
from meshkit.registry.health import _decode_health_status, _encode_health_request
from meshkit.registry.model import DEFAULT_PREFIX

__all__ = ["BlockingBalancedChannel"]

T = TypeVar("T")


class _SyncTransport:
    def __init__(self, options: ChannelOptions) -> None:
        self._options = list(options)

    def open(self, ep: Endpoint, on_state: Callable[[], None]) -> None:
        ch = grpc.insecure_channel(ep.addr, options=self._options)
        ep.channel = ch
        failed = [False]

        def changed(state: grpc.ChannelConnectivity) -> None:  # a grpc thread
            if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                failed[0] = True
            elif state == grpc.ChannelConnectivity.READY:
                failed[0] = False
            ep.extra["state"] = state
            ok = state != grpc.ChannelConnectivity.SHUTDOWN and not failed[0]
            if ok != ep.connected_ok:
                ep.connected_ok = ok
                on_state()

        ep.extra["subscription"] = changed
        ch.subscribe(changed, try_to_connect=True)
        return None

    async def probe(self, ep: Endpoint, service: str, timeout: float) -> bool:  # noqa: ASYNC109
        mc = ep.channel.unary_unary(HEALTH_METHOD)
        try:
            raw = await asyncio.to_thread(mc, _encode_health_request(service), timeout=timeout)
        except grpc.RpcError:
            return False
        return bool(_decode_health_status(raw) == 1)

    async def close(self, ep: Endpoint) -> None:
        ch: grpc.Channel = ep.channel
        ch.unsubscribe(ep.extra["subscription"])
        await asyncio.to_thread(ch.close)


class _NoInstance(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """The blocking form of :class:`~meshkit.lb.NoInstanceError`."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> Any:
        return ()

    def trailing_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False


class _MultiCallable:
    def __init__(self, owner: BlockingBalancedChannel, kind: str, method: str,
                 ser: Any, de: Any) -> None:
        self._owner = owner
        self._kind = kind
        self._method = method
        self._ser = ser
        self._de = de

    def _pick(self) -> tuple[Endpoint, Any]:
        owner = self._owner
        ep = owner.pool.pick()
        if ep is None:
            owner.failed_fast += 1
            err = no_instance_error(owner.service, len(owner.pool.endpoints()))
            raise _NoInstance(err.details() or "")
        cache: dict[tuple[str, str], Any] = ep.extra.setdefault("mc", {})
        mc = cache.get((self._kind, self._method))
        if mc is None:
            mc = getattr(ep.channel, self._kind)(self._method, request_serializer=self._ser,
                                                 response_deserializer=self._de)
            cache[(self._kind, self._method)] = mc
        return ep, mc

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        ep, mc = self._pick()
        if self._kind in ("unary_stream", "stream_stream"):
            try:
                call = mc(request, **kwargs)
            except BaseException:
                self._owner.pool.release(ep)
                raise
            call.add_done_callback(lambda _f: self._owner.pool.release(ep))
            return call
        try:
            return mc(request, **kwargs)
        finally:
            self._owner.pool.release(ep)

    def with_call(self, request: Any, **kwargs: Any) -> Any:
        ep, mc = self._pick()
        try:
            return mc.with_call(request, **kwargs)
        finally:
            self._owner.pool.release(ep)

    def future(self, request: Any, **kwargs: Any) -> Any:
        ep, mc = self._pick()
        try:
            fut = mc.future(request, **kwargs)
        except BaseException:
            self._owner.pool.release(ep)
            raise
        fut.add_done_callback(lambda _f: self._owner.pool.release(ep))
        return fut


class BlockingBalancedChannel(grpc.Channel):
    """A blocking grpc channel over every live instance of ``service``; owns a thread
    with an event loop, an etcd :class:`Client` on ``endpoints`` and a Discovery."""

    def __init__(self, endpoints: Sequence[str], service: str, *,
                 policy: PolicyName = "round_robin", local_zone: str = "",
                 protect_threshold: float = 0.0, protect_window: float = 30.0,
                 health_check: bool = False, health_service: str = "",
                 health_interval: float = 5.0, health_timeout: float = 2.0,
                 drain_timeout: float = 30.0, prefix: str = DEFAULT_PREFIX,
                 options: ChannelOptions = (), client_timeout: float = 5.0,
                 start_timeout: float = 15.0) -> None:
        self.service = service
        self.failed_fast = 0
        self._endpoints = list(endpoints)
        self._prefix = prefix
        self._client_timeout = client_timeout
        self.options = BalancerOptions(
            policy=policy, local_zone=local_zone, protect_threshold=protect_threshold,
            protect_window=protect_window, health_check=health_check,
            health_service=health_service, health_interval=health_interval,
            health_timeout=health_timeout, drain_timeout=drain_timeout)
        self._transport = _SyncTransport(options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name=f"meshkit-lb-{service}", daemon=True)
        self._client: Client | None = None
        self._discovery: Discovery | None = None
        self.pool: Pool
        self._closed = False
        self._thread.start()
        try:
            self._run(self._start(), start_timeout)
        except BaseException:
            self.close()
            raise

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError("the balancer's background loop did not answer in time") from None

    async def _start(self) -> None:
        self._client = Client(self._endpoints, timeout=self._client_timeout)
        await self._client.__aenter__()
        self._discovery = Discovery(self._client, self.service, prefix=self._prefix)
        await self._discovery.start()
        self.pool = Pool(self._discovery, self.service, self._transport, self.options)
        await self.pool.start()

    async def _stop(self) -> None:
        if hasattr(self, "pool"):
            await self.pool.close()
        if self._discovery is not None:
            await self._discovery.close()
        if self._client is not None:
            await self._client.__aexit__(None, None, None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            try:
                self._run(self._stop(), 30)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> BlockingBalancedChannel:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def endpoints(self) -> list[Endpoint]:
        return self.pool.endpoints()

    def wait_for(self, predicate: Callable[[BlockingBalancedChannel], bool],
                 timeout: float = 10.0) -> None:
        """Block until ``predicate(self)`` holds (re-checked on each state change)."""

        async def wait() -> None:
            async with asyncio.timeout(timeout):
                while not predicate(self):
                    await self.pool.wait_changed()

        self._run(wait(), timeout + 1)

    def wait_for_instances(self, n: int, timeout: float = 10.0) -> None:
        """Block until at least ``n`` instances may take calls."""
        self.wait_for(lambda ch: len(ch.pool.candidates()) >= n, timeout)

    # ---- grpc.Channel ---------------------------------------------------------------------

    def subscribe(self, callback: Callable[[grpc.ChannelConnectivity], None],
                  try_to_connect: bool = False) -> None:
        raise NotImplementedError("connectivity subscription on the balanced channel; "
                                  "use wait_for_instances()")

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        raise NotImplementedError("connectivity subscription on the balanced channel")

    def unary_unary(self, method: str, request_serializer: Any = None,
                    response_deserializer: Any = None, _registered_method: bool | None = False) -> Any:
        return _MultiCallable(self, "unary_unary", method, request_serializer, response_deserializer)

    def unary_stream(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, _registered_method: bool | None = False) -> Any:
        return _MultiCallable(self, "unary_stream", method, request_serializer, response_deserializer)

    def stream_unary(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, _registered_method: bool | None = False) -> Any:
        return _MultiCallable(self, "stream_unary", method, request_serializer, response_deserializer)

    def stream_stream(self, method: str, request_serializer: Any = None,
                      response_deserializer: Any = None, _registered_method: bool | None = False) -> Any:
        return _MultiCallable(self, "stream_stream", method, request_serializer, response_deserializer)

