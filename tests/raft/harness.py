"""A seeded, simulated network of RaftNodes with invariant checks after every step.

The harness plays the driver: it persists each Ready into the node's MemoryStorage
(which doubles as the node's durable state), queues messages on a simulated network,
applies committed entries to a tiny state machine (a crc32 hash chain) and advances.
"""

from __future__ import annotations

import dataclasses
import random
import zlib
from dataclasses import dataclass, field

from meshkit.server.raft import (
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDroppedError,
    RaftConfig,
    RaftNode,
    ReadState,
    StateRole,
)


class InvariantViolation(AssertionError):
    pass


@dataclass
class SimNode:
    id: int
    storage: MemoryStorage
    node: RaftNode | None
    sm_index: int = 0
    sm_digest: int = 0
    applied_data: list[bytes] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    incarnation: int = 0

    @property
    def alive(self) -> bool:
        return self.node is not None

    @property
    def raft(self) -> RaftNode:
        if self.node is None:
            raise AssertionError(f"node {self.id} is down")
        return self.node


def _chain(digest: int, e: Entry) -> int:
    return zlib.crc32(e.data, zlib.crc32(e.term.to_bytes(8, "big"), digest))


class Cluster:
    def __init__(
        self,
        voters: tuple[int, ...] = (1, 2, 3),
        learners: tuple[int, ...] = (),
        seed: int = 0,
        *,
        election_tick: int = 10,
        heartbeat_tick: int = 1,
        pre_vote: bool = True,
        check_quorum: bool = True,
        max_inflight: int = 256,
        max_size: int = 1 << 20,
    ) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.cfg_kw = dict(
            election_tick=election_tick,
            heartbeat_tick=heartbeat_tick,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            max_inflight_msgs=max_inflight,
            max_size_per_msg=max_size,
        )
        self.nodes: dict[int, SimNode] = {}
        self.network: list[Message] = []
        self.cut: set[tuple[int, int]] = set()  # directed links that drop everything
        self.leaders_by_term: dict[int, int] = {}
        # index -> (entry, digest after applying it, smallest term seen at apply time)
        self.applied: dict[int, tuple[Entry, int, int]] = {}
        self.sent_count = 0
        for nid in (*voters, *learners):
            st = MemoryStorage()
            st.bootstrap(ConfState(voters=tuple(voters), learners=tuple(learners)))
            self.nodes[nid] = SimNode(nid, st, None)
            self._start(nid)
        self.check_all()

    # -- lifecycle ---------------------------------------------------------------------

    def _start(self, nid: int) -> None:
        sn = self.nodes[nid]
        snap = sn.storage.snapshot()
        sn.sm_index = snap.metadata.index
        sn.sm_digest = int(snap.data.decode()) if snap.data else 0
        sn.incarnation += 1
        cfg = RaftConfig(id=nid, applied=0, **self.cfg_kw)  # type: ignore[arg-type]
        rand = random.Random(self.seed * 7919 + nid * 104729 + sn.incarnation)
        sn.node = RaftNode(cfg, sn.storage, rand)

    def add_empty_node(self, nid: int) -> SimNode:
        """A brand-new member with an empty storage (to be added by a conf change)."""
        self.nodes[nid] = SimNode(nid, MemoryStorage(), None)
        self._start(nid)
        return self.nodes[nid]

    def crash(self, nid: int) -> None:
        self.nodes[nid].node = None

    def restart(self, nid: int) -> None:
        """Restart from the durable state, rebuilding the MemoryStorage as a driver would."""
        sn = self.nodes[nid]
        if sn.node is None:
            old = sn.storage
            st = MemoryStorage()
            if old.bootstrap_conf is not None:
                st.bootstrap(old.bootstrap_conf)
            snap = old.snapshot()
            if not snap.is_empty():
                st.apply_snapshot(snap)
            st.set_hard_state(old.hard_state)
            lo = snap.metadata.index + 1
            if old.last_index() >= lo:
                st.append(old.entries(lo, old.last_index() + 1))
            sn.storage = st
            self._start(nid)
            self.process(nid)

    def node(self, nid: int) -> RaftNode:
        return self.nodes[nid].raft

    # -- the driver loop ----------------------------------------------------------------

    def process(self, nid: int) -> None:
        sn = self.nodes[nid]
        n = sn.node
        if n is None:
            return
        while n.has_ready():
            rd = n.ready()
            st = sn.storage
            if not rd.snapshot.is_empty():
                st.apply_snapshot(rd.snapshot)
                md = rd.snapshot.metadata
                sn.sm_index = md.index
                sn.sm_digest = int(rd.snapshot.data.decode()) if rd.snapshot.data else 0
                rec = self.applied.get(md.index)
                if rec is not None and rec[1] != sn.sm_digest:
                    raise InvariantViolation(
                        f"node {nid} restored a divergent snapshot at {md.index}"
                    )
            if rd.entries:
                st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            for m in rd.messages:
                if m.frm != nid and m.type != MessageType.MsgTransferLeader:
                    raise InvariantViolation(f"message from {m.frm} emitted by {nid}")
                self.network.append(m)
                self.sent_count += 1
            for e in rd.committed_entries:
                self._apply(sn, e)
            sn.read_states.extend(rd.read_states)
            n.advance(rd)
        self._observe(sn)

    def _apply(self, sn: SimNode, e: Entry) -> None:
        n = sn.raft
        st = sn.storage
        # committed entries must already be persisted (same Ready or an earlier one)
        if e.index > st.last_index() or st.term(e.index) != e.term:
            raise InvariantViolation(f"node {sn.id} applies unpersisted entry {e}")
        if e.index != sn.sm_index + 1:
            raise InvariantViolation(f"node {sn.id} applies {e.index} after {sn.sm_index}")
        sn.sm_index = e.index
        sn.sm_digest = _chain(sn.sm_digest, e)
        rec = self.applied.get(e.index)
        if rec is None:
            self.applied[e.index] = (e, sn.sm_digest, n.term)
        else:
            if rec[0] != e or rec[1] != sn.sm_digest:
                raise InvariantViolation(
                    f"state machine safety: node {sn.id} applied {e} at {e.index}, "
                    f"another node applied {rec[0]}"
                )
            if n.term < rec[2]:
                self.applied[e.index] = (rec[0], rec[1], n.term)
        if e.type == EntryType.CONF_CHANGE:
            n.apply_conf_change(ConfChange.decode(e.data))
        elif e.data:
            sn.applied_data.append(e.data)

    def _observe(self, sn: SimNode) -> None:
        n = sn.raft
        if n.role != StateRole.LEADER:
            return
        prev = self.leaders_by_term.get(n.term)
        if prev is None:
            self.leaders_by_term[n.term] = sn.id
            self._check_leader_completeness(sn)
        elif prev != sn.id:
            raise InvariantViolation(f"election safety: {prev} and {sn.id} both lead term {n.term}")

    def _check_leader_completeness(self, sn: SimNode) -> None:
        lg = sn.raft.raft_log
        first = lg.first_index()
        last = lg.last_index()
        for idx, (e, _, seen_term) in self.applied.items():
            if seen_term >= sn.raft.term or idx < first:
                continue
            if idx > last or lg.term(idx) != e.term:
                raise InvariantViolation(
                    f"leader completeness: leader {sn.id} of term {sn.raft.term} lacks "
                    f"committed entry {e}"
                )

    def process_all(self) -> None:
        for nid in sorted(self.nodes):
            self.process(nid)

    # -- network ------------------------------------------------------------------------

    def _report_snap(self, m: Message, failed: bool) -> None:
        if m.type == MessageType.MsgSnap:
            sender = self.nodes.get(m.frm)
            if sender is not None and sender.node is not None:
                sender.node.report_snapshot(m.to, failed)
                self.process(m.frm)

    def deliver_msg(self, m: Message) -> None:
        dest = self.nodes.get(m.to)
        if dest is None or dest.node is None or (m.frm, m.to) in self.cut:
            self._report_snap(m, failed=True)
            return
        dest.node.step(m)
        self.process(m.to)
        self._report_snap(m, failed=False)

    def deliver_one(self, i: int = 0) -> None:
        m = self.network.pop(i)
        self.deliver_msg(m)
        self.check_all()

    def deliver_all(self, max_msgs: int = 100000) -> int:
        """Deliver FIFO until the network is quiet; returns how many were delivered."""
        count = 0
        while self.network:
            count += 1
            if count > max_msgs:
                raise AssertionError("network did not quiesce")
            self.deliver_one(0)
        return count

    def drop(self, i: int) -> None:
        m = self.network.pop(i)
        self._report_snap(m, failed=True)

    def duplicate(self, i: int) -> None:
        m = self.network[i]
        if m.type != MessageType.MsgSnap:
            self.network.append(dataclasses.replace(m))

    def isolate(self, nid: int) -> None:
        for other in self.nodes:
            if other != nid:
                self.cut.add((nid, other))
                self.cut.add((other, nid))

    def partition(self, *groups: tuple[int, ...]) -> None:
        self.cut.clear()
        for g1 in groups:
            for g2 in groups:
                if g1 is g2:
                    continue
                for a in g1:
                    for b in g2:
                        self.cut.add((a, b))

    def heal(self) -> None:
        self.cut.clear()

    # -- driving ------------------------------------------------------------------------

    def tick(self, nid: int, n: int = 1) -> None:
        for _ in range(n):
            if self.nodes[nid].node is not None:
                self.node(nid).tick()
                self.process(nid)
        self.check_all()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for nid in sorted(self.nodes):
                if self.nodes[nid].node is not None:
                    self.node(nid).tick()
                    self.process(nid)
            self.check_all()

    def run(self, ticks: int) -> None:
        """Tick everyone and deliver everything, ``ticks`` times."""
        for _ in range(ticks):
            self.tick_all()
            self.deliver_all()

    def campaign(self, nid: int) -> None:
        self.node(nid).campaign()
        self.process(nid)
        self.check_all()

    def propose(self, nid: int, data: bytes) -> None:
        self.node(nid).propose(data)
        self.process(nid)
        self.check_all()

    def try_propose(self, data: bytes) -> bool:
        lead = self.leader()
        if lead is None:
            return False
        try:
            self.propose(lead, data)
        except ProposalDroppedError:
            return False
        return True

    def leader(self) -> int | None:
        """The live leader with the highest term, if any."""
        best: tuple[int, int] | None = None
        for nid, sn in self.nodes.items():
            if sn.node is not None and sn.node.role == StateRole.LEADER:
                if best is None or sn.node.term > best[0]:
                    best = (sn.node.term, nid)
        return None if best is None else best[1]

    def wait_leader(self, max_ticks: int = 200) -> int:
        for _ in range(max_ticks):
            lead = self.leader()
            if lead is not None:
                cs = self.node(lead).conf_state()
                members = [self.nodes[i] for i in (*cs.voters, *cs.learners)]
                if all(
                    sn.node is None or sn.node.lead == lead or (sn.id, lead) in self.cut
                    for sn in members
                ):
                    return lead
            self.run(1)
        raise AssertionError("no stable leader elected")

    # -- invariants ----------------------------------------------------------------------

    def check_all(self) -> None:
        live = [sn for sn in self.nodes.values() if sn.node is not None]
        logs = []
        for sn in live:
            lg = sn.raft.raft_log
            first = lg.first_index()
            logs.append((sn.id, first, lg.slice(first, lg.last_index() + 1)))
            if lg.committed > lg.last_index():
                raise InvariantViolation(f"node {sn.id} commit beyond its log")
        for i in range(len(logs)):
            for j in range(i + 1, len(logs)):
                self._check_log_matching(logs[i], logs[j])

    @staticmethod
    def _check_log_matching(
        a: tuple[int, int, list[Entry]], b: tuple[int, int, list[Entry]]
    ) -> None:
        ida, fa, ea = a
        idb, fb, eb = b
        lo = max(fa, fb)
        hi = min(fa + len(ea), fb + len(eb)) - 1  # last index present in both
        # find the highest common index where terms agree; everything up to it must match
        k = hi
        while k >= lo and ea[k - fa].term != eb[k - fb].term:
            k -= 1
        if k < lo:
            return
        sa = ea[lo - fa : k - fa + 1]
        sb = eb[lo - fb : k - fb + 1]
        if sa != sb:
            raise InvariantViolation(
                f"log matching: nodes {ida} and {idb} agree on term at {k} but differ before"
            )
