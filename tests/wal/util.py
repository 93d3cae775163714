"""Helpers shared by the WAL tests."""

from __future__ import annotations

from pathlib import Path

from meshkit.server.raft.types import Entry, EntryType, HardState
from meshkit.server.wal import WAL, Replay
from meshkit.server.wal import record as rec


def ents(first: int, last: int, *, term: int = 1, size: int = 20, tag: bytes = b"") -> list[Entry]:
    """Entries first..last with distinct, deterministic data."""
    out = []
    for i in range(first, last + 1):
        data = (tag + f"{term}:{i}:".encode()).ljust(size, b"\xab")[: max(size, 1)]
        et = EntryType.CONF_CHANGE if i % 7 == 0 else EntryType.NORMAL
        out.append(Entry(term=term, index=i, type=et, data=data))
    return out


def segments(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.name.endswith(".wal"))


def reopen(d: Path, **kw: object) -> Replay:
    wal, replay = WAL.open(d, **kw)  # type: ignore[arg-type]
    wal.close()
    return replay


def record_offsets(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, end, type) of every whole record in a segment's bytes."""
    out = []
    off = 0
    while off + rec.HEADER_SIZE <= len(data):
        _, length, rtype = rec.HEADER.unpack_from(data, off)
        end = off + rec.HEADER_SIZE + length
        if end > len(data) or rtype == 0:
            break
        out.append((off, end, rtype))
        off = end
    return out


def segment_prefix_size(data: bytes) -> int:
    """Bytes taken by the records a new segment starts with (header, hard state)."""
    recs = record_offsets(data)
    end = recs[0][1]
    if len(recs) > 1 and recs[1][2] == rec.REC_HARD_STATE:
        end = recs[1][1]
    return end


HS0 = HardState()
