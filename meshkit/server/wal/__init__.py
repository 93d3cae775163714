"""Segmented, checksummed write-ahead log of Raft state (etcd's ``wal`` package).

``WAL.create``/``WAL.open`` build a :class:`WAL`; ``save`` appends (no fsync),
``sync`` makes everything saved durable (group commit).  See :mod:`.wal` for the
recovery rules and :mod:`.record` for the on-disk format.
"""

from meshkit.server.wal.errors import (
    WALClosedError,
    WALCorruptError,
    WALError,
    WALExistsError,
    WALLockedError,
    WALNotFoundError,
)
from meshkit.server.wal.record import SnapshotMark
from meshkit.server.wal.wal import DEFAULT_SEGMENT_BYTES, WAL, Replay, segment_name

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "WAL",
    "Replay",
    "SnapshotMark",
    "WALClosedError",
    "WALCorruptError",
    "WALError",
    "WALExistsError",
    "WALLockedError",
    "WALNotFoundError",
    "segment_name",
]
