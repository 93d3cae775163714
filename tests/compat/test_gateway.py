"""etcd's grpc-gateway (the v3 JSON API over HTTP/1.1): the same HTTP calls against
the real etcd's client port and against meshkit's gateway, compared.

Compared: the HTTP status, the content type, the JSON body (revisions, values,
errors with their gRPC code and text) and, for streams, every line in order.
Normalised: cluster/member ids, the raft term, auth tokens, and what depends on
the implementation rather than the API (Status sizes and indexes, member URLs).

meshkit's side is :func:`meshkit_gateway`: an in-process member plus the
gateway app (``make_client_app(s, [add_gateway_routes])``) on its own aiohttp
site. Once ``meshkit server`` serves the gateway on its client port, that
function's body becomes one ``start_meshkit`` call (see its docstring).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from meshkit.server.api.gateway import add_gateway_routes
from meshkit.server.api.http import make_client_app
from meshkit.server.embed import EmbeddedServer
from meshkit.server.tls import TLSInfo
from tests.compat.etcdctl import etcdctl
from tests.server.conftest import wait_ready
from tests.server.tls.certs import make_certs
from tests.support.procs import (
    ETCD,
    etcd_flags,
    free_ports,
    require_reference_binaries,
    start_etcd,
    wait_port,
)

pytestmark = pytest.mark.etcd

TIMEOUT = aiohttp.ClientTimeout(total=20)


@dataclass(frozen=True)
class Gw:
    """A server under test: its gateway base URL and its gRPC endpoint (etcdctl)."""

    url: str
    grpc: str


@contextlib.asynccontextmanager
async def meshkit_gateway(tmp: Path, **settings: Any) -> AsyncIterator[Gw]:
    """meshkit's gateway on the client port of an in-process member (gRPC and HTTP
    share the port, as etcd's cmux)."""
    async with EmbeddedServer.for_test(tmp / "meshkit-data", 0, **settings) as srv:
        yield Gw(f"http://{srv.endpoint}", srv.endpoint)


@contextlib.asynccontextmanager
async def etcd_gateway(tmp: Path, *flags: str) -> AsyncIterator[Gw]:
    """The real etcd 3.4: its gateway is on its client port."""
    require_reference_binaries()
    sp = start_etcd(tmp, *flags)
    try:
        await wait_ready(sp.endpoint)
        yield Gw(sp.url, sp.endpoint)
    finally:
        sp.stop()


@contextlib.asynccontextmanager
async def both(tmp: Path, *etcd_flags: str, **meshkit_settings: Any) -> AsyncIterator[tuple[Gw, Gw]]:
    (tmp / "e").mkdir()
    (tmp / "m").mkdir()
    async with etcd_gateway(tmp / "e", *etcd_flags) as e, meshkit_gateway(tmp / "m", **meshkit_settings) as m:
        yield e, m


# ---- normalising answers -----------------------------------------------------------

_IDS = ("cluster_id", "member_id", "raft_term")
# What differs between two servers for reasons that are not the API.
_STATUS_FIELDS = ("version", "dbSize", "dbSizeInUse", "leader", "raftIndex", "raftTerm", "raftAppliedIndex")


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def normalise(obj: Any, mask: Sequence[str] = ()) -> Any:
    if isinstance(obj, list):
        return [normalise(v, mask) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for k, v in obj.items():
        if k in _IDS or k in mask:
            out[k] = f"<{k}>"
        elif k == "token" and isinstance(v, str):
            out[k] = "<token>"
        elif k == "keys" and isinstance(v, list):
            out[k] = sorted(v)  # a lease's keys: etcd's order is Go's map order (random)
        elif k in ("members", "member"):
            out[k] = normalise(v, (*mask, "ID", "peerURLs", "clientURLs"))
        else:
            out[k] = normalise(v, mask)
    return out


def parse(text: str, mask: Sequence[str] = ()) -> Any:
    try:
        return normalise(json.loads(text), mask)
    except ValueError:
        return text


@dataclass(frozen=True)
class Step:
    path: str
    body: Any = None
    raw: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    mask: tuple[str, ...] = ()
    # Top-level keys left out of the comparison.
    drop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: Any


async def call(s: aiohttp.ClientSession, gw: Gw, step: Step, token: str | None = None) -> Answer:
    data = step.raw if step.raw is not None else ("" if step.body is None else json.dumps(step.body))
    headers = dict(step.headers)
    if token is not None:
        headers["Authorization"] = token
    async with s.request(step.method, gw.url + step.path, data=data.encode(), headers=headers) as r:
        text = await r.text()
        body = parse(text, step.mask)
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k not in step.drop}
        return Answer(r.status, r.headers.get("Content-Type", ""), body)


async def run(gw: Gw, steps: Sequence[Step], token: str | None = None) -> list[tuple[Step, Answer]]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        return [(st, await call(s, gw, st, token)) for st in steps]


def assert_same(etcd: list[tuple[Step, Answer]], mesh: list[tuple[Step, Answer]]) -> None:
    diffs = [(st, e, m) for (st, e), (_, m) in zip(etcd, mesh, strict=True) if e != m]
    assert not diffs, "\n".join(f"{st.path} {st.body or st.raw!r}\n  etcd:    {e}\n  meshkit: {m}"
                                for st, e, m in diffs)


