"""Txn semantics, side by side: one scenario run through meshkit.client against the
real etcd and against `meshkit server`; the normalised transcripts must be equal
(revisions included: both start from an empty store at revision 1)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from meshkit.client import Client, Cmp, CompareTarget, EtcdError, Op, ResponseHeader
from tests.compat.conftest import Pair
from tests.server.conftest import wait_ready

Step = tuple[str, Any]


def norm(x: Any) -> Any:
    """Results as plain data; ids and raft terms dropped (they differ by design)."""
    if isinstance(x, ResponseHeader):
        return {"revision": x.revision}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {"type": type(x).__name__,
                **{f.name: norm(getattr(x, f.name)) for f in dataclasses.fields(x)}}
    if isinstance(x, list | tuple):
        return [norm(i) for i in x]
    return x


class Recorder:
    def __init__(self, c: Client) -> None:
        self.c = c
        self.steps: list[Step] = []

    async def __call__(self, name: str, call: Awaitable[Any]) -> Any:
        try:
            result = await call
        except EtcdError as e:
            self.steps.append((name, ("error", type(e).__name__, e.grpc_code.name, str(e))))
            return None
        self.steps.append((name, norm(result)))
        return result


TARGETS: dict[str, Callable[..., CompareTarget]] = {
    "version": Cmp.version, "create": Cmp.create, "mod": Cmp.mod, "value": Cmp.value,
    "lease": Cmp.lease,
}


async def scenario(c: Client) -> list[Step]:
    rec = Recorder(c)
    t = c.txn
    # a: version 2, create 2, mod 3, value b"2", lease 0.  r/1, r/2: a range of two keys.
    await rec("put a", c.put(b"a", b"1"))
    await rec("put a again", c.put(b"a", b"2", prev_kv=True))
    await rec("put r/1", c.put(b"r/1", b"x"))
    await rec("put r/2", c.put(b"r/2", b"y"))
    actual = {"version": 2, "create": 2, "mod": 3, "value": b"2", "lease": 0}
    below = {"version": 1, "create": 1, "mod": 2, "value": b"1", "lease": -1}
    above = {"version": 3, "create": 3, "mod": 4, "value": b"3", "lease": 1}

    # Every target with every result, against a value below, equal to and above the key's.
    for target, make in TARGETS.items():
        for where, arg in (("below", below), ("equal", actual), ("above", above)):
            for op in ("==", "!=", "<", ">"):
                cmp = make(b"a").compare(op, arg[target])  # type: ignore[arg-type]
                await rec(f"{target} {op} {where}",
                          t().if_(cmp).then(Op.get(b"a")).else_(Op.get(b"r/1")).commit())
        # A missing key compares as a zero key-value, except that a value compare fails.
        for op in ("==", "!=", "<", ">"):
            zero: Any = b"" if target == "value" else 0
            await rec(f"{target} {op} missing",
                      t().if_(make(b"missing").compare(op, zero)).commit())
            await rec(f"{target} {op} missing, above",
                      t().if_(make(b"missing").compare(op, above[target])).commit())

    # Compares over a range: every key in it must satisfy; an empty range is "missing".
    await rec("range version == 1", t().if_(Cmp.version(b"r/", prefix=True) == 1).commit())
    await rec("range value > w", t().if_(Cmp.value(b"r/", prefix=True) > b"w").commit())
    await rec("range value == x", t().if_(Cmp.value(b"r/", prefix=True) == b"x").commit())
    await rec("range mod < 5", t().if_(Cmp.mod(b"r/1", b"r/3") < 5).commit())
    await rec("range mod < 6", t().if_(Cmp.mod(b"r/1", b"r/3") < 6).commit())
    await rec("empty range version == 0", t().if_(Cmp.version(b"none/", prefix=True) == 0).commit())
    await rec("empty range value == ''", t().if_(Cmp.value(b"none/", prefix=True) == b"").commit())
    await rec("empty range value != x", t().if_(Cmp.value(b"none/", prefix=True) != b"x").commit())
    await rec("from-key create > 0", t().if_(Cmp.create(b"a", b"\0") > 0).commit())
    await rec("several compares, one false",
              t().if_(Cmp.version(b"a") == 2, Cmp.value(b"r/1") == b"nope")
              .then(Op.put(b"never", b"1")).else_(Op.get(b"a")).commit())

    # Nested txns: every compare (nested ones too) sees the state BEFORE the outer ops.
    await rec("nested sees state before outer ops", t().if_(Cmp.value(b"a") == b"2").then(
        Op.put(b"a", b"3"),
        Op.txn(if_=[Cmp.value(b"a") == b"2"], then=[Op.put(b"saw", b"old")],
               else_=[Op.put(b"saw", b"new")]),
        Op.get(b"saw"),
    ).commit())
    await rec("get saw", c.get(b"saw"))
    await rec("nested in failure branch", t().if_(Cmp.version(b"a") == 99).else_(
        Op.txn(if_=[Cmp.version(b"saw") == 0], then=[Op.put(b"n", b"then")],
               else_=[Op.put(b"n", b"else"), Op.get(b"n")]),
        Op.get(b"a"),
    ).commit())
    await rec("deeply nested", t().then(Op.txn(then=[Op.txn(then=[
        Op.put(b"deep", b"1"), Op.get(b"deep")])])).commit())

    # Reads inside a write txn see the txn's earlier writes (and their header revision).
    await rec("reads see own writes", t().then(
        Op.get(b"a"),
        Op.put(b"w1", b"1"),
        Op.get(b"w1"),
        Op.delete(b"r/1", prev_kv=True),
        Op.get(b"r/", prefix=True),
        Op.put(b"w2", b"2", prev_kv=True),
        Op.get(b"w", prefix=True, count_only=True),
        Op.get(b"a", revision=3),
    ).commit())
    await rec("get after", c.get(b"\0", from_key=True))

    # Read-only txns: the header is the current revision, nothing changes.
    await rec("read-only txn", t().if_(Cmp.version(b"a") > 0).then(
        Op.get(b"a"), Op.get(b"r/", prefix=True, revision=4)).commit())
    await rec("empty txn", t().commit())
    await rec("empty txn, false compare", t().if_(Cmp.version(b"a") == 0).commit())

    # Deleting a missing key inside a txn: deleted 0, and no new revision if nothing else changed.
    await rec("delete missing in txn", t().then(Op.delete(b"missing", prev_kv=True)).commit())
    await rec("delete missing range in txn", t().then(Op.delete(b"zz/", prefix=True)).commit())
    await rec("delete missing + put", t().then(Op.delete(b"missing"), Op.put(b"p", b"1")).commit())
    await rec("delete present + missing", t().then(Op.delete(b"p"), Op.delete(b"missing")).commit())
    await rec("final", c.get(b"\0", from_key=True))
    return rec.steps


async def test_txn_semantics_match_etcd(pair: Pair) -> None:
    transcripts = []
    for sp in (pair.etcd, pair.meshkit):
        await wait_ready(sp.endpoint)
        async with Client([sp.endpoint], timeout=5.0) as c:
            transcripts.append(await scenario(c))
    etcd, mesh = transcripts
    assert [n for n, _ in etcd] == [n for n, _ in mesh]
    diffs = [(name, e, m) for (name, e), (_, m) in zip(etcd, mesh, strict=True) if e != m]
    assert not diffs, "meshkit differs from etcd:\n" + "\n".join(
        f"  {name}:\n    etcd:    {e}\n    meshkit: {m}" for name, e, m in diffs[:5])
    # Sanity: the scenario exercised both outcomes.
    succeeded = [s for _, s in etcd if isinstance(s, dict) and s.get("type") == "TxnResult"]
    assert any(s["succeeded"] for s in succeeded) and not all(s["succeeded"] for s in succeeded)
