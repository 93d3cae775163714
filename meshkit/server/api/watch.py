"""etcdserverpb.Watch: one bidirectional stream, many watches (etcd's serverWatchStream).

The request side (a task per stream) turns create/cancel/progress requests into
calls on the stream's :class:`~meshkit.server.mvcc.watchable.WatchStream`; the
handler itself is the send loop, writing what the watchable store queued.

Responses are written pre-encoded: an event's wire form is built once and shared
by every watcher that receives it (the method is registered with an identity
response serializer), so a put seen by a thousand watchers costs one encoding
and a thousand byte joins, not a thousand protobuf messages.

Like etcd, a half-closed request side leaves the stream serving its watches; the
watches end when the client cancels the call or the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from meshkit._internal.errors import (
    AuthOldRevisionError,
    EtcdError,
    InvalidAuthTokenError,
    UserEmptyError,
)
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.mvccpb import kv_pb2
from meshkit.server.api.authctx import auth_info
from meshkit.server.etcdserver.server import EtcdServer
from meshkit.server.mvcc import KeyValue
from meshkit.server.mvcc.watchable import Response, WatchableStore, WatchEvent, WatchStream

log = logging.getLogger("meshkit.server.watch")

# etcd's grpcOverheadBytes: fragments are cut at max-request-bytes + this.
GRPC_OVERHEAD_BYTES = 512 * 1024

_NOPUT = pb.WatchCreateRequest.NOPUT
# etcd 3.4 cancels a watch the user may not read with the gRPC error's text.
WATCH_DENIED = "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
_NODELETE = pb.WatchCreateRequest.NODELETE
_U64 = (1 << 64) - 1


def _varint(v: int) -> bytes:
    v &= _U64
    out = bytearray()
    while v > 0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _kv_pb(kv: KeyValue) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(
        key=kv.key, create_revision=kv.create_revision, mod_revision=kv.mod_revision,
        version=kv.version, value=kv.value, lease=kv.lease,
    )


def encode_event(we: WatchEvent, with_prev: bool) -> bytes:
    """The event as field 11 of a WatchResponse (tag, length, mvccpb.Event), cached."""
    if with_prev and we.prev is not None:
        raw: bytes | None = we.wire_prev
        if raw is None:
            ev = we.event
            msg = kv_pb2.Event(type=int(ev.type), kv=_kv_pb(ev.kv), prev_kv=_kv_pb(we.prev))  # type: ignore[arg-type]
            body = msg.SerializeToString()
            raw = we.wire_prev = b"\x5a" + _varint(len(body)) + body
        return raw
    raw = we.wire
    if raw is None:
        ev = we.event
        msg = kv_pb2.Event(type=int(ev.type), kv=_kv_pb(ev.kv))  # type: ignore[arg-type]
        body = msg.SerializeToString()
        raw = we.wire = b"\x5a" + _varint(len(body)) + body
    return raw  # type: ignore[no-any-return]


class Encoder:
    """Turns store responses into WatchResponse bytes, header cached per revision."""

    def __init__(self, server: EtcdServer, max_request_bytes: int) -> None:
        self._s = server
        self.limit = max_request_bytes + GRPC_OVERHEAD_BYTES
        self._hdr_key: tuple[int, int] = (-1, -1)
        self._hdr = b""

    def _header(self, revision: int) -> bytes:
        s = self._s
        term = s.term
        if self._hdr_key != (revision, term):
            h = pb.ResponseHeader(cluster_id=s.cluster_id, member_id=s.member_id,
                                  revision=revision, raft_term=term).SerializeToString()
            self._hdr = b"\x0a" + _varint(len(h)) + h
            self._hdr_key = (revision, term)
        return self._hdr

    def _base(self, r: Response, fragment: bool) -> bytes:
        parts = [self._header(r.revision)]
        if r.watch_id:
            parts.append(b"\x10" + _varint(r.watch_id))
        if r.created:
            parts.append(b"\x18\x01")
        if r.canceled:
            parts.append(b"\x20\x01")
        if r.compact_revision:
            parts.append(b"\x28" + _varint(r.compact_revision))
        if r.cancel_reason:
            reason = r.cancel_reason.encode()
            parts.append(b"\x32" + _varint(len(reason)) + reason)
        if fragment:
            parts.append(b"\x38\x01")
        return b"".join(parts)

    def encode(self, r: Response) -> list[bytes]:
        """One message, or several with fragment=true on all but the last when the
        watcher asked for fragments and the message would reach the limit
        (etcd's sendFragments)."""
        if not r.events:
            return [self._base(r, False)]
        with_prev = r.prev_kv
        evs = [encode_event(we, with_prev) for we in r.events]
        base = self._base(r, False)
        if not r.fragment or len(evs) < 2:
            return [base + b"".join(evs)]
        total = len(base) + sum(len(e) for e in evs)
        limit = self.limit
        if total < limit:
            return [base + b"".join(evs)]
        fbase = self._base(r, True)
        out: list[bytes] = []
        i, n = 0, len(evs)
        while i < n:
            size = len(fbase)
            j = i
            while j < n:
                size += len(evs[j])
                if j > i and size >= limit:
                    break
                j += 1
            out.append((fbase if j < n else base) + b"".join(evs[i:j]))
            i = j
        return out


class WatchService:
    """The Watch servicer; register with :func:`add_watch_service`."""

    def __init__(self, server: EtcdServer, watchable: WatchableStore | None = None) -> None:
        self.s = server
        self._watchable = watchable
        self._encoder = Encoder(server, server.settings.max_request_bytes)

    @property
    def watchable(self) -> WatchableStore:
        if self._watchable is not None:
            return self._watchable
        return self.s.watchable  # type: ignore[no-any-return,attr-defined]

    def _watch_refusal(self, context: grpc.aio.ServicerContext, c: pb.WatchCreateRequest) -> str | None:
        """etcd's isWatchPermitted (read permission on the watched range): the
        cancel reason of a refused create, None when permitted."""
        try:
            self.s.auth.check_range(auth_info(self.s, context), c.key, c.range_end)
        except EtcdError as e:
            return watch_cancel_reason(e)
        return None

    async def Watch(self, request_iterator: AsyncIterator[pb.WatchRequest],
                    context: grpc.aio.ServicerContext) -> None:
        stream = self.watchable.new_stream()
        recv = asyncio.get_running_loop().create_task(
            self._recv(request_iterator, stream, context), name="watch-recv")
        encode = self._encoder.encode
        try:
            while True:
                resp = await stream.get()
                if resp is None:
                    break
                for raw in encode(resp):
                    await context.write(raw)
        finally:
            stream.close()
            recv.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await recv

    async def _recv(self, requests: AsyncIterator[pb.WatchRequest], stream: WatchStream,
                    context: grpc.aio.ServicerContext | None = None) -> None:
        try:
            async for req in requests:
                await stream.wait_room()
                if stream.closed:
                    return
                kind = req.WhichOneof("request_union")
                if kind == "create_request":
                    c = req.create_request
                    refusal = self._watch_refusal(context, c) if context is not None else None
                    if refusal is not None:
                        stream.push(Response(-1, self.s.store.current_revision, created=True,
                                             canceled=True, cancel_reason=refusal))
                        continue
                    filters = set(c.filters)
                    stream.watch(
                        c.key, c.range_end, c.start_revision, c.watch_id,
                        prev_kv=c.prev_kv, progress_notify=c.progress_notify,
                        fragment=c.fragment, no_put=_NOPUT in filters,
                        no_delete=_NODELETE in filters,
                    )
                elif kind == "cancel_request":
                    stream.cancel(req.cancel_request.watch_id)
                elif kind == "progress_request":
                    stream.request_progress()
                # etcd ignores anything else rather than ending the stream
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the client went away mid-read
            log.debug("watch stream receive ended: %s", e)
        # A half-close keeps the watches running, as etcd's recvLoop does on EOF.


# etcd 3.4's watch names these auth errors in the cancel reason; any other is
# "permission denied". Go's status text: "rpc error: code = <Code> desc = <text>".
_REASON_CODES = {InvalidAuthTokenError: "Unauthenticated", AuthOldRevisionError: "InvalidArgument",
                 UserEmptyError: "InvalidArgument"}


def watch_cancel_reason(e: EtcdError) -> str:
    code = _REASON_CODES.get(type(e))
    return f"rpc error: code = {code} desc = {e.detail}" if code else WATCH_DENIED


def _identity(b: bytes) -> bytes:
    return b


def add_watch_service(server: grpc.aio.Server, etcd: EtcdServer,
                      watchable: WatchableStore | None = None) -> WatchService:
    svc = WatchService(etcd, watchable)
    handler: Callable[..., Any] = svc.Watch
    rpc = grpc.stream_stream_rpc_method_handler(
        handler, request_deserializer=pb.WatchRequest.FromString, response_serializer=_identity,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("etcdserverpb.Watch", {"Watch": rpc}),)
    )
    return svc


__all__ = ["Encoder", "WatchService", "add_watch_service", "encode_event"]