async def authenticate(gw: Gw, name: str, password: str) -> str:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s, s.post(
            gw.url + "/v3/auth/authenticate", json={"name": name, "password": password}) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["token"])


# ---- unary calls ---------------------------------------------------------------------

KV: list[Step] = [
    Step("/v3/kv/range", {"key": b64("foo")}),
    Step("/v3/kv/put", {"key": b64("foo"), "value": b64("bar")}),
    Step("/v3/kv/put", {"key": b64("foo"), "value": b64("bar2"), "prev_kv": True}),
    Step("/v3/kv/put", {"key": b64("fop"), "value": b64("x"), "lease": "0"}),
    Step("/v3/kv/put", {"key": b64("zoo"), "value": b64("")}),
    Step("/v3/kv/range", {"key": b64("foo")}),
    Step("/v3/kv/range", {"key": b64("fo"), "range_end": b64("fp")}),
    Step("/v3/kv/range", {"key": b64("\0"), "range_end": b64("\0"), "sort_order": "DESCEND",
                          "sort_target": "MOD", "limit": 2}),
    Step("/v3/kv/range", {"key": b64("a"), "range_end": b64("\0"), "count_only": True}),
    Step("/v3/kv/range", {"key": b64("a"), "rangeEnd": b64("\0"), "keysOnly": True, "serializable": True}),
    Step("/v3/kv/range", {"key": b64("foo"), "revision": "2"}),
    Step("/v3/kv/range", {"key": b64("foo"), "revision": 100}),
    Step("/v3/kv/range", {"key": b64("a"), "range_end": b64("\0"), "min_mod_revision": 4, "unknown": [1]}),
    Step("/v3/kv/range", {}),
    Step("/v3/kv/txn", {
        "compare": [{"key": b64("foo"), "target": "VALUE", "result": "EQUAL", "value": b64("bar2")}],
        "success": [{"request_put": {"key": b64("foo"), "value": b64("t")}},
                    {"request_range": {"key": b64("fop")}}],
        "failure": [{"request_delete_range": {"key": b64("foo")}}]}),
    Step("/v3/kv/txn", {
        "compare": [{"key": b64("foo"), "target": "VERSION", "result": "GREATER", "version": "5"}],
        "success": [{"request_put": {"key": b64("never"), "value": b64("")}}],
        "failure": [{"request_txn": {"success": [{"request_range": {"key": b64("zoo")}}]}}]}),
    Step("/v3/kv/txn", {"success": [{"request_put": {"key": b64("d")}}, {"request_put": {"key": b64("d")}}]}),
    Step("/v3/kv/txn", {"success": [{}]}),
    Step("/v3/kv/deleterange", {"key": b64("fo"), "range_end": b64("fp"), "prev_kv": True}),
    Step("/v3/kv/deleterange", {"key": b64("missing")}),
    Step("/v3/kv/put", {"key": b64("foo"), "value": b64("v"), "ignore_value": True}),
    Step("/v3/kv/put", {"key": b64("zoo"), "ignore_value": True}),
    Step("/v3/kv/put", {"key": b64("foo"), "value": b64("v"), "lease": "12345"}),
    Step("/v3/kv/compaction", {"revision": 100}),
    Step("/v3/kv/compaction", {"revision": "3", "physical": True}),
    Step("/v3/kv/compaction", {"revision": 2}),
    Step("/v3/kv/range", {"key": b64("foo"), "revision": 2}),
    # the deprecated prefix, lowerCamel names, numbers as strings
    Step("/v3beta/kv/range", {"key": b64("zoo"), "countOnly": "true"}),
    Step("/v3beta/kv/range", {"key": b64("zoo"), "maxModRevision": "100"}),
]

LEASE: list[Step] = [
    Step("/v3/lease/grant", {"TTL": 60, "ID": 1000}),
    Step("/v3/lease/grant", {"TTL": "1", "ID": "2000"}),
    Step("/v3/lease/grant", {"TTL": 60, "ID": 1000}),
    Step("/v3/lease/grant", {"TTL": 9999999999}),
    Step("/v3/kv/put", {"key": b64("l1"), "value": b64("v"), "lease": 1000}),
    Step("/v3/kv/put", {"key": b64("l2"), "value": b64("v"), "lease": "1000"}),
    Step("/v3/lease/timetolive", {"ID": 1000}, mask=("TTL",)),
    Step("/v3/kv/lease/timetolive", {"ID": 1000, "keys": True}, mask=("TTL",)),
    Step("/v3/lease/timetolive", {"ID": 31337}),
    Step("/v3/lease/leases", {}),
    Step("/v3/kv/lease/leases", {}),
    Step("/v3/kv/lease/revoke", {"ID": 1000}),
    Step("/v3/lease/revoke", {"ID": 1000}),
    Step("/v3/kv/range", {"key": b64("l"), "range_end": b64("m")}),
    Step("/v3/lease/revoke", {"ID": "2000"}),
    Step("/v3/lease/leases", {}),
]

