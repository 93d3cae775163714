"""The peer transport between processes: gRPC (HTTP/2) on the peer URLs.

Every member serves ``meshkitpb.Peer`` on its ``--listen-peer-urls``:
``Send(RaftBatch)`` carries Raft messages, ``Call(PeerRequest)`` the requests a
member forwards (lease renewals to the leader, ...). Each peer has one sender
task: it takes everything queued for that peer, sends it as one batch, and
waits for the answer before the next batch, so batches grow with load while
the number of RPCs does not. A failed send reports the peer unreachable to
the driver (and a failed snapshot as failed); the messages are dropped, Raft
resends what matters. https peer URLs are dialed with the member's peer TLS.

Connectivity (``active_since``, etcd's ``Transporter.ActiveSince``): etcd keeps
streams open to every peer, so a follower knows the other followers are up
although Raft sends them nothing. Here each peer also has a prober: when no
RPC to the peer was answered for ``probe_interval``, it sends an empty batch;
an answer marks the peer active (since then), a failure inactive. A batch
arriving from an inactive peer probes it at once.

Removed members: a receiver refuses the traffic of a member its driver knows
was removed (FAILED_PRECONDITION with etcd's text "the member has been
permanently removed from the cluster", where etcd answers 410 Gone); the
sender recognises that answer and tells its driver (``report_removed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import grpc

from meshkit.api.meshkitpb import raft_pb2 as rpb
from meshkit.server.clientport import ClientMux, ListenError
from meshkit.server.h2grpc import GrpcServer
from meshkit.server.raft import Message, MessageType
from meshkit.server.tls import TLSInfo
from meshkit.server.transport.base import (
    MAX_BATCH_MESSAGES,
    MAX_PENDING_MESSAGES,
    MEMBER_REMOVED,
    ClusterMismatchError,
    MemberGoneError,
    PeerHandler,
    PeerUnreachableError,
)
from meshkit.server.transport.codec import decode, encode

log = logging.getLogger("meshkit.transport")

SERVICE = "meshkitpb.Peer"
_SEND = f"/{SERVICE}/Send"
_CALL = f"/{SERVICE}/Call"
CLUSTER_MISMATCH = "cluster ID mismatch"
MEMBER_MISMATCH = "member ID mismatch"
# A peer no RPC was answered by for this long is probed (an empty batch).
PROBE_INTERVAL = 0.25
# Raft batches and snapshots: no limit below gRPC's 4-byte message length.
MAX_PEER_MESSAGE = 2**32 - 1
_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.so_reuseport", 0),
]


def url_target(url: str) -> str:
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname or u.port is None:
        raise ValueError(f"invalid peer URL {url!r}")
    host = "127.0.0.1" if u.hostname == "localhost" else u.hostname
    return f"{host}:{u.port}"


def _channel(owner: GrpcTransport, url: str) -> grpc.aio.Channel:
    """A channel to a peer URL: TLS with the member's peer certificate for https."""
    target = url_target(url)
    if urlsplit(url).scheme == "https":
        if owner.tls is None:
            raise PeerUnreachableError(f"peer URL {url} is https but no --peer-trusted-ca-file/--peer-cert-file is set")
        return grpc.aio.secure_channel(target, owner.tls.channel_credentials(), options=_OPTIONS)
    return grpc.aio.insecure_channel(target, options=_OPTIONS)


