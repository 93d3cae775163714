"""Every rejected request answers etcd's exact gRPC code and message and changes
nothing: the key space and the revision are the same before and after.

Each test runs against meshkit in-process (EmbeddedServer) and against the real
etcd, so the expected errors are etcd's, checked, not remembered."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshkit._internal.errors import (
    CompactedError,
    DuplicateKeyError,
    EmptyKeyError,
    EtcdError,
    FutureRevError,
    KeyNotFoundError,
    LeaseNotFoundError,
    LeaseProvidedError,
    RequestTooLargeError,
    TooManyOpsError,
    ValueProvidedError,
)
from meshkit.client import Client, Cmp, Op
from meshkit.server.embed import EmbeddedServer
from tests.server.conftest import snapshot, wait_ready
from tests.support.procs import start_etcd, start_meshkit

UNKNOWN_LEASE = 0x7E57_0000_1234


@contextlib.asynccontextmanager
async def serve(kind: str, tmp: Path, *, max_txn_ops: int | None = None,
                max_request_bytes: int | None = None) -> AsyncIterator[Client]:
    """A fresh server of ``kind`` ("meshkit" in-process, or the real "etcd") and a client."""
    if kind == "meshkit":
        overrides: dict[str, Any] = {}
        if max_txn_ops is not None:
            overrides["max_txn_ops"] = max_txn_ops
        if max_request_bytes is not None:
            overrides["max_request_bytes"] = max_request_bytes
        async with EmbeddedServer.for_test(tmp / "meshkit-data", 0, **overrides) as srv:
            async with Client([srv.endpoint], timeout=5.0) as c:
                yield c
        return
    flags: list[str] = []
    if max_txn_ops is not None:
        flags += ["--max-txn-ops", str(max_txn_ops)]
    if max_request_bytes is not None:
        flags += ["--max-request-bytes", str(max_request_bytes)]
    sp = start_etcd(tmp, *flags)
    try:
        await wait_ready(sp.endpoint)
        async with Client([sp.endpoint], timeout=5.0) as c:
            yield c
    finally:
        sp.stop()


@pytest.fixture(params=["meshkit", "etcd"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def c(kind: str, tmp_path: Path) -> AsyncIterator[Client]:
    async with serve(kind, tmp_path) as client:
        # Some history: three versions of "a", keys b..d, and a compaction at rev 3.
        for k, v in [(b"a", b"1"), (b"a", b"2"), (b"a", b"3"), (b"b", b"1"), (b"c", b"1"),
                     (b"d", b"1")]:
            await client.put(k, v)
        await client.compact(3)
        yield client


async def rejects(c: Client, cls: type[EtcdError], call: Awaitable[Any]) -> None:
    """``call`` fails with exactly etcd's code and message, and the store is unchanged."""
    before = await snapshot(c)
    with pytest.raises(EtcdError) as ei:
        await call
    err = ei.value
    assert (err.grpc_code, str(err)) == (cls.grpc_code, cls.message), repr(err)
    assert type(err) is cls
    assert await snapshot(c) == before


def txn(c: Client, compare: list[Any] | None = None, then: list[Any] | None = None,
        else_: list[Any] | None = None) -> Awaitable[Any]:
    return c.txn().if_(*(compare or [])).then(*(then or [])).else_(*(else_ or [])).commit()


async def test_empty_key(c: Client) -> None:
    await rejects(c, EmptyKeyError, c.put(b"", b"v"))
    await rejects(c, EmptyKeyError, c.get(b""))
    await rejects(c, EmptyKeyError, c.delete(b""))
    await rejects(c, EmptyKeyError, txn(c, [Cmp.version(b"") == 0], [Op.put(b"x", b"1")]))
    await rejects(c, EmptyKeyError, txn(c, then=[Op.put(b"x", b"1"), Op.put(b"", b"1")]))
    await rejects(c, EmptyKeyError, txn(c, then=[Op.get(b"")]))
    await rejects(c, EmptyKeyError, txn(c, else_=[Op.delete(b"")]))
    await rejects(c, EmptyKeyError, txn(c, then=[Op.txn(then=[Op.put(b"", b"1")])]))
    await rejects(c, EmptyKeyError, txn(c, then=[Op.txn(if_=[Cmp.value(b"") == b"x"])]))


async def test_too_many_ops_default_128(c: Client) -> None:
    ops = [Op.put(f"k{i}", b"v") for i in range(129)]
    await rejects(c, TooManyOpsError, txn(c, then=ops))
    await rejects(c, TooManyOpsError, txn(c, else_=ops))
    await rejects(c, TooManyOpsError, txn(c, [Cmp.version(f"k{i}") == 0 for i in range(129)]))
    await rejects(c, TooManyOpsError, txn(c, then=[Op.txn(then=ops)]))


