"""The write-ahead log: segmented, checksummed, append-only storage of Raft state.

Layout: a directory of segment files named ``%016x-%016x.wal`` (sequence number,
first Raft index expected in the segment).  Each segment starts with a
``REC_SEGMENT`` record (sequence, first index, the caller's metadata) and, when
one exists, the current hard state; then entry, hard-state and snapshot records
follow in the order they were saved.  See :mod:`meshkit.server.wal.record` for
the bytes.

Durability: :meth:`WAL.save` only writes (one ``os.write`` per call, no fsync);
:meth:`WAL.sync` fdatasyncs the current segment, which makes everything saved
so far durable (earlier segments are synced when they are closed at rollover).
New segments are written to ``<name>.tmp``, fsynced, renamed into place and the
directory fsynced, so a segment file that exists always has its header.

Recovery (:meth:`WAL.open`): a damaged tail of the *last* segment that a crash
can explain (a partial header, a length running past end-of-file, or a bad CRC
followed only by zero bytes) is truncated away and reported in
``Replay.truncated_bytes``.  Any other damage raises :class:`WALCorruptError`
naming the file and byte offset, and nothing on disk is modified.

Threading: a WAL is not meant for concurrent use.  One thread at a time may call
its methods; handing :meth:`sync` to a worker thread (``asyncio.to_thread``)
while the event-loop thread leaves the WAL alone is fine.  A lock serialises the
file operations anyway (cheap when uncontended), so overlapping calls are safe
but block each other.  After an I/O error from write or fdatasync the WAL marks
itself failed and every later call raises :class:`WALError` (the state of the
file is unknown; the process should restart and recover).

An exclusive ``flock`` on the directory keeps two open WALs (in this process or
another) from appending to the same log.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from meshkit.server.raft.types import Entry, HardState
from meshkit.server.wal import record as rec
from meshkit.server.wal.errors import (
    WALClosedError,
    WALCorruptError,
    WALError,
    WALExistsError,
    WALLockedError,
    WALNotFoundError,
)
from meshkit.server.wal.record import SnapshotMark

DEFAULT_SEGMENT_BYTES = 64 << 20

_SEGMENT_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")
_TMP_SUFFIX = ".tmp"


def segment_name(seq: int, first_index: int) -> str:
    return f"{seq:016x}-{first_index:016x}.wal"


@dataclass(frozen=True, slots=True)
class _Segment:
    seq: int
    first_index: int
    path: Path


@dataclass(slots=True)
class Replay:
    """What :meth:`WAL.open` read back."""

    metadata: bytes = b""
    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshots: list[SnapshotMark] = field(default_factory=list)
    truncated_bytes: int = 0


def _list_segments(dir: Path) -> list[_Segment]:
    try:
        names = os.listdir(dir)
    except FileNotFoundError:
        return []
    segs = []
    for name in names:
        m = _SEGMENT_RE.match(name)
        if m:
            segs.append(_Segment(int(m.group(1), 16), int(m.group(2), 16), dir / name))
    segs.sort(key=lambda s: s.seq)
    return segs


def _fsync_dir(dir_fd: int) -> None:
    os.fsync(dir_fd)


def _lock_dir(dir: Path) -> int:
    fd = os.open(dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WALLockedError(dir) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class _Reader:
    """Replays segments in order, validating them; the state of one ``open``."""

    def __init__(self, mark: SnapshotMark | None) -> None:
        self.replay = Replay()
        self.mark = mark
        # Entries in replay.entries have indexes base+1, base+2, ...
        self.base: int | None = mark.index if mark is not None else None
        self.last_index = 0  # index of the last entry record read (raw, for naming)
        self.latest_snap = mark.index if mark is not None else 0
        self.metadata: bytes | None = None

    def read_segment(self, seg: _Segment, data: bytes, *, is_last: bool, first: bool) -> int:
        """Apply one segment's records; return the offset where valid data ends.

        For a non-last segment that is always ``len(data)`` (anything else raises).
        """
        path = seg.path
        n = len(data)
        mv = memoryview(data)
        crc32 = zlib.crc32
        unpack_header = rec.HEADER.unpack_from
        unpack_entry = rec.ENTRY.unpack_from
        entry_types = rec.ENTRY_TYPES
        header_size = rec.HEADER_SIZE
        off = 0
        seen_header = False
        while off < n:
            if n - off < header_size:
                if is_last and seen_header:
                    return off
                raise WALCorruptError(path, off, "truncated record header")
            crc, length, rtype = unpack_header(data, off)
            start = off + header_size
            end = start + length
            if end > n:
                if is_last and seen_header:
                    return off
                raise WALCorruptError(path, off, f"record length {length} runs past end of file")
            if crc32(mv[start:end], crc32(mv[off + 4 : start])) != crc:
                if is_last and seen_header and data.count(0, end) == n - end:
                    return off
                raise WALCorruptError(path, off, "crc mismatch")
            if not seen_header:
                if rtype != rec.REC_SEGMENT:
                    raise WALCorruptError(path, off, "segment does not start with a segment header")
                self._segment_header(seg, data, start, end, first=first)
                seen_header = True
            elif rtype == rec.REC_ENTRY:
                if length < rec.ENTRY.size:
                    raise WALCorruptError(path, off, "short entry record")
                term, index, etype = unpack_entry(data, start)
                et = entry_types.get(etype)
                if et is None:
                    raise WALCorruptError(path, off, f"unknown entry type {etype}")
                self._entry(Entry(term, index, et, data[start + rec.ENTRY.size : end]), path, off)
            elif rtype == rec.REC_HARD_STATE:
                if length != rec.HARD_STATE.size:
                    raise WALCorruptError(path, off, "bad hard state record size")
                self.replay.hard_state = HardState(*rec.HARD_STATE.unpack_from(data, start))
            elif rtype == rec.REC_SNAPSHOT:
                if length != rec.SNAPSHOT.size:
                    raise WALCorruptError(path, off, "bad snapshot record size")
                index, term = rec.SNAPSHOT.unpack_from(data, start)
                self.replay.snapshots.append(SnapshotMark(index, term))
                self.latest_snap = max(self.latest_snap, index)
                self.last_index = max(self.last_index, index)
            elif rtype == rec.REC_SEGMENT:
                raise WALCorruptError(path, off, "segment header in the middle of a segment")
            else:
                raise WALCorruptError(path, off, f"unknown record type {rtype}")
            off = end
        if not seen_header:
            raise WALCorruptError(path, 0, "empty segment file")
        return off

    def _segment_header(
        self, seg: _Segment, data: bytes, start: int, end: int, *, first: bool
    ) -> None:
        if end - start < rec.SEGMENT.size:
            raise WALCorruptError(seg.path, 0, "short segment header")
        magic, version, _, seq, first_index = rec.SEGMENT.unpack_from(data, start)
        if magic != rec.MAGIC:
            raise WALCorruptError(seg.path, 0, "bad magic")
        if version != rec.VERSION:
            raise WALCorruptError(seg.path, 0, f"unsupported version {version}")
        if (seq, first_index) != (seg.seq, seg.first_index):
            raise WALCorruptError(
                seg.path, 0, f"header says sequence {seq} first index {first_index}, not the name's"
            )
        metadata = data[start + rec.SEGMENT.size : end]
        if self.metadata is None:
            self.metadata = metadata
        elif metadata != self.metadata:
            raise WALCorruptError(seg.path, 0, "metadata differs from the previous segment")
        if first:
            self.last_index = max(self.last_index, first_index - 1)
        elif first_index != self.last_index + 1:
            raise WALCorruptError(
                seg.path,
                None,
                f"segment starts at index {first_index} but the previous one ended at "
                f"{self.last_index} (expected {self.last_index + 1})",
            )

    def _entry(self, e: Entry, path: Path, off: int) -> None:
        self.last_index = e.index
        ents = self.replay.entries
        base = self.base
        if base is None or (e.index <= base and self.mark is None):
            # First entry seen with no snapshot given, or an overwrite reaching
            # below everything read so far (older segments were released).
            self.base = e.index - 1
            ents.clear()
            ents.append(e)
            return
        if e.index <= base:
            return  # covered by the snapshot we were opened from
        pos = e.index - base - 1
        n = len(ents)
        if pos == n:
            ents.append(e)
        elif pos < n:
            # A new leader overwrote an uncommitted suffix: drop it.
            del ents[pos:]
            ents.append(e)
        elif self.latest_snap >= e.index - 1:
            # A snapshot recorded in the log covers the gap.
            self.base = e.index - 1
            ents.clear()
            ents.append(e)
        else:
            raise WALCorruptError(
                path, off, f"entry index {e.index} leaves a gap after index {base + n}"
            )


class WAL:
    """An open write-ahead log.  Build one with :meth:`create` or :meth:`open`."""

    def __init__(
        self,
        *,
        dir: Path,
        dir_fd: int,
        segments: list[_Segment],
        fd: int,
        size: int,
        metadata: bytes,
        last_index: int,
        hard_state: HardState,
        segment_bytes: int,
    ) -> None:
        self._dir = dir
        self._dir_fd = dir_fd
        self._segments = segments  # every segment in the directory, oldest first
        self._fd = fd  # the last segment, positioned at its end
        self._size = size
        self._metadata = metadata
        self._last_index = last_index
        self._hard_state = hard_state
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._closed = False
        self._failed: BaseException | None = None

    # ----------------------------------------------------------- construction

    @staticmethod
    def exists(dir: Path) -> bool:
        """Whether ``dir`` holds at least one segment file."""
        return bool(_list_segments(Path(dir)))

    @classmethod
    def create(
        cls, dir: Path, metadata: bytes, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> WAL:
        """Create a new log in ``dir`` (made if missing; must hold no segments)."""
        dir = Path(dir)
        if segment_bytes <= 0:
            raise ValueError("segment_bytes must be positive")
        dir.mkdir(parents=True, exist_ok=True)
        dir_fd = _lock_dir(dir)
        try:
            if _list_segments(dir):
                raise WALExistsError(dir)
            _remove_stale_temps(dir)
            seg = _Segment(0, 1, dir / segment_name(0, 1))
            fd, size = _new_segment_file(dir_fd, seg, bytes(metadata), HardState())
            # Make the directory entry of the log directory itself durable too.
            parent_fd = os.open(dir.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(parent_fd)
            finally:
                os.close(parent_fd)
        except BaseException:
            os.close(dir_fd)
            raise
        return cls(
            dir=dir,
            dir_fd=dir_fd,
            segments=[seg],
            fd=fd,
            size=size,
            metadata=bytes(metadata),
            last_index=0,
            hard_state=HardState(),
            segment_bytes=segment_bytes,
        )

    @classmethod
    def open(
        cls,
        dir: Path,
        *,
        from_snapshot: SnapshotMark | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> tuple[WAL, Replay]:
        """Open an existing log for appending and replay it.

        With ``from_snapshot``, reading starts at the last segment whose first
        index is <= the mark's index and entries <= the mark's index are left out.
        """
        dir = Path(dir)
        if segment_bytes <= 0:
            raise ValueError("segment_bytes must be positive")
        if not _list_segments(dir):
            raise WALNotFoundError(dir)
        dir_fd = _lock_dir(dir)
        try:
            segs = _list_segments(dir)  # again, now that we hold the lock
            if not segs:
                raise WALNotFoundError(dir)
            for prev, seg in itertools.pairwise(segs):
                if seg.seq != prev.seq + 1:
                    raise WALCorruptError(
                        seg.path, None, f"missing segment with sequence {prev.seq + 1} before it"
                    )
            start = 0
            if from_snapshot is not None:
                for i, seg in enumerate(segs):
                    if seg.first_index <= from_snapshot.index:
                        start = i
            reader = _Reader(from_snapshot)
            valid_end = 0
            last_size = 0
            for i in range(start, len(segs)):
                seg = segs[i]
                with open(seg.path, "rb") as f:
                    data = f.read()
                is_last = i == len(segs) - 1
                valid_end = reader.read_segment(seg, data, is_last=is_last, first=i == start)
                last_size = len(data)
            replay = reader.replay
            assert reader.metadata is not None
            replay.metadata = reader.metadata
            # Everything validated: now (and only now) touch the disk.
            tail = segs[-1]
            fd = os.open(tail.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                if valid_end < last_size:
                    replay.truncated_bytes = last_size - valid_end
                    os.ftruncate(fd, valid_end)
                    os.fsync(fd)
                os.lseek(fd, valid_end, os.SEEK_SET)
                _remove_stale_temps(dir)
            except BaseException:
                os.close(fd)
                raise
        except BaseException:
            os.close(dir_fd)
            raise
        wal = cls(
            dir=dir,
            dir_fd=dir_fd,
            segments=segs,
            fd=fd,
            size=valid_end,
            metadata=replay.metadata,
            last_index=reader.last_index,
            hard_state=replay.hard_state,
            segment_bytes=segment_bytes,
        )
        return wal, replay

    # ------------------------------------------------------------- the log

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """Append ``entries`` then ``hard_state`` (if given and non-empty).

        Buffered: one write syscall, no fsync; call :meth:`sync` for durability.
        May roll over to a new segment (which syncs the finished one).
        """
        buf = bytearray()
        if entries:
            rec.encode_entries(buf, entries)
        if hard_state is not None and not hard_state.is_empty():
            rec.encode_hard_state(buf, hard_state)
        if not buf:
            return
        with self._lock:
            self._check_usable()
            self._write(buf)
            if entries:
                self._last_index = entries[-1].index
            if hard_state is not None and not hard_state.is_empty():
                self._hard_state = hard_state
            if self._size >= self._segment_bytes:
                self._cut()

    def sync(self) -> None:
        """fdatasync the current segment: everything saved so far is durable."""
        with self._lock:
            self._check_usable()
            self._fdatasync()

    def save_snapshot(self, mark: SnapshotMark) -> None:
        """Record that a snapshot at (index, term) exists; written and synced."""
        buf = bytearray()
        rec.encode_snapshot(buf, mark)
        with self._lock:
            self._check_usable()
            self._write(buf)
            self._last_index = max(self._last_index, mark.index)
            self._fdatasync()
            if self._size >= self._segment_bytes:
                self._cut()

    def release_to(self, index: int) -> None:
        """Delete old segments holding only entries < ``index``.

        The segment containing ``index`` and the current segment are kept.
        """
        with self._lock:
            self._check_usable()
            keep_from = 0
            for i in range(len(self._segments) - 1):
                if self._segments[i + 1].first_index <= index:
                    keep_from = i + 1
                else:
                    break
            if keep_from == 0:
                return
            for seg in self._segments[:keep_from]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(seg.path)
            del self._segments[:keep_from]
            _fsync_dir(self._dir_fd)

    def close(self) -> None:
        """Sync and close; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._failed is None:
                    os.fdatasync(self._fd)
            finally:
                os.close(self._fd)
                os.close(self._dir_fd)  # also drops the flock

    def __enter__(self) -> WAL:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------ inspection

    @property
    def dir(self) -> Path:
        return self._dir

    @property
    def last_index(self) -> int:
        """Index of the last entry saved (or snapshot mark, if later)."""
        return self._last_index

    def segment_paths(self) -> list[Path]:
        """The segment files in use, oldest first."""
        with self._lock:
            return [s.path for s in self._segments]

    # --------------------------------------------------------------- internals

    def _check_usable(self) -> None:
        if self._closed:
            raise WALClosedError()
        if self._failed is not None:
            raise WALError(f"wal: unusable after an earlier I/O error: {self._failed}")

    def _write(self, buf: bytearray) -> None:
        try:
            _write_all(self._fd, buf)
        except OSError as e:
            self._failed = e
            raise WALError(f"wal: write to {self._segments[-1].path} failed: {e}") from e
        self._size += len(buf)

    def _fdatasync(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError as e:
            # After a failed fsync the page cache state is unknown: never retry.
            self._failed = e
            raise WALError(f"wal: fdatasync of {self._segments[-1].path} failed: {e}") from e

    def _cut(self) -> None:
        """Finish the current segment and continue in a new one."""
        try:
            os.fdatasync(self._fd)
            cur = self._segments[-1]
            seq, first = cur.seq + 1, self._last_index + 1
            seg = _Segment(seq, first, self._dir / segment_name(seq, first))
            fd, size = _new_segment_file(self._dir_fd, seg, self._metadata, self._hard_state)
        except OSError as e:
            self._failed = e
            raise WALError(f"wal: rolling over to a new segment failed: {e}") from e
        os.close(self._fd)
        self._fd = fd
        self._size = size
        self._segments.append(seg)


def _remove_stale_temps(dir: Path) -> None:
    for name in os.listdir(dir):
        if name.endswith(".wal" + _TMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dir / name)


def _new_segment_file(
    dir_fd: int, seg: _Segment, metadata: bytes, hard_state: HardState
) -> tuple[int, int]:
    """Write a segment's header to a temp file, fsync, rename, fsync the dir."""
    buf = bytearray()
    rec.encode_segment_header(buf, seg.seq, seg.first_index, metadata)
    if not hard_state.is_empty():
        rec.encode_hard_state(buf, hard_state)
    tmp = seg.path.with_name(seg.path.name + _TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, buf)
        os.fsync(fd)
        os.rename(tmp, seg.path)
        _fsync_dir(dir_fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return fd, len(buf)
