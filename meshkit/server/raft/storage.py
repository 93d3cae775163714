"""MemoryStorage: the stable part of the Raft log, as the driver persisted it.

The driver owns durability (WAL + snapshot files). It mirrors what it made durable
into a MemoryStorage, which the core reads. Layout: ``_ents[0]`` is a dummy entry
holding the index/term of the last snapshot (or 0/0), real entries follow.
"""

from __future__ import annotations

from meshkit.server.raft.messages import (
    CompactedError,
    RaftInvariantError,
    SnapshotOutOfDateError,
    UnavailableError,
)
from meshkit.server.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata

ENTRY_OVERHEAD = 16  # bytes counted per entry on top of its data, for size limits


def entry_size(e: Entry) -> int:
    return len(e.data) + ENTRY_OVERHEAD


def limit_size(ents: list[Entry], max_size: int | None) -> list[Entry]:
    """Longest prefix of ents whose total size is <= max_size (always at least one entry)."""
    if max_size is None or len(ents) <= 1:
        return ents
    total = entry_size(ents[0])
    for i in range(1, len(ents)):
        total += entry_size(ents[i])
        if total > max_size:
            return ents[:i]
    return ents


class MemoryStorage:
    """In-memory stable storage, the same contract as etcd-raft's MemoryStorage.

    Start-up:
      * brand-new cluster: ``storage.bootstrap(ConfState(voters=(1, 2, 3)))`` on every
        initial member, before building the RaftNode (see ``bootstrap``);
      * restart: ``apply_snapshot(snap)`` (if any), ``set_hard_state(hs)``, ``append(ents)``;
      * a member joining an existing cluster starts with an empty storage (no voters):
        the leader sends it a snapshot or the log from index 1.
    """

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._ents: list[Entry] = [Entry(term=0, index=0)]
        self.bootstrap_conf: ConfState | None = None

    # -- the read side used by the core -------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, i: int) -> int:
        offset = self._ents[0].index
        if i < offset:
            raise CompactedError(f"index {i} is compacted (first index {offset + 1})")
        if i - offset >= len(self._ents):
            raise UnavailableError(f"index {i} is beyond the last index {self.last_index()}")
        return self._ents[i - offset].term

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in [lo, hi), at most max_size bytes (but at least one)."""
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (first index {offset + 1})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1} requested, last is {self.last_index()}")
        return limit_size(self._ents[lo - offset : hi - offset], max_size)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- the write side used by the driver ----------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def bootstrap(self, conf_state: ConfState) -> None:
        """Declare the initial membership of a brand-new cluster.

        Only meaningful on an empty storage: the RaftNode built on it then appends one
        CONF_CHANGE entry per member at term 1 (already committed), which the first Ready
        hands out for persistence and application, exactly like any other entry. Once
        those entries are persisted the membership is recovered from the log, so calling
        bootstrap again on restart is optional and harmless.
        """
        if len(conf_state.voters) == 0:
            raise ValueError("bootstrap needs at least one voter")
        self.bootstrap_conf = conf_state

    def bootstrap_conf_state(self, conf_state: ConfState) -> None:
        """Alias of ``bootstrap`` (re-declaring the initial membership on restart)."""
        self.bootstrap(conf_state)

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the contents with a snapshot (log entries are discarded)."""
        if snap.metadata.index < self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {snap.metadata.index} is older than {self._snapshot.metadata.index}"
            )
        self._snapshot = snap
        self._ents = [Entry(term=snap.metadata.term, index=snap.metadata.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine at ``index`` (<= last index)."""
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {index} is not newer than {self._snapshot.metadata.index}"
            )
        if index > self.last_index():
            raise RaftInvariantError(f"snapshot {index} is beyond last index {self.last_index()}")
        snap = Snapshot(SnapshotMetadata(index, self.term(index), conf_state), data)
        self._snapshot = snap
        return snap

    def compact(self, index: int) -> None:
        """Discard entries before ``index`` (entry ``index`` becomes the dummy)."""
        offset = self._ents[0].index
        if index <= offset:
            raise CompactedError(f"index {index} is already compacted")
        if index > self.last_index():
            raise RaftInvariantError(f"compact {index} is beyond last index {self.last_index()}")
        i = index - offset
        dummy = Entry(term=self._ents[i].term, index=index)
        self._ents = [dummy, *self._ents[i + 1 :]]

    def append(self, entries: list[Entry]) -> None:
        """Append entries, replacing any conflicting suffix."""
        if not entries:
            return
        first = self.first_index()
        last = entries[0].index + len(entries) - 1
        if last < first:
            return  # all already compacted
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        n = len(self._ents)
        if offset == n:
            self._ents.extend(entries)
        elif offset < n:
            del self._ents[offset:]
            self._ents.extend(entries)
        else:
            raise RaftInvariantError(
                f"missing log entry: last index {self.last_index()}, append at {entries[0].index}"
            )
