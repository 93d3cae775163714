"""Property: every watcher sees exactly the store's history for its range.

Random puts, deletes (single key and prefix) and multi-op txns go through the
real Applier (whose ``on_events`` feeds the watchable store), while watchers
with different start revisions (past, "now", future), ranges (key, prefix,
range, from-key), prev_kv and filters are created at random moments on a few
streams with tiny buffers; streams are drained at random moments (some rarely,
so watchers become victims and catch up from the backend), sometimes with a
compaction in between. Each watcher's responses are then checked against an
independent model of the history: ordered, no duplicates, nothing missing,
one response per revision, prev_kv right; or, when compaction overtook it, a
whole-revision prefix followed by a cancel with the compact revision.

A second, seeded test runs the same kind of check through gRPC and the client.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.client import Client, Op, Watcher
from meshkit.server.apply import Applier
from meshkit.server.backend import Backend
from meshkit.server.embed import EmbeddedServer
from meshkit.server.mvcc import KVStore
from meshkit.server.mvcc.watchable import Response, WatchableStore, WatchStream, prefix_end

KEYS = [b"a", b"a/1", b"a/2", b"ab", b"b", b"b/x", b"c"]

# Expected event: (type, key, value, mod_rev, create_rev, version, prev value or None)
Ev = tuple[int, bytes, bytes, int, int, int, bytes | None]


@dataclass
class Model:
    """Key -> (value, create, version), and every revision's events."""

    kv: dict[bytes, tuple[bytes, int, int]] = field(default_factory=dict)
    rev: int = 1
    history: list[Ev] = field(default_factory=list)

    def apply(self, ops: list[tuple[str, bytes, bytes]]) -> None:
        rev = self.rev + 1
        evs: list[Ev] = []
        for op, key, arg in ops:
            if op == "put":
                old = self.kv.get(key)
                create, ver = (old[1], old[2] + 1) if old else (rev, 1)
                self.kv[key] = (arg, create, ver)
                evs.append((0, key, arg, rev, create, ver, old[0] if old else None))
            else:
                end = arg
                for k in sorted(self.kv):
                    if (k == key) if not end else (key <= k and (end == b"\0" or k < end)):
                        old = self.kv.pop(k)
                        evs.append((1, k, b"", rev, 0, 0, old[0]))
        if evs:
            self.rev = rev
            self.history.extend(evs)


def matches(k: bytes, key: bytes, end: bytes) -> bool:
    if not end:
        return k == key
    if end == b"\0":
        return k >= key
    return key <= k < end


@dataclass
class WSpec:
    key: bytes
    end: bytes
    start: int  # as asked; 0 = now
    prev_kv: bool
    no_put: bool
    no_delete: bool
    created_at: int = 0  # store revision at creation
    wid: int = -1
    stream: int = 0


def expected(spec: WSpec, history: list[Ev]) -> list[Ev]:
    start = spec.start or spec.created_at + 1
    out = []
    for e in history:
        if e[3] < start or not matches(e[1], spec.key, spec.end):
            continue
        if (e[0] == 0 and spec.no_put) or (e[0] == 1 and spec.no_delete):
            continue
        prev = e[6] if spec.prev_kv and not (e[0] == 0 and e[5] == 1) else None
        out.append((*e[:6], prev))
    return out