class _Peer:
    def __init__(self, owner: GrpcTransport, member_id: int, urls: Sequence[str]) -> None:
        self.owner = owner
        self.id = member_id
        self.urls = tuple(urls)
        self.queue: list[Message] = []
        self.wake = asyncio.Event()
        self.active_since: float | None = None
        self.last_ok = 0.0  # loop time of the last answered RPC
        self.probe_now = asyncio.Event()
        self.mismatch_logged = False
        self.channel = _channel(owner, self.urls[0])
        self.send_rpc = self.channel.unary_unary(
            _SEND, request_serializer=rpb.RaftBatch.SerializeToString,
            response_deserializer=rpb.RaftBatchAck.FromString,
        )
        self.call_rpc = self.channel.unary_unary(
            _CALL, request_serializer=rpb.PeerRequest.SerializeToString,
            response_deserializer=rpb.PeerResponse.FromString,
        )
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self._run(), name=f"peer-{member_id:x}")
        self.probe_task = loop.create_task(self._probe(), name=f"peer-probe-{member_id:x}")

    async def close(self) -> None:
        for t in (self.task, self.probe_task):
            t.cancel()
        for t in (self.task, self.probe_task):
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.channel.close(None)

    def _header(self, req: rpb.RaftBatch) -> None:
        handler = self.owner.handler
        req.header.cluster_id = handler.cluster_id
        req.header.frm = handler.member_id
        req.header.to = self.id

    def enqueue(self, m: Message) -> bool:
        if len(self.queue) >= MAX_PENDING_MESSAGES:
            return False
        self.queue.append(m)
        self.wake.set()
        return True

    async def _run(self) -> None:
        handler = self.owner.handler
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                batch = self.queue[:MAX_BATCH_MESSAGES]
                del self.queue[:MAX_BATCH_MESSAGES]
                req = rpb.RaftBatch()
                self._header(req)
                for m in batch:
                    encode(m, req.messages.add())
                has_snap = any(m.type == MessageType.MsgSnap for m in batch)
                timeout = self.owner.snapshot_timeout if has_snap else self.owner.send_timeout
                try:
                    await self.send_rpc(req, timeout=timeout)
                except grpc.aio.AioRpcError as e:
                    self._failed(e)
                    for m in batch:
                        if m.type == MessageType.MsgSnap:
                            handler.report_snapshot(self.id, True)
                    handler.report_unreachable(self.id)
                    continue
                self._answered(loop.time())
                for m in batch:
                    if m.type == MessageType.MsgSnap:
                        handler.report_snapshot(self.id, False)

    async def _probe(self) -> None:
        """Keep ``active_since`` current while Raft sends the peer nothing."""
        loop = asyncio.get_running_loop()
        interval = self.owner.probe_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self.probe_now.wait()
            self.probe_now.clear()
            if self.active_since is not None and loop.time() - self.last_ok < interval:
                continue  # Raft traffic was answered meanwhile
            req = rpb.RaftBatch()
            self._header(req)
            try:
                await self.send_rpc(req, timeout=self.owner.send_timeout)
            except grpc.aio.AioRpcError as e:
                if self._failed(e):
                    return
                continue
            self._answered(loop.time())

    def _answered(self, now: float) -> None:
        self.last_ok = now
        if self.active_since is None:
            self.active_since = now
            self.mismatch_logged = False
            log.info("peer %x became active", self.id)

    def _failed(self, e: grpc.aio.AioRpcError) -> bool:
        """An RPC to the peer failed; True if it refused us as a removed member."""
        if self.active_since is not None:
            log.info("peer %x became inactive (message send to peer failed)", self.id)
        self.active_since = None
        details = e.details() or ""
        if e.code() == grpc.StatusCode.FAILED_PRECONDITION and details == MEMBER_REMOVED:
            self.owner._refused_as_removed(self.id)
            return True
        if e.code() == grpc.StatusCode.FAILED_PRECONDITION and not self.mismatch_logged:
            self.mismatch_logged = True
            log.error("peer %x at %s refused us: %s", self.id, ",".join(self.urls), details)
        return False