MISC: list[Step] = [
    Step("/v3/maintenance/status", {}, mask=_STATUS_FIELDS),
    Step("/v3/maintenance/status", None, mask=_STATUS_FIELDS),
    Step("/v3/maintenance/transfer-leadership", {"targetID": 5}),
    Step("/v3/cluster/member/remove", {"ID": 5}),
    Step("/v3/cluster/member/update", {"ID": "5", "peerURLs": ["http://127.0.0.1:1"]}),
    Step("/v3/cluster/member/promote", {"ID": 5}),
    Step("/v3/cluster/member/add", {"peerURLs": ["not a url"]}),
    Step("/v3/auth/enable", {}),
    Step("/v3/auth/authenticate", {"name": "x", "password": "y"}),
    Step("/v3/auth/user/get", {"name": "nobody"}),
    Step("/v3/auth/user/add", {"name": "", "password": "x"}),
    Step("/v3/auth/role/add", {"name": "r"}),
    Step("/v3/auth/role/add", {"name": "r"}),
    Step("/v3/auth/role/grant", {"name": "r", "perm": {"permType": "WRITE", "key": b64("a"), "range_end": b64("b")}}),
    Step("/v3/auth/role/grant", {"name": "r", "perm": {"permType": 0, "key": b64("c")}}),
    Step("/v3/auth/role/get", {"role": "r"}),
    Step("/v3/auth/role/list", {}),
    Step("/v3/auth/role/revoke", {"role": "r", "key": b64("c")}),
    Step("/v3/auth/role/delete", {"role": "r"}),
    Step("/v3/lock/unlock", {"key": b64("nolock")}),
    Step("/v3/lease/grant", {"TTL": 60, "ID": 77}),
    Step("/v3/lock/lock", {"name": b64("lk"), "lease": 77}),
    Step("/v3/kv/range", {"key": b64("lk/"), "range_end": b64("lk0")}),
    Step("/v3/lock/lock", {"name": b64("lk"), "lease": 31337}),
    Step("/v3/lock/unlock", {"key": b64("lk/4d")}),
    Step("/v3/election/leader", {"name": b64("el")}),
    Step("/v3/election/campaign", {"name": b64("el"), "lease": 77, "value": b64("v1")}),
    Step("/v3/election/leader", {"name": b64("el")}),
    Step("/v3/election/proclaim", {"leader": {"name": b64("el"), "key": b64("el/4d"), "rev": 99, "lease": 77},
                                   "value": b64("v2")}),
    Step("/v3/election/proclaim", {"value": b64("v2")}),
    Step("/v3/election/resign", {"leader": {"name": b64("el"), "key": b64("el/4d"), "rev": 99, "lease": 77}}),
    Step("/v3/maintenance/hashkv", {}),
    Step("/v3/auth/status", {}),
    Step("/v3/nothing", {}),
    Step("/v3beta/nothing", {}),
    Step("/v3/kv/range/", {}),
    Step("/v3/kv/range", method="GET"),
    Step("/v3/kv/range", method="PUT"),
    Step("/v3/watch", method="GET"),
    Step("/v3/kv/range", method="OPTIONS"),
    Step("/v3/nothing", method="OPTIONS"),
]


async def test_kv_lease_and_misc_calls(tmp_path: Path) -> None:
    async with both(tmp_path) as (e, m):
        for steps in (KV, LEASE, MISC):
            assert_same(await run(e, steps), await run(m, steps))


async def test_headers_of_answers(tmp_path: Path) -> None:
    """Content types, grpc-gateway's forwarded header metadata, CORS, Go's http.Error."""
    cases = [Step("/v3/kv/put", {"key": b64("k")}), Step("/v3/kv/range", {}), Step("/v3/nothing", {}),
             Step("/v3/kv/range", method="GET"), Step("/v3/kv/range", method="OPTIONS")]
    wanted = ("Content-Type", "Grpc-Metadata-Content-Type", "X-Content-Type-Options", "Access-Control-Allow-Origin",
              "Access-Control-Allow-Methods", "Access-Control-Allow-Headers")

    async def heads(gw: Gw) -> list[tuple[int, dict[str, str]]]:
        out = []
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            for st in cases:
                data = b"" if st.body is None else json.dumps(st.body).encode()
                async with s.request(st.method, gw.url + st.path, data=data) as r:
                    await r.read()
                    out.append((r.status, {h: r.headers[h] for h in wanted if h in r.headers}))
        return out

    async with both(tmp_path) as (e, m):
        assert await heads(e) == await heads(m)


