"""KeyIndex: the revision history of one key, as etcd's ``keyIndex``.

A key's life is a list of generations. A generation starts with the put that
creates the key and ends with its tombstone (a delete); the last generation is
the open one (empty if the key is currently deleted). Example (etcd's doc)::

    put(1.0); put(2.0); tombstone(3.0); put(4.0); tombstone(5.0)
    generations: {1.0, 2.0, 3.0(t)}, {4.0, 5.0(t)}, {empty}

Compaction at revision ``r`` keeps, for each key, the latest revision ``<= r``
unless it is a tombstone, and every revision ``> r``; generations that ended at
or before ``r`` disappear.

Besides etcd's fields, a KeyIndex caches ``kv``: the key's latest
:class:`KeyValue` (None when the latest change is a tombstone), so reads at
the current revision never touch the backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshkit.server.mvcc.revision import Rev

if TYPE_CHECKING:
    from meshkit.server.mvcc.kv import KeyValue

_ZERO: Rev = (0, 0)


class RevisionNotFound(LookupError):
    """The key has no live revision at the asked revision."""


class Generation:
    __slots__ = ("created", "revs", "ver")

    def __init__(self, created: Rev = _ZERO, ver: int = 0, revs: list[Rev] | None = None) -> None:
        self.created = created  # revision of the put that created this generation
        self.ver = ver  # version of the key at the last revision in revs
        self.revs: list[Rev] = revs if revs is not None else []

    def is_empty(self) -> bool:
        return not self.revs

    def __repr__(self) -> str:
        return f"Generation(created={self.created}, ver={self.ver}, revs={self.revs})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Generation):
            return NotImplemented
        return (self.created, self.ver, self.revs) == (other.created, other.ver, other.revs)

    __hash__ = None  # type: ignore[assignment]


def _last_le(revs: list[Rev], at_main: int) -> int:
    """Index of the last revision with ``main <= at_main`` (-1 if none)."""
    i = len(revs) - 1
    while i >= 0 and revs[i][0] > at_main:
        i -= 1
    return i


class KeyIndex:
    __slots__ = ("generations", "key", "kv", "modified")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.modified: Rev = _ZERO  # the last revision (put or tombstone) of the key
        self.generations: list[Generation] = []
        self.kv: KeyValue | None = None

    def __repr__(self) -> str:
        return f"KeyIndex({self.key!r}, modified={self.modified}, generations={self.generations})"

    # ------------------------------------------------------------------ updates
    def put(self, main: int, sub: int) -> None:
        rev = (main, sub)
        if rev <= self.modified:
            raise AssertionError(f"put {rev} <= modified {self.modified} for {self.key!r}")
        gens = self.generations
        if not gens:
            g = Generation()
            gens.append(g)
        else:
            g = gens[-1]
        if not g.revs:
            g.created = rev
        g.revs.append(rev)
        g.ver += 1
        self.modified = rev

    def tombstone(self, main: int, sub: int) -> None:
        if self.is_empty():
            raise AssertionError(f"tombstone on empty key index {self.key!r}")
        if not self.generations[-1].revs:
            raise RevisionNotFound(self.key)
        self.put(main, sub)
        self.generations.append(Generation())

    def restore(self, created: Rev, modified: Rev, ver: int) -> None:
        """Start the index from a backend row (created/version come from the row)."""
        if self.generations:
            raise AssertionError(f"restore on non-empty key index {self.key!r}")
        self.modified = modified
        self.generations = [Generation(created, ver, [modified])]

    # ------------------------------------------------------------------- reads
    def is_empty(self) -> bool:
        gens = self.generations
        return (len(gens) == 1 and not gens[0].revs) or not gens

    def find_generation(self, at_main: int) -> Generation | None:
        """The generation live at ``at_main`` (None if the key did not exist then)."""
        gens = self.generations
        lastg = len(gens) - 1
        cg = lastg
        while cg >= 0:
            g = gens[cg]
            revs = g.revs
            if not revs:
                cg -= 1
                continue
            # a closed generation whose tombstone is at or before at_main
            if cg != lastg and revs[-1][0] <= at_main:
                return None
            if revs[0][0] <= at_main:
                return g
            cg -= 1
        return None

    def revision_at(self, at_main: int) -> Rev | None:
        """The revision holding the key's value at ``at_main`` (None if absent)."""
        g = self.find_generation(at_main)
        if g is None:
            return None
        revs = g.revs
        return revs[_last_le(revs, at_main)]

    def get(self, at_main: int) -> tuple[Rev, Rev, int]:
        """(modified, created, version) at ``at_main``, as etcd's ``keyIndex.get``."""
        g = self.find_generation(at_main)
        if g is None:
            raise RevisionNotFound(self.key)
        n = _last_le(g.revs, at_main)
        if n == -1:
            raise RevisionNotFound(self.key)
        return g.revs[n], g.created, g.ver - (len(g.revs) - n - 1)

    def since(self, main: int) -> list[Rev]:
        """Revisions with ``main >= main``, the last sub of each main, in order."""
        out: list[Rev] = []
        last = -1
        for g in self.generations:
            for r in g.revs:
                if r[0] < main:
                    continue
                if r[0] == last:
                    out[-1] = r
                else:
                    out.append(r)
                    last = r[0]
        return out

    def all_revisions(self) -> list[Rev]:
        return [r for g in self.generations for r in g.revs]

    # -------------------------------------------------------------- compaction
    def _do_compact(self, at_main: int, available: set[Rev]) -> tuple[int, int]:
        gens = self.generations
        gen_idx = 0
        g = gens[0]
        # first generation that includes at_main or was created after it
        last = len(gens) - 1
        while gen_idx < last:
            if g.revs[-1][0] > at_main:
                break
            gen_idx += 1
            g = gens[gen_idx]
        i = _last_le(g.revs, at_main)
        if i != -1:
            available.add(g.revs[i])
        return gen_idx, i

    def compact(self, at_main: int, available: set[Rev], removed: list[Rev] | None = None) -> None:
        """Drop revisions superseded at ``at_main``; the kept revision ``<= at_main``
        goes into ``available``, every dropped revision into ``removed``."""
        if self.is_empty():
            raise AssertionError(f"compact on empty key index {self.key!r}")
        gens = self.generations
        gen_idx, rev_index = self._do_compact(at_main, available)
        g = gens[gen_idx]
        if g.revs:
            if rev_index > 0:
                if removed is not None:
                    removed.extend(g.revs[:rev_index])
                g.revs = g.revs[rev_index:]
            # a lone tombstone left of a closed generation goes too
            if len(g.revs) == 1 and gen_idx != len(gens) - 1:
                available.discard(g.revs[0])
                if removed is not None:
                    removed.append(g.revs[0])
                gen_idx += 1
        if gen_idx:
            if removed is not None:
                for old in gens[:gen_idx]:
                    removed.extend(old.revs)
            self.generations = gens[gen_idx:]

    def keep(self, at_main: int, available: set[Rev]) -> None:
        """What :meth:`compact` would keep at or below ``at_main``, without changing."""
        if self.is_empty():
            return
        gen_idx, rev_index = self._do_compact(at_main, available)
        g = self.generations[gen_idx]
        if g.revs and rev_index == len(g.revs) - 1 and gen_idx != len(self.generations) - 1:
            available.discard(g.revs[rev_index])
