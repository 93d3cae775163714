"""etcdserverpb.Lease: grant, revoke, keep-alive, time-to-live, list.

Follows etcd 3.4's ``v3rpc/lease.go`` and ``EtcdServer.Lease*``: grant and
revoke go through the log; renewals and time-to-live are the leader's (its
lessor is the one that tracks expiry); an unknown lease answers TTL -1 to
TimeToLive and TTL 0 (with its ID) to a keep-alive instead of an error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from meshkit._internal.errors import EtcdError, LeaseNotFoundError
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc
from meshkit.api.meshkitpb import internal_pb2 as ipb
from meshkit.server.api.authctx import auth_info, propose_as
from meshkit.server.api.errors import abort
from meshkit.server.etcdserver.server import EtcdServer


class LeaseService(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, server: EtcdServer) -> None:
        self.s = server

    async def LeaseGrant(
        self, request: pb.LeaseGrantRequest, context: grpc.aio.ServicerContext
    ) -> pb.LeaseGrantResponse:
        s = self.s
        try:
            if request.ID == 0:
                request.ID = s.new_lease_id()
            resp = await propose_as(s, context, ipb.InternalRequest(lease_grant=request))
        except EtcdError as e:
            await abort(context, e)
        s.header(resp.header)
        return resp  # type: ignore[no-any-return]

    async def LeaseRevoke(
        self, request: pb.LeaseRevokeRequest, context: grpc.aio.ServicerContext
    ) -> pb.LeaseRevokeResponse:
        s = self.s
        try:
            resp = await propose_as(s, context, ipb.InternalRequest(lease_revoke=request))
        except EtcdError as e:
            await abort(context, e)
        s.header(resp.header)
        return resp  # type: ignore[no-any-return]

    async def LeaseKeepAlive(
        self, request_iterator: AsyncIterator[pb.LeaseKeepAliveRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.LeaseKeepAliveResponse]:
        s = self.s
        async for req in request_iterator:
            # The header is taken before renewing (etcd: a client must never see
            # a renewal at a revision later than the lease's revocation).
            resp = pb.LeaseKeepAliveResponse(ID=req.ID)
            s.header(resp.header)
            try:
                resp.TTL = await s.lease_renew(req.ID)
            except LeaseNotFoundError:
                resp.TTL = 0
            except EtcdError as e:
                await abort(context, e)
            yield resp

    async def LeaseTimeToLive(
        self, request: pb.LeaseTimeToLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.LeaseTimeToLiveResponse:
        s = self.s
        try:
            # Forwarded to the leader from a follower (etcd: over the peer API).
            resp = await s.lease_time_to_live(request.ID, request.keys)
            if request.keys:
                # Listing the keys needs read permission on every one of them.
                ai = auth_info(s, context)
                for key in resp.keys:
                    s.auth.check_range(ai, key, b"")
        except EtcdError as e:
            await abort(context, e)
        s.header(resp.header)
        return resp

    async def LeaseLeases(
        self, request: pb.LeaseLeasesRequest, context: grpc.aio.ServicerContext
    ) -> pb.LeaseLeasesResponse:
        s = self.s
        resp = pb.LeaseLeasesResponse()
        add = resp.leases.add
        for le in s.lessor.leases():
            add().ID = le.id
        s.header(resp.header)
        return resp
