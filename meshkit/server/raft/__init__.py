"""Pure Raft consensus core: no I/O, no clock, no global randomness.

The driver feeds ``tick()``, peer messages (``step``) and proposals, then loops on
``has_ready()`` / ``ready()`` / ``advance()``. See ``RaftNode.ready`` for the contract.

Driver notes:
* New cluster: ``storage.bootstrap(ConfState(voters=...))`` on an empty MemoryStorage,
  then build the RaftNode; its first Ready carries one committed CONF_CHANGE entry per
  initial member at term 1 (persist them and pass them to ``apply_conf_change`` like any
  other). A member joining later starts from an empty storage without bootstrap.
* Restart: fill a fresh MemoryStorage (``apply_snapshot``, ``set_hard_state``,
  ``append``), pass ``RaftConfig(applied=<index the state machine has applied>)``.
  Membership is rebuilt from the snapshot's ConfState plus the CONF_CHANGE entries in
  (snapshot, applied]; later ones come back in ``committed_entries``.
* In a Ready: apply ``snapshot`` to storage before appending ``entries``. A single voter
  commits what it appends, so ``committed_entries`` can contain entries of the same
  Ready's ``entries``: persist first, then apply.
* After sending a ``MsgSnap`` call ``report_snapshot(to, failed)``; when a peer is
  unreachable call ``report_unreachable(to)``.
* ``MsgTransferLeader.frm`` is the transferee (as in etcd-raft), not always the sender.
* ``read_index(ctx)``: ctx must be non-empty and unique while pending; batch many
  reads under one ctx. Requests pending on a leader that steps down are dropped.
"""

from meshkit.server.raft.core import CAMPAIGN_TRANSFER, RaftConfig, RaftNode, RaftStatus
from meshkit.server.raft.log import RaftLog, Unstable
from meshkit.server.raft.messages import (
    CompactedError,
    ConfChange,
    ConfChangeType,
    Message,
    MessageType,
    ProposalDroppedError,
    RaftError,
    RaftInvariantError,
    ReadState,
    Ready,
    SnapshotOutOfDateError,
    SnapshotTemporarilyUnavailableError,
    SoftState,
    StateRole,
    StepLocalMessageError,
    UnavailableError,
)
from meshkit.server.raft.progress import Progress, ProgressState, ProgressStatus
from meshkit.server.raft.storage import MemoryStorage
from meshkit.server.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMetadata,
)

__all__ = [
    "CAMPAIGN_TRANSFER",
    "CompactedError",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "MemoryStorage",
    "Message",
    "MessageType",
    "Progress",
    "ProgressState",
    "ProgressStatus",
    "ProposalDroppedError",
    "RaftConfig",
    "RaftError",
    "RaftInvariantError",
    "RaftLog",
    "RaftNode",
    "RaftStatus",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMetadata",
    "SnapshotOutOfDateError",
    "SnapshotTemporarilyUnavailableError",
    "SoftState",
    "StateRole",
    "StepLocalMessageError",
    "UnavailableError",
    "Unstable",
]
