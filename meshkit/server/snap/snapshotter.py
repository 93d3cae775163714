"""Snapshot metadata files in <data-dir>/member/snap.

The key-value state itself lives in the backend database, which persists the
index it applied; a snapshot file records the Raft position (index, term,
membership) the WAL can be released up to. Files are JSON with a CRC, named
``%016x-%016x.snap`` (term, index) like etcd's, written via rename so a crash
never leaves a half file under the final name.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

from meshkit._internal.errors import MeshkitError
from meshkit.server.raft.types import ConfState, SnapshotMetadata


class SnapshotCorruptError(MeshkitError):
    pass


class Snapshotter:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def save(self, meta: SnapshotMetadata) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {
                "index": meta.index,
                "term": meta.term,
                "voters": list(meta.conf_state.voters),
                "learners": list(meta.conf_state.learners),
            },
            sort_keys=True,
        ).encode()
        doc = json.dumps({"crc": zlib.crc32(body), "body": body.decode()}).encode()
        final = self.dir / f"{meta.term:016x}-{meta.index:016x}.snap"
        tmp = final.with_suffix(".snap.tmp")
        with open(tmp, "wb") as f:
            f.write(doc)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._purge(keep=final)
        return final

    def load_newest(self) -> SnapshotMetadata | None:
        if not self.dir.is_dir():
            return None
        files = sorted(self.dir.glob("*.snap"), reverse=True)
        for path in files:
            try:
                return self._read(path)
            except SnapshotCorruptError:
                # etcd also falls back to an older snapshot when the newest is
                # broken; the WAL still holds everything after the older one.
                continue
        return None

    def _read(self, path: Path) -> SnapshotMetadata:
        try:
            doc = json.loads(path.read_bytes())
            body = doc["body"].encode()
            if zlib.crc32(body) != doc["crc"]:
                raise SnapshotCorruptError(f"snap: crc mismatch in {path}")
            d = json.loads(body)
            return SnapshotMetadata(
                index=int(d["index"]),
                term=int(d["term"]),
                conf_state=ConfState(voters=tuple(d["voters"]), learners=tuple(d["learners"])),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise SnapshotCorruptError(f"snap: cannot read {path}: {e}") from e

    def _purge(self, keep: Path, retain: int = 5) -> None:
        files = sorted(self.dir.glob("*.snap"), reverse=True)
        for old in files[retain:]:
            if old != keep:
                old.unlink(missing_ok=True)
