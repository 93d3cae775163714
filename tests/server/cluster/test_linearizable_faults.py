"""Faults under load, each run recorded as a history of register operations
(tests/support/history.py) and checked for linearizability
(tests/support/linearizability.py), plus: every acknowledged write is in the store
at the revision it was acknowledged with, nothing else is, and the members end with
equal HashKV at one revision.

Three `meshkit server` processes on loopback: kill -9 of the leader and its
restart; SIGSTOP of a follower, then of the leader; the leader isolated from the
majority by cutting its peer links (tests/support/netfault.py, an HTTP CONNECT
proxy the members' gRPC peer connections go through), then healed; a follower
killed and restarted behind the compacted log (--snapshot-count 40,
--experimental-snapshot-catchup-entries 10), caught up by snapshot; adding a
member and removing the leader. The in-process network faults (a stopped leader,
an isolated leader, lossy links) are in test_faults.py with the same recording and
checks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshkit._internal.errors import EtcdError
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc
from meshkit.client import Client
from meshkit.client.errors import ClientError
from tests.server.cluster.proc_cluster import ProcCluster
from tests.server.conftest import wait_ready
from tests.support.history import History, Load, verify

pytestmark = pytest.mark.slow

ELECTION_S = 0.5  # ProcCluster's --election-timeout


class _Clock:
    """Phase timings, printed with the test's output (-s) to keep the budget honest."""

    def __init__(self) -> None:
        self.t0 = self.last = time.monotonic()
        self.marks: list[str] = []

    def __call__(self, what: str) -> None:
        now = time.monotonic()
        self.marks.append(f"{what} +{now - self.last:.1f}s")
        self.last = now

    def __str__(self) -> str:
        return f"{time.monotonic() - self.t0:.1f}s: " + ", ".join(self.marks)


def _groups(p: ProcCluster, names: list[str]) -> list[list[str]]:
    """One client pinned to each member, one more with every endpoint (failover)."""
    return [[p.endpoint(n)] for n in names] + [p.endpoints(names)]


async def _verify(p: ProcCluster, h: History, names: list[str], clock: _Clock) -> None:
    """Final reads through each member, the linearizability check, the writes
    against the store, then equal HashKV on every member at one revision."""
    print(await verify(h, {n: p.endpoint(n) for n in names}))
    clock("checked")
    st = await p.status(names[0], timeout=5.0)
    await p.wait_hashes_equal(names, int(st.header.revision))
    clock("hashes")
    print(clock)


@pytest.mark.timeout(90)
async def test_kill9_leader_under_load_then_restart(tmp_path: Path) -> None:
    p = ProcCluster(tmp_path)
    clock = _Clock()
    try:
        for n in p.names:
            p.start(n)
        await p.wait_ready()
        clock("started")
        old = await p.leader()
        rest = [n for n in p.names if n != old]
        async with Load(_groups(p, p.names), clients=6, duration=60, max_ops=20000, seed=1) as load:
            await load.wait_acked(100, after=0, limit=20)
            t_kill = time.monotonic()
            p.kill9(old)
            new = await p.leader(among=rest, not_=old, limit=10)
            elected = time.monotonic() - t_kill
            await load.wait_acked(100, after=time.monotonic(), limit=20)
            p.start(old)
            await wait_ready(p.endpoint(old))
            back = time.monotonic()
            await load.wait_acked(100, after=back, limit=20)
        clock("load")
        h = load.history
        print(f"leader {old} killed, {new} elected after {elected:.2f}s")
        # a new leader within a few election timeouts (randomized in [1, 2) of it)
        assert elected < 6 * ELECTION_S, elected
        await _verify(p, h, p.names, clock)
    finally:
        p.stop_all()


async def _wait_stepped_down(p: ProcCluster, n: str, old_term: int, limit: float = 10.0) -> None:
    """Until ``n`` follows someone else in a newer term."""
    me = await p.member_id(n)
    deadline = time.monotonic() + limit
    while True:
        st = await p.status(n, timeout=2.0)
        if st.leader not in (0, me) and st.raftTerm > old_term:
            return
        assert time.monotonic() < deadline, f"{n} did not step down: leader {st.leader:x}, term {st.raftTerm}"
        await asyncio.sleep(0.05)


