"""A follower that fell behind the leader's compacted log installs the leader's
database (MsgSnap), serves the same keys and revisions afterwards, keeps its
watchers (or cancels them as compacted), and survives a crash mid-install."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from meshkit.server.etcdserver import server as server_mod
from meshkit.server.mvcc.watchable import Response, WatchStream
from tests.server.cluster.conftest import Cluster, Member

# Small enough that 200 writes leave the partitioned follower behind the log.
SNAP = {"snapshot_count": 40, "snapshot_catchup_entries": 10}


async def _wait(pred: Any, limit: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + limit
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.02)


async def _partitioned_writes(c: Cluster, behind: Member, n: int, *, compact: bool = False) -> int:
    """Isolate ``behind``, write n keys through the others, heal; returns the
    leader's revision after the writes."""
    c.net.isolate(behind.id)
    rest = [m for m in c.members if m is not behind]
    await c.wait_leader(among=rest)
    async with c.client(*rest) as cl:
        for i in range(n):
            r = await cl.put(b"k/%04d" % i, b"v%d" % i)
        rev = r.header.revision
        if compact:
            await cl.compact(rev - 5)
        await cl.put(b"k/last", b"x")
    c.net.heal()
    return rev + 1


def _hashes(c: Cluster, rev: int) -> set[tuple[int, int]]:
    return {m.server.etcd.store.hash_kv(rev) for m in c.running if m.server is not None}


async def _drain(st: WatchStream) -> list[Response]:
    out: list[Response] = []
    while (r := st.pop_nowait()) is not None:
        out.append(r)
    return out


@pytest.fixture
async def snap_cluster(tmp_path: Path) -> Any:
    c = Cluster.build(tmp_path, 3, **SNAP)
    try:
        await c.start_all()
        yield c
    finally:
        await c.stop_all()


@pytest.mark.slow
async def test_partitioned_follower_installs_snapshot_and_matches(snap_cluster: Cluster) -> None:
    c = snap_cluster
    lead = await c.wait_leader()
    behind = next(m for m in c.members if m is not lead)
    async with c.client(lead) as cl:
        await cl.put(b"k/first", b"0")
    await _wait(lambda: behind.server.etcd.store.current_revision >= 2, what="first put")
    # a watcher on the follower, synced before it falls behind
    st = behind.server.etcd.watchable.new_stream()
    st.watch(b"k/", b"k0")
    before = behind.server.etcd.applied_index
    last_rev = await _partitioned_writes(c, behind, 200)
    etcd = behind.server.etcd
    await _wait(lambda: etcd.store.current_revision >= last_rev, what="catch-up by snapshot")
    # it was a snapshot, not the log: the follower skipped the entries
    assert etcd._snapshot_index > before
    assert any(p.name.endswith(".snap") for p in (etcd.member_dir / "snap").iterdir())
    assert not list((etcd.member_dir / "snap").glob("*.snap.db"))
    await _wait(lambda: len(_hashes(c, last_rev)) == 1, what="equal HashKV")
    async with c.client(behind) as cl:
        r = await cl.get(b"k/", range_end=b"k0")
        assert len(r.kvs) == 202
        got = {kv.key: (kv.value, kv.mod_revision) for kv in r.kvs}
    async with c.client(lead) as cl:
        r = await cl.get(b"k/", range_end=b"k0")
        assert got == {kv.key: (kv.value, kv.mod_revision) for kv in r.kvs}
    # the watcher got every event once, in order, from its start to the end
    revs: list[int] = []
    await _wait(lambda: bool(st.watchers) and st.watchers[0].min_rev > last_rev, what="watcher caught up")
    for resp in await _drain(st):
        revs.extend(e.rev for e in resp.events)
    assert revs == list(range(3, last_rev + 1))
    # and it keeps working on the new store: writes after the install, through it
    async with c.client(behind) as cl:
        p = await cl.put(b"k/after", b"y")
    await _wait(lambda: c.by_id(behind.id).server.etcd.store.current_revision >= p.header.revision)
    await _wait(lambda: st.pop_nowait() is not None, what="event after install")


@pytest.mark.slow
async def test_watcher_behind_compaction_is_canceled_after_install(snap_cluster: Cluster) -> None:
    c = snap_cluster
    lead = await c.wait_leader()
    behind = next(m for m in c.members if m is not lead)
    st = behind.server.etcd.watchable.new_stream()
    st.watch(b"k/", b"k0")
    last_rev = await _partitioned_writes(c, behind, 120, compact=True)
    etcd = behind.server.etcd
    await _wait(lambda: etcd.store.current_revision >= last_rev, what="catch-up by snapshot")
    compact_rev = etcd.store.compact_revision
    assert compact_rev > 2

    resps: list[Response] = []

    async def collect() -> bool:
        resps.extend(await _drain(st))
        return any(r.canceled for r in resps)

    deadline = time.monotonic() + 5
    while not await collect():
        assert time.monotonic() < deadline, resps
        await asyncio.sleep(0.05)
    cancel = next(r for r in resps if r.canceled)
    assert cancel.compact_revision == compact_rev
    assert not any(r.events for r in resps)


class _Crash(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_db_written", "after_wal_record", "after_mark", "after_move"])
async def test_crash_during_install_restarts_cleanly(snap_cluster: Cluster, point: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The member dies at each step of an install (the raft loop ends there, the
    process state is dropped); started again on its data dir it comes up and
    converges to the same data."""
    c = snap_cluster
    lead = await c.wait_leader()
    behind = next(m for m in c.members if m is not lead)
    etcd = behind.server.etcd
    crashed = asyncio.Event()

    real_write, real_move = server_mod._write_durably, server_mod._move_snapshot_db
    real_wal_snap, real_mark = etcd.wal.save_snapshot, etcd.snapshotter.save

    def boom() -> None:
        crashed.set()
        raise _Crash(point)

    def write(path: Path, data: bytes) -> None:
        real_write(path, data)
        if point == "after_db_written":
            boom()

    def wal_snap(mark: Any) -> None:
        real_wal_snap(mark)
        if point == "after_wal_record":
            boom()

    def save_mark(meta: Any) -> Path:
        p = real_mark(meta)
        if point == "after_mark":
            boom()
        return p

    def move(incoming: Path, db: Path) -> None:
        real_move(incoming, db)
        if point == "after_move":
            boom()

    monkeypatch.setattr(server_mod, "_write_durably", write)
    monkeypatch.setattr(server_mod, "_move_snapshot_db", move)
    monkeypatch.setattr(etcd.wal, "save_snapshot", wal_snap)
    monkeypatch.setattr(etcd.snapshotter, "save", save_mark)
    last_rev = await _partitioned_writes(c, behind, 150)
    await asyncio.wait_for(crashed.wait(), 10)
    # A crash: nothing more is written by this member (no clean close).
    etcd.backend.close(commit=False)
    etcd.wal.close()
    await behind.server.close(grace=0)
    behind.server = None
    monkeypatch.undo()
    await c.start(behind)
    etcd = behind.server.etcd
    await _wait(lambda: etcd.store.current_revision >= last_rev, what="catch-up after restart")
    assert not list((etcd.member_dir / "snap").glob("*.snap.db"))
    await _wait(lambda: len(_hashes(c, last_rev)) == 1, what="equal HashKV")
    async with c.client(behind) as cl:
        r = await cl.get(b"k/", range_end=b"k0", count_only=True)
        assert r.count == 151
