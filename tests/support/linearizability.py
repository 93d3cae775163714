"""A linearizability checker for a key-value store seen as one register per key.

The history is a list of :class:`Operation`: who called what on which key, when it
was invoked and when it returned (``time.monotonic()`` of the client, all clients in
one process), and what it returned. The model is a register holding ``bytes`` or
nothing (``None``, the key is absent):

* ``put(k, v)``: the register becomes ``v``; its output is ignored.
* ``get(k)``: returns the register (``None`` when absent); the register is unchanged.
* ``delete(k)``: the register becomes absent; returns how many keys it deleted (0/1).
* ``cas(k, expect, v)``: a txn "if value(k) == expect (``None``: the key is absent)
  then put(k, v)"; returns whether it succeeded.

An operation whose outcome is unknown (the client timed out, or lost the connection
after sending) has ``ret = math.inf`` and ``output = UNKNOWN``: it may have taken
effect at any moment after its invocation, or never (a point after everything else,
which amounts to the same). A read whose outcome is unknown says nothing and is
dropped. A write that provably never left the client is simply not in the history.

The search is Wing & Gong's with Lowe's memoisation, the algorithm Porcupine
implements: the calls and returns, sorted by time, form a doubly linked list; the
search walks it, linearizing a call when the model accepts it and the pair
(set of linearized ops, register state) was not seen before, lifting
the call and its return out of the list and starting again from the head; meeting
the return of an op not yet linearized, it undoes the last choice. The history is
checked one key at a time: linearizability is compositional per object, and the
model's objects are the keys (P-compositionality).

On failure (or when the search runs out of its budget) a second, independent
algorithm finds the smallest non-linearizable prefix: it walks the history forward
keeping every configuration (register state, which running ops are already
linearized) that explains what has returned so far, as Knossos's "linear" checker
does, and stops at the first return no configuration explains. The explanation
names that op, the states the register could be in just before it, the ops around
it and the longest partial linearization the search found.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "UNKNOWN",
    "CheckResult",
    "KeyResult",
    "Operation",
    "assert_linearizable",
    "check",
    "check_key",
]


class _Unknown:
    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()
"""The output of an operation whose outcome is unknown (its ``ret`` is ``math.inf``)."""

Kind = Literal["put", "get", "delete", "cas"]
_KINDS: dict[str, int] = {"put": 0, "get": 1, "delete": 2, "cas": 3}
_PUT, _GET, _DEL, _CAS = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation on one key, with its invocation and return times."""

    client: int
    kind: Kind
    key: bytes
    call: float
    ret: float  # math.inf: the outcome is unknown
    value: bytes | None = None  # put, cas: the value written
    expect: bytes | None = None  # cas: the value compared (None: "the key is absent")
    output: object = None  # get: bytes | None; delete: int; cas: bool; UNKNOWN
    info: str = ""  # free text for explanations (endpoint, revision, error)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown operation kind {self.kind!r}")
        if self.ret < self.call:
            raise ValueError(f"an operation returns after it is invoked: {self}")
        if (self.ret == math.inf) != (self.output is UNKNOWN):
            raise ValueError("an operation has an unknown outcome exactly when it never returned "
                             f"(ret=inf and output=UNKNOWN): {self}")
        if self.kind in ("put", "cas") and self.value is None:
            raise ValueError(f"{self.kind} needs a value")
        if self.output is not UNKNOWN:
            if self.kind == "get" and not (self.output is None or isinstance(self.output, bytes)):
                raise ValueError(f"a get returns bytes or None, not {self.output!r}")
            if self.kind == "cas" and not isinstance(self.output, bool):
                raise ValueError(f"a cas returns a bool, not {self.output!r}")
            if self.kind == "delete" and self.output not in (0, 1):
                raise ValueError(f"a delete of one key returns 0 or 1, not {self.output!r}")

    @property
    def unknown(self) -> bool:
        return self.output is UNKNOWN

    def describe(self, t0: float = 0.0) -> str:
        if self.kind == "put":
            what = f"put({self.value!r})"
        elif self.kind == "get":
            what = "get()"
        elif self.kind == "delete":
            what = "delete()"
        else:
            what = f"cas({self.expect!r} -> {self.value!r})"
        out = "?" if self.unknown else ("ok" if self.kind == "put" else repr(self.output))
        ret = "inf" if self.ret == math.inf else f"{self.ret - t0:.6f}"
        info = f" ({self.info})" if self.info else ""
        return f"client {self.client} {what} -> {out} [{self.call - t0:.6f}, {ret}]{info}"