@pytest.mark.timeout(120)
async def test_sigstop_follower_then_leader_under_load(tmp_path: Path) -> None:
    """The client timeout (5 s) outlasts each pause, so requests sent to a paused
    member are answered after SIGCONT: by the ex-leader too, before or after it
    learns of the new term."""
    p = ProcCluster(tmp_path)
    clock = _Clock()
    try:
        for n in p.names:
            p.start(n)
        await p.wait_ready()
        clock("started")
        lead = await p.leader()
        follower = next(n for n in p.names if n != lead)
        async with Load(_groups(p, p.names), clients=6, duration=60, max_ops=20000, seed=2,
                        op_timeout=5.0) as load:
            await load.wait_acked(100, after=0, limit=20)
            # a paused follower: the other two go on
            p.sigstop(follower)
            t = time.monotonic()
            await load.wait_acked(50, after=t, limit=20)
            await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - t)))
            p.sigcont(follower)
            await load.wait_acked(50, after=time.monotonic(), limit=20)
            clock("follower paused")
            # a paused leader: the other two elect a new one and go on
            lead = await p.leader()
            rest = [n for n in p.names if n != lead]
            term = (await p.status(lead)).raftTerm
            p.sigstop(lead)
            t = time.monotonic()
            new = await p.leader(among=rest, not_=lead, limit=10)
            elected = time.monotonic() - t
            await load.wait_acked(50, after=time.monotonic(), limit=20)
            await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - t)))
            paused = time.monotonic() - t
            p.sigcont(lead)
            # the ex-leader wakes up believing it leads: it must step down
            await _wait_stepped_down(p, lead, term)
            await load.wait_acked(100, after=time.monotonic(), limit=20)
            clock("leader paused")
        print(f"{follower} then leader {lead} paused ({paused:.1f}s); {new} elected after {elected:.2f}s")
        assert elected < 6 * ELECTION_S, elected
        await _verify(p, load.history, p.names, clock)
    finally:
        p.stop_all()


@pytest.mark.timeout(60)
async def test_isolated_leader_under_load_refuses_while_the_majority_goes_on(tmp_path: Path) -> None:
    """The leader's peer links are cut both ways by the fault injector (its proxy
    carries every peer connection): it no longer answers linearizable reads or
    writes, the other two elect a new leader and take writes; healed, it follows the
    new leader and serves the latest value. The load's client timeout (6 s) is
    about as long as the isolation: requests the old leader holds may be answered
    after the heal, and must not be stale either."""
    assert "grpc_proxy" not in os.environ  # the test's own clients go direct
    async with ProcCluster(tmp_path, netfault=True) as p:
        clock = _Clock()
        for n in p.names:
            p.start(n)
        await p.wait_ready()
        clock("started")
        old = await p.leader()
        rest = [n for n in p.names if n != old]
        async with Client([p.endpoint(old)], timeout=5.0) as c:
            await c.put(b"k", b"before")
        async with Load(_groups(p, p.names), clients=6, duration=60, max_ops=20000, seed=7,
                        op_timeout=6.0) as load:
            await load.wait_acked(100, after=0, limit=20)
            # the members really talk through the injector: Raft traffic both ways
            assert all(p.net.bytes[(old, n)] > 0 and p.net.bytes[(n, old)] > 0 for n in rest), p.net.bytes
            term = (await p.status(old)).raftTerm
            p.net.isolate(old)
            t = time.monotonic()
            new = await p.leader(among=rest, not_=old, limit=10)
            elected = time.monotonic() - t
            await load.wait_acked(100, after=t, limit=20)  # the majority goes on
            async with Client(p.endpoints(rest), timeout=5.0) as c:
                after_rev = (await c.put(b"k", b"after")).header.revision
            # the old leader answers no linearizable read nor write (an error or a
            # timeout), only a serializable read of what it had
            async with Client([p.endpoint(old)], timeout=1.5) as c:
                with pytest.raises((EtcdError, ClientError)) as read_err:
                    await c.get(b"k")
                with pytest.raises((EtcdError, ClientError)) as write_err:
                    await c.put(b"k-isolated", b"1")
                r = await c.get(b"k", serializable=True)
                assert [kv.value for kv in r.kvs] == [b"before"]
            held = sum(p.net.held[(old, n)] + p.net.held[(n, old)] for n in rest)
            isolated = time.monotonic() - t
            p.net.heal_all()
            # it follows a leader of a newer term, and reads the majority's write
            await _wait_stepped_down(p, old, term)
            async with Client([p.endpoint(old)], timeout=2.0) as c:
                deadline = time.monotonic() + 10
                while True:
                    with contextlib.suppress(EtcdError, ClientError):
                        r = await c.get(b"k")
                        if r.header.revision >= after_rev:
                            break
                    assert time.monotonic() < deadline, "the old leader did not catch up"
                    await asyncio.sleep(0.05)
                assert [kv.value for kv in r.kvs] == [b"after"]
            await load.wait_acked(100, after=time.monotonic(), limit=20)
            clock("isolated and healed")
        print(f"leader {old} isolated for {isolated:.1f}s ({held} peer connections held), "
              f"{new} elected after {elected:.2f}s; it refused a read ({read_err.value!r}) "
              f"and a write ({write_err.value!r})")
        assert elected < 6 * ELECTION_S, elected
        assert held > 0
        await _verify(p, load.history, p.names, clock)


