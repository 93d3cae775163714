"""What a transport offers the member driver, and what the driver offers it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from meshkit._internal.errors import MeshkitError
from meshkit.api.meshkitpb import raft_pb2 as rpb
from meshkit.server.raft import Message

# Messages waiting for one peer beyond this are dropped (Raft resends what
# matters), as etcd's peer pipeline drops when its buffer is full.
MAX_PENDING_MESSAGES = 4096
# At most this many messages go in one batch (one peer RPC).
MAX_BATCH_MESSAGES = 512
# etcd's rafthttp errMemberRemoved: what a peer answers (HTTP 410 Gone there) to
# the traffic of a member that was removed from the cluster.
MEMBER_REMOVED = "the member has been permanently removed from the cluster"


class PeerUnreachableError(MeshkitError):
    """A peer could not be reached (not started, partitioned, refused us)."""


class ClusterMismatchError(MeshkitError):
    """A peer belongs to another cluster (another cluster id or member id)."""


class MemberGoneError(PeerUnreachableError):
    """A peer refused this member: it was removed from the cluster (etcd: 410 Gone)."""


class PeerHandler(Protocol):
    """The member a transport delivers to (the driver, EtcdServer)."""

    @property
    def member_id(self) -> int: ...

    @property
    def cluster_id(self) -> int: ...

    def receive(self, msgs: list[Message]) -> None:
        """Raft messages from a peer, to be stepped into the node."""

    async def handle_call(self, req: rpb.PeerRequest) -> rpb.PeerResponse:
        """A forwarded request (lease renewal, time-to-live, membership, promote)."""
        ...

    def report_unreachable(self, member_id: int) -> None: ...

    def report_snapshot(self, member_id: int, failed: bool) -> None: ...

    def member_removed(self, member_id: int) -> bool:
        """Whether ``member_id`` was removed from the cluster: its messages are refused."""
        ...

    def report_removed(self, by: int) -> None:
        """Peer ``by`` refused this member's messages: this member was removed."""


class Transport(Protocol):
    """Peer messaging. ``async with`` is not used: the driver owns the transport's
    lifetime through ``start(handler)`` / ``close()`` (both idempotent-safe)."""

    async def start(self, handler: PeerHandler) -> None: ...

    async def close(self) -> None: ...

    def set_peer(self, member_id: int, urls: Sequence[str]) -> None:
        """Add a peer or change its URLs."""

    def remove_peer(self, member_id: int) -> None: ...

    def send(self, msgs: Sequence[Message]) -> None:
        """Queue messages for their ``to`` members; never blocks, never raises for
        an unreachable peer (the driver hears of it via report_unreachable)."""

    async def call(self, to: int, req: rpb.PeerRequest, timeout: float) -> rpb.PeerResponse:  # noqa: ASYNC109
        """A forwarded request; raises PeerUnreachableError."""
        ...

    def active_since(self, member_id: int) -> float | None:
        """Event-loop time since which the peer answers continuously; None if it does
        not (etcd's Transporter.ActiveSince). Kept up to date whether or not Raft has
        anything to send the peer, as etcd's streams to every peer are."""
        ...

    async def fetch_members(self, urls: Sequence[str], req: rpb.PeerRequest,
                            timeout: float) -> rpb.PeerResponse:  # noqa: ASYNC109
        """A call to a member known only by its peer URLs (a member joining a cluster
        asks an existing one for the membership); raises PeerUnreachableError."""
        ...
