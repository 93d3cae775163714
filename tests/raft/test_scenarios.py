"""Step-by-step scenarios on the simulated network (no sleeps, no event loop)."""

from __future__ import annotations

import random

import pytest

from meshkit.server.raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDroppedError,
    RaftConfig,
    RaftNode,
    ReadState,
    StateRole,
)
from tests.raft.harness import Cluster


def _single(seed: int = 1) -> tuple[RaftNode, MemoryStorage]:
    st = MemoryStorage()
    st.bootstrap(ConfState(voters=(1,)))
    return RaftNode(RaftConfig(id=1), st, random.Random(seed)), st


def _drive(n: RaftNode, st: MemoryStorage) -> list:
    """One driver iteration; returns the committed entries applied."""
    applied = []
    while n.has_ready():
        rd = n.ready()
        if rd.entries:
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        applied.extend(rd.committed_entries)
        n.advance(rd)
    return applied


def test_single_node_campaign_propose_commit() -> None:
    n, st = _single()
    assert n.role == StateRole.FOLLOWER
    n.campaign()
    # term 1 holds the bootstrap conf change entry; the election moves to term 2
    assert n.role == StateRole.LEADER and n.term == 2 and n.lead == 1
    rd = n.ready()
    assert rd.soft_state is not None and rd.soft_state.role == StateRole.LEADER
    assert rd.hard_state == HardState(term=2, vote=1, commit=2)
    assert [(e.term, e.index, e.type) for e in rd.entries] == [
        (1, 1, EntryType.CONF_CHANGE),
        (2, 2, EntryType.NORMAL),
    ]
    # documented: a single voter commits what it appends, in the same Ready
    assert [e.index for e in rd.committed_entries] == [1, 2]
    assert rd.must_sync
    st.append(rd.entries)
    st.set_hard_state(rd.hard_state)
    n.advance(rd)
    assert not n.has_ready()
    for i in range(100):
        n.propose(b"v%d" % i)
    rd = n.ready()
    assert len(rd.entries) == 100 and len(rd.committed_entries) == 100
    assert rd.hard_state is not None and rd.hard_state.commit == 102
    assert rd.messages == []
    st.append(rd.entries)
    st.set_hard_state(rd.hard_state)
    n.advance(rd)
    assert n.status().applied == 102
    assert not n.has_ready()


def test_single_node_elects_itself_after_election_timeout() -> None:
    n, st = _single()
    for _ in range(20):
        n.tick()
    assert n.role == StateRole.LEADER
    _drive(n, st)


def test_single_node_restart_resumes_from_storage() -> None:
    n, st = _single()
    n.campaign()
    _drive(n, st)
    n.propose(b"a")
    n.propose(b"b")
    applied = _drive(n, st)
    assert [e.data for e in applied] == [b"a", b"b"]
    # restart from what was persisted; the state machine had applied everything
    st.bootstrap_conf = None  # membership now comes from the log
    n2 = RaftNode(RaftConfig(id=1, applied=4), st, random.Random(2))
    assert (n2.term, n2.vote, n2.commit_index, n2.last_index) == (2, 1, 4, 4)
    assert n2.conf_state() == ConfState(voters=(1,))
    assert n2.role == StateRole.FOLLOWER
    assert not n2.has_ready()
    n2.campaign()
    assert n2.term == 3 and n2.role == StateRole.LEADER
    n2.propose(b"c")
    applied = _drive(n2, st)
    assert [(e.term, e.index, e.data) for e in applied] == [(3, 5, b""), (3, 6, b"c")]
    # restart with applied=0: committed entries are replayed
    n3 = RaftNode(RaftConfig(id=1), st, random.Random(3))
    replay = _drive(n3, st)
    assert [e.index for e in replay] == [1, 2, 3, 4, 5, 6]


def test_restart_takes_the_drivers_conf_state_over_refused_log_changes() -> None:
    """A driver may refuse a committed membership change (etcd's server validates
    each when applying it, and then never hands it to Raft). On restart, replaying
    the log would count it; the driver's conf state as of ``applied`` does not."""
    n, st = _single()
    n.campaign()
    _drive(n, st)
    assert n.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 5))
    applied = _drive(n, st)
    assert [e.type for e in applied] == [EntryType.CONF_CHANGE]  # refused: not applied
    assert n.conf_state() == ConfState(voters=(1,))
    st.bootstrap_conf = None
    last = applied[-1].index
    replayed = RaftNode(RaftConfig(id=1, applied=last), st, random.Random(2))
    assert replayed.conf_state() == ConfState(voters=(1,), learners=(5,))  # the log's view
    kept = RaftNode(RaftConfig(id=1, applied=last, conf_state=ConfState(voters=(1,))), st, random.Random(2))
    assert kept.conf_state() == ConfState(voters=(1,))
    assert not kept.has_ready()