async def _cluster_call(p: ProcCluster, n: str, method: str, req: object, limit: float = 15.0) -> Any:
    """A Cluster RPC through member ``n``, retried while the cluster answers
    "unhealthy cluster" (etcd refuses reconfiguration until every voter has been
    connected for 5 s)."""
    deadline = time.monotonic() + limit
    async with grpc.aio.insecure_channel(p.endpoint(n)) as ch:
        stub = rpc_pb2_grpc.ClusterStub(ch)
        while True:
            try:
                return await getattr(stub, method)(req, timeout=10.0)
            except grpc.aio.AioRpcError as e:
                if "unhealthy cluster" not in (e.details() or "") or time.monotonic() > deadline:
                    raise AssertionError(f"{method} through {n}: {e.code().name} {e.details()}") from e
                await asyncio.sleep(0.25)


async def _reconfigure(p: ProcCluster, n: str, method: str, req: object,
                       done: Callable[[list[Any]], bool], limit: float = 30.0) -> list[Any]:
    """MemberAdd/MemberRemove through ``n``; returns the member list once ``done``
    holds for it. A change whose call timed out ("request timed out": the proposal
    may still be applied, or was lost with a leader change, like any write) is
    decided by the member list, and asked again if it did not happen."""
    deadline = time.monotonic() + limit
    while True:
        try:
            resp = await _cluster_call(p, n, method, req, limit=max(1.0, deadline - time.monotonic()))
            assert done(list(resp.members)), resp
            return list(resp.members)
        except AssertionError as e:
            if "request timed out" not in str(e) or time.monotonic() > deadline:
                raise
        members = list((await _cluster_call(p, n, "MemberList", pb.MemberListRequest())).members)
        if done(members):
            return members


@pytest.mark.timeout(120)
async def test_add_a_member_and_remove_the_leader_under_load(tmp_path: Path) -> None:
    p = ProcCluster(tmp_path)
    clock = _Clock()
    try:
        for n in p.names:
            p.start(n)
        await p.wait_ready()
        clock("started")
        first = list(p.names)
        async with Load(_groups(p, first), clients=6, duration=60, max_ops=20000, seed=4) as load:
            await load.wait_acked(100, after=0, limit=20)
            # MemberAdd, then the new member starts with --initial-cluster-state existing.
            # Asked of a follower, as etcd's followers accept it (they are connected
            # to every peer, and the change goes to the leader through Raft).
            p.add_name("p3")
            peer = f"http://127.0.0.1:{p.pport['p3']}"
            lead = await p.leader(among=first)
            follower = next(n for n in first if n != lead)
            members = await _reconfigure(p, follower, "MemberAdd", pb.MemberAddRequest(peerURLs=[peer]),
                                         lambda ms: any(peer in m.peerURLs for m in ms))
            added = next(m for m in members if peer in m.peerURLs)
            assert not added.isLearner and len(members) == 4
            p.start("p3", state="existing")
            await wait_ready(p.endpoint("p3"))
            assert await p.member_id("p3") == added.ID
            clock("added")
            # two more clients on the new member, recorded in the same history
            async with Load([[p.endpoint("p3")]], clients=2, duration=60, max_ops=4000, seed=5,
                            history=load.history, first_client=10) as load2:
                await load2.wait_acked(30, after=time.monotonic(), limit=15)
                # the leader removes itself
                lead = await p.leader(among=p.names)
                lead_id = await p.member_id(lead)
                rest = [n for n in p.names if n != lead]
                t = time.monotonic()
                await _reconfigure(p, lead, "MemberRemove", pb.MemberRemoveRequest(ID=lead_id),
                                   lambda ms: lead_id not in {m.ID for m in ms})
                new = await p.leader(among=rest, not_=lead, limit=10)
                elected = time.monotonic() - t
                await load.wait_acked(100, after=time.monotonic(), limit=20)
                clock("removed")
        print(f"p3 added, leader {lead} removed, {new} leads after {elected:.2f}s")
        # the member list as every remaining member sees it
        for n in rest:
            ml = await _cluster_call(p, n, "MemberList", pb.MemberListRequest())
            got = sorted((m.name, list(m.peerURLs), list(m.clientURLs)) for m in ml.members)
            assert got == sorted((x, [f"http://127.0.0.1:{p.pport[x]}"], [f"http://127.0.0.1:{p.cport[x]}"])
                                 for x in rest), got
        # the removed member no longer serves linearizable reads or writes
        async with Client([p.endpoint(lead)], timeout=1.5) as c:
            with pytest.raises((EtcdError, ClientError)):
                await c.get(b"lin/r0")
            with pytest.raises((EtcdError, ClientError)):
                await c.put(b"removed/x", b"1")
        await _verify(p, load.history, rest, clock)
    finally:
        p.stop_all()


# ---- a restarted follower behind the compacted log ---------------------------------

