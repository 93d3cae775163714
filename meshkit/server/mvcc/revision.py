"""Revisions: ``(main, sub)``; ``main`` is bumped once per changing write txn,
``sub`` numbers the changes inside it.

Internally revisions are plain ``tuple[int, int]`` (fast to build and compare);
:class:`Revision` is a NamedTuple, i.e. also such a tuple, for readable code.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

Rev = tuple[int, int]

_REV = struct.Struct(">Q")
MARK_TOMBSTONE = b"t"


class Revision(NamedTuple):
    main: int
    sub: int = 0


def rev_to_bytes(main: int, sub: int, tombstone: bool = False) -> bytes:
    """etcd's 17-byte bucket key: 8-byte big-endian main, ``_``, 8-byte sub,
    plus a ``t`` mark for a tombstone."""
    b = _REV.pack(main & 0xFFFFFFFFFFFFFFFF) + b"_" + _REV.pack(sub & 0xFFFFFFFFFFFFFFFF)
    return b + MARK_TOMBSTONE if tombstone else b


def bytes_to_rev(b: bytes) -> Revision:
    return Revision(_REV.unpack_from(b, 0)[0], _REV.unpack_from(b, 9)[0])
