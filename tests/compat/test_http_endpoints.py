"""etcd's HTTP endpoints, compared with the real etcd's answers (status, body,
content type, the headers that matter, metric names and types):

* on the client URLs, multiplexed with gRPC: /health, /version, /metrics behind
  etcd's access controller (CORS headers, OPTIONS), Go's 404/405 answers, cmux's
  handling of bytes that are neither HTTP/2 nor HTTP/1.x;
* on --listen-metrics-urls: /health and /metrics only, no CORS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.server.embed import EmbeddedServer
from tests.compat.conftest import Pair
from tests.server.conftest import wait_ready
from tests.support.procs import free_ports, start_etcd, start_meshkit, wait_port

# The etcd metrics meshkit provides, with etcd's types.
PROVIDED = {
    "etcd_server_has_leader": "gauge",
    "etcd_server_is_leader": "gauge",
    "etcd_server_leader_changes_seen": "counter",
    "etcd_server_id": "gauge",
    "etcd_server_version": "gauge",
    "etcd_server_quota_backend_bytes": "gauge",
    "etcd_server_proposals_committed_total": "gauge",
    "etcd_server_proposals_applied_total": "gauge",
    "etcd_server_proposals_pending": "gauge",
    "etcd_mvcc_db_total_size_in_bytes": "gauge",
    "etcd_mvcc_db_total_size_in_use_in_bytes": "gauge",
    "etcd_debugging_mvcc_keys_total": "gauge",
    "etcd_disk_wal_fsync_duration_seconds": "histogram",
}


METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def _get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.text()


# Headers compared between the servers (Date, Server, chunking are not).
COMPARED = ("Content-Type", "Allow", "X-Content-Type-Options", "Access-Control-Allow-Headers",
            "Access-Control-Allow-Methods", "Access-Control-Allow-Origin")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
PATHS = ("/health", "/version", "/metrics", "/nope", "/", "/health/", "/version/x", "/v3/nope")


async def _answer(url: str, method: str) -> tuple[int, dict[str, str], str]:
    """Status, the compared headers (plus Content-Length where the body is fixed), body."""
    async with aiohttp.ClientSession() as s, \
            s.request(method, url, timeout=aiohttp.ClientTimeout(total=5)) as r:
        body = await r.text()
        headers = {h: r.headers[h] for h in COMPARED if h in r.headers}
        fixed = not url.endswith(("/metrics", "/version"))
        if fixed and "Content-Length" in r.headers:
            headers["Content-Length"] = r.headers["Content-Length"]
        return r.status, headers, body


def _comparable(path: str, status: int, body: str) -> str:
    if status == 200 and path == "/metrics" and body:
        return "<metrics>"
    if status == 200 and path == "/version" and body:
        # etcd says 3.4.23, meshkit the API level 3.4.0 (as its Status does)
        v = json.loads(body)
        assert set(v) == {"etcdserver", "etcdcluster"}
        return f"cluster {v['etcdcluster']}"
    return body


async def _table(base: str, paths: tuple[str, ...], methods: tuple[str, ...]) -> dict[str, object]:
    out: dict[str, object] = {}
    for path in paths:
        for method in methods:
            status, headers, body = await _answer(base + path, method)
            out[f"{method} {path}"] = (status, headers, _comparable(path, status, body))
    return out


async def _raw(port: int, data: bytes, wait: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        out = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                while chunk := await reader.read(65536):
                    out += chunk
                return out + b"<EOF>"
        return out + b"<open>"
    finally:
        writer.close()


async def test_client_port_http_like_etcd(pair: Pair) -> None:
    """Every method on etcd's paths and a few others, on the client URL, both servers."""
    await wait_ready(pair.etcd.endpoint)
    await wait_ready(pair.meshkit.endpoint)
    etcd = await _table(pair.etcd.url, PATHS, METHODS)
    mesh = await _table(pair.meshkit.url, PATHS, METHODS)
    # a few of etcd's answers spelled out, so the table's meaning is visible here
    cors = {"Access-Control-Allow-Headers": "accept, content-type, authorization",
            "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE",
            "Access-Control-Allow-Origin": "*"}
    assert etcd["GET /health"] == (200, {**cors, "Content-Type": "text/plain; charset=utf-8",
                                         "Content-Length": "17"}, '{"health":"true"}')
    assert etcd["GET /version"] == (200, {**cors, "Content-Type": "application/json"}, "cluster 3.4.0")
    assert etcd["POST /health"] == (405, {**cors, "Allow": "GET", "Content-Type": "text/plain; charset=utf-8",
                                          "X-Content-Type-Options": "nosniff", "Content-Length": "19"},
                                    "Method Not Allowed\n")
    assert etcd["GET /nope"][2] == "404 page not found\n" and etcd["GET /v3/nope"][2] == "Not Found\n"
    assert etcd["OPTIONS /nope"] == (200, {**cors, "Content-Length": "0"}, "")
    assert etcd["DELETE /metrics"][:3:2] == (200, "<metrics>")
    for key in etcd:
        assert mesh[key] == etcd[key], key
    status, ctype, text = await _get(pair.meshkit.url + "/metrics")
    assert status == 200 and ctype == METRICS_TYPE
    fams = _families(text)
    for name, typ in PROVIDED.items():
        assert fams.get(name) == typ, (name, fams.get(name))