class GrpcTransport:
    """``meshkitpb.Peer`` over gRPC on the given listen addresses."""

    def __init__(self, listen: Sequence[tuple[str, int]], *, send_timeout: float = 5.0,
                 snapshot_timeout: float = 60.0, tls: TLSInfo | None = None,
                 probe_interval: float = PROBE_INTERVAL) -> None:
        self.listen = list(listen)
        # --peer-cert-file etc.: the listener serves TLS and https peers are dialed with it
        self.tls = tls if tls is not None and not tls.empty else None
        self.ports: list[int] = []
        self.send_timeout = send_timeout
        self.snapshot_timeout = snapshot_timeout
        self.probe_interval = probe_interval
        self._peers: dict[int, _Peer] = {}
        self._removed_reported = False
        self._refused_logged: set[int] = set()  # removed members whose traffic was refused
        self._server: GrpcServer | None = None
        self._listener: ClientMux | None = None
        self._handler: PeerHandler | None = None
        self._closed = False

    @property
    def handler(self) -> PeerHandler:
        if self._handler is None:
            raise RuntimeError("transport not started")
        return self._handler

    async def start(self, handler: PeerHandler) -> None:
        self._handler = handler
        if not self.listen:
            return
        # meshkit's own gRPC server (as on the client port): peers dial it with
        # grpc.aio channels, which honour grpc_proxy (the fault tests' network)
        server = GrpcServer(max_receive_message_length=MAX_PEER_MESSAGE)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "Send": grpc.unary_unary_rpc_method_handler(
                self._on_send, request_deserializer=rpb.RaftBatch.FromString,
                response_serializer=rpb.RaftBatchAck.SerializeToString),
            "Call": grpc.unary_unary_rpc_method_handler(
                self._on_call, request_deserializer=rpb.PeerRequest.FromString,
                response_serializer=rpb.PeerResponse.SerializeToString),
        }),))
        tls = self.tls.grpc_ssl_context() if self.tls is not None else None
        listener = ClientMux(self.listen, grpc=server.protocol_factory, http=None, tls=tls, grpc_tls=tls)
        try:
            await listener.start()
        except ListenError as e:
            raise PeerUnreachableError(str(e)) from e
        self.ports = list(listener.ports)
        self._server = server
        self._listener = listener
        log.info("serving peer traffic on %s",
                 ", ".join(f"{h}:{p}" for (h, _), p in zip(self.listen, self.ports, strict=True)))

    async def __aenter__(self) -> GrpcTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            await self._listener.close_listeners()
        if self._server is not None:
            await self._server.stop(0.5)
        if self._listener is not None:
            await self._listener.close()
        for p in list(self._peers.values()):
            await p.close()
        self._peers.clear()

    # ---- sending ----------------------------------------------------------------

    def set_peer(self, member_id: int, urls: Sequence[str]) -> None:
        if self._closed or self._handler is None or member_id == self._handler.member_id or not urls:
            return
        old = self._peers.get(member_id)
        if old is not None:
            if old.urls == tuple(urls):
                return
            del self._peers[member_id]
            asyncio.get_running_loop().create_task(old.close())
        self._peers[member_id] = _Peer(self, member_id, urls)

    def remove_peer(self, member_id: int) -> None:
        p = self._peers.pop(member_id, None)
        if p is not None:
            asyncio.get_running_loop().create_task(p.close())

    def send(self, msgs: Sequence[Message]) -> None:
        handler = self.handler
        for m in msgs:
            p = self._peers.get(m.to)
            if p is None or not p.enqueue(m):
                if m.type == MessageType.MsgSnap:
                    handler.report_snapshot(m.to, True)
                handler.report_unreachable(m.to)

    def active_since(self, member_id: int) -> float | None:
        p = self._peers.get(member_id)
        return None if p is None else p.active_since

    async def call(self, to: int, req: rpb.PeerRequest, timeout: float) -> rpb.PeerResponse:  # noqa: ASYNC109
        p = self._peers.get(to)
        if p is None:
            raise PeerUnreachableError(f"member {to:x} is not a known peer")
        self._fill_header(req, to)
        try:
            resp: rpb.PeerResponse = await p.call_rpc(req, timeout=timeout)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION and e.details() == MEMBER_REMOVED:
                self._refused_as_removed(to)
                raise MemberGoneError(MEMBER_REMOVED) from e
            raise PeerUnreachableError(f"member {to:x}: {e.details()}") from e
        return resp

    async def fetch_members(self, urls: Sequence[str], req: rpb.PeerRequest,
                            timeout: float) -> rpb.PeerResponse:  # noqa: ASYNC109
        errors = []
        for url in urls:
            async with _channel(self, url) as ch:
                rpc = ch.unary_unary(_CALL, request_serializer=rpb.PeerRequest.SerializeToString,
                                     response_deserializer=rpb.PeerResponse.FromString)
                try:
                    resp: rpb.PeerResponse = await rpc(req, timeout=timeout)
                    return resp
                except grpc.aio.AioRpcError as e:
                    errors.append(f"{url}: {e.details()}")
        raise PeerUnreachableError("could not reach any peer: " + "; ".join(errors))

    def _fill_header(self, req: rpb.PeerRequest, to: int) -> None:
        req.header.cluster_id = self.handler.cluster_id
        req.header.frm = self.handler.member_id
        req.header.to = to

    def _refused_as_removed(self, by: int) -> None:
        """Peer ``by`` answered that this member was removed: tell the driver (once)."""
        if self._removed_reported or self._closed:
            return
        self._removed_reported = True
        log.error("peer %x refused our messages (%s)", by, MEMBER_REMOVED)
        self.handler.report_removed(by)

    # ---- receiving --------------------------------------------------------------

    def _check(self, h: rpb.PeerHeader) -> str | None:
        me = self.handler
        if h.cluster_id != me.cluster_id:
            return (f"{CLUSTER_MISMATCH}: member {me.member_id:x} is in cluster {me.cluster_id:x}, "
                    f"the sender {h.frm:x} in cluster {h.cluster_id:x}")
        if h.to and h.to != me.member_id:
            return f"{MEMBER_MISMATCH}: this is member {me.member_id:x}, not {h.to:x}"
        if h.frm and me.member_removed(h.frm):
            if h.frm not in self._refused_logged:
                self._refused_logged.add(h.frm)
                log.warning("rejected the messages from peer %x since it was removed", h.frm)
            return MEMBER_REMOVED
        return None

    async def _on_send(self, req: rpb.RaftBatch, context: grpc.aio.ServicerContext) -> rpb.RaftBatchAck:
        problem = self._check(req.header)
        if problem is not None:
            if problem != MEMBER_REMOVED:
                log.error("refused raft messages: %s", problem)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, problem)
        p = self._peers.get(req.header.frm)
        if p is not None and p.active_since is None:
            p.probe_now.set()  # the peer reaches us: see whether we reach it
        if req.messages:  # (an empty batch is a probe)
            self.handler.receive([decode(m) for m in req.messages])
        return rpb.RaftBatchAck()

    async def _on_call(self, req: rpb.PeerRequest, context: grpc.aio.ServicerContext) -> rpb.PeerResponse:
        # A joining member does not know the cluster id yet: only "members" is
        # answered without one.
        if not (req.WhichOneof("request") == "members" and req.header.cluster_id == 0):
            problem = self._check(req.header)
            if problem is not None:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, problem)
        return await self.handler.handle_call(req)


__all__ = ["CLUSTER_MISMATCH", "PROBE_INTERVAL", "ClusterMismatchError", "GrpcTransport", "url_target"]
