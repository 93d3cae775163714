"""The linearizability checker (tests/support/linearizability.py): known linearizable
and non-linearizable histories, agreement with a brute-force enumeration of every
order on small random histories, acceptance of any history produced by a sequential
execution, rejection of reads no order explains, and its speed."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.support import linearizability as lin
from tests.support.linearizability import UNKNOWN, Operation, assert_linearizable, check

K = b"k"


def put(v: bytes, call: float, ret: float | None, client: int = 0, key: bytes = K) -> Operation:
    if ret is None:
        return Operation(client, "put", key, call, math.inf, value=v, output=UNKNOWN)
    return Operation(client, "put", key, call, ret, value=v)


def get(out: bytes | None, call: float, ret: float, client: int = 1, key: bytes = K) -> Operation:
    return Operation(client, "get", key, call, ret, output=out)


def cas(expect: bytes | None, v: bytes, ok: bool | None, call: float, ret: float | None,
        client: int = 2, key: bytes = K) -> Operation:
    if ret is None:
        return Operation(client, "cas", key, call, math.inf, value=v, expect=expect, output=UNKNOWN)
    return Operation(client, "cas", key, call, ret, value=v, expect=expect, output=ok)


def delete(n: int | None, call: float, ret: float | None, client: int = 3, key: bytes = K) -> Operation:
    if ret is None:
        return Operation(client, "delete", key, call, math.inf, output=UNKNOWN)
    return Operation(client, "delete", key, call, ret, output=n)


def ok(ops: Sequence[Operation], init: dict[bytes, bytes | None] | None = None) -> bool | None:
    return check(ops, init).ok


# ------------------------------------------------------------------ known histories


def test_empty_and_sequential_histories() -> None:
    assert ok([]) is True
    assert ok([get(None, 0, 1)]) is True
    assert ok([put(b"a", 0, 1), get(b"a", 2, 3), put(b"b", 4, 5), get(b"b", 6, 7)]) is True
    assert ok([get(b"x", 0, 1)], init={K: b"x"}) is True


def test_stale_read_after_a_completed_write_is_rejected() -> None:
    h = [put(b"a", 0, 1), put(b"b", 2, 3), get(b"a", 4, 5)]
    res = check(h)
    assert res.ok is False
    text = res.explanation
    assert "key b'k'" in text and "get() -> b'a'" in text
    assert "b'b'" in text  # the state the register had to be in


def test_lost_write_is_rejected() -> None:
    assert ok([put(b"a", 0, 1), get(None, 2, 3)]) is False
    assert ok([put(b"a", 0, 1), get(b"a", 2, 3), get(None, 4, 5)]) is False


def test_read_of_a_value_never_written_is_rejected() -> None:
    assert ok([put(b"a", 0, 1), get(b"zzz", 0.5, 3)]) is False
    assert ok([get(b"zzz", 0, 1)]) is False


def test_concurrent_write_and_read_in_either_order() -> None:
    # the read overlaps the write: it may see the old or the new value
    assert ok([put(b"a", 0, 10), get(b"a", 1, 2)]) is True
    assert ok([put(b"a", 0, 10), get(None, 1, 2)]) is True
    assert ok([get(None, 0, 10), put(b"a", 1, 2)]) is True
    assert ok([get(b"a", 0, 10), put(b"a", 1, 2)]) is True
    # two concurrent writes, read after both: either value
    for v in (b"a", b"b"):
        assert ok([put(b"a", 0, 5), put(b"b", 1, 6), get(v, 7, 8)]) is True
    # but after one read saw the new value, a later read cannot see the old one
    assert ok([put(b"a", 0, 10), get(b"a", 1, 2), get(None, 3, 4)]) is False
    # the old value, then the new one: fine
    assert ok([put(b"a", 0, 10), get(None, 1, 2), get(b"a", 3, 4)]) is True
    # two overlapping reads that disagree are fine when they overlap each other
    assert ok([put(b"a", 0, 10), get(b"a", 1, 4), get(None, 2, 5)]) is True


def test_equal_timestamps_count_as_concurrent() -> None:
    assert ok([put(b"a", 0, 1), get(None, 1, 2)]) is True
    assert ok([put(b"a", 0, 1), get(None, 1.0001, 2)]) is False


def test_unknown_outcome_may_explain_a_read() -> None:
    # a write that timed out may have taken effect any time after its call
    assert ok([put(b"a", 0, None), get(b"a", 5, 6)]) is True
    assert ok([put(b"a", 0, None), get(None, 5, 6)]) is True  # or not (yet)
    assert ok([put(b"a", 0, None), get(None, 5, 6), get(b"a", 7, 8)]) is True
    # ... but not before it was invoked
    assert ok([get(b"a", 1, 2), put(b"a", 3, None)]) is False
    # and once seen it stays: the older value cannot come back
    h = [put(b"x", 0, 1), put(b"a", 2, None), get(b"x", 3, 4), get(b"a", 5, 6), get(b"x", 7, 8)]
    assert ok(h) is False
    # it takes effect at most once
    h = [put(b"a", 0, None), get(b"a", 1, 2), put(b"b", 3, 4), get(b"a", 5, 6)]
    assert ok(h) is False
    # unknown reads say nothing
    g = Operation(1, "get", K, 0, math.inf, output=UNKNOWN)
    assert ok([put(b"a", 0, 1), g]) is True


def test_unknown_write_unobserved_does_not_hide_a_stale_read() -> None:
    h = [put(b"a", 0, 1), put(b"b", 2, 3), put(b"c", 2.5, None), get(b"a", 4, 5)]
    assert ok(h) is False


def test_cas_and_delete() -> None:
    assert ok([put(b"a", 0, 1), cas(b"a", b"b", True, 2, 3), get(b"b", 4, 5)]) is True
    assert ok([put(b"a", 0, 1), cas(b"a", b"b", False, 2, 3)]) is False
    assert ok([put(b"a", 0, 1), cas(b"x", b"b", False, 2, 3), get(b"a", 4, 5)]) is True
    assert ok([put(b"a", 0, 1), cas(b"x", b"b", True, 2, 3)]) is False
    assert ok([cas(None, b"b", True, 0, 1), get(b"b", 2, 3)]) is True  # create if absent
    assert ok([put(b"a", 0, 1), cas(None, b"b", True, 2, 3)]) is False
    assert ok([put(b"a", 0, 1), delete(1, 2, 3), get(None, 4, 5), delete(0, 6, 7)]) is True
    assert ok([put(b"a", 0, 1), delete(0, 2, 3)]) is False
    assert ok([delete(1, 0, 1)]) is False
    # an unknown cas takes effect only where its comparison holds
    assert ok([put(b"a", 0, 1), cas(b"a", b"b", None, 2, None), get(b"b", 3, 4)]) is True
    assert ok([put(b"a", 0, 1), cas(b"x", b"b", None, 2, None), get(b"b", 3, 4)]) is False
    # an unknown delete explains an absent key, once
    assert ok([put(b"a", 0, 1), delete(None, 2, None), get(None, 3, 4)]) is True
    assert ok([put(b"a", 0, 1), delete(None, 2, None), get(None, 3, 4), get(b"a", 5, 6)]) is False
    # a failed cas that an unknown write explains
    h = [put(b"a", 0, 1), put(b"u", 2, None), cas(b"a", b"b", False, 3, 4), get(b"a", 5, 6)]
    assert ok(h) is False  # u would have to come back to a: impossible
    h = [put(b"a", 0, 1), put(b"u", 2, None), cas(b"a", b"b", False, 3, 4), get(b"u", 5, 6)]
    assert ok(h) is True


def test_keys_are_checked_apart_and_the_bad_one_is_named() -> None:
    h = [put(b"a", 0, 1, key=b"x"), get(b"a", 2, 3, key=b"x"),
         put(b"a", 0, 1, key=b"y"), get(None, 2, 3, key=b"y")]
    res = check(h)
    assert res.ok is False
    assert res.keys[b"x"].ok is True and res.keys[b"y"].ok is False
    assert "key b'y'" in res.explanation and "key b'x'" not in res.explanation
    with pytest.raises(AssertionError, match="key b'y'"):
        assert_linearizable(h)


def test_the_explanation_points_at_the_first_unexplained_return() -> None:
    h = [put(b"v%d" % i, 2 * i, 2 * i + 1) for i in range(50)]
    h.append(get(b"v10", 200, 201))  # stale: v49 was the last write
    h += [get(b"v49", 210 + i, 211 + i) for i in range(20)]
    res = check(h)
    assert res.ok is False
    text = res.explanation
    assert ">> client 1 get() -> b'v10' [200.000000, 201.000000]" in text
    assert "smallest non-linearizable prefix (51 ops)" in text
    assert "b'v49'" in text


def test_a_search_out_of_budget_is_inconclusive_and_fails_the_assertion() -> None:
    rnd = random.Random(7)
    h = _sequential_history(rnd, n_ops=200, clients=6, keys=[K], unknown_rate=0.0)
    res = lin.check_key(h, max_states=5)
    assert res.ok is None
    assert "ran out of" in res.explanation
    with pytest.raises(AssertionError, match="inconclusive"):
        assert_linearizable(h, max_states=5)
    assert check(h).ok is True


def test_malformed_operations_are_refused() -> None:
    with pytest.raises(ValueError):
        Operation(0, "put", K, 2, 1, value=b"a")  # returns before it is called
    with pytest.raises(ValueError):
        Operation(0, "put", K, 0, math.inf, value=b"a")  # never returned but an output
    with pytest.raises(ValueError):
        Operation(0, "get", K, 0, 1, output=UNKNOWN)  # returned without an output
    with pytest.raises(ValueError):
        Operation(0, "cas", K, 0, 1, expect=b"a", output=True)  # no value
    with pytest.raises(ValueError):
        Operation(0, "frob", K, 0, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        lin.check_key([put(b"a", 0, 1, key=b"x"), put(b"a", 0, 1, key=b"y")])


# ------------------------------------------------------------------ brute force


def brute_force(ops: Sequence[Operation], init: bytes | None = None) -> bool:
    """Every order of the ops that returned and any of the unknown ones (those left
    out took effect after everything), respecting real time: a before b when a
    returned before b was called."""
    finite = [o for o in ops if not o.unknown]
    unknown = [o for o in ops if o.unknown and o.kind != "get"]

    def extend(left: list[Operation], state: bytes | None) -> bool:
        if not any(not o.unknown for o in left):
            return True
        for o in left:
            # o can go next only if no op still left returned before o was called
            if any(p.ret < o.call for p in left if p is not o):
                continue
            good, new = lin._step(o, state)
            if good and extend([p for p in left if p is not o], new):
                return True
        return False

    return extend(finite + unknown, init)


_VALUES = [b"a", b"b", b"c"]


@st.composite
def small_histories(draw: st.DrawFn) -> list[Operation]:
    n = draw(st.integers(1, 7))
    ops = []
    for i in range(n):
        kind: lin.Kind = draw(st.sampled_from(["put", "put", "get", "get", "cas", "delete"]))
        call = draw(st.integers(0, 12))
        unknown = kind != "get" and draw(st.integers(0, 4)) == 0
        ret = math.inf if unknown else call + draw(st.integers(0, 6))
        value = draw(st.sampled_from(_VALUES)) if kind in ("put", "cas") else None
        expect = draw(st.sampled_from([None, *_VALUES])) if kind == "cas" else None
        if unknown:
            out: object = UNKNOWN
        elif kind == "get":
            out = draw(st.sampled_from([None, *_VALUES]))
        elif kind == "cas":
            out = draw(st.booleans())
        elif kind == "delete":
            out = draw(st.integers(0, 1))
        else:
            out = None
        ops.append(Operation(i, kind, K, float(call), float(ret), value=value, expect=expect, output=out))
    return ops


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_histories(), st.sampled_from([None, b"a"]))
def test_agrees_with_brute_force_on_small_histories(ops: list[Operation], init: bytes | None) -> None:
    expected = brute_force(ops, init)
    res = lin.check_key(ops, init)
    assert res.ok is expected, (expected, ops)
    # the two algorithms inside agree on their own as well
    kept = lin._prepare(ops)
    assert lin._search(kept, init, 10**6).ok is expected
    assert lin._forward(kept, init, 10**6).ok is expected
    # and on the unprepared history (dropping ops is an optimisation, not a rule)
    raw = sorted((o for o in ops if not (o.kind == "get" and o.unknown)), key=lambda o: o.call)
    assert lin._search(raw, init, 10**6).ok is expected


# ------------------------------------------------------------------ sequential executions


def _sequential_history(rnd: random.Random, *, n_ops: int, clients: int, keys: Sequence[bytes],
                        unknown_rate: float, cas_rate: float = 0.1, delete_rate: float = 0.03,
                        ) -> list[Operation]:
    """Run ops one at a time on a model (each at a linearization point inside its
    interval, intervals of different clients overlapping at random) and record
    what each returned: linearizable by construction."""
    free = [rnd.uniform(0, 1) for _ in range(clients)]
    planned = []
    for seq in range(n_ops):
        c = min(range(clients), key=free.__getitem__)
        call = free[c]
        ret = call + rnd.uniform(0.1, 5.0)
        point = rnd.uniform(call, ret)
        free[c] = ret + rnd.uniform(0, 0.3)
        r = rnd.random()
        kind: lin.Kind = ("cas" if r < cas_rate else "delete" if r < cas_rate + delete_rate
                          else "put" if r < 0.5 + cas_rate + delete_rate else "get")
        planned.append((point, seq, c, kind, rnd.choice(keys), call, ret))
    planned.sort()
    state: dict[bytes, bytes | None] = {}
    seen_by: dict[tuple[int, bytes], bytes | None] = {}
    ops = []
    for _, seq, c, kind, k, call, ret in planned:
        cur = state.get(k)
        v = b"v%d" % seq if kind in ("put", "cas") else None
        e = None
        if kind == "put":
            state[k] = v
            out: object = None
        elif kind == "get":
            out = cur
            seen_by[(c, k)] = cur
        elif kind == "delete":
            out = 0 if cur is None else 1
            state[k] = None
        else:
            e = seen_by.get((c, k)) if rnd.random() < 0.7 else cur
            out = cur == e
            if out:
                state[k] = v
        if rnd.random() < unknown_rate:
            if kind == "get":
                continue  # a read that failed is not recorded
            if kind == "put" or out or kind == "delete" or rnd.random() < 0.5:
                ops.append(Operation(c, kind, k, call, math.inf, value=v, expect=e, output=UNKNOWN))
                continue
            # an unknown cas that failed, or one that never reached the store:
            # its own interval, anywhere, with no effect
            continue
        ops.append(Operation(c, kind, k, call, ret, value=v, expect=e, output=out))
    return ops


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 120), st.integers(1, 6), st.integers(1, 3),
       st.sampled_from([0.0, 0.05, 0.2]))
def test_sequential_executions_are_accepted(seed: int, n_ops: int, clients: int, n_keys: int,
                                            unknown_rate: float) -> None:
    rnd = random.Random(seed)
    keys = [b"k%d" % i for i in range(n_keys)]
    h = _sequential_history(rnd, n_ops=n_ops, clients=clients, keys=keys, unknown_rate=unknown_rate)
    res = check(h)
    assert res.ok is True, res.explanation


def _unexplainable_reads(h: list[Operation], i: int) -> list[bytes]:
    """Values read ``h[i]`` (a get that returned) cannot have returned, whatever the
    order: never written on its key, written by an op called after it returned, or
    overwritten for sure before it was called (a put that returned before another
    completed put on the key, itself completed before the read was called)."""
    g = h[i]
    writes = {o.value: o for o in h if o.key == g.key and o.kind in ("put", "cas")}
    out = [b"never-written"]
    out += [v for v, w in writes.items() if v is not None and w.call > g.ret]
    for v, w in writes.items():
        if w.kind != "put" or w.unknown or v is None:
            continue
        if any(p.kind == "put" and not p.unknown and p.key == g.key and w.ret < p.call and p.ret < g.call
               for p in h):
            out.append(v)
    return out


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), st.integers(2, 100), st.integers(1, 6), st.sampled_from([0.0, 0.1]),
       st.data())
def test_a_read_no_order_explains_is_rejected(seed: int, n_ops: int, clients: int,
                                              unknown_rate: float, data: st.DataObject) -> None:
    rnd = random.Random(seed)
    h = _sequential_history(rnd, n_ops=n_ops, clients=clients, keys=[b"k0", b"k1"],
                            unknown_rate=unknown_rate)
    reads = [i for i, o in enumerate(h) if o.kind == "get"]
    assume(reads)
    i = data.draw(st.sampled_from(reads))
    bad = data.draw(st.sampled_from(_unexplainable_reads(h, i)))
    assume(bad != h[i].output)
    h[i] = replace(h[i], output=bad)
    res = check(h)
    assert res.ok is False
    assert f"key {h[i].key!r}" in res.explanation


# ------------------------------------------------------------------ speed


def test_a_few_thousand_ops_check_well_under_a_second_per_key() -> None:
    rnd = random.Random(1)
    keys = [b"k%d" % i for i in range(5)]
    h = _sequential_history(rnd, n_ops=4000, clients=8, keys=keys, unknown_rate=0.01)
    t = time.perf_counter()
    res = check(h)
    elapsed = time.perf_counter() - t
    assert res.ok is True, res.explanation
    assert max(r.seconds for r in res.keys.values()) < 1.0, res.summary()
    assert elapsed < 5.0
    # a failure late in the history is found and explained quickly too
    last_get = max(i for i, o in enumerate(h) if o.kind == "get" and o.key == keys[0])
    h[last_get] = replace(h[last_get], output=b"never-written")
    t = time.perf_counter()
    res = check(h)
    assert res.ok is False
    assert time.perf_counter() - t < 10.0, res.summary()
