"""Watches: many watchers multiplexed over ONE bidirectional Watch stream per client.

The hub owns the stream. Create requests carry ``watch_id = 0`` so the server picks
the id (as etcd 3.4's own client does); the server answers creates in the order it
got them, so the hub matches each ``created`` response to the oldest pending
create. Each watcher remembers the next revision it needs: ``last delivered event's
mod_revision + 1`` (or ``header.revision + 1`` after a progress notification or the
creation of a "from now" watch). When the stream fails (connection dropped, member
stopped, ``no leader``), the hub reconnects to the next endpoint and re-creates every
watcher from its next revision: no event lost, none delivered twice. Fragmented
responses are joined before delivery, so a delivery always holds whole revisions.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import grpc

from meshkit._internal.errors import EtcdError, InvalidAuthTokenError, MeshkitError
from meshkit.api.etcdserverpb import rpc_pb2
from meshkit.client.errors import (
    ConnectionFailedError,
    WatchCanceledError,
    WatchCompactedError,
    translate,
)
from meshkit.client.kv import KeyLike, key_range
from meshkit.client.types import Event, ResponseHeader, WatchResponse

if TYPE_CHECKING:
    from meshkit.client.client import Client

FilterName: TypeAlias = Literal["noput", "nodelete"]
_FILTERS = {"noput": rpc_pb2.WatchCreateRequest.NOPUT, "nodelete": rpc_pb2.WatchCreateRequest.NODELETE}

_Item: TypeAlias = "WatchResponse | BaseException | None"


class Watcher:
    """One watch: ``async for resp in watcher`` (or ``async with watcher: ...``).

    Iteration raises ``WatchCompactedError`` when the needed revision was compacted,
    ``WatchCanceledError`` when the server canceled the watch for another reason, and
    stops after ``cancel()``.
    """

    def __init__(
        self, hub: WatchHub, key: bytes, range_end: bytes, *, start_revision: int, prev_kv: bool,
        filters: Sequence[int], progress_notify: bool, fragment: bool,
    ) -> None:
        self._hub = hub
        self.key = key
        self.range_end = range_end
        self.start_revision = start_revision
        self.prev_kv = prev_kv
        self.filters = list(filters)
        self.progress_notify = progress_notify
        self.fragment = fragment
        # The revision this watcher needs next (0: "from now", not yet known).
        self.next_revision = start_revision
        self.watch_id = -1
        self._created = asyncio.Event()
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._frag: list[Event] = []
        self._done = False  # no more items will be queued
        self.closed = False  # cancel() was called

    # -- the stream side (called by the hub) --

    def create_request(self) -> rpc_pb2.WatchRequest:
        return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=self.key, range_end=self.range_end, start_revision=self.next_revision,
            progress_notify=self.progress_notify, filters=self.filters,  # type: ignore[arg-type]
            prev_kv=self.prev_kv, fragment=self.fragment,
        ))

    def _finish(self, item: BaseException | None) -> None:
        if not self._done:
            self._done = True
            self._created.set()
            self._queue.put_nowait(item)

    def _deliver(self, resp: WatchResponse) -> None:
        if not self._done:
            self._queue.put_nowait(resp)

    # -- the user side --

    async def wait_created(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until the server has created the watch (first time only)."""
        await asyncio.wait_for(self._created.wait(), timeout)

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> WatchResponse:
        if self._done and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def __aenter__(self) -> Watcher:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.cancel()

    async def cancel(self) -> None:
        """Stop the watch (idempotent); iteration ends after what is already queued."""
        if self.closed:
            return
        self.closed = True
        self._hub._remove(self)
        self._finish(None)