@dataclass(slots=True)
class KeyResult:
    key: bytes
    ok: bool | None  # None: the search gave up (budget spent) without an answer
    ops: int  # operations checked (after dropping what cannot matter)
    explored: int  # (bitmask, state) pairs the search visited
    seconds: float
    explanation: str = ""


@dataclass(slots=True)
class CheckResult:
    ok: bool | None
    keys: dict[bytes, KeyResult] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.ok is True

    @property
    def explanation(self) -> str:
        bad = [r for r in self.keys.values() if r.ok is not True]
        return "\n\n".join(r.explanation for r in bad)

    def summary(self) -> str:
        total = sum(r.ops for r in self.keys.values())
        secs = max((r.seconds for r in self.keys.values()), default=0.0)
        verdict = {True: "linearizable", False: "NOT linearizable", None: "inconclusive"}[self.ok]
        return f"{verdict}: {total} ops on {len(self.keys)} keys (slowest key {secs:.3f}s)"


# ---------------------------------------------------------------------------- the model


def _step(op: Operation, state: bytes | None) -> tuple[bool, bytes | None]:
    """(does the model accept ``op`` in ``state``, the state after it)."""
    k = op.kind
    if k == "put":
        return True, op.value
    if k == "get":
        return state == op.output, state
    if k == "cas":
        hit = state == op.expect
        return (op.output is UNKNOWN or op.output == hit), (op.value if hit else state)
    return (op.output is UNKNOWN or op.output == (0 if state is None else 1)), None


# ---------------------------------------------------------------------------- the search


@dataclass(slots=True)
class _Outcome:
    ok: bool | None
    explored: int
    best: list[int]  # the longest partial linearization found (op indices in order)
    best_state: bytes | None


