"""v3electionpb.Election: Campaign, Proclaim, Leader, Observe, Resign (etcd 3.4's semantics).

etcd serves this service with its Go ``concurrency.Election`` run against a client
connected to itself; meshkit runs the same algorithm on its own internals through
:class:`~meshkit.server.api.lock.ServerKV`:

* Campaign: key = name + "/" + lease id in hex, put with the lease if its create
  revision is 0 (a different value on an existing key is proclaimed); then wait
  until every older key of the prefix is deleted. Lease 0 means a fresh lease of
  60 s that nobody keeps alive, as etcd's ``NewSession``. A canceled campaign
  resigns.
* Proclaim / Resign: a txn guarded by the leader key's create revision
  (``election: not leader`` when it no longer matches; Resign succeeds anyway).
* Leader: the oldest key of the prefix (``election: no leader`` when none).
* Observe: the current leader, then every new value of its key, then the next
  leader once it is deleted, in order.

Errors answer gRPC UNKNOWN with the text, as etcd's handlers do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from meshkit._internal.errors import MeshkitError
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.v3electionpb import v3election_pb2 as epb
from meshkit.api.v3electionpb import v3election_pb2_grpc
from meshkit.server.api.lock import (
    CALLER,
    ServerKV,
    ServiceError,
    abort_unknown,
    first_create,
    kv_to_pb,
)
from meshkit.server.etcdserver.server import EtcdServer
from meshkit.server.mvcc.kv import EventType
from meshkit.server.mvcc.watchable import prefix_end

_CMP = pb.Compare


def _missing_leader() -> ServiceError:
    return ServiceError('"leader" field must be provided')


def _not_leader() -> ServiceError:
    return ServiceError("election: not leader")


def _is_owner(key: bytes, rev: int) -> pb.Compare:
    return _CMP(key=key, target=_CMP.CREATE, result=_CMP.EQUAL, create_revision=rev)


class ElectionService(v3election_pb2_grpc.ElectionServicer):
    def __init__(self, server: EtcdServer) -> None:
        self.s = server
        self.kv = ServerKV(server)

    async def _proclaim(self, key: bytes, rev: int, lease: int, value: bytes) -> pb.TxnResponse:
        resp = await self.kv.txn(pb.TxnRequest(
            compare=[_is_owner(key, rev)],
            success=[pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, lease=lease))],
        ))
        if not resp.succeeded:
            raise _not_leader()
        return resp

    async def _resign(self, key: bytes, rev: int) -> pb.TxnResponse:
        return await self.kv.txn(pb.TxnRequest(
            compare=[_is_owner(key, rev)],
            success=[pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key))],
        ))

    async def Campaign(
        self, request: epb.CampaignRequest, context: grpc.aio.ServicerContext
    ) -> epb.CampaignResponse:
        CALLER.set(context)
        kv = self.kv
        key = b""
        rev = 0
        elected = False
        canceled = False
        try:
            lease = await kv.session_lease(request.lease)
            pfx = bytes(request.name) + b"/"
            key = pfx + f"{lease:x}".encode()
            resp = await kv.txn(pb.TxnRequest(
                compare=[_CMP(key=key, target=_CMP.CREATE, result=_CMP.EQUAL, create_revision=0)],
                success=[pb.RequestOp(request_put=pb.PutRequest(key=key, value=request.value, lease=lease))],
                failure=[pb.RequestOp(request_range=pb.RangeRequest(key=key))],
            ))
            rev = resp.header.revision
            if not resp.succeeded:
                existing = resp.responses[0].response_range.kvs[0]
                rev = existing.create_revision
                if existing.value != request.value:
                    try:
                        await self._proclaim(key, rev, lease, request.value)
                    except MeshkitError:
                        with contextlib.suppress(MeshkitError):
                            await self._resign(key, rev)
                        raise
            try:
                await kv.wait_deletes(pfx, rev - 1)
            except asyncio.CancelledError:
                canceled = True
                raise
            elected = True
            return epb.CampaignResponse(
                header=resp.header,
                leader=epb.LeaderKey(name=request.name, key=key, rev=rev, lease=lease),
            )
        except MeshkitError as e:
            await abort_unknown(context, e)
            raise AssertionError("context.abort returned") from e
        finally:
            if canceled and key and not elected:
                # etcd: a campaign whose context ends resigns.
                with contextlib.suppress(MeshkitError, asyncio.CancelledError):
                    await asyncio.shield(self._resign(key, rev))

    async def Proclaim(
        self, request: epb.ProclaimRequest, context: grpc.aio.ServicerContext
    ) -> epb.ProclaimResponse:
        CALLER.set(context)
        try:
            if not request.HasField("leader"):
                raise _missing_leader()
            ld = request.leader
            lease = await self.kv.session_lease(ld.lease)
            resp = await self._proclaim(ld.key, ld.rev, lease, request.value)
        except MeshkitError as e:
            await abort_unknown(context, e)
            raise AssertionError("context.abort returned") from e
        return epb.ProclaimResponse(header=resp.header)

    async def Resign(self, request: epb.ResignRequest, context: grpc.aio.ServicerContext) -> epb.ResignResponse:
        CALLER.set(context)
        try:
            if not request.HasField("leader"):
                raise _missing_leader()
            ld = request.leader
            await self.kv.session_lease(ld.lease)
            resp = await self._resign(ld.key, ld.rev)
        except MeshkitError as e:
            await abort_unknown(context, e)
            raise AssertionError("context.abort returned") from e
        return epb.ResignResponse(header=resp.header)

    async def Leader(self, request: epb.LeaderRequest, context: grpc.aio.ServicerContext) -> epb.LeaderResponse:
        CALLER.set(context)
        try:
            pfx = bytes(request.name) + b"/"
            resp = await self.kv.range(first_create(pfx).request_range)
            if not resp.kvs:
                raise ServiceError("election: no leader")
        except MeshkitError as e:
            await abort_unknown(context, e)
            raise AssertionError("context.abort returned") from e
        return epb.LeaderResponse(header=resp.header, kv=resp.kvs[0])

    async def Observe(
        self, request: epb.LeaderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[epb.LeaderResponse]:
        CALLER.set(context)
        # etcd's observe ends the stream (no error) when a read or watch fails.
        with contextlib.suppress(MeshkitError):
            async for resp in self._observe(bytes(request.name) + b"/"):
                yield resp

    async def _observe(self, pfx: bytes) -> AsyncIterator[epb.LeaderResponse]:
        kv = self.kv
        s = self.s
        while True:  # one round per leader: ends with the stream (client cancel, server stop)
            got = await kv.range(first_create(pfx).request_range)
            if got.kvs:
                hdr, leader = got.header, got.kvs[0]
            else:
                # Wait for the first put on the prefix (deletes are skipped).
                found: Any = None
                async with kv.watch(pfx, prefix_end(pfx), got.header.revision) as w:
                    while found is None:
                        for ev in await w.next():
                            if ev.type == EventType.PUT:
                                found = ev.kv
                                break
                leader = kv_to_pb(found)
                hdr = pb.ResponseHeader()
                s.header(hdr, revision=found.mod_revision)
            yield epb.LeaderResponse(header=hdr, kv=leader)
            async with kv.watch(leader.key, b"", hdr.revision + 1) as w:
                deleted = False
                while not deleted:
                    events = await w.next()
                    for ev in events:
                        if ev.type == EventType.DELETE:
                            deleted = True
                            break
                        h = pb.ResponseHeader()
                        s.header(h, revision=w.revision)
                        yield epb.LeaderResponse(header=h, kv=kv_to_pb(ev.kv))


def add_election_service(server: Any, etcd: EtcdServer) -> None:
    """Register v3electionpb.Election on ``server`` (a grpc.aio server or embed's wrapper)."""
    v3election_pb2_grpc.add_ElectionServicer_to_server(ElectionService(etcd), server)
