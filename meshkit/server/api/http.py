"""etcd's HTTP/1.1 endpoints: ``/health``, ``/version``, ``/metrics`` (aiohttp).

Served on ``--listen-metrics-urls`` (etcd's separate metrics listener answers
``/metrics`` and ``/health`` only, ``/version`` is 404 there, as etcd's).
etcd also answers them on the client port (cmux); meshkit's client port speaks
gRPC only (see docs/compat.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from meshkit._internal.errors import EtcdError
from meshkit.server.etcdserver.server import EtcdServer

ETCD_SERVER_VERSION = "3.4.0"
ETCD_CLUSTER_VERSION = "3.4.0"
# etcd's health check waits this long for its quorum read.
HEALTH_TIMEOUT = 1.0
# What etcd (prometheus client_golang, text format) answers.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_CORS = {
    "Access-Control-Allow-Headers": "accept, content-type, authorization",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE",
    "Access-Control-Allow-Origin": "*",
}


class _ServerCollector(Collector):
    """Gauges and counters read from the member at scrape time (no hot-path cost)."""

    def __init__(self, s: EtcdServer) -> None:
        self.s = s

    def collect(self) -> Iterator[Any]:
        s = self.s
        yield GaugeMetricFamily("etcd_server_has_leader",
                                "Whether or not a leader exists. 1 is existence, 0 is not.",
                                value=1 if s.leader_id else 0)
        yield CounterMetricFamily("etcd_server_leader_changes_seen",
                                  "The number of leader changes seen.", value=s.metrics.leader_changes)
        yield GaugeMetricFamily("etcd_server_is_leader",
                                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
                                value=1 if s.is_leader() else 0)
        g = GaugeMetricFamily("etcd_server_id", "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
                              labels=["server_id"])
        g.add_metric([f"{s.member_id:x}"], 1)
        yield g
        g = GaugeMetricFamily("etcd_server_version", "Which version is running. 1 for 'server_version' label with current version.",
                              labels=["server_version"])
        g.add_metric([ETCD_SERVER_VERSION], 1)
        yield g
        yield GaugeMetricFamily("etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.",
                                value=s.settings.quota_backend_bytes)
        yield GaugeMetricFamily("etcd_server_proposals_committed_total",
                                "The total number of consensus proposals committed.", value=s.committed_index)
        yield GaugeMetricFamily("etcd_server_proposals_applied_total",
                                "The total number of consensus proposals applied.", value=s.applied_index)
        yield GaugeMetricFamily("etcd_server_proposals_pending",
                                "The current number of pending proposals to commit.", value=len(s._waiters))
        yield GaugeMetricFamily("etcd_mvcc_db_total_size_in_bytes",
                                "Total size of the underlying database physically allocated in bytes.",
                                value=s.backend.size())
        yield GaugeMetricFamily("etcd_mvcc_db_total_size_in_use_in_bytes",
                                "Total size of the underlying database logically in use in bytes.",
                                value=s.backend.size_in_use())
        yield GaugeMetricFamily("etcd_debugging_mvcc_keys_total",
                                "Total number of keys.", value=len(s.store))


async def check_health(s: EtcdServer) -> bool:
    """etcd 3.4's checkHealth: no alarm, a known leader, and a quorum read that answers."""
    if s.alarms.get() or not s.leader_id:
        return False
    try:
        await asyncio.wait_for(s.linearizable_barrier(), HEALTH_TIMEOUT)
    except (EtcdError, TimeoutError):
        return False
    return True


def make_app(s: EtcdServer, *, version: bool) -> web.Application:
    registry = s.metrics.registry
    registry.register(_ServerCollector(s))

    async def health(request: web.Request) -> web.Response:
        if await check_health(s):
            return web.Response(text='{"health":"true"}', content_type="text/plain", charset="utf-8",
                                headers=_CORS)
        # Go's http.Error: a trailing newline and nosniff.
        return web.Response(status=503, text='{"health":"false"}\n', content_type="text/plain",
                            charset="utf-8", headers={**_CORS, "X-Content-Type-Options": "nosniff"})

    async def version_(request: web.Request) -> web.Response:
        return web.json_response({"etcdserver": ETCD_SERVER_VERSION, "etcdcluster": ETCD_CLUSTER_VERSION},
                                 headers=_CORS, dumps=lambda o: _compact_json(o))

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    if version:
        app.router.add_get("/version", version_)
    return app


def _compact_json(o: Any) -> str:
    import json

    return json.dumps(o, separators=(",", ":"))


class HttpEndpoints:
    """aiohttp runner for the metrics URLs: ``async with`` serves, leaving stops."""

    def __init__(self, s: EtcdServer, listen: Sequence[tuple[str, int]], *, version: bool = False,
                 ssl_context: Any = None) -> None:
        self._app = make_app(s, version=version)
        self._listen = list(listen)
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self.ports: list[int] = []

    async def __aenter__(self) -> HttpEndpoints:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        self._runner = runner
        try:
            for host, port in self._listen:
                site = web.TCPSite(runner, host, port, ssl_context=self._ssl, reuse_port=False)
                await site.start()
                server = site._server
                assert server is not None
                self.ports.append(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner.cleanup()