def _search(ops: Sequence[Operation], init: bytes | None, max_states: int) -> _Outcome:
    """Wing & Gong / Lowe's search with memoisation on one key's operations.

    The memo holds (set of linearized ops, register state). The set is kept as a
    128-bit Zobrist hash (the XOR of one random number per op; a collision among a
    few million sets has odds below 1e-25), which costs the same for 10 ops or 10,000.

    Two refinements for ops whose outcome is unknown (they never return, so no op
    has to follow them and the search succeeds without linearizing them):

    * At each node the calls of ops that returned are tried first, those of unknown
      ops after, and an unknown op is never linearized where it would not change the
      register (dropping it from any linearization keeps that valid).
    * Dominance: a node that linearized the same returned ops and reached the same
      state as a node already explored in full and failed, with a superset of its
      unknown ops, fails too (its remaining choices are a subset of that node's).
      Without this a failing history with k unknown writes costs up to 2^k.
    """
    n = len(ops)
    rnd = random.Random(n)
    zob = [rnd.getrandbits(128) for _ in range(n)]
    ubit = [0] * n  # for unknown ops: their bit in the small unknown-ops mask
    entries: list[tuple[float, int, int]] = []  # (time, 0 call / 1 return, op)
    n_unknown = 0
    for i, op in enumerate(ops):
        entries.append((op.call, 0, i))
        if op.ret != math.inf:
            entries.append((op.ret, 1, i))
        else:
            ubit[i] = 1 << n_unknown
            n_unknown += 1
    # At equal times calls come first: such ops count as concurrent (the permissive
    # reading, so a coarse clock never produces a false alarm).
    entries.sort()
    m = len(entries)
    end = m + 1
    # Slot 0 is the head sentinel, 1..m the entries, m+1 the end.
    nxt = [*range(1, m + 2), end]
    prv = [0, *range(0, m + 1)]
    e_op = [-1] * (m + 2)
    e_kind = [0] * (m + 2)  # 0: a return (or the end), 1: call of an op that returned, 2: of an unknown op
    match = [0] * (m + 2)  # a call's return slot (0: none, the outcome is unknown)
    ret_slot = [0] * n
    for slot, (_, which, i) in enumerate(entries, start=1):
        e_op[slot] = i
        if which == 1:
            ret_slot[i] = slot
        else:
            e_kind[slot] = 2 if ubit[i] else 1
    for slot in range(1, m + 1):
        if e_kind[slot]:
            match[slot] = ret_slot[e_op[slot]]

    kind = [_KINDS[o.kind] for o in ops]
    val = [o.value for o in ops]
    exp = [o.expect for o in ops]
    out = [o.output for o in ops]

    seen: set[tuple[int, bytes | None]] = set()
    failed: dict[tuple[int, bytes | None], list[int]] = {}
    stack: list[tuple[int, bytes | None, int]] = []  # (call slot, state before it, phase)
    h = 0  # hash of every linearized op
    fh = 0  # hash of the linearized ops that returned
    ub = 0  # mask of the linearized unknown ops
    state = init
    best: list[int] = []
    best_state = init
    explored = 0
    phase = 1  # 1: try calls of ops that returned, 2: then those of unknown ones
    slot = nxt[0]
    while True:
        ek = e_kind[slot]
        if ek == phase:
            i = e_op[slot]
            k = kind[i]
            if k == _PUT:
                ok, new = True, val[i]
            elif k == _GET:
                ok, new = state == out[i], state
            elif k == _CAS:
                hit = state == exp[i]
                new = val[i] if hit else state
                ok = out[i] is UNKNOWN or out[i] == hit
            else:  # delete
                new = None
                ok = out[i] is UNKNOWN or out[i] == (0 if state is None else 1)
            if ok and phase == 2 and new == state:
                ok = False  # an unknown op that changes nothing is of no use here
            if ok:
                nh = h ^ zob[i]
                if (nh, new) not in seen:
                    if phase == 2:
                        nfh, nub = fh, ub | ubit[i]
                    else:
                        nfh, nub = fh ^ zob[i], ub
                    doms = failed.get((nfh, new)) if n_unknown else None
                    if doms is None or all(d & ~nub for d in doms):
                        seen.add((nh, new))
                        explored += 1
                        if explored > max_states:
                            return _Outcome(None, explored, best, best_state)
                        stack.append((slot, state, phase))
                        h, fh, ub, state = nh, nfh, nub, new
                        # lift the call and its return out of the list
                        nxt[prv[slot]] = nxt[slot]
                        prv[nxt[slot]] = prv[slot]
                        r = match[slot]
                        if r:
                            nxt[prv[r]] = nxt[r]
                            prv[nxt[r]] = prv[r]
                        if len(stack) > len(best):
                            best = [e_op[s] for s, _, _ in stack]
                            best_state = state
                        phase = 1
                        slot = nxt[0]
                        continue
            slot = nxt[slot]
        elif ek:
            slot = nxt[slot]  # a call of the other phase
        elif slot == end and phase == 1:
            # no return left in the list: every op that returned is linearized
            return _Outcome(True, explored, [e_op[s] for s, _, _ in stack], state)
        elif phase == 1:
            phase = 2  # the first return of an op not linearized: now the unknown ops
            slot = nxt[0]
        else:
            # every candidate of this node was tried: undo the last choice
            if not stack:
                return _Outcome(False, explored, best, best_state)
            if n_unknown:
                failed.setdefault((fh, state), []).append(ub)
            top, state, phase = stack.pop()
            i = e_op[top]
            h ^= zob[i]
            if phase == 2:
                ub &= ~ubit[i]
            else:
                fh ^= zob[i]
            r = match[top]
            if r:
                nxt[prv[r]] = r
                prv[nxt[r]] = r
            nxt[prv[top]] = top
            prv[nxt[top]] = top
            slot = nxt[top]


# ---------------------------------------------------------------------------- forward