def check(spec: WSpec, resps: list[Response], history: list[Ev], compact: int,
          compactions: frozenset[int] = frozenset()) -> None:
    want = expected(spec, history)
    got_set = {(e[1], e[3]) for r in resps for e in
               ((0, we.event.kv.key, b"", we.event.kv.mod_revision) for we in r.events)}
    # Compaction at C drops a tombstone at exactly C from the backend (etcd's
    # keyIndex.compact does the same; checked: after a physical compaction the
    # real etcd no longer delivers it to a watch starting at C either), so a
    # watcher reading C from the backend after that never sees it.
    want = [e for e in want if not (e[0] == 1 and e[3] in compactions and (e[1], e[3]) not in got_set)]
    assert resps and resps[0].created and not resps[0].canceled, resps[:1]
    got: list[Ev] = []
    seen_revs: set[int] = set()
    canceled = None
    for r in resps[1:]:
        assert canceled is None, "a response after the compaction cancel"
        if r.canceled:
            canceled = r
            continue
        revs = [we.event.kv.mod_revision for we in r.events]
        assert revs == sorted(revs)
        assert not (set(revs) & seen_revs), f"revision split over responses: {revs}"
        seen_revs |= set(revs)
        if r.events:
            assert r.revision >= revs[-1]
        for we in r.events:
            kv = we.event.kv
            prev = we.prev.value if (spec.prev_kv and we.prev is not None) else None
            got.append((int(we.event.type), kv.key, kv.value, kv.mod_revision,
                        kv.create_revision, kv.version, prev))
    # etcd reads prev_kv at mod_revision - 1; once that is compacted it is left
    # empty (an event caught up from the backend after a compaction).
    top = max(compactions, default=0)
    want = [(*e[:6], None) if (e[6] is not None and e[3] - 1 < top and g[6] is None) else e
            for e, g in zip(want, got + [e for e in want[len(got):]], strict=True)]
    if canceled is None:
        assert got == want
        return
    # canceled by some compaction (there may have been later ones)
    assert 0 < canceled.compact_revision <= compact and canceled.revision == 0
    assert got == want[: len(got)]
    missing = want[len(got):]
    if missing:  # whole revisions only
        assert not got or missing[0][3] != got[-1][3]
    # etcd cancels when the revision the watcher needs next is below the compaction
    needed_at_least = got[-1][3] + 1 if got else (spec.start or spec.created_at + 1)
    assert needed_at_least < canceled.compact_revision


op_st = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(min_size=1, max_size=3)),
    st.tuples(st.just("del"), st.sampled_from(KEYS), st.sampled_from([b"", b"", b"b", b"\0"])),
)
watch_st = st.tuples(
    st.sampled_from(["key", "prefix", "range", "from", "all"]),
    st.sampled_from(KEYS),
    st.sampled_from(["past", "now", "future", "first"]),
    st.booleans(),
    st.sampled_from([(False, False), (False, False), (True, False), (False, True)]),
    st.integers(0, 2),
)
step_st = st.one_of(
    st.tuples(st.just("write"), st.lists(op_st, min_size=1, max_size=4)),
    st.tuples(st.just("watch"), watch_st),
    st.tuples(st.just("drain"), st.integers(0, 2)),
    st.tuples(st.just("sync"), st.integers(1, 3)),
    st.tuples(st.just("compact"), st.integers(0, 3)),
)


def _txn(ops: list[tuple[str, bytes, bytes]]) -> pb.TxnRequest:
    req = pb.TxnRequest()
    for op, key, arg in ops:
        if op == "put":
            req.success.add().request_put.CopyFrom(pb.PutRequest(key=key, value=arg))
        else:
            req.success.add().request_delete_range.CopyFrom(
                pb.DeleteRangeRequest(key=key, range_end=arg))
    return req


def _disjoint(ops: list[tuple[str, bytes, bytes]]) -> list[tuple[str, bytes, bytes]]:
    """etcd refuses a txn whose ops touch the same key twice: keep the first."""
    out: list[tuple[str, bytes, bytes]] = []
    for op in ops:
        if not any(matches(op[1], o[1], o[2] if o[0] == "del" else b"")
                   or matches(o[1], op[1], op[2] if op[0] == "del" else b"") for o in out):
            out.append(op)
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step_st, min_size=5, max_size=60))
def test_watchers_see_exactly_the_history(steps: list[tuple[str, object]]) -> None:
    asyncio.run(_run(steps))


