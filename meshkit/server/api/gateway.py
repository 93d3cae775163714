"""etcd 3.4's grpc-gateway: the v3 API as JSON over HTTP/1.1 (aiohttp).

etcd serves ``/v3/...`` (and the deprecated ``/v3beta/...``, rewritten to
``/v3/``) on its client URLs with grpc-gateway v1: each path is one gRPC
method, the POST body is the request message as proto3 JSON (base64 bytes,
64-bit integers as strings or numbers, original or lowerCamel field names,
unknown fields ignored) and the answer is the response message as JSON with
the original field names, 64-bit integers as strings and default values left
out. etcd's gateway is a gRPC client of its own server; meshkit's calls the
same servicers in process through :class:`GatewayCall`, a
``grpc.aio.ServicerContext`` carrying the request's metadata (the
``Authorization`` header becomes the ``authorization`` metadata etcd reads the
token from, ``Grpc-Metadata-<Name>`` headers become ``<name>``) and turning
``abort`` into the HTTP answer. Validation, auth, the error table and the
lock/election callers are therefore the gRPC ones by construction.

What etcd 3.4.23 answers, and this module copies:

* POST only: another method is 405 ``Method Not Allowed``, an unknown path
  under /v3/ is 404 ``Not Found`` (Go's ``http.Error`` text), OPTIONS is 200
  with no body, and CORS headers (``--cors`` is ``*``) are on every answer.
* Errors: the HTTP status grpc-gateway gives the gRPC code (FAILED_PRECONDITION
  412, OUT_OF_RANGE 400, UNKNOWN 500, ...) and ``{"error":m,"message":m,"code":c}``.
  A body that is not JSON, or does not fit the message, is INVALID_ARGUMENT
  with the text of Go's ``encoding/json`` (``unexpected EOF``, ``illegal base64
  data at input byte 0``, ...).
* A request larger than --max-request-bytes + 512 KiB is refused by gRPC
  itself: 429, ``grpc: received message larger than max (N vs. M)``; a smaller
  one still too large to propose gets ``etcdserver: request is too large``.
* Streams (watch, lease keep-alive, snapshot, election observe) answer one
  ``{"result":{...}}`` line per message. The body of watch and keep-alive is a
  sequence of JSON requests; when it ends the watches stay and the keep-alive
  stream ends. An error is a last ``{"error":{"grpc_code":c,"http_code":h,
  "message":m,"http_status":s}}`` chunk, with the error's HTTP status when no
  message went before it.
* A websocket upgrade on a gateway path (etcd's grpc-websocket-proxy): every
  message received is one JSON request, every answer line one text message.
* Over TLS, a verified client certificate with a common name is refused (400)
  while auth is enabled: etcd's gateway cannot pass the certificate on, so the
  user always comes from the token.

Not copied: the HTTP trailer (``Grpc-Trailer-Content-Type``) etcd adds to the
answer of a failed call, and Go's text for a few rare JSON syntax errors.
"""

from __future__ import annotations

import asyncio
import codecs
import inspect
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from aiohttp import WSMsgType, hdrs, web
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.v3electionpb import v3election_pb2 as epb
from meshkit.api.v3lockpb import v3lock_pb2 as lpb
from meshkit.server.api.auth import AuthService
from meshkit.server.api.election import ElectionService
from meshkit.server.api.http import NO_CORS
from meshkit.server.api.kv import KVService
from meshkit.server.api.lease import LeaseService
from meshkit.server.api.lock import LockService
from meshkit.server.api.maintenance import ClusterService, MaintenanceService
from meshkit.server.api.watch import GRPC_OVERHEAD_BYTES, WatchService
from meshkit.server.etcdserver.server import EtcdServer
from meshkit.server.h2grpc.context import Aborted, CallContext

log = logging.getLogger("meshkit.server.gateway")

PREFIXES = ("/v3/", "/v3beta/")
UNARY, SERVER_STREAM, BIDI = "unary", "server-stream", "bidi"

# etcd's accessController, with --cors at its default "*".
CORS = {
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE",
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "accept, content-type, authorization",
}
JSON_TYPE = "application/json"
# The response header metadata etcd's gRPC server sends, forwarded by the gateway.
GRPC_HEADER = {"Grpc-Metadata-Content-Type": "application/grpc"}
CN_REFUSED = "CommonName of client sending a request against gateway will be ignored and not used as expected"
# How often an open call checks that its HTTP client is still connected (aiohttp
# cancels handlers on disconnect only with handler_cancellation=True).
DISCONNECT_POLL_S = 0.5

_C = grpc.StatusCode
# grpc-gateway v1's runtime.HTTPStatusFromCode.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    _C.OK: 200, _C.CANCELLED: 408, _C.UNKNOWN: 500, _C.INVALID_ARGUMENT: 400,
    _C.DEADLINE_EXCEEDED: 504, _C.NOT_FOUND: 404, _C.ALREADY_EXISTS: 409,
    _C.PERMISSION_DENIED: 403, _C.UNAUTHENTICATED: 401, _C.RESOURCE_EXHAUSTED: 429,
    _C.FAILED_PRECONDITION: 412, _C.ABORTED: 409, _C.OUT_OF_RANGE: 400,
    _C.UNIMPLEMENTED: 501, _C.INTERNAL: 500, _C.UNAVAILABLE: 503, _C.DATA_LOSS: 500,
}
_STATUS_TEXT = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                408: "Request Timeout", 409: "Conflict", 412: "Precondition Failed",
                429: "Too Many Requests", 500: "Internal Server Error", 501: "Not Implemented",
                503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclass(frozen=True)
