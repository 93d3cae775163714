"""WatchableStore without gRPC: a real KVStore on a temp dir, the applier's hook
played by hand (write txn -> notify), the catch-up task driven step by step."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshkit.server.backend import Backend
from meshkit.server.mvcc import EventType, KVStore
from meshkit.server.mvcc.watchable import (
    Response,
    WatchableStore,
    Watcher,
    WatcherGroup,
    WatchStream,
    prefix_end,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KVStore]:
    s = KVStore(Backend.open(tmp_path / "db"))
    yield s
    s.close()


def put(ws: WatchableStore, *kvs: tuple[bytes, bytes]) -> int:
    """One txn putting all kvs; its events go to the watchers as the applier does."""
    with ws.store.write() as txn:
        for k, v in kvs:
            txn.put(k, v)
    ws.notify(txn.rev, txn.events)
    return txn.rev


def delete(ws: WatchableStore, key: bytes, end: bytes = b"") -> int:
    with ws.store.write() as txn:
        txn.delete_range(key, end)
    if txn.events:
        ws.notify(txn.rev, txn.events)
    return txn.rev


def drain(stream: WatchStream) -> list[Response]:
    out = []
    while (r := stream.pop_nowait()) is not None:
        out.append(r)
    return out


def events(resps: list[Response], wid: int | None = None) -> list[tuple[str, bytes, bytes, int]]:
    return [
        (we.event.type.name, we.event.kv.key, we.event.kv.value, we.event.kv.mod_revision)
        for r in resps if wid is None or r.watch_id == wid for we in r.events
    ]


def catch_up(ws: WatchableStore) -> None:
    for _ in range(1000):
        if not ws.sync_step():
            return
    raise AssertionError("catch-up does not converge")


# ---- the index ---------------------------------------------------------------------


def test_prefix_end() -> None:
    assert prefix_end(b"a") == b"b"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert prefix_end(b"ab") == b"ac"




@settings(max_examples=60, deadline=None)
@given(
    specs=st.lists(
        st.tuples(
            st.sampled_from(["key", "prefix", "range", "from"]),
            st.binary(min_size=1, max_size=3),
            st.binary(min_size=1, max_size=3),
        ),
        max_size=20,
    ),
    probes=st.lists(st.binary(min_size=1, max_size=4), max_size=20),
    remove=st.lists(st.integers(0, 19), max_size=5),
)
def test_group_matches_like_brute_force(
    specs: list[tuple[str, bytes, bytes]], probes: list[bytes], remove: list[int]
) -> None:
    g = WatcherGroup()
    stream = object.__new__(WatchStream)
    ws: list[Watcher] = []
    for i, (kind, a, b) in enumerate(specs):
        end: bytes | None
        if kind == "key":
            end = None
        elif kind == "prefix":
            end = prefix_end(a)
            if end == b"\0":
                end = b""
        elif kind == "from":
            end = b""
        else:
            a, end = min(a, b), max(a, b)
            if a == end:
                end = None
        w = Watcher(stream, i, a, end, 1, prev_kv=False, progress_notify=False, fragment=False,
                    no_put=False, no_delete=False)
        ws.append(w)
        g.add(w)
    for i in remove:
        if i < len(ws):
            g.remove(ws[i])
    live = [w for i, w in enumerate(ws) if i not in set(remove)]
    assert len(g) == len(live)
    for k in probes + [w.key for w in ws]:
        got = g.match(k)
        assert len(got) == len(set(got))
        assert set(got) == {w for w in live if w.matches(k)}


# ---- ids and create/cancel answers ------------------------------------------------------


async def test_ids_duplicates_and_bad_ranges(store: KVStore) -> None:
    ws = WatchableStore(store)
    s = ws.new_stream()
    assert s.watch(b"a").id == 0  # type: ignore[union-attr]
    assert s.watch(b"b", watch_id=2).id == 2  # type: ignore[union-attr]
    assert s.watch(b"c").id == 1  # type: ignore[union-attr]
    assert s.watch(b"d").id == 3  # type: ignore[union-attr]  # 2 is taken: skipped
    assert s.watch(b"e", watch_id=2) is None
    assert s.watch(b"z", b"a") is None
    assert s.watch(b"a", b"a") is None
    w = s.watch(b"g", watch_id=-1)  # etcd: only 0 means "pick one"; -1 is a real id
    assert w is not None and w.id == -1
    rs = drain(s)
    assert [(r.watch_id, r.created, r.canceled, r.cancel_reason) for r in rs] == [
        (0, True, False, ""), (2, True, False, ""), (1, True, False, ""), (3, True, False, ""),
        (-1, True, True, "mvcc: duplicate watch ID provided on the WatchStream"),
        (-1, True, True, "mvcc: watcher range is empty"),
        (-1, True, True, "mvcc: watcher range is empty"),
        (-1, True, False, ""),
    ]
    assert all(r.revision == store.current_revision for r in rs)
    assert s.cancel(1) and not s.cancel(99)
    (r,) = drain(s)
    assert (r.watch_id, r.canceled, r.created) == (1, True, False)
    assert s.watch(b"x").id == 4  # type: ignore[union-attr]  # ids are not reused
    s.request_progress()
    rs = drain(s)
    assert (rs[-1].watch_id, rs[-1].revision, rs[-1].events) == (-1, store.current_revision, [])


async def test_empty_key_is_nul_and_nul_end_is_from_key(store: KVStore) -> None:
    ws = WatchableStore(store)
    s = ws.new_stream()
    w_all = s.watch(b"", b"\0")
    w_nul = s.watch(b"")
    assert w_all is not None and w_nul is not None
    assert (w_all.key, w_all.end, w_nul.key, w_nul.end) == (b"\0", b"", b"\0", None)
    drain(s)
    put(ws, (b"\0", b"x"), (b"zz", b"y"))
    rs = drain(s)
    assert {r.watch_id: [we.event.kv.key for we in r.events] for r in rs} == {
        w_all.id: [b"\0", b"zz"], w_nul.id: [b"\0"]}


# ---- synced delivery -----------------------------------------------------------------


async def test_one_response_per_revision_filters_and_prev(store: KVStore) -> None:
    ws = WatchableStore(store)
    s = ws.new_stream()
    wk = s.watch(b"k", prev_kv=True)
    wp = s.watch(b"p/", prefix_end(b"p/"))
    wnp = s.watch(b"p/", prefix_end(b"p/"), no_put=True)
    wnd = s.watch(b"k", no_delete=True)
    assert wk and wp and wnp and wnd
    drain(s)
    r1 = put(ws, (b"k", b"1"), (b"p/a", b"2"), (b"p/b", b"3"), (b"other", b"4"))
    rs = drain(s)
    by_id = {r.watch_id: r for r in rs}
    assert set(by_id) == {wk.id, wp.id, wnd.id}
    assert [we.event.kv.key for we in by_id[wp.id].events] == [b"p/a", b"p/b"]
    assert all(r.revision == r1 for r in rs)
    put(ws, (b"k", b"2"))
    r3 = delete(ws, b"p/", prefix_end(b"p/"))
    delete(ws, b"k")
    rs = drain(s)
    by = {(r.watch_id, r.revision): r for r in rs}
    assert [we.prev.value for we in by[(wk.id, r1 + 1)].events] == [b"1"]  # type: ignore[union-attr]
    assert [we.event.kv.key for we in by[(wnp.id, r3)].events] == [b"p/a", b"p/b"]
    assert (wnd.id, r3 + 1) not in by  # its only event was filtered: nothing sent
    assert by[(wk.id, r3 + 1)].events[0].event.type == EventType.DELETE


async def test_from_now_and_future_start(store: KVStore) -> None:
    ws = WatchableStore(store)
    put(ws, (b"a", b"0"))
    s = ws.new_stream()
    w_now = s.watch(b"a")
    w_future = s.watch(b"a", start_revision=store.current_revision + 2)
    assert w_now and w_future
    assert w_now.state == Watcher.SYNCED and w_future.state == Watcher.SYNCED
    drain(s)
    put(ws, (b"a", b"1"))
    put(ws, (b"a", b"2"))
    rs = drain(s)
    assert events(rs, w_now.id) == [("PUT", b"a", b"1", 3), ("PUT", b"a", b"2", 4)]
    assert events(rs, w_future.id) == [("PUT", b"a", b"2", 4)]


# ---- history and catch-up ---------------------------------------------------------------


async def test_history_with_prev_kv_across_windows(store: KVStore) -> None:
    ws = WatchableStore(store, max_revs_per_sync=3)
    for i in range(10):
        put(ws, (b"k", b"%d" % i))
    delete(ws, b"k")
    put(ws, (b"k", b"new"))
    s = ws.new_stream()
    w = s.watch(b"k", start_revision=2, prev_kv=True)
    assert w is not None and w.state == Watcher.UNSYNCED
    catch_up(ws)
    assert w.state == Watcher.SYNCED
    rs = drain(s)[1:]
    assert len(rs) == 4  # windows of 3 revisions
    assert all(r.revision == store.current_revision for r in rs)  # etcd: header = current
    evs = [we for r in rs for we in r.events]
    assert [we.event.kv.mod_revision for we in evs] == list(range(2, 14))
    prevs = [we.prev.value if we.prev else None for we in evs]
    assert prevs == [None, b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9", None]
    put(ws, (b"k", b"after"))
    (r,) = drain(s)
    assert r.events[0].prev.value == b"new"  # type: ignore[union-attr]


async def test_compacted_start_is_canceled_with_compact_revision(store: KVStore) -> None:
    ws = WatchableStore(store)
    for i in range(5):
        put(ws, (b"k", b"%d" % i))
    store.compact(4)
    s = ws.new_stream()
    w = s.watch(b"k", start_revision=2)
    ok = s.watch(b"k", start_revision=4)
    assert w and ok
    catch_up(ws)
    rs = drain(s)
    assert [(r.watch_id, r.created) for r in rs[:2]] == [(w.id, True), (ok.id, True)]
    (c,) = [r for r in rs[2:] if r.watch_id == w.id]
    assert (c.canceled, c.compact_revision, c.revision, c.cancel_reason, c.events) == (
        True, 4, 0, "", [])
    assert events(rs[2:], ok.id) == [("PUT", b"k", b"2", 4), ("PUT", b"k", b"3", 5), ("PUT", b"k", b"4", 6)]
    assert w.state == Watcher.GONE and w not in ws.unsynced


async def test_full_stream_makes_victims_caught_up_in_order(store: KVStore) -> None:
    ws = WatchableStore(store, stream_buffer=4)
    slow = ws.new_stream()
    fast = ws.new_stream()
    ws_slow = slow.watch(b"k")
    ws_fast = fast.watch(b"k")
    assert ws_slow and ws_fast
    drain(slow)
    drain(fast)
    got_fast: list[Response] = []
    for i in range(50):
        put(ws, (b"k", b"%d" % i))
        got_fast.extend(drain(fast))
    assert len(got_fast) == 50
    assert ws_slow.state == Watcher.UNSYNCED and ws.victims == 1
    assert not ws.sync_step()  # its stream is still full: nothing to do, nothing read
    got: list[Response] = []
    while True:
        got.extend(drain(slow))
        if not ws.sync_step() and not slow._buf:
            break
    assert ws_slow.state == Watcher.SYNCED
    assert [e[3] for e in events(got)] == list(range(2, 52))
    put(ws, (b"k", b"last"))
    assert events(drain(slow)) == [("PUT", b"k", b"last", 52)]


async def test_slow_watcher_behind_compaction_is_canceled(store: KVStore) -> None:
    ws = WatchableStore(store, stream_buffer=2)
    s = ws.new_stream()
    w = s.watch(b"k")
    assert w
    for i in range(10):
        put(ws, (b"k", b"%d" % i))
    assert w.state == Watcher.UNSYNCED and w.min_rev == 4
    store.compact(8)
    drain(s)
    catch_up(ws)
    rs = drain(s)
    assert [(r.canceled, r.compact_revision) for r in rs] == [(True, 8)]


async def test_close_removes_everything(store: KVStore) -> None:
    ws = WatchableStore(store, stream_buffer=1)
    s = ws.new_stream()
    a = s.watch(b"a")
    b = s.watch(b"b", start_revision=1)
    assert a and b
    put(ws, (b"a", b"1"))
    put(ws, (b"a", b"2"))
    assert ws.unsynced
    s.close()
    assert not ws.synced and not ws.unsynced and not s.watchers
    assert await s.get() is None
    put(ws, (b"a", b"3"))


async def test_progress_tick(store: KVStore) -> None:
    ws = WatchableStore(store)
    s = ws.new_stream()
    w = s.watch(b"k", progress_notify=True)
    plain = s.watch(b"j")
    assert w and plain
    drain(s)
    ws.progress_tick()
    (r,) = drain(s)
    assert (r.watch_id, r.revision, r.events) == (w.id, store.current_revision, [])
    put(ws, (b"k", b"1"))
    drain(s)
    ws.progress_tick()  # it got events in this interval: no notification
    assert drain(s) == []
    ws.progress_tick()
    assert [r.watch_id for r in drain(s)] == [w.id]


async def test_background_task_and_get(store: KVStore) -> None:
    async with WatchableStore(store, sync_interval=0.01) as ws:
        for i in range(20):
            put(ws, (b"k", b"%d" % i))
        s = ws.new_stream()
        w = s.watch(b"k", start_revision=1)
        assert w
        got: list[Response] = []
        async with asyncio.timeout(5):
            while len(events(got)) < 20:
                r = await s.get()
                assert r is not None
                got.append(r)
        assert [e[3] for e in events(got)] == list(range(2, 22))
    assert s.closed and await s.get() is None


async def test_apply_path_does_not_scan_other_watchers(store: KVStore) -> None:
    """10k single-key and prefix watchers on other keys cost an event nothing."""
    ws = WatchableStore(store)
    s = ws.new_stream()
    s.capacity = 1 << 30
    for i in range(10_000):
        s.watch(b"key/%d" % i)
        s.watch(b"pre/%d/" % i, prefix_end(b"pre/%d/" % i))
    target = s.watch(b"hot")
    assert target
    drain(s)
    t = time.perf_counter()
    for i in range(2000):
        put(ws, (b"hot", b"%d" % i))
    per_event = (time.perf_counter() - t) / 2000
    assert len(drain(s)) == 2000
    assert per_event < 0.002, per_event  # a scan of 20k watchers would take ~10 ms