class WatchHub:
    """The one Watch stream of a client and the watchers riding on it."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._watchers: set[Watcher] = set()
        self._pending: collections.deque[Watcher] = collections.deque()
        self._by_id: dict[int, Watcher] = {}
        self._outbox: asyncio.Queue[rpc_pb2.WatchRequest | Watcher] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.connects = 0  # streams opened so far (for tests and metrics)
        self.fragments = 0  # fragment responses joined so far

    def add(
        self, key: KeyLike, range_end: KeyLike | None, *, prefix: bool, from_key: bool,
        start_revision: int, prev_kv: bool, filters: Sequence[FilterName], progress_notify: bool,
        fragment: bool,
    ) -> Watcher:
        k, end = key_range(key, range_end, prefix=prefix, from_key=from_key)
        try:
            fl = [_FILTERS[f] for f in filters]
        except KeyError as e:
            raise ValueError(f"unknown watch filter {e.args[0]!r} (noput, nodelete)") from None
        if start_revision < 0:
            raise ValueError("start_revision must be >= 0")
        w = Watcher(self, k, end, start_revision=start_revision, prev_kv=prev_kv, filters=fl,
                    progress_notify=progress_notify, fragment=fragment)
        self._watchers.add(w)
        if self._outbox is not None:
            self._outbox.put_nowait(w)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="meshkit-watch-hub")
        return w

    def _remove(self, w: Watcher) -> None:
        self._watchers.discard(w)
        if w.watch_id >= 0 and self._by_id.get(w.watch_id) is w:
            del self._by_id[w.watch_id]
            if self._outbox is not None:
                self._outbox.put_nowait(rpc_pb2.WatchRequest(
                    cancel_request=rpc_pb2.WatchCancelRequest(watch_id=w.watch_id)))
        # A watcher still pending is canceled when its "created" arrives.

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in list(self._watchers):
            w._finish(None)
        self._watchers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _fail_all(self, err: BaseException) -> None:
        for w in list(self._watchers):
            w._finish(err)
        self._watchers.clear()

    # -- the stream loop --

    async def _run(self) -> None:
        client = self._client
        pool = client._pool
        loop = asyncio.get_running_loop()
        pause = 0.05
        failed_once = False
        while not self._closed:
            if not self._watchers:
                self._wake.clear()
                await self._wake.wait()
                continue
            ep = pool.current
            if not await pool.ready(ep, client.dial_timeout, wait_failed=failed_once):
                pool.advance(ep)
                failed_once = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            try:
                md = await client._metadata(ep, loop.time() + client.timeout)
            except MeshkitError as e:
                if isinstance(e, ConnectionFailedError):
                    pool.advance(ep)
                    await asyncio.sleep(pause)
                    continue
                self._fail_all(e)
                continue
            call = pool.stubs(ep).watch.Watch(metadata=md)
            self.connects += 1
            # Fresh stream: every live watcher is (re)created from its next revision.
            self._pending.clear()
            self._by_id.clear()
            outbox: asyncio.Queue[rpc_pb2.WatchRequest | Watcher] = asyncio.Queue()
            for w in self._watchers:
                w.watch_id = -1
                w._frag.clear()
                outbox.put_nowait(w)
            self._outbox = outbox
            writer = loop.create_task(self._writer(call, outbox))
            err: MeshkitError | None = None
            try:
                async for resp in call:
                    pause = 0.05
                    failed_once = False
                    self._dispatch(resp)
                err = ConnectionFailedError("watch stream closed by the server", endpoint=ep)
            except grpc.aio.AioRpcError as e:
                err = translate(e, ep)
            finally:
                self._outbox = None
                writer.cancel()
                with contextlib.suppress(BaseException):
                    await writer
                call.cancel()
            if self._closed:
                return
            if isinstance(err, InvalidAuthTokenError) and client._user is not None:
                client._token = None
                continue
            if isinstance(err, ConnectionFailedError) or (
                isinstance(err, EtcdError) and err.grpc_code == grpc.StatusCode.UNAVAILABLE
            ):
                pool.advance(ep)
                failed_once = True
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            self._fail_all(err)

    async def _writer(self, call: Any, outbox: asyncio.Queue[rpc_pb2.WatchRequest | Watcher]) -> None:
        while True:
            item = await outbox.get()
            if isinstance(item, Watcher):
                if item.closed or item not in self._watchers:
                    continue
                self._pending.append(item)
                await call.write(item.create_request())
            else:
                await call.write(item)

    def _dispatch(self, resp: rpc_pb2.WatchResponse) -> None:
        header = ResponseHeader.from_pb(resp.header)
        if resp.created:
            if not self._pending:
                return  # a create we did not send: ignore
            w = self._pending.popleft()
            if resp.canceled or resp.watch_id == -1:
                self._watchers.discard(w)
                if resp.compact_revision:
                    w._finish(WatchCompactedError(resp.compact_revision))
                else:
                    w._finish(WatchCanceledError(resp.cancel_reason))
                return
            w.watch_id = resp.watch_id
            if w.closed or w not in self._watchers:
                w.watch_id = -1
                if self._outbox is not None:
                    self._outbox.put_nowait(rpc_pb2.WatchRequest(
                        cancel_request=rpc_pb2.WatchCancelRequest(watch_id=resp.watch_id)))
                return
            self._by_id[resp.watch_id] = w
            if w.next_revision == 0:
                w.next_revision = header.revision + 1
            w._created.set()
            if not resp.events:
                return
        w_or_none = self._by_id.get(resp.watch_id)
        if w_or_none is None:
            return
        w = w_or_none
        if resp.canceled:
            del self._by_id[resp.watch_id]
            self._watchers.discard(w)
            if resp.compact_revision:
                w._finish(WatchCompactedError(resp.compact_revision, watch_id=resp.watch_id))
            else:
                w._finish(WatchCanceledError(resp.cancel_reason, watch_id=resp.watch_id))
            return
        events = [Event.from_pb(e) for e in resp.events]
        if resp.fragment:
            self.fragments += 1
            w._frag.extend(events)
            return
        if w._frag:
            events = w._frag + events
            w._frag = []
        if events:
            rev = events[-1].kv.mod_revision
            if rev < w.next_revision:
                # Already delivered (a server replaying older history): drop the old part.
                events = [e for e in events if e.kv.mod_revision >= w.next_revision]
                if not events:
                    return
            w.next_revision = events[-1].kv.mod_revision + 1
        else:
            # A progress notification: everything up to header.revision was sent.
            w.next_revision = max(w.next_revision, header.revision + 1)
        w._deliver(WatchResponse(header, resp.watch_id, events, compact_revision=resp.compact_revision))
