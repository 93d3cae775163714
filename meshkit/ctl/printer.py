"""etcdctl 3.4's output formats (simple, json, fields, protobuf, table) over raw responses."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from meshkit.api.etcdserverpb import rpc_pb2
from meshkit.api.mvccpb import kv_pb2
from meshkit.ctl.errors import EXIT_BAD_FEATURE, CtlExit
from meshkit.ctl.gofmt import (
    go_bytes_list,
    human_bytes,
    json_string,
    json_value,
    quote,
)

FORMATS = ("simple", "json", "fields", "protobuf", "table")
_EVENT = {0: "PUT", 1: "DELETE"}
_ALARM = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}


@dataclass
class EpStatus:
    ep: str
    resp: rpc_pb2.StatusResponse


@dataclass
class EpHashKV:
    ep: str
    resp: rpc_pb2.HashKVResponse


@dataclass
class EpHealth:
    ep: str
    health: bool
    took: str
    error: str = ""


@dataclass
class Printer:
    """Writes one format to ``out`` (stdout's bytes) and ``err``."""

    fmt: str
    hex: bool = False
    value_only: bool = False
    out: BinaryIO = field(default_factory=lambda: sys.stdout.buffer)
    err: BinaryIO = field(default_factory=lambda: sys.stderr.buffer)

    # -- helpers ----------------------------------------------------------------------

    def w(self, text: str | bytes) -> None:
        self.out.write(text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text)

    def line(self, text: str | bytes = "") -> None:
        self.w(text)
        self.w(b"\n")

    def unsupported(self) -> None:
        raise CtlExit(EXIT_BAD_FEATURE, f"{self.fmt} not supported as output format")

    def pb(self, msg: Any) -> None:
        """etcdctl 3.4.23's printPB: the marshalled bytes as they are (a ``%`` in them
        is not a formatting verb)."""
        self.w(msg.SerializeToString())

    def json(self, msg: Any) -> None:
        self.line(json_value(msg))

    def _hexed(self, b: bytes) -> bytes:
        return "".join(f"\\x{c:02x}" for c in b).encode()

    def kv_simple(self, kv: kv_pb2.KeyValue) -> None:
        k, v = kv.key, kv.value
        if self.hex:
            k, v = self._hexed(k), self._hexed(v)
        if not self.value_only:
            self.line(k)
        self.line(v)

    def hdr(self, h: rpc_pb2.ResponseHeader) -> None:
        self.line(f'"ClusterID" : {h.cluster_id}')
        self.line(f'"MemberID" : {h.member_id}')
        self.line(f'"Revision" : {h.revision}')
        self.line(f'"RaftTerm" : {h.raft_term}')

    def kv_fields(self, pfx: str, kv: kv_pb2.KeyValue) -> None:
        self.line(f'"{pfx}Key" : {quote(kv.key)}')
        self.line(f'"{pfx}CreateRevision" : {kv.create_revision}')
        self.line(f'"{pfx}ModRevision" : {kv.mod_revision}')
        self.line(f'"{pfx}Version" : {kv.version}')
        self.line(f'"{pfx}Value" : {quote(kv.value)}')
        self.line(f'"{pfx}Lease" : {kv.lease}')

    def _generic(self, msg: Any) -> bool:
        """json / protobuf / table-unsupported for a plain pb response; True if handled."""
        if self.fmt == "json":
            self.json(msg)
            return True
        if self.fmt == "protobuf":
            self.pb(msg)
            return True
        if self.fmt == "table":
            self.unsupported()
        return False

    # -- KV ---------------------------------------------------------------------------

    def get(self, r: rpc_pb2.RangeResponse) -> None:
        if self._generic(r):
            return
        if self.fmt == "fields":
            self.hdr(r.header)
            for kv in r.kvs:
                self.kv_fields("", kv)
            self.line(f'"More" : {str(r.more).lower()}')
            self.line(f'"Count" : {r.count}')
            return
        for kv in r.kvs:
            self.kv_simple(kv)

    def put(self, r: rpc_pb2.PutResponse) -> None:
        if self._generic(r):
            return
        if self.fmt == "fields":
            self.hdr(r.header)
            if r.HasField("prev_kv"):
                self.kv_fields("Prev", r.prev_kv)
            return
        self.line("OK")
        if r.HasField("prev_kv"):
            self.kv_simple(r.prev_kv)

    def delete(self, r: rpc_pb2.DeleteRangeResponse) -> None:
        if self._generic(r):
            return
        if self.fmt == "fields":
            self.hdr(r.header)
            self.line(f'"Deleted" : {r.deleted}')
            for kv in r.prev_kvs:
                self.kv_fields("Prev", kv)
            return
        self.line(str(r.deleted))
        for kv in r.prev_kvs:
            self.kv_simple(kv)

    def txn(self, r: rpc_pb2.TxnResponse) -> None:
        if self._generic(r):
            return
        if self.fmt == "fields":
            self.hdr(r.header)
            self.line(f'"Succeeded" : {str(r.succeeded).lower()}')
        else:
            self.line("SUCCESS" if r.succeeded else "FAILURE")
        for op in r.responses:
            if self.fmt != "fields":
                self.line()
            which = op.WhichOneof("response")
            if which == "response_delete_range":
                self.delete(op.response_delete_range)
            elif which == "response_put":
                self.put(op.response_put)
            elif which == "response_range":
                self.get(op.response_range)
            else:
                self.line(f"unexpected response {op}")

    def watch(self, r: rpc_pb2.WatchResponse) -> None:
        if self.fmt == "table":
            self.unsupported()
        if self.fmt == "protobuf":
            out = rpc_pb2.WatchResponse(header=r.header, events=r.events,
                                        compact_revision=r.compact_revision, canceled=r.canceled,
                                        created=r.created)
            self.pb(out)
            return
        if self.fmt == "json":
            events = ",".join(json_value(e) for e in r.events)
            self.line(
                '{"Header":' + json_value(r.header) + ',"Events":[' + events + "]"
                + f',"CompactRevision":{r.compact_revision}'
                + f',"Canceled":{str(r.canceled).lower()},"Created":{str(r.created).lower()}}}'
            )
            return
        if self.fmt == "fields":
            self.hdr(r.header)
        for e in r.events:
            if self.fmt == "fields":
                self.line(f'"Type" : {_EVENT.get(e.type, e.type)}')
                if e.HasField("prev_kv"):
                    self.kv_fields("Prev", e.prev_kv)
                self.kv_fields("", e.kv)
                continue
            self.line(_EVENT.get(e.type, str(e.type)))
            if e.HasField("prev_kv"):
                self.kv_simple(e.prev_kv)
            self.kv_simple(e.kv)

    # -- lease (clientv3 wraps these responses with the header embedded) --------------

    def _flat_json(self, h: rpc_pb2.ResponseHeader, tail: str) -> None:
        head = json_value(h)[1:-1]
        self.line("{" + (head + "," if head else "") + tail + "}")

    def _lease_pb(self, h: rpc_pb2.ResponseHeader) -> None:
        # clientv3's wrappers embed *ResponseHeader, whose Marshal is what printPB finds
        self.pb(h)

    def grant(self, r: rpc_pb2.LeaseGrantResponse) -> None:
        if self.fmt == "simple":
            self.line(f"lease {r.ID & (2**64 - 1):016x} granted with TTL({r.TTL}s)")
        elif self.fmt == "json":
            self._flat_json(r.header, f'"ID":{r.ID},"TTL":{r.TTL},"Error":{json_string(r.error)}')
        elif self.fmt == "fields":
            self.hdr(r.header)
            self.line(f'"ID" : {r.ID}')
            self.line(f'"TTL" : {r.TTL}')
        elif self.fmt == "protobuf":
            self._lease_pb(r.header)
        else:
            self.unsupported()

    def revoke(self, lease_id: int, r: rpc_pb2.LeaseRevokeResponse) -> None:
        if self.fmt == "simple":
            self.line(f"lease {lease_id & (2**64 - 1):016x} revoked")
        elif self.fmt == "fields":
            self.hdr(r.header)
        else:
            self._generic(r)

    def keep_alive(self, r: rpc_pb2.LeaseKeepAliveResponse) -> None:
        if self.fmt == "simple":
            self.line(f"lease {r.ID & (2**64 - 1):016x} keepalived with TTL({r.TTL})")
        elif self.fmt == "json":
            self._flat_json(r.header, f'"ID":{r.ID},"TTL":{r.TTL}')
        elif self.fmt == "fields":
            self.hdr(r.header)
            self.line(f'"ID" : {r.ID}')
            self.line(f'"TTL" : {r.TTL}')
        elif self.fmt == "protobuf":
            self._lease_pb(r.header)
        else:
            self.unsupported()

    def time_to_live(self, r: rpc_pb2.LeaseTimeToLiveResponse, keys: bool) -> None:
        if self.fmt == "simple":
            lid = r.ID & (2**64 - 1)
            if r.grantedTTL == 0 and r.TTL == -1:
                self.line(f"lease {lid:016x} already expired")
                return
            txt = f"lease {lid:016x} granted with TTL({r.grantedTTL}s), remaining({r.TTL}s)"
            if keys:
                txt += f", attached keys({go_bytes_list(list(r.keys))})"
            self.line(txt)
        elif self.fmt == "json":
            ks = "null" if not r.keys else "[" + ",".join(
                '"' + __import__("base64").b64encode(k).decode() + '"' for k in r.keys) + "]"
            self._flat_json(r.header, f'"id":{r.ID},"ttl":{r.TTL},"granted-ttl":{r.grantedTTL},"keys":{ks}')
        elif self.fmt == "fields":
            self.hdr(r.header)
            self.line(f'"ID" : {r.ID}')
            self.line(f'"TTL" : {r.TTL}')
            self.line(f'"GrantedTTL" : {r.grantedTTL}')
            for k in r.keys:
                self.line(f'"Key" : {quote(k)}')
        elif self.fmt == "protobuf":
            self._lease_pb(r.header)
        else:
            self.unsupported()

    def leases(self, r: rpc_pb2.LeaseLeasesResponse) -> None:
        if self.fmt == "simple":
            self.line(f"found {len(r.leases)} leases")
            for ls in r.leases:
                self.line(f"{ls.ID & (2**64 - 1):016x}")
        elif self.fmt == "json":
            items = ",".join(f'{{"id":{ls.ID}}}' for ls in r.leases)
            self._flat_json(r.header, f'"leases":[{items}]' if r.leases else '"leases":null')
        elif self.fmt == "fields":
            self.hdr(r.header)
            for ls in r.leases:
                self.line(f'"ID" : {ls.ID}')
        elif self.fmt == "protobuf":
            self._lease_pb(r.header)
        else:
            self.unsupported()

    # -- cluster / maintenance --------------------------------------------------------

    def member_list(self, r: rpc_pb2.MemberListResponse) -> None:
        hdr = ["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"]
        rows = [[f"{m.ID:x}", "started" if m.name else "unstarted", m.name, ",".join(m.peerURLs),
                 ",".join(m.clientURLs), str(m.isLearner).lower()] for m in r.members]
        if self.fmt == "simple":
            for row in rows:
                self.line(", ".join(row))
        elif self.fmt == "table":
            self.table(hdr, rows)
        elif self.fmt == "fields":
            self.hdr(r.header)
            for m in r.members:
                self.line(f'"ID" : {m.ID}')
                self.line(f'"Name" : {quote(m.name)}')
                for u in m.peerURLs:
                    self.line(f'"PeerURL" : {quote(u)}')
                for u in m.clientURLs:
                    self.line(f'"ClientURL" : {quote(u)}')
                self.line(f'"IsLearner" : {str(m.isLearner).lower()}')
                self.line()
        else:
            self._generic(r)

    def member_ops(self, r: Any) -> None:
        """member add/remove/update/promote in json/protobuf."""
        self._generic(r)

    def member_change(self, verb: str, member_id: int, r: Any) -> None:
        """member add/remove/update/promote: ``Member %16x <verb> cluster %16x``, or the
        response as json/protobuf; fields and table are unsupported (after the change)."""
        if self.fmt == "simple":
            self.line(f"Member {member_id & (2**64 - 1):16x} {verb} cluster {r.header.cluster_id:16x}")
        elif self.fmt == "json":
            self.json(r)
        elif self.fmt == "protobuf":
            self.pb(r)
        else:
            self.unsupported()

    def member_add_config(self, name: str, initial_cluster: str, peer_urls: str) -> None:
        """The environment for starting the member ``member add`` added (simple format)."""
        self.line()
        self.line(f"ETCD_NAME={quote(name)}")
        self.line(f"ETCD_INITIAL_CLUSTER={quote(initial_cluster)}")
        self.line(f"ETCD_INITIAL_ADVERTISE_PEER_URLS={quote(peer_urls)}")
        self.line('ETCD_INITIAL_CLUSTER_STATE="existing"')

    def move_leader(self, leader: int, target: int, r: rpc_pb2.MoveLeaderResponse) -> None:
        if self.fmt == "simple":
            self.line(f"Leadership transferred from {leader:x} to {target:x}")
        elif self.fmt == "json":
            self.json(r)
        elif self.fmt == "protobuf":
            self.pb(r)
        else:
            self.unsupported()

    def endpoint_status(self, sts: list[EpStatus]) -> None:
        hdr = ["Endpoint", "ID", "Version", "DB Size", "Is Leader", "Is Learner", "Raft Term",
               "Raft Index", "Raft Applied Index", "Errors"]
        rows = [[s.ep, f"{s.resp.header.member_id:x}", s.resp.version, human_bytes(s.resp.dbSize),
                 str(s.resp.leader == s.resp.header.member_id).lower(), str(s.resp.isLearner).lower(),
                 str(s.resp.raftTerm), str(s.resp.raftIndex), str(s.resp.raftAppliedIndex),
                 ", ".join(s.resp.errors)] for s in sts]
        if self.fmt == "simple":
            for row in rows:
                self.line(", ".join(row))
        elif self.fmt == "table":
            self.table(hdr, rows)
        elif self.fmt == "json":
            self.line("[" + ",".join(
                f'{{"Endpoint":{json_string(s.ep)},"Status":{json_value(s.resp)}}}' for s in sts) + "]")
        elif self.fmt == "fields":
            for s in sts:
                r = s.resp
                self.hdr(r.header)
                self.line(f'"Version" : {quote(r.version)}')
                self.line(f'"DBSize" : {r.dbSize}')
                self.line(f'"Leader" : {r.leader}')
                self.line(f'"IsLearner" : {str(r.isLearner).lower()}')
                self.line(f'"RaftIndex" : {r.raftIndex}')
                self.line(f'"RaftTerm" : {r.raftTerm}')
                self.line(f'"RaftAppliedIndex" : {r.raftAppliedIndex}')
                self.line(f'"Errors" : [{" ".join(r.errors)}]')
                self.line(f'"Endpoint" : {quote(s.ep)}')
                self.line()
        else:
            self.unsupported()

    def endpoint_hashkv(self, hs: list[EpHashKV]) -> None:
        rows = [[h.ep, str(h.resp.hash)] for h in hs]
        if self.fmt == "simple":
            for row in rows:
                self.line(", ".join(row))
        elif self.fmt == "table":
            self.table(["Endpoint", "Hash"], rows)
        elif self.fmt == "json":
            self.line("[" + ",".join(
                f'{{"Endpoint":{json_string(h.ep)},"HashKV":{json_value(h.resp)}}}' for h in hs) + "]")
        elif self.fmt == "fields":
            for h in hs:
                self.hdr(h.resp.header)
                self.line(f'"Endpoint" : {quote(h.ep)}')
                self.line(f'"Hash" : {h.resp.hash}')
                self.line()
        else:
            self.unsupported()

    def endpoint_health(self, hs: list[EpHealth]) -> None:
        if self.fmt == "simple":
            for h in hs:
                if not h.error:
                    self.err.write(f"{h.ep} is healthy: successfully committed proposal: took = {h.took}\n".encode())
                else:
                    self.err.write(f"{h.ep} is unhealthy: failed to commit proposal: {h.error}\n".encode())
        elif self.fmt == "table":
            self.table(["endpoint", "health", "took", "error"],
                       [[h.ep, str(h.health).lower(), h.took, h.error] for h in hs])
        elif self.fmt == "json":
            items = []
            for h in hs:
                s = f'{{"endpoint":{json_string(h.ep)},"health":{str(h.health).lower()},"took":{json_string(h.took)}'
                if h.error:
                    s += f',"error":{json_string(h.error)}'
                items.append(s + "}")
            self.line("[" + ",".join(items) + "]")
        elif self.fmt == "fields":
            for h in hs:
                self.line(f'"Endpoint" : {quote(h.ep)}')
                self.line(f'"Health" : {str(h.health).lower()}')
                self.line(f'"Took" : {h.took}')
                self.line(f'"Error" : {h.error}')
                self.line()
        else:
            self.unsupported()

    def alarm(self, r: rpc_pb2.AlarmResponse) -> None:
        if self.fmt == "simple":
            for a in r.alarms:
                self.line(f"memberID:{a.memberID} alarm:{_ALARM.get(a.alarm, a.alarm)} ")
        elif self.fmt == "fields":
            self.hdr(r.header)
            for a in r.alarms:
                self.line(f'"MemberID" : {a.memberID}')
                self.line(f'"AlarmType" : {_ALARM.get(a.alarm, a.alarm)}')
                self.line()
        else:
            self._generic(r)

    # -- auth: users and roles (etcdctl 3.4's printer_simple/fields/json/protobuf) ----

    def _auth_resp(self, r: Any, simple: str | bytes, fields: bool = True) -> None:
        """simple: ``simple``; fields: the header (where etcdctl has it); json/protobuf:
        the response as sent; table (and fields where etcdctl lacks it): refused."""
        if self.fmt == "simple":
            self.w(simple)
        elif self.fmt == "fields" and fields:
            self.hdr(r.header)
        elif self.fmt == "json":
            self.json(r)
        elif self.fmt == "protobuf":
            self.w(r.SerializeToString())  # printPB in 3.4.23 is fmt.Print: bytes as they are
        else:
            self.unsupported()

    def user_add(self, user: str, r: rpc_pb2.AuthUserAddResponse) -> None:
        self._auth_resp(r, f"User {user} created\n")

    def user_delete(self, user: str, r: rpc_pb2.AuthUserDeleteResponse) -> None:
        self._auth_resp(r, f"User {user} deleted\n")

    def user_get(self, user: str, r: rpc_pb2.AuthUserGetResponse) -> None:
        self._auth_resp(r, f"User: {user}\nRoles:" + "".join(f" {x}" for x in r.roles) + "\n", fields=False)

    def user_list(self, r: rpc_pb2.AuthUserListResponse) -> None:
        self._auth_resp(r, "".join(f"{x}\n" for x in r.users), fields=False)

    def user_change_password(self, r: rpc_pb2.AuthUserChangePasswordResponse) -> None:
        self._auth_resp(r, "Password updated\n")

    def user_grant_role(self, user: str, role: str, r: rpc_pb2.AuthUserGrantRoleResponse) -> None:
        self._auth_resp(r, f"Role {role} is granted to user {user}\n")

    def user_revoke_role(self, user: str, role: str, r: rpc_pb2.AuthUserRevokeRoleResponse) -> None:
        self._auth_resp(r, f"Role {role} is revoked from user {user}\n")

    def role_add(self, role: str, r: rpc_pb2.AuthRoleAddResponse) -> None:
        self._auth_resp(r, f"Role {role} created\n")

    def role_delete(self, role: str, r: rpc_pb2.AuthRoleDeleteResponse) -> None:
        self._auth_resp(r, f"Role {role} deleted\n")

    def role_grant_permission(self, role: str, r: rpc_pb2.AuthRoleGrantPermissionResponse) -> None:
        self._auth_resp(r, f"Role {role} updated\n")

    def role_revoke_permission(self, role: str, key: bytes, end: bytes,
                               r: rpc_pb2.AuthRoleRevokePermissionResponse) -> None:
        tail = b" is revoked from role " + role.encode("utf-8", "surrogateescape") + b"\n"
        if not end:
            text = b"Permission of key " + key + tail
        elif end != b"\x00":
            text = b"Permission of range [" + key + b", " + end + b")" + tail
        else:
            text = b"Permission of range [" + key + b", <open ended>" + tail
        self._auth_resp(r, text)

    def role_list(self, r: rpc_pb2.AuthRoleListResponse) -> None:
        if self.fmt == "fields":
            self.hdr(r.header)
            self.line('"Roles" :' + "".join(f" {quote(x)}" for x in r.roles))
            return
        self._auth_resp(r, "".join(f"{x}\n" for x in r.roles))

    def role_get(self, role: str, r: rpc_pb2.AuthRoleGetResponse) -> None:
        from meshkit.api.authpb import auth_pb2
        from meshkit.client.kv import prefix_end

        if self.fmt == "fields":
            self.hdr(r.header)
            for p in r.perm:
                try:
                    name = auth_pb2.Permission.Type.Name(p.permType)
                except ValueError:
                    name = str(p.permType)
                self.line(f'"PermType" :  {name}')
                self.line(f'"Key" : {quote(p.key)}')
                self.line(f'"RangeEnd" : {quote(p.range_end)}')
            return
        if self.fmt != "simple":
            self._auth_resp(r, b"")
            return

        def show(p: Any) -> None:
            if not p.range_end:
                self.line(b"\t" + p.key)
                return
            if p.range_end != b"\x00":
                self.w(b"\t[" + p.key + b", " + p.range_end + b")")
            else:
                self.w(b"\t[" + p.key + b", <open ended>")
            if prefix_end(p.key) == p.range_end:
                self.w(b" (prefix " + p.key + b")")
            self.line()

        read, write = auth_pb2.Permission.READ, auth_pb2.Permission.WRITE
        both = auth_pb2.Permission.READWRITE
        self.line(f"Role {role}")
        self.line("KV Read:")
        for p in r.perm:
            if p.permType in (read, both):
                show(p)
        self.line("KV Write:")
        for p in r.perm:
            if p.permType in (write, both):
                show(p)

    # -- table ------------------------------------------------------------------------

    def table(self, hdr: list[str], rows: list[list[str]]) -> None:
        """olekukonko/tablewriter as etcdctl 3.4 sets it up (cells right-aligned)."""
        heads = [h.upper() for h in hdr]
        widths = [len(h) for h in heads]
        for row in rows:
            for i, c in enumerate(row):
                widths[i] = max(widths[i], len(c))
        sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
        self.line(sep)
        cells = []
        for h, w in zip(heads, widths, strict=True):
            gap = w - len(h)
            left = gap // 2
            cells.append(" " + " " * left + h + " " * (gap - left) + " ")
        self.line("|" + "|".join(cells) + "|")
        self.line(sep)
        for row in rows:
            self.line("|" + "|".join(" " + c.rjust(w) + " " for c, w in zip(row, widths, strict=True)) + "|")
        self.line(sep)