def test_propose_on_follower_is_dropped() -> None:
    c = Cluster(seed=1)
    with pytest.raises(ProposalDroppedError):
        c.node(1).propose(b"x")


def test_three_node_election_and_replication() -> None:
    c = Cluster(seed=3)
    c.campaign(1)
    assert c.node(1).role == StateRole.PRE_CANDIDATE
    c.deliver_all()
    assert c.node(1).role == StateRole.LEADER
    assert c.node(1).term == 2  # term 1 holds the 3 bootstrap conf change entries
    assert c.node(2).lead == 1 and c.node(3).lead == 1
    c.propose(1, b"hello")
    c.deliver_all()
    for nid in (1, 2, 3):
        assert c.nodes[nid].applied_data == [b"hello"]
        assert c.node(nid).commit_index == 5


def test_election_by_timeout_is_randomized_and_unique() -> None:
    c = Cluster(voters=(1, 2, 3, 4, 5), seed=11)
    lead = c.wait_leader()
    assert sum(1 for n in c.nodes.values() if n.raft.role == StateRole.LEADER) == 1
    assert c.try_propose(b"x")
    c.deliver_all()
    assert all(n.applied_data == [b"x"] for n in c.nodes.values())
    assert c.node(lead).role == StateRole.LEADER


def test_group_commit_batches_messages() -> None:
    c = Cluster(seed=4)
    c.campaign(1)
    c.deliver_all()
    lead = c.node(1)
    for i in range(500):
        lead.propose(b"%d" % i)
    rd = lead.ready()
    assert len(rd.entries) == 500
    apps = [m for m in rd.messages if m.type == MessageType.MsgApp]
    assert len(apps) == 2 and all(len(m.entries) == 500 for m in apps)
    # hand it back through the harness driver
    c.nodes[1].storage.append(rd.entries)
    if rd.hard_state:
        c.nodes[1].storage.set_hard_state(rd.hard_state)
    c.network.extend(rd.messages)
    lead.advance(rd)
    c.deliver_all()
    assert all(len(n.applied_data) == 500 for n in c.nodes.values())


def test_replication_after_partition_heals() -> None:
    c = Cluster(seed=5)
    c.campaign(1)
    c.deliver_all()
    c.isolate(3)
    for i in range(5):
        c.propose(1, b"p%d" % i)
    c.deliver_all()
    assert len(c.nodes[1].applied_data) == 5 and len(c.nodes[2].applied_data) == 5
    assert c.nodes[3].applied_data == []
    c.heal()
    c.run(3)
    assert c.nodes[3].applied_data == [b"p%d" % i for i in range(5)]


def test_divergent_follower_log_is_repaired_with_fast_backtracking() -> None:
    c = Cluster(seed=6)
    c.campaign(1)
    c.deliver_all()
    # leader 1 is cut off and accumulates uncommitted entries
    c.isolate(1)
    for i in range(30):
        c.propose(1, b"stale%d" % i)
    c.deliver_all()
    c.run(40)
    new_lead = c.leader()
    assert new_lead in (2, 3)
    c.propose(new_lead, b"fresh")
    c.deliver_all()
    c.heal()
    sent_before = c.sent_count
    c.run(5)
    for nid in (1, 2, 3):
        assert c.nodes[nid].applied_data == [b"fresh"]
    # the 30 conflicting entries were skipped in a few probes, not one by one
    assert c.sent_count - sent_before < 60
    assert c.node(1).role == StateRole.FOLLOWER


def test_pre_vote_prevents_term_inflation() -> None:
    c = Cluster(seed=7)
    c.campaign(1)
    c.deliver_all()
    term = c.node(1).term
    c.isolate(3)
    c.run(100)  # node 3 keeps pre-campaigning but never wins a pre-vote
    assert c.node(3).term == term
    assert c.node(3).role == StateRole.PRE_CANDIDATE
    c.heal()
    c.run(5)
    assert c.node(1).role == StateRole.LEADER and c.node(1).term == term
    assert c.node(3).lead == 1


def test_without_pre_vote_a_partitioned_node_inflates_its_term() -> None:
    c = Cluster(seed=7, pre_vote=False)
    c.campaign(1)
    c.deliver_all()
    term = c.node(1).term
    c.isolate(3)
    c.run(100)
    assert c.node(3).term > term + 2
    c.heal()
    c.run(50)
    assert c.leader() is not None
    lead = c.wait_leader()
    assert c.node(lead).term >= c.node(3).term  # the cluster had to move to its term


def test_check_quorum_leader_steps_down() -> None:
    c = Cluster(seed=8)
    c.campaign(1)
    c.deliver_all()
    c.isolate(1)
    for _ in range(2 * 10 + 1):
        c.tick(1)
    assert c.node(1).role == StateRole.FOLLOWER
    assert c.node(1).lead == 0
    with pytest.raises(ProposalDroppedError):
        c.node(1).propose(b"x")


