"""The transaction builder: comparisons (``Cmp``), operations (``Op``) and ``Txn``.

    txn = (client.txn()
           .if_(Cmp.value(b"k") == b"v", Cmp.version(b"k") > 0)
           .then(Op.put(b"k", b"v2"), Op.get(b"k"))
           .else_(Op.get(b"k")))
    result = await txn.commit()

Comparisons are built with the operators ``== != < >`` or with the methods
``eq ne lt gt`` (same thing; the methods read better to a type checker).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from meshkit.api.etcdserverpb import rpc_pb2
from meshkit.client.kv import (
    KeyLike,
    SortOrder,
    SortTarget,
    delete_request,
    key_range,
    put_request,
    range_request,
    to_bytes,
)

if TYPE_CHECKING:
    from meshkit.client.types import TxnResult

_PC = rpc_pb2.Compare
_RESULT: dict[str, int] = {"==": _PC.EQUAL, "!=": _PC.NOT_EQUAL, "<": _PC.LESS, ">": _PC.GREATER}
_TARGET_FIELD: dict[int, str] = {
    _PC.VERSION: "version", _PC.CREATE: "create_revision", _PC.MOD: "mod_revision",
    _PC.VALUE: "value", _PC.LEASE: "lease",
}

CompareOp = Literal["==", "!=", "<", ">"]


@dataclass(frozen=True, slots=True)
class Compare:
    """One guard of a transaction (wraps etcd's ``Compare`` message)."""

    pb: rpc_pb2.Compare

    def __repr__(self) -> str:
        return f"Compare({self.pb})"


@dataclass(frozen=True, slots=True, eq=False)
class CompareTarget:
    """The left side of a comparison: one attribute of a key (or of every key in a range)."""

    target: int
    key: bytes
    range_end: bytes = b""

    def compare(self, op: CompareOp, other: int | KeyLike) -> Compare:
        field = _TARGET_FIELD[self.target]
        if self.target == _PC.VALUE:
            arg: int | bytes = to_bytes(other) if not isinstance(other, int) else other
            if not isinstance(arg, bytes):
                raise TypeError("a value comparison takes bytes or str")
        else:
            if not isinstance(other, int) or isinstance(other, bool):
                raise TypeError(f"a {field} comparison takes an int")
            arg = other
        pb = _PC(result=_RESULT[op], target=self.target, key=self.key, range_end=self.range_end)  # type: ignore[arg-type]
        setattr(pb, field, arg)
        return Compare(pb)

    def eq(self, other: int | KeyLike) -> Compare:
        return self.compare("==", other)

    def ne(self, other: int | KeyLike) -> Compare:
        return self.compare("!=", other)

    def lt(self, other: int | KeyLike) -> Compare:
        return self.compare("<", other)

    def gt(self, other: int | KeyLike) -> Compare:
        return self.compare(">", other)

    def __eq__(self, other: int | KeyLike) -> Compare:  # type: ignore[override]
        return self.compare("==", other)

    def __ne__(self, other: int | KeyLike) -> Compare:  # type: ignore[override]
        return self.compare("!=", other)

    def __lt__(self, other: int | KeyLike) -> Compare:
        return self.compare("<", other)

    def __gt__(self, other: int | KeyLike) -> Compare:
        return self.compare(">", other)

    __hash__ = None  # type: ignore[assignment]


class Cmp:
    """Comparison targets: ``Cmp.value(k) == b"v"``, ``Cmp.version(k) > 0``, ``Cmp.mod(k) < 10``...

    Each takes ``range_end=`` or ``prefix=True`` to compare every key of a range.
    """

    @staticmethod
    def _t(target: int, key: KeyLike, range_end: KeyLike | None, prefix: bool) -> CompareTarget:
        k, end = key_range(key, range_end, prefix=prefix)
        return CompareTarget(target, k, end)

    @staticmethod
    def value(key: KeyLike, range_end: KeyLike | None = None, *, prefix: bool = False) -> CompareTarget:
        return Cmp._t(_PC.VALUE, key, range_end, prefix)

    @staticmethod
    def version(key: KeyLike, range_end: KeyLike | None = None, *, prefix: bool = False) -> CompareTarget:
        return Cmp._t(_PC.VERSION, key, range_end, prefix)

    @staticmethod
    def create(key: KeyLike, range_end: KeyLike | None = None, *, prefix: bool = False) -> CompareTarget:
        return Cmp._t(_PC.CREATE, key, range_end, prefix)

    @staticmethod
    def mod(key: KeyLike, range_end: KeyLike | None = None, *, prefix: bool = False) -> CompareTarget:
        return Cmp._t(_PC.MOD, key, range_end, prefix)

    @staticmethod
    def lease(key: KeyLike, range_end: KeyLike | None = None, *, prefix: bool = False) -> CompareTarget:
        return Cmp._t(_PC.LEASE, key, range_end, prefix)


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of a transaction branch (wraps etcd's ``RequestOp``)."""

    pb: rpc_pb2.RequestOp

    @property
    def read_only(self) -> bool:
        which = self.pb.WhichOneof("request")
        if which == "request_range":
            return True
        if which == "request_txn":
            t = self.pb.request_txn
            return all(Operation(o).read_only for o in (*t.success, *t.failure))
        return False


class Op:
    """Transaction operations: ``Op.get``, ``Op.put``, ``Op.delete``, ``Op.txn`` (nested)."""

    @staticmethod
    def get(
        key: KeyLike,
        range_end: KeyLike | None = None,
        *,
        prefix: bool = False,
        from_key: bool = False,
        revision: int = 0,
        limit: int = 0,
        sort_order: SortOrder | None = None,
        sort_target: SortTarget = "key",
        serializable: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
        min_mod_revision: int = 0,
        max_mod_revision: int = 0,
        min_create_revision: int = 0,
        max_create_revision: int = 0,
    ) -> Operation:
        req = range_request(
            key, range_end, prefix=prefix, from_key=from_key, revision=revision, limit=limit,
            sort_order=sort_order, sort_target=sort_target, serializable=serializable,
            keys_only=keys_only, count_only=count_only, min_mod_revision=min_mod_revision,
            max_mod_revision=max_mod_revision, min_create_revision=min_create_revision,
            max_create_revision=max_create_revision,
        )
        return Operation(rpc_pb2.RequestOp(request_range=req))

    @staticmethod
    def put(
        key: KeyLike, value: KeyLike, *, lease: int = 0, prev_kv: bool = False,
        ignore_value: bool = False, ignore_lease: bool = False,
    ) -> Operation:
        req = put_request(key, value, lease=lease, prev_kv=prev_kv, ignore_value=ignore_value,
                          ignore_lease=ignore_lease)
        return Operation(rpc_pb2.RequestOp(request_put=req))

    @staticmethod
    def delete(
        key: KeyLike, range_end: KeyLike | None = None, *, prefix: bool = False,
        from_key: bool = False, prev_kv: bool = False,
    ) -> Operation:
        req = delete_request(key, range_end, prefix=prefix, from_key=from_key, prev_kv=prev_kv)
        return Operation(rpc_pb2.RequestOp(request_delete_range=req))

    @staticmethod
    def txn(
        txn: Txn | None = None, *, if_: Iterable[Compare] = (), then: Iterable[Operation] = (),
        else_: Iterable[Operation] = (),
    ) -> Operation:
        """A nested transaction: give a built ``Txn`` or the three lists."""
        t = txn if txn is not None else Txn().if_(*if_).then(*then).else_(*else_)
        return Operation(rpc_pb2.RequestOp(request_txn=t.to_pb()))


class Txn:
    """Builder for one transaction; ``commit()`` needs a client-made ``Txn`` (``client.txn()``)."""

    def __init__(self, committer: Callable[[Txn], Awaitable[TxnResult]] | None = None) -> None:
        self._committer = committer
        self.compares: list[Compare] = []
        self.success: list[Operation] = []
        self.failure: list[Operation] = []

    def if_(self, *compares: Compare) -> Txn:
        for c in compares:
            if not isinstance(c, Compare):
                raise TypeError(f"if_() takes comparisons (Cmp.value(k) == v), got {c!r}")
        self.compares.extend(compares)
        return self

    def then(self, *ops: Operation) -> Txn:
        self.success.extend(_check_ops(ops))
        return self

    def else_(self, *ops: Operation) -> Txn:
        self.failure.extend(_check_ops(ops))
        return self

    @property
    def read_only(self) -> bool:
        return all(o.read_only for o in (*self.success, *self.failure))

    def to_pb(self) -> rpc_pb2.TxnRequest:
        return rpc_pb2.TxnRequest(
            compare=[c.pb for c in self.compares],
            success=[o.pb for o in self.success],
            failure=[o.pb for o in self.failure],
        )

    async def commit(self) -> TxnResult:
        if self._committer is None:
            raise RuntimeError("this Txn has no client: build it with client.txn() to commit it")
        return await self._committer(self)


def _check_ops(ops: tuple[Operation, ...]) -> tuple[Operation, ...]:
    for o in ops:
        if not isinstance(o, Operation):
            raise TypeError(f"expected an operation (Op.put/get/delete/txn), got {o!r}")
    return ops
