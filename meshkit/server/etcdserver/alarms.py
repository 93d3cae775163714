"""Alarms and the backend quota, as etcd 3.4 keeps them.

``AlarmStore`` is etcd's ``alarm.AlarmStore``: (member, type) pairs kept in the
backend bucket "alarm" (key: the serialized ``AlarmMember``, as etcd stores
it) and changed only by applying ``AlarmRequest`` entries from the log, so
every member holds the same set. ``quota_cost`` is etcd's ``backendQuota.Cost``
and ``capped_refuses`` its "capped" applier (active while a NOSPACE alarm is):
Put, LeaseGrant and a Txn with any put are refused; reads, deletes, compaction
and read-only txns go on.
"""

from __future__ import annotations

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.meshkitpb import internal_pb2 as ipb
from meshkit.server.backend import Backend

BUCKET = "alarm"
# etcd's quota.go overheads.
KV_OVERHEAD = 256
LEASE_OVERHEAD = 64
# etcd's DefaultQuotaBytes (2 GiB) and its largest allowed quota (8 GiB).
DEFAULT_QUOTA_BYTES = 2 * 1024**3


def _txn_put_cost(ops: list[pb.RequestOp]) -> int:
    cost = 0
    for op in ops:
        if op.WhichOneof("request") == "request_put":
            p = op.request_put
            cost += KV_OVERHEAD + len(p.key) + len(p.value)
    return cost


def txn_cost(r: pb.TxnRequest) -> int:
    """etcd 3.4's costTxn: the larger branch's put bytes (nested txns not counted, as etcd)."""
    return max(_txn_put_cost(list(r.success)), _txn_put_cost(list(r.failure)))


def quota_cost(req: ipb.InternalRequest) -> int:
    """Bytes a request may add to the backend (0: it cannot grow it)."""
    kind = req.WhichOneof("request")
    if kind == "put":
        return KV_OVERHEAD + len(req.put.key) + len(req.put.value)
    if kind == "txn":
        return txn_cost(req.txn)
    if kind == "lease_grant":
        return LEASE_OVERHEAD
    return 0


def capped_refuses(req: ipb.InternalRequest) -> bool:
    """Whether etcd's capped applier (NOSPACE active) refuses this request."""
    kind = req.WhichOneof("request")
    if kind in ("put", "lease_grant"):
        return True
    return kind == "txn" and txn_cost(req.txn) > 0


def alarm_text(m: pb.AlarmMember) -> str:
    """gogoproto's String() of an AlarmMember, as etcd puts it in Status.errors."""
    return f"memberID:{m.memberID} alarm:{pb.AlarmType.Name(m.alarm)} "


class AlarmStore:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._alarms: dict[tuple[int, int], pb.AlarmMember] = {}
        for key, _ in backend.bucket_items(BUCKET):
            m = pb.AlarmMember.FromString(key)
            self._alarms[(m.alarm, m.memberID)] = m
        self._refresh()

    def _refresh(self) -> None:
        # Read for every applied request: kept as a plain attribute.
        self._nospace = self.has(pb.NOSPACE)

    def get(self, alarm: int = pb.NONE) -> list[pb.AlarmMember]:
        """All alarms of one type, or every alarm for NONE (sorted; etcd's order is a map's)."""
        return [m for (t, _), m in sorted(self._alarms.items()) if alarm == pb.NONE or t == alarm]

    def has(self, alarm: int) -> bool:
        return any(t == alarm for t, _ in self._alarms)

    @property
    def nospace(self) -> bool:
        return self._nospace

    def apply(self, r: pb.AlarmRequest) -> pb.AlarmResponse:
        """etcd's applierV3backend.Alarm."""
        resp = pb.AlarmResponse()
        if r.action == pb.AlarmRequest.GET:
            resp.alarms.extend(self.get(r.alarm))
        elif r.action == pb.AlarmRequest.ACTIVATE:
            key = (r.alarm, r.memberID)
            m = self._alarms.get(key)
            if m is None:
                m = pb.AlarmMember(memberID=r.memberID, alarm=r.alarm)
                self._alarms[key] = m
                self._backend.bucket_put(BUCKET, m.SerializeToString(), b"")
                self._refresh()
            resp.alarms.append(m)
        elif r.action == pb.AlarmRequest.DEACTIVATE:
            m = self._alarms.pop((r.alarm, r.memberID), None)
            if m is not None:
                self._backend.bucket_delete(BUCKET, m.SerializeToString())
                self._refresh()
                resp.alarms.append(m)
        return resp
