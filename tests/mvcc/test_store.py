from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshkit._internal.errors import CompactedError, FutureRevError
from meshkit.server.backend import Backend
from meshkit.server.mvcc import Event, EventType, KeyValue, KVStore, RangeResult

ALL = (b"\0", b"\0")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "member" / "snap" / "db.sqlite"


@pytest.fixture
def store(path: Path) -> Iterator[KVStore]:
    s = KVStore(Backend.open(path))
    yield s
    if not s.backend.closed:
        s.close()


def put(s: KVStore, key: bytes, value: bytes, lease: int = 0) -> list[Event]:
    with s.write() as t:
        t.put(key, value, lease)
    return t.events


def delete(s: KVStore, key: bytes, end: bytes = b"") -> list[KeyValue]:
    with s.write() as t:
        prev = t.delete_range(key, end)
    return prev


def reopen(s: KVStore, path: Path, *, commit: bool = True) -> KVStore:
    s.close(commit=commit)
    return KVStore(Backend.open(path))


def snapshot_all(s: KVStore) -> dict[int, RangeResult]:
    """range-all at every readable revision."""
    start = max(s.compact_revision, 1)
    return {r: s.range(*ALL, rev=r) for r in range(start, s.current_revision + 1)}


# ---------------------------------------------------------------- revisions


def test_empty_store_is_at_revision_1(store: KVStore) -> None:
    assert store.current_revision == 1
    assert store.compact_revision == -1
    assert store.range(*ALL) == RangeResult([], 0, 1)
    assert store.range(b"a", rev=1) == RangeResult([], 0, 1)


def test_first_write_is_revision_2_and_txn_ops_share_main(store: KVStore) -> None:
    with store.write() as t:
        assert t.rev == 2
        t.put(b"a", b"1")
        t.put(b"b", b"2", lease=7)
        t.delete_range(b"a")
    assert store.current_revision == 2
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in t.events] == [
        (EventType.PUT, b"a", 2),
        (EventType.PUT, b"b", 2),
        (EventType.DELETE, b"a", 2),
    ]
    assert store.range(*ALL).kvs == [KeyValue(b"b", 2, 2, 1, b"2", 7)]
    # subs were 0, 1, 2
    assert [r[:2] for r in store.backend.iter_kv()] == [(2, 0), (2, 1), (2, 2)]
    put(store, b"c", b"3")
    assert store.current_revision == 3


def test_txn_without_changes_does_not_bump(store: KVStore) -> None:
    with store.write() as t:
        pass
    assert t.events == [] and store.current_revision == 1
    put(store, b"a", b"1")
    assert delete(store, b"zzz") == []
    assert delete(store, b"b", b"\0") == []
    assert store.current_revision == 2
    delete(store, b"a")
    assert store.current_revision == 3
    assert delete(store, b"a") == []  # already deleted: no change
    assert store.current_revision == 3


def test_only_one_write_txn(store: KVStore) -> None:
    t = store.write()
    with pytest.raises(RuntimeError):
        store.write()
    t.end()
    t.end()  # idempotent
    store.write().end()


# ---------------------------------------------------------- versions & kvs


def test_versions_tombstones_generations(store: KVStore) -> None:
    put(store, b"k", b"v1")  # 2
    put(store, b"k", b"v2")  # 3
    assert store.range(b"k").kvs == [KeyValue(b"k", 2, 3, 2, b"v2")]
    prev = delete(store, b"k")  # 4
    assert prev == [KeyValue(b"k", 2, 3, 2, b"v2")]
    assert store.range(b"k") == RangeResult([], 0, 4)
    put(store, b"k", b"v3")  # 5: new generation
    assert store.range(b"k").kvs == [KeyValue(b"k", 5, 5, 1, b"v3")]
    # history
    assert store.range(b"k", rev=1).kvs == []
    assert store.range(b"k", rev=2).kvs == [KeyValue(b"k", 2, 2, 1, b"v1")]
    assert store.range(b"k", rev=3).kvs == [KeyValue(b"k", 2, 3, 2, b"v2")]
    assert store.range(b"k", rev=4).kvs == []
    assert store.range(b"k", rev=5).kvs == [KeyValue(b"k", 5, 5, 1, b"v3")]


