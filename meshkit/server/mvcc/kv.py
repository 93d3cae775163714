"""Plain data the store hands out; the gRPC layer converts them to protobuf."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(slots=True)
class KeyValue:
    """etcd's ``mvccpb.KeyValue``.

    Treat as immutable: the store shares these objects (the latest value of each
    key is cached and handed out without copying). Not ``frozen`` only because
    that triples the construction cost on the put path.
    """

    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    value: bytes = b""
    lease: int = 0


class EventType(enum.IntEnum):
    PUT = 0
    DELETE = 1


@dataclass(slots=True)
class Event:
    """A change: for DELETE, ``kv`` has only ``key`` and ``mod_revision`` (the
    delete's revision), as in etcd. ``prev_kv`` is the key's value before it."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None


@dataclass(slots=True)
class RangeResult:
    kvs: list[KeyValue] = field(default_factory=list)
    count: int = 0
    rev: int = 0
