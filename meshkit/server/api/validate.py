"""Request checks done before a request reaches the log (etcd's v3rpc/key.go).

They depend only on the request and the configured limits, never on the store,
so a rejected request costs no proposal and changes nothing.
"""

from __future__ import annotations

from meshkit._internal.errors import (
    DuplicateKeyError,
    EmptyKeyError,
    KeyNotFoundError,
    LeaseProvidedError,
    TooManyOpsError,
    ValueProvidedError,
)
from meshkit.api.etcdserverpb import rpc_pb2 as pb


def check_range(r: pb.RangeRequest) -> None:
    if not r.key:
        raise EmptyKeyError()


def check_put(r: pb.PutRequest) -> None:
    if not r.key:
        raise EmptyKeyError()
    if r.ignore_value and r.value:
        raise ValueProvidedError()
    if r.ignore_lease and r.lease:
        raise LeaseProvidedError()


def check_delete(r: pb.DeleteRangeRequest) -> None:
    if not r.key:
        raise EmptyKeyError()


def check_txn(r: pb.TxnRequest, max_txn_ops: int) -> None:
    _check_txn_shape(r, max_txn_ops)
    _check_intervals(r.success)
    _check_intervals(r.failure)


def _check_txn_shape(r: pb.TxnRequest, max_txn_ops: int) -> None:
    opc = max(len(r.compare), len(r.success), len(r.failure))
    if opc > max_txn_ops:
        raise TooManyOpsError()
    for c in r.compare:
        if not c.key:
            raise EmptyKeyError()
    for op in (*r.success, *r.failure):
        kind = op.WhichOneof("request")
        if kind == "request_range":
            check_range(op.request_range)
        elif kind == "request_put":
            check_put(op.request_put)
        elif kind == "request_delete_range":
            check_delete(op.request_delete_range)
        elif kind == "request_txn":
            # etcd: a nested txn may use what the enclosing level left over.
            _check_txn_shape(op.request_txn, max_txn_ops - opc)
        else:
            raise KeyNotFoundError()  # an empty op, as etcd answers it


def _in_interval(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


def _check_intervals(ops: object) -> tuple[list[tuple[bytes, bytes]], set[bytes]]:
    """A key may be written once per txn branch: no two puts of one key, and no
    put of a key a delete in the same branch covers. Overlapping deletes are fine.
    Nested txns count with both of their branches, since either may run, except
    that the then and else branches of one nested txn may put the same key.

    Stricter than etcd 3.4 in two places where etcd lets a key be modified twice
    (docs/compat.md): a from-key delete covers the keys after it, and a nested
    txn's delete is checked against earlier nested txns' puts."""
    dels: list[tuple[bytes, bytes]] = []
    puts: set[bytes] = set()
    for op in ops:  # type: ignore[attr-defined]
        if op.WhichOneof("request") == "request_delete_range":
            d = op.request_delete_range
            dels.append((d.key, d.range_end))
    for op in ops:  # type: ignore[attr-defined]
        kind = op.WhichOneof("request")
        if kind == "request_put":
            key = op.request_put.key
            if key in puts or any(_in_interval(key, s, e) for s, e in dels):
                raise DuplicateKeyError()
            puts.add(key)
        elif kind == "request_txn":
            then_dels, then_puts = _check_intervals(op.request_txn.success)
            else_dels, else_puts = _check_intervals(op.request_txn.failure)
            inner_dels = then_dels + else_dels
            inner_puts = then_puts | else_puts
            for key in inner_puts:
                if key in puts or any(_in_interval(key, s, e) for s, e in dels):
                    raise DuplicateKeyError()
            for s, e in inner_dels:
                if any(_in_interval(k, s, e) for k in puts):
                    raise DuplicateKeyError()
            puts |= inner_puts
            dels.extend(inner_dels)
    return dels, puts
