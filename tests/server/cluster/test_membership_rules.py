"""etcd 3.4's membership rules, and what a removed member does.

* The peer transport: every member keeps each peer's ``active_since`` current
  although Raft sends it nothing (etcd's streams to every peer; here a prober),
  and refuses the traffic of a removed member with etcd's "the member has been
  permanently removed from the cluster", which the sender recognises.
* In process: a removed follower and a removed leader learn it (``removed``) and
  refuse requests; MemberPromote through a follower answers with the promotion.
* Side by side, three `meshkit server` processes and three real etcd 3.4 ones:
  MemberRemove and MemberAdd right after the start answer "etcdserver: unhealthy
  cluster" (--strict-reconfig-check: every voter connected for 5 s); MemberAdd
  through a follower is then accepted; a removed leader and a removed follower
  exit with status 0 within a second, logging etcd's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshkit._internal.errors import LearnerNotReadyError
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc
from meshkit.api.meshkitpb import raft_pb2 as rpb
from meshkit.server.etcdserver.server import MemberRemovedError
from meshkit.server.raft import Message, MessageType
from meshkit.server.transport import MEMBER_REMOVED, GrpcTransport, MemberGoneError
from tests.server.cluster.conftest import Cluster
from tests.server.cluster.proc_cluster import ProcCluster, side_by_side
from tests.server.cluster.test_membership import _new_member
from tests.support.procs import free_port

REMOVED_TEXT = "the member has been permanently removed from the cluster"


async def _until(pred: Callable[[], bool], limit: float, what: str) -> float:
    """Polls ``pred`` until it holds (at most ``limit`` s); returns the time it took."""
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < limit, f"{what}: not within {limit}s"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


# ---- the peer transport ------------------------------------------------------------


class _Handler:
    """A member as the transport sees it, recording what it is told."""

    def __init__(self, member_id: int, cluster_id: int = 7) -> None:
        self.member_id = member_id
        self.cluster_id = cluster_id
        self.received: list[Message] = []
        self.removed_ids: set[int] = set()
        self.removed_by: list[int] = []

    def receive(self, msgs: list[Message]) -> None:
        self.received.extend(msgs)

    async def handle_call(self, req: rpb.PeerRequest) -> rpb.PeerResponse:
        return rpb.PeerResponse()

    def report_unreachable(self, member_id: int) -> None:
        pass

    def report_snapshot(self, member_id: int, failed: bool) -> None:
        pass

    def member_removed(self, member_id: int) -> bool:
        return member_id in self.removed_ids

    def report_removed(self, by: int) -> None:
        self.removed_by.append(by)


async def _pair(probe_interval: float = 0.05) -> tuple[GrpcTransport, _Handler, GrpcTransport, _Handler]:
    a, b = (GrpcTransport([("127.0.0.1", 0)], probe_interval=probe_interval, send_timeout=2.0)
            for _ in range(2))
    ha, hb = _Handler(0xA), _Handler(0xB)
    await a.start(ha)
    await b.start(hb)
    a.set_peer(hb.member_id, [f"http://127.0.0.1:{b.ports[0]}"])
    b.set_peer(ha.member_id, [f"http://127.0.0.1:{a.ports[0]}"])
    return a, ha, b, hb


async def test_peers_are_active_both_ways_without_raft_traffic() -> None:
    """etcd's followers know the other followers are up (streams); Raft sends them
    nothing, the prober keeps ``active_since`` current both ways, and a peer that
    stops answering turns inactive."""
    a, ha, b, hb = await _pair()
    try:
        assert a.active_since(hb.member_id) is None and b.active_since(ha.member_id) is None
        await _until(lambda: a.active_since(hb.member_id) is not None
                     and b.active_since(ha.member_id) is not None, 5.0, "both peers active")
        since = a.active_since(hb.member_id)
        await asyncio.sleep(0.3)  # several probe intervals: still active, since the same time
        assert a.active_since(hb.member_id) == since
        assert ha.received == [] and hb.received == []  # probes are not Raft messages
        assert a.active_since(0x99) is None  # not a peer
        await b.close()
        await _until(lambda: a.active_since(hb.member_id) is None, 5.0, "stopped peer inactive")
    finally:
        await a.close()
        await b.close()


async def test_a_removed_member_is_refused_and_told() -> None:
    """etcd's rafthttp answers a removed member's traffic with 410 Gone
    (errMemberRemoved) and the removed member stops; here FAILED_PRECONDITION with
    etcd's text, reported to the sender's driver once."""
    a, ha, b, hb = await _pair()
    try:
        hb.removed_ids.add(ha.member_id)
        a.send([Message(MessageType.MsgHeartbeatResp, to=hb.member_id, frm=ha.member_id, term=1)])
        await _until(lambda: bool(ha.removed_by), 5.0, "the removed member told")
        await asyncio.sleep(0.2)  # more refused probes: still told once
        assert ha.removed_by == [hb.member_id]
        assert hb.received == []
        assert a.active_since(hb.member_id) is None
        # b, not removed, is still heard by a
        b.send([Message(MessageType.MsgHeartbeat, to=ha.member_id, frm=hb.member_id, term=1)])
        await _until(lambda: bool(ha.received), 5.0, "a hears b")
        # forwarded requests are refused the same way
        with pytest.raises(MemberGoneError, match=MEMBER_REMOVED):
            await a.call(hb.member_id, rpb.PeerRequest(lease_renew=1), timeout=2.0)
        assert MEMBER_REMOVED == REMOVED_TEXT
    finally:
        await a.close()
        await b.close()


# ---- in process ----------------------------------------------------------------------


async def test_removed_follower_and_removed_leader_learn_it_in_process(cluster3: Cluster) -> None:
    c = cluster3
    lead = await c.wait_leader()
    follower = next(m for m in c.members if m is not lead)
    fetcd = follower.server.etcd  # type: ignore[union-attr]
    letcd = lead.server.etcd  # type: ignore[union-attr]
    members = await letcd.member_remove(follower.id)
    assert follower.id not in {m.id for m in members}
    took = await _until(fetcd.removed.is_set, 5.0, "the removed follower learns it")
    print(f"removed follower learned it after {took:.2f}s")
    assert not letcd.removed.is_set()
    with pytest.raises(MemberRemovedError):
        await fetcd.linearizable_barrier()
    # the remaining two refuse its traffic from now on
    assert letcd.member_removed(follower.id)
    # the leader removes itself: it answers, then knows it was removed
    await c.stop(follower)
    lead_id = lead.id
    members = await letcd.member_remove(lead_id)
    assert lead_id not in {m.id for m in members}
    await _until(letcd.removed.is_set, 5.0, "the removed leader knows it")
    with pytest.raises(MemberRemovedError):
        await letcd.linearizable_barrier()
    rest = next(m for m in c.running if m is not lead)
    await c.stop(lead)
    assert (await c.wait_leader()) is rest
    async with c.client(rest) as cl:
        await cl.put(b"after", b"1")


async def test_promote_through_a_follower_answers_with_the_promoted_member(cluster3: Cluster) -> None:
    """A follower forwards MemberPromote to the leader, which answers once it applied
    the change; etcd's follower answers with the leader's member list. With Raft
    messages slower than the forwarded call, the follower must not answer with its
    own list from before the promotion (the Cluster API answers with that list)."""
    c = cluster3
    lead = await c.wait_leader()
    follower = next(m for m in c.members if m is not lead)
    fetcd = follower.server.etcd  # type: ignore[union-attr]
    peer = f"http://127.0.0.1:{free_port()}"
    added, _ = await fetcd.member_add([peer], is_learner=True)
    new = _new_member(c, "m3", peer)
    c.members.append(new)
    await c.start(new)
    letcd = lead.server.etcd  # type: ignore[union-attr]
    netcd = new.server.etcd  # type: ignore[union-attr]
    await _until(lambda: netcd.applied_index >= letcd.applied_index, 10.0, "the learner catches up")
    c.net.delay = (0.15, 0.25)  # Raft messages (the commit too) arrive after the call's answer
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                members = await fetcd.member_promote(added.id)
                break
            except LearnerNotReadyError:
                assert time.monotonic() < deadline, "the learner never got in sync"
                await asyncio.sleep(0.1)
        assert {m.id: m.is_learner for m in members}[added.id] is False
        assert fetcd.members[added.id].is_learner is False
    finally:
        c.net.delay = (0.0, 0.0)


# ---- side by side with the real etcd -----------------------------------------------


async def _cluster(p: ProcCluster, n: str, method: str, req: object) -> tuple[str, Any]:
    """A Cluster RPC through member ``n``: ("OK", response) or (code and details, None)."""
    async with grpc.aio.insecure_channel(p.endpoint(n)) as ch:
        try:
            return "OK", await getattr(rpc_pb2_grpc.ClusterStub(ch), method)(req, timeout=10.0)
        except grpc.aio.AioRpcError as e:
            return f"{e.code().name}: {e.details()}", None


async def _until_accepted(p: ProcCluster, n: str, method: str, req: object,
                          limit: float = 20.0) -> tuple[set[str], float, Any]:
    """Asks until accepted: the refusals seen, the time it took, the response."""
    seen: set[str] = set()
    t0 = time.monotonic()
    while True:
        res, resp = await _cluster(p, n, method, req)
        if res == "OK":
            return seen, time.monotonic() - t0, resp
        seen.add(res)
        assert time.monotonic() - t0 < limit, f"{method} through {n} refused for {limit}s: {seen}"
        await asyncio.sleep(0.2)


async def _wait_exit(p: ProcCluster, n: str, limit: float = 10.0) -> tuple[int | None, float]:
    """(exit status or None if still running after ``limit`` s, seconds waited)."""
    t0 = time.monotonic()
    with contextlib.suppress(subprocess.TimeoutExpired):
        await asyncio.to_thread(p.procs[n].wait, limit)
    return p.procs[n].poll(), time.monotonic() - t0


async def _scenario(p: ProcCluster) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in p.names:
        p.start(n)
    # as soon as every member answers and follows a leader (well within 5 s of its
    # peer connections)
    deadline = time.monotonic() + 30
    while True:
        try:
            sts = [await p.status(n) for n in p.names]
            if all(s.leader for s in sts) and len({s.leader for s in sts}) == 1:
                break
        except grpc.aio.AioRpcError:
            pass
        assert time.monotonic() < deadline, "no leader"
        await asyncio.sleep(0.05)
    lead = await p.leader()
    f1, f2 = (n for n in p.names if n != lead)
    lead_id = await p.member_id(lead)
    await asyncio.sleep(0.5)  # (the followers have answered the leader by now)
    res, _ = await _cluster(p, f1, "MemberRemove", pb.MemberRemoveRequest(ID=lead_id))
    out["early remove via follower"] = res
    new_peer = f"http://127.0.0.1:{free_port()}"
    res, _ = await _cluster(p, f1, "MemberAdd", pb.MemberAddRequest(peerURLs=[new_peer]))
    out["early add via follower"] = res
    # MemberAdd of a voter through a follower: accepted once connected for 5 s
    seen, took, resp = await _until_accepted(p, f1, "MemberAdd", pb.MemberAddRequest(peerURLs=[new_peer]))
    out["add via follower: refusals"] = sorted(seen)
    out["add via follower: members"] = len(resp.members)
    print(f"{p.argv0[0]}: member add through a follower accepted after {took:.1f}s more")
    # the member added never started: removing it is safe at once
    res, resp = await _cluster(p, f1, "MemberRemove", pb.MemberRemoveRequest(ID=resp.member.ID))
    out["remove unstarted"] = (res, len(resp.members) if resp else None)
    # the leader removed (through a follower): it exits
    res, _ = await _cluster(p, f1, "MemberRemove", pb.MemberRemoveRequest(ID=lead_id))
    out["remove leader"] = res
    code, took = await _wait_exit(p, lead)
    out["removed leader exit"] = (code, took < 3.0)
    out["removed leader log"] = REMOVED_TEXT in p.log(lead)
    print(f"{p.argv0[0]}: removed leader exited {code} after {took:.2f}s")
    # the removed follower: removed through the new leader, it exits
    new = await p.leader(among=[f1, f2])
    other = f2 if new == f1 else f1
    other_id = await p.member_id(other)
    res, resp = await _cluster(p, new, "MemberRemove", pb.MemberRemoveRequest(ID=other_id))
    out["remove follower"] = (res, len(resp.members) if resp else None)
    code, took = await _wait_exit(p, other)
    out["removed follower exit"] = (code, took < 3.0)
    out["removed follower log"] = REMOVED_TEXT in p.log(other)
    print(f"{p.argv0[0]}: removed follower exited {code} after {took:.2f}s")
    return out


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_membership_rules_and_removed_members_like_etcd(tmp_path: Path) -> None:
    et, mk = await side_by_side(tmp_path, "rules", _scenario, heartbeat_ms=100, election_ms=1000)
    print(et)
    assert et["early remove via follower"] == "UNAVAILABLE: etcdserver: unhealthy cluster", et
    assert et["add via follower: members"] == 4, et
    assert et["removed leader exit"] == (0, True) and et["removed follower exit"] == (0, True), et
    for key in et:
        assert mk[key] == et[key], (key, mk[key], et[key])