@dataclass(slots=True)
class _Forward:
    ok: bool | None
    explored: int
    culprit: int = -1  # the op whose return no configuration explains
    before: list[tuple[bytes | None, frozenset[int]]] = field(default_factory=list)


def _forward(ops: Sequence[Operation], init: bytes | None, max_states: int) -> _Forward:
    """The second algorithm: walk calls and returns in time order with the set of
    configurations (state, ops linearized but not returned yet, unknown ones
    included) that explain every return so far. At a return, each configuration is
    extended by linearizing running ops until the returning one is in; the result
    must be non-empty. The first return that empties it ends the smallest
    non-linearizable prefix."""
    events: list[tuple[float, int, int]] = []
    for i, o in enumerate(ops):
        events.append((o.call, 0, i))
        if o.ret != math.inf:
            events.append((o.ret, 1, i))
    events.sort()
    unknown = {i for i, o in enumerate(ops) if o.ret == math.inf}
    configs: set[tuple[bytes | None, frozenset[int]]] = {(init, frozenset())}
    running: set[int] = set()
    explored = 0
    for _, which, x in events:
        if which == 0:
            running.add(x)
            continue
        nxt: set[tuple[bytes | None, frozenset[int]]] = set()
        for state, lin in configs:
            if x in lin:
                nxt.add((state, lin - {x}))
                continue
            todo = [(state, lin)]
            seen = {(state, lin)}
            while todo:
                st, ln = todo.pop()
                for j in running:
                    if j in ln:
                        continue
                    ok, new = _step(ops[j], st)
                    if not ok or (j in unknown and new == st):
                        continue
                    explored += 1
                    if explored > max_states:
                        return _Forward(None, explored)
                    if j == x:
                        nxt.add((new, ln))
                    elif (new, ln | {j}) not in seen:
                        seen.add((new, ln | {j}))
                        todo.append((new, ln | {j}))
        running.discard(x)
        if not nxt:
            return _Forward(False, explored, x, sorted(configs, key=repr))
        if unknown:
            if len(nxt) > 1:
                nxt = _undominated(nxt, unknown)
            # unknown ops every configuration took are settled: out of the way
            done = frozenset.intersection(*(lin for _, lin in nxt)) & unknown
            if done:
                running -= done
                nxt = {(st, lin - done) for st, lin in nxt}
        configs = nxt
    return _Forward(True, explored)


def _undominated(configs: set[tuple[bytes | None, frozenset[int]]],
                 unknown: set[int]) -> set[tuple[bytes | None, frozenset[int]]]:
    """Drop a configuration when another has the same state, the same running ops
    linearized and a subset of its unknown ops (it can do everything this one can)."""
    groups: dict[tuple[bytes | None, frozenset[int]], list[frozenset[int]]] = defaultdict(list)
    for state, lin in configs:
        groups[(state, lin - unknown)].append(lin & unknown)
    out: set[tuple[bytes | None, frozenset[int]]] = set()
    for (state, fin), us in groups.items():
        us.sort(key=len)
        kept: list[frozenset[int]] = []
        for u in us:
            if not any(k <= u for k in kept):
                kept.append(u)
        out.update((state, fin | u) for u in kept)
    return out


# ---------------------------------------------------------------------------- per key


def _prepare(ops: Iterable[Operation]) -> list[Operation]:
    """Drop what cannot matter: reads whose outcome is unknown and, on a key that
    only sees puts and gets, unknown puts no read ever returned (such a put can be
    linearized after everything else, where it changes nothing)."""
    kept = [o for o in ops if not (o.kind == "get" and o.unknown)]
    if all(o.kind in ("put", "get") for o in kept):
        read = {o.output for o in kept if o.kind == "get"}
        kept = [o for o in kept if not (o.kind == "put" and o.unknown and o.value not in read)]
    kept.sort(key=lambda o: (o.call, o.ret))
    return kept


