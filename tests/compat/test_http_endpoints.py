"""etcd's HTTP endpoints on --listen-metrics-urls: /health and /metrics, compared
with the real etcd's answers (status, body, content type, metric names and types)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.server.embed import EmbeddedServer
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


async def _get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.text()


def _families(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


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
