"""etcdserverpb.Maintenance and etcdserverpb.Cluster.

RPCs not listed here answer gRPC UNIMPLEMENTED (the servicer base class); see
docs/compat.md for their status.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import grpc

from meshkit._internal.errors import EtcdError
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc
from meshkit.api.meshkitpb import internal_pb2 as ipb
from meshkit.server.api.authctx import check_admin, check_admin_maintenance
from meshkit.server.api.errors import abort
from meshkit.server.backend.bbolt import hash_from_sqlite, snapshot_from_sqlite
from meshkit.server.etcdserver.alarms import alarm_text
from meshkit.server.etcdserver.server import EtcdServer

# The etcd release whose API meshkit speaks; clients gate features on it.
ETCD_API_VERSION = "3.4.0"
# etcd streams its snapshot in 32 KiB blobs.
SNAPSHOT_CHUNK = 32 * 1024


class MaintenanceService(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, server: EtcdServer) -> None:
        self.s = server

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        s = self.s
        resp = pb.StatusResponse(
            version=ETCD_API_VERSION,
            dbSize=s.backend.size(),
            dbSizeInUse=s.backend.size_in_use(),
            leader=s.leader_id,
            raftIndex=s.committed_index,
            raftTerm=s.term,
            raftAppliedIndex=s.applied_index,
            isLearner=s.is_learner(),
            errors=[alarm_text(m) for m in s.alarms.get()],
        )
        s.header(resp.header)
        return resp

    async def Alarm(self, request: pb.AlarmRequest, context: grpc.aio.ServicerContext) -> pb.AlarmResponse:
        # Every action (GET too) goes through the log, as etcd 3.4's.
        try:
            resp: pb.AlarmResponse = await self.s.propose(ipb.InternalRequest(alarm=request))
        except EtcdError as e:
            await abort(context, e)
        resp.ClearField("header")  # etcd 3.4 answers Alarm with no header
        return resp


    async def Hash(self, request: pb.HashRequest, context: grpc.aio.ServicerContext) -> pb.HashResponse:
        """etcd 3.4's Hash: CRC-32C over the backend's buckets minus the consistent
        index (``bbolt.buckets_hash``), computed on a copy taken between applies;
        the header revision is the store's at that copy (docs/snapshot.md)."""
        s = self.s
        try:
            check_admin_maintenance(s, context)
        except EtcdError as e:
            await abort(context, e)
        s.store.commit()
        rev = s.store.current_revision
        image = s.backend.snapshot_bytes()
        h = await asyncio.to_thread(hash_from_sqlite, image)
        resp = pb.HashResponse(hash=h)
        s.header(resp.header, rev)
        return resp

    async def HashKV(self, request: pb.HashKVRequest, context: grpc.aio.ServicerContext) -> pb.HashKVResponse:
        s = self.s
        try:
            check_admin_maintenance(s, context)
            h, compact_rev = s.store.hash_kv(request.revision)
        except EtcdError as e:
            await abort(context, e)
        resp = pb.HashKVResponse(hash=h, compact_revision=compact_rev)
        s.header(resp.header)
        return resp

    async def Snapshot(
        self, request: pb.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SnapshotResponse]:
        """etcd's framing: the bbolt file in 32 KiB blobs with ``remaining_bytes``
        counting down to 0, then one more message whose blob is the sha256 of
        the file (remaining 0). No header, as etcd 3.4 (docs/snapshot.md)."""
        s = self.s
        try:
            check_admin_maintenance(s, context)
        except EtcdError as e:
            await abort(context, e)
        # A consistent copy taken between applies on the loop thread; the bbolt
        # file is built from that copy in a worker thread.
        s.store.commit()
        image = s.backend.snapshot_bytes()
        with tempfile.TemporaryFile(prefix="meshkit-snapshot-") as f:
            size = await asyncio.to_thread(snapshot_from_sqlite, image, f)
            del image
            f.seek(0)
            h = hashlib.sha256()
            sent = 0
            while sent < size:  # bounded: every pass sends a non-empty chunk
                chunk = f.read(min(SNAPSHOT_CHUNK, size - sent))
                if not chunk:
                    raise RuntimeError(f"snapshot file ended at {sent} of {size} bytes")
                sent += len(chunk)
                h.update(chunk)
                yield pb.SnapshotResponse(remaining_bytes=size - sent, blob=chunk)
            yield pb.SnapshotResponse(remaining_bytes=0, blob=h.digest())

    async def Defragment(
        self, request: pb.DefragmentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DefragmentResponse:
        s = self.s
        try:
            check_admin_maintenance(s, context)
        except EtcdError as e:
            await abort(context, e)
        # Runs on the loop thread between applies, like etcd's defrag holding
        # the backend lock: requests wait, none see a half-rewritten file.
        s.store.commit()
        s.backend.defragment()
        s.db_size = s.backend.size()
        return pb.DefragmentResponse()  # no header, as etcd 3.4


    async def MoveLeader(
        self, request: pb.MoveLeaderRequest, context: grpc.aio.ServicerContext
    ) -> pb.MoveLeaderResponse:
        s = self.s
        # etcd 3.4 checks no permission here (only that this member leads) and
        # answers with no header.
        try:
            await s.move_leader(request.targetID)
        except EtcdError as e:
            await abort(context, e)
        return pb.MoveLeaderResponse()


class ClusterService(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, server: EtcdServer) -> None:
        self.s = server

    def _header(self, h: pb.ResponseHeader) -> None:
        """etcd's ClusterServer header: cluster id, member id and raft term, no revision."""
        h.cluster_id = self.s.cluster_id
        h.member_id = self.s.member_id
        h.raft_term = self.s.node.term

    def _members(self, resp: Any) -> None:
        for m in sorted(self.s.members.values(), key=lambda m: m.id):
            resp.members.add(
                ID=m.id, name=m.name, peerURLs=list(m.peer_urls),
                clientURLs=list(m.client_urls), isLearner=m.is_learner,
            )

    async def MemberList(
        self, request: pb.MemberListRequest, context: grpc.aio.ServicerContext
    ) -> pb.MemberListResponse:
        resp = pb.MemberListResponse()
        self._members(resp)
        self._header(resp.header)
        return resp

    async def MemberAdd(
        self, request: pb.MemberAddRequest, context: grpc.aio.ServicerContext
    ) -> pb.MemberAddResponse:
        s = self.s
        try:
            check_admin(s, context)
            m, _ = await s.member_add(list(request.peerURLs), request.isLearner)
        except EtcdError as e:
            await abort(context, e)
        resp = pb.MemberAddResponse()
        resp.member.ID = m.id
        resp.member.peerURLs.extend(m.peer_urls)
        resp.member.isLearner = m.is_learner
        self._members(resp)
        self._header(resp.header)
        return resp

    async def MemberRemove(
        self, request: pb.MemberRemoveRequest, context: grpc.aio.ServicerContext
    ) -> pb.MemberRemoveResponse:
        s = self.s
        try:
            check_admin(s, context)
            await s.member_remove(request.ID)
        except EtcdError as e:
            await abort(context, e)
        resp = pb.MemberRemoveResponse()
        self._members(resp)
        self._header(resp.header)
        return resp

    async def MemberUpdate(
        self, request: pb.MemberUpdateRequest, context: grpc.aio.ServicerContext
    ) -> pb.MemberUpdateResponse:
        s = self.s
        try:
            check_admin(s, context)
            await s.member_update(request.ID, list(request.peerURLs))
        except EtcdError as e:
            await abort(context, e)
        resp = pb.MemberUpdateResponse()
        self._members(resp)
        self._header(resp.header)
        return resp

    async def MemberPromote(
        self, request: pb.MemberPromoteRequest, context: grpc.aio.ServicerContext
    ) -> pb.MemberPromoteResponse:
        s = self.s
        try:
            check_admin(s, context)
            await s.member_promote(request.ID)
        except EtcdError as e:
            await abort(context, e)
        resp = pb.MemberPromoteResponse()
        self._members(resp)
        self._header(resp.header)
        return resp
