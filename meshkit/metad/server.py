"""``Metad``: the metadata API and the manage API (aiohttp), fed by the mirror.

    async with Client(endpoints) as client, Metad(client, MetadConfig(...)) as metad:
        await metad.wait_ready(10)
        ...  # metad.port, metad.manage_port

Metadata API (GET/HEAD): ``/{path}``, ``/self``, ``/self/{path}``; ``?wait=true``
long poll with ``&prev_version=N`` and a bounded ``&timeout=SECONDS``. Answers carry
``X-Metad-Version`` (the mirror's version, a cluster revision) and ``X-Metad-RequestID``.

Manage API: ``/v1/data[/{path}]``, ``/v1/mapping[/{path}]`` (GET, POST replace, PUT
merge, DELETE with optional ``?subs=a,b``), ``/v1/rule`` (GET ``?hosts=``, POST/PUT
``{ip: [rules]}``, DELETE ``?hosts=``), ``/health``, ``/metrics``.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from meshkit._internal.clock import Clock, RealClock
from meshkit._internal.errors import MeshkitError
from meshkit._internal.logging import get_logger
from meshkit.client import Client
from meshkit.metad.config import MetadConfig, split_hostport
from meshkit.metad.errors import BadRequestError, MetadError, NotReadyError
from meshkit.metad.mirror import Changes, Mirror
from meshkit.metad.paths import Kind, Parts, canonical_ip, split_path
from meshkit.metad.render import (
    CONTENT_TYPES,
    Format,
    Struct,
    error_body,
    negotiate,
    ok_body,
    render,
)
from meshkit.metad.tree import AccessNode, Tree, Value, readable, visible
from meshkit.metad.writer import Writer

__all__ = ["Metad", "caller_ip"]

log = get_logger("metad")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_TEXT_ERROR_TYPE = "text/plain; charset=utf-8"


def caller_ip(peer: str, forwarded: list[str], trusted: list[Network]) -> str:
    """The caller's IP. ``X-Forwarded-For`` counts only when the peer is a trusted
    proxy; then the right-most address that is not itself a trusted proxy is the
    caller (entries left of it could be forged by the caller). A malformed header
    from a trusted proxy is a 400."""
    ip = canonical_ip(peer) or peer
    if not trusted or not forwarded or not _in(ip, trusted):
        return ip
    chain = [e.strip() for h in forwarded for e in h.split(",") if e.strip()]
    if not chain:
        return ip
    parsed: list[str] = []
    for e in chain:
        c = canonical_ip(e)
        if c is None:
            raise BadRequestError(f"X-Forwarded-For from a trusted proxy holds {e!r}, not an IP")
        parsed.append(c)
    for c in reversed(parsed):
        if not _in(c, trusted):
            return c
    return parsed[0]


def _in(ip: str, nets: list[Network]) -> bool:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(a.version == n.version and a in n for n in nets)


class _Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.cache_hits = 0
        self.long_polls = 0
        self.long_poll_timeouts = 0

    def count(self, api: str, status: int) -> None:
        k = (api, status)
        self.requests[k] = self.requests.get(k, 0) + 1


class Metad:
    """The metadata proxy as an async context manager (aiohttp ``AppRunner`` style)."""

    def __init__(self, client: Client, config: MetadConfig, *, clock: Clock | None = None) -> None:
        problems = config.validate()
        if problems:
            raise ValueError("invalid metad configuration: " + "; ".join(problems))
        self.client = client
        self.config = config
        self.clock: Clock = clock or RealClock()
        self.layout = config.layout()
        self.mirror = Mirror(client, self.layout, clock=self.clock, history=config.history)
        self.writer = Writer(client, self.layout, max_txn_ops=config.max_txn_ops,
                             timeout=client.timeout)
        self._trusted = config.networks()
        self._ids = itertools.count(1)
        self._cache: dict[tuple[Any, ...], tuple[int, bytes]] = {}
        self.metrics = _Metrics()
        self.mirror.on_change(self._cache.clear)
        self._runners: list[web.AppRunner] = []
        self.port = 0
        self.manage_port = 0
        self._closed = False

    # ---- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Metad:
        await self.mirror.__aenter__()
        try:
            self.port = await self._serve(self.data_app(), self.config.listen)
            self.manage_port = await self._serve(self.manage_app(), self.config.manage_listen)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.mirror.close()
        for r in self._runners:
            await r.cleanup()
        self._runners.clear()

    async def wait_ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self.mirror.wait_ready(self.config.ready_timeout if timeout is None else timeout)

    async def _serve(self, app: web.Application, listen: str) -> int:
        host, port = split_hostport(listen)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port)
        await site.start()
        for addr in runner.addresses:
            return int(addr[1])
        return port

    # ---- shared response helpers ---------------------------------------------------------

    def _headers(self, rid: str, version: int) -> dict[str, str]:
        return {"X-Metad-RequestID": rid, "X-Metad-Version": str(version)}

    def _respond(self, rid: str, version: int, fmt: Format, body: bytes, status: int = 200,
                 extra: dict[str, str] | None = None) -> web.Response:
        headers = self._headers(rid, version)
        if status >= 400 and fmt == "text":
            headers["Content-Type"] = _TEXT_ERROR_TYPE
            headers["X-Content-Type-Options"] = "nosniff"
        else:
            headers["Content-Type"] = CONTENT_TYPES[fmt]
        if extra:
            headers.update(extra)
        return web.Response(body=body, status=status, headers=headers)

    def _error(self, rid: str, fmt: Format, err: MetadError, api: str) -> web.Response:
        self.metrics.count(api, err.status)
        return self._respond(rid, self.mirror.version, fmt, error_body(err.message, err.status, fmt),
                             err.status)

    @staticmethod
    def _pretty(request: web.Request) -> bool:
        p = request.query.get("pretty")
        return p is not None and p != "false"

    # ---- the metadata API -----------------------------------------------------------------

    def data_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("GET", "/favicon.ico", self._not_found)
        app.router.add_route("*", "/{tail:.*}", self._data)
        return app

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.Response(status=404, text="404 page not found\n")

    def _caller(self, request: web.Request) -> str:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        ip = str(peer[0]) if peer else ""
        if not self.config.xff:
            return canonical_ip(ip) or ip
        return caller_ip(ip, request.headers.getall("X-Forwarded-For", []), self._trusted)

    async def _data(self, request: web.Request) -> web.StreamResponse:
        rid = f"REQ-{next(self._ids)}"
        fmt = negotiate(request.headers.get("Accept"))
        if request.method not in ("GET", "HEAD"):
            self.metrics.count("data", 405)
            resp = self._respond(rid, self.mirror.version, fmt,
                                 error_body("Method Not Allowed", 405, fmt), 405)
            resp.headers["Allow"] = "GET, HEAD"
            return resp
        try:
            if not self.mirror.ready:
                raise NotReadyError("metadata not loaded yet")
            ip = self._caller(request)
            parts = split_path(request.path)
            is_self = bool(parts) and parts[0] == "self"
            if is_self:
                parts = parts[1:]
            pretty = self._pretty(request)
            extra: dict[str, str] | None = None
            if request.query.get("wait", "").lower() == "true":
                extra = await self._long_poll(request, ip, parts, is_self)
            version, body, status = self._answer(ip, parts, is_self, fmt, pretty)
        except MetadError as e:
            return self._error(rid, fmt, e, "data")
        self.metrics.count("data", status)
        return self._respond(rid, version, fmt, body, status, extra)

    def _answer(self, ip: str, parts: Parts, is_self: bool, fmt: Format, pretty: bool
                ) -> tuple[int, bytes, int]:
        version = self.mirror.version
        key = (ip, parts, is_self, fmt, pretty)
        hit = self._cache.get(key)
        if hit is not None:
            self.metrics.cache_hits += 1
            return version, hit[1], hit[0]
        value = self.self_value(ip, parts) if is_self else self.root_value(ip, parts)
        if value is None:
            status, body = 404, error_body("Not found", 404, fmt)
        else:
            status, body = 200, render(value, fmt, pretty)
        if len(self._cache) >= self.config.cache_entries:
            self._cache.clear()
        self._cache[key] = (status, body)
        return version, body, status

    def root_value(self, ip: str, parts: Parts) -> Value | None:
        """What ``GET /{path}`` shows this caller (access rules applied); ``/`` adds ``self``."""
        access = self.mirror.access(ip)
        if access is None:
            return None
        value = visible(self.mirror.data, access, parts, root_empty=True)
        if not parts and isinstance(value, dict):
            me = self._self_from(ip, (), access)
            if me is not None:
                value = {**value, "self": me}
        return value

    def self_value(self, ip: str, parts: Parts) -> Value | None:
        """What ``GET /self/{path}`` shows this caller: its mapping resolved into the data."""
        access = self.mirror.access(ip)
        if access is None:
            return None
        return self._self_from(ip, parts, access)

    def _self_from(self, ip: str, parts: Parts, access: AccessNode) -> Value | None:
        mapping = self.mirror.mapping_of(ip)
        if mapping is None or not mapping.root.children:
            return None
        return self._resolve(mapping.root.children, parts, access, top=True)

    def _resolve(self, mapping: dict[str, Any], parts: Parts, access: AccessNode, *, top: bool
                 ) -> Value | None:
        if not parts:
            out: dict[str, Value] = {}
            for name, node in mapping.items():
                if node.children:
                    v = self._resolve(node.children, (), access, top=False)
                elif node.value is not None and node.value.startswith("/"):
                    v = self._link(node.value, (), access)
                else:
                    v = None
                if v is not None:
                    out[name] = v
            return out if (out or top) else None
        node = mapping.get(parts[0])
        if node is None:
            return None
        if node.children:
            return self._resolve(node.children, parts[1:], access, top=False)
        if node.value is not None and node.value.startswith("/"):
            return self._link(node.value, parts[1:], access)
        return None

    def _link(self, link: str, rest: Parts, access: AccessNode) -> Value | None:
        try:
            base = split_path(link)
        except MetadError:
            return None
        return visible(self.mirror.data, access, (*base, *rest))

    # ---- long poll -------------------------------------------------------------------------

    def _links(self, ip: str, parts: Parts) -> list[Parts]:
        """Data paths the caller's ``/self/{parts}`` reads (for the long-poll predicate)."""
        mapping = self.mirror.mapping_of(ip)
        if mapping is None:
            return []
        out: list[Parts] = []
        for mparts, link in mapping.items():
            try:
                base = split_path(link)
            except MetadError:
                continue
            n = min(len(parts), len(mparts))
            if mparts[:n] != parts[:n]:
                continue
            out.append((*base, *parts[len(mparts):]) if len(parts) > len(mparts) else base)
        return out

    def _predicate(self, ip: str, parts: Parts, is_self: bool) -> Callable[[Changes], bool]:
        mirror = self.mirror

        def related(a: Parts, b: Parts) -> bool:
            n = min(len(a), len(b))
            return a[:n] == b[:n]

        def pred(ch: Changes) -> bool:
            if ch.everything or ip in ch.mapping_hosts or ip in ch.rule_hosts:
                return True
            access = mirror.access(ip)
            if access is None or not ch.data:
                return False
            bases = self._links(ip, parts) if is_self else [parts]
            if not is_self and not parts:
                bases += self._links(ip, ())
            return any(related(d, b) and readable(access, d) for d in ch.data for b in bases)

        return pred

    async def _long_poll(self, request: web.Request, ip: str, parts: Parts, is_self: bool
                         ) -> dict[str, str] | None:
        q = request.query
        prev: int | None = None
        if "prev_version" in q or "pre_version" in q:
            text = q.get("prev_version", q.get("pre_version", ""))
            try:
                prev = int(text)
            except ValueError:
                raise BadRequestError(f"prev_version must be an integer, got {text!r}") from None
        timeout = self.config.wait_timeout
        if "timeout" in q:
            try:
                timeout = float(q["timeout"])
            except ValueError:
                raise BadRequestError(f"timeout must be a number of seconds, got {q['timeout']!r}") from None
            if not 0 < timeout < float("inf"):
                raise BadRequestError("timeout must be a positive number of seconds")
            timeout = min(timeout, self.config.max_wait_timeout)
        if self.mirror.waiters >= self.config.max_waiters:
            raise MetadError("too many long polls in progress") from None
        pred = self._predicate(ip, parts, is_self)
        version = self.mirror.version
        if prev is not None and prev > 0:
            if self.mirror.changed_since(pred, prev):
                return None
            after = max(prev, version)
        else:
            after = version
        self.metrics.long_polls += 1
        changed = await self.mirror.wait_change(pred, after, timeout)
        if not changed:
            self.metrics.long_poll_timeouts += 1
            return {"X-Metad-Wait": "timeout"}
        return None

    # ---- the manage API ---------------------------------------------------------------------

    def manage_app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        for kind in ("data", "mapping"):
            for path in (f"/v1/{kind}", f"/v1/{kind}/{{tail:.*}}"):
                app.router.add_route("*", path, self._wrap(self._tree_handler(kind)))  # type: ignore[arg-type]
        for path in ("/v1/rule", "/v1/rule/"):
            app.router.add_route("*", path, self._wrap(self._rule))
        return app

    def _wrap(self, fn: Callable[[web.Request, Format], Awaitable[Any]]
              ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            rid = f"REQ-{next(self._ids)}"
            fmt = negotiate(request.headers.get("Accept"))
            try:
                if not self.mirror.ready:
                    raise NotReadyError("metadata not loaded yet")
                result = await fn(request, fmt)
            except MetadError as e:
                return self._error(rid, fmt, e, "manage")
            except web.HTTPException:
                raise
            except MeshkitError as e:
                log.warning("metad: manage %s %s failed: %s", request.method, request.path, e)
                return self._error(rid, fmt, MetadError(f"cluster error: {e}"), "manage")
            self.metrics.count("manage", 200)
            pretty = self._pretty(request)
            body = ok_body(fmt, pretty) if result is None else render(result, fmt, pretty)
            return self._respond(rid, self.mirror.version, fmt, body)

        return handler

    async def _json_body(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequestError(f"invalid json format, error:{e}") from None

    async def _settle(self, revision: int) -> None:
        """Answer a write once the mirror shows it (read your writes), bounded."""
        if revision:
            await self.mirror.wait_version(revision, self.client.timeout)

    def _tree_handler(self, kind: Kind) -> Callable[[web.Request, Format], Awaitable[Any]]:
        async def handle(request: web.Request, fmt: Format) -> Any:
            parts = split_path(request.match_info.get("tail", ""))
            method = request.method
            tree: Tree = self.mirror.data if kind == "data" else self.mirror.mapping
            if method == "GET":
                if kind == "data" and self.layout.data_is_reserved(parts):
                    raise _NotFound()
                value = tree.get(parts) if parts else (tree.root.read() or {})
                if value is None:
                    raise _NotFound()
                return value
            if method in ("POST", "PUT"):
                body = await self._json_body(request)
                rev = await self.writer.put(kind, parts, body, replace=method == "POST")
                await self._settle(rev)
                return None
            if method == "DELETE":
                subs = request.query.get("subs", "")
                rev = await self.writer.delete(kind, parts, subs.split(",") if subs else None)
                await self._settle(rev)
                return None
            raise _MethodNotAllowed()

        return handle

    async def _rule(self, request: web.Request, fmt: Format) -> Any:
        hosts = [h for h in request.query.get("hosts", "").split(",") if h.strip()]
        if request.method == "GET":
            rules = self.mirror.rules([canonical_ip(h) or h for h in hosts] or None)
            return {h: [Struct(r.as_dict()) for r in rs] for h, rs in rules.items()}
        if request.method in ("POST", "PUT"):
            parsed = self.writer.parse_rule_body(await self._json_body(request))
            await self._settle(await self.writer.put_rules(parsed))
            return None
        if request.method == "DELETE":
            if not hosts:
                raise BadRequestError("give the hosts whose rules to delete: ?hosts=ip1,ip2")
            await self._settle(await self.writer.delete_rules(hosts))
            return None
        raise _MethodNotAllowed()

    async def _health(self, request: web.Request) -> web.Response:
        ready = self.mirror.ready
        body = {"status": "up" if ready else "down", "version": self.mirror.version}
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        m, mi = self.metrics, self.mirror
        lines = [
            "# HELP metad_requests_total Requests answered, by API and status.",
            "# TYPE metad_requests_total counter",
            *(f'metad_requests_total{{api="{api}",code="{code}"}} {n}'
              for (api, code), n in sorted(m.requests.items())),
            "# HELP metad_cache_hits_total Metadata answers served from the rendered cache.",
            "# TYPE metad_cache_hits_total counter",
            f"metad_cache_hits_total {m.cache_hits}",
            "# HELP metad_long_polls_total Long polls (wait=true) started.",
            "# TYPE metad_long_polls_total counter",
            f"metad_long_polls_total {m.long_polls}",
            "# HELP metad_long_poll_timeouts_total Long polls that ended on their timeout.",
            "# TYPE metad_long_poll_timeouts_total counter",
            f"metad_long_poll_timeouts_total {m.long_poll_timeouts}",
            "# HELP metad_waiters Long polls waiting now.",
            "# TYPE metad_waiters gauge",
            f"metad_waiters {mi.waiters}",
            "# HELP metad_version The mirror's version (cluster revision of the last change).",
            "# TYPE metad_version gauge",
            f"metad_version {mi.version}",
            "# HELP metad_keys Keys held by the mirror (data, mapping, rule hosts).",
            "# TYPE metad_keys gauge",
            f"metad_keys {mi.keys}",
            "# HELP metad_resyncs_total Fresh snapshots read after a compacted watch.",
            "# TYPE metad_resyncs_total counter",
            f"metad_resyncs_total {mi.resyncs}",
            "# HELP metad_ready Whether the first snapshot is loaded.",
            "# TYPE metad_ready gauge",
            f"metad_ready {1 if mi.ready else 0}",
        ]
        return web.Response(text="\n".join(lines) + "\n",
                            content_type="text/plain", charset="utf-8")


class _NotFound(MetadError):
    status = 404

    def __init__(self) -> None:
        super().__init__("Not found")


class _MethodNotAllowed(MetadError):
    status = 405

    def __init__(self) -> None:
        super().__init__("Method Not Allowed")


