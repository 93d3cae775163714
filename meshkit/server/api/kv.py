"""etcdserverpb.KV: validate, call the server, map errors, fill the header."""

from __future__ import annotations

import grpc

from meshkit._internal.errors import EtcdError
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc
from meshkit.api.meshkitpb import internal_pb2 as ipb
from meshkit.server.api import validate
from meshkit.server.api.authctx import propose_as, read_as
from meshkit.server.api.errors import abort
from meshkit.server.apply import is_txn_readonly
from meshkit.server.etcdserver.server import EtcdServer


class KVService(rpc_pb2_grpc.KVServicer):
    def __init__(self, server: EtcdServer) -> None:
        self.s = server

    async def Range(self, request: pb.RangeRequest, context: grpc.aio.ServicerContext) -> pb.RangeResponse:
        s = self.s
        try:
            validate.check_range(request)
            if not request.serializable:
                await s.linearizable_barrier()
            resp = read_as(s, context, lambda ai: s.auth.check_range(ai, request.key, request.range_end),
                           lambda: s.applier.range(request))
        except EtcdError as e:
            await abort(context, e)
        s.header(resp.header)
        return resp

    async def Put(self, request: pb.PutRequest, context: grpc.aio.ServicerContext) -> pb.PutResponse:
        s = self.s
        try:
            validate.check_put(request)
            resp = await propose_as(s, context, ipb.InternalRequest(put=request))
        except EtcdError as e:
            await abort(context, e)
        s.header(resp.header)
        return resp  # type: ignore[no-any-return]

    async def DeleteRange(
        self, request: pb.DeleteRangeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteRangeResponse:
        s = self.s
        try:
            validate.check_delete(request)
            resp = await propose_as(s, context, ipb.InternalRequest(delete_range=request))
        except EtcdError as e:
            await abort(context, e)
        s.header(resp.header)
        return resp  # type: ignore[no-any-return]

    async def Txn(self, request: pb.TxnRequest, context: grpc.aio.ServicerContext) -> pb.TxnResponse:
        s = self.s
        try:
            validate.check_txn(request, s.settings.max_txn_ops)
            if is_txn_readonly(request):
                # Read-only txns never enter the log (etcd does the same).
                if not _txn_serializable(request):
                    await s.linearizable_barrier()
                resp = read_as(s, context, lambda ai: s.auth.check_txn(ai, request),
                               lambda: s.applier.txn_readonly(request))
            else:
                resp = await propose_as(s, context, ipb.InternalRequest(txn=request))
        except EtcdError as e:
            await abort(context, e)
        s.header(resp.header)
        return resp  # type: ignore[no-any-return]

    async def Compact(
        self, request: pb.CompactionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompactionResponse:
        s = self.s
        try:
            resp = await propose_as(s, context, ipb.InternalRequest(compaction=request))
        except EtcdError as e:
            await abort(context, e)
        s.header(resp.header)
        return resp  # type: ignore[no-any-return]


def _txn_serializable(r: pb.TxnRequest) -> bool:
    # etcd: serializable only if every op is a serializable range (a nested
    # txn makes the whole txn linearizable).
    for op in (*r.success, *r.failure):
        if op.WhichOneof("request") != "request_range" or not op.request_range.serializable:
            return False
    return True
