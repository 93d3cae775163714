"""Messages, configuration changes and the shapes the core hands to its driver."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from meshkit.server.raft.types import Entry, HardState, Snapshot


class MessageType(enum.IntEnum):
    """Kinds of Raft messages (numbering follows etcd-raft's raftpb.MessageType)."""

    MsgHup = 0  # local: start an election
    MsgBeat = 1  # local: leader sends heartbeats
    MsgProp = 2  # local: proposal
    MsgApp = 3
    MsgAppResp = 4
    MsgVote = 5
    MsgVoteResp = 6
    MsgSnap = 7
    MsgHeartbeat = 8
    MsgHeartbeatResp = 9
    MsgUnreachable = 10  # local: the driver could not reach a peer
    MsgSnapStatus = 11  # local: the driver reports the outcome of sending a snapshot
    MsgCheckQuorum = 12  # local: leader checks it still hears from a quorum
    MsgTransferLeader = 13
    MsgTimeoutNow = 14
    MsgReadIndex = 15
    MsgReadIndexResp = 16
    MsgPreVote = 17
    MsgPreVoteResp = 18


LOCAL_MESSAGES = frozenset(
    {
        MessageType.MsgHup,
        MessageType.MsgBeat,
        MessageType.MsgProp,
        MessageType.MsgUnreachable,
        MessageType.MsgSnapStatus,
        MessageType.MsgCheckQuorum,
    }
)


@dataclass(slots=True)
class Message:
    """One Raft message. ``to``/``frm`` are member ids; ``term`` 0 means a local message."""

    type: MessageType
    to: int = 0
    frm: int = 0
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""


class ConfChangeType(enum.IntEnum):
    ADD_NODE = 0  # add a voter, or promote a learner to voter
    REMOVE_NODE = 1
    UPDATE_NODE = 2  # no change to the membership; lets the driver update member metadata
    ADD_LEARNER_NODE = 3


_CC_HEADER = struct.Struct(">BQ")


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A single membership change, carried in the data of a CONF_CHANGE entry."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        return _CC_HEADER.pack(int(self.type), self.node_id) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        if len(data) < _CC_HEADER.size:
            raise ValueError(f"conf change data too short: {len(data)} bytes")
        t, node_id = _CC_HEADER.unpack_from(data)
        return cls(ConfChangeType(t), node_id, bytes(data[_CC_HEADER.size :]))


class StateRole(enum.IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state that the driver may want to observe (never persisted)."""

    lead: int = 0
    role: StateRole = StateRole.FOLLOWER


@dataclass(frozen=True, slots=True)
class ReadState:
    """Answer to a read_index(ctx) request: reads are linearizable once applied >= index."""

    index: int
    ctx: bytes


@dataclass(slots=True)
class Ready:
    """What the driver must do next; see RaftNode.ready() for the contract."""

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot = field(default_factory=Snapshot)
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False


class RaftError(Exception):
    """Root of the errors raised by the Raft core."""


class ProposalDroppedError(RaftError):
    """The proposal was not accepted (not leader, leader transfer in progress, ...)."""

    def __init__(self, reason: str = "raft proposal dropped") -> None:
        super().__init__(reason)
        self.reason = reason


class StepLocalMessageError(RaftError):
    """A local-only message type was passed to step()."""


class StepPeerNotFoundError(RaftError):
    """A response message came from a peer not in the configuration."""


class CompactedError(RaftError):
    """The requested index is older than the storage's first index."""


class UnavailableError(RaftError):
    """The requested index is beyond the storage's last index."""


class SnapshotOutOfDateError(RaftError):
    """The snapshot is older than the one storage already holds."""


class SnapshotTemporarilyUnavailableError(RaftError):
    """Storage cannot produce a snapshot right now; the leader retries later."""


class RaftInvariantError(AssertionError):
    """A broken internal invariant of the Raft core (a bug, or corrupt storage). Never caught."""
