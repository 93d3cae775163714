"""On-disk record format of the WAL (struct-encoded, never pickle).

Every record is a 12-byte header followed by a payload::

    offset 0  u32 crc      zlib.crc32 of header bytes 4..12 followed by the payload
    offset 4  u32 length   payload length in bytes
    offset 8  u8  type     one of the REC_* constants (0 is never valid)
    offset 9  3 bytes      zero padding (covered by the crc)
    offset 12 payload

All integers are little-endian.  The CRC is per record (not chained): it covers
the length and type so a damaged header is detected like a damaged payload.

Payloads:

* ``REC_SEGMENT`` (1): first record of every segment file.
  ``4s magic b"MKWL" | u16 version (1) | u16 reserved (0) | u64 sequence |
  u64 first_index`` followed by the caller's opaque metadata bytes (repeated in
  every segment so releasing old segments never loses it).
* ``REC_ENTRY`` (2): ``u64 term | u64 index | u8 entry type`` followed by the data.
* ``REC_HARD_STATE`` (3): ``u64 term | u64 vote | u64 commit``.
* ``REC_SNAPSHOT`` (4): ``u64 index | u64 term``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from meshkit.server.raft.types import Entry, EntryType, HardState

MAGIC = b"MKWL"
VERSION = 1

REC_SEGMENT = 1
REC_ENTRY = 2
REC_HARD_STATE = 3
REC_SNAPSHOT = 4

HEADER = struct.Struct("<IIB3x")
HEADER_SIZE = HEADER.size  # 12
CRC = struct.Struct("<I")
# Header bytes 4..12 (length, type, pad) for a bare header, and the same followed
# by an entry's fixed fields: one pack call per entry on the hot path.
LEN_TYPE = struct.Struct("<IB3x")
LEN_TYPE_ENTRY = struct.Struct("<IB3xQQB")
SEGMENT = struct.Struct("<4sHHQQ")
ENTRY = struct.Struct("<QQB")
HARD_STATE = struct.Struct("<QQQ")
SNAPSHOT = struct.Struct("<QQ")

_ENTRY_FIXED = ENTRY.size  # 17
_crc32 = zlib.crc32


@dataclass(frozen=True, slots=True)
class SnapshotMark:
    """A snapshot at (index, term) exists; entries up to ``index`` are in it."""

    index: int
    term: int


def encode_record(buf: bytearray, rtype: int, payload: bytes) -> None:
    """Append one record to ``buf``."""
    lt = LEN_TYPE.pack(len(payload), rtype)
    buf += CRC.pack(_crc32(payload, _crc32(lt)))
    buf += lt
    buf += payload


def encode_entries(buf: bytearray, entries: Sequence[Entry]) -> None:
    """Append one entry record per entry to ``buf`` (the hot path)."""
    pack_head = LEN_TYPE_ENTRY.pack
    pack_crc = CRC.pack
    crc32 = _crc32
    for e in entries:
        data = e.data
        head = pack_head(_ENTRY_FIXED + len(data), REC_ENTRY, e.term, e.index, e.type)
        buf += pack_crc(crc32(data, crc32(head)))
        buf += head
        buf += data


def encode_hard_state(buf: bytearray, hs: HardState) -> None:
    encode_record(buf, REC_HARD_STATE, HARD_STATE.pack(hs.term, hs.vote, hs.commit))


def encode_snapshot(buf: bytearray, mark: SnapshotMark) -> None:
    encode_record(buf, REC_SNAPSHOT, SNAPSHOT.pack(mark.index, mark.term))


def encode_segment_header(buf: bytearray, seq: int, first_index: int, metadata: bytes) -> None:
    encode_record(buf, REC_SEGMENT, SEGMENT.pack(MAGIC, VERSION, 0, seq, first_index) + metadata)


ENTRY_TYPES = {int(t): t for t in EntryType}
