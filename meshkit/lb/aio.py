"""``BalancedChannel``: a grpc.aio channel that balances each call over a service's
live instances, fed by the registry (no control plane)::

    async with Client(["127.0.0.1:2379"]) as c:
        async with BalancedChannel(c, "web", policy="p2c", local_zone="eu-1") as ch:
            stub = GreeterStub(ch)            # any generated stub works
            reply = await stub.SayHello(req)  # one instance picked for this call

It keeps one sub-channel (a ``grpc.aio`` channel) per instance, picks per call
(:mod:`meshkit.lb.policy`), counts calls in flight per sub-channel, and drains the
sub-channel of a removed instance instead of cancelling its calls. With no instance
to pick, a call fails at once with ``UNAVAILABLE`` (:class:`NoInstanceError`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Generator, Sequence
from types import TracebackType
from typing import Any

import grpc
from grpc.aio import AioRpcError, Metadata

from meshkit._internal.clock import Clock
from meshkit.client import Client
from meshkit.lb.policy import Endpoint, PolicyName
from meshkit.lb.pool import BalancerOptions, Pool
from meshkit.registry.discovery import Discovery
from meshkit.registry.health import _decode_health_status, _encode_health_request
from meshkit.registry.model import DEFAULT_PREFIX

__all__ = ["HEALTH_METHOD", "BalancedChannel", "NoInstanceError", "no_instance_error"]

HEALTH_METHOD = "/grpc.health.v1.Health/Check"
_SERVING = 1

ChannelOptions = Sequence[tuple[str, Any]]


class NoInstanceError(AioRpcError):
    """``UNAVAILABLE``: the service has no instance that may take a call."""


def no_instance_error(service: str, known: int) -> NoInstanceError:
    why = ("no instance is registered" if known == 0
           else f"none of its {known} instances is healthy")
    return NoInstanceError(grpc.StatusCode.UNAVAILABLE, Metadata(), Metadata(),
                           details=f"meshkit lb: service {service!r}: {why}",
                           debug_error_string="meshkit lb: no instance to pick")


class _FailedCall:
    """What a call returns when no instance could be picked: every way of waiting
    on it raises the ``UNAVAILABLE`` error (unary await, streaming iteration, read)."""

    def __init__(self, error: AioRpcError) -> None:
        self._error = error

    def __await__(self) -> Generator[Any, None, Any]:
        raise self._error
        yield  # pragma: no cover

    def __aiter__(self) -> _FailedCall:
        return self

    async def __anext__(self) -> Any:
        raise self._error

    async def read(self) -> Any:
        raise self._error

    async def write(self, request: Any) -> None:
        raise self._error

    async def done_writing(self) -> None:
        return None

    async def wait_for_connection(self) -> None:
        raise self._error

    async def code(self) -> grpc.StatusCode:
        return self._error.code()

    async def details(self) -> str:
        return self._error.details() or ""

    async def initial_metadata(self) -> Metadata:
        return Metadata()

    async def trailing_metadata(self) -> Metadata:
        return Metadata()

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        callback(self)


class _MultiCallable:
    def __init__(self, owner: BalancedChannel, kind: str, method: str,
                 serializer: Callable[[Any], bytes] | None,
                 deserializer: Callable[[bytes], Any] | None) -> None:
        self._owner = owner
        self._kind = kind
        self._method = method
        self._ser = serializer
        self._de = deserializer

    def __call__(self, request: Any = None, *, timeout: float | None = None, **kwargs: Any) -> Any:
        owner = self._owner
        ep = owner.pool.pick()
        if ep is None:
            owner.failed_fast += 1
            return _FailedCall(no_instance_error(owner.service, len(owner.pool.endpoints())))
        try:
            cache: dict[tuple[str, str], Any] = ep.extra.setdefault("mc", {})
            mc = cache.get((self._kind, self._method))
            if mc is None:
                factory = getattr(ep.channel, self._kind)
                mc = factory(self._method, request_serializer=self._ser,
                             response_deserializer=self._de)
                cache[(self._kind, self._method)] = mc
            call = mc(request, timeout=timeout, **kwargs)
        except BaseException:
            owner.pool.release(ep)
            raise
        call.add_done_callback(lambda _c: owner.pool.release(ep))
        return call


class _AioTransport:
    def __init__(self, options: ChannelOptions) -> None:
        self._options = list(options)

    def open(self, ep: Endpoint, on_state: Callable[[], None]) -> Awaitable[None]:
        ep.channel = grpc.aio.insecure_channel(ep.addr, options=self._options)
        return self._watch(ep, on_state)

    async def _watch(self, ep: Endpoint, on_state: Callable[[], None]) -> None:
        ch: grpc.aio.Channel = ep.channel
        failed = False
        while not ep.closed:
            state = ch.get_state(try_to_connect=True)
            if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                failed = True
            elif state == grpc.ChannelConnectivity.READY:
                failed = False
            ok = state != grpc.ChannelConnectivity.SHUTDOWN and not failed
            if ok != ep.connected_ok:
                ep.connected_ok = ok
                on_state()
            ep.extra["state"] = state
            await ch.wait_for_state_change(state)

    async def probe(self, ep: Endpoint, service: str, timeout: float) -> bool:  # noqa: ASYNC109
        mc = ep.channel.unary_unary(HEALTH_METHOD)
        try:
            raw = await mc(_encode_health_request(service), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(_decode_health_status(raw) == _SERVING)

    async def close(self, ep: Endpoint) -> None:
        # Drained (or drain timed out): close() cancels whatever is still running.
        await ep.channel.close()


class BalancedChannel(grpc.aio.Channel):
    """A grpc.aio channel over every live instance of ``service`` (see the module doc).

    ``source`` is a :class:`~meshkit.client.Client` (a Discovery of ``service`` is
    started and owned) or a running :class:`~meshkit.registry.Discovery` (shared, not
    closed here). ``options`` are the sub-channels' gRPC options.
    """

    def __init__(self, source: Client | Discovery, service: str, *,
                 policy: PolicyName = "round_robin", local_zone: str = "",
                 protect_threshold: float = 0.0, protect_window: float = 30.0,
                 health_check: bool = False, health_service: str = "",
                 health_interval: float = 5.0, health_timeout: float = 2.0,
                 drain_timeout: float = 30.0, prefix: str = DEFAULT_PREFIX,
                 options: ChannelOptions = (), clock: Clock | None = None,
                 balancer_options: BalancerOptions | None = None) -> None:
        self.service = service
        self.failed_fast = 0  # calls that failed at once: no instance to pick
        self._owns_discovery = isinstance(source, Client)
        self.discovery = (Discovery(source, service, prefix=prefix, clock=clock)
                          if isinstance(source, Client) else source)
        self.options = balancer_options or BalancerOptions(
            policy=policy, local_zone=local_zone, protect_threshold=protect_threshold,
            protect_window=protect_window, health_check=health_check,
            health_service=health_service, health_interval=health_interval,
            health_timeout=health_timeout, drain_timeout=drain_timeout)
        self.pool = Pool(self.discovery, service, _AioTransport(options), self.options, clock=clock)
        self._started = False
        self._closed = False

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        if self._closed:
            raise RuntimeError("the channel is closed")
        self._started = True
        if self._owns_discovery:
            await self.discovery.start()
        await self.pool.start()

    async def __aenter__(self) -> BalancedChannel:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self, grace: float | None = None) -> None:
        """Close every sub-channel (after up to ``grace`` seconds for calls in flight)."""
        if self._closed:
            return
        self._closed = True
        if grace:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    while any(e.in_flight for e in self.pool.endpoints()):
                        await self.pool.wait_changed()
        await self.pool.close()
        if self._owns_discovery:
            await self.discovery.close()

    # ---- state ---------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        return self.pool.endpoints()

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """READY when a candidate's sub-channel is ready; CONNECTING/IDLE while one is
        getting there; TRANSIENT_FAILURE with no candidate; SHUTDOWN once closed."""
        if self._closed:
            return grpc.ChannelConnectivity.SHUTDOWN
        states = {e.extra.get("state", grpc.ChannelConnectivity.IDLE)
                  for e in self.pool.candidates()}
        for s in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.CONNECTING,
                  grpc.ChannelConnectivity.IDLE):
            if s in states:
                return s
        return grpc.ChannelConnectivity.TRANSIENT_FAILURE

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        while self.get_state() == last_observed_state and not self._closed:
            await self.pool.wait_changed()

    async def channel_ready(self) -> None:
        while (s := self.get_state(True)) != grpc.ChannelConnectivity.READY:
            if s == grpc.ChannelConnectivity.SHUTDOWN:
                raise RuntimeError("the channel is closed")
            await self.wait_for_state_change(s)

    # ---- calls ---------------------------------------------------------------------------

    def _mc(self, kind: str, method: str, request_serializer: Any,
            response_deserializer: Any) -> Any:
        return _MultiCallable(self, kind, method, request_serializer, response_deserializer)

    def unary_unary(self, method: str, request_serializer: Any = None,
                    response_deserializer: Any = None, _registered_method: bool | None = False) -> Any:
        return self._mc("unary_unary", method, request_serializer, response_deserializer)

    def unary_stream(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, _registered_method: bool | None = False) -> Any:
        return self._mc("unary_stream", method, request_serializer, response_deserializer)

    def stream_unary(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, _registered_method: bool | None = False) -> Any:
        return self._mc("stream_unary", method, request_serializer, response_deserializer)

    def stream_stream(self, method: str, request_serializer: Any = None,
                      response_deserializer: Any = None, _registered_method: bool | None = False) -> Any:
        return self._mc("stream_stream", method, request_serializer, response_deserializer)

