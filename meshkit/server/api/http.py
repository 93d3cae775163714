"""etcd's HTTP/1.1 endpoints: ``/health``, ``/version``, ``/metrics`` (aiohttp).

Two apps, as etcd has two HTTP handlers:

* :func:`make_client_app`: what etcd serves on its client URLs (next to gRPC, see
  :mod:`meshkit.server.clientport`, or alone on ``--listen-client-http-urls``):
  ``/health``, ``/version``, ``/metrics`` behind etcd's access controller (CORS
  headers on every answer unless the response sets ``response[NO_CORS]``,
  ``OPTIONS`` answers 200 on any path). More routes (the gRPC gateway) are added
  by passing ``routes=[add_gateway_routes]``: each is called as
  ``add(app, server)`` before the app is frozen.
* :func:`make_metrics_app`: ``--listen-metrics-urls``: ``/metrics`` and ``/health``
  only (``/version`` is 404 there), no CORS.

Both answer an unknown path or a wrong method as Go's ``http.ServeMux`` and
``http.Error`` do (``404 page not found``, ``405 Method Not Allowed`` with
``Allow: GET``), and unknown paths under ``/v3/`` as etcd's grpc-gateway does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from meshkit._internal.errors import EtcdError
from meshkit.server.etcdserver.server import EtcdServer

ETCD_SERVER_VERSION = "3.4.0"
ETCD_CLUSTER_VERSION = "3.4.0"
# etcd's health check waits this long for its quorum read.
HEALTH_TIMEOUT = 1.0
# What etcd (prometheus client_golang, text format) answers.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# etcd's access controller with the default --cors '*' (client URLs only).
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


RouteAdder = Callable[[web.Application, EtcdServer], None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_collected: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()


def _register_collector(s: EtcdServer) -> CollectorRegistry:
    """The member's registry with its scrape-time collector (registered once)."""
    registry = s.metrics.registry
    if registry not in _collected:
        registry.register(_ServerCollector(s))
        _collected.add(registry)
    return registry


def go_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Go's ``http.Error``: the message plus a newline, text/plain, nosniff."""
    return web.Response(status=status, text=message + "\n", content_type="text/plain", charset="utf-8",
                        headers={**(headers or {}), "X-Content-Type-Options": "nosniff"})


def _mux_errors(gateway_prefixes: tuple[str, ...]) -> Any:
    """Router misses answered as etcd's muxes answer them.

    Under ``gateway_prefixes`` (``/v3/``, ``/v3beta/`` on the client port) etcd's
    grpc-gateway answers; elsewhere Go's ServeMux (404) or the handler's method
    check (405).
    """

    @web.middleware
    async def mux_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        exc = request.match_info.http_exception
        if exc is None:
            return await handler(request)
        gateway = request.path.startswith(gateway_prefixes)
        if exc.status == 405:
            if gateway:
                return go_error(405, "Method Not Allowed")
            allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ("GET",)))
            return go_error(405, "Method Not Allowed", {"Allow": allowed})
        if exc.status == 404:
            return go_error(404, "Not Found" if gateway else "404 page not found")
        raise exc

    return mux_errors


# Where etcd's client port hands requests to its grpc-gateway.
GATEWAY_PREFIXES = ("/v3/", "/v3beta/")


@web.middleware
async def _options_ok(request: web.Request, handler: Handler) -> web.StreamResponse:
    """etcd's access controller answers OPTIONS itself, on any path. A gateway
    route gets its OPTIONS (it checks the client certificate first, as etcd)."""
    if request.method == "OPTIONS" and (request.match_info.http_exception is not None
                                        or not request.path.startswith(GATEWAY_PREFIXES)):
        return web.Response(status=200)
    return await handler(request)


# A handler's response with ``response[NO_CORS] = True`` goes out without the CORS
# headers: an answer etcd's access controller gives before it adds them (the
# gateway's refusal of a client certificate's common name).
NO_CORS = web.ResponseKey("meshkit.no_cors", bool)


async def _add_cors(request: web.Request, response: web.StreamResponse) -> None:
    if not response.get(NO_CORS):
        response.headers.update(_CORS)


def _add_basic_routes(app: web.Application, s: EtcdServer, *, version: bool) -> None:
    registry = _register_collector(s)

    async def health(request: web.Request) -> web.Response:
        if await check_health(s):
            return web.Response(text='{"health":"true"}', content_type="text/plain", charset="utf-8")
        # Go's http.Error: a trailing newline and nosniff.
        return go_error(503, '{"health":"false"}')

    async def version_(request: web.Request) -> web.Response:
        body = json.dumps({"etcdserver": ETCD_SERVER_VERSION, "etcdcluster": ETCD_CLUSTER_VERSION},
                          separators=(",", ":"))
        return web.Response(body=body.encode(), headers={"Content-Type": "application/json"})

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    # Go's handlers: /health and /version answer GET only (HEAD is 405 too),
    # promhttp answers /metrics whatever the method.
    app.router.add_route("GET", "/health", health)
    app.router.add_route("*", "/metrics", metrics)
    if version:
        app.router.add_route("GET", "/version", version_)


def make_client_app(s: EtcdServer, routes: Sequence[RouteAdder] = ()) -> web.Application:
    """The HTTP side of etcd's client URLs; ``routes`` add more (the gateway)."""
    app = web.Application(middlewares=[_options_ok, _mux_errors(GATEWAY_PREFIXES)])
    app.on_response_prepare.append(_add_cors)
    _add_basic_routes(app, s, version=True)
    for add in routes:
        add(app, s)
    return app


def make_metrics_app(s: EtcdServer) -> web.Application:
    """etcd's --listen-metrics-urls handler: /metrics and /health."""
    app = web.Application(middlewares=[_mux_errors(())])
    _add_basic_routes(app, s, version=False)
    return app


Site = tuple[str, int, ssl.SSLContext | None]


class HttpEndpoints:
    """An aiohttp runner for one app: ``async with`` serves it on ``sites``
    ((host, port, ssl context or None); port 0 picks one, ``ports`` are the bound
    ones); :attr:`protocol_factory` serves connections accepted elsewhere (the
    client-port mux hands its HTTP/1.1 connections over). Leaving stops both."""

    def __init__(self, app: web.Application, sites: Sequence[Site] = (), *,
                 shutdown_timeout: float = 1.0) -> None:
        self._app = app
        self._sites = list(sites)
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self.ports: list[int] = []

    async def __aenter__(self) -> HttpEndpoints:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        if self._runner is None or self._runner.server is None:
            raise RuntimeError("HttpEndpoints not started")
        return self._runner.server

    async def start(self) -> None:
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        self._runner = runner
        try:
            for host, port, ssl_context in self._sites:
                site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_port=False)
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