# Bodies that are not the request message: Go's encoding/json and jsonpb errors.
BAD_BODIES = [
    '{"key":', "", "null", "   ", "[]", "true", '"x"', "12", "{x", "[1,]", '{"key":"Zm9v",}',
    '{"key":"Zm9v" "a"}', '{"key":"Zm9v"]', '{"key":tru}', '{"key":"a\tb"}', '{"key":"\\q"}',
    '{"key":"Zm9v","limit":NaN}', '{"key":"Zm9v","limit":-}', '{"key":"Zm9v","limit":1.}',
    '{"key":"Zm9v","limit":01}', '{"key":"Zm9v"} trailing garbage', '{"key":"Zm9v"}{"key":"YQ=="}',
    '{"key":"!!!"}', '{"key":"foo"}', '{"key":"Zm9"}', '{"key":"Zm9v="}', '{"key":"Zm9v\\n"}', '{"key":"Zm-v"}',
    '{"key":"Zg"}', '{"key":"Zg="}', '{"key":"Zg=x"}', '{"key":"Zm9vYg==Zg=="}', '{"key":5}',
    '{"key":"Zm9v","limit":1.5}', '{"key":"Zm9v","limit":2.0}', '{"key":"Zm9v","limit":1e3}',
    '{"key":"Zm9v","limit":"abc"}', '{"key":"Zm9v","limit":""}', '{"key":"Zm9v","limit":"2x"}',
    '{"key":"Zm9v","limit":" 2 "}', '{"key":"Zm9v","limit":"1.5"}', '{"key":"Zm9v","limit":true}',
    '{"key":"Zm9v","limit":[1]}', '{"key":"Zm9v","limit":99999999999999999999}', '{"key":"Zm9v","limit":-1}',
    '{"key":"Zm9v","keys_only":1}', '{"key":"Zm9v","keys_only":"true"}',
    '{"key":"Zm9v","keys_only":true,"keysOnly":false}', '{"key":"Zm9v","keysOnly":false,"keys_only":true}',
    '{"key":"Zm9v","sort_order":"BAD"}', '{"key":"Zm9v","sort_order":"descend"}', '{"key":"Zm9v","sort_order":"1"}',
    '{"key":"Zm9v","sort_order":7}', '{"key":"Zm9v","sort_order":1.5}', '{"key":"Zm9v","sort_order":99999999999}',
    '{"key":"Zm9v","sort_order":true}', '{"key":"Zm9v","key":"YQ=="}', '{"key":"\\u005a\\u006d9v"}',
]
BAD_TXN_BODIES = [
    '{"compare":{}}', '{"compare":[5]}', '{"success":{"request_put":{}}}',
    '{"compare":[{"key":"Zm9v","target":"VALUE","result":"EQUAL","value":"YmFy"}],"success":[{"request_range":{"key":"Zm9v"}}]}',
]
BAD_OTHER = [
    Step("/v3/cluster/member/remove", raw='{"ID":-1}'),
    Step("/v3/cluster/member/remove", raw='{"ID":"-1"}'),
    Step("/v3/cluster/member/remove", raw='{"ID":18446744073709551616}'),
    Step("/v3/lease/grant", raw='{"TTL":"5","ID":"-1"}'),
    Step("/v3/lease/timetolive", raw='{"ID":"x"}'),
    Step("/v3/maintenance/alarm", raw='{"action":"BAD"}'),
]


async def test_bad_bodies(tmp_path: Path) -> None:
    steps = [Step("/v3/kv/put", {"key": b64("foo"), "value": b64("v")}), Step("/v3/kv/put", {"key": b64("a")}),
             *(Step("/v3/kv/range", raw=raw) for raw in BAD_BODIES),
             *(Step("/v3/kv/txn", raw=raw) for raw in BAD_TXN_BODIES), *BAD_OTHER]
    async with both(tmp_path) as (e, m):
        assert_same(await run(e, steps), await run(m, steps))


async def test_request_size_limits(tmp_path: Path) -> None:
    """Beyond --max-request-bytes + 512 KiB gRPC refuses the message (429); below
    that, a proposal too large gets etcd's own error (400)."""
    steps = [Step("/v3/kv/put", {"key": b64("k"), "value": b64(b"x" * n)}) for n in (900, 1100, 600_000)]
    steps += [Step("/v3/kv/range", {"key": b64(b"x" * 530_000)}),
              Step("/v3/kv/txn", {"success": [{"request_put": {"key": b64("k"), "value": b64(b"x" * 2000)}}]})]
    async with both(tmp_path, "--max-request-bytes", "1024", max_request_bytes=1024) as (e, m):
        assert_same(await run(e, steps), await run(m, steps))


# ---- auth ------------------------------------------------------------------------------

AUTH_SETUP = [("user", "add", "root:rootpw"), ("user", "add", "alice:alicepw"), ("role", "add", "r1"),
              ("role", "grant-permission", "r1", "readwrite", "a", "b"), ("user", "grant-role", "alice", "r1"),
              ("put", "a1", "x"), ("put", "z1", "secret"), ("auth", "enable")]


async def ctl(endpoint: str, *args: str) -> None:
    """etcdctl, in a thread: the in-process member shares the test's event loop."""
    got = await asyncio.to_thread(etcdctl, endpoint, *args)
    assert got.code == 0, got


async def setup_auth(gw: Gw) -> None:
    for args in AUTH_SETUP:
        await ctl(gw.grpc, *args)


def _as(token_name: str, *steps: Step) -> list[tuple[str, Step]]:
    return [(token_name, st) for st in steps]


