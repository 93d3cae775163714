from meshkit.server.snap.snapshotter import SnapshotCorruptError, Snapshotter

__all__ = ["SnapshotCorruptError", "Snapshotter"]