class Route:
    """One gateway path: the gRPC method it calls and how it streams."""

    path: str  # after the /v3/ prefix
    service: str
    method: str
    request: type[Message]
    response: type[Message]
    kind: str = UNARY


# What etcd 3.4 registers (rpc.proto's google.api.http options, v3lock, v3election).
ROUTES: tuple[Route, ...] = (
    Route("kv/range", "KV", "Range", pb.RangeRequest, pb.RangeResponse),
    Route("kv/put", "KV", "Put", pb.PutRequest, pb.PutResponse),
    Route("kv/deleterange", "KV", "DeleteRange", pb.DeleteRangeRequest, pb.DeleteRangeResponse),
    Route("kv/txn", "KV", "Txn", pb.TxnRequest, pb.TxnResponse),
    Route("kv/compaction", "KV", "Compact", pb.CompactionRequest, pb.CompactionResponse),
    Route("watch", "Watch", "Watch", pb.WatchRequest, pb.WatchResponse, BIDI),
    Route("lease/grant", "Lease", "LeaseGrant", pb.LeaseGrantRequest, pb.LeaseGrantResponse),
    Route("lease/revoke", "Lease", "LeaseRevoke", pb.LeaseRevokeRequest, pb.LeaseRevokeResponse),
    Route("kv/lease/revoke", "Lease", "LeaseRevoke", pb.LeaseRevokeRequest, pb.LeaseRevokeResponse),
    Route("lease/keepalive", "Lease", "LeaseKeepAlive", pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse, BIDI),
    Route("lease/timetolive", "Lease", "LeaseTimeToLive", pb.LeaseTimeToLiveRequest, pb.LeaseTimeToLiveResponse),
    Route("kv/lease/timetolive", "Lease", "LeaseTimeToLive", pb.LeaseTimeToLiveRequest, pb.LeaseTimeToLiveResponse),
    Route("lease/leases", "Lease", "LeaseLeases", pb.LeaseLeasesRequest, pb.LeaseLeasesResponse),
    Route("kv/lease/leases", "Lease", "LeaseLeases", pb.LeaseLeasesRequest, pb.LeaseLeasesResponse),
    Route("cluster/member/add", "Cluster", "MemberAdd", pb.MemberAddRequest, pb.MemberAddResponse),
    Route("cluster/member/remove", "Cluster", "MemberRemove", pb.MemberRemoveRequest, pb.MemberRemoveResponse),
    Route("cluster/member/update", "Cluster", "MemberUpdate", pb.MemberUpdateRequest, pb.MemberUpdateResponse),
    Route("cluster/member/list", "Cluster", "MemberList", pb.MemberListRequest, pb.MemberListResponse),
    Route("cluster/member/promote", "Cluster", "MemberPromote", pb.MemberPromoteRequest, pb.MemberPromoteResponse),
    Route("maintenance/alarm", "Maintenance", "Alarm", pb.AlarmRequest, pb.AlarmResponse),
    Route("maintenance/status", "Maintenance", "Status", pb.StatusRequest, pb.StatusResponse),
    Route("maintenance/defragment", "Maintenance", "Defragment", pb.DefragmentRequest, pb.DefragmentResponse),
    # rpc.proto binds HashKV to this path too; grpc-gateway serves the first
    # registered (Hash), as etcd 3.4 answers.
    Route("maintenance/hash", "Maintenance", "Hash", pb.HashRequest, pb.HashResponse),
    Route("maintenance/snapshot", "Maintenance", "Snapshot", pb.SnapshotRequest, pb.SnapshotResponse, SERVER_STREAM),
    Route("maintenance/transfer-leadership", "Maintenance", "MoveLeader", pb.MoveLeaderRequest, pb.MoveLeaderResponse),
    Route("auth/enable", "Auth", "AuthEnable", pb.AuthEnableRequest, pb.AuthEnableResponse),
    Route("auth/disable", "Auth", "AuthDisable", pb.AuthDisableRequest, pb.AuthDisableResponse),
    Route("auth/authenticate", "Auth", "Authenticate", pb.AuthenticateRequest, pb.AuthenticateResponse),
    Route("auth/user/add", "Auth", "UserAdd", pb.AuthUserAddRequest, pb.AuthUserAddResponse),
    Route("auth/user/get", "Auth", "UserGet", pb.AuthUserGetRequest, pb.AuthUserGetResponse),
    Route("auth/user/list", "Auth", "UserList", pb.AuthUserListRequest, pb.AuthUserListResponse),
    Route("auth/user/delete", "Auth", "UserDelete", pb.AuthUserDeleteRequest, pb.AuthUserDeleteResponse),
    Route("auth/user/changepw", "Auth", "UserChangePassword", pb.AuthUserChangePasswordRequest,
          pb.AuthUserChangePasswordResponse),
    Route("auth/user/grant", "Auth", "UserGrantRole", pb.AuthUserGrantRoleRequest, pb.AuthUserGrantRoleResponse),
    Route("auth/user/revoke", "Auth", "UserRevokeRole", pb.AuthUserRevokeRoleRequest, pb.AuthUserRevokeRoleResponse),
    Route("auth/role/add", "Auth", "RoleAdd", pb.AuthRoleAddRequest, pb.AuthRoleAddResponse),
    Route("auth/role/get", "Auth", "RoleGet", pb.AuthRoleGetRequest, pb.AuthRoleGetResponse),
    Route("auth/role/list", "Auth", "RoleList", pb.AuthRoleListRequest, pb.AuthRoleListResponse),
    Route("auth/role/delete", "Auth", "RoleDelete", pb.AuthRoleDeleteRequest, pb.AuthRoleDeleteResponse),
    Route("auth/role/grant", "Auth", "RoleGrantPermission", pb.AuthRoleGrantPermissionRequest,
          pb.AuthRoleGrantPermissionResponse),
    Route("auth/role/revoke", "Auth", "RoleRevokePermission", pb.AuthRoleRevokePermissionRequest,
          pb.AuthRoleRevokePermissionResponse),
    Route("lock/lock", "Lock", "Lock", lpb.LockRequest, lpb.LockResponse),
    Route("lock/unlock", "Lock", "Unlock", lpb.UnlockRequest, lpb.UnlockResponse),
    Route("election/campaign", "Election", "Campaign", epb.CampaignRequest, epb.CampaignResponse),
    Route("election/proclaim", "Election", "Proclaim", epb.ProclaimRequest, epb.ProclaimResponse),
    Route("election/leader", "Election", "Leader", epb.LeaderRequest, epb.LeaderResponse),
    Route("election/observe", "Election", "Observe", epb.LeaderRequest, epb.LeaderResponse, SERVER_STREAM),
    Route("election/resign", "Election", "Resign", epb.ResignRequest, epb.ResignResponse),
)