AUTH_STEPS: list[tuple[str, Step]] = [
    *_as("none", Step("/v3/kv/range", {"key": b64("a1")}), Step("/v3/kv/put", {"key": b64("a1")}),
         Step("/v3/auth/authenticate", {"name": "alice", "password": "wrong"}),
         Step("/v3/auth/authenticate", {"name": "alice"}),
         Step("/v3/maintenance/status", {}, mask=_STATUS_FIELDS),
         Step("/v3/lease/grant", {"TTL": 60, "ID": 5})),
    *_as("garbage", Step("/v3/kv/range", {"key": b64("a1")}), Step("/v3/kv/put", {"key": b64("a1")}),
         Step("/v3/auth/user/list", {})),
    *_as("alice", Step("/v3/kv/range", {"key": b64("a1")}), Step("/v3/kv/put", {"key": b64("a2"), "value": b64("y")}),
         Step("/v3/kv/range", {"key": b64("z1")}), Step("/v3/kv/put", {"key": b64("z2")}),
         Step("/v3/kv/deleterange", {"key": b64("a"), "range_end": b64("\0")}),
         Step("/v3/kv/txn", {"success": [{"request_range": {"key": b64("z1")}}]}),
         Step("/v3/kv/txn", {"compare": [{"key": b64("a1"), "target": "CREATE", "result": "GREATER",
                                          "create_revision": 0}],
                             "success": [{"request_range": {"key": b64("a1")}}]}),
         Step("/v3/auth/user/get", {"name": "alice"}), Step("/v3/auth/user/get", {"name": "root"}),
         Step("/v3/auth/user/list", {}), Step("/v3/auth/role/list", {}), Step("/v3/auth/disable", {}),
         Step("/v3/cluster/member/list", {}),
         Step("/v3/cluster/member/remove", {"ID": 5}),
         Step("/v3/maintenance/defragment", {}),
         # etcd 3.4 checks no permission for MoveLeader (only that it leads)
         Step("/v3/maintenance/transfer-leadership", {"targetID": 1}),
         Step("/v3/maintenance/hash", {}),  # root only
         Step("/v3/lock/lock", {"name": b64("zz"), "lease": 5}),
         Step("/v3/lock/lock", {"name": b64("a"), "lease": 5}),
         Step("/v3/election/leader", {"name": b64("zz")}),
         Step("/v3/kv/lease/timetolive", {"ID": 5, "keys": True}, mask=("TTL",)),
         Step("/v3/lease/revoke", {"ID": 5}),
         Step("/v3/kv/range", {"key": b64("a1")}, headers={"Grpc-Metadata-Token": "garbage"})),
    *_as("alice-metadata", Step("/v3/kv/range", {"key": b64("a1")})),
    *_as("root", Step("/v3/auth/user/list", {}), Step("/v3/auth/user/get", {"name": "alice"}),
         Step("/v3/auth/role/get", {"role": "r1"}), Step("/v3/auth/user/add", {"name": "bob", "password": "b"}),
         Step("/v3/auth/user/add", {"name": "carol", "options": {"no_password": True}}),
         Step("/v3/auth/user/changepw", {"name": "bob", "password": "c"}),
         Step("/v3/auth/role/add", {"name": "r2"}),
         Step("/v3/auth/role/grant", {"name": "r2", "perm": {"permType": "READ", "key": b64("x"),
                                                             "range_end": b64("y")}}),
         Step("/v3/auth/user/grant", {"user": "bob", "role": "r2"}),
         Step("/v3/auth/user/grant", {"user": "bob", "role": "nope"}),
         Step("/v3/auth/user/get", {"name": "bob"}),
         Step("/v3/auth/user/revoke", {"name": "bob", "role": "r2"}),
         Step("/v3/auth/role/revoke", {"role": "r2", "key": b64("x"), "range_end": b64("y")}),
         Step("/v3/auth/user/delete", {"name": "bob"}), Step("/v3/auth/user/delete", {"name": "root"}),
         Step("/v3/auth/role/delete", {"role": "r2"}), Step("/v3/auth/role/delete", {"role": "root"}),
         Step("/v3/kv/range", {"key": b64("z1")}),
         Step("/v3/maintenance/defragment", {}),
         Step("/v3/maintenance/alarm", {"action": "GET"}),
         # the value differs (etcd's members bucket holds other bytes); the shape not
         Step("/v3/maintenance/hash", {}, mask=("hash",)),
         Step("/v3/auth/disable", {})),
    *_as("none", Step("/v3/kv/range", {"key": b64("z1")})),
]


async def test_auth_over_the_gateway(tmp_path: Path) -> None:
    """Users and roles set up with etcdctl (gRPC); the gateway authenticates, carries
    the token in Authorization (or Grpc-Metadata-Token) and answers etcd's errors."""

    async def scenario(gw: Gw) -> list[tuple[Step, Answer]]:
        await setup_auth(gw)
        tokens: dict[str, str | None] = {"none": None, "garbage": "garbage",
                                         "alice": await authenticate(gw, "alice", "alicepw"),
                                         "root": await authenticate(gw, "root", "rootpw")}
        out = []
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            for who, st in AUTH_STEPS:
                if who == "alice-metadata":
                    st = Step(st.path, st.body, headers={"Grpc-Metadata-Token": str(tokens["alice"]),
                                                         "Authorization": "garbage"})
                    out.append((st, await call(s, gw, st)))
                else:
                    out.append((st, await call(s, gw, st, tokens[who])))
        return out

    async with both(tmp_path) as (e, m):
        assert_same(await scenario(e), await scenario(m))


# ---- streams ---------------------------------------------------------------------------


class Stream:
    """An open gateway stream: a chunked request body fed line by line, answer lines read."""

    def __init__(self, session: aiohttp.ClientSession, gw: Gw, path: str, headers: dict[str, str]) -> None:
        self._session = session
        self._url = gw.url + path
        self._headers = headers
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.resp: aiohttp.ClientResponse | None = None

    async def _body(self) -> AsyncIterator[bytes]:
        while (chunk := await self._queue.get()) is not None:
            yield chunk

    def send(self, msg: Any) -> None:
        self._queue.put_nowait(msg if isinstance(msg, bytes) else json.dumps(msg).encode() + b"\n")

    def close_body(self) -> None:
        self._queue.put_nowait(None)

    async def open(self) -> Stream:
        self.resp = await self._session.post(self._url, data=self._body(), headers=self._headers)
        return self

    async def lines(self, n: int) -> list[Any]:
        assert self.resp is not None
        out = []
        for _ in range(n):
            line = await asyncio.wait_for(self.resp.content.readline(), 10)
            out.append(parse(line.decode()))
        return out

    async def rest(self) -> list[Any]:
        assert self.resp is not None
        text = (await asyncio.wait_for(self.resp.read(), 10)).decode()
        return [parse(line) for line in text.split("\n") if line]

    def close(self) -> None:
        if self.resp is not None:
            self.resp.close()


