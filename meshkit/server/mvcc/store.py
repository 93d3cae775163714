"""KVStore: etcd v3 MVCC over the SQLite backend.

In memory
    * ``TreeIndex``: SortedDict key -> KeyIndex (generations of revisions).
    * On each KeyIndex, ``kv``: the key's latest KeyValue (None if deleted), so a
      read at the current revision (or at any revision not older than the key's
      last change) never touches the backend.
    * current/compact revisions; the consistent index lives on the backend.

On disk (see :mod:`meshkit.server.backend.schema`)
    One ``kv`` row per revision (puts and tombstones), meta for the consistent
    index and compaction state. Writes go into the backend's open batch; the
    caller commits it with :meth:`KVStore.commit`.

Reads at older revisions resolve the revision in the index and fetch the row
from the backend by primary key, except when the resolved revision is the key's
latest, which is served from the cache.

Single-threaded: one write txn at a time, reads and writes from the same thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

from meshkit._internal.errors import CompactedError, FutureRevError
from meshkit.server.backend import Backend
from meshkit.server.backend import schema as bschema
from meshkit.server.mvcc.hash import crc32c, marshal_kv
from meshkit.server.mvcc.index import TreeIndex
from meshkit.server.mvcc.key_index import KeyIndex
from meshkit.server.mvcc.kv import Event, EventType, KeyValue, RangeResult
from meshkit.server.mvcc.revision import Rev, rev_to_bytes

_PUT = EventType.PUT
_DELETE = EventType.DELETE

# Rows deleted per step of a deferred physical compaction (etcd: 1000 per batch).
COMPACTION_BATCH = 10_000


class KVStore:
    def __init__(self, backend: Backend) -> None:
        self._be = backend
        self._index = TreeIndex()
        self._current_rev = 1
        # etcd's compactMainRev: -1 until the first compaction
        self._compact_rev = -1
        self._txn: TxnWrite | None = None
        # physical deletion still to do: (compact rev, removed revisions, next position)
        self._pending_compaction: tuple[int, list[Rev], int] | None = None
        self._restore()

    # ------------------------------------------------------------------ state
    @property
    def backend(self) -> Backend:
        return self._be

    @property
    def current_revision(self) -> int:
        return self._current_rev

    @property
    def compact_revision(self) -> int:
        """The last compaction revision; -1 if never compacted (etcd's value)."""
        return self._compact_rev

    @property
    def consistent_index(self) -> int:
        return self._be.consistent_index

    def set_consistent_index(self, index: int) -> None:
        self._be.set_consistent_index(index)

    def commit(self) -> None:
        """Make everything written so far (and the consistent index) durable."""
        self._be.commit()

    def close(self, *, commit: bool = True) -> None:
        """Commit and close the backend (``commit=False`` drops the open batch)."""
        if self._txn is not None:
            raise RuntimeError("close() with a write txn open")
        self._be.close(commit=commit)

    def __len__(self) -> int:
        """Number of keys in the index (live and tombstoned, until compacted)."""
        return len(self._index)

    def leased_keys(self) -> Iterable[tuple[bytes, int]]:
        """(key, lease) for every live key attached to a lease, from the
        in-memory latest values (the lessor rebuilds lease -> keys from it)."""
        for ki in self._index._d.values():
            kv = ki.kv
            if kv is not None and kv.lease:
                yield kv.key, kv.lease

    # ------------------------------------------------------------------ reads
    def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        rev: int = 0,
        limit: int = 0,
        *,
        count_only: bool = False,
    ) -> RangeResult:
        """Keys in etcd's range at ``rev`` (<= 0: current). ``count`` ignores ``limit``."""
        return self._range(key, range_end, rev, limit, self._current_rev, count_only)

    def _range(
        self, key: bytes, range_end: bytes, rev: int, limit: int, cur: int, count_only: bool
    ) -> RangeResult:
        if rev > cur:
            raise FutureRevError()
        if rev <= 0:
            rev = cur
        if rev < self._compact_rev:
            raise CompactedError(compact_revision=self._compact_rev)
        kvs: list[KeyValue] = []
        count = 0
        fetch: list[tuple[int, Rev]] = []
        want = 0 if count_only else (limit if limit > 0 else -1)
        kis: Iterable[KeyIndex]
        if not range_end:
            one = self._index.get(key)
            kis = (one,) if one is not None else ()
        else:
            kis = self._index.range(key, range_end)
        for ki in kis:
            if rev >= ki.modified[0]:
                kv = ki.kv
                if kv is None:
                    continue
                count += 1
                if want and (want < 0 or len(kvs) < want):
                    kvs.append(kv)
            else:
                r = ki.revision_at(rev)
                if r is None:
                    continue
                count += 1
                if want and (want < 0 or len(kvs) < want):
                    fetch.append((len(kvs), r))
                    kvs.append(None)  # type: ignore[arg-type]
        if fetch:
            rows = self._be.get_kvs([r for _, r in fetch])
            for (pos, r), row in zip(fetch, rows, strict=True):
                if row is None:
                    raise AssertionError(f"revision {r} in the index but not in the backend")
                kvs[pos] = KeyValue(row[2], row[3], row[4], row[5], row[6], row[7])
        return RangeResult(kvs, count, cur)

    def events(self, min_rev: int, max_rev: int = 0) -> list[Event]:
        """Events with ``min_rev <= main <= max_rev`` (0: current) read from the
        backend, for watchers catching up; ``prev_kv`` is not filled. Raises
        CompactedError if ``min_rev`` is below the compact revision (etcd's watch rule)."""
        if min_rev < self._compact_rev:
            raise CompactedError(compact_revision=self._compact_rev)
        if max_rev <= 0:
            max_rev = self._current_rev
        out: list[Event] = []
        for main, _sub, key, create, mod, ver, value, lease, tomb in self._be.iter_kv(
            min_rev, max_rev
        ):
            if tomb:
                out.append(Event(_DELETE, KeyValue(key, 0, main, 0)))
            else:
                out.append(Event(_PUT, KeyValue(key, create, mod, ver, value, lease)))
        return out

    # ------------------------------------------------------------------ writes
    def write(self) -> TxnWrite:
        """Open the write txn (one at a time). Use as a context manager, or call
        :meth:`TxnWrite.end`."""
        if self._txn is not None:
            raise RuntimeError("a write txn is already open")
        if self._be.closed:
            raise RuntimeError("store is closed")
        txn = TxnWrite(self)
        self._txn = txn
        return txn

    def _end(self, txn: TxnWrite) -> None:
        if txn.events:
            self._current_rev = txn.rev
            self._be.put_kvs(txn._rows)
        self._txn = None

    # ------------------------------------------------------------- compaction
    def compact(self, rev: int, *, wait: bool = True) -> None:
        """Compact at ``rev``: reads below it fail from now on; superseded
        revisions leave the index at once and the backend either now
        (``wait=True``) or through :meth:`compact_step` calls. The compaction is
        recorded in the open batch (durable with the next commit); a restart with
        an unfinished physical compaction finishes it."""
        if self._txn is not None:
            raise RuntimeError("compact() with a write txn open")
        if rev <= self._compact_rev:
            raise CompactedError(compact_revision=self._compact_rev)
        if rev > self._current_rev:
            raise FutureRevError()
        self.finish_compaction()
        self._compact_rev = rev
        self._be.set_meta_int(bschema.META_SCHEDULED_COMPACT_REV, rev)
        _available, removed = self._index.compact(rev)
        self._pending_compaction = (rev, removed, 0)
        if wait:
            self.finish_compaction()

    @property
    def compaction_pending(self) -> bool:
        return self._pending_compaction is not None

    def compact_step(self, max_rows: int = COMPACTION_BATCH) -> bool:
        """Delete up to ``max_rows`` compacted rows; True when nothing is left."""
        pc = self._pending_compaction
        if pc is None:
            return True
        rev, removed, pos = pc
        end = min(pos + max_rows, len(removed))
        if end > pos:
            self._be.delete_kvs(removed[pos:end])
        if end >= len(removed):
            self._be.set_meta_int(bschema.META_COMPACT_REV, rev)
            self._pending_compaction = None
            return True
        self._pending_compaction = (rev, removed, end)
        return False

    def finish_compaction(self) -> None:
        while not self.compact_step(1 << 62):
            pass

    # ------------------------------------------------------------------ hash
    def hash_kv(self, rev: int = 0) -> tuple[int, int]:
        """(CRC-32C over the key bucket up to ``rev``, compact revision), exactly
        etcd 3.4's ``HashByRev`` (see :mod:`meshkit.server.mvcc.hash`). Errors
        as etcd: ``0 < rev <= compact`` -> CompactedError, ``rev > current`` ->
        FutureRevError. Cost: a full scan of the kv table in pure Python."""
        compact = self._compact_rev
        if rev > 0 and rev <= compact:
            raise CompactedError(compact_revision=compact)
        if rev > 0 and rev > self._current_rev:
            raise FutureRevError()
        if rev <= 0:
            rev = self._current_rev
        keep = self._index.keep(rev)
        h = crc32c(b"key")
        for main, sub, key, create, mod, ver, value, lease, tomb in self._be.iter_kv(0, rev):
            if main <= compact and keep and (main, sub) not in keep:
                continue
            if tomb:
                h = crc32c(rev_to_bytes(main, sub, True), h)
                h = crc32c(marshal_kv(key, 0, 0, 0, b"", 0), h)
            else:
                h = crc32c(rev_to_bytes(main, sub), h)
                h = crc32c(marshal_kv(key, create, mod, ver, value, lease), h)
        return h, compact

    # --------------------------------------------------------------- restore
    def _restore(self) -> None:
        be = self._be
        finished = be.get_meta_int(bschema.META_COMPACT_REV)
        scheduled = be.get_meta_int(bschema.META_SCHEDULED_COMPACT_REV)
        if finished is not None:
            self._compact_rev = finished
        idx: dict[bytes, KeyIndex] = {}
        get = idx.get
        cur = 1
        for main, sub, key, create, mod, ver, value, lease, tomb in be.iter_kv():
            cur = main
            ki = get(key)
            if tomb:
                # a tombstone whose key has no earlier revision left was
                # orphaned by an interrupted compaction: skip it, like etcd
                if ki is not None:
                    ki.tombstone(main, sub)
                    ki.kv = None
                continue
            if ki is None:
                ki = KeyIndex(key)
                ki.restore((create, 0), (main, sub), ver)
                idx[key] = ki
            else:
                ki.put(main, sub)
            ki.kv = KeyValue(key, create, mod, ver, value, lease)
        self._index = TreeIndex(idx)
        # revisions up to the compaction may all be gone
        self._current_rev = max(cur, self._compact_rev, 1)
        if scheduled is not None and scheduled > self._compact_rev:
            self.compact(scheduled)


