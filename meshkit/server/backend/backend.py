"""Durable transactional backend: one SQLite file, one connection, batched commits.

Design
------
* One ``sqlite3`` connection in autocommit mode; the backend opens an explicit
  ``BEGIN`` lazily at the first write after a commit and keeps that transaction
  open until :meth:`Backend.commit`. Everything written in between (kv rows,
  meta, buckets, the consistent index) becomes durable atomically, so after a
  crash the database is exactly the state of the last commit.
* kv rows are buffered in a Python list and written with one ``executemany`` when
  the batch is flushed: before any read of the kv table and at commit. A put thus
  costs a list append in the hot path.
* The consistent index is held in memory and written to ``meta`` at commit, in the
  same SQLite transaction as the data it covers.
* ``journal_mode=WAL`` + ``synchronous=NORMAL``: a commit is an append to the WAL
  without fsync (fsync happens at checkpoints). A process crash loses nothing that
  was committed; a power loss may lose the last commits but never leaves a torn
  state, and the Raft WAL (fsynced) is replayed from ``consistent_index``.

Not thread-safe: use from one thread (the event loop's).
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from meshkit.server.backend import schema

# (main, sub, key, create_rev, mod_rev, version, value, lease, tombstone)
KVRow = tuple[int, int, bytes, int, int, int, bytes, int, int]

_INT = struct.Struct(">q")


def encode_int(v: int) -> bytes:
    return _INT.pack(v)


def decode_int(b: bytes) -> int:
    return int(_INT.unpack(b)[0])


class Backend:
    """The durable store under the MVCC KV store (and later lease/auth/members)."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None) -> None:
        self._conn = conn
        self.path = path
        self._in_tx = False
        self._pending: list[KVRow] = []
        self._closed = False
        ci = self.get_meta_int(schema.META_CONSISTENT_INDEX)
        self._consistent_index = ci if ci is not None else 0
        self._saved_consistent_index = self._consistent_index

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, path: Path | str) -> Backend:
        """Open (creating if missing) the database at ``path``."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(p), isolation_level=None)
        for pragma in schema.PRAGMAS:
            conn.execute(pragma)
        conn.execute("BEGIN")
        for ddl in schema.DDL:
            conn.execute(ddl)
        row = conn.execute(schema.SQL_GET_META, (schema.META_SCHEMA_VERSION,)).fetchone()
        if row is None:
            conn.execute(
                schema.SQL_PUT_META,
                (schema.META_SCHEMA_VERSION, encode_int(schema.SCHEMA_VERSION)),
            )
        elif decode_int(row[0]) != schema.SCHEMA_VERSION:
            conn.execute("ROLLBACK")
            conn.close()
            raise RuntimeError(f"unsupported backend schema version {decode_int(row[0])} in {p}")
        conn.execute("COMMIT")
        return cls(conn, p)

    def commit(self) -> None:
        """Flush buffered rows, persist the consistent index, commit the batch."""
        self._check_open()
        if self._consistent_index != self._saved_consistent_index:
            self._begin()
            self._conn.execute(
                schema.SQL_PUT_META,
                (schema.META_CONSISTENT_INDEX, encode_int(self._consistent_index)),
            )
            self._saved_consistent_index = self._consistent_index
        self.flush()
        if self._in_tx:
            self._conn.execute("COMMIT")
            self._in_tx = False

    def sync(self) -> None:
        """Commit and make everything committed durable on disk (not just in the
        OS cache): called before WAL segments the store no longer needs are released."""
        self.commit()
        # With journal_mode=WAL and synchronous=NORMAL, a checkpoint fsyncs both
        # the sqlite WAL and the database file.
        self._conn.execute("PRAGMA wal_checkpoint(FULL)")

    def close(self, *, commit: bool = True) -> None:
        """Close the database; ``commit=False`` drops the open batch (a simulated crash)."""
        if self._closed:
            return
        if commit:
            self.commit()
        elif self._in_tx:
            self._pending.clear()
            self._conn.execute("ROLLBACK")
            self._in_tx = False
        self._conn.close()
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------ consistent index
    @property
    def consistent_index(self) -> int:
        return self._consistent_index

    def set_consistent_index(self, index: int) -> None:
        """Record the last applied Raft index; persisted by the next :meth:`commit`."""
        self._consistent_index = index

    # ---------------------------------------------------------------- kv bucket
    def put_kv(self, row: KVRow) -> None:
        """Buffer one kv row (written at the next flush; visible to reads at once)."""
        self._pending.append(row)

    def put_kvs(self, rows: Iterable[KVRow]) -> None:
        self._pending.extend(rows)

    def flush(self) -> None:
        """Write buffered kv rows into the open SQLite transaction."""
        if self._pending:
            self._begin()
            rows = self._pending
            self._pending = []
            self._conn.executemany(schema.SQL_INSERT_KV, rows)

    def delete_kvs(self, revs: Iterable[tuple[int, int]]) -> None:
        self.flush()
        self._begin()
        self._conn.executemany(schema.SQL_DELETE_KV, revs)

    def get_kv(self, main: int, sub: int) -> KVRow | None:
        self.flush()
        row = self._conn.execute(schema.SQL_GET_KV, (main, sub)).fetchone()
        return row  # type: ignore[no-any-return]

    def get_kvs(self, revs: Iterable[tuple[int, int]]) -> list[KVRow | None]:
        """Rows for many revisions (None where missing), in the order asked."""
        self.flush()
        ex = self._conn.execute
        q = schema.SQL_GET_KV
        return [ex(q, r).fetchone() for r in revs]

    def iter_kv(self, min_main: int = 0, max_main: int = 2**63 - 1) -> Iterator[KVRow]:
        """Rows with ``min_main <= main <= max_main`` in revision order."""
        self.flush()
        cur = self._conn.execute(schema.SQL_SCAN_KV, (min_main, max_main))
        while True:
            rows = cur.fetchmany(4096)
            if not rows:
                return
            yield from rows

    def kv_count(self) -> int:
        self.flush()
        return int(self._conn.execute(f"SELECT count(*) FROM {schema.KV_TABLE}").fetchone()[0])

    # --------------------------------------------------------------------- meta
    def get_meta(self, name: str) -> bytes | None:
        row = self._conn.execute(schema.SQL_GET_META, (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, name: str, value: bytes) -> None:
        self._begin()
        self._conn.execute(schema.SQL_PUT_META, (name, value))

    def get_meta_int(self, name: str) -> int | None:
        v = self.get_meta(name)
        return None if v is None else decode_int(v)

    def set_meta_int(self, name: str, value: int) -> None:
        self.set_meta(name, encode_int(value))

    # ------------------------------------------------------------ generic buckets
    def bucket_get(self, name: str, key: bytes) -> bytes | None:
        row = self._conn.execute(schema.SQL_GET_BUCKET, (name, key)).fetchone()
        return None if row is None else bytes(row[0])

    def bucket_put(self, name: str, key: bytes, value: bytes) -> None:
        self._begin()
        self._conn.execute(schema.SQL_PUT_BUCKET, (name, key, value))

    def bucket_delete(self, name: str, key: bytes) -> None:
        self._begin()
        self._conn.execute(schema.SQL_DELETE_BUCKET, (name, key))

    def bucket_items(self, name: str) -> list[tuple[bytes, bytes]]:
        return [
            (bytes(k), bytes(v)) for k, v in self._conn.execute(schema.SQL_SCAN_BUCKET, (name,))
        ]

    # --------------------------------------------------------------------- size
    def size(self) -> int:
        """Logical database size in bytes (pages allocated, including the WAL's
        not-yet-checkpointed pages): what etcd's ``dbSize`` and quota look at."""
        self.flush()
        page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        page_count = self._conn.execute("PRAGMA page_count").fetchone()[0]
        return int(page_size * page_count)

    def size_in_use(self) -> int:
        """Bytes of pages in use (``size()`` minus the free list): etcd's ``dbSizeInUse``."""
        self.flush()
        page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        page_count = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int(page_size * (page_count - free))

    def snapshot_bytes(self) -> bytes:
        """Commit, then a consistent copy of the whole database (sqlite's backup
        API) as bytes: what a leader ships to a follower behind its log."""
        self.commit()
        dst = sqlite3.connect(":memory:")
        try:
            self._conn.backup(dst)
            return dst.serialize()
        finally:
            dst.close()

    def defragment(self) -> None:
        """Commit, then rebuild the file without free pages (etcd's defrag)."""
        self.commit()
        self._conn.execute("VACUUM")
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # ------------------------------------------------------------------ helpers
    def _begin(self) -> None:
        if not self._in_tx:
            self._check_open()
            self._conn.execute("BEGIN")
            self._in_tx = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("backend is closed")
