"""Unit tests of the pieces: storage, log, progress, messages, and the import rules."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

import meshkit.server.raft as raft_pkg
from meshkit.server.raft import (
    CompactedError,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    ProposalDroppedError,
    RaftConfig,
    RaftInvariantError,
    RaftLog,
    RaftNode,
    Snapshot,
    SnapshotMetadata,
    SnapshotOutOfDateError,
    UnavailableError,
)
from meshkit.server.raft.progress import Inflights, Progress, ProgressState


def ents(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(t, start + i) for i, t in enumerate(terms)]


def test_storage_append_truncates_conflicts_and_compacts() -> None:
    st = MemoryStorage()
    st.append(ents(1, 1, 1, 2))
    assert (st.first_index(), st.last_index()) == (1, 4)
    st.append([Entry(3, 3)])
    assert st.last_index() == 3 and st.term(3) == 3
    st.compact(2)
    assert st.first_index() == 3 and st.term(2) == 1
    with pytest.raises(CompactedError):
        st.term(1)
    with pytest.raises(CompactedError):
        st.entries(2, 4)
    with pytest.raises(UnavailableError):
        st.term(4)
    assert [e.index for e in st.entries(3, 4)] == [3]
    with pytest.raises(RaftInvariantError):
        st.append([Entry(3, 10)])  # gap
    st.append(ents(1, 1, start=1))  # fully compacted: ignored
    assert st.last_index() == 3


def test_storage_entries_size_limit_keeps_at_least_one() -> None:
    st = MemoryStorage()
    st.append([Entry(1, i, EntryType.NORMAL, b"x" * 100) for i in range(1, 6)])
    assert len(st.entries(1, 6, max_size=1)) == 1
    assert len(st.entries(1, 6, max_size=250)) == 2
    assert len(st.entries(1, 6)) == 5


def test_storage_snapshots() -> None:
    st = MemoryStorage()
    st.append(ents(1, 1, 2))
    cs = ConfState(voters=(1, 2))
    snap = st.create_snapshot(2, cs, b"data")
    assert snap.metadata == SnapshotMetadata(2, 1, cs)
    with pytest.raises(SnapshotOutOfDateError):
        st.create_snapshot(1, cs, b"")
    st.apply_snapshot(Snapshot(SnapshotMetadata(10, 4, cs), b"x"))
    assert (st.first_index(), st.last_index(), st.term(10)) == (11, 10, 4)
    assert st.initial_state() == (HardState(), cs)
    with pytest.raises(SnapshotOutOfDateError):
        st.apply_snapshot(Snapshot(SnapshotMetadata(5, 4, cs)))


def test_log_maybe_append_and_conflicts() -> None:
    st = MemoryStorage()
    st.append(ents(1, 1, 2, 2))
    lg = RaftLog(st)
    assert lg.maybe_append(4, 3, 0, ()) is None  # term mismatch
    assert lg.maybe_append(2, 1, 3, (Entry(3, 3), Entry(3, 4), Entry(3, 5))) == 5
    assert lg.committed == 3
    assert [e.term for e in lg.slice(1, 6)] == [1, 1, 3, 3, 3]
    assert [e.index for e in lg.unstable_entries()] == [3, 4, 5]
    with pytest.raises(RaftInvariantError):
        lg.maybe_append(1, 1, 3, (Entry(9, 2),))  # would rewrite committed entries
    lg.stable_to(5, 3)
    assert lg.unstable_entries() == []
    lg.stable_to(5, 3)  # idempotent


def test_log_find_conflict_by_term() -> None:
    st = MemoryStorage()
    st.append(ents(1, 1, 2, 2, 4, 4, 4))
    lg = RaftLog(st)
    assert lg.find_conflict_by_term(7, 3) == (4, 2)
    assert lg.find_conflict_by_term(7, 4) == (7, 4)
    assert lg.find_conflict_by_term(7, 1) == (2, 1)
    assert lg.find_conflict_by_term(7, 0) == (0, 0)


def test_log_commit_rule_only_current_term() -> None:
    st = MemoryStorage()
    st.append(ents(1, 2))
    lg = RaftLog(st)
    assert not lg.maybe_commit(2, 3)
    assert lg.maybe_commit(2, 2) and lg.committed == 2
    with pytest.raises(RaftInvariantError):
        lg.commit_to(9)


def test_inflights_and_progress_transitions() -> None:
    inf = Inflights(2)
    inf.add(3)
    inf.add(5)
    assert inf.full()
    with pytest.raises(RaftInvariantError):
        inf.add(6)
    inf.free_le(4)
    assert len(inf) == 1 and not inf.full()
    pr = Progress(next_index=10, max_inflight=4)
    assert pr.state == ProgressState.PROBE
    assert not pr.maybe_decr_to(5, 2)  # stale rejection (next-1 != 5)
    assert pr.maybe_decr_to(9, 3) and pr.next == 4
    assert pr.maybe_update(6) and pr.match == 6 and pr.next == 7
    pr.become_replicate()
    assert pr.next == 7
    pr.become_snapshot(20)
    assert pr.is_paused()
    pr.become_probe()
    assert pr.next == 21


def test_conf_change_encoding_roundtrip() -> None:
    cc = ConfChange(ConfChangeType.ADD_LEARNER_NODE, 0xDEADBEEF, b'{"name":"n4"}')
    assert ConfChange.decode(cc.encode()) == cc
    with pytest.raises(ValueError):
        ConfChange.decode(b"\x00")


def test_cannot_remove_the_last_voter() -> None:
    st = MemoryStorage()
    st.bootstrap(ConfState(voters=(1,)))
    n = RaftNode(RaftConfig(id=1), st, random.Random(0))
    n.campaign()
    with pytest.raises(ValueError, match="no voter"):
        n.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))


def test_ready_requires_advance_and_is_deterministic() -> None:
    def run(seed: int) -> list[object]:
        st = MemoryStorage()
        st.bootstrap(ConfState(voters=(1, 2, 3)))
        n = RaftNode(RaftConfig(id=1), st, random.Random(seed))
        out: list[object] = []
        for _ in range(40):
            n.tick()
            if n.has_ready():
                rd = n.ready()
                with pytest.raises(RaftInvariantError):
                    n.ready()
                out.append((rd.hard_state, [(m.type, m.to, m.term) for m in rd.messages]))
                st.append(rd.entries)
                if rd.hard_state:
                    st.set_hard_state(rd.hard_state)
                n.advance(rd)
        return out

    assert run(5) == run(5)


def test_proposal_dropped_during_transfer_and_on_non_leader() -> None:
    st = MemoryStorage()
    st.bootstrap(ConfState(voters=(1, 2)))
    n = RaftNode(RaftConfig(id=1), st, random.Random(0))
    with pytest.raises(ProposalDroppedError):
        n.propose(b"x")
    with pytest.raises(ProposalDroppedError):
        n.read_index(b"ctx")  # no leader known


FORBIDDEN = {"asyncio", "time", "socket", "threading"}


def test_raft_package_imports_nothing_forbidden() -> None:
    pkg_dir = Path(raft_pkg.__file__).parent
    for path in sorted(pkg_dir.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                if node.module == "random":
                    raise AssertionError(f"{path.name}: 'from random import' is not allowed")
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                assert root not in FORBIDDEN, f"{path.name} imports {name}"
                if root == "meshkit":
                    assert name.startswith("meshkit.server.raft"), f"{path.name} imports {name}"
        src = path.read_text()
        for fn in ("random.random(", "random.randint(", "random.choice(", "random.seed("):
            assert fn not in src, f"{path.name} uses the global {fn}"


def test_propose_many_appends_all_entries_in_one_step() -> None:
    import random as _random

    from meshkit.server.raft import ConfState, MemoryStorage, RaftConfig, RaftNode, StateRole

    storage = MemoryStorage()
    storage.bootstrap(ConfState(voters=(1,)))
    node = RaftNode(RaftConfig(id=1), storage, rand=_random.Random(1))
    node.campaign()
    applied: list[bytes] = []
    for _ in range(5):
        if not node.has_ready():
            break
        rd = node.ready()
        storage.append(rd.entries)
        if rd.hard_state:
            storage.set_hard_state(rd.hard_state)
        node.advance(rd)
    assert node.role == StateRole.LEADER
    node.propose_many([b"a", b"b", b"c"])
    rd = node.ready()
    assert [e.data for e in rd.entries] == [b"a", b"b", b"c"]
    assert [e.index for e in rd.entries] == list(range(rd.entries[0].index, rd.entries[0].index + 3))
    storage.append(rd.entries)
    applied.extend(e.data for e in rd.committed_entries if e.data)
    node.advance(rd)
    assert applied == [b"a", b"b", b"c"]