def test_follower_lease_ignores_disruptive_vote() -> None:
    c = Cluster(seed=9, pre_vote=False)
    c.campaign(1)
    c.deliver_all()
    term = c.node(1).term
    # a vote request at a higher term while node 2 recently heard from leader 1
    m = Message(MessageType.MsgVote, to=2, frm=3, term=term + 5, index=99, log_term=term + 5)
    c.node(2).step(m)
    c.process(2)
    assert c.node(2).term == term and c.node(2).lead == 1
    assert not [x for x in c.network if x.type == MessageType.MsgVoteResp]


def test_stale_leader_learns_higher_term_from_app_resp() -> None:
    c = Cluster(seed=10, check_quorum=False)
    c.campaign(1)
    c.deliver_all()
    old_term = c.node(1).term
    c.isolate(1)
    c.run(40)
    new = c.leader()
    assert new in (2, 3) and c.node(new).term == old_term + 1
    assert c.node(1).role == StateRole.LEADER  # no check-quorum here
    c.heal()
    c.tick(1)  # node 1 still believes it leads and sends a heartbeat
    c.deliver_all()
    assert c.node(1).role == StateRole.FOLLOWER and c.node(1).term == old_term + 1


def test_read_index_single_voter_answers_at_once() -> None:
    n, st = _single()
    n.campaign()
    _drive(n, st)
    n.read_index(b"r1")
    rd = n.ready()
    assert rd.read_states == [ReadState(2, b"r1")]
    n.advance(rd)


def test_read_index_leader_and_follower() -> None:
    c = Cluster(seed=12)
    c.campaign(1)
    c.deliver_all()
    c.propose(1, b"a")
    c.deliver_all()
    c.node(1).read_index(b"L")
    c.process(1)
    assert c.nodes[1].read_states == []  # needs a heartbeat quorum first
    c.deliver_all()
    assert c.nodes[1].read_states == [ReadState(5, b"L")]
    c.node(3).read_index(b"F")
    c.process(3)
    c.deliver_all()
    assert c.nodes[3].read_states == [ReadState(5, b"F")]


def test_read_index_not_confirmed_without_quorum() -> None:
    c = Cluster(seed=13)
    c.campaign(1)
    c.deliver_all()
    c.isolate(1)
    c.node(1).read_index(b"x")
    c.process(1)
    c.deliver_all()
    assert c.nodes[1].read_states == []


def test_read_index_waits_for_commit_in_current_term() -> None:
    c = Cluster(seed=14)
    c.campaign(1)
    c.deliver_all()
    c.isolate(1)
    c.run(40)
    lead = c.leader()
    assert lead in (2, 3)
    other = 5 - lead
    # a fresh leader whose no-op entry is not committed yet queues read requests
    c.heal()
    c.isolate(lead)
    c.run(40)
    nl = c.node(1).lead or c.node(other).lead
    assert nl in (1, other)
    c.heal()
    c.run(5)
    c.node(nl).read_index(b"q")
    c.process(nl)
    c.deliver_all()
    rs = c.nodes[nl].read_states
    assert len(rs) == 1 and rs[0].ctx == b"q" and rs[0].index == c.node(nl).commit_index


def test_snapshot_catch_up() -> None:
    c = Cluster(seed=15)
    c.campaign(1)
    c.deliver_all()
    c.isolate(3)
    for i in range(20):
        c.propose(1, b"s%d" % i)
    c.deliver_all()
    # leader compacts its log past what node 3 has
    n1 = c.node(1)
    snap = n1.compact(n1.applied_index, data=str(c.nodes[1].sm_digest).encode())
    assert snap.metadata.index == 24
    assert c.nodes[1].storage.first_index() == 25
    c.propose(1, b"after")
    c.deliver_all()
    c.heal()
    c.run(3)
    assert c.nodes[3].storage.snapshot().metadata.index == 24
    assert c.nodes[3].sm_index == 25 and c.nodes[3].sm_digest == c.nodes[1].sm_digest
    assert c.nodes[3].applied_data == [b"after"]
    assert c.node(1).status().progress[3].match == 25


