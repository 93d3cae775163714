from __future__ import annotations

import pytest

from meshkit.server.mvcc import Generation, KeyIndex, RevisionNotFound, TreeIndex


def _example() -> KeyIndex:
    """put 2,4, del 6, put 8,10, del 12, put 14.0, 14.1, 16."""
    ki = KeyIndex(b"foo")
    ki.put(2, 0)
    ki.put(4, 0)
    ki.tombstone(6, 0)
    ki.put(8, 0)
    ki.put(10, 0)
    ki.tombstone(12, 0)
    ki.put(14, 0)
    ki.put(14, 1)
    ki.put(16, 0)
    return ki


G0 = Generation((2, 0), 3, [(2, 0), (4, 0), (6, 0)])
G1 = Generation((8, 0), 3, [(8, 0), (10, 0), (12, 0)])
G2 = Generation((14, 0), 3, [(14, 0), (14, 1), (16, 0)])


def test_generations_shape() -> None:
    ki = _example()
    assert ki.generations == [G0, G1, G2]
    assert ki.modified == (16, 0)


def test_put_must_increase() -> None:
    ki = KeyIndex(b"k")
    ki.put(5, 0)
    with pytest.raises(AssertionError):
        ki.put(5, 0)
    with pytest.raises(AssertionError):
        ki.put(4, 3)


def test_tombstone_on_deleted_key() -> None:
    ki = KeyIndex(b"k")
    ki.put(2, 0)
    ki.tombstone(3, 0)
    with pytest.raises(RevisionNotFound):
        ki.tombstone(4, 0)


@pytest.mark.parametrize(
    ("at", "want"),
    [
        (1, None),
        (2, ((2, 0), (2, 0), 1)),
        (3, ((2, 0), (2, 0), 1)),
        (4, ((4, 0), (2, 0), 2)),
        (5, ((4, 0), (2, 0), 2)),
        (6, None),  # deleted at 6
        (7, None),
        (8, ((8, 0), (8, 0), 1)),
        (11, ((10, 0), (8, 0), 2)),
        (12, None),
        (13, None),
        (14, ((14, 1), (14, 0), 2)),
        (15, ((14, 1), (14, 0), 2)),
        (16, ((16, 0), (14, 0), 3)),
        (100, ((16, 0), (14, 0), 3)),
    ],
)
def test_get(at: int, want: tuple | None) -> None:
    ki = _example()
    if want is None:
        with pytest.raises(RevisionNotFound):
            ki.get(at)
        assert ki.revision_at(at) is None
    else:
        assert ki.get(at) == want
        assert ki.revision_at(at) == want[0]


def test_since() -> None:
    ki = _example()
    assert ki.since(1) == [(2, 0), (4, 0), (6, 0), (8, 0), (10, 0), (12, 0), (14, 1), (16, 0)]
    assert ki.since(12) == [(12, 0), (14, 1), (16, 0)]
    assert ki.since(17) == []


# at -> (generations after compaction, available, removed)
_COMPACT_CASES = [
    (1, [G0, G1, G2], set(), []),
    (2, [G0, G1, G2], {(2, 0)}, []),
    (3, [G0, G1, G2], {(2, 0)}, []),
    (4, [Generation((2, 0), 3, [(4, 0), (6, 0)]), G1, G2], {(4, 0)}, [(2, 0)]),
    (5, [Generation((2, 0), 3, [(4, 0), (6, 0)]), G1, G2], {(4, 0)}, [(2, 0)]),
    (6, [G1, G2], set(), [(2, 0), (4, 0), (6, 0)]),
    (7, [G1, G2], set(), [(2, 0), (4, 0), (6, 0)]),
    (8, [G1, G2], {(8, 0)}, [(2, 0), (4, 0), (6, 0)]),
    (9, [G1, G2], {(8, 0)}, [(2, 0), (4, 0), (6, 0)]),
    (
        10,
        [Generation((8, 0), 3, [(10, 0), (12, 0)]), G2],
        {(10, 0)},
        [(2, 0), (4, 0), (6, 0), (8, 0)],
    ),
    (12, [G2], set(), [(2, 0), (4, 0), (6, 0), (8, 0), (10, 0), (12, 0)]),
    (13, [G2], set(), [(2, 0), (4, 0), (6, 0), (8, 0), (10, 0), (12, 0)]),
    (
        14,
        [Generation((14, 0), 3, [(14, 1), (16, 0)])],
        {(14, 1)},
        [(2, 0), (4, 0), (6, 0), (8, 0), (10, 0), (12, 0), (14, 0)],
    ),
    (
        16,
        [Generation((14, 0), 3, [(16, 0)])],
        {(16, 0)},
        [(2, 0), (4, 0), (6, 0), (8, 0), (10, 0), (12, 0), (14, 0), (14, 1)],
    ),
    (
        17,
        [Generation((14, 0), 3, [(16, 0)])],
        {(16, 0)},
        [(2, 0), (4, 0), (6, 0), (8, 0), (10, 0), (12, 0), (14, 0), (14, 1)],
    ),
]