async def _run(steps: list[tuple[str, object]]) -> None:
    tmp = Path(tempfile.mkdtemp())
    store = KVStore(Backend.open(tmp / "db"))
    try:
        ws = WatchableStore(store, stream_buffer=2, max_revs_per_sync=3)
        applier = Applier(store)
        applier.on_events = ws.notify
        model = Model()
        streams: list[WatchStream] = [ws.new_stream() for _ in range(3)]
        got: dict[int, list[Response]] = {0: [], 1: [], 2: []}
        specs: list[WSpec] = []
        compactions: set[int] = set()

        def drain(i: int) -> None:
            while (r := streams[i].pop_nowait()) is not None:
                got[i].append(r)

        for kind, arg in steps:
            if kind == "write":
                ops = _disjoint(arg)  # type: ignore[arg-type]
                if len(ops) == 1 and ops[0][0] == "put":
                    applier.put(pb.PutRequest(key=ops[0][1], value=ops[0][2]))
                elif len(ops) == 1:
                    applier.delete_range(pb.DeleteRangeRequest(key=ops[0][1], range_end=ops[0][2]))
                else:
                    applier.txn(_txn(ops))
                model.apply(ops)
                assert store.current_revision == model.rev
            elif kind == "watch":
                shape, key, when, prev_kv, (no_put, no_delete), si = cast(Any, arg)
                end = {"key": b"", "prefix": prefix_end(key), "range": key + b"/zz",
                       "from": b"\0", "all": b"\0"}[shape]
                if shape == "all":
                    key = b""
                cur = store.current_revision
                start = {"now": 0, "future": cur + 2, "first": 1,
                         "past": max(1, cur - 3)}[when]
                if 0 < start < store.compact_revision:
                    start = store.compact_revision
                spec = WSpec(key, end, start, prev_kv, no_put, no_delete, cur, stream=si)
                w = streams[si].watch(key, end, start, prev_kv=prev_kv, no_put=no_put,
                                      no_delete=no_delete)
                assert w is not None
                spec.wid = w.id
                specs.append(spec)
            elif kind == "drain":
                drain(arg)  # type: ignore[arg-type]
            elif kind == "sync":
                for _ in range(arg):  # type: ignore[call-overload]
                    ws.sync_step()
            elif kind == "compact":
                target = store.current_revision - int(arg)  # type: ignore[call-overload]
                if target > max(store.compact_revision, 1):
                    store.compact(target)
                    compactions.add(target)
        # quiesce: drain and catch up until nothing moves
        for _ in range(10_000):
            for i in range(3):
                drain(i)
            if not ws.sync_step() and not any(s._buf for s in streams):
                break
        assert not ws.unsynced or all(w.state != w.UNSYNCED for w in ws.unsynced)
        for spec in specs:
            resps = [r for r in got[spec.stream] if r.watch_id == spec.wid]
            check(spec, resps, model.history, store.compact_revision, frozenset(compactions))
        await ws.close()
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


# ---- the same through gRPC and the client ------------------------------------------------


async def test_random_history_through_grpc(tmp_path: Path) -> None:
    for seed in range(3):
        rnd = random.Random(seed)
        async with EmbeddedServer.for_test(tmp_path / str(seed), 0) as srv, \
                Client([srv.endpoint], timeout=10) as c:
            model = Model()
            watchers: list[tuple[Watcher, WSpec]] = []

            for _ in range(60):
                if rnd.random() < 0.1 or not watchers:
                    watchers.append(await _open_watch(c, rnd, model.rev))
                ops = _disjoint([("put", rnd.choice(KEYS), b"%d" % rnd.randrange(100))
                                 if rnd.random() < 0.7 else ("del", rnd.choice(KEYS), rnd.choice([b"", b"\0"]))
                                 for _ in range(rnd.randint(1, 3))])
                await c.txn().then(*[
                    Op.put(k, a) if o == "put" else Op.delete(k, from_key=a == b"\0")
                    for o, k, a in ops]).commit()
                model.apply(ops)
            for w, spec in watchers:
                want = expected(spec, model.history)
                got: list[Ev] = []
                async with asyncio.timeout(10):
                    while len(got) < len(want):
                        resp = await w.__anext__()
                        revs = [e.kv.mod_revision for e in resp.events]
                        assert len(set(revs)) <= 1 or revs == sorted(revs)
                        for e in resp.events:
                            prev = e.prev_kv.value if (spec.prev_kv and e.prev_kv) else None
                            got.append((int(e.type), e.kv.key, e.kv.value, e.kv.mod_revision,
                                        e.kv.create_revision, e.kv.version, prev))
                assert got == want
                await w.cancel()



async def _open_watch(c: Client, rnd: random.Random, cur: int) -> tuple[Watcher, WSpec]:
    key = rnd.choice(KEYS)
    shape = rnd.choice(["key", "prefix", "from"])
    prev = rnd.random() < 0.5
    start = rnd.choice([0, 1, max(1, cur - 2)])
    w = c.watch(key, start_revision=start, prev_kv=prev, prefix=shape == "prefix",
                from_key=shape == "from")
    await w.wait_created(5)
    end = {"key": b"", "prefix": prefix_end(key), "from": b"\0"}[shape]
    return w, WSpec(key, end, start, prev, False, False, cur)
