"""TreeIndex: ordered map key -> KeyIndex (etcd's ``treeIndex``).

A ``SortedDict``: point lookups are plain dict lookups; ranges bisect the sorted
key list. Keys stay in the index while they have any revision left (tombstoned
keys included) and leave it when compaction empties their KeyIndex.
"""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedDict

from meshkit.server.mvcc.key_index import KeyIndex, RevisionNotFound
from meshkit.server.mvcc.revision import Rev


class TreeIndex:
    __slots__ = ("_d",)

    def __init__(self, items: dict[bytes, KeyIndex] | None = None) -> None:
        self._d: SortedDict = SortedDict(items) if items else SortedDict()

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: bytes) -> KeyIndex | None:
        return self._d.get(key)  # type: ignore[no-any-return]

    def insert(self, ki: KeyIndex) -> None:
        self._d[ki.key] = ki

    def put(self, key: bytes, main: int, sub: int) -> KeyIndex:
        ki = self._d.get(key)
        if ki is None:
            ki = KeyIndex(key)
            self._d[key] = ki
        ki.put(main, sub)
        return ki  # type: ignore[no-any-return]

    def tombstone(self, key: bytes, main: int, sub: int) -> None:
        ki = self._d.get(key)
        if ki is None:
            raise RevisionNotFound(key)
        ki.tombstone(main, sub)

    def range(self, key: bytes, range_end: bytes = b"") -> Iterator[KeyIndex]:
        """KeyIndexes in etcd's range: ``range_end`` b"" = the single key,
        b"\\0" = every key >= ``key``, else ``[key, range_end)``."""
        d = self._d
        if not range_end:
            ki = d.get(key)
            if ki is not None:
                yield ki
            return
        if range_end == b"\0":
            keys = d.irange(key)
        else:
            if range_end <= key:
                return
            keys = d.irange(key, range_end, (True, False))
        for k in keys:
            yield d[k]

    def revisions(
        self, key: bytes, range_end: bytes, at_main: int, limit: int = 0
    ) -> tuple[list[Rev], int]:
        """Revisions of the keys live at ``at_main`` (at most ``limit`` if > 0) and
        the total number of such keys."""
        revs: list[Rev] = []
        total = 0
        for ki in self.range(key, range_end):
            r = ki.revision_at(at_main)
            if r is None:
                continue
            if limit <= 0 or len(revs) < limit:
                revs.append(r)
            total += 1
        return revs, total

    def compact(self, at_main: int) -> tuple[set[Rev], list[Rev]]:
        """Compact every key at ``at_main``: returns (kept revisions <= at_main,
        removed revisions in ascending order). Emptied keys leave the index."""
        available: set[Rev] = set()
        removed: list[Rev] = []
        empty: list[bytes] = []
        for k, ki in self._d.items():
            gens = ki.generations
            # fast path: one open generation whose first revision is the kept one or newer
            if len(gens) == 1:
                revs = gens[0].revs
                if revs and (len(revs) == 1 or revs[1][0] > at_main):
                    if revs[0][0] <= at_main:
                        available.add(revs[0])
                    continue
            ki.compact(at_main, available, removed)
            if ki.is_empty():
                empty.append(k)
        for k in empty:
            del self._d[k]
        removed.sort()
        return available, removed

    def keep(self, at_main: int) -> set[Rev]:
        available: set[Rev] = set()
        for ki in self._d.values():
            ki.keep(at_main, available)
        return available

    def keys(self) -> list[bytes]:
        return list(self._d.keys())

    def items(self) -> Iterator[tuple[bytes, KeyIndex]]:
        return iter(self._d.items())
