"""v3lockpb.Lock: Lock and Unlock, with etcd 3.4's semantics.

etcd serves this service with its Go ``concurrency.Mutex`` run against a client
connected to itself. meshkit runs the same algorithm against its own server
internals (:class:`ServerKV`: the same requests a client would send, through the
same validation, log and applier), so the keys, revisions, waits and answers are
etcd's:

* Lock: a session on ``request.lease`` (a fresh lease of 60 s, never kept alive,
  when it is 0, as etcd's ``NewSession``); key = name + "/" + lease id in hex,
  created if its create revision is 0; the caller waits until every key of the
  prefix created before its own is deleted. A call that fails or is canceled
  while waiting deletes its key (etcd: ``m.Unlock(client.Ctx())``).
* Unlock: delete the key.

Errors come back as etcd's do from this service: gRPC ``UNKNOWN`` with the
error's text (``etcdserver: requested lease not found``, ...), because etcd's
handler returns the error its internal client saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from meshkit._internal.errors import CompactedError, EtcdError, MeshkitError, StoppedError
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.meshkitpb import internal_pb2 as ipb
from meshkit.api.mvccpb import kv_pb2
from meshkit.api.v3lockpb import v3lock_pb2 as lpb
from meshkit.api.v3lockpb import v3lock_pb2_grpc
from meshkit.server.api import validate
from meshkit.server.api.authctx import propose_as, read_as
from meshkit.server.apply import is_txn_readonly
from meshkit.server.auth import AuthInfo
from meshkit.server.etcdserver.server import EtcdServer
from meshkit.server.mvcc import KeyValue
from meshkit.server.mvcc.kv import EventType
from meshkit.server.mvcc.watchable import prefix_end

# The gRPC call a lock/election handler serves (each call runs in its own task).
CALLER: contextvars.ContextVar[grpc.aio.ServicerContext | None] = contextvars.ContextVar("caller", default=None)
T = TypeVar("T")

# etcd's concurrency.NewSession default TTL (used when a request names lease 0).
DEFAULT_SESSION_TTL = 60

_CMP = pb.Compare
_ASCEND = pb.RangeRequest.ASCEND
_DESCEND = pb.RangeRequest.DESCEND
_CREATE = pb.RangeRequest.CREATE


class ServiceError(MeshkitError):
    """An error etcd's lock/election services answer with gRPC UNKNOWN and this text."""


def kv_to_pb(kv: KeyValue) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(key=kv.key, create_revision=kv.create_revision, mod_revision=kv.mod_revision,
                           version=kv.version, value=kv.value, lease=kv.lease)


async def abort_unknown(context: grpc.aio.ServicerContext, err: MeshkitError) -> None:
    """Answer as etcd's lock/election handlers do: the error text under gRPC UNKNOWN."""
    detail = err.detail if isinstance(err, EtcdError) else str(err)
    await context.abort(grpc.StatusCode.UNKNOWN, detail)


def first_create(prefix: bytes) -> pb.RequestOp:
    """etcd's ``OpGet(prefix, WithFirstCreate()...)``: the oldest key of the prefix."""
    return pb.RequestOp(request_range=pb.RangeRequest(
        key=prefix, range_end=prefix_end(prefix), limit=1, sort_order=_ASCEND, sort_target=_CREATE))


class ServerKV:
    """The KV, lease and watch calls of an etcd client, served by the member itself.

    Every call goes the way the gRPC handler for it goes (validation, the Raft log
    for writes, a linearizable barrier for reads), so what the lock and election
    services do is exactly what a client of this member could do.
    """

    def __init__(self, server: EtcdServer) -> None:
        self.s = server

    # etcd runs these services on a client that forwards the caller's token, so
    # every operation is checked as the caller (CALLER holds the gRPC call).
    async def _propose(self, req: ipb.InternalRequest) -> Any:
        context = CALLER.get()
        if context is None:
            return await self.s.propose(req)
        return await propose_as(self.s, context, req)

    def _read(self, check: Callable[[AuthInfo | None], None], get: Callable[[], T]) -> T:
        context = CALLER.get()
        if context is None:
            return get()
        return read_as(self.s, context, check, get)

    async def txn(self, req: pb.TxnRequest) -> pb.TxnResponse:
        s = self.s
        validate.check_txn(req, s.settings.max_txn_ops)
        if is_txn_readonly(req):
            await s.linearizable_barrier()
            resp: pb.TxnResponse = self._read(lambda ai: s.auth.check_txn(ai, req),
                                              lambda: s.applier.txn_readonly(req))
        else:
            resp = await self._propose(ipb.InternalRequest(txn=req))
        s.header(resp.header)
        return resp

    async def range(self, req: pb.RangeRequest) -> pb.RangeResponse:
        s = self.s
        validate.check_range(req)
        await s.linearizable_barrier()
        resp: pb.RangeResponse = self._read(lambda ai: s.auth.check_range(ai, req.key, req.range_end),
                                            lambda: s.applier.range(req))
        s.header(resp.header)
        return resp

    async def delete(self, key: bytes) -> pb.DeleteRangeResponse:
        s = self.s
        req = pb.DeleteRangeRequest(key=key)
        validate.check_delete(req)
        resp: pb.DeleteRangeResponse = await self._propose(ipb.InternalRequest(delete_range=req))
        s.header(resp.header)
        return resp

    async def grant(self, ttl: int) -> int:
        s = self.s
        req = pb.LeaseGrantRequest(TTL=ttl, ID=s.new_lease_id())
        resp: pb.LeaseGrantResponse = await self._propose(ipb.InternalRequest(lease_grant=req))
        if resp.error:
            raise ServiceError(resp.error)
        return int(resp.ID)

    async def session_lease(self, lease: int) -> int:
        """etcd's ``NewSession(WithLease(lease))`` then ``Orphan()``: the lease as given,
        or a fresh one of the default TTL that nobody keeps alive."""
        return lease if lease != 0 else await self.grant(DEFAULT_SESSION_TTL)

    def watch(self, key: bytes, range_end: bytes, start_revision: int) -> _Watch:
        s = self.s
        self._read(lambda ai: s.auth.check_range(ai, key, range_end), lambda: None)
        return _Watch(s, key, range_end, start_revision)

    async def wait_delete(self, key: bytes, rev: int) -> None:
        """etcd's ``waitDelete``: return at the first delete of ``key`` seen from ``rev``."""
        async with self.watch(key, b"", rev) as w:
            while True:
                for ev in await w.next():
                    if ev.type == EventType.DELETE:
                        return

    async def wait_deletes(self, prefix: bytes, max_create_rev: int) -> pb.ResponseHeader:
        """etcd's ``waitDeletes``: wait until no key of ``prefix`` created at or before
        ``max_create_rev`` is left; returns the header of the read that saw none."""
        req = pb.RangeRequest(key=prefix, range_end=prefix_end(prefix), limit=1, sort_order=_DESCEND,
                              sort_target=_CREATE, max_create_revision=max_create_rev)
        while True:  # each round waits for one older key to go: bounded by their number
            resp = await self.range(req)
            if not resp.kvs:
                return resp.header
            await self.wait_delete(resp.kvs[0].key, resp.header.revision)


