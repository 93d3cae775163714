"""Peer transport: the only place Raft messages meet the network.

* :class:`GrpcTransport` — between processes, on the peer URLs: gRPC (HTTP/2)
  service ``meshkitpb.Peer``; one sender task per peer batches every queued
  message into one RPC; a prober keeps each peer's ``active_since`` current; a
  receiver refuses members of another cluster and removed members.
* :class:`MemoryNetwork` / :class:`MemoryTransport` — in-process, with faults
  injected for tests: drop rate, delay, partitions, isolated members.
"""

from meshkit.server.transport.base import (
    MEMBER_REMOVED,
    ClusterMismatchError,
    MemberGoneError,
    PeerHandler,
    PeerUnreachableError,
    Transport,
)
from meshkit.server.transport.memory import MemoryNetwork, MemoryTransport
from meshkit.server.transport.peer_grpc import GrpcTransport

__all__ = [
    "MEMBER_REMOVED",
    "ClusterMismatchError",
    "GrpcTransport",
    "MemberGoneError",
    "MemoryNetwork",
    "MemoryTransport",
    "PeerHandler",
    "PeerUnreachableError",
    "Transport",
]