async def put(s: aiohttp.ClientSession, gw: Gw, key: str, value: str = "v") -> None:
    async with s.post(gw.url + "/v3/kv/put", json={"key": b64(key), "value": b64(value)}) as r:
        assert r.status == 200


async def delete(s: aiohttp.ClientSession, gw: Gw, key: str) -> None:
    async with s.post(gw.url + "/v3/kv/deleterange", json={"key": b64(key)}) as r:
        assert r.status == 200


async def stream_lines(s: aiohttp.ClientSession, gw: Gw, path: str, requests: Sequence[Any], n: int,
                       headers: dict[str, str] | None = None) -> list[Any]:
    """POST a whole body of requests to a stream, read ``n`` answer lines, hang up."""
    body = b"".join(r if isinstance(r, bytes) else json.dumps(r).encode() + b"\n" for r in requests)
    async with s.post(gw.url + path, data=body, headers=headers or {}) as r:
        out: list[Any] = [(r.status, r.headers.get("Content-Type"), r.headers.get("Grpc-Metadata-Content-Type"))]
        for _ in range(n):
            out.append(parse((await asyncio.wait_for(r.content.readline(), 10)).decode()))
        return out


async def watch_scenario(gw: Gw) -> list[Any]:
    # Each stream gets its whole body at once, as etcd3gw and curl send it: etcd's
    # Go HTTP/1.1 server reads the rest of a request body before its first answer
    # line, so requests written while answers stream only work over a websocket.
    out: list[Any] = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        await put(s, gw, "w/old", "1")
        await put(s, gw, "w/old", "2")

        async def later(*steps: tuple[str, str]) -> None:
            await asyncio.sleep(0.3)
            for key, value in steps:
                await (put(s, gw, key, value) if value else delete(s, gw, key))

        # A prefix with prev_kv: puts and a delete.
        task = asyncio.ensure_future(later(("w/a", "1"), ("w/b", "2"), ("w/a", "")))
        out += await stream_lines(s, gw, "/v3/watch",
                                  [{"create_request": {"key": b64("w/"), "range_end": b64("w0"), "prev_kv": True}}], 4)
        await task
        # History from revision 2, batched.
        out += await stream_lines(s, gw, "/v3/watch", [{"create_request": {"key": b64("w/old"),
                                                                           "startRevision": "2"}}], 2)
        # A client-chosen id, then the same id again.
        out += await stream_lines(s, gw, "/v3/watch", [{"create_request": {"key": b64("w/b"), "watch_id": 7}},
                                                       {"create_request": {"key": b64("w/b"), "watch_id": 7}}], 2)
        # A filter: only the delete.
        task = asyncio.ensure_future(later(("w/b", "3"), ("w/b", "")))
        out += await stream_lines(s, gw, "/v3/watch", [{"create_request": {"key": b64("w/b"),
                                                                           "filters": ["NOPUT"]}}], 2)
        await task
        # Create and cancel in one body; a progress request.
        out += await stream_lines(s, gw, "/v3/watch", [{"create_request": {"key": b64("x")}},
                                                       {"cancel_request": {"watch_id": 0}}], 2)
        out += await stream_lines(s, gw, "/v3/watch", [{"create_request": {"key": b64("x")}},
                                                       {"progress_request": {}}], 2)
        # A bad request after the first ends the request side; the watch goes on.
        task = asyncio.ensure_future(later(("x", "1")))
        out += await stream_lines(s, gw, "/v3/watch", [{"create_request": {"key": b64("x")}},
                                                       b'{"create_request": nonsense}\n'], 2)
        await task
        # Compacted history: created, then canceled with the compact revision.
        async with s.post(gw.url + "/v3/kv/compaction", json={"revision": 5}) as r:
            assert r.status == 200
        out += await stream_lines(s, gw, "/v3/watch", [{"create_request": {"key": b64("w/old"),
                                                                           "start_revision": 2}}], 2)
    return out


async def test_watch_stream(tmp_path: Path) -> None:
    async with both(tmp_path) as (e, m):
        assert await watch_scenario(e) == await watch_scenario(m)


async def keepalive_scenario(gw: Gw) -> list[Any]:
    out: list[Any] = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with s.post(gw.url + "/v3/lease/grant", json={"TTL": 60, "ID": 9}) as r:
            assert r.status == 200
        # Several requests (an unknown lease answers without TTL); none; a bad
        # first one (a plain error: UNKNOWN, 500); a bad later one.
        for raw in ('{"ID":9}\n{"ID":"9"} {"ID":12}', "", '{"ID":"x"}', '{"ID":9}{"bad', '{"bad'):
            async with s.post(gw.url + "/v3/lease/keepalive", data=raw.encode()) as r:
                out.append((r.status, r.headers.get("Content-Type"), r.headers.get("Grpc-Metadata-Content-Type"),
                            [parse(x) for x in (await r.text()).split("\n") if x]))
    return out


