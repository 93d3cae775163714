"""The Raft state machine (election, replication, ReadIndex, snapshots, membership).

Pure and deterministic: time is ``tick()``, randomness is the ``random.Random`` given
to the constructor, I/O is the driver's job (see ``RaftNode.ready``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from meshkit.server.raft.log import RaftLog
from meshkit.server.raft.messages import (
    LOCAL_MESSAGES,
    CompactedError,
    ConfChange,
    ConfChangeType,
    Message,
    MessageType,
    ProposalDroppedError,
    RaftInvariantError,
    ReadState,
    Ready,
    SnapshotTemporarilyUnavailableError,
    SoftState,
    StateRole,
    StepLocalMessageError,
)
from meshkit.server.raft.progress import (
    Progress,
    ProgressState,
    ProgressStatus,
    ProgressTracker,
    VoteResult,
)
from meshkit.server.raft.readonly import ReadOnly
from meshkit.server.raft.storage import MemoryStorage
from meshkit.server.raft.types import ConfState, Entry, EntryType, HardState, Snapshot

MT = MessageType

CAMPAIGN_TRANSFER = b"CampaignTransfer"

_PEER_RESPONSES = frozenset({MT.MsgAppResp, MT.MsgHeartbeatResp})
_VOTE_TYPES = frozenset({MT.MsgVote, MT.MsgVoteResp, MT.MsgPreVote, MT.MsgPreVoteResp})


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Static configuration of one Raft member.

    ``election_tick``: ticks without hearing from a leader before campaigning (the actual
    timeout is drawn from [election_tick, 2*election_tick)). ``heartbeat_tick``: ticks
    between leader heartbeats. ``applied``: the last index the driver's state machine has
    already applied (entries up to it are not handed out again after a restart).
    ``conf_state``: the configuration as of ``applied``, for a driver that decides
    which membership changes take effect (etcd's server refuses some when it applies
    them, and never hands those to Raft): used instead of replaying the log's
    changes up to ``applied``, which would count the refused ones too.
    """

    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    applied: int = 0
    conf_state: ConfState | None = None

    def validate(self) -> None:
        problems = []
        if self.id <= 0:
            problems.append("id must be a positive integer")
        if self.heartbeat_tick <= 0:
            problems.append("heartbeat_tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            problems.append("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            problems.append("max_inflight_msgs must be greater than 0")
        if self.max_size_per_msg <= 0:
            problems.append("max_size_per_msg must be greater than 0")
        if self.applied < 0:
            problems.append("applied must not be negative")
        if problems:
            raise ValueError("invalid RaftConfig: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class RaftStatus:
    id: int
    term: int
    vote: int
    commit: int
    applied: int
    lead: int
    role: StateRole
    progress: dict[int, ProgressStatus] = field(default_factory=dict)
    lead_transferee: int = 0


class RaftNode:
    """One Raft member. Not thread-safe: the driver calls it from one thread/task."""

    def __init__(self, config: RaftConfig, storage: MemoryStorage, rand: random.Random) -> None:
        config.validate()
        self.id = config.id
        self._cfg = config
        self._rand = rand
        self._storage = storage
        self._log = RaftLog(storage)
        self._election_timeout = config.election_tick
        self._heartbeat_timeout = config.heartbeat_tick
        self._max_msg_size = config.max_size_per_msg
        self._tracker = ProgressTracker(config.max_inflight_msgs)
        self._term = 0
        self._vote = 0
        self._lead = 0
        self._role = StateRole.FOLLOWER
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._read_only = ReadOnly()
        self._pending_read_index_msgs: list[Message] = []
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_election_timeout = config.election_tick
        self._lead_transferee = 0
        self._pending_conf_index = 0
        self._bcast_pending = False
        self._awaiting_advance = False
        self._bootstrap_index = 0  # bootstrap conf changes are in the tracker before applied

        hs, cs = storage.initial_state()
        self._apply_conf_state(cs)
        if not hs.is_empty():
            self._load_state(hs)
        elif storage.last_index() == 0 and storage.bootstrap_conf is not None:
            self._bootstrap(storage.bootstrap_conf)
        if config.applied > 0:
            self._log.applied_to(config.applied)
        # Membership changes already applied by the driver before a restart are in the log
        # after the snapshot: replay them here (the rest come back as committed entries).
        lg = self._log
        lo = max(lg.first_index(), storage.snapshot().metadata.index + 1)
        if lg.applied >= lo:
            if config.conf_state is not None:
                self._apply_conf_state(config.conf_state)
            else:
                for e in lg.slice(lo, lg.applied + 1):
                    if e.type == EntryType.CONF_CHANGE:
                        self._change_tracker(ConfChange.decode(e.data))
        self._become_follower(self._term, 0)
        self._prev_soft = SoftState(self._lead, self._role)
        self._prev_hard = hs  # what storage holds: a bootstrap's new state shows in the first Ready

    # ------------------------------------------------------------------ properties

    @property
    def term(self) -> int:
        return self._term

    @property
    def lead(self) -> int:
        return self._lead

    @property
    def role(self) -> StateRole:
        return self._role

    @property
    def vote(self) -> int:
        return self._vote

    @property
    def commit_index(self) -> int:
        return self._log.committed

    @property
    def applied_index(self) -> int:
        return self._log.applied

    @property
    def last_index(self) -> int:
        return self._log.last_index()

    @property
    def raft_log(self) -> RaftLog:
        return self._log

    def conf_state(self) -> ConfState:
        return self._tracker.conf_state()

    def status(self) -> RaftStatus:
        prs: dict[int, ProgressStatus] = {}
        if self._role == StateRole.LEADER:
            for i in self._tracker.ids():
                p = self._tracker.progress[i]
                prs[i] = ProgressStatus(p.match, p.next, p.state, p.is_learner, p.recent_active)
        return RaftStatus(
            id=self.id,
            term=self._term,
            vote=self._vote,
            commit=self._log.committed,
            applied=self._log.applied,
            lead=self._lead,
            role=self._role,
            progress=prs,
            lead_transferee=self._lead_transferee,
        )

    # ------------------------------------------------------------------ public driver API

    def tick(self) -> None:
        if self._role == StateRole.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def campaign(self) -> None:
        self._step(Message(MT.MsgHup, frm=self.id))

    def step(self, m: Message) -> None:
        """Feed a message received from a peer."""
        if m.type in LOCAL_MESSAGES:
            raise StepLocalMessageError(f"{m.type.name} is local and cannot come from a peer")
        if m.type in _PEER_RESPONSES and m.frm not in self._tracker.progress:
            return  # response from a member that is no longer in the configuration
        self._step(m)

    def propose(self, data: bytes) -> None:
        """Append a normal entry; raises ProposalDroppedError unless this node leads."""
        self._check_can_propose()
        self._step(Message(MT.MsgProp, frm=self.id, entries=(Entry(0, 0, EntryType.NORMAL, data),)))

    def propose_many(self, datas: Sequence[bytes]) -> None:
        """Append several normal entries in one step (one MsgProp): what a driver's
        group commit wants; raises ProposalDroppedError unless this node leads."""
        if not datas:
            return
        self._check_can_propose()
        normal = EntryType.NORMAL
        self._step(
            Message(MT.MsgProp, frm=self.id, entries=tuple(Entry(0, 0, normal, d) for d in datas))
        )

    def propose_conf_change(self, cc: ConfChange) -> bool:
        """Propose a membership change. Returns False when another change is still pending
        (the proposal is then turned into an empty normal entry, as etcd-raft does)."""
        self._check_can_propose()
        t = self._tracker
        if cc.node_id <= 0:
            raise ValueError(f"invalid node id {cc.node_id} in conf change")
        removes_voter = cc.type == ConfChangeType.REMOVE_NODE or (
            cc.type == ConfChangeType.ADD_LEARNER_NODE
        )
        if removes_voter and t.voters == {cc.node_id}:
            raise ValueError(f"conf change {cc.type.name} would leave no voter")
        before = self._pending_conf_index
        self._step(
            Message(
                MT.MsgProp,
                frm=self.id,
                entries=(Entry(0, 0, EntryType.CONF_CHANGE, cc.encode()),),
            )
        )
        return self._pending_conf_index != before

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed CONF_CHANGE entry to the configuration (called by the driver,
        in log order, for every CONF_CHANGE entry in ``Ready.committed_entries``)."""
        self._change_tracker(cc)
        self._after_conf_change()
        return self._tracker.conf_state()

    def _change_tracker(self, cc: ConfChange) -> None:
        t = self._tracker
        nid = cc.node_id
        if nid <= 0:
            raise ValueError(f"invalid node id {nid} in conf change")
        if cc.type == ConfChangeType.ADD_NODE:
            if nid in t.learners:
                t.learners.discard(nid)
                t.progress[nid].is_learner = False
            elif nid not in t.voters:
                t.progress[nid] = self._new_progress(nid, is_learner=False)
            t.voters.add(nid)
        elif cc.type == ConfChangeType.ADD_LEARNER_NODE:
            if nid in t.voters:
                t.voters.discard(nid)
                t.progress[nid].is_learner = True
            elif nid not in t.learners:
                t.progress[nid] = self._new_progress(nid, is_learner=True)
            t.learners.add(nid)
        elif cc.type == ConfChangeType.REMOVE_NODE:
            t.voters.discard(nid)
            t.learners.discard(nid)
            t.progress.pop(nid, None)
        elif cc.type == ConfChangeType.UPDATE_NODE:
            pass
        else:
            raise NotImplementedError(f"conf change type {cc.type!r} is not supported")

    def read_index(self, ctx: bytes) -> None:
        """Request a linearizable read point; the answer is ReadState(index, ctx) in a later
        Ready. ctx must be non-empty and unique among pending requests. Raises
        ProposalDroppedError when no leader is known (retry later)."""
        if not ctx:
            raise ValueError("read_index needs a non-empty context")
        if self._lead == 0:
            raise ProposalDroppedError("no leader: read index dropped")
        self._step(Message(MT.MsgReadIndex, frm=self.id, context=ctx))

    def transfer_leadership(self, target: int) -> None:
        self._step(Message(MT.MsgTransferLeader, frm=target, to=self.id))

    def report_unreachable(self, node_id: int) -> None:
        """The driver failed to send to node_id: stop streaming to it optimistically."""
        self._step(Message(MT.MsgUnreachable, frm=node_id))

    def report_snapshot(self, node_id: int, failed: bool) -> None:
        """The driver finished (or failed) sending a MsgSnap to node_id. Must be called after
        every MsgSnap, or replication to that follower stays paused."""
        self._step(Message(MT.MsgSnapStatus, frm=node_id, reject=failed))

    def has_ready(self) -> bool:
        if self._awaiting_advance:
            return False
        if self._bcast_pending or self._msgs or self._read_states:
            return True
        lg = self._log
        if lg.unstable.entries or lg.unstable.snapshot is not None:
            return True
        if lg.has_next_committed_ents():
            return True
        if SoftState(self._lead, self._role) != self._prev_soft:
            return True
        return HardState(self._term, self._vote, lg.committed) != self._prev_hard

    def ready(self) -> Ready:
        """Collect what the driver must do. Contract, in order:
        persist ``snapshot``, ``entries`` and ``hard_state`` (fsync if ``must_sync``) and mirror
        them into the MemoryStorage; then send ``messages``; apply ``committed_entries``;
        serve ``read_states``; then call ``advance(rd)`` before the next ``ready()``.

        ``committed_entries`` may include entries carried in the same Ready's ``entries``
        (a single voter commits what it appends): persist before applying.
        """
        if self._awaiting_advance:
            raise RaftInvariantError("ready() called again before advance()")
        if self._bcast_pending:
            self._flush_bcast()
        lg = self._log
        rd = Ready(
            entries=lg.unstable_entries(),
            committed_entries=lg.next_committed_ents(),
            messages=self._msgs,
            read_states=self._read_states,
        )
        self._msgs = []
        self._read_states = []
        ss = SoftState(self._lead, self._role)
        if ss != self._prev_soft:
            rd.soft_state = ss
            self._prev_soft = ss
        hs = HardState(self._term, self._vote, lg.committed)
        if hs != self._prev_hard:
            rd.hard_state = hs
            rd.must_sync = hs.term != self._prev_hard.term or hs.vote != self._prev_hard.vote
            self._prev_hard = hs
        if lg.unstable.snapshot is not None:
            rd.snapshot = lg.unstable.snapshot
            rd.must_sync = True
        if rd.entries:
            rd.must_sync = True
        self._awaiting_advance = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted and applied everything in ``rd``."""
        self._awaiting_advance = False
        lg = self._log
        if not rd.snapshot.is_empty():
            lg.stable_snap_to(rd.snapshot.metadata.index)
            if rd.snapshot.metadata.index > lg.applied:
                lg.applied_to(rd.snapshot.metadata.index)
        if rd.entries:
            last = rd.entries[-1]
            lg.stable_to(last.index, last.term)
        if rd.committed_entries:
            lg.applied_to(rd.committed_entries[-1].index)

    def compact(self, index: int, data: bytes = b"", retain_entries: int = 0) -> Snapshot:
        """Snapshot the state machine at ``index`` (<= applied) into storage and drop log
        entries up to ``index - retain_entries``. The node's current ConfState is recorded,
        so no conf change may have been applied after ``index``."""
        lg = self._log
        if index > lg.applied:
            raise ValueError(f"compact index {index} is beyond applied {lg.applied}")
        if index < lg.applied:
            for e in lg.slice(index + 1, lg.applied + 1):
                if e.type == EntryType.CONF_CHANGE:
                    raise ValueError(
                        f"conf change at {e.index} applied after {index}: compact at applied"
                    )
        snap = self._storage.create_snapshot(index, self._tracker.conf_state(), data)
        cut = index - retain_entries
        if cut > self._storage.first_index() - 1:
            self._storage.compact(cut)
        return snap

    # ------------------------------------------------------------------ state transitions

    def _check_can_propose(self) -> None:
        if self._role != StateRole.LEADER:
            raise ProposalDroppedError(f"not the leader (leader is {self._lead or 'unknown'})")
        if self._lead_transferee != 0:
            raise ProposalDroppedError("leadership transfer in progress")
        if self.id not in self._tracker.progress:
            raise ProposalDroppedError("this member is not in the configuration")

    def _load_state(self, hs: HardState) -> None:
        if hs.commit < self._log.committed or hs.commit > self._log.last_index():
            raise RaftInvariantError(
                f"hard state commit {hs.commit} out of range "
                f"[{self._log.committed}, {self._log.last_index()}]"
            )
        self._log.committed = hs.commit
        self._term = hs.term
        self._vote = hs.vote

    def _apply_conf_state(self, cs: ConfState) -> None:
        t = self._tracker
        t.voters = set(cs.voters)
        t.learners = set(cs.learners)
        if t.voters & t.learners:
            raise RaftInvariantError(f"ids both voter and learner in {cs}")
        t.progress = {}
        for nid in sorted(t.voters | t.learners):
            t.progress[nid] = self._new_progress(nid, nid in t.learners)

    def _bootstrap(self, cs: ConfState) -> None:
        changes = [ConfChange(ConfChangeType.ADD_NODE, v) for v in cs.voters]
        changes += [ConfChange(ConfChangeType.ADD_LEARNER_NODE, v) for v in cs.learners]
        ents = [Entry(1, i + 1, EntryType.CONF_CHANGE, cc.encode()) for i, cc in enumerate(changes)]
        self._log.append(ents)
        self._log.committed = len(ents)
        self._term = 1
        self._bootstrap_index = len(ents)
        for cc in changes:
            self._change_tracker(cc)

    def _new_progress(self, nid: int, is_learner: bool) -> Progress:
        last = self._log.last_index()
        pr = Progress(last + 1, self._tracker.max_inflight, is_learner)
        pr.recent_active = True
        if nid == self.id:
            pr.match = last
        return pr

    def _reset_randomized_election_timeout(self) -> None:
        self._randomized_election_timeout = self._election_timeout + self._rand.randrange(
            self._election_timeout
        )

    def _reset(self, term: int) -> None:
        if self._term != term:
            self._term = term
            self._vote = 0
        self._lead = 0
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self._lead_transferee = 0
        self._tracker.reset_votes()
        last = self._log.last_index()
        for nid, old in self._tracker.progress.items():
            pr = Progress(last + 1, self._tracker.max_inflight, old.is_learner)
            if nid == self.id:
                pr.match = last
                pr.recent_active = True
            self._tracker.progress[nid] = pr
        self._pending_conf_index = 0
        self._read_only = ReadOnly()
        self._pending_read_index_msgs = []
        self._bcast_pending = False

    def _become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self._lead = lead
        self._role = StateRole.FOLLOWER

    def _become_candidate(self) -> None:
        if self._role == StateRole.LEADER:
            raise RaftInvariantError("invalid transition [leader -> candidate]")
        self._reset(self._term + 1)
        self._vote = self.id
        self._role = StateRole.CANDIDATE

    def _become_pre_candidate(self) -> None:
        if self._role == StateRole.LEADER:
            raise RaftInvariantError("invalid transition [leader -> pre-candidate]")
        self._tracker.reset_votes()
        self._lead = 0
        self._role = StateRole.PRE_CANDIDATE

    def _become_leader(self) -> None:
        if self._role == StateRole.FOLLOWER:
            raise RaftInvariantError("invalid transition [follower -> leader]")
        self._reset(self._term)
        self._lead = self.id
        self._role = StateRole.LEADER
        self._tracker.progress[self.id].become_replicate()
        # Conservatively assume the tail of the log may hold an unapplied conf change.
        self._pending_conf_index = self._log.last_index()
        self._append_entries([Entry(0, 0)])

    # ------------------------------------------------------------------ ticking

    def _promotable(self) -> bool:
        return self.id in self._tracker.voters

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._promotable() and self._election_elapsed >= self._randomized_election_timeout:
            self._election_elapsed = 0
            self._step(Message(MT.MsgHup, frm=self.id))

    def _tick_heartbeat(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self._election_timeout:
            self._election_elapsed = 0
            if self._cfg.check_quorum:
                self._step(Message(MT.MsgCheckQuorum, frm=self.id))
            if self._role == StateRole.LEADER and self._lead_transferee != 0:
                self._lead_transferee = 0  # transfer did not finish within an election timeout
        if self._role != StateRole.LEADER:
            return
        if self._heartbeat_elapsed >= self._heartbeat_timeout:
            self._heartbeat_elapsed = 0
            self._step(Message(MT.MsgBeat, frm=self.id))

    # ------------------------------------------------------------------ elections

    def _has_unapplied_conf_change(self) -> bool:
        lg = self._log
        done = max(lg.applied, self._bootstrap_index)
        if lg.committed <= done:
            return False
        lo = max(done + 1, lg.first_index())
        return any(e.type == EntryType.CONF_CHANGE for e in lg.slice(lo, lg.committed + 1))

    def _hup(self, transfer: bool) -> None:
        if self._role == StateRole.LEADER or not self._promotable():
            return
        if self._has_unapplied_conf_change():
            return
        if self._cfg.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            vote_type = MT.MsgPreVote
            term = self._term + 1
        else:
            self._become_candidate()
            vote_type = MT.MsgVote
            term = self._term
        self._tracker.record_vote(self.id, True)
        _, _, result = self._tracker.tally_votes()
        if result == VoteResult.WON:
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        last = self._log.last_index()
        last_term = self._log.last_term()
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        for nid in sorted(self._tracker.voters):
            if nid == self.id:
                continue
            self._send(
                Message(vote_type, to=nid, term=term, index=last, log_term=last_term, context=ctx)
            )

    # ------------------------------------------------------------------ step

    def _send(self, m: Message) -> None:
        m.frm = self.id
        if m.type in _VOTE_TYPES:
            if m.term == 0:
                raise RaftInvariantError(f"term must be set when sending {m.type.name}")
        else:
            if m.term != 0:
                raise RaftInvariantError(f"term must not be set when sending {m.type.name}")
            if m.type != MT.MsgReadIndex:
                m.term = self._term
        self._msgs.append(m)

    def _step(self, m: Message) -> None:
        if m.term == 0:
            pass  # local message
        elif m.term > self._term:
            if m.type in (MT.MsgVote, MT.MsgPreVote):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self._cfg.check_quorum
                    and self._lead != 0
                    and self._election_elapsed < self._election_timeout
                )
                if not force and in_lease:
                    return  # we heard from a leader recently: ignore the disruptive candidate
            if m.type == MT.MsgPreVote:
                pass  # never change term on a pre-vote request
            elif m.type == MT.MsgPreVoteResp and not m.reject:
                pass  # the term moves when the pre-candidate actually campaigns
            elif m.type in (MT.MsgApp, MT.MsgHeartbeat, MT.MsgSnap):
                self._become_follower(m.term, m.frm)
            else:
                self._become_follower(m.term, 0)
        elif m.term < self._term:
            if (self._cfg.check_quorum or self._cfg.pre_vote) and m.type in (
                MT.MsgHeartbeat,
                MT.MsgApp,
            ):
                # A stale leader: tell it our term so it steps down (it may be stuck
                # otherwise, since with pre-vote we never raise our term by campaigning).
                self._send(Message(MT.MsgAppResp, to=m.frm))
            elif m.type == MT.MsgPreVote:
                self._send(Message(MT.MsgPreVoteResp, to=m.frm, term=self._term, reject=True))
            return

        if m.type == MT.MsgHup:
            self._hup(transfer=False)
        elif m.type in (MT.MsgVote, MT.MsgPreVote):
            can_vote = (
                self._vote == m.frm
                or (self._vote == 0 and self._lead == 0)
                or (m.type == MT.MsgPreVote and m.term > self._term)
            )
            resp = MT.MsgVoteResp if m.type == MT.MsgVote else MT.MsgPreVoteResp
            if can_vote and self._log.is_up_to_date(m.index, m.log_term):
                self._send(Message(resp, to=m.frm, term=m.term))
                if m.type == MT.MsgVote:
                    self._election_elapsed = 0
                    self._vote = m.frm
            else:
                self._send(Message(resp, to=m.frm, term=self._term, reject=True))
        elif self._role == StateRole.LEADER:
            self._step_leader(m)
        elif self._role in (StateRole.CANDIDATE, StateRole.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.MsgBeat:
            self._bcast_heartbeat()
            return
        if t == MT.MsgCheckQuorum:
            if not self._tracker.quorum_active(self.id):
                self._become_follower(self._term, 0)
                return
            for nid, other in self._tracker.progress.items():
                if nid != self.id:
                    other.recent_active = False
            return
        if t == MT.MsgProp:
            self._leader_propose(m)
            return
        if t == MT.MsgReadIndex:
            if self._tracker.is_singleton():
                self._respond_read_index(m, self._log.committed)
            elif not self._committed_entry_in_current_term():
                self._pending_read_index_msgs.append(m)
            else:
                self._send_read_index_heartbeats(m)
            return

        pr = self._tracker.progress.get(m.frm)
        if pr is None:
            return
        if t == MT.MsgAppResp:
            self._handle_app_resp(m, pr)
        elif t == MT.MsgHeartbeatResp:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self._log.last_index():
                self._send_append(m.frm)
            if not m.context:
                return
            acks = self._read_only.recv_ack(m.frm, m.context)
            if acks is None:
                return
            if sum(1 for v in self._tracker.voters if v in acks) < self._tracker.quorum():
                return
            for rs in self._read_only.advance(m.context):
                self._respond_read_index(rs.req, rs.index)
        elif t == MT.MsgSnapStatus:
            if pr.state != ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            pr.probe_sent = True  # wait for a heartbeat response or MsgAppResp first
        elif t == MT.MsgUnreachable:
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
        elif t == MT.MsgTransferLeader:
            if pr.is_learner:
                return
            transferee = m.frm
            if self._lead_transferee != 0:
                if self._lead_transferee == transferee:
                    return
                self._lead_transferee = 0
            if transferee == self.id:
                return
            self._election_elapsed = 0
            self._lead_transferee = transferee
            if pr.match == self._log.last_index():
                self._send(Message(MT.MsgTimeoutNow, to=transferee))
            else:
                self._send_append(transferee)

    def _leader_propose(self, m: Message) -> None:
        if not m.entries:
            raise RaftInvariantError("stepped an empty MsgProp")
        if self.id not in self._tracker.progress:
            raise ProposalDroppedError("this member is not in the configuration")
        if self._lead_transferee != 0:
            raise ProposalDroppedError("leadership transfer in progress")
        ents = list(m.entries)
        base = self._log.last_index() + 1
        for i, e in enumerate(ents):
            if e.type == EntryType.CONF_CHANGE:
                if self._pending_conf_index > self._log.applied:
                    ents[i] = Entry(0, 0)  # one change at a time: drop it, keep the slot
                else:
                    self._pending_conf_index = base + i
        self._append_entries(ents)
        self._bcast_pending = True

    def _handle_app_resp(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        lg = self._log
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = lg.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.frm)
            return
        old_paused = pr.is_paused()
        if not (
            pr.maybe_update(m.index) or (pr.match == m.index and pr.state == ProgressState.PROBE)
        ):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= lg.first_index():
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            self._release_pending_read_index_msgs()
            self._bcast_append()
        elif old_paused:
            self._send_append(m.frm)
        while self._maybe_send_append(m.frm, send_if_empty=False):
            pass
        if m.frm == self._lead_transferee and pr.match == lg.last_index():
            self._send(Message(MT.MsgTimeoutNow, to=m.frm))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = MT.MsgPreVoteResp if self._role == StateRole.PRE_CANDIDATE else MT.MsgVoteResp
        if t == MT.MsgProp:
            raise ProposalDroppedError("no leader")
        if t == MT.MsgApp:
            self._become_follower(m.term, m.frm)
            self._handle_append_entries(m)
        elif t == MT.MsgHeartbeat:
            self._become_follower(m.term, m.frm)
            self._handle_heartbeat(m)
        elif t == MT.MsgSnap:
            self._become_follower(m.term, m.frm)
            self._handle_snapshot(m)
        elif t == my_resp:
            self._tracker.record_vote(m.frm, not m.reject)
            _, _, result = self._tracker.tally_votes()
            if result == VoteResult.WON:
                if self._role == StateRole.PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self._become_leader()
                    self._bcast_append()
            elif result == VoteResult.LOST:
                self._become_follower(self._term, 0)
        # MsgTimeoutNow, MsgReadIndex, ...: ignored while campaigning

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.MsgProp:
            raise ProposalDroppedError(f"not the leader (leader is {self._lead or 'unknown'})")
        if t == MT.MsgApp:
            self._election_elapsed = 0
            self._lead = m.frm
            self._handle_append_entries(m)
        elif t == MT.MsgHeartbeat:
            self._election_elapsed = 0
            self._lead = m.frm
            self._handle_heartbeat(m)
        elif t == MT.MsgSnap:
            self._election_elapsed = 0
            self._lead = m.frm
            self._handle_snapshot(m)
        elif t == MT.MsgTransferLeader:
            if self._lead != 0:
                self._send(Message(MT.MsgTransferLeader, to=self._lead))
                self._msgs[-1].frm = m.frm  # keep the transferee as the sender
        elif t == MT.MsgTimeoutNow:
            self._hup(transfer=True)
        elif t == MT.MsgReadIndex:
            # only our own requests are forwarded: a peer's request that reached us because
            # it believed we lead is dropped (its driver retries after a timeout)
            if self._lead != 0 and m.frm == self.id:
                self._send(Message(MT.MsgReadIndex, to=self._lead, context=m.context))
        elif t == MT.MsgReadIndexResp:
            self._read_states.append(ReadState(m.index, m.context))

    # ------------------------------------------------------------------ follower handlers

    def _handle_append_entries(self, m: Message) -> None:
        lg = self._log
        if m.index < lg.committed:
            self._send(Message(MT.MsgAppResp, to=m.frm, index=lg.committed))
            return
        last_new = lg.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self._send(Message(MT.MsgAppResp, to=m.frm, index=last_new))
            return
        hint_index = min(m.index, lg.last_index())
        hint_index, hint_term = lg.find_conflict_by_term(hint_index, m.log_term)
        self._send(
            Message(
                MT.MsgAppResp,
                to=m.frm,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self._log.commit_to(m.commit)
        self._send(Message(MT.MsgHeartbeatResp, to=m.frm, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None or snap.is_empty():
            raise RaftInvariantError("MsgSnap without a snapshot")
        if self._restore(snap):
            self._send(Message(MT.MsgAppResp, to=m.frm, index=self._log.last_index()))
        else:
            self._send(Message(MT.MsgAppResp, to=m.frm, index=self._log.committed))

    def _restore(self, snap: Snapshot) -> bool:
        lg = self._log
        md = snap.metadata
        if md.index <= lg.committed:
            return False
        if lg.match_term(md.index, md.term):
            lg.commit_to(md.index)  # we already have the log: just fast-forward the commit
            return False
        lg.restore(snap)
        self._apply_conf_state(md.conf_state)
        return True

    # ------------------------------------------------------------------ leader helpers

    def _committed_entry_in_current_term(self) -> bool:
        return self._log.zero_term_on_range_err(self._log.committed) == self._term

    def _append_entries(self, ents: list[Entry]) -> None:
        lg = self._log
        li = lg.last_index()
        term = self._term
        fixed = [Entry(term, li + 1 + i, e.type, e.data) for i, e in enumerate(ents)]
        li = lg.append(fixed)
        self._tracker.progress[self.id].maybe_update(li)
        self._maybe_commit()

    def _maybe_commit(self) -> bool:
        return self._log.maybe_commit(self._tracker.committed(), self._term)

    def _flush_bcast(self) -> None:
        self._bcast_pending = False
        if self._role != StateRole.LEADER:
            return
        for nid in self._tracker.ids():
            if nid != self.id:
                while self._maybe_send_append(nid, send_if_empty=False):
                    pass

    def _bcast_append(self) -> None:
        for nid in self._tracker.ids():
            if nid != self.id:
                self._send_append(nid)

    def _send_append(self, to: int) -> None:
        self._maybe_send_append(to, send_if_empty=True)

    def _maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        pr = self._tracker.progress[to]
        if pr.is_paused():
            return False
        lg = self._log
        prev_index = pr.next - 1
        try:
            prev_term = lg.term(prev_index)
            ents = lg.entries(pr.next, self._max_msg_size)
        except CompactedError:
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self._send(
            Message(
                MT.MsgApp,
                to=to,
                index=prev_index,
                log_term=prev_term,
                entries=tuple(ents),
                commit=lg.committed,
            )
        )
        if pr.state == ProgressState.REPLICATE:
            if ents:
                last = ents[-1].index
                pr.optimistic_update(last)
                pr.inflights.add(last)
        elif pr.state == ProgressState.PROBE:
            pr.probe_sent = True
        else:
            raise RaftInvariantError(f"sending append to {to} in state {pr.state.name}")
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        try:
            snap = self._log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        if snap.is_empty():
            raise RaftInvariantError("need a non-empty snapshot to catch up a follower")
        pr.become_snapshot(snap.metadata.index)
        self._send(Message(MT.MsgSnap, to=to, snapshot=snap))
        return True

    def _bcast_heartbeat(self) -> None:
        self._bcast_heartbeat_ctx(self._read_only.last_pending_ctx())

    def _bcast_heartbeat_ctx(self, ctx: bytes) -> None:
        for nid in self._tracker.ids():
            if nid == self.id:
                continue
            pr = self._tracker.progress[nid]
            commit = min(pr.match, self._log.committed)
            self._send(Message(MT.MsgHeartbeat, to=nid, commit=commit, context=ctx))

    def _send_read_index_heartbeats(self, m: Message) -> None:
        self._read_only.add_request(self._log.committed, m)
        self._read_only.recv_ack(self.id, m.context)
        self._bcast_heartbeat_ctx(m.context)

    def _release_pending_read_index_msgs(self) -> None:
        if not self._pending_read_index_msgs or not self._committed_entry_in_current_term():
            return
        msgs = self._pending_read_index_msgs
        self._pending_read_index_msgs = []
        for m in msgs:
            self._send_read_index_heartbeats(m)

    def _respond_read_index(self, req: Message, index: int) -> None:
        if req.frm == self.id or req.frm == 0:
            self._read_states.append(ReadState(index, req.context))
        else:
            self._send(Message(MT.MsgReadIndexResp, to=req.frm, index=index, context=req.context))

    def _after_conf_change(self) -> None:
        if self._role != StateRole.LEADER:
            return
        if self.id not in self._tracker.voters:
            # removed or demoted: stop leading, the remaining voters elect a new leader
            self._become_follower(self._term, 0)
            return
        if self._maybe_commit():
            self._bcast_append()
        else:
            for nid in self._tracker.ids():
                if nid != self.id:
                    self._maybe_send_append(nid, send_if_empty=False)
        if self._lead_transferee != 0 and self._lead_transferee not in self._tracker.voters:
            self._lead_transferee = 0