def check_key(ops: Sequence[Operation], init: bytes | None = None, *,
              max_states: int = 2_000_000, key: bytes | None = None) -> KeyResult:
    """Check the operations of one key (all must be on the same key)."""
    t_start = time.perf_counter()
    keys = {o.key for o in ops}
    if len(keys) > 1:
        raise ValueError(f"check_key takes the ops of one key, got {sorted(keys)[:5]}")
    k = key if key is not None else (keys.pop() if keys else b"")
    kept = _prepare(ops)
    res = _search(kept, init, max_states)
    if res.ok is True:
        return KeyResult(k, True, len(kept), res.explored, time.perf_counter() - t_start)
    fwd = _forward(kept, init, max_states)
    explored = res.explored + fwd.explored
    if fwd.ok is True and res.ok is None:
        # the search ran out of budget; the forward walk found the answer
        return KeyResult(k, True, len(kept), explored, time.perf_counter() - t_start)
    if fwd.ok is True:
        raise AssertionError(f"the two algorithms disagree on key {k!r} (a checker bug): "
                             f"the search found no linearization, the forward walk did")
    if fwd.ok is None:
        verdict = "NOT linearizable" if res.ok is False else "inconclusive"
        return KeyResult(k, res.ok, len(kept), explored, time.perf_counter() - t_start,
                         f"key {k!r}: {verdict} ({len(kept)} ops); both algorithms ran out of "
                         f"their budget of {max_states} states before locating the failure")
    return KeyResult(k, False, len(kept), explored, time.perf_counter() - t_start,
                     _explain(k, kept, fwd, res))


def _explain(key: bytes, ops: list[Operation], fwd: _Forward, res: _Outcome) -> str:
    t0 = min((o.call for o in ops), default=0.0)
    bad = ops[fwd.culprit]
    t = bad.ret
    prefix = [o for o in ops if o.call <= t]
    lines = [
        f"key {key!r}: NOT linearizable ({len(ops)} ops). The smallest non-linearizable prefix "
        f"({len(prefix)} ops) ends when this op returned (times in s from the first call):",
        f"  >> {bad.describe(t0)}",
        "No linearization explains it. Just before, the register could be in "
        f"{len(fwd.before)} configuration(s):",
    ]
    for state, lin in fwd.before[:8]:
        extra = f", with {len(lin)} running op(s) already linearized" if lin else ""
        lines.append(f"     {state!r}{extra}")
    lines.append("The ops that overlap it (||) and the last 8 that completed before its call:")
    done_before = sorted((o for o in prefix if o.ret < bad.call), key=lambda o: o.ret)[-8:]
    around = {id(o) for o in done_before} | {id(o) for o in prefix if o.ret >= bad.call}
    for o in prefix:
        if id(o) in around and o is not bad:
            mark = "  " if o.ret < bad.call else "||"
            lines.append(f"  {mark} {o.describe(t0)}")
    if res.best:
        best = [ops[i] for i in res.best]
        lines.append(f"The longest partial linearization the search found has {len(best)} ops, "
                     f"ending in state {res.best_state!r}; its last ones:")
        lines += [f"     {o.describe(t0)}" for o in best[-6:]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the history


def check(history: Iterable[Operation], init: dict[bytes, bytes | None] | None = None, *,
          max_states: int = 2_000_000) -> CheckResult:
    """Check a whole history, key by key. ``init``: the registers' values before the
    history (absent when not given)."""
    by_key: dict[bytes, list[Operation]] = defaultdict(list)
    for o in history:
        by_key[o.key].append(o)
    result = CheckResult(True)
    for k in sorted(by_key):
        r = check_key(by_key[k], (init or {}).get(k), max_states=max_states, key=k)
        result.keys[k] = r
        if r.ok is False:
            result.ok = False
        elif r.ok is None and result.ok is True:
            result.ok = None
    return result


def assert_linearizable(history: Iterable[Operation],
                        init: dict[bytes, bytes | None] | None = None, *,
                        max_states: int = 2_000_000) -> CheckResult:
    """Raise AssertionError with the explanation unless the history is linearizable
    (an inconclusive search fails too)."""
    ops = list(history)
    res = check(ops, init, max_states=max_states)
    if res.ok is not True:
        raise AssertionError(f"{res.summary()}\n{res.explanation}")
    return res