async def test_client_port_bytes_that_are_neither_like_etcd(pair: Pair) -> None:
    """cmux: HTTP/2 preface -> gRPC, an HTTP/1.x request line -> HTTP, else closed."""
    await wait_ready(pair.etcd.endpoint)
    await wait_ready(pair.meshkit.endpoint)
    for data in (b"hello there\r\n\r\n", b"GET /health HTTP/2.0\r\n\r\n", b"\r\n"):
        assert await _raw(pair.etcd.client_port, data) == b"<EOF>"
        assert await _raw(pair.meshkit.client_port, data) == b"<EOF>", data
    for sp in (pair.etcd, pair.meshkit):
        out = await _raw(sp.client_port, b"GET /health HTTP/1.0\r\n\r\n")
        assert out.startswith(b"HTTP/1.0 200 OK\r\n") and out.endswith(b'\r\n\r\n{"health":"true"}<EOF>')
        # the preface: the gRPC server's SETTINGS frame answers, the connection stays open
        out = await _raw(sp.client_port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", wait=1.0)
        assert out[3:4] == b"\x04" and out.endswith(b"<open>")


def _families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


async def test_metrics_listener_answers_like_etcd(tmp_path: Path) -> None:
    """The same method/path table on --listen-metrics-urls: no CORS, no OPTIONS
    shortcut, /version unknown."""
    tables = []
    for kind in ("etcd", "meshkit"):
        (mport,) = free_ports(1)
        flags = ("--listen-metrics-urls", f"http://127.0.0.1:{mport}")
        (tmp_path / kind).mkdir()
        start = start_meshkit if kind == "meshkit" else start_etcd
        sp = start(tmp_path / kind, *flags)
        try:
            await wait_ready(sp.endpoint)
            wait_port(mport, 10.0)
            tables.append(await _table(f"http://127.0.0.1:{mport}", PATHS[:5], METHODS))
        finally:
            sp.stop()
    etcd, mesh = tables
    assert etcd["OPTIONS /health"][0] == 405 and "Access-Control-Allow-Origin" not in etcd["GET /health"][1]
    assert etcd["GET /version"][2] == "404 page not found\n"
    for key in etcd:
        assert mesh[key] == etcd[key], key


@pytest.mark.parametrize("kind", ["meshkit", "etcd"])
async def test_metrics_listener_like_etcd(kind: str, tmp_path: Path) -> None:
    (mport,) = free_ports(1)
    flags = ("--listen-metrics-urls", f"http://127.0.0.1:{mport}")
    sp = start_meshkit(tmp_path, *flags) if kind == "meshkit" else start_etcd(tmp_path, *flags)
    try:
        await wait_ready(sp.endpoint)
        wait_port(mport, 10.0)
        base = f"http://127.0.0.1:{mport}"
        assert await _get(base + "/health") == (200, "text/plain; charset=utf-8", '{"health":"true"}')
        status, _, _ = await _get(base + "/version")
        assert status == 404  # etcd's metrics listener serves /metrics and /health only
        status, ctype, text = await _get(base + "/metrics")
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        fams = _families(text)
        for name, typ in PROVIDED.items():
            assert fams.get(name) == typ, (name, fams.get(name))
        samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert samples["etcd_server_has_leader"] == 1
        assert samples["etcd_server_leader_changes_seen_total"] >= 1
        assert samples["etcd_mvcc_db_total_size_in_bytes"] > 0
        assert samples["etcd_disk_wal_fsync_duration_seconds_count"] > 0
    finally:
        sp.stop()


async def test_health_false_with_an_alarm(tmp_path: Path) -> None:
    """503 and etcd's http.Error body (trailing newline) while an alarm is active."""
    srv = EmbeddedServer.for_test(tmp_path / "d", 0)
    srv.metrics_listen = [("127.0.0.1", 0)]
    async with srv:
        base = f"http://127.0.0.1:{srv.metrics_ports[0]}"
        assert (await _get(base + "/health"))[0] == 200
        from meshkit.api.meshkitpb import internal_pb2 as ipb

        await srv.etcd.propose(ipb.InternalRequest(alarm=pb.AlarmRequest(
            action=pb.AlarmRequest.ACTIVATE, memberID=srv.etcd.member_id, alarm=pb.NOSPACE)))
        assert await _get(base + "/health") == (503, "text/plain; charset=utf-8", '{"health":"false"}\n')
        await asyncio.sleep(0)
