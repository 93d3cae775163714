"""Building etcd's KV requests from keyword options (shared by direct calls and txn ops)."""

from __future__ import annotations

from typing import Literal, TypeAlias

from meshkit.api.etcdserverpb import rpc_pb2

KeyLike: TypeAlias = bytes | str
SortOrder: TypeAlias = Literal["none", "ascend", "descend"]
SortTarget: TypeAlias = Literal["key", "version", "create", "mod", "value"]

_SORT_ORDER = {None: rpc_pb2.RangeRequest.NONE, "none": rpc_pb2.RangeRequest.NONE,
               "ascend": rpc_pb2.RangeRequest.ASCEND, "descend": rpc_pb2.RangeRequest.DESCEND}
_SORT_TARGET = {"key": rpc_pb2.RangeRequest.KEY, "version": rpc_pb2.RangeRequest.VERSION,
                "create": rpc_pb2.RangeRequest.CREATE, "mod": rpc_pb2.RangeRequest.MOD,
                "value": rpc_pb2.RangeRequest.VALUE}


def to_bytes(x: KeyLike) -> bytes:
    """Keys and values: bytes as given, str encoded as UTF-8."""
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, bytearray | memoryview):
        return bytes(x)
    raise TypeError(f"expected bytes or str, got {type(x).__name__}")


def prefix_end(key: bytes) -> bytes:
    """The range end covering every key with this prefix (etcd's GetPrefixRangeEnd)."""
    end = bytearray(key)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"  # all 0xff (or empty): up to the end of the keyspace


def key_range(
    key: KeyLike, range_end: KeyLike | None = None, *, prefix: bool = False, from_key: bool = False
) -> tuple[bytes, bytes]:
    """(key, range_end) for one of: a single key, an explicit end, a prefix, or from-key.

    As in etcd's Go client, an empty key with ``prefix`` or ``from_key`` means every key.
    """
    k = to_bytes(key)
    if sum((range_end is not None, prefix, from_key)) > 1:
        raise ValueError("give at most one of range_end, prefix, from_key")
    if range_end is not None:
        return k, to_bytes(range_end)
    if prefix:
        if not k:
            return b"\x00", b"\x00"
        return k, prefix_end(k)
    if from_key:
        return (k or b"\x00"), b"\x00"
    return k, b""


def range_request(
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
) -> rpc_pb2.RangeRequest:
    k, end = key_range(key, range_end, prefix=prefix, from_key=from_key)
    try:
        order = _SORT_ORDER[sort_order]
        target = _SORT_TARGET[sort_target]
    except KeyError as e:
        raise ValueError(f"bad sort option {e.args[0]!r}") from None
    if target == rpc_pb2.RangeRequest.KEY and order == rpc_pb2.RangeRequest.ASCEND:
        order = rpc_pb2.RangeRequest.NONE  # the server's natural order; etcd's client does the same
    return rpc_pb2.RangeRequest(
        key=k, range_end=end, revision=revision, limit=limit, sort_order=order, sort_target=target,
        serializable=serializable, keys_only=keys_only, count_only=count_only,
        min_mod_revision=min_mod_revision, max_mod_revision=max_mod_revision,
        min_create_revision=min_create_revision, max_create_revision=max_create_revision,
    )


def put_request(
    key: KeyLike, value: KeyLike, *, lease: int = 0, prev_kv: bool = False,
    ignore_value: bool = False, ignore_lease: bool = False,
) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(
        key=to_bytes(key), value=to_bytes(value), lease=lease, prev_kv=prev_kv,
        ignore_value=ignore_value, ignore_lease=ignore_lease,
    )


def delete_request(
    key: KeyLike, range_end: KeyLike | None = None, *, prefix: bool = False,
    from_key: bool = False, prev_kv: bool = False,
) -> rpc_pb2.DeleteRangeRequest:
    k, end = key_range(key, range_end, prefix=prefix, from_key=from_key)
    return rpc_pb2.DeleteRangeRequest(key=k, range_end=end, prev_kv=prev_kv)
