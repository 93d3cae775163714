"""KVStore against a dict-of-history model (Hypothesis stateful)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from meshkit._internal.errors import CompactedError, FutureRevError
from meshkit.server.backend import Backend
from meshkit.server.mvcc import KeyValue, KVStore

KEYS = [b"a", b"ab", b"b", b"ba", b"c", b"d"]
ENDS = [b"", b"\0", b"a", b"b", b"bb", b"c", b"e"]
keys = st.sampled_from(KEYS)
ends = st.sampled_from(ENDS)
values = st.binary(max_size=4)
leases = st.sampled_from([0, 0, 7])

State = dict[bytes, KeyValue]


def in_range(k: bytes, key: bytes, end: bytes) -> bool:
    if not end:
        return k == key
    if end == b"\0":
        return k >= key
    return key <= k < end


def model_put(state: State, key: bytes, value: bytes, lease: int, rev: int) -> None:
    prev = state.get(key)
    if prev is None:
        state[key] = KeyValue(key, rev, rev, 1, value, lease)
    else:
        state[key] = KeyValue(key, prev.create_revision, rev, prev.version + 1, value, lease)


def model_delete(state: State, key: bytes, end: bytes) -> list[KeyValue]:
    gone = sorted(k for k in state if in_range(k, key, end))
    return [state.pop(k) for k in gone]


op = st.one_of(
    st.tuples(st.just("put"), keys, values, leases),
    st.tuples(st.just("del"), keys, ends, st.just(0)),
)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="mvcc-model-"))
        self.path = self.dir / "db.sqlite"
        self.store = KVStore(Backend.open(self.path))
        # history[rev] = state after rev; rev 1 is the empty store
        self.history: dict[int, State] = {1: {}}
        self.compact = -1
        # committed state (what a crash goes back to)
        self.committed = (1, -1, 0)
        self.applied = 0  # fake consistent index: one per write txn

    @property
    def rev(self) -> int:
        return max(self.history)

    def teardown(self) -> None:
        if not self.store.backend.closed:
            self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _apply(self, ops: list[tuple[str, bytes, bytes | bytes, int]], check_inside: bool) -> None:
        state = dict(self.history[self.rev])
        new_rev = self.rev + 1
        changed = False
        with self.store.write() as t:
            assert t.rev == new_rev
            for kind, k, arg, lease in ops:
                if kind == "put":
                    prev = t.put(k, arg, lease)
                    assert prev == state.get(k)
                    model_put(state, k, arg, lease, new_rev)
                    changed = True
                else:
                    got = t.delete_range(k, arg)
                    want = model_delete(state, k, arg)
                    assert got == want
                    changed = changed or bool(want)
                if check_inside:
                    r = t.range(b"\0", b"\0")
                    assert r.kvs == [state[k] for k in sorted(state)]
                    assert r.rev == (new_rev if changed else new_rev - 1)
        if changed:
            self.history[new_rev] = state
            assert [e.kv.mod_revision for e in t.events] == [new_rev] * len(t.events)
        else:
            assert t.events == []
        self.applied += 1
        self.store.set_consistent_index(self.applied)

    @rule(k=keys, v=values, lease=leases)
    def put(self, k: bytes, v: bytes, lease: int) -> None:
        self._apply([("put", k, v, lease)], False)

    @rule(k=keys, end=ends)
    def delete(self, k: bytes, end: bytes) -> None:
        self._apply([("del", k, end, 0)], False)

    @rule(ops=st.lists(op, min_size=0, max_size=5), check=st.booleans())
    def txn(self, ops: list, check: bool) -> None:
        self._apply(ops, check)

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        rev = data.draw(st.integers(min_value=self.compact - 1, max_value=self.rev + 1))
        if rev <= self.compact:
            try:
                self.store.compact(rev)
            except CompactedError as e:
                assert e.compact_revision == self.compact
            else:
                raise AssertionError("compact at or below the compact revision succeeded")
        elif rev > self.rev:
            try:
                self.store.compact(rev)
            except FutureRevError:
                pass
            else:
                raise AssertionError("compact past the current revision succeeded")
        else:
            self.store.compact(rev, wait=data.draw(st.booleans()))
            self.compact = rev

    @rule()
    def compact_step(self) -> None:
        self.store.compact_step(2)

    @rule()
    def commit(self) -> None:
        self.store.commit()
        self.committed = (self.rev, self.compact, self.applied)

    @rule(crash=st.booleans())
    def reopen(self, crash: bool) -> None:
        self.store.close(commit=not crash)
        if crash:
            rev, compact, applied = self.committed
            self.history = {r: s for r, s in self.history.items() if r <= rev}
            self.compact = compact
            self.applied = applied
        self.committed = (self.rev, self.compact, self.applied)
        self.store = KVStore(Backend.open(self.path))
        assert self.store.consistent_index == self.applied
        assert not self.store.compaction_pending

    @rule(data=st.data(), k=keys, end=ends, limit=st.integers(min_value=0, max_value=3))
    def check_range(self, data: st.DataObject, k: bytes, end: bytes, limit: int) -> None:
        rev = data.draw(st.integers(min_value=-1, max_value=self.rev + 1))
        try:
            got = self.store.range(k, end, rev=rev, limit=limit)
        except FutureRevError:
            assert rev > self.rev
            return
        except CompactedError as e:
            assert 0 < rev < self.compact and e.compact_revision == self.compact
            return
        at = self.rev if rev <= 0 else rev
        assert at <= self.rev and at >= self.compact
        state = self.history[at]
        want = [state[x] for x in sorted(state) if in_range(x, k, end)]
        assert got.count == len(want)
        assert got.rev == self.rev
        assert got.kvs == (want[:limit] if limit else want)

    @invariant()
    def revisions(self) -> None:
        assert self.store.current_revision == self.rev
        assert self.store.compact_revision == self.compact
        # every readable revision answers like the model
        for rev, state in self.history.items():
            if rev < self.compact:
                continue
            got = self.store.range(b"\0", b"\0", rev=rev)
            assert got.kvs == [state[k] for k in sorted(state)], rev
            assert got.count == len(state)


StoreMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStoreModel = StoreMachine.TestCase