@pytest.mark.parametrize(("at", "gens", "available", "removed"), _COMPACT_CASES)
def test_compact_from_scratch(at: int, gens: list, available: set, removed: list) -> None:
    ki = _example()
    kept: set = set()
    ki.keep(at, kept)
    av: set = set()
    rm: list = []
    ki.compact(at, av, rm)
    assert ki.generations == gens
    assert av == available
    assert sorted(rm) == removed
    assert kept == available  # keep() predicts compact() on these histories


def test_compact_incrementally_matches_from_scratch() -> None:
    ki = _example()
    all_removed: list = []
    for at, gens, available, removed in _COMPACT_CASES:
        av: set = set()
        ki.compact(at, av, all_removed)
        assert ki.generations == gens, at
        assert av == available, at
        assert sorted(all_removed) == removed, at


def test_compact_reads_unchanged_at_or_after_compact_rev() -> None:
    for at in range(1, 18):
        ref = _example()
        ki = _example()
        ki.compact(at, set(), [])
        for r in range(at, 20):
            assert ki.revision_at(r) == ref.revision_at(r), (at, r)


def test_compact_tombstone_only_key_becomes_empty() -> None:
    ki = KeyIndex(b"k")
    ki.put(2, 0)
    ki.tombstone(3, 0)
    av: set = set()
    rm: list = []
    ki.compact(3, av, rm)
    assert ki.is_empty() and av == set() and rm == [(2, 0), (3, 0)]


def test_compact_keeps_tombstone_after_compact_rev() -> None:
    ki = KeyIndex(b"k")
    ki.put(2, 0)
    ki.put(3, 0)
    ki.tombstone(5, 0)
    av: set = set()
    rm: list = []
    ki.compact(4, av, rm)
    assert ki.generations == [Generation((2, 0), 3, [(3, 0), (5, 0)]), Generation()]
    assert av == {(3, 0)} and rm == [(2, 0)]


def test_restore_then_put() -> None:
    ki = KeyIndex(b"k")
    ki.restore((2, 0), (7, 0), 4)
    ki.put(9, 0)
    assert ki.get(9) == ((9, 0), (2, 0), 5)
    assert ki.get(8) == ((7, 0), (2, 0), 4)


def test_tree_index_range_and_compact() -> None:
    ti = TreeIndex()
    for i, k in enumerate([b"a", b"b", b"c", b"d"]):
        ti.put(k, 2 + i, 0)
    ti.tombstone(b"b", 6, 0)
    assert [ki.key for ki in ti.range(b"b", b"d")] == [b"b", b"c"]
    assert [ki.key for ki in ti.range(b"b", b"\0")] == [b"b", b"c", b"d"]
    assert [ki.key for ki in ti.range(b"\0", b"\0")] == [b"a", b"b", b"c", b"d"]
    assert [ki.key for ki in ti.range(b"c")] == [b"c"]
    assert list(ti.range(b"c", b"a")) == []
    assert ti.revisions(b"a", b"\0", 6) == ([(2, 0), (4, 0), (5, 0)], 3)
    assert ti.revisions(b"a", b"\0", 5, limit=1) == ([(2, 0)], 4)
    available, removed = ti.compact(6)
    assert available == {(2, 0), (4, 0), (5, 0)}
    assert removed == [(3, 0), (6, 0)]
    assert len(ti) == 3 and ti.get(b"b") is None
    assert ti.keep(6) == available