def add_gateway_routes(app: web.Application, s: EtcdServer) -> None:
    """Serve etcd's gateway paths under /v3/ and /v3beta/ on ``app``.

    A method meshkit's servicers do not implement yet (answered UNIMPLEMENTED
    over gRPC) gets no path, so it answers 404 like any unknown path.
    """
    gw = Gateway(s)
    for route in ROUTES:
        if not gw.serves(route):
            continue
        handler = _bind(gw.handle, route)
        for prefix in PREFIXES:
            app.router.add_route("*", prefix + route.path, handler)
    for prefix in PREFIXES:
        app.router.add_route("*", prefix + "{tail:.*}", gw.not_found)


def _bind(handle: Callable[[Route, web.Request], Awaitable[web.StreamResponse]],
          route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await handle(route, request)
    return handler


# ---- the in-process gRPC call ----------------------------------------------------


class GatewayCall(CallContext):
    """One gateway request as a servicer sees it: a call of etcd's gateway client.

    The metadata is what grpc-gateway forwards from the HTTP headers. No client
    certificate reaches the servicers (``auth_context`` is empty), as none
    reaches etcd's through its gateway.
    """

    def __init__(self, metadata: Iterable[tuple[str, str]], peer: str, response_type: type[Message], *,
                 emit: Callable[[Message], Awaitable[None]] | None = None,
                 requests: AsyncIterator[Message] | None = None) -> None:
        super().__init__(requests)
        self._metadata = tuple(metadata)
        self._peer = peer
        self._response_type = response_type
        self._emit = emit
        self._done = False
        self._cancelled = False

    async def write(self, message: Any) -> None:
        if self._emit is None:
            raise grpc.aio.UsageError("write() is only for RPCs with a response stream")
        if isinstance(message, bytes):  # a pre-encoded response (the Watch servicer's)
            message = self._response_type.FromString(message)
        await self._emit(message)

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        pass  # (etcd's servicers send none; the gateway's answer headers are fixed)

    def invocation_metadata(self) -> Any:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def peer_identities(self) -> Iterable[bytes] | None:
        return None

    def peer_identity_key(self) -> str | None:
        return None

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        return {}

    def time_remaining(self) -> float:
        return math.inf  # the gateway sets no deadline

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._done

    def finish(self, cancelled: bool) -> None:
        if self._done:
            return
        self._done = True
        self._cancelled = cancelled
        self.run_callbacks()


# ---- JSON in and out, as grpc-gateway v1's JSONPb (golang/protobuf jsonpb) --------


class BadRequest(Exception):
    """A body the gateway cannot turn into the request message (Go's error text)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TooLarge(Exception):
    """A request larger than the gRPC server receives."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"grpc: received message larger than max ({size} vs. {limit})")
        self.message = str(self)


class _Float(str):
    """A JSON number with a fraction or exponent, kept as written (Go quotes it in errors)."""


class _Constant(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _reject_constant(name: str) -> Any:
    raise _Constant(name)  # NaN, Infinity, -Infinity are not JSON


_DECODER = json.JSONDecoder(parse_float=_Float, parse_constant=_reject_constant)
_GO_SPACE = " \t\r\n"
_EOF = object()


def _go_quote_char(c: str) -> str:
    """Go's encoding/json quoteChar."""
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    specials = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                "\v": "\\v", "\\": "\\\\"}
    if c in specials:
        return f"'{specials[c]}'"
    o = ord(c)
    if c.isprintable():
        return f"'{c}'"
    if o < 0x80:
        return f"'\\x{o:02x}'"
    return f"'\\u{o:04x}'" if o < 0x10000 else f"'\\U{o:08x}'"


def _innermost(text: str, pos: int) -> str:
    """The innermost open bracket at ``pos`` ('{', '[' or '')."""
    stack: list[str] = []
    in_str = esc = False
    for c in text[:pos]:
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "{[":
            stack.append(c)
        elif c in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _go_syntax_error(e: json.JSONDecodeError, text: str, end: str = "unexpected EOF") -> str:
    """Go's json.Decoder text for the syntax error Python found."""
    pos, msg = e.pos, e.msg
    if msg.startswith("Unterminated string") or pos >= len(text):
        return end
    c = text[pos]
    q = _go_quote_char(c)
    if msg.startswith("Expecting value"):
        if c in "tfn":
            lit = {"t": "true", "f": "false", "n": "null"}[c]
            for i, want in enumerate(lit):
                if pos + i >= len(text):
                    return end
                if text[pos + i] != want:
                    return (f"invalid character {_go_quote_char(text[pos + i])} in literal {lit} "
                            f"(expecting {_go_quote_char(want)})")
        if c == "-":
            if pos + 1 >= len(text):
                return end
            return f"invalid character {_go_quote_char(text[pos + 1])} in numeric literal"
        return f"invalid character {q} looking for beginning of value"
    if msg.startswith("Expecting property name"):
        return f"invalid character {q} looking for beginning of object key string"
    if msg.startswith("Expecting ':'"):
        return f"invalid character {q} after object key"
    if msg.startswith("Expecting ','"):
        if c in ".eE" and pos > 0 and text[pos - 1].isdigit():
            nxt = pos + 1
            if c in "eE" and nxt < len(text) and text[nxt] in "+-":
                nxt += 1
            if nxt >= len(text):
                return end
            where = "after decimal point in" if c == "." else "in exponent of"
            return f"invalid character {_go_quote_char(text[nxt])} {where} numeric literal"
        where = "object key:value pair" if _innermost(text, pos) == "{" else "array element"
        return f"invalid character {q} after {where}"
    if msg.startswith("Extra data"):
        return f"invalid character {q} after top-level value"
    if msg.startswith("Invalid control character"):
        return f"invalid character {q} in string literal"
    if msg.startswith("Invalid \\uXXXX"):
        return f"invalid character {q} in \\u hexadecimal character escape"
    if msg.startswith("Invalid \\escape"):
        bad = text[pos + 1] if c == "\\" and pos + 1 < len(text) else c
        return f"invalid character {_go_quote_char(bad)} in string escape code"
    return msg


def _constant_error(name: str) -> str:
    if name.startswith("-"):
        return f"invalid character {_go_quote_char(name[1])} in numeric literal"
    return f"invalid character {_go_quote_char(name[0])} looking for beginning of value"


def _go_unmarshal(text: str) -> Any:
    """Go's json.Unmarshal of a whole document (jsonpb's quoted integers)."""
    try:
        stripped = text.strip(_GO_SPACE)
        value, end = _DECODER.raw_decode(stripped)
    except json.JSONDecodeError as e:
        raise BadRequest(_go_syntax_error(e, stripped, "unexpected end of JSON input")) from None
    except _Constant as e:
        raise BadRequest(_constant_error(e.name)) from None
    if end < len(stripped):
        raise BadRequest(f"invalid character {_go_quote_char(stripped[end])} after top-level value")
    return value


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, _Float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


def _cannot(v: Any, go_type: str) -> BadRequest:
    return BadRequest(f"json: cannot unmarshal {_kind(v)} into Go value of type {go_type}")


_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_NL = (0x0A, 0x0D)


def _b64_error_at(src: bytes) -> int | None:
    """Where Go's base64.StdEncoding.Decode fails on ``src`` (None: valid)."""
    si, n = 0, len(src)
    while True:
        j = 0
        while j < 4:
            if si == n:
                return None if j == 0 else si - j
            c = src[si]
            si += 1
            if c in _B64:
                j += 1
                continue
            if c in _NL:
                continue
            if c != 0x3D or j < 2:  # not padding, or padding too early
                return si - 1
            if j == 2:  # "==" expected, the first "=" consumed
                while si < n and src[si] in _NL:
                    si += 1
                if si == n:
                    return n
                if src[si] != 0x3D:
                    return si - 1
                si += 1
            while si < n and src[si] in _NL:
                si += 1
            return si if si < n else None


_INT_RANGES: dict[int, tuple[int, int, str]] = {
    FieldDescriptor.TYPE_INT64: (-(1 << 63), (1 << 63) - 1, "int64"),
    FieldDescriptor.TYPE_SINT64: (-(1 << 63), (1 << 63) - 1, "int64"),
    FieldDescriptor.TYPE_SFIXED64: (-(1 << 63), (1 << 63) - 1, "int64"),
    FieldDescriptor.TYPE_UINT64: (0, (1 << 64) - 1, "uint64"),
    FieldDescriptor.TYPE_FIXED64: (0, (1 << 64) - 1, "uint64"),
    FieldDescriptor.TYPE_INT32: (-(1 << 31), (1 << 31) - 1, "int32"),
    FieldDescriptor.TYPE_SINT32: (-(1 << 31), (1 << 31) - 1, "int32"),
    FieldDescriptor.TYPE_SFIXED32: (-(1 << 31), (1 << 31) - 1, "int32"),
    FieldDescriptor.TYPE_UINT32: (0, (1 << 32) - 1, "uint32"),
    FieldDescriptor.TYPE_FIXED32: (0, (1 << 32) - 1, "uint32"),
}


def _go_enum_type(e: EnumDescriptor) -> str:
    """The Go type etcd's generated code gives the enum (``etcdserverpb.RangeRequest_SortOrder``)."""
    names = [e.name]
    parent = e.containing_type
    while parent is not None:
        names.append(parent.name)
        parent = parent.containing_type
    return f"{e.file.package}.{'_'.join(reversed(names))}"


def _go_int(v: Any, lo: int, hi: int, go_type: str) -> int:
    if isinstance(v, _Float) or (isinstance(v, int) and not isinstance(v, bool) and not lo <= v <= hi):
        raise BadRequest(f"json: cannot unmarshal number {v} into Go value of type {go_type}")
    if isinstance(v, bool) or not isinstance(v, int):
        raise _cannot(v, go_type)
    return v


def _conform_single(f: FieldDescriptor, v: Any) -> Any:
    t = f.type
    if t == FieldDescriptor.TYPE_MESSAGE:
        if v is None:
            # (etcd's gateway drops the connection on a null list element)
            raise BadRequest(f"null element in repeated field {f.name}")
        assert f.message_type is not None
        return conform(v, f.message_type)
    if t == FieldDescriptor.TYPE_BYTES:
        if not isinstance(v, str) or isinstance(v, _Float):
            raise _cannot(v, "[]uint8")
        at = _b64_error_at(v.encode())
        if at is not None:
            raise BadRequest(f"illegal base64 data at input byte {at}")
        return v.replace("\n", "").replace("\r", "")
    if t == FieldDescriptor.TYPE_STRING:
        if not isinstance(v, str) or isinstance(v, _Float):
            raise _cannot(v, "string")
        return v
    if t == FieldDescriptor.TYPE_BOOL:
        if not isinstance(v, bool):
            raise _cannot(v, "bool")
        return v
    if t == FieldDescriptor.TYPE_ENUM:
        enum = f.enum_type
        assert enum is not None
        if isinstance(v, str) and not isinstance(v, _Float):
            if v not in enum.values_by_name:
                raise BadRequest(f"unknown value {json.dumps(v, ensure_ascii=False)} for enum {_go_enum_type(enum)}")
            return v
        return _go_int(v, -(1 << 31), (1 << 31) - 1, _go_enum_type(enum))
    lo, hi, go_type = _INT_RANGES[t]
    if isinstance(v, str) and not isinstance(v, _Float):
        v = _go_unmarshal(v)  # jsonpb accepts integers in quotes
    return _go_int(v, lo, hi, go_type)


def conform(value: Any, desc: Descriptor) -> dict[str, Any]:
    """Check a decoded JSON object against a message the way jsonpb reads it, and
    return what json_format.ParseDict should read: the known fields under their
    original names (a lowerCamel name wins over its original twin), no nulls."""
    if not isinstance(value, dict):
        raise _cannot(value, "map[string]json.RawMessage")
    out: dict[str, Any] = {}
    for f in desc.fields:
        if f.json_name in value:  # both given: jsonpb favours the lowerCamel name
            v = value[f.json_name]
        elif f.name in value:
            v = value[f.name]
        else:
            continue
        if v is None:
            continue
        if f.is_repeated:
            if not isinstance(v, list):
                raise _cannot(v, "[]json.RawMessage")
            out[f.name] = [_conform_single(f, x) for x in v]
        else:
            out[f.name] = _conform_single(f, v)
    # Several members of one oneof: jsonpb sets each in turn and the last set
    # stays (in Go's map order); here the one written last in the object.
    keys = list(value)
    for oneof in desc.oneofs:
        given = [f for f in oneof.fields if f.name in out]
        if len(given) > 1:
            def at(f: FieldDescriptor) -> int:
                return max(keys.index(k) for k in (f.name, f.json_name) if k in value)
            keep = max(given, key=at)
            for f in given:
                if f is not keep:
                    del out[f.name]
    return out


def decode_message(value: Any, cls: type[Message]) -> Message:
    """The request message of a decoded JSON body value (``_EOF``/null: empty)."""
    msg = cls()
    if value is _EOF or value is None:
        return msg
    try:
        desc: Descriptor = cls.DESCRIPTOR  # type: ignore[assignment]  # (the upb class is the same)
        json_format.ParseDict(conform(value, desc), msg, ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise BadRequest(str(e)) from None
    return msg


def to_json(obj: Any) -> bytes:
    """Compact JSON as Go's encoder writes it (UTF-8, HTML characters escaped)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                 ("\u2029", "\\u2029")):
        text = text.replace(a, b)
    return text.encode()


def message_dict(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


class JSONValues:
    """Successive JSON values of a request body, as Go's json.Decoder reads them."""

    def __init__(self, chunks: AsyncIterator[bytes], cap: int, limit: int) -> None:
        self._chunks = chunks
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._text = ""
        self._eof = False
        self._cap = cap
        self._limit = limit

    async def next(self) -> Any:
        """The next value, ``_EOF`` at the end; raises BadRequest or TooLarge."""
        while True:
            text = self._text = self._text.lstrip(_GO_SPACE)
            if text:
                try:
                    value, end = _DECODER.raw_decode(text)
                except json.JSONDecodeError as e:
                    # An error before a line break is final; one at the end of
                    # what arrived so far may be a value still arriving.
                    if self._eof or "\n" in text[e.pos:]:
                        raise BadRequest(_go_syntax_error(e, text)) from None
                except _Constant as e:
                    raise BadRequest(_constant_error(e.name)) from None
                else:
                    self._text = text[end:]
                    return value
            elif self._eof:
                return _EOF
            await self._more()

    async def _more(self) -> None:
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self._eof = True
            self._text += self._utf8.decode(b"", final=True)
            return
        if len(self._text) + len(chunk) > self._cap:
            raise TooLarge(len(self._text) + len(chunk), self._limit)
        self._text += self._utf8.decode(chunk)


# ---- answering: plain HTTP or a websocket ----------------------------------------


class Sink(Protocol):
    async def unary(self, status: int, body: bytes, ok: bool) -> None: ...
    async def line(self, body: bytes) -> None: ...
    async def stream_error(self, status: int, body: bytes) -> None: ...
    async def finish(self) -> None: ...


def _error_body(code: grpc.StatusCode, message: str) -> bytes:
    return to_json({"error": message, "message": message, "code": code.value[0]})


def _stream_error_body(code: grpc.StatusCode, message: str) -> bytes:
    http = HTTP_STATUS.get(code, 500)
    return to_json({"error": {"grpc_code": code.value[0], "http_code": http, "message": message,
                              "http_status": _STATUS_TEXT.get(http, "")}})


def go_http_error(status: int, text: str, *, cors: bool = True) -> web.Response:
    """Go's http.Error: plain text, a trailing newline, nosniff."""
    headers = {**(CORS if cors else {}), "X-Content-Type-Options": "nosniff"}
    resp = web.Response(status=status, text=text + "\n", content_type="text/plain", charset="utf-8",
                        headers=headers)
    if not cors:
        resp[NO_CORS] = True  # etcd refuses before its access controller adds CORS
    return resp


class HttpSink:
    """The HTTP/1.1 answer; a stream's headers go out with its first message."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.response: web.StreamResponse | None = None

    async def unary(self, status: int, body: bytes, ok: bool) -> None:
        headers = {**CORS, hdrs.CONTENT_TYPE: JSON_TYPE, **(GRPC_HEADER if ok else {})}
        self.response = web.Response(status=status, body=body, headers=headers)

    async def _start(self, status: int, grpc_header: bool) -> web.StreamResponse:
        resp = web.StreamResponse(status=status, headers={
            **CORS, hdrs.CONTENT_TYPE: JSON_TYPE, **(GRPC_HEADER if grpc_header else {})})
        resp.enable_chunked_encoding()
        await resp.prepare(self._request)
        self.response = resp
        return resp

    async def line(self, body: bytes) -> None:
        resp = self.response or await self._start(200, True)
        await resp.write(body + b"\n")

    async def stream_error(self, status: int, body: bytes) -> None:
        resp = self.response or await self._start(status, False)
        await resp.write(body)

    async def finish(self) -> None:
        resp = self.response or await self._start(200, False)
        await resp.write_eof()


class WebSocketSink:
    """etcd's grpc-websocket-proxy: each line of the HTTP answer is one text message."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws

    async def unary(self, status: int, body: bytes, ok: bool) -> None:
        await self._ws.send_str(body.decode())

    async def line(self, body: bytes) -> None:
        await self._ws.send_str(body.decode())

    async def stream_error(self, status: int, body: bytes) -> None:
        await self._ws.send_str(body.decode())

    async def finish(self) -> None:
        pass  # the handler closes the socket


# ---- the gateway -----------------------------------------------------------------


def _metadata(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """grpc-gateway's AnnotateContext: ``Authorization`` passes as ``authorization``,
    ``Grpc-Metadata-<Name>`` as ``<name>``."""
    md: list[tuple[str, str]] = []
    for key, value in headers.items():
        k = key.lower()
        if k == "authorization":
            md.append(("authorization", value))
        elif k.startswith("grpc-metadata-") and len(k) > len("grpc-metadata-"):
            md.append((k[len("grpc-metadata-"):], value))
    return md


def _ws_metadata(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """What etcd's websocket proxy passes on: only a ``Sec-WebSocket-Protocol``,
    turned into ``Authorization: Bearer <token>``."""
    proto = headers.get("Sec-WebSocket-Protocol", "")
    if not proto:
        return []
    _, sep, token = proto.partition("Bearer,")
    return [("authorization", f"Bearer {token.strip(' ')}" if sep else "")]


def _is_websocket(request: web.Request) -> bool:
    conn = {t.strip().lower() for t in request.headers.get(hdrs.CONNECTION, "").split(",")}
    up = {t.strip().lower() for t in request.headers.get(hdrs.UPGRADE, "").split(",")}
    return "upgrade" in conn and "websocket" in up


def _peer(request: web.Request) -> str:
    transport = request.transport
    addr = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"ipv6:[{addr[0]}]:{addr[1]}" if ":" in str(addr[0]) else f"ipv4:{addr[0]}:{addr[1]}"
    return "unknown"


def _cert_common_name(cert: Any) -> str:
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and value:
                return str(value)
    return ""


async def _until_disconnected(request: web.Request) -> None:
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(DISCONNECT_POLL_S)


async def _body_chunks(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_any():
        yield chunk


class Gateway:
    """The servicers one member's gateway calls, and the request handling."""

    def __init__(self, s: EtcdServer) -> None:
        self.s = s
        self.services: dict[str, Any] = {
            "KV": KVService(s), "Watch": WatchService(s), "Lease": LeaseService(s),
            "Cluster": ClusterService(s), "Maintenance": MaintenanceService(s), "Auth": AuthService(s),
            "Lock": LockService(s), "Election": ElectionService(s),
        }
        # etcd's gRPC server receives up to max-request-bytes + 512 KiB.
        self.limit = s.settings.max_request_bytes + GRPC_OVERHEAD_BYTES
        # A JSON body may be larger than its message (base64 is 4/3, and
        # spacing): read up to this much before answering "too large".
        self.body_cap = 4 * self.limit + (1 << 20)

    def serves(self, route: Route) -> bool:
        """Whether the servicer implements the method (the generated base class
        answers UNIMPLEMENTED)."""
        fn = getattr(type(self.services[route.service]), route.method, None)
        return fn is not None and not fn.__module__.endswith("_pb2_grpc")

    # -- aiohttp handlers

    def _precheck(self, request: web.Request) -> web.StreamResponse | None:
        """etcd's accessController, in its order: the client-certificate rule,
        then OPTIONS answered by itself."""
        transport = request.transport
        if self.s.auth.enabled and transport is not None and transport.get_extra_info("sslcontext") is not None:
            if _cert_common_name(transport.get_extra_info("peercert")):
                return go_http_error(400, CN_REFUSED, cors=False)
        if request.method == hdrs.METH_OPTIONS:
            return web.Response(headers=CORS)
        return None

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        early = self._precheck(request)
        if early is not None:
            return early
        if _is_websocket(request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.send_str("Not Found")
            await ws.close()
            return ws
        return go_http_error(404, "Not Found")

    async def handle(self, route: Route, request: web.Request) -> web.StreamResponse:
        early = self._precheck(request)
        if early is not None:
            return early
        if _is_websocket(request):
            return await self._websocket(route, request)
        if request.method != hdrs.METH_POST:
            return go_http_error(405, "Method Not Allowed")
        sink = HttpSink(request)
        body = JSONValues(_body_chunks(request), self.body_cap, self.limit)
        call = asyncio.ensure_future(self.call(route, body, _metadata(request.headers), _peer(request), sink))
        watcher = asyncio.ensure_future(_until_disconnected(request))
        try:
            await asyncio.wait((call, watcher), return_when=asyncio.FIRST_COMPLETED)
            if not call.done():
                # The client went away: etcd's gateway cancels the gRPC call
                # (a waiting Lock deletes its key before it ends).
                call.cancel()
                await asyncio.wait((call,))
        finally:
            watcher.cancel()
            call.cancel()
        if not call.cancelled():
            call.result()  # (an error of the gateway itself)
        if sink.response is None:  # canceled before answering: nobody reads this
            await sink.unary(408, _error_body(_C.CANCELLED, "context canceled"), False)
        assert sink.response is not None
        return sink.response

    async def _websocket(self, route: Route, request: web.Request) -> web.StreamResponse:
        proto = request.headers.get("Sec-WebSocket-Protocol", "")
        ws = web.WebSocketResponse(protocols=("Bearer",) if proto.startswith("Bearer") else (),
                                   max_msg_size=self.body_cap)
        await ws.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def chunks() -> AsyncIterator[bytes]:
            while (chunk := await queue.get()) is not None:
                yield chunk

        body = JSONValues(chunks(), self.body_cap, self.limit)
        call = asyncio.ensure_future(self.call(route, body, _ws_metadata(request.headers), _peer(request),
                                               WebSocketSink(ws)))

        async def read() -> None:
            # Every message is one line of the request body; when the client
            # closes, etcd's proxy cancels the call.
            try:
                async for msg in ws:
                    if msg.type == WSMsgType.TEXT:
                        queue.put_nowait(msg.data.encode() + b"\n")
                    elif msg.type == WSMsgType.BINARY:
                        queue.put_nowait(msg.data + b"\n")
                    else:
                        break
            finally:
                queue.put_nowait(None)
                call.cancel()

        reader = asyncio.ensure_future(read())
        try:
            await asyncio.wait((call,))
        finally:
            call.cancel()
            await ws.close()  # ends the reader's receive
            await asyncio.wait((reader,))
        if not call.cancelled():
            call.result()  # (an error of the gateway itself)
        return ws

    # -- one call

    async def call(self, route: Route, body: JSONValues, metadata: list[tuple[str, str]], peer: str,
                   sink: Sink) -> None:
        method = getattr(self.services[route.service], route.method)
        try:
            if route.kind == BIDI:
                await self._bidi(route, method, body, metadata, peer, sink)
            else:
                await self._single_request(route, method, body, metadata, peer, sink)
        except ConnectionError:
            pass  # the client went away while we answered

    async def _single_request(self, route: Route, method: Any, body: JSONValues,
                              metadata: list[tuple[str, str]], peer: str, sink: Sink) -> None:
        try:
            value = await body.next()
            req = decode_message(value, route.request)
            size = req.ByteSize()
            if size > self.limit:
                raise TooLarge(size, self.limit)
        except BadRequest as e:
            await sink.unary(400, _error_body(_C.INVALID_ARGUMENT, e.message), False)
            return
        except TooLarge as e:
            await sink.unary(429, _error_body(_C.RESOURCE_EXHAUSTED, e.message), False)
            return
        if route.kind == UNARY:
            ctx = GatewayCall(metadata, peer, route.response)
            try:
                resp = await method(req, ctx)
            except Aborted as e:
                await sink.unary(HTTP_STATUS.get(e.code, 500), _error_body(e.code, e.details), False)
                return
            except asyncio.CancelledError:
                ctx.finish(cancelled=True)
                raise
            except Exception as e:
                # grpc.aio answers an exception escaping a servicer with UNKNOWN.
                log.exception("gateway call %s.%s failed", route.service, route.method)
                await sink.unary(500, _error_body(_C.UNKNOWN, f"Unexpected {type(e)}: {e}"), False)
                return
            finally:
                ctx.finish(cancelled=False)
            if ctx.code() != _C.OK:
                await sink.unary(HTTP_STATUS.get(ctx.code(), 500), _error_body(ctx.code(), ctx.details()), False)
                return
            await sink.unary(200, to_json(message_dict(resp)), True)
            return
        await self._stream(route, lambda ctx: method(req, ctx), metadata, peer, sink)

    async def _bidi(self, route: Route, method: Any, body: JSONValues, metadata: list[tuple[str, str]],
                    peer: str, sink: Sink) -> None:
        # etcd's gateway sends the first request before anything is answered;
        # failing to read it is a plain error (not a gRPC status: UNKNOWN).
        try:
            first = await body.next()
            first_req = None if first is _EOF else decode_message(first, route.request)
        except BadRequest as e:
            await sink.unary(500, _error_body(_C.UNKNOWN, e.message), False)
            return
        except TooLarge as e:
            await sink.unary(429, _error_body(_C.RESOURCE_EXHAUSTED, e.message), False)
            return
        if first_req is not None and first_req.ByteSize() > self.limit:
            msg = str(TooLarge(first_req.ByteSize(), self.limit))
            await sink.unary(429, _error_body(_C.RESOURCE_EXHAUSTED, msg), False)
            return
        failed: asyncio.Future[Aborted] = asyncio.get_running_loop().create_future()

        async def requests() -> AsyncIterator[Message]:
            if first_req is None:
                return
            yield first_req
            # Later requests: a bad one ends the request side (the gateway
            # stops sending); one the server cannot receive fails the call.
            while True:
                try:
                    value = await body.next()
                    if value is _EOF:
                        return
                    req = decode_message(value, route.request)
                    if req.ByteSize() > self.limit:
                        raise TooLarge(req.ByteSize(), self.limit)
                except BadRequest:
                    return
                except TooLarge as e:
                    if not failed.done():
                        failed.set_result(Aborted(_C.RESOURCE_EXHAUSTED, e.message))
                    return
                yield req

        stream = requests()
        await self._stream(route, lambda ctx: method(stream, ctx), metadata, peer, sink,
                           requests=stream, requests_failed=failed)

    async def _stream(self, route: Route, start: Callable[[GatewayCall], Any], metadata: list[tuple[str, str]],
                      peer: str, sink: Sink, requests: AsyncIterator[Message] | None = None,
                      requests_failed: asyncio.Future[Aborted] | None = None) -> None:
        async def emit(msg: Any) -> None:
            await sink.line(b'{"result":' + to_json(message_dict(msg)) + b"}")

        ctx = GatewayCall(metadata, peer, route.response, emit=emit, requests=requests)

        async def serve() -> None:
            result = start(ctx)
            if inspect.isasyncgen(result):
                async for msg in result:
                    await emit(msg)
            else:
                await result

        work = asyncio.ensure_future(serve())
        waits: list[asyncio.Future[Any]] = [work]
        if requests_failed is not None:
            waits.append(requests_failed)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            ctx.finish(cancelled=True)
            raise
        error: tuple[grpc.StatusCode, str] | None = None
        if not work.done():  # a request the server cannot receive
            work.cancel()
            await asyncio.wait((work,))
            if not work.cancelled():
                work.exception()  # ended some other way meanwhile: the request error is the answer
            assert requests_failed is not None
            aborted = requests_failed.result()
            error = (aborted.code, aborted.details)
        else:
            try:
                work.result()
            except Aborted as e:
                error = (e.code, e.details)
            except ConnectionError:
                ctx.finish(cancelled=True)
                raise
            except Exception as e:
                log.exception("gateway stream %s.%s failed", route.service, route.method)
                error = (_C.UNKNOWN, f"Unexpected {type(e)}: {e}")
            if error is None and ctx.code() != _C.OK:
                error = (ctx.code(), ctx.details())
        ctx.finish(cancelled=False)
        if error is not None:
            code, message = error
            await sink.stream_error(HTTP_STATUS.get(code, 500), _stream_error_body(code, message))
        await sink.finish()


__all__ = ["PREFIXES", "ROUTES", "Gateway", "GatewayCall", "Route", "add_gateway_routes"]