async def test_max_txn_ops_flag(kind: str, tmp_path: Path) -> None:
    async with serve(kind, tmp_path, max_txn_ops=3) as c:
        await rejects(c, TooManyOpsError, txn(c, then=[Op.put(f"k{i}", b"v") for i in range(4)]))
        await rejects(c, TooManyOpsError, txn(c, [Cmp.version(f"k{i}") == 0 for i in range(4)]))
        r = await txn(c, then=[Op.put(f"k{i}", b"v") for i in range(3)])
        assert r.succeeded and len(r.responses) == 3


async def test_duplicate_key_in_txn(c: Client) -> None:
    put = Op.put
    for ops in (
        [put(b"k", b"1"), put(b"k", b"2")],
        [put(b"k", b"1"), Op.delete(b"k")],
        [Op.delete(b"k"), put(b"k", b"1")],
        [put(b"k2", b"1"), Op.delete(b"k", prefix=True)],  # a covering range delete
        [put(b"k", b"1"), Op.txn(then=[put(b"k", b"2")])],  # nested
        [Op.txn(then=[put(b"k", b"2")]), put(b"k", b"1")],
        [put(b"k", b"1"), Op.txn(else_=[put(b"k", b"2")])],
        [Op.txn(then=[put(b"k", b"1")]), Op.txn(then=[put(b"k", b"2")])],
        [Op.delete(b"j", b"l"), Op.txn(then=[put(b"k", b"2")])],
        [put(b"k", b"1"), Op.txn(then=[Op.txn(then=[put(b"k", b"2")])])],  # two levels deep
    ):
        await rejects(c, DuplicateKeyError, txn(c, then=ops))
        await rejects(c, DuplicateKeyError, txn(c, else_=ops))
    # Not duplicates: the two branches, overlapping deletes, both branches of a nested txn.
    assert (await txn(c, then=[put(b"k", b"1")], else_=[put(b"k", b"2")])).succeeded
    assert (await txn(c, then=[Op.delete(b"a"), Op.delete(b"a", b"c")])).succeeded
    assert (await txn(c, then=[Op.txn(then=[put(b"k", b"3")], else_=[put(b"k", b"4")])])).succeeded


# etcd 3.4 bugs meshkit does not copy (noted in docs/compat.md). Both txns below
# modify one key twice, which etcd's own rule forbids, yet etcd 3.4 accepts them:
# its checkIntervals builds a from-key delete's interval [key, "\0") literally, so
# it covers nothing, and it checks a later nested txn's deletes against this
# level's puts only, not against earlier nested txns' puts. The "etcd" parameter
# pins etcd's (buggy) answer; meshkit refuses them with etcd's duplicate-key error.
ETCD_BUGS = {
    "from-key-delete-covers-nothing": lambda: [Op.put(b"zz", b"1"), Op.delete(b"a", from_key=True)],
    "nested-put-then-nested-delete": lambda: [
        Op.txn(then=[Op.put(b"k", b"1")]), Op.txn(then=[Op.delete(b"k")])],
}


@pytest.mark.parametrize("case", list(ETCD_BUGS))
async def test_key_modified_twice_is_refused_where_etcd_accepts_it(c: Client, kind: str, case: str) -> None:
    ops = ETCD_BUGS[case]
    if kind == "etcd":
        assert (await txn(c, then=ops())).succeeded
    else:
        await rejects(c, DuplicateKeyError, txn(c, then=ops()))


async def test_nested_txn_limit_is_max_minus_outer_ops(c: Client) -> None:
    # etcd's checkTxnRequest gives a nested txn maxTxnOps minus the outer op count.
    await rejects(c, TooManyOpsError, txn(c, then=[
        Op.put(b"o", b"1"), Op.txn(then=[Op.put(f"n{i}", b"1") for i in range(127)])]))
    assert (await txn(c, then=[
        Op.put(b"o", b"1"), Op.txn(then=[Op.put(f"n{i}", b"1") for i in range(126)])])).succeeded


async def test_request_too_large_default(c: Client) -> None:
    await rejects(c, RequestTooLargeError, c.put(b"big", b"x" * (1600 * 1024)))
    await rejects(c, RequestTooLargeError, txn(c, then=[Op.put(b"big", b"x" * (1600 * 1024))]))


async def test_max_request_bytes_flag(kind: str, tmp_path: Path) -> None:
    async with serve(kind, tmp_path, max_request_bytes=1024) as c:
        await rejects(c, RequestTooLargeError, c.put(b"big", b"x" * 2048))
        await rejects(c, RequestTooLargeError, txn(c, then=[Op.put(b"big", b"x" * 2048)]))
        await c.put(b"small", b"x" * 512)


