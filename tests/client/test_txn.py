"""Transactions: every compare target and result, ranges in compares, nested txns."""

from __future__ import annotations

import pytest

from meshkit.client import (
    Client,
    Cmp,
    Compare,
    DeleteResult,
    GetResult,
    Op,
    PutResult,
    Txn,
    TxnResult,
)


async def _succeeds(client: Client, *compares: Compare) -> bool:
    r = await client.txn().if_(*compares).commit()
    return r.succeeded


async def test_builder_typed_results(client: Client) -> None:
    await client.put(b"k", b"v")
    c = client
    t = await (
        c.txn()
        .if_(c.cmp.value(b"k") == b"v", c.cmp.version(b"k") > 0, c.cmp.mod(b"k") < 1000,
             c.cmp.create(b"k") != 0, c.cmp.lease(b"k") == 0)
        .then(c.op.put(b"k", b"v2", prev_kv=True), c.op.get(b"k"), c.op.delete(b"x"))
        .else_(c.op.get(b"k"))
        .commit()
    )
    assert isinstance(t, TxnResult) and t.succeeded
    put, get, dele = t.responses
    assert isinstance(put, PutResult) and put.prev_kv is not None and put.prev_kv.value == b"v"
    assert isinstance(get, GetResult) and get.kvs[0].value == b"v2"
    assert isinstance(dele, DeleteResult) and dele.deleted == 0
    assert t.header.revision == get.kvs[0].mod_revision


async def test_else_branch(client: Client) -> None:
    await client.put(b"k", b"v")
    t = await client.txn().if_(Cmp.value(b"k") == b"other").then(Op.put(b"k", b"no")).else_(
        Op.get(b"k")).commit()
    assert not t.succeeded
    assert isinstance(t.responses[0], GetResult) and t.responses[0].kvs[0].value == b"v"


async def test_empty_txn(client: Client) -> None:
    t = await client.txn().commit()
    assert t.succeeded and t.responses == []


@pytest.mark.parametrize("method", ["operators", "methods"])
async def test_every_target_and_result(client: Client, method: str) -> None:
    lease = await client.grant(60)
    p1 = await client.put(b"k", b"m")
    p2 = await client.put(b"k", b"m", lease=lease.id)  # version 2, create p1, mod p2
    create, mod = p1.header.revision, p2.header.revision

    def check(target: object, op: str, arg: object) -> Compare:
        if method == "operators":
            return {"==": lambda t, a: t == a, "!=": lambda t, a: t != a,
                    "<": lambda t, a: t < a, ">": lambda t, a: t > a}[op](target, arg)
        return getattr(target, {"==": "eq", "!=": "ne", "<": "lt", ">": "gt"}[op])(arg)

    cases: list[tuple[object, object, object, object]] = [
        # target, equal arg, lower arg, higher arg
        (Cmp.value(b"k"), b"m", b"a", b"z"),
        (Cmp.version(b"k"), 2, 1, 3),
        (Cmp.create(b"k"), create, create - 1, create + 1),
        (Cmp.mod(b"k"), mod, mod - 1, mod + 1),
        (Cmp.lease(b"k"), lease.id, lease.id - 1, lease.id + 1),
    ]
    for target, eq, lo, hi in cases:
        assert await _succeeds(client, check(target, "==", eq)), target
        assert not await _succeeds(client, check(target, "==", lo)), target
        assert await _succeeds(client, check(target, "!=", lo)), target
        assert not await _succeeds(client, check(target, "!=", eq)), target
        assert await _succeeds(client, check(target, "<", hi)), target
        assert not await _succeeds(client, check(target, "<", eq)), target
        assert await _succeeds(client, check(target, ">", lo)), target
        assert not await _succeeds(client, check(target, ">", eq)), target
    await client.revoke(lease.id)


async def test_missing_key_compares_as_zero(client: Client) -> None:
    assert await _succeeds(client, Cmp.version(b"nope") == 0)
    assert await _succeeds(client, Cmp.create(b"nope") == 0)
    # etcd: a value compare on a missing key is false whatever the operator
    assert not await _succeeds(client, Cmp.value(b"nope") == b"")
    assert not await _succeeds(client, Cmp.value(b"nope") != b"x")


async def test_compare_with_range(client: Client) -> None:
    await client.put(b"r/a", b"1")
    await client.put(b"r/b", b"1")
    await client.put(b"r/c", b"2")
    assert await _succeeds(client, Cmp.version(b"r/", prefix=True) == 1)
    assert await _succeeds(client, Cmp.value(b"r/a", b"r/c") == b"1")
    assert not await _succeeds(client, Cmp.value(b"r/", prefix=True) == b"1")
    assert await _succeeds(client, Cmp.value(b"r/", prefix=True) < b"3")


async def test_nested_txn(client: Client) -> None:
    await client.put(b"outer", b"1")
    inner = Txn().if_(Cmp.value(b"inner") == b"x").then(Op.get(b"outer")).else_(
        Op.put(b"inner", b"x"), Op.get(b"inner"))
    t = await client.txn().if_(Cmp.value(b"outer") == b"1").then(
        Op.txn(inner), Op.txn(if_=[Cmp.version(b"outer") == 1], then=[Op.put(b"outer", b"2")]),
    ).commit()
    assert t.succeeded
    first, second = t.responses
    assert isinstance(first, TxnResult) and not first.succeeded
    assert isinstance(first.responses[1], GetResult) and first.responses[1].kvs[0].value == b"x"
    assert isinstance(second, TxnResult) and second.succeeded
    assert isinstance(second.responses[0], PutResult)
    assert (await client.get(b"outer")).kvs[0].value == b"2"


async def test_builder_validation() -> None:
    with pytest.raises(TypeError):
        Txn().if_(True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Txn().then(b"k")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Cmp.version(b"k") == b"x"  # noqa: B015
    with pytest.raises(RuntimeError):
        await Txn().commit()
    assert Txn().then(Op.get(b"a"), Op.txn(then=[Op.get(b"b")])).read_only
    assert not Txn().then(Op.get(b"a"), Op.txn(else_=[Op.delete(b"b")])).read_only
