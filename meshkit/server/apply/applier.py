"""The store applier: etcd's request semantics on top of the MVCC store.

Pure and deterministic: given the same store state and request it produces the
same result on every member, so it runs on committed log entries. Range and
read-only Txn are also served here directly (they never enter the log).
Follows etcd 3.4's applierV3backend: compares of a txn (nested ones included)
are all evaluated before any op runs, then the chosen path is checked (leases
exist, ignore_value/ignore_lease keys exist, range revisions are valid), and only
then are the ops executed, so a failing txn changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from meshkit._internal.errors import (
    CompactedError,
    FutureRevError,
    KeyNotFoundError,
    LeaseNotFoundError,
)
from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.mvccpb import kv_pb2
from meshkit.server.lease import Lessor
from meshkit.server.mvcc import Event, KeyValue, KVStore, TxnWrite

_RR = pb.RangeRequest
_CMP = pb.Compare

# Reads of a whole range (no upper bound) are spelled range_end=b"\0" on the wire
# and in the store alike.
_SORT_ATTR = {
    _RR.KEY: "key",
    _RR.VERSION: "version",
    _RR.CREATE: "create_revision",
    _RR.MOD: "mod_revision",
    _RR.VALUE: "value",
}


def to_pb(kv: KeyValue, keys_only: bool = False) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=b"" if keys_only else kv.value,
        lease=kv.lease,
    )


def _fill(dst: Any, kv: KeyValue, keys_only: bool = False) -> None:
    dst.key = kv.key
    dst.create_revision = kv.create_revision
    dst.mod_revision = kv.mod_revision
    dst.version = kv.version
    if not keys_only:
        dst.value = kv.value
    dst.lease = kv.lease


def is_txn_readonly(r: pb.TxnRequest) -> bool:
    for op in (*r.success, *r.failure):
        kind = op.WhichOneof("request")
        if kind == "request_range":
            continue
        if kind == "request_txn":
            if not is_txn_readonly(op.request_txn):
                return False
            continue
        return False
    return True


class _Reader:
    """What a range needs: the store itself, or a write txn that sees its own writes."""

    def __init__(self, store: KVStore, txn: Any = None) -> None:
        self.store = store
        self.txn = txn
        self.begin_rev = store.current_revision
        self.changed = False

    @property
    def rev(self) -> int:
        return self.begin_rev + 1 if self.changed else self.begin_rev

    def range(self, key: bytes, end: bytes, rev: int, limit: int) -> Any:
        if self.txn is not None and rev <= 0:
            return self.txn.range(key, end, limit=limit)
        return self.store.range(key, end, rev=rev, limit=limit)


class Applier:
    def __init__(self, store: KVStore, lease_exists: Callable[[int], bool] | None = None,
                 lessor: Lessor | None = None) -> None:
        self.store = store
        # Keys follow their leases (attach on put, detach on overwrite/delete);
        # without a lessor every lease is unknown, as etcd answers for a lease
        # it has never granted.
        self.lessor = lessor
        if lease_exists is None and lessor is not None:
            lease_exists = lessor.exists
        self._lease_exists = lease_exists or (lambda _id: False)
        # Called with (revision, events) after every write txn that changed
        # something (the watchable store's notify).
        self.on_events: Callable[[int, list[Event]], None] | None = None

    # ---- reads ---------------------------------------------------------------

    def range(self, r: pb.RangeRequest, reader: _Reader | None = None) -> pb.RangeResponse:
        limit = r.limit
        filtered = bool(
            r.sort_order != _RR.NONE
            or r.min_mod_revision
            or r.max_mod_revision
            or r.min_create_revision
            or r.max_create_revision
        )
        if filtered:
            limit = 0  # sorting and filters need the whole range first
        if limit > 0:
            limit += 1  # one extra tells whether there is more
        if reader is None:
            res = self.store.range(r.key, r.range_end, r.revision, limit)
        else:
            res = reader.range(r.key, r.range_end, r.revision, limit)
        kvs: list[KeyValue] = res.kvs
        if r.max_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision <= r.max_mod_revision]
        if r.min_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision >= r.min_mod_revision]
        if r.max_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision <= r.max_create_revision]
        if r.min_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision >= r.min_create_revision]
        order = r.sort_order
        if r.sort_target != _RR.KEY and order == _RR.NONE:
            order = _RR.ASCEND
        if order != _RR.NONE and not (r.sort_target == _RR.KEY and order == _RR.ASCEND):
            attr = _SORT_ATTR.get(r.sort_target, "key")
            # Stable sort keeps key order among equal targets, as etcd's sort.Sort
            # happens to for these inputs.
            kvs = sorted(kvs, key=lambda kv: getattr(kv, attr), reverse=order == _RR.DESCEND)
        resp = pb.RangeResponse()
        more = False
        if r.limit > 0 and len(kvs) > r.limit:
            kvs = kvs[: r.limit]
            more = True
        resp.more = more
        resp.header.revision = res.rev if reader is None else reader.rev
        resp.count = res.count
        if not r.count_only:
            add = resp.kvs.add
            keys_only = r.keys_only
            for kv in kvs:
                _fill(add(), kv, keys_only)
        return resp

    def txn_readonly(self, r: pb.TxnRequest) -> pb.TxnResponse:
        rd = _Reader(self.store)
        path = self._compare_path(rd, r)
        self._check_ranges(rd, r, path)
        resp = self._new_txn_resp(r, path)
        self._exec_txn(rd, r, path, resp)
        resp.header.revision = rd.rev
        return resp

    # ---- writes (called with committed log entries, in order) ------------------

    # (try/finally rather than ``with self._write()``: a generator context
    # manager costs more than the rest of a plain put.)

    def put(self, r: pb.PutRequest) -> pb.PutResponse:
        store = self.store
        txn = store.write()
        if not (r.lease or r.prev_kv or r.ignore_value or r.ignore_lease):
            # The common put, without the reader: no lease to check or attach,
            # nothing to read first (same result as the general path below).
            key = r.key
            try:
                old = txn.put(key, r.value, 0)
                if old is not None and old.lease and self.lessor is not None:
                    self.lessor.detach(old.lease, key)
            finally:
                self._end(txn)
            resp = pb.PutResponse()
            resp.header.revision = txn.rev
            return resp
        try:
            rd = _Reader(store, txn)
            if r.ignore_value or r.ignore_lease or r.lease:
                self._check_put(rd, r)
            return self._put(rd, r)
        finally:
            self._end(txn)

    def delete_range(self, r: pb.DeleteRangeRequest) -> pb.DeleteRangeResponse:
        store = self.store
        txn = store.write()
        try:
            return self._delete(_Reader(store, txn), r)
        finally:
            self._end(txn)

    def txn(self, r: pb.TxnRequest) -> pb.TxnResponse:
        if is_txn_readonly(r):
            return self.txn_readonly(r)
        store = self.store
        txn = store.write()
        try:
            rd = _Reader(store, txn)
            path = self._compare_path(rd, r)
            self._check_puts(rd, r, path)
            self._check_ranges(rd, r, path)
            resp = self._new_txn_resp(r, path)
            self._exec_txn(rd, r, path, resp)
            resp.header.revision = rd.rev
            return resp
        finally:
            self._end(txn)

    def compact(self, r: pb.CompactionRequest) -> pb.CompactionResponse:
        self.store.compact(r.revision)
        resp = pb.CompactionResponse()
        resp.header.revision = self.store.current_revision
        return resp

    # ---- leases (committed log entries too) -------------------------------------

    def lease_grant(self, r: pb.LeaseGrantRequest) -> pb.LeaseGrantResponse:
        le = self._need_lessor().grant(r.ID, r.TTL)
        resp = pb.LeaseGrantResponse(ID=le.id, TTL=le.ttl)
        resp.header.revision = self.store.current_revision
        return resp

    def lease_revoke(self, r: pb.LeaseRevokeRequest) -> pb.LeaseRevokeResponse:
        self._revoke(r.ID)
        resp = pb.LeaseRevokeResponse()
        resp.header.revision = self.store.current_revision
        return resp

    def lease_expire(self, r: Any) -> int:
        """Revoke the leases the leader found expired, each as its own revoke
        (its keys deleted in one revision); ids revoked meanwhile are skipped.
        Returns how many were revoked."""
        lessor = self._need_lessor()
        n = 0
        for lid in r.ids:
            if lessor.exists(lid):
                self._revoke(lid)
                n += 1
        return n

    def lease_checkpoint(self, r: pb.LeaseCheckpointRequest) -> pb.LeaseCheckpointResponse:
        lessor = self._need_lessor()
        for cp in r.checkpoints:
            lessor.checkpoint(cp.ID, cp.remaining_TTL)
        resp = pb.LeaseCheckpointResponse()
        resp.header.revision = self.store.current_revision
        return resp

    def _revoke(self, lease_id: int) -> None:
        lessor = self._need_lessor()
        le = lessor.lookup(lease_id)
        if le is None:
            raise LeaseNotFoundError()
        # etcd: the attached keys, sorted, deleted in one write txn (one revision).
        with self._write() as txn:
            rd = _Reader(self.store, txn)
            for key in sorted(le.keys):
                self._delete(rd, pb.DeleteRangeRequest(key=key))
        lessor.revoke(lease_id)

    def _need_lessor(self) -> Lessor:
        if self.lessor is None:
            raise LeaseNotFoundError()
        return self.lessor

    # ---- internals -------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[TxnWrite]:
        """The store's write txn; its events go to ``on_events`` once it ends."""
        txn = self.store.write()
        try:
            yield txn
        finally:
            self._end(txn)

    def _end(self, txn: TxnWrite) -> None:
        events = txn.end()
        if events and self.on_events is not None:
            self.on_events(txn.rev, events)

    def _put(self, rd: _Reader, r: pb.PutRequest) -> pb.PutResponse:
        value, lease = r.value, r.lease
        prev: KeyValue | None = None
        if r.ignore_value or r.ignore_lease or r.prev_kv:
            found = rd.range(r.key, b"", 0, 0).kvs
            prev = found[0] if found else None
            if (r.ignore_value or r.ignore_lease) and prev is None:
                raise KeyNotFoundError()
            if prev is not None:
                if r.ignore_value:
                    value = prev.value
                if r.ignore_lease:
                    lease = prev.lease
        old = rd.txn.put(r.key, value, lease)
        rd.changed = True
        if self.lessor is not None:
            if old is not None and old.lease and old.lease != lease:
                self.lessor.detach(old.lease, r.key)
            if lease:
                self.lessor.attach(lease, r.key)
        resp = pb.PutResponse()
        if r.prev_kv and prev is not None:
            _fill(resp.prev_kv, prev)
        resp.header.revision = rd.rev
        return resp

    def _delete(self, rd: _Reader, r: pb.DeleteRangeRequest) -> pb.DeleteRangeResponse:
        prevs = rd.txn.delete_range(r.key, r.range_end)
        if prevs:
            rd.changed = True
            if self.lessor is not None:
                for kv in prevs:
                    if kv.lease:
                        self.lessor.detach(kv.lease, kv.key)
        resp = pb.DeleteRangeResponse(deleted=len(prevs))
        if r.prev_kv:
            add = resp.prev_kvs.add
            for kv in prevs:
                _fill(add(), kv)
        resp.header.revision = rd.rev
        return resp

    def _check_put(self, rd: _Reader, r: pb.PutRequest) -> None:
        if r.ignore_value or r.ignore_lease:
            if not rd.range(r.key, b"", 0, 0).kvs:
                raise KeyNotFoundError()
        if r.lease and not self._lease_exists(r.lease):
            raise LeaseNotFoundError()

    def _compare_path(self, rd: _Reader, r: pb.TxnRequest) -> list[bool]:
        """Evaluate this txn's compares and, depth first, those of the nested
        txns on the chosen branch: one bool per txn, all before any op runs."""
        ok = all(self._compare(rd, c) for c in r.compare)
        path = [ok]
        for op in r.success if ok else r.failure:
            if op.WhichOneof("request") == "request_txn":
                path.extend(self._compare_path(rd, op.request_txn))
        return path

    def _compare(self, rd: _Reader, c: pb.Compare) -> bool:
        kvs = rd.range(c.key, c.range_end, 0, 0).kvs
        if not kvs:
            if c.target == _CMP.VALUE:
                return False
            return self._compare_kv(c, None)
        return all(self._compare_kv(c, kv) for kv in kvs)

    @staticmethod
    def _compare_kv(c: pb.Compare, kv: KeyValue | None) -> bool:
        t = c.target
        which = c.WhichOneof("target_union")
        mine: Any
        theirs: Any
        if t == _CMP.VALUE:
            mine = kv.value if kv else b""
            theirs = c.value if which == "value" else b""
        elif t == _CMP.CREATE:
            mine = kv.create_revision if kv else 0
            theirs = c.create_revision if which == "create_revision" else 0
        elif t == _CMP.MOD:
            mine = kv.mod_revision if kv else 0
            theirs = c.mod_revision if which == "mod_revision" else 0
        elif t == _CMP.VERSION:
            mine = kv.version if kv else 0
            theirs = c.version if which == "version" else 0
        elif t == _CMP.LEASE:
            mine = kv.lease if kv else 0
            theirs = c.lease if which == "lease" else 0
        else:
            return False
        res = c.result
        if res == _CMP.EQUAL:
            return bool(mine == theirs)
        if res == _CMP.NOT_EQUAL:
            return bool(mine != theirs)
        if res == _CMP.GREATER:
            return bool(mine > theirs)
        if res == _CMP.LESS:
            return bool(mine < theirs)
        return False

    def _walk(self, r: pb.TxnRequest, path: list[bool], visit: Callable[[Any, str], None]) -> int:
        """Visit the ops on the chosen path; returns how many path slots it used."""
        used = 1
        for op in r.success if path[0] else r.failure:
            kind = op.WhichOneof("request")
            if kind == "request_txn":
                used += self._walk(op.request_txn, path[used:], visit)
            else:
                visit(getattr(op, kind), kind)
        return used

    def _check_puts(self, rd: _Reader, r: pb.TxnRequest, path: list[bool]) -> None:
        def visit(req: Any, kind: str) -> None:
            if kind == "request_put":
                self._check_put(rd, req)

        self._walk(r, path, visit)

    def _check_ranges(self, rd: _Reader, r: pb.TxnRequest, path: list[bool]) -> None:
        current, compacted = self.store.current_revision, self.store.compact_revision

        def visit(req: Any, kind: str) -> None:
            if kind == "request_range" and req.revision > 0:
                if req.revision > current:
                    raise FutureRevError()
                if req.revision < compacted:
                    raise CompactedError(compact_revision=compacted)

        self._walk(r, path, visit)

    def _new_txn_resp(self, r: pb.TxnRequest, path: list[bool]) -> pb.TxnResponse:
        resp = pb.TxnResponse(succeeded=path[0])
        resp.header.SetInParent()
        self._skeleton(r, path, resp)
        return resp

    def _skeleton(self, r: pb.TxnRequest, path: list[bool], resp: pb.TxnResponse) -> int:
        used = 1
        for op in r.success if path[0] else r.failure:
            if op.WhichOneof("request") == "request_txn":
                inner = resp.responses.add().response_txn
                inner.succeeded = path[used]
                inner.header.SetInParent()
                used += self._skeleton(op.request_txn, path[used:], inner)
            else:
                resp.responses.add()
        return used

    def _exec_txn(self, rd: _Reader, r: pb.TxnRequest, path: list[bool], resp: pb.TxnResponse) -> int:
        used = 1
        ops: Sequence[pb.RequestOp] = r.success if path[0] else r.failure
        for i, op in enumerate(ops):
            kind = op.WhichOneof("request")
            slot = resp.responses[i]
            if kind == "request_range":
                slot.response_range.CopyFrom(self.range(op.request_range, rd))
            elif kind == "request_put":
                slot.response_put.CopyFrom(self._put(rd, op.request_put))
            elif kind == "request_delete_range":
                slot.response_delete_range.CopyFrom(self._delete(rd, op.request_delete_range))
            elif kind == "request_txn":
                used += self._exec_txn(rd, op.request_txn, path[used:], slot.response_txn)
        return used