def test_put_returns_prev_and_events_carry_prev_kv(store: KVStore) -> None:
    with store.write() as t:
        assert t.put(b"a", b"1") is None
        assert t.put(b"a", b"2") == KeyValue(b"a", 2, 2, 1, b"1")  # same txn, sub 1
    assert store.range(b"a").kvs == [KeyValue(b"a", 2, 2, 2, b"2")]
    assert t.events[1].prev_kv == KeyValue(b"a", 2, 2, 1, b"1")
    with store.write() as t:
        t.delete_range(b"a")
        assert t.put(b"a", b"3") is None
    ev_del, ev_put = t.events
    assert ev_del == Event(EventType.DELETE, KeyValue(b"a", 0, 3, 0), KeyValue(b"a", 2, 2, 2, b"2"))
    assert ev_put == Event(EventType.PUT, KeyValue(b"a", 3, 3, 1, b"3"), None)


def test_delete_range_returns_prevs_sorted(store: KVStore) -> None:
    with store.write() as t:
        for k in (b"c", b"a", b"b", b"d"):
            t.put(k, k.upper())
    prev = delete(store, b"a", b"c")
    assert [kv.key for kv in prev] == [b"a", b"b"]
    assert [kv.key for kv in store.range(*ALL).kvs] == [b"c", b"d"]
    prev = delete(store, b"\0", b"\0")
    assert [kv.key for kv in prev] == [b"c", b"d"]
    assert store.range(*ALL).count == 0


# ------------------------------------------------------------------- range


def test_range_modes_limit_count(store: KVStore) -> None:
    with store.write() as t:
        for k in (b"foo", b"foo1", b"foo2", b"fop", b"a", b"zz"):
            t.put(k, b"x")
    keys = lambda r: [kv.key for kv in r.kvs]  # noqa: E731
    assert keys(store.range(b"foo")) == [b"foo"]
    assert keys(store.range(b"fo")) == []
    assert keys(store.range(b"foo", b"fop")) == [b"foo", b"foo1", b"foo2"]
    assert keys(store.range(b"foo", b"\0")) == [b"foo", b"foo1", b"foo2", b"fop", b"zz"]
    assert keys(store.range(*ALL)) == [b"a", b"foo", b"foo1", b"foo2", b"fop", b"zz"]
    assert store.range(b"foo", b"foo").count == 0
    assert store.range(b"fop", b"foo").count == 0
    r = store.range(b"foo", b"fop", limit=2)
    assert keys(r) == [b"foo", b"foo1"] and r.count == 3 and r.rev == 2
    assert store.range(*ALL, limit=100).count == 6
    r = store.range(*ALL, count_only=True)
    assert r.kvs == [] and r.count == 6


def test_range_revision_errors(store: KVStore) -> None:
    for i in range(5):
        put(store, b"k", b"%d" % i)  # revs 2..6
    with pytest.raises(FutureRevError):
        store.range(b"k", rev=7)
    assert store.range(b"k", rev=0).kvs[0].mod_revision == 6
    assert store.range(b"k", rev=-3).kvs[0].mod_revision == 6
    store.compact(4)
    with pytest.raises(CompactedError) as ei:
        store.range(b"k", rev=3)
    assert ei.value.compact_revision == 4
    assert ei.value.detail == "etcdserver: mvcc: required revision has been compacted"
    assert store.range(b"k", rev=4).kvs == [KeyValue(b"k", 2, 4, 3, b"2")]
    assert store.range(b"k", rev=5).kvs == [KeyValue(b"k", 2, 5, 4, b"3")]


def test_read_inside_write_txn_sees_own_writes(store: KVStore) -> None:
    put(store, b"a", b"old")  # 2
    with store.write() as t:
        r = t.range(b"a")
        assert r.rev == 2 and r.kvs[0].value == b"old"
        t.put(b"a", b"new")
        t.put(b"b", b"b")
        r = t.range(*ALL)
        assert r.rev == 3 and [kv.value for kv in r.kvs] == [b"new", b"b"]
        assert t.range(*ALL, rev=2).kvs == [KeyValue(b"a", 2, 2, 1, b"old")]
        # the store's own read still answers at the committed revision
        assert store.range(*ALL) == RangeResult([KeyValue(b"a", 2, 2, 1, b"old")], 1, 2)
        with pytest.raises(FutureRevError):
            store.range(*ALL, rev=3)
        t.delete_range(b"a")
        assert [kv.key for kv in t.range(*ALL).kvs] == [b"b"]
        assert t.delete_range(b"a") == []
    assert store.current_revision == 3


