"""Membership changes that name a removed member, as etcd 3.4 answers them.

etcd keeps the ids of removed members (the ``members_removed`` bucket) and its
``ValidateConfigurationChange`` refuses any change naming one, first, with
``membership.ErrIDRemoved``, when the change is *applied*. v3rpc's togRPCError
maps that error to ``ErrGRPCMemberNotFound`` (NOT_FOUND, "etcdserver: member not
found"), so MemberRemove (once more), MemberUpdate and MemberPromote of a removed
id answer as for an unknown id. Except one case: a follower forwards MemberPromote
to the leader over HTTP, whose handler answers ErrIDRemoved as an internal error,
and the follower asks again until its request times out (7 s): UNAVAILABLE,
"etcdserver: request timed out".

* In process: each change is refused when applied (the learner removed is not
  promoted back), the removed ids survive a restart, the follower's promote retries.
* Side by side, three `meshkit server` processes and three real etcd 3.4 ones:
  every answer (code and message) and the follower's 7 s wait are the same.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshkit._internal.errors import MemberNotFoundError, TimeoutError_
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc
from meshkit.server.etcdserver import server as server_mod
from meshkit.server.etcdserver.server import EtcdServer, MemberIDRemovedError
from tests.server.cluster.conftest import Cluster
from tests.server.cluster.proc_cluster import ProcCluster, side_by_side
from tests.server.cluster.test_membership_rules import _until_accepted, _wait_exit
from tests.support.procs import free_port

NOT_FOUND = "NOT_FOUND: etcdserver: member not found"
TIMED_OUT = "UNAVAILABLE: etcdserver: request timed out"


def _etcd(m: Any) -> EtcdServer:
    assert m.server is not None
    etcd: EtcdServer = m.server.etcd
    return etcd


# ---- in process ----------------------------------------------------------------------


async def test_changes_naming_a_removed_member_are_refused_when_applied(
    cluster3: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = cluster3
    lead = await c.wait_leader()
    follower = next(m for m in c.members if m is not lead)
    letcd, fetcd = _etcd(lead), _etcd(follower)
    # a learner that never starts (no readiness to wait for), added then removed
    added, _ = await letcd.member_add([f"http://127.0.0.1:{free_port()}"], is_learner=True)
    await letcd.member_remove(added.id)
    applied = letcd.applied_index
    refused = [
        ("remove again", letcd.member_remove(added.id)),
        ("remove a third time, via a follower", fetcd.member_remove(added.id)),
        ("update", letcd.member_update(added.id, [f"http://127.0.0.1:{free_port()}"])),
        ("promote", letcd.member_promote(added.id)),
    ]
    for what, call in refused:
        with pytest.raises(MemberIDRemovedError) as ei:
            await call
        # the domain error etcd's togRPCError answers as "member not found"
        assert isinstance(ei.value, MemberNotFoundError), what
        assert (ei.value.grpc_code, ei.value.detail) == (grpc.StatusCode.NOT_FOUND, "etcdserver: member not found")
    # each one went through the log and was refused when applied, as etcd's: the
    # promotion of the removed learner did not bring it back, on any member
    assert letcd.applied_index >= applied + len(refused)
    await c.wait_hashes_equal()
    for m in c.running:
        e = _etcd(m)
        assert added.id not in e.members and e.member_removed(added.id)
        cs = e.node.conf_state()
        assert added.id not in cs.voters and added.id not in cs.learners
    # an id never seen is only "not found"
    with pytest.raises(MemberNotFoundError) as unknown:
        await letcd.member_remove(0x1234)
    assert not isinstance(unknown.value, MemberIDRemovedError)
    # on the wire: NOT_FOUND, etcd's text
    async with grpc.aio.insecure_channel(follower.endpoint) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as ge:
            await rpc_pb2_grpc.ClusterStub(ch).MemberUpdate(
                pb.MemberUpdateRequest(ID=added.id, peerURLs=[f"http://127.0.0.1:{free_port()}"]), timeout=10)
        assert (ge.value.code(), ge.value.details()) == (grpc.StatusCode.NOT_FOUND, "etcdserver: member not found")
    # MemberPromote through a follower: the leader's refusal is not final for the
    # follower (etcd's peer handler answers it as an internal error), which asks
    # again until the request times out (7 s; shortened here)
    monkeypatch.setattr(server_mod, "REQUEST_TIMEOUT", 1.5)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError_):
        await fetcd.member_promote(added.id)
    assert time.monotonic() - t0 >= 1.4
    monkeypatch.undo()
    # the removed ids are kept on disk: a restarted member still refuses them
    await c.stop(follower)
    await c.start(follower)
    await c.wait_leader()
    fetcd = _etcd(follower)
    assert fetcd.member_removed(added.id)
    # the refused changes are in its log: replayed, they change nothing
    cs = fetcd.node.conf_state()
    assert added.id not in cs.voters and added.id not in cs.learners, cs
    assert set(cs.voters) == {m.id for m in c.members}, cs
    with pytest.raises(MemberIDRemovedError):
        await fetcd.member_update(added.id, [f"http://127.0.0.1:{free_port()}"])


# ---- side by side with the real etcd -----------------------------------------------


async def _call(p: ProcCluster, n: str, method: str, req: object, timeout: float = 15.0) -> tuple[str, float]:  # noqa: ASYNC109 (a gRPC deadline)
    """A Cluster RPC through member ``n``: "OK" or the code and details, and the
    seconds it took."""
    t0 = time.monotonic()
    async with grpc.aio.insecure_channel(p.endpoint(n)) as ch:
        try:
            await getattr(rpc_pb2_grpc.ClusterStub(ch), method)(req, timeout=timeout)
            res = "OK"
        except grpc.aio.AioRpcError as e:
            res = f"{e.code().name}: {e.details()}"
    return res, time.monotonic() - t0


async def _scenario(p: ProcCluster) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in p.names:
        p.start(n)
    await p.wait_ready()
    lead = await p.leader()
    f1, f2 = (n for n in p.names if n != lead)
    f2_id = await p.member_id(f2)
    # a started voter: accepted once every voter has been connected for 5 s
    _, _, resp = await _until_accepted(p, lead, "MemberRemove", pb.MemberRemoveRequest(ID=f2_id))
    out["remove"] = len(resp.members)
    out["removed member exits"] = (await _wait_exit(p, f2))[0]
    in_use = f"http://127.0.0.1:{p.pport[lead]}"
    for via, who in ((lead, "leader"), (f1, "follower")):
        for i in (1, 2):
            out[f"remove again ({i}) via the {who}"] = (await _call(
                p, via, "MemberRemove", pb.MemberRemoveRequest(ID=f2_id)))[0]
        out[f"update via the {who}"] = (await _call(p, via, "MemberUpdate", pb.MemberUpdateRequest(
            ID=f2_id, peerURLs=[f"http://127.0.0.1:{free_port()}"])))[0]
        # (the removed id is refused before the peer URL in use)
        out[f"update to a peer URL in use via the {who}"] = (await _call(
            p, via, "MemberUpdate", pb.MemberUpdateRequest(ID=f2_id, peerURLs=[in_use])))[0]
    out["promote via the leader"] = (await _call(p, lead, "MemberPromote", pb.MemberPromoteRequest(ID=f2_id)))[0]
    res, took = await _call(p, f1, "MemberPromote", pb.MemberPromoteRequest(ID=f2_id))
    out["promote via a follower"] = res
    out["promote via a follower waits the request timeout"] = 6.0 <= took < 12.0
    print(f"{p.argv0[0]}: promote of a removed member via a follower answered after {took:.2f}s")
    # a learner added, removed, then promoted
    res, _ = await _call(p, lead, "MemberAdd", pb.MemberAddRequest(
        peerURLs=[f"http://127.0.0.1:{free_port()}"], isLearner=True))
    out["add a learner"] = res
    async with grpc.aio.insecure_channel(p.endpoint(lead)) as ch:
        ml = await rpc_pb2_grpc.ClusterStub(ch).MemberList(pb.MemberListRequest(), timeout=5)
    learner = next(m.ID for m in ml.members if m.isLearner)
    out["remove the learner"] = (await _call(p, lead, "MemberRemove", pb.MemberRemoveRequest(ID=learner)))[0]
    out["promote the removed learner"] = (await _call(
        p, lead, "MemberPromote", pb.MemberPromoteRequest(ID=learner)))[0]
    out["remove an id never seen"] = (await _call(p, lead, "MemberRemove", pb.MemberRemoveRequest(ID=0x1234)))[0]
    # id 0 (raft.None, as `etcdctl member remove 0` sends)
    out["remove id 0"] = (await _call(p, f1, "MemberRemove", pb.MemberRemoveRequest(ID=0)))[0]
    out["update id 0"] = (await _call(p, lead, "MemberUpdate", pb.MemberUpdateRequest(
        ID=0, peerURLs=[f"http://127.0.0.1:{free_port()}"])))[0]
    out["promote id 0 via a follower"] = (await _call(p, f1, "MemberPromote", pb.MemberPromoteRequest(ID=0)))[0]
    # nothing refused changed the membership
    async with grpc.aio.insecure_channel(p.endpoint(f1)) as ch:
        ml = await rpc_pb2_grpc.ClusterStub(ch).MemberList(pb.MemberListRequest(), timeout=5)
    ids = {m.ID for m in ml.members}
    out["members left"] = (len(ids), sum(m.isLearner for m in ml.members), f2_id in ids, learner in ids)
    # the leader removes itself through its own port: it answers, then exits
    lead_id = await p.member_id(lead)
    out["the leader removes itself"] = (await _call(p, lead, "MemberRemove", pb.MemberRemoveRequest(ID=lead_id)))[0]
    out["the removed leader exits"] = (await _wait_exit(p, lead))[0]
    return out


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_changes_naming_a_removed_member_answer_as_etcd(tmp_path: Path) -> None:
    et, mk = await side_by_side(tmp_path, "removed", _scenario, heartbeat_ms=100, election_ms=1000)
    print(et)
    # what the real etcd answers (the facts this test pins)
    assert et["remove again (2) via the follower"] == NOT_FOUND, et
    assert et["update to a peer URL in use via the leader"] == NOT_FOUND, et
    assert et["promote via the leader"] == NOT_FOUND, et
    assert et["promote via a follower"] == TIMED_OUT, et
    assert et["promote via a follower waits the request timeout"] is True, et
    assert et["promote the removed learner"] == NOT_FOUND, et
    assert et["the leader removes itself"] == "OK" and et["the removed leader exits"] == 0, et
    for key in et:
        assert mk[key] == et[key], (key, mk[key], et[key])
