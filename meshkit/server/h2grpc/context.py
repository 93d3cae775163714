"""What a servicer sees of one call: grpc.aio's ServicerContext, for the native server."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

if TYPE_CHECKING:
    from meshkit.server.h2grpc.connection import Stream


class Aborted(grpc.aio.AbortError):
    """Raised by ``abort``: the call ends with this status (as grpc.aio's AbortError)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class CallContext(grpc.aio.ServicerContext):  # type: ignore[type-arg]
    """What the in-process contexts share (this server's calls and the gateway's):
    the status a handler sets or aborts with, trailing metadata, done callbacks."""

    def __init__(self, requests: AsyncIterator[Any] | None = None) -> None:
        self._requests = requests  # the request stream, if the call has one
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: tuple[tuple[str, str | bytes], ...] = ()
        self._callbacks: list[Callable[[Any], None]] = []

    async def read(self) -> Any:
        if self._requests is None:
            raise grpc.aio.UsageError("read() is only for RPCs with a request stream")
        try:
            return await anext(self._requests)
        except StopAsyncIteration:
            return grpc.aio.EOF  # type: ignore[attr-defined]  # (missing from grpc's stubs)

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        if trailing_metadata:
            self._trailing = tuple(trailing_metadata)
        raise Aborted(code, details)

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        raise Aborted(status.code, status.details)

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> Any:
        return self._trailing

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code or grpc.StatusCode.OK

    def set_details(self, details: str) -> None:
        self._details = details

    def details(self) -> str:
        return self._details

    def set_compression(self, compression: grpc.Compression) -> None:
        pass  # responses are never compressed

    def disable_next_message_compression(self) -> None:
        pass

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self.done():
            callback(self)
        else:
            self._callbacks.append(callback)

    def run_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(self)


class RequestStream:
    """The messages of a client stream, in order, as an async iterator.

    The connection pushes decoded messages; ``end`` marks the client's
    half-close. Each message taken gives its bytes back to the flow-control
    window (``consumed``), so a client cannot outrun a slow handler.
    """

    __slots__ = ("_ended", "_items", "_stream", "_waiter")

    def __init__(self, stream: Stream) -> None:
        self._items: deque[tuple[Any, int]] = deque()
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None
        self._stream = stream

    def push(self, message: Any, size: int) -> None:
        self._items.append((message, size))
        self._wake()

    def end(self) -> None:
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> Any:
        while not self._items:
            if self._ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message, size = self._items.popleft()
        self._stream.consumed(size)
        return message


class ServicerContext(CallContext):
    """A call of the native server."""

    def __init__(self, stream: Stream, deadline: float | None) -> None:
        super().__init__()
        self._stream = stream
        self.deadline = deadline  # loop time, or None

    async def write(self, message: Any) -> None:
        await self._stream.write_message(message)

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        self._stream.send_headers()

    def invocation_metadata(self) -> Any:
        return self._stream.metadata

    def peer(self) -> str:
        return self._stream.conn.peer_name

    def peer_identities(self) -> Iterable[bytes] | None:
        cn = self._stream.conn.common_name
        return None if cn is None else [cn.encode()]

    def peer_identity_key(self) -> str | None:
        return None if self._stream.conn.common_name is None else "x509_common_name"

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return self._stream.conn.auth_context

    def time_remaining(self) -> float:
        if self.deadline is None:
            return math.inf
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def cancelled(self) -> bool:
        return self._stream.cancelled

    def done(self) -> bool:
        return self._stream.finished