def test_historical_range_values_come_from_backend(store: KVStore) -> None:
    with store.write() as t:
        for i in range(50):
            t.put(b"k%02d" % i, b"v0")
    for i in range(0, 50, 2):
        put(store, b"k%02d" % i, b"v1")
    r = store.range(*ALL, rev=2)
    assert r.count == 50 and all(kv.value == b"v0" and kv.mod_revision == 2 for kv in r.kvs)
    r = store.range(*ALL, rev=2, limit=3)
    assert [kv.key for kv in r.kvs] == [b"k00", b"k01", b"k02"] and r.count == 50


# ------------------------------------------------------------------ compaction


def test_compact_errors(store: KVStore) -> None:
    put(store, b"a", b"1")
    put(store, b"a", b"2")  # current 3
    with pytest.raises(FutureRevError):
        store.compact(4)
    store.compact(2)
    assert store.compact_revision == 2
    with pytest.raises(CompactedError) as ei:
        store.compact(2)
    assert ei.value.compact_revision == 2
    with pytest.raises(CompactedError):
        store.compact(1)
    store.compact(3)


def _history(s: KVStore) -> None:
    put(s, b"a", b"1")  # 2
    put(s, b"b", b"1")  # 3
    put(s, b"a", b"2")  # 4
    delete(s, b"b")  # 5
    put(s, b"c", b"1")  # 6
    with s.write() as t:  # 7
        t.put(b"a", b"3")
        t.put(b"b", b"2")
        t.delete_range(b"c")
    put(s, b"d", b"1")  # 8
    delete(s, b"d")  # 9
    put(s, b"a", b"4")  # 10


@pytest.mark.parametrize("at", range(1, 11))
def test_compaction_keeps_answers_at_and_after(path: Path, at: int) -> None:
    s = KVStore(Backend.open(path))
    _history(s)
    before = snapshot_all(s)
    rows_before = s.backend.kv_count()
    s.compact(at)
    for r in range(at, 11):
        assert s.range(*ALL, rev=r) == before[r], r
        for key in (b"a", b"b", b"c", b"d"):
            want = [kv for kv in before[r].kvs if kv.key == key]
            assert s.range(key, rev=r).kvs == want
    assert s.backend.kv_count() <= rows_before
    # reopen: same answers
    s = reopen(s, path)
    assert s.compact_revision == at and s.current_revision == 10
    for r in range(at, 11):
        assert s.range(*ALL, rev=r) == before[r], r
    if at > 1:
        with pytest.raises(CompactedError):
            s.range(*ALL, rev=at - 1)
    # writes continue normally after reopen
    put(s, b"b", b"3")
    assert s.range(b"b").kvs == [KeyValue(b"b", 7, 11, 2, b"3")]
    s.close()


def test_compaction_removes_exactly_superseded_rows(store: KVStore) -> None:
    _history(store)
    store.compact(9)
    # kept at <= 9: a@7.0, b@7.1; the tombstones b@5, c@7.2, d@9 and old puts go
    assert [r[:2] for r in store.backend.iter_kv()] == [(7, 0), (7, 1), (10, 0)]
    assert len(store) == 2  # c and d left the index
    store.compact(10)
    assert [r[:2] for r in store.backend.iter_kv()] == [(7, 1), (10, 0)]


def test_compaction_of_everything_keeps_current_revision_on_reopen(path: Path) -> None:
    s = KVStore(Backend.open(path))
    put(s, b"a", b"1")
    delete(s, b"a")  # 3
    s.compact(3)
    assert s.backend.kv_count() == 0
    s = reopen(s, path)
    assert s.current_revision == 3 and s.compact_revision == 3
    assert put(s, b"a", b"2")[0].kv == KeyValue(b"a", 4, 4, 1, b"2")
    s.close()


def test_deferred_compaction_steps_and_restart_finishes_it(path: Path) -> None:
    s = KVStore(Backend.open(path))
    for i in range(30):
        put(s, b"k", b"%d" % i)  # revs 2..31
    before = snapshot_all(s)
    s.compact(25, wait=False)
    assert s.compaction_pending
    with pytest.raises(CompactedError):
        s.range(b"k", rev=24)  # logically compacted at once
    assert s.range(*ALL, rev=25) == before[25]
    assert s.compact_step(5) is False
    assert s.backend.kv_count() == 25
    s.commit()  # partial deletion durable, compaction unfinished
    s = reopen(s, path, commit=False)
    assert s.compact_revision == 25 and not s.compaction_pending
    assert s.backend.kv_count() == 7  # 25..31
    for r in range(25, 32):
        assert s.range(*ALL, rev=r) == before[r]
    s.close()