class _Watch:
    """One watcher on the member's watchable store, as an async context manager."""

    def __init__(self, server: EtcdServer, key: bytes, range_end: bytes, start_revision: int) -> None:
        self._s = server
        self._stream = server.watchable.new_stream()
        self._key = key
        self._end = range_end
        self._rev = start_revision
        self.revision = 0  # the header revision of the last delivery

    async def __aenter__(self) -> _Watch:
        if self._stream.watch(self._key, self._end, self._rev) is None:
            self._stream.close()
            raise ServiceError("watch refused")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stream.close()

    async def next(self) -> list[Any]:
        """The events of the next delivery (may be empty: a created/progress answer)."""
        resp = await self._stream.get()
        if resp is None:
            raise StoppedError()
        if resp.canceled:
            if resp.compact_revision:
                raise CompactedError(compact_revision=resp.compact_revision)
            raise ServiceError(resp.cancel_reason or "watch canceled")
        self.revision = resp.revision
        return [we.event for we in resp.events]


class LockService(v3lock_pb2_grpc.LockServicer):
    def __init__(self, server: EtcdServer) -> None:
        self.s = server
        self.kv = ServerKV(server)

    async def Lock(self, request: lpb.LockRequest, context: grpc.aio.ServicerContext) -> lpb.LockResponse:
        CALLER.set(context)
        kv = self.kv
        key = b""
        acquired = False
        try:
            lease = await kv.session_lease(request.lease)
            pfx = bytes(request.name) + b"/"
            key = pfx + f"{lease:x}".encode()
            # etcd's Mutex.tryAcquire: one txn enqueues (or finds) our key and reads the owner.
            resp = await kv.txn(pb.TxnRequest(
                compare=[_CMP(key=key, target=_CMP.CREATE, result=_CMP.EQUAL, create_revision=0)],
                success=[pb.RequestOp(request_put=pb.PutRequest(key=key, lease=lease)), first_create(pfx)],
                failure=[pb.RequestOp(request_range=pb.RangeRequest(key=key)), first_create(pfx)],
            ))
            my_rev = resp.header.revision
            if not resp.succeeded:
                my_rev = resp.responses[0].response_range.kvs[0].create_revision
            owner = resp.responses[1].response_range.kvs
            if not owner or owner[0].create_revision == my_rev:
                acquired = True
                return lpb.LockResponse(header=resp.header, key=key)
            await kv.wait_deletes(pfx, my_rev - 1)
            # The session must still hold its key (a lease that expired while
            # waiting deleted it).
            got = await kv.range(pb.RangeRequest(key=key))
            if not got.kvs:
                raise ServiceError("mutex: session is expired")
            acquired = True
            return lpb.LockResponse(header=got.header, key=key)
        except MeshkitError as e:
            await abort_unknown(context, e)
            raise AssertionError("context.abort returned") from e
        finally:
            if key and not acquired:
                # etcd: a failed or canceled wait releases the waiter's key.
                with contextlib.suppress(MeshkitError, asyncio.CancelledError):
                    await asyncio.shield(kv.delete(key))

    async def Unlock(self, request: lpb.UnlockRequest, context: grpc.aio.ServicerContext) -> lpb.UnlockResponse:
        CALLER.set(context)
        try:
            resp = await self.kv.delete(request.key)
        except MeshkitError as e:
            await abort_unknown(context, e)
            raise AssertionError("context.abort returned") from e
        return lpb.UnlockResponse(header=resp.header)


def add_lock_service(server: Any, etcd: EtcdServer) -> None:
    """Register v3lockpb.Lock on ``server`` (a grpc.aio server or embed's wrapper)."""
    v3lock_pb2_grpc.add_LockServicer_to_server(LockService(etcd), server)