async def test_lease_keepalive_stream(tmp_path: Path) -> None:
    async with both(tmp_path) as (e, m):
        assert await keepalive_scenario(e) == await keepalive_scenario(m)


async def other_streams_scenario(gw: Gw) -> list[Any]:
    out: list[Any] = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        # A watch whose body is empty stays open, silent (no headers yet either).
        w = Stream(s, gw, "/v3/watch", {})
        w.close_body()
        opened = asyncio.ensure_future(w.open())
        await asyncio.sleep(0.5)
        out.append(opened.done())
        opened.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await opened
        w.close()
        # A bad first watch request: a plain error, gRPC UNKNOWN.
        async with s.post(gw.url + "/v3/watch", data=b'{"create_request":{"key":5}}') as r:
            out.append((r.status, parse(await r.text())))
        # Snapshot: blobs in base64 lines, the last one the sha256 (32 bytes).
        async with s.post(gw.url + "/v3/maintenance/snapshot", data=b"{}") as r:
            lines = [json.loads(x)["result"] for x in (await r.text()).split("\n") if x]
        out.append((r.status, r.headers.get("Content-Type"), len(base64.b64decode(lines[-1]["blob"])),
                    sorted(lines[-1]), sorted(lines[-2])))
        # Election observe: the leader now, then each proclamation.
        async with s.post(gw.url + "/v3/lease/grant", json={"TTL": 60, "ID": 42}) as r:
            assert r.status == 200
        async with s.post(gw.url + "/v3/election/campaign",
                          json={"name": b64("el"), "lease": 42, "value": b64("one")}) as r:
            campaign = await r.json()
            out.append(normalise(campaign))
        o = Stream(s, gw, "/v3/election/observe", {})
        o.send({"name": b64("el")})
        o.close_body()
        await o.open()
        try:
            out += await o.lines(1)
            async with s.post(gw.url + "/v3/election/proclaim",
                              json={"leader": campaign["leader"], "value": b64("two")}) as r:
                out.append(normalise(await r.json()))
            out += await o.lines(1)
            async with s.post(gw.url + "/v3/election/resign", json={"leader": campaign["leader"]}) as r:
                out.append(normalise(await r.json()))
        finally:
            o.close()
    return out


async def test_other_streams(tmp_path: Path) -> None:
    async with both(tmp_path) as (e, m):
        assert await other_streams_scenario(e) == await other_streams_scenario(m)


async def auth_streams_scenario(gw: Gw) -> list[Any]:
    await setup_auth(gw)
    alice = await authenticate(gw, "alice", "alicepw")
    out: list[Any] = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        for token in (alice, "garbage", None):
            out += await stream_lines(s, gw, "/v3/watch", [{"create_request": {"key": b64("z1")}},
                                                           {"create_request": {"key": b64("a1")}}], 2,
                                      {"Authorization": token} if token else {})
        # A stream failing before its first message: the error's status, one error chunk.
        async with s.post(gw.url + "/v3/maintenance/snapshot", data=b"", headers={"Authorization": alice}) as r:
            out.append((r.status, r.headers.get("Content-Type"), await r.text()))
    return out


async def test_streams_with_auth(tmp_path: Path) -> None:
    async with both(tmp_path) as (e, m):
        assert await auth_streams_scenario(e) == await auth_streams_scenario(m)


async def lock_wait_scenario(gw: Gw) -> list[Any]:
    """A Lock call waiting behind the holder is canceled when its client goes away:
    its waiting key is deleted, as etcd's gateway cancels the gRPC call."""
    out: list[Any] = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        for lid in (1, 2):
            async with s.post(gw.url + "/v3/lease/grant", json={"TTL": 60, "ID": lid}) as r:
                assert r.status == 200
        async with s.post(gw.url + "/v3/lock/lock", json={"name": b64("L"), "lease": 1}) as r:
            out.append(normalise(await r.json()))
        waiter = asyncio.ensure_future(s.post(gw.url + "/v3/lock/lock", json={"name": b64("L"), "lease": 2}))
        await asyncio.sleep(0.5)
        async with s.post(gw.url + "/v3/kv/range", json={"key": b64("L/"), "range_end": b64("L0"),
                                                         "keys_only": True}) as r:
            out.append(normalise(await r.json()))
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        for _ in range(50):
            async with s.post(gw.url + "/v3/kv/range", json={"key": b64("L/"), "range_end": b64("L0"),
                                                             "keys_only": True}) as r:
                keys = normalise(await r.json())
            if len(keys.get("kvs", ())) == 1:
                break
            await asyncio.sleep(0.1)
        out.append(keys)
    return out


async def test_lock_canceled_by_disconnect(tmp_path: Path) -> None:
    async with both(tmp_path) as (e, m):
        assert await lock_wait_scenario(e) == await lock_wait_scenario(m)


