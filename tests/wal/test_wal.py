"""WAL round-trips, overwrite semantics, release, and the recovery rules."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from meshkit.server.raft.types import Entry, EntryType, HardState
from meshkit.server.wal import (
    WAL,
    SnapshotMark,
    WALClosedError,
    WALCorruptError,
    WALExistsError,
    WALLockedError,
    WALNotFoundError,
    segment_name,
)
from meshkit.server.wal import record as rec
from tests.wal.util import ents, record_offsets, reopen, segments

META = b"\x00node=1;cluster=\xff\x01"


def make(d: Path, **kw: int) -> WAL:
    return WAL.create(d, META, **kw)


# ------------------------------------------------------------------ round trips


def test_create_open_round_trip(tmp_path: Path) -> None:
    d = tmp_path / "member" / "wal"
    assert not WAL.exists(d)
    wal = make(d)
    assert WAL.exists(d)
    batch = ents(1, 50, size=300)
    batch.append(Entry(term=2, index=51, type=EntryType.NORMAL, data=b""))
    batch.append(Entry(term=2, index=52, type=EntryType.CONF_CHANGE, data=bytes(range(256))))
    wal.save(HardState(term=2, vote=3, commit=40), batch)
    wal.sync()
    wal.close()
    assert [p.name for p in segments(d)] == [segment_name(0, 1)]
    r = reopen(d)
    assert r.metadata == META
    assert r.hard_state == HardState(term=2, vote=3, commit=40)
    assert r.entries == batch
    assert all(type(e.data) is bytes for e in r.entries)
    assert r.snapshots == []
    assert r.truncated_bytes == 0


def test_empty_log_and_hard_state_only(tmp_path: Path) -> None:
    wal = make(tmp_path)
    wal.save(None, [])  # no-op
    wal.close()
    r = reopen(tmp_path)
    assert (r.entries, r.hard_state, r.metadata) == ([], HardState(), META)
    wal, _ = WAL.open(tmp_path)
    wal.save(HardState(1, 1, 0), [])
    wal.save(HardState(2, 0, 0), [])
    wal.close()
    assert reopen(tmp_path).hard_state == HardState(2, 0, 0)


def test_rollover_and_reopen_appends(tmp_path: Path) -> None:
    wal = make(tmp_path, segment_bytes=512)
    expected: list[Entry] = []
    for start in range(1, 200, 10):
        batch = ents(start, start + 9, size=37)
        wal.save(HardState(1, 1, start), batch)
        expected += batch
    wal.sync()
    wal.close()
    segs = segments(tmp_path)
    assert len(segs) > 5
    for p in segs[:-1]:  # every finished segment got past the threshold
        assert p.stat().st_size >= 512
    r = reopen(tmp_path, segment_bytes=512)
    assert r.entries == expected
    assert r.hard_state == HardState(1, 1, 191)
    # Append after reopen, several times, with rollovers in between.
    for round_ in range(3):
        wal, r = WAL.open(tmp_path, segment_bytes=512)
        assert r.entries == expected
        nxt = expected[-1].index + 1
        batch = ents(nxt, nxt + 14, size=50, tag=bytes([round_]))
        wal.save(None, batch)
        wal.sync()
        expected += batch
        wal.close()
    assert reopen(tmp_path).entries == expected


def test_single_entry_bigger_than_segment(tmp_path: Path) -> None:
    wal = make(tmp_path, segment_bytes=256)
    big = Entry(1, 1, EntryType.NORMAL, os.urandom(10_000))
    wal.save(None, [big])
    wal.save(None, ents(2, 3))
    wal.close()
    assert reopen(tmp_path).entries == [big, *ents(2, 3)]


def test_segment_names_follow_etcd_format(tmp_path: Path) -> None:
    wal = make(tmp_path, segment_bytes=150)
    for i in range(1, 30):
        wal.save(None, ents(i, i, size=100))
    wal.close()
    names = [p.name for p in segments(tmp_path)]
    assert names[0] == "0000000000000000-0000000000000001.wal"
    for seq, name in enumerate(names):
        s, idx = name[:-4].split("-")
        assert len(s) == len(idx) == 16 and int(s, 16) == seq
    # Each segment is cut after one entry here, so segment k starts at index k+1.
    assert names[3] == segment_name(3, 4)


def test_metadata_repeated_in_every_segment(tmp_path: Path) -> None:
    wal = make(tmp_path, segment_bytes=100)
    for i in range(1, 6):
        wal.save(HardState(3, 2, i), ents(i, i, size=120))
    wal.release_to(5)
    wal.close()
    assert len(segments(tmp_path)) == 2
    r = reopen(tmp_path)
    assert r.metadata == META
    assert r.hard_state == HardState(3, 2, 5)


def test_create_refuses_existing_log(tmp_path: Path) -> None:
    make(tmp_path).close()
    with pytest.raises(WALExistsError):
        make(tmp_path)
    # A directory that exists but holds no segments is fine.
    other = tmp_path / "empty"
    other.mkdir()
    (other / "unrelated.txt").write_text("x")
    make(other).close()


def test_open_without_segments(tmp_path: Path) -> None:
    with pytest.raises(WALNotFoundError):
        WAL.open(tmp_path)
    with pytest.raises(WALNotFoundError):
        WAL.open(tmp_path / "missing")


def test_close_idempotent_and_closed_errors(tmp_path: Path) -> None:
    wal = make(tmp_path)
    wal.close()
    wal.close()
    with pytest.raises(WALClosedError):
        wal.save(None, ents(1, 1))
    with pytest.raises(WALClosedError):
        wal.sync()


def test_directory_lock(tmp_path: Path) -> None:
    wal = make(tmp_path)
    with pytest.raises(WALLockedError):
        WAL.open(tmp_path)
    wal.close()
    with WAL.open(tmp_path)[0]:
        pass


# ------------------------------------------------------------ replay semantics


def test_overwrite_truncates_suffix(tmp_path: Path) -> None:
    wal = make(tmp_path)
    wal.save(HardState(1, 1, 3), ents(1, 10, term=1))
    # A new leader at term 2 overwrites 6.. (uncommitted) with a shorter suffix.
    wal.save(HardState(2, 2, 3), ents(6, 8, term=2))
    wal.close()
    r = reopen(tmp_path)
    assert r.entries == ents(1, 5, term=1) + ents(6, 8, term=2)
    assert r.hard_state == HardState(2, 2, 3)


def test_overwrite_across_segments(tmp_path: Path) -> None:
    wal = make(tmp_path, segment_bytes=300)
    wal.save(None, ents(1, 20, term=1, size=40))  # spans into a second segment
    wal.save(None, ents(21, 30, term=1, size=40))
    wal.save(None, ents(4, 6, term=3, size=40))
    wal.save(None, ents(7, 7, term=4, size=40))
    wal.close()
    assert len(segments(tmp_path)) >= 3
    r = reopen(tmp_path)
    assert r.entries == ents(1, 3, size=40) + ents(4, 6, term=3, size=40) + ents(
        7, 7, term=4, size=40
    )
    assert [e.index for e in r.entries] == list(range(1, 8))


def test_from_snapshot_skips_entries(tmp_path: Path) -> None:
    wal = make(tmp_path, segment_bytes=400)
    wal.save(None, ents(1, 50))
    wal.save_snapshot(SnapshotMark(30, 1))
    wal.save(None, ents(51, 60))
    wal.close()
    r = reopen(tmp_path, from_snapshot=SnapshotMark(30, 1))
    assert r.entries == ents(31, 60)
    assert SnapshotMark(30, 1) in r.snapshots
    r = reopen(tmp_path, from_snapshot=SnapshotMark(60, 1))
    assert r.entries == []
    r = reopen(tmp_path)
    assert r.entries == ents(1, 60)


def test_snapshot_covers_gap(tmp_path: Path) -> None:
    # A follower installs a snapshot at 100 while its log ends at 5.
    wal = make(tmp_path, segment_bytes=300)
    wal.save(None, ents(1, 5))
    wal.save_snapshot(SnapshotMark(100, 4))
    wal.save(HardState(4, 0, 100), ents(101, 110, term=4))
    wal.close()
    r = reopen(tmp_path)
    assert r.entries == ents(101, 110, term=4)
    assert r.snapshots == [SnapshotMark(100, 4)]
    assert reopen(tmp_path, from_snapshot=SnapshotMark(100, 4)).entries == ents(101, 110, term=4)
    # Segments cut after the snapshot are named past it.
    last = segments(tmp_path)[-1].name
    assert int(last[17:33], 16) > 100


def test_gap_without_snapshot_is_corrupt(tmp_path: Path) -> None:
    wal = make(tmp_path)
    wal.save(None, ents(1, 5))
    wal.save(None, ents(9, 10))
    wal.close()
    with pytest.raises(WALCorruptError, match="gap"):
        WAL.open(tmp_path)


# ------------------------------------------------------------------ release


def test_release_to(tmp_path: Path) -> None:
    wal = make(tmp_path, segment_bytes=250)
    for i in range(1, 41):
        wal.save(HardState(1, 1, i), ents(i, i, size=100))
    wal.sync()
    before = segments(tmp_path)
    firsts = [int(p.name[17:33], 16) for p in before]
    wal.save_snapshot(SnapshotMark(20, 1))
    wal.release_to(20)
    after = segments(tmp_path)
    # Exactly the segments whose successor starts at or below 20 are gone.
    keep = max(i for i, f in enumerate(firsts) if f <= 20)
    assert after == before[keep:] + [p for p in segments(tmp_path) if p not in before]
    assert int(after[0].name[17:33], 16) <= 20
    wal.release_to(10**9)  # never the current segment
    assert segments(tmp_path) == [segments(tmp_path)[-1]]
    assert wal.segment_paths() == segments(tmp_path)
    wal.save(None, ents(41, 45))
    wal.close()
    # Entries 21..40 went with the released segments: opening from snapshot 20
    # finds the gap, opening from a snapshot covering them works.
    with pytest.raises(WALCorruptError, match="gap"):
        WAL.open(tmp_path, from_snapshot=SnapshotMark(20, 1))
    r = reopen(tmp_path, from_snapshot=SnapshotMark(40, 1))
    assert r.entries == ents(41, 45)
    assert r.hard_state == HardState(1, 1, 40)
    assert reopen(tmp_path).entries == ents(41, 45)


def test_release_then_open_from_snapshot(tmp_path: Path) -> None:
    wal = make(tmp_path, segment_bytes=250)
    for i in range(1, 41):
        wal.save(None, ents(i, i, size=100))
    wal.save_snapshot(SnapshotMark(25, 1))
    wal.release_to(25)
    wal.close()
    assert reopen(tmp_path, from_snapshot=SnapshotMark(25, 1)).entries == ents(26, 40, size=100)
    # Without a mark, replay starts at the oldest entry still on disk.
    r = reopen(tmp_path)
    assert r.entries[-1] == ents(40, 40, size=100)[0]
    assert r.entries[0].index <= 25


# ------------------------------------------------------------- torn tails


def _build(d: Path, *, segment_bytes: int = 64 << 20) -> tuple[int, int, list[Entry]]:
    """A log whose last record is one entry; returns (size before it, size after, entries)."""
    wal = make(d, segment_bytes=segment_bytes)
    saved = ents(1, 30, size=60)
    for i in range(0, 30, 5):
        wal.save(HardState(1, 1, i), saved[i : i + 5])
    wal.sync()
    tail = segments(d)[-1]
    before = tail.stat().st_size
    last = ents(31, 31, size=45)
    wal.save(None, last)
    wal.close()
    return before, tail.stat().st_size, saved + last


@pytest.mark.parametrize("segment_bytes", [64 << 20, 700])
def test_torn_tail_at_every_offset(tmp_path: Path, segment_bytes: int) -> None:
    src = tmp_path / "src"
    before, after, saved = _build(src, segment_bytes=segment_bytes)
    tail_name = segments(src)[-1].name
    for cut in range(before, after):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(src, d)
        tail = d / tail_name
        os.truncate(tail, cut)
        wal, r = WAL.open(d)
        assert r.entries == saved[:-1], cut
        assert r.truncated_bytes == cut - before
        assert r.truncated_bytes > 0 or cut == before
        assert tail.stat().st_size == before
        # The next append continues cleanly.
        again = ents(31, 32, size=10, tag=b"again")
        wal.save(None, again)
        wal.close()
        assert reopen(d).entries == saved[:-1] + again
        shutil.rmtree(d)


def test_zero_filled_tail(tmp_path: Path) -> None:
    _, after, saved = _build(tmp_path)
    tail = segments(tmp_path)[-1]
    with open(tail, "ab") as f:
        f.write(bytes(8192))
    wal, r = WAL.open(tmp_path)
    wal.close()
    assert r.entries == saved
    assert r.truncated_bytes == 8192
    assert tail.stat().st_size == after


def test_last_record_zeroed(tmp_path: Path) -> None:
    # The filesystem extended the file but the data never made it: zeros.
    before, after, saved = _build(tmp_path)
    tail = segments(tmp_path)[-1]
    with open(tail, "r+b") as f:
        f.seek(before)
        f.write(bytes(after - before))
        f.write(bytes(100))
    r = reopen(tmp_path)
    assert r.entries == saved[:-1]
    assert r.truncated_bytes == after - before + 100


def test_bad_crc_last_record_then_zeros_is_torn(tmp_path: Path) -> None:
    before, after, saved = _build(tmp_path)
    tail = segments(tmp_path)[-1]
    with open(tail, "r+b") as f:
        f.seek(after - 10)
        f.write(bytes(10))  # the payload's end never reached the disk
        f.write(bytes(512))
    r = reopen(tmp_path)
    assert r.entries == saved[:-1]
    assert r.truncated_bytes == after - before + 512
    assert tail.stat().st_size == before


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def _snapshot_dir(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_bad_crc_in_middle_of_last_segment(tmp_path: Path) -> None:
    _build(tmp_path)
    tail = segments(tmp_path)[-1]
    recs = record_offsets(tail.read_bytes())
    off, end, rtype = recs[len(recs) // 2]
    assert rtype in (rec.REC_ENTRY, rec.REC_HARD_STATE)
    _flip(tail, end - 3)
    state = _snapshot_dir(tmp_path)
    with pytest.raises(WALCorruptError) as ei:
        WAL.open(tmp_path)
    msg = str(ei.value)
    assert str(tail) in msg and f"offset {off}" in msg and "crc mismatch" in msg
    assert (ei.value.path, ei.value.offset) == (tail, off)
    assert _snapshot_dir(tmp_path) == state  # nothing modified on disk
    # Not even by asking again with a snapshot mark.
    with pytest.raises(WALCorruptError):
        WAL.open(tmp_path, from_snapshot=SnapshotMark(2, 1))
    assert _snapshot_dir(tmp_path) == state


@pytest.mark.parametrize("where", ["payload", "length", "type", "crc"])
def test_bad_record_in_non_last_segment(tmp_path: Path, where: str) -> None:
    _build(tmp_path, segment_bytes=700)
    segs = segments(tmp_path)
    assert len(segs) >= 3
    victim = segs[1]
    off, end, _ = record_offsets(victim.read_bytes())[2]
    pos = {"payload": end - 1, "length": off + 4, "type": off + 8, "crc": off}[where]
    _flip(victim, pos)
    state = _snapshot_dir(tmp_path)
    with pytest.raises(WALCorruptError) as ei:
        WAL.open(tmp_path)
    assert str(victim) in str(ei.value) and f"offset {off}" in str(ei.value)
    assert _snapshot_dir(tmp_path) == state


def test_truncated_non_last_segment(tmp_path: Path) -> None:
    _build(tmp_path, segment_bytes=700)
    victim = segments(tmp_path)[0]
    size = victim.stat().st_size
    os.truncate(victim, size - 5)
    state = _snapshot_dir(tmp_path)
    with pytest.raises(WALCorruptError, match=str(victim)):
        WAL.open(tmp_path)
    assert _snapshot_dir(tmp_path) == state


def test_garbage_after_torn_record_is_corrupt(tmp_path: Path) -> None:
    before, after, _ = _build(tmp_path)
    tail = segments(tmp_path)[-1]
    _flip(tail, after - 1)  # last record bad ...
    with open(tail, "ab") as f:
        f.write(bytes(100) + b"\x01")  # ... and non-zero bytes after it
    with pytest.raises(WALCorruptError, match=f"offset {before}: crc mismatch"):
        WAL.open(tmp_path)


def test_missing_middle_segment(tmp_path: Path) -> None:
    _build(tmp_path, segment_bytes=700)
    segs = segments(tmp_path)
    segs[1].unlink()
    with pytest.raises(WALCorruptError) as ei:
        WAL.open(tmp_path)
    assert str(segs[2]) in str(ei.value) and "missing segment" in str(ei.value)


def test_segment_first_index_must_follow(tmp_path: Path) -> None:
    _build(tmp_path, segment_bytes=700)
    segs = segments(tmp_path)
    victim = segs[2]
    seq, first = int(victim.name[:16], 16), int(victim.name[17:33], 16)
    data = victim.read_bytes()
    _, end, _ = record_offsets(data)[0]
    buf = bytearray()
    rec.encode_segment_header(buf, seq, first + 3, META)
    renamed = victim.with_name(segment_name(seq, first + 3))
    renamed.write_bytes(bytes(buf) + data[end:])
    victim.unlink()
    with pytest.raises(WALCorruptError) as ei:
        WAL.open(tmp_path)
    assert str(renamed) in str(ei.value) and f"expected {first}" in str(ei.value)


def test_segment_name_disagrees_with_header(tmp_path: Path) -> None:
    _build(tmp_path, segment_bytes=700)
    victim = segments(tmp_path)[1]
    seq, first = int(victim.name[:16], 16), int(victim.name[17:33], 16)
    renamed = victim.rename(victim.with_name(segment_name(seq, first + 1)))
    with pytest.raises(WALCorruptError, match="header says"):
        WAL.open(tmp_path)
    assert renamed.exists()


def test_stale_temp_file_ignored_and_removed(tmp_path: Path) -> None:
    _, _, saved = _build(tmp_path)
    stale = tmp_path / (segment_name(9, 99) + ".tmp")
    stale.write_bytes(b"partial")
    r = reopen(tmp_path)
    assert r.entries == saved
    assert not stale.exists()
