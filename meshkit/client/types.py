"""Typed, frozen results of the client's calls, built from etcd's protobuf messages."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from meshkit.api.etcdserverpb import rpc_pb2
from meshkit.api.mvccpb import kv_pb2


@dataclass(frozen=True, slots=True)
class ResponseHeader:
    cluster_id: int
    member_id: int
    revision: int
    raft_term: int

    @classmethod
    def from_pb(cls, h: rpc_pb2.ResponseHeader) -> ResponseHeader:
        return cls(h.cluster_id, h.member_id, h.revision, h.raft_term)


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, kv: kv_pb2.KeyValue) -> KeyValue:
        return cls(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


def _opt_kv(msg: Any, name: str) -> KeyValue | None:
    return KeyValue.from_pb(getattr(msg, name)) if msg.HasField(name) else None


@dataclass(frozen=True, slots=True)
class GetResult:
    header: ResponseHeader
    kvs: list[KeyValue]
    count: int
    more: bool

    @classmethod
    def from_pb(cls, r: rpc_pb2.RangeResponse) -> GetResult:
        return cls(ResponseHeader.from_pb(r.header), [KeyValue.from_pb(kv) for kv in r.kvs], r.count, r.more)

    @property
    def value(self) -> bytes | None:
        """The first key's value, or None when nothing matched (convenience for single-key gets)."""
        return self.kvs[0].value if self.kvs else None


@dataclass(frozen=True, slots=True)
class PutResult:
    header: ResponseHeader
    prev_kv: KeyValue | None

    @classmethod
    def from_pb(cls, r: rpc_pb2.PutResponse) -> PutResult:
        return cls(ResponseHeader.from_pb(r.header), _opt_kv(r, "prev_kv"))


@dataclass(frozen=True, slots=True)
class DeleteResult:
    header: ResponseHeader
    deleted: int
    prev_kvs: list[KeyValue]

    @classmethod
    def from_pb(cls, r: rpc_pb2.DeleteRangeResponse) -> DeleteResult:
        return cls(ResponseHeader.from_pb(r.header), r.deleted, [KeyValue.from_pb(kv) for kv in r.prev_kvs])


OpResult: TypeAlias = "GetResult | PutResult | DeleteResult | TxnResult"


@dataclass(frozen=True, slots=True)
class TxnResult:
    header: ResponseHeader
    succeeded: bool
    responses: list[OpResult]

    @classmethod
    def from_pb(cls, r: rpc_pb2.TxnResponse) -> TxnResult:
        return cls(ResponseHeader.from_pb(r.header), r.succeeded, [_op_result(op) for op in r.responses])


def _op_result(op: rpc_pb2.ResponseOp) -> OpResult:
    which = op.WhichOneof("response")
    if which == "response_range":
        return GetResult.from_pb(op.response_range)
    if which == "response_put":
        return PutResult.from_pb(op.response_put)
    if which == "response_delete_range":
        return DeleteResult.from_pb(op.response_delete_range)
    if which == "response_txn":
        return TxnResult.from_pb(op.response_txn)
    raise ValueError(f"empty ResponseOp: {op!r}")


@dataclass(frozen=True, slots=True)
class CompactResult:
    header: ResponseHeader


@dataclass(frozen=True, slots=True)
class StatusResult:
    header: ResponseHeader
    version: str
    db_size: int
    leader: int
    raft_index: int
    raft_term: int
    raft_applied_index: int
    errors: list[str]
    db_size_in_use: int
    is_learner: bool

    @classmethod
    def from_pb(cls, r: rpc_pb2.StatusResponse) -> StatusResult:
        return cls(
            ResponseHeader.from_pb(r.header), r.version, r.dbSize, r.leader, r.raftIndex, r.raftTerm,
            r.raftAppliedIndex, list(r.errors), r.dbSizeInUse, r.isLearner,
        )


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str]
    is_learner: bool

    @classmethod
    def from_pb(cls, m: rpc_pb2.Member) -> Member:
        return cls(m.ID, m.name, list(m.peerURLs), list(m.clientURLs), m.isLearner)


@dataclass(frozen=True, slots=True)
class MemberListResult:
    header: ResponseHeader
    members: list[Member]

    @classmethod
    def from_pb(cls, r: rpc_pb2.MemberListResponse) -> MemberListResult:
        return cls(ResponseHeader.from_pb(r.header), [Member.from_pb(m) for m in r.members])


# ---- watch ---------------------------------------------------------------------------


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None

    @classmethod
    def from_pb(cls, e: kv_pb2.Event) -> Event:
        return cls(EventType(e.type), KeyValue.from_pb(e.kv), _opt_kv(e, "prev_kv"))


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """One delivery to a watcher: events of whole revisions (fragments already joined).

    ``progress_notify`` is true for an empty response that only says "everything up to
    ``header.revision`` has been delivered". ``created`` marks the first response.
    """

    header: ResponseHeader
    watch_id: int
    events: list[Event] = field(default_factory=list)
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    cancel_reason: str = ""

    @property
    def progress_notify(self) -> bool:
        return not self.events and not self.created and not self.canceled


# ---- lease ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseGrantResult:
    header: ResponseHeader
    id: int
    ttl: int

    @classmethod
    def from_pb(cls, r: rpc_pb2.LeaseGrantResponse) -> LeaseGrantResult:
        return cls(ResponseHeader.from_pb(r.header), r.ID, r.TTL)


@dataclass(frozen=True, slots=True)
class LeaseRevokeResult:
    header: ResponseHeader


@dataclass(frozen=True, slots=True)
class LeaseTimeToLiveResult:
    """``ttl`` is -1 when the lease does not exist (expired or revoked), as in etcd."""

    header: ResponseHeader
    id: int
    ttl: int
    granted_ttl: int
    keys: list[bytes]

    @classmethod
    def from_pb(cls, r: rpc_pb2.LeaseTimeToLiveResponse) -> LeaseTimeToLiveResult:
        return cls(ResponseHeader.from_pb(r.header), r.ID, r.TTL, r.grantedTTL, list(r.keys))


@dataclass(frozen=True, slots=True)
class LeasesResult:
    header: ResponseHeader
    ids: list[int]

    @classmethod
    def from_pb(cls, r: rpc_pb2.LeaseLeasesResponse) -> LeasesResult:
        return cls(ResponseHeader.from_pb(r.header), [ls.ID for ls in r.leases])


__all__: Sequence[str] = [
    "CompactResult", "DeleteResult", "Event", "EventType", "GetResult", "KeyValue",
    "LeaseGrantResult", "LeaseRevokeResult", "LeaseTimeToLiveResult", "LeasesResult", "Member",
    "MemberListResult", "OpResult", "PutResult", "ResponseHeader", "StatusResult", "TxnResult",
    "WatchResponse",
]
