"""An in-process network of members with injected faults, for tests.

``net = MemoryNetwork(rand=random.Random(seed))``; each member gets
``net.transport()``. Faults: ``drop_rate`` (each message independently),
``delay`` (seconds, each message delivered after a random delay in the range),
``partition(*groups)`` (no link between groups), ``isolate(id)``, ``cut(a, b)``
(one direction), ``heal()``. Messages are encoded and decoded like on the
wire, so nothing is shared between members. A message on a cut link, or to a
member that is not running, reports the peer unreachable to the sender (as a
failed connection does); a randomly dropped one is lost silently. A member
refuses the messages of a member it knows was removed, and the sender hears
of it (``report_removed``), as over gRPC.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence

from meshkit.api.meshkitpb import raft_pb2 as rpb
from meshkit.server.raft import Message, MessageType
from meshkit.server.transport.base import (
    MEMBER_REMOVED,
    MemberGoneError,
    PeerHandler,
    PeerUnreachableError,
)
from meshkit.server.transport.codec import decode, encode


class MemoryNetwork:
    def __init__(self, *, rand: random.Random | None = None) -> None:
        self.rand = rand or random.Random(0)
        self.drop_rate = 0.0
        self.delay: tuple[float, float] = (0.0, 0.0)
        self._members: dict[int, PeerHandler] = {}
        self._urls: dict[str, int] = {}
        self._cut: set[tuple[int, int]] = set()
        self.delivered = 0
        self.dropped = 0

    def transport(self) -> MemoryTransport:
        return MemoryTransport(self)

    # ---- faults -----------------------------------------------------------------

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut every link between members of different groups (both directions)."""
        sets = [set(g) for g in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1:]:
                for x in a:
                    for y in b:
                        self._cut.add((x, y))
                        self._cut.add((y, x))

    def isolate(self, member_id: int) -> None:
        others = [m for m in self._members if m != member_id]
        self.partition([member_id], others)

    def cut(self, frm: int, to: int) -> None:
        self._cut.add((frm, to))

    def heal(self) -> None:
        self._cut.clear()
        self.drop_rate = 0.0
        self.delay = (0.0, 0.0)

    def linked(self, frm: int, to: int) -> bool:
        return (frm, to) not in self._cut and to in self._members

    # ---- delivery ---------------------------------------------------------------

    def _register(self, handler: PeerHandler, urls: Sequence[str]) -> None:
        self._members[handler.member_id] = handler
        for u in urls:
            self._urls[u] = handler.member_id

    def _unregister(self, handler: PeerHandler) -> None:
        if self._members.get(handler.member_id) is handler:
            del self._members[handler.member_id]

    def _send(self, sender: PeerHandler, msgs: Sequence[Message]) -> None:
        loop = asyncio.get_running_loop()
        by_peer: dict[int, list[Message]] = {}
        for m in msgs:
            if not self.linked(sender.member_id, m.to):
                if m.type == MessageType.MsgSnap:
                    sender.report_snapshot(m.to, True)
                sender.report_unreachable(m.to)
                continue
            if self.drop_rate and self.rand.random() < self.drop_rate:
                self.dropped += 1
                if m.type == MessageType.MsgSnap:
                    sender.report_snapshot(m.to, True)
                continue
            by_peer.setdefault(m.to, []).append(m)
        for to, batch in by_peer.items():
            wire = []
            for m in batch:
                p = rpb.RaftMessage()
                encode(m, p)
                wire.append(p.SerializeToString())
            lo, hi = self.delay
            d = self.rand.uniform(lo, hi) if hi > 0 else 0.0
            if d > 0:
                loop.call_later(d, self._deliver, sender, to, wire)
            else:
                loop.call_soon(self._deliver, sender, to, wire)

    def _deliver(self, sender: PeerHandler, to: int, wire: list[bytes]) -> None:
        target = self._members.get(to)
        if target is None or not self.linked(sender.member_id, to):
            self.dropped += len(wire)
            return
        if target.member_removed(sender.member_id):
            self.dropped += len(wire)
            if self._members.get(sender.member_id) is sender:
                sender.report_removed(to)
            return
        msgs = [decode(rpb.RaftMessage.FromString(b)) for b in wire]
        self.delivered += len(msgs)
        target.receive(msgs)
        for m in msgs:
            if m.type == MessageType.MsgSnap:
                sender.report_snapshot(to, False)

    async def _call(self, frm: int, to: int, req: rpb.PeerRequest) -> rpb.PeerResponse:
        target = self._members.get(to)
        if target is None or not self.linked(frm, to) or (frm and not self.linked(to, frm)):
            raise PeerUnreachableError(f"member {to:x} is unreachable")
        if frm and target.member_removed(frm):
            raise MemberGoneError(MEMBER_REMOVED)
        return await target.handle_call(rpb.PeerRequest.FromString(req.SerializeToString()))


class MemoryTransport:
    """One member's end of a :class:`MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork) -> None:
        self.network = network
        self._handler: PeerHandler | None = None
        self._peers: dict[int, tuple[str, ...]] = {}
        self.urls: tuple[str, ...] = ()

    @property
    def handler(self) -> PeerHandler:
        if self._handler is None:
            raise RuntimeError("transport not started")
        return self._handler

    async def start(self, handler: PeerHandler) -> None:
        self._handler = handler
        self.network._register(handler, self.urls)

    async def close(self) -> None:
        if self._handler is not None:
            self.network._unregister(self._handler)

    async def __aenter__(self) -> MemoryTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def set_peer(self, member_id: int, urls: Sequence[str]) -> None:
        self._peers[member_id] = tuple(urls)

    def remove_peer(self, member_id: int) -> None:
        self._peers.pop(member_id, None)

    def send(self, msgs: Sequence[Message]) -> None:
        self.network._send(self.handler, msgs)

    def active_since(self, member_id: int) -> float | None:
        me = self.handler.member_id
        if self.network.linked(me, member_id) and self.network.linked(member_id, me):
            return float("-inf")  # connected "forever": reconfiguration is never held back
        return None

    async def call(self, to: int, req: rpb.PeerRequest, timeout: float) -> rpb.PeerResponse:  # noqa: ASYNC109
        self._fill_header(req, to)
        try:
            return await asyncio.wait_for(self.network._call(self.handler.member_id, to, req), timeout)
        except MemberGoneError:
            self.handler.report_removed(to)
            raise

    async def fetch_members(self, urls: Sequence[str], req: rpb.PeerRequest,
                            timeout: float) -> rpb.PeerResponse:  # noqa: ASYNC109
        for u in urls:
            to = self.network._urls.get(u)
            if to is not None:
                try:
                    return await asyncio.wait_for(self.network._call(0, to, req), timeout)
                except PeerUnreachableError:
                    continue
        raise PeerUnreachableError(f"could not reach any of {', '.join(urls)}")

    def _fill_header(self, req: rpb.PeerRequest, to: int) -> None:
        req.header.cluster_id = self.handler.cluster_id
        req.header.frm = self.handler.member_id
        req.header.to = to