# ------------------------------------------------------------- durability


def test_reopen_same_answers_at_every_revision(path: Path) -> None:
    s = KVStore(Backend.open(path))
    _history(s)
    s.set_consistent_index(42)
    before = snapshot_all(s)
    s = reopen(s, path)
    assert s.consistent_index == 42 and s.current_revision == 10
    assert snapshot_all(s) == before
    s.close()


def test_crash_loses_uncommitted_batch(path: Path) -> None:
    s = KVStore(Backend.open(path))
    put(s, b"a", b"1")
    s.set_consistent_index(1)
    s.commit()
    put(s, b"a", b"2")
    put(s, b"b", b"1")
    s.set_consistent_index(3)
    s.commit()
    committed = snapshot_all(s)
    put(s, b"a", b"3")
    delete(s, b"b")
    s.compact(4)
    s.set_consistent_index(6)
    s = reopen(s, path, commit=False)  # crash
    assert s.consistent_index == 3
    assert s.current_revision == 4 and s.compact_revision == -1
    assert snapshot_all(s) == committed
    # replaying the lost entries gives the same revisions again
    put(s, b"a", b"3")
    assert s.current_revision == 5
    s.close()


def test_crash_of_a_real_process(path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from meshkit.server.backend import Backend
        from meshkit.server.mvcc import KVStore
        s = KVStore(Backend.open(Path({str(path)!r})))
        for i in range(1, 101):
            with s.write() as t:
                t.put(b"k%d" % (i % 7), b"v%d" % i)
            s.set_consistent_index(i)
            if i % 10 == 0:
                s.commit()
            if i == 57:
                os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    s = KVStore(Backend.open(path))
    assert s.consistent_index == 50
    assert s.current_revision == 51  # one revision per applied entry
    assert s.range(b"k1").kvs[0].value == b"v50"
    s.close()


# -------------------------------------------------------------------- hash


def test_hash_kv_equal_for_same_history(tmp_path: Path) -> None:
    a = KVStore(Backend.open(tmp_path / "a"))
    b = KVStore(Backend.open(tmp_path / "b"))
    _history(a)
    _history(b)
    assert a.hash_kv() == b.hash_kv() and a.hash_kv()[1] == -1
    assert a.hash_kv(5) == b.hash_kv(5) != a.hash_kv(6)
    # physical compaction done or pending: same hash
    a.compact(6)
    b.compact(6, wait=False)
    assert a.hash_kv() == b.hash_kv() and a.hash_kv()[1] == 6
    assert a.hash_kv(8) == b.hash_kv(8)
    with pytest.raises(CompactedError):
        a.hash_kv(6)  # etcd: rev <= compact is compacted for HashKV
    with pytest.raises(FutureRevError):
        a.hash_kv(11)
    put(b, b"x", b"y")
    assert a.hash_kv()[0] != b.hash_kv()[0]
    h = a.hash_kv()
    a.close()
    a = KVStore(Backend.open(tmp_path / "a"))
    assert a.hash_kv() == h
    a.close()
    b.close()


def test_hash_kv_known_value() -> None:
    """Pin the byte layout (etcd 3.4's HashByRev over revision keys + marshalled KVs)."""
    from meshkit.server.mvcc.hash import crc32c, marshal_kv
    from meshkit.server.mvcc.revision import rev_to_bytes

    assert crc32c(b"123456789") == 0xE3069283
    assert rev_to_bytes(2, 1) == b"\0" * 7 + b"\x02_" + b"\0" * 7 + b"\x01"
    assert rev_to_bytes(2, 1, True)[-1:] == b"t"
    assert marshal_kv(b"a", 2, 3, 1, b"v", 0) == b"\x0a\x01a\x10\x02\x18\x03\x20\x01\x2a\x01v"
    assert marshal_kv(b"a", 0, 0, 0, b"", 300) == b"\x0a\x01a\x30\xac\x02"


# ------------------------------------------------------------------ events


def test_events_from_backend(store: KVStore) -> None:
    _history(store)
    evs = store.events(7, 9)
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in evs] == [
        (EventType.PUT, b"a", 7),
        (EventType.PUT, b"b", 7),
        (EventType.DELETE, b"c", 7),
        (EventType.PUT, b"d", 8),
        (EventType.DELETE, b"d", 9),
    ]
    assert evs[1].kv == KeyValue(b"b", 7, 7, 1, b"2")
    assert len(store.events(10)) == 1
    store.compact(8)
    with pytest.raises(CompactedError):
        store.events(7)
