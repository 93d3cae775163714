"""Each etcd error comes back as its class from the shared table."""

from __future__ import annotations

import pytest

from meshkit.client import (
    Client,
    CompactedError,
    DuplicateKeyError,
    EmptyKeyError,
    FutureRevError,
    LeaseNotFoundError,
    MessageTooLargeError,
    Op,
    RequestTooLargeError,
    TooManyOpsError,
)


async def test_compacted_and_future_revision(client: Client) -> None:
    revs = [(await client.put(b"k", str(i))).header.revision for i in range(3)]
    await client.compact(revs[-1])
    with pytest.raises(CompactedError) as ei:
        await client.get(b"k", revision=revs[0])
    assert str(ei.value) == "etcdserver: mvcc: required revision has been compacted"
    with pytest.raises(CompactedError):
        await client.compact(revs[0])
    with pytest.raises(FutureRevError):
        await client.get(b"k", revision=revs[-1] + 100)
    with pytest.raises(FutureRevError):
        await client.compact(revs[-1] + 100)


async def test_empty_key(client: Client) -> None:
    with pytest.raises(EmptyKeyError):
        await client.put(b"", b"v")
    with pytest.raises(EmptyKeyError):
        await client.get(b"")
    with pytest.raises(EmptyKeyError):
        await client.delete("")


async def test_duplicate_key_in_txn(client: Client) -> None:
    with pytest.raises(DuplicateKeyError):
        await client.txn().then(Op.put(b"k", b"1"), Op.put(b"k", b"2")).commit()
    with pytest.raises(DuplicateKeyError):
        await client.txn().then(Op.put(b"k", b"1"), Op.delete(b"k")).commit()


async def test_too_many_ops(client: Client) -> None:
    ops = [Op.put(f"k{i}", b"v") for i in range(129)]
    with pytest.raises(TooManyOpsError):
        await client.txn().then(*ops).commit()
    r = await client.txn().then(*ops[:128]).commit()  # etcd's default limit is 128
    assert r.succeeded and len(r.responses) == 128


async def test_request_too_large(client: Client) -> None:
    # Over etcd's --max-request-bytes (1.5 MiB), under the gRPC limits: the server refuses.
    with pytest.raises(RequestTooLargeError) as ei:
        await client.put(b"big", b"x" * (1600 * 1024))
    assert type(ei.value) is RequestTooLargeError
    # A 2 MiB value is over the client's 2 MiB send limit (like etcd's Go client): refused
    # before sending, as a subclass of the same error.
    with pytest.raises(RequestTooLargeError) as ei:
        await client.put(b"big", b"x" * (2 * 1024 * 1024))
    assert isinstance(ei.value, MessageTooLargeError)
    assert (await client.get(b"big")).count == 0
    # A large answer is fine: the receive limit is etcd's math.MaxInt32.
    for i in range(3):
        await client.put(f"big{i}", b"y" * (1024 * 1024))
    assert sum(len(kv.value) for kv in (await client.get(b"big", prefix=True)).kvs) == 3 * 1024 * 1024


async def test_lease_not_found(client: Client) -> None:
    with pytest.raises(LeaseNotFoundError):
        await client.revoke(0x1234)
    with pytest.raises(LeaseNotFoundError):
        await client.put(b"k", b"v", lease=0x1234)
