"""Errors raised by the write-ahead log."""

from __future__ import annotations

from pathlib import Path

from meshkit._internal.errors import MeshkitError


class WALError(MeshkitError):
    """Root of the WAL's errors (also raised once the log is unusable after an I/O error)."""


class WALNotFoundError(WALError):
    """``WAL.open`` found no segment files in the directory."""

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        super().__init__(f"wal: no segment files in {dir}")


class WALExistsError(WALError):
    """``WAL.create`` found segment files already in the directory."""

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        super().__init__(f"wal: {dir} already holds a write-ahead log")


class WALLockedError(WALError):
    """Another open WAL (this process or another) holds the directory lock."""

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        super().__init__(f"wal: {dir} is locked by another open WAL")


class WALClosedError(WALError):
    """An operation was attempted on a closed WAL."""

    def __init__(self) -> None:
        super().__init__("wal: the log is closed")


class WALCorruptError(WALError):
    """The log on disk is damaged where a crash cannot explain it.

    ``path`` names the segment file, ``offset`` the byte offset of the bad record
    (``None`` when the problem is the file as a whole, e.g. a missing segment).
    """

    def __init__(self, path: Path, offset: int | None, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        if offset is None:
            super().__init__(f"wal: corrupt log at {path}: {reason}")
        else:
            super().__init__(f"wal: corrupt record in {path} at offset {offset}: {reason}")