SNAPSHOT_COUNT, CATCHUP_ENTRIES = 40, 10
SNAPSHOT_FLAGS = ("--snapshot-count", str(SNAPSHOT_COUNT),
                  "--experimental-snapshot-catchup-entries", str(CATCHUP_ENTRIES))
_SNAPSHOT_AT = re.compile(r"snapshot at index (\d+) \(term \d+\); wal released")
_INSTALLED = re.compile(r"installed the snapshot at index (\d+): revision (\d+)")


def _last_snapshot(p: ProcCluster, n: str) -> int:
    """The index of member ``n``'s latest snapshot (its log is compacted up to
    that index minus the catch-up entries), from its log; 0 before the first."""
    found = _SNAPSHOT_AT.findall(p.log(n))
    return int(found[-1]) if found else 0


@pytest.mark.timeout(60)
async def test_restarted_follower_behind_the_compacted_log_catches_up_by_snapshot_under_load(
        tmp_path: Path) -> None:
    """Members with --snapshot-count 40 and --experimental-snapshot-catchup-entries 10:
    a follower is killed, the others go on past snapshots that compact their logs
    beyond anything the follower holds, and the follower restarted on its data dir
    is sent the leader's database (both logs say so) while the load runs."""
    p = ProcCluster(tmp_path, extra=SNAPSHOT_FLAGS)
    clock = _Clock()
    try:
        for n in p.names:
            p.start(n)
        await p.wait_ready()
        clock("started")
        lead = await p.leader()
        behind = next(n for n in p.names if n != lead)
        rest = [n for n in p.names if n != behind]
        behind_id = await p.member_id(behind)
        async with Load(_groups(p, p.names), clients=6, duration=60, max_ops=20000, seed=6) as load:
            await load.wait_acked(50, after=0, limit=20)
            p.kill9(behind)
            # The killed follower's log ends at most at the leader's last index, a few
            # uncommitted entries past its commit index (Status raftIndex): wait until
            # both others compacted their logs (kept CATCHUP_ENTRIES behind their last
            # snapshot) a whole snapshot interval beyond that.
            had = max([int((await p.status(n, timeout=5.0)).raftIndex) for n in rest])
            deadline = time.monotonic() + 20
            while min(_last_snapshot(p, n) for n in rest) - CATCHUP_ENTRIES <= had + SNAPSHOT_COUNT:
                assert time.monotonic() < deadline, f"no compaction past index {had}: {load.history.summary()}"
                await asyncio.sleep(0.1)
            missed = int((await p.status(rest[0], timeout=5.0)).raftIndex) - had
            clock("follower down")
            logged = len(p.log(behind))
            p.start(behind)
            t = time.monotonic()
            deadline = t + 20
            while (installed := _INSTALLED.search(p.log(behind)[logged:])) is None:
                assert p.procs[behind].poll() is None, p.log(behind)[logged:][-3000:]
                assert time.monotonic() < deadline, "no snapshot was installed: " + p.log(behind)[logged:][-3000:]
                await asyncio.sleep(0.05)
            took = time.monotonic() - t
            index = int(installed.group(1))
            assert index > had + SNAPSHOT_COUNT, (index, had)
            # the snapshot came from the leader of the moment, one of the others
            sent = f"sending a snapshot at index {index} "
            assert any(sent in line and line.endswith(f" to {behind_id:x}")
                       for n in rest for line in p.log(n).splitlines()), sent
            await load.wait_acked(100, after=time.monotonic(), limit=20)
            clock("caught up")
        print(f"{behind} missed at least {missed} entries, installed the snapshot at index {index} "
              f"{took:.2f}s after its restart")
        await _verify(p, load.history, p.names, clock)
    finally:
        p.stop_all()


@pytest.mark.timeout(60)
async def test_removed_member_process_exits_like_etcd(tmp_path: Path) -> None:
    """etcd 3.4's removed member exits (status 0) within a fraction of a second: its
    peers answer its Raft traffic with "the member has been permanently removed from
    the cluster" and it stops. (Removed leaders and the real etcd side by side:
    test_membership_rules.py.)"""
    p = ProcCluster(tmp_path)
    try:
        for n in p.names:
            p.start(n)
        await p.wait_ready()
        lead = await p.leader()
        victim = next(n for n in p.names if n != lead)
        vid = await p.member_id(victim)
        await _cluster_call(p, lead, "MemberRemove", pb.MemberRemoveRequest(ID=vid))
        deadline = time.monotonic() + 5
        while p.procs[victim].poll() is None:
            assert time.monotonic() < deadline, f"{victim} still runs 5 s after its removal"
            await asyncio.sleep(0.1)
        assert p.procs[victim].returncode == 0
        assert "the member has been permanently removed from the cluster" in p.log(victim)
    finally:
        p.stop_all()
