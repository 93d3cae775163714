"""Request checks done before the log (etcd's v3rpc/key.go rules)."""

from __future__ import annotations

import pytest

from meshkit._internal.errors import (
    DuplicateKeyError,
    EmptyKeyError,
    KeyNotFoundError,
    TooManyOpsError,
)
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.server.api.validate import check_txn


def put(k: bytes) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=k, value=b"v"))


def test_an_empty_op_is_key_not_found_as_in_etcd() -> None:
    with pytest.raises(KeyNotFoundError):
        check_txn(pb.TxnRequest(success=[pb.RequestOp()]), 128)


def test_limit_counts_the_longest_list_and_nested_txns_get_the_rest() -> None:
    check_txn(pb.TxnRequest(success=[put(b"%d" % i) for i in range(128)]), 128)
    with pytest.raises(TooManyOpsError):
        check_txn(pb.TxnRequest(compare=[pb.Compare(key=b"c")] * 129), 128)
    nested = pb.TxnRequest(success=[put(b"n%d" % i) for i in range(2)])
    check_txn(pb.TxnRequest(success=[put(b"o"), pb.RequestOp(request_txn=nested)]), 4)
    with pytest.raises(TooManyOpsError):
        check_txn(pb.TxnRequest(success=[put(b"o"), pb.RequestOp(request_txn=nested)]), 3)


def test_empty_compare_key() -> None:
    with pytest.raises(EmptyKeyError):
        check_txn(pb.TxnRequest(compare=[pb.Compare(key=b"")]), 128)


def test_then_and_else_of_one_nested_txn_may_put_the_same_key() -> None:
    nested = pb.TxnRequest(success=[put(b"k")], failure=[put(b"k")])
    check_txn(pb.TxnRequest(success=[pb.RequestOp(request_txn=nested)]), 128)
    with pytest.raises(DuplicateKeyError):
        check_txn(pb.TxnRequest(success=[put(b"k"), pb.RequestOp(request_txn=nested)]), 128)
