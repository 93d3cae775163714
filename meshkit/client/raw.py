"""Raw etcd v3 calls: protobuf in, protobuf out, over a ``Client``'s endpoints and auth.

For tools that must show the server's answer exactly as sent (``meshkit ctl`` prints
responses byte for byte like etcdctl) or need an RPC the typed API does not wrap
(maintenance, cluster membership, auth administration). Failures are raised as
:class:`RpcFailure` with the gRPC status code and text, untranslated.

    raw = RawAPI(client)
    resp = await raw.unary("maintenance", "Alarm", rpc_pb2.AlarmRequest(), timeout=5)
"""

# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import grpc

from meshkit.client.errors import not_sent

if TYPE_CHECKING:
    from meshkit.client.client import Client

Service: TypeAlias = Literal["kv", "watch", "lease", "cluster", "maintenance", "auth"]

__all__ = ["RawAPI", "RpcFailure", "Service"]


class RpcFailure(Exception):
    """A call that ended with a non-OK gRPC status (``code``, ``details``) or no answer."""

    def __init__(self, code: grpc.StatusCode, details: str, endpoint: str = "") -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.endpoint = endpoint


class RawAPI:
    """Unary and streaming calls on a client's channels, with its auth token."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @property
    def endpoints(self) -> list[str]:
        return self.client.endpoints

    async def _ready(self, ep: str, deadline: float) -> bool:
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        return await self.client._pool.ready(ep, min(remaining, self.client.dial_timeout),
                                             wait_failed=True)

    async def _metadata(self, ep: str, deadline: float) -> tuple[tuple[str, str], ...] | None:
        try:
            return await self.client._metadata(ep, deadline)
        except Exception as e:
            code = getattr(e, "grpc_code", None) or grpc.StatusCode.UNAUTHENTICATED
            raise RpcFailure(code, str(e), ep) from None

    async def unary(
        self, service: Service, method: str, request: Any, *, endpoint: str | None = None,
        timeout: float | None = None, retry_sent: bool = False,
    ) -> Any:
        """One unary call. Endpoints are tried in turn while none can be connected;
        once a request was sent its failure is raised (``retry_sent`` retries UNAVAILABLE
        answers too, for reads)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else self.client.timeout)
        pool = self.client._pool
        last: RpcFailure | None = None
        pause = 0.05
        while True:
            order = [endpoint] if endpoint is not None else pool.rotation()
            for ep in order:
                if not await self._ready(ep, deadline):
                    pool.advance(ep)
                    continue
                md = await self._metadata(ep, deadline)
                stub = getattr(pool.stubs(ep), service)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    resp = await getattr(stub, method)(request, timeout=remaining, metadata=md)
                except grpc.aio.AioRpcError as e:
                    last = RpcFailure(e.code(), e.details() or "", ep)
                    if e.code() == grpc.StatusCode.UNAVAILABLE and (retry_sent or not_sent(last.details)):
                        pool.advance(ep)
                        continue
                    raise last from None
                if endpoint is None:
                    pool.prefer(ep)
                return resp
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded",
                                 last.endpoint if last else "")
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.5)

    async def connect_stream(self, endpoint: str | None, timeout: float | None) -> str:
        """An endpoint that is connected (for a stream), within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else self.client.timeout)
        pool = self.client._pool
        while True:
            for ep in [endpoint] if endpoint is not None else pool.rotation():
                if await self._ready(ep, deadline):
                    return ep
                pool.advance(ep)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "context deadline exceeded")
            await asyncio.sleep(min(0.1, remaining))

    async def stream(self, service: Service, method: str, *, endpoint: str | None = None,
                     timeout: float | None = None) -> Any:
        """A bidirectional stream call object (``write``/``read``/``cancel``)."""
        ep = await self.connect_stream(endpoint, timeout)
        loop = asyncio.get_running_loop()
        md = await self._metadata(ep, loop.time() + (timeout or self.client.timeout))
        stub = getattr(self.client._pool.stubs(ep), service)
        return getattr(stub, method)(metadata=md)

    async def server_stream(self, service: Service, method: str, request: Any, *,
                            endpoint: str | None = None, timeout: float | None = None,
                            ) -> AsyncIterator[Any]:
        """The responses of a server-streaming call (e.g. Maintenance.Snapshot)."""
        ep = await self.connect_stream(endpoint, timeout)
        loop = asyncio.get_running_loop()
        md = await self._metadata(ep, loop.time() + (timeout or self.client.timeout))
        stub = getattr(self.client._pool.stubs(ep), service)
        call = getattr(stub, method)(request, metadata=md)
        try:
            async for resp in call:
                yield resp
        except grpc.aio.AioRpcError as e:
            raise RpcFailure(e.code(), e.details() or "", ep) from None
        finally:
            call.cancel()