async def websocket_scenario(gw: Gw) -> list[Any]:
    """etcd's grpc-websocket-proxy: one JSON request per message, one line per message."""
    out: list[Any] = []
    ws_url = gw.url.replace("http://", "ws://")
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        async with s.ws_connect(ws_url + "/v3/watch") as ws:
            await ws.send_str(json.dumps({"create_request": {"key": b64("k")}}))
            out.append(parse((await ws.receive(timeout=10)).data))
            await put(s, gw, "k", "1")
            out.append(parse((await ws.receive(timeout=10)).data))
            await ws.send_str(json.dumps({"cancel_request": {"watch_id": 0}}))
            out.append(parse((await ws.receive(timeout=10)).data))
        for body in ({"key": b64("k")}, {}):
            async with s.ws_connect(ws_url + "/v3/kv/range") as ws:
                await ws.send_str(json.dumps(body))
                out.append(parse((await ws.receive(timeout=10)).data))
                out.append((await ws.receive(timeout=10)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED))
        async with s.ws_connect(ws_url + "/v3/lease/keepalive") as ws:
            await ws.send_str('{"ID": 5}')
            out.append(parse((await ws.receive(timeout=10)).data))
    return out


async def test_websocket(tmp_path: Path) -> None:
    async with both(tmp_path) as (e, m):
        assert await websocket_scenario(e) == await websocket_scenario(m)


# ---- TLS ---------------------------------------------------------------------------------


async def test_client_certificate_common_name_is_refused_with_auth(tmp_path: Path) -> None:
    """With --client-cert-auth and auth enabled, a gateway request whose verified
    client certificate names a user is refused (400, Go's http.Error text): etcd's
    gateway cannot pass the certificate on."""
    require_reference_binaries()
    certs = make_certs(tmp_path / "certs", client_cn="root")
    client_ctx = ssl.create_default_context(cafile=str(certs.ca))
    client_ctx.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    tls_args = ("--cacert", str(certs.ca), "--cert", str(certs.client_cert), "--key", str(certs.client_key))

    async def probe(url: str, grpc_endpoint: str, ctl_args: Sequence[str]) -> list[Any]:
        got = []
        async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
            for setup in (None, ("user", "add", "root:rootpw"), ("auth", "enable")):
                if setup is not None:
                    await ctl(grpc_endpoint, *ctl_args, *setup)
                async with s.post(url + "/v3/kv/range", json={"key": b64("k")}, ssl=client_ctx) as r:
                    got.append((r.status, r.headers.get("Content-Type"), parse(await r.text())))
        return got

    # The real etcd on an https client URL.
    cport, pport = free_ports(2)
    (tmp_path / "e").mkdir()
    flags = etcd_flags("default", tmp_path / "e" / "data", cport, pport)
    at = flags.index("--listen-client-urls")
    flags[at:at + 4] = ["--listen-client-urls", f"https://127.0.0.1:{cport}",
                        "--advertise-client-urls", f"https://127.0.0.1:{cport}"]
    assert ETCD is not None
    proc = subprocess.Popen(  # noqa: ASYNC220  # (started once, stopped in finally)
        [ETCD, *flags, "--cert-file", str(certs.server_cert), "--key-file", str(certs.server_key),
         "--trusted-ca-file", str(certs.ca), "--client-cert-auth"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path / "e")
    try:
        wait_port(cport, 20.0)
        for _ in range(100):
            if (await asyncio.to_thread(etcdctl, f"127.0.0.1:{cport}", *tls_args, "endpoint", "health")).code == 0:
                break
            await asyncio.sleep(0.1)
        etcd_got = await probe(f"https://127.0.0.1:{cport}", f"127.0.0.1:{cport}", tls_args)
    finally:
        proc.terminate()
        proc.wait(10)

    # meshkit: the gateway site over TLS with client-cert-auth (gRPC set up in the clear).
    tls = TLSInfo(str(certs.server_cert), str(certs.server_key), str(certs.ca), True)
    srv = EmbeddedServer.for_test(tmp_path / "m", 0)
    async with srv:
        runner = web.AppRunner(make_client_app(srv.etcd, [add_gateway_routes]), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.ssl_context())
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            mesh_got = await probe(f"https://127.0.0.1:{port}", srv.endpoint, ())
        finally:
            await runner.cleanup()
    assert etcd_got == mesh_got
    assert [status for status, _, _ in etcd_got] == [200, 200, 400]


# ---- meshkit only ------------------------------------------------------------------------


async def test_meshkit_streams_requests_written_while_answers_stream(tmp_path: Path) -> None:
    """Over plain HTTP meshkit reads each watch request as it arrives (etcd's Go
    server would read the whole body first); a later request larger than gRPC
    receives ends the stream with its error chunk."""
    async with meshkit_gateway(tmp_path, max_request_bytes=1024) as gw, \
            aiohttp.ClientSession(timeout=TIMEOUT) as s:
        w = Stream(s, gw, "/v3/watch", {})
        w.send({"create_request": {"key": b64("a")}})
        await w.open()
        try:
            assert [x["result"].get("created") for x in await w.lines(1)] == [True]
            w.send({"create_request": {"key": b64("b")}})
            (created,) = await w.lines(1)
            assert created["result"]["watch_id"] == "1"
            await put(s, gw, "b", "1")
            (event,) = await w.lines(1)
            assert event["result"]["events"][0]["kv"]["key"] == b64("b")
            w.send({"create_request": {"key": b64(b"x" * 600_000)}})
            assert await w.rest() == [{"error": {
                "grpc_code": 8, "http_code": 429, "http_status": "Too Many Requests",
                "message": "grpc: received message larger than max (600008 vs. 525312)"}}]
        finally:
            w.close()