async def test_limit_flags_reach_the_server_through_the_cli(tmp_path: Path) -> None:
    """`meshkit server --max-txn-ops 3 --max-request-bytes 1024` (not only the settings)."""
    sp = start_meshkit(tmp_path, "--max-txn-ops", "3", "--max-request-bytes", "1024")
    try:
        await wait_ready(sp.endpoint)
        async with Client([sp.endpoint], timeout=5.0) as c:
            await rejects(c, TooManyOpsError, txn(c, then=[Op.put(f"k{i}", b"v") for i in range(4)]))
            await rejects(c, RequestTooLargeError, c.put(b"big", b"x" * 2048))
            assert (await txn(c, then=[Op.put(f"k{i}", b"v") for i in range(3)])).succeeded
    finally:
        sp.stop()


async def test_compacted_and_future_revisions(c: Client) -> None:
    current = (await snapshot(c))[0]
    await rejects(c, CompactedError, c.get(b"a", revision=2))
    await rejects(c, CompactedError, c.get(b"a", prefix=True, revision=1))
    await rejects(c, FutureRevError, c.get(b"a", revision=current + 1))
    await rejects(c, CompactedError, c.compact(2))
    await rejects(c, CompactedError, c.compact(3))  # the compaction revision itself
    await rejects(c, FutureRevError, c.compact(current + 1))
    assert (await c.get(b"a", revision=3)).kvs[0].value == b"2"  # still readable


async def test_lease_and_ignore_flags(c: Client) -> None:
    await rejects(c, LeaseNotFoundError, c.put(b"a", b"v", lease=UNKNOWN_LEASE))
    await rejects(c, LeaseNotFoundError, c.put(b"new", b"v", lease=UNKNOWN_LEASE))
    await rejects(c, ValueProvidedError, c.put(b"a", b"v", ignore_value=True))
    await rejects(c, LeaseProvidedError, c.put(b"a", b"v", lease=UNKNOWN_LEASE, ignore_lease=True))
    await rejects(c, KeyNotFoundError, c.put(b"missing", b"", ignore_value=True))
    await rejects(c, KeyNotFoundError, c.put(b"missing", b"v", ignore_lease=True))


async def test_failing_txn_applies_nothing(c: Client) -> None:
    current = (await snapshot(c))[0]
    then_ok = [Op.put(b"a", b"txn"), Op.delete(b"b"), Op.put(b"new", b"txn")]
    await rejects(c, LeaseNotFoundError,
                  txn(c, then=[*then_ok, Op.put(b"c", b"v", lease=UNKNOWN_LEASE)]))
    # The failure branch is the one checked when the compare fails.
    await rejects(c, LeaseNotFoundError,
                  txn(c, [Cmp.value(b"a") == b"nope"], then=then_ok,
                      else_=[Op.put(b"x", b"1"), Op.put(b"c", b"v", lease=UNKNOWN_LEASE)]))
    await rejects(c, LeaseNotFoundError,
                  txn(c, then=[*then_ok, Op.txn(then=[Op.put(b"c", b"v", lease=UNKNOWN_LEASE)])]))
    await rejects(c, KeyNotFoundError,
                  txn(c, then=[*then_ok, Op.put(b"missing", b"", ignore_value=True)]))
    await rejects(c, CompactedError, txn(c, then=[*then_ok, Op.get(b"a", revision=2)]))
    await rejects(c, FutureRevError, txn(c, then=[*then_ok, Op.get(b"a", revision=current + 5)]))
    await rejects(c, CompactedError, txn(c, then=[Op.get(b"a"), Op.get(b"a", revision=2)]))  # read-only
    # The branch that does not run is not checked.
    r = await txn(c, [Cmp.value(b"a") == b"3"], then=[Op.put(b"x", b"1")],
                  else_=[Op.put(b"c", b"v", lease=UNKNOWN_LEASE)])
    assert r.succeeded and r.header.revision == current + 1


async def test_grpc_status_on_the_wire(kind: str, tmp_path: Path) -> None:
    """The raw status (not only the client's class): code and details byte for byte."""
    from meshkit.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc

    async with serve(kind, tmp_path) as c:
        ep = c.current_endpoint
        async with grpc.aio.insecure_channel(ep) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await kv.Put(rpc_pb2.PutRequest(key=b"", value=b"v"))
            assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert ei.value.details() == "etcdserver: key is not provided"
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await kv.Range(rpc_pb2.RangeRequest(key=b"a", revision=99))
            assert ei.value.code() == grpc.StatusCode.OUT_OF_RANGE
            assert ei.value.details() == "etcdserver: mvcc: required revision is a future revision"