def test_learner_add_and_promote() -> None:
    c = Cluster(seed=16)
    c.campaign(1)
    c.deliver_all()
    c.propose(1, b"x")
    c.deliver_all()
    c.add_empty_node(4)
    assert c.node(1).propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4))
    c.process(1)
    c.run(3)
    assert c.node(1).conf_state() == ConfState(voters=(1, 2, 3), learners=(4,))
    assert c.nodes[4].applied_data == [b"x"]
    assert c.node(4).conf_state() == ConfState(voters=(1, 2, 3), learners=(4,))
    # a learner never campaigns
    c.tick(4, 50)
    assert c.node(4).role == StateRole.FOLLOWER
    # learners do not count for the quorum: with 2 and 3 down nothing commits
    c.crash(2)
    c.crash(3)
    c.propose(1, b"y")
    c.deliver_all()
    assert c.node(1).commit_index < c.node(1).last_index
    c.restart(2)
    c.restart(3)
    c.run(5)
    assert c.nodes[4].applied_data == [b"x", b"y"]
    # promote
    assert c.node(1).propose_conf_change(ConfChange(ConfChangeType.ADD_NODE, 4))
    c.process(1)
    c.run(3)
    assert c.node(4).conf_state() == ConfState(voters=(1, 2, 3, 4))
    # now 4 can be elected
    c.node(4).transfer_leadership(4)
    c.process(4)
    c.run(3)
    assert c.node(4).role == StateRole.LEADER


def test_second_pending_conf_change_is_refused() -> None:
    c = Cluster(seed=17)
    c.campaign(1)
    c.deliver_all()
    n1 = c.node(1)
    assert n1.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 4))
    assert not n1.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER_NODE, 5))
    rd = n1.ready()
    assert [e.type for e in rd.entries] == [EntryType.CONF_CHANGE, EntryType.NORMAL]
    assert rd.entries[1].data == b""
    n1.advance(rd)


def test_remove_voter_and_leader_removes_itself() -> None:
    c = Cluster(seed=18)
    c.campaign(1)
    c.deliver_all()
    assert c.node(1).propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    c.process(1)
    c.deliver_all()
    assert c.node(1).conf_state() == ConfState(voters=(1, 2))
    c.crash(3)
    c.propose(1, b"two")
    c.deliver_all()
    assert c.nodes[2].applied_data == [b"two"]
    # the leader removes itself and steps down; node 2 takes over alone
    assert c.node(1).propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))
    c.process(1)
    c.deliver_all()
    c.run(5)
    c.isolate(1)
    lead = c.wait_leader()
    assert lead == 2
    c.propose(2, b"alone")
    c.deliver_all()
    assert c.nodes[2].applied_data == [b"two", b"alone"]


def test_leader_transfer() -> None:
    c = Cluster(seed=19)
    c.campaign(1)
    c.deliver_all()
    c.propose(1, b"x")
    c.deliver_all()
    c.node(1).transfer_leadership(3)
    c.process(1)
    with pytest.raises(ProposalDroppedError):
        c.node(1).propose(b"during")
    c.deliver_all()
    assert c.node(3).role == StateRole.LEADER
    assert c.node(1).lead == 3 and c.node(2).lead == 3
    c.propose(3, b"y")
    c.deliver_all()
    assert all(n.applied_data == [b"x", b"y"] for n in c.nodes.values())


def test_leader_transfer_to_lagging_follower_catches_it_up_first() -> None:
    c = Cluster(seed=20)
    c.campaign(1)
    c.deliver_all()
    c.isolate(3)
    for i in range(5):
        c.propose(1, b"%d" % i)
    c.deliver_all()
    c.heal()
    # requested through a follower: forwarded to the leader
    c.node(2).transfer_leadership(3)
    c.process(2)
    c.deliver_all()
    assert c.node(3).role == StateRole.LEADER
    assert len(c.nodes[3].applied_data) == 5


def test_leader_transfer_aborts_after_election_timeout() -> None:
    c = Cluster(seed=21)
    c.campaign(1)
    c.deliver_all()
    c.isolate(3)
    c.node(1).transfer_leadership(3)
    c.process(1)
    assert c.node(1).status().lead_transferee == 3
    c.tick(1, 10)
    assert c.node(1).status().lead_transferee == 0
    c.heal()
    c.propose(1, b"ok")


def test_crash_restart_multi_node() -> None:
    c = Cluster(seed=22)
    c.campaign(1)
    c.deliver_all()
    for i in range(3):
        c.propose(1, b"%d" % i)
    c.deliver_all()
    for nid in (1, 2, 3):
        c.crash(nid)
    for nid in (1, 2, 3):
        c.restart(nid)
        assert c.node(nid).term == 2
    lead = c.wait_leader()
    c.propose(lead, b"after")
    c.deliver_all()
    # the harness state machines were rebuilt by replaying the log
    for nid in (1, 2, 3):
        assert c.nodes[nid].applied_data[-4:] == [b"0", b"1", b"2", b"after"]


def test_step_rejects_local_messages() -> None:
    n, _ = _single()
    from meshkit.server.raft import StepLocalMessageError

    with pytest.raises(StepLocalMessageError):
        n.step(Message(MessageType.MsgHup, to=1, frm=2))


def test_config_validate_names_every_problem() -> None:
    with pytest.raises(ValueError, match=r"id must be.*election_tick"):
        RaftConfig(id=0, election_tick=1, heartbeat_tick=1).validate()