class TxnWrite:
    """The one open write txn. Changes go into the index and cache immediately
    and into the backend batch at :meth:`end`. All changes share ``rev``."""

    __slots__ = ("_done", "_rows", "_store", "begin_rev", "events", "rev")

    def __init__(self, store: KVStore) -> None:
        self._store = store
        self.begin_rev = store._current_rev
        self.rev = self.begin_rev + 1
        self.events: list[Event] = []
        self._rows: list[tuple[int, int, bytes, int, int, int, bytes, int, int]] = []
        self._done = False

    def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        rev: int = 0,
        limit: int = 0,
        *,
        count_only: bool = False,
    ) -> RangeResult:
        """Read seeing this txn's writes: at ``rev`` + 1 once something changed."""
        cur = self.rev if self.events else self.begin_rev
        return self._store._range(key, range_end, rev, limit, cur, count_only)

    def put(self, key: bytes, value: bytes, lease: int = 0) -> KeyValue | None:
        """Put; returns the previous KeyValue (None if the key was absent)."""
        s = self._store
        main = self.rev
        sub = len(self.events)
        d = s._index._d
        ki = d.get(key)
        if ki is None:
            ki = KeyIndex(key)
            d[key] = ki
            prev = None
        else:
            prev = ki.kv
        if prev is None:
            create = main
            ver = 1
        else:
            create = prev.create_revision
            ver = prev.version + 1
        kv = KeyValue(key, create, main, ver, value, lease)
        ki.put(main, sub)
        ki.kv = kv
        self.events.append(Event(_PUT, kv, prev))
        self._rows.append((main, sub, key, create, main, ver, value, lease, 0))
        return prev

    def delete_range(self, key: bytes, range_end: bytes = b"") -> list[KeyValue]:
        """Delete the live keys in the range; returns their previous KeyValues."""
        main = self.rev
        deleted: list[KeyValue] = []
        for ki in list(self._store._index.range(key, range_end)):
            prev = ki.kv
            if prev is None:
                continue
            sub = len(self.events)
            ki.tombstone(main, sub)
            ki.kv = None
            self.events.append(Event(_DELETE, KeyValue(ki.key, 0, main, 0), prev))
            self._rows.append((main, sub, ki.key, 0, main, 0, b"", 0, 1))
            deleted.append(prev)
        return deleted

    @property
    def changed(self) -> bool:
        return bool(self.events)

    def end(self) -> list[Event]:
        """Finish: bump the revision if anything changed; returns the events."""
        if not self._done:
            self._done = True
            self._store._end(self)
        return self.events

    def __enter__(self) -> TxnWrite:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Changes already made are in the index: end the txn either way so the
        # store stays consistent (the apply layer validates before writing).
        self.end()
