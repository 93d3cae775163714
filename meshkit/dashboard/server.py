"""``Dashboard``: the web dashboard as an async context manager (aiohttp ``AppRunner`` style).

It speaks to etcd only through ``meshkit.client`` (and the registry, config center and
concurrency key layouts), so it runs against ``meshkit server`` and a real etcd alike.

Requests pass one gate (``_gate``) before any handler:

1. the session from the cookie, or a new anonymous one (cookie ``HttpOnly``,
   ``SameSite=Strict``);
2. a write (any method but GET/HEAD/OPTIONS) needs an ``Origin`` of the dashboard and
   the session's CSRF token (``X-CSRF-Token`` header or ``csrf_token`` field): 403 else;
3. when etcd has auth enabled, every page and API needs a logged-in session, whose
   own client (the user's name and password) makes every etcd call: the dashboard
   never acts with more rights than the user. When auth is off, sessions share one
   client without a user, and the pages say so.

Every response carries a strict Content-Security-Policy (scripts and styles from
``/static/`` only); the pages build their DOM with ``textContent``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from meshkit._internal.clock import Clock, RealClock
from meshkit._internal.errors import (
    AuthAdminDeniedError,
    AuthFailedError,
    AuthNotEnabledError,
    EtcdError,
    InvalidAuthTokenError,
    LeaseNotFoundError,
    MeshkitError,
    PermissionDeniedError,
    UserEmptyError,
)
from meshkit._internal.logging import get_logger
from meshkit.client import Client, ClientError, WatchCanceledError, WatchCompactedError
from meshkit.configcenter import (
    ConfigCenterError,
    ConfigNotFoundError,
    ConfigStore,
    ConflictError,
    DocumentError,
    InvalidNameError,
    RevisionNotFoundError,
)
from meshkit.dashboard import configs, keys, locks, members, services
from meshkit.dashboard.codec import BadParameter, from_b64
from meshkit.dashboard.config import DashboardConfig, split_hostport
from meshkit.dashboard.feeds import EventStream, TooManyKeysError
from meshkit.dashboard.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    SessionStore,
    WebSession,
    csrf_ok,
    origin_ok,
)

__all__ = ["Dashboard"]

_log = get_logger("dashboard")

_HERE = Path(__file__).resolve().parent
STATIC_DIR = _HERE / "static"
TEMPLATE_DIR = _HERE / "templates"

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# etcd no longer accepts the session's user: the session ends, the browser logs in again.
_SESSION_ERRORS = (AuthFailedError, InvalidAuthTokenError, UserEmptyError, AuthNotEnabledError)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

PAGES: dict[str, str] = {
    "members": "Members",
    "keys": "Keys",
    "services": "Services",
    "locks": "Locks & elections",
    "config": "Config center",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GatedHandler = Callable[[web.Request, "_Ctx"], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class _Ctx:
    """What the gate found for a request: its session and the client acting for it."""

    session: WebSession
    client: Client
    auth_on: bool


class _HttpError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def _safe_next(target: str | None) -> str:
    """Only a path of this dashboard is a place to go after login."""
    if (not target or not target.startswith("/") or target.startswith("//")
            or "\\" in target or any(ord(c) < 0x20 for c in target)):
        return "/members"
    return target


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith(("/api/", "/events/"))


class Dashboard:
    """``async with Dashboard(config) as d:`` serves on ``d.url`` until left."""

    def __init__(self, config: DashboardConfig, *, clock: Clock | None = None) -> None:
        problems = config.validate()
        if problems:
            raise ValueError("invalid dashboard configuration: " + "; ".join(problems))
        self.config = config
        self.clock: Clock = clock or RealClock()
        self.sessions = SessionStore(idle=config.session_idle, max_age=config.session_max_age,
                                     max_sessions=config.max_sessions, clock=self.clock)
        self.probes = members.StatusProbes(lambda ep: self._new_client([ep]))
        self._anon: Client | None = None
        self._auth_cache: tuple[float, bool] | None = None
        self._auth_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._jinja = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True,
            undefined=jinja2.StrictUndefined)
        self.host = ""
        self.port = 0
        self._entered = False
        self._closed = False

    # ---- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Dashboard:
        if self._entered:
            raise RuntimeError("a Dashboard is entered once")
        self._entered = True
        try:
            self._anon = self._new_client(list(self.config.endpoints))
            await self.sessions.__aenter__()
            await self.probes.__aenter__()
            host, port = split_hostport(self.config.listen)
            runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True,
                                   shutdown_timeout=2.0)
            await runner.setup()
            self._runner = runner
            site = web.TCPSite(runner, host or None, port)
            await site.start()
            self.host = host or "0.0.0.0"
            self.port = next((int(a[1]) for a in runner.addresses), port)
        except BaseException:
            await self.close()
            raise
        _log.info("dashboard listening on %s", self.url)
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every event stream, the HTTP server, the sessions and the clients."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.probes.close()
        await self.sessions.close()
        if self._anon is not None:
            await self._anon.close()

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def _new_client(self, endpoints: list[str], user: str | None = None,
                    password: str | None = None) -> Client:
        c = self.config
        return Client(endpoints, timeout=c.timeout, user=user, password=password,
                      ca_cert=c.ca_cert, cert=c.cert, key=c.key)

    # ---- auth ----------------------------------------------------------------------------

    async def auth_enabled(self) -> bool:
        """Whether etcd has auth enabled: a read without a user is refused with
        ``user name is empty`` (checked at most once a second)."""
        now = self.clock.monotonic()
        if self._auth_cache is not None and now - self._auth_cache[0] < 1.0:
            return self._auth_cache[1]
        async with self._auth_lock:
            now = self.clock.monotonic()
            if self._auth_cache is not None and now - self._auth_cache[0] < 1.0:
                return self._auth_cache[1]
            assert self._anon is not None
            try:
                await self._anon.get(b"\x00", keys_only=True, limit=1, serializable=True)
                on = False
            except (UserEmptyError, PermissionDeniedError, InvalidAuthTokenError):
                on = True
            self._auth_cache = (self.clock.monotonic(), on)
            return on

    async def _check_login(self, user: str, password: str) -> Client:
        """A client acting as ``user`` once etcd accepted the password (raises
        ``AuthFailedError`` / ``AuthNotEnabledError`` / connection errors)."""
        client = self._new_client(list(self.config.endpoints), user, password)
        try:
            try:
                await client.get(b"\x00", keys_only=True, limit=1, serializable=True)
            except PermissionDeniedError:
                pass  # authenticated; this user just may not read that key
        except BaseException:
            await client.close()
            raise
        return client

    # ---- the application -----------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 << 20)
        app.on_response_prepare.append(self._security_headers)
        r = app.router
        g = self._gated
        r.add_get("/", g(self._root))
        r.add_get("/login", g(self._login_page))
        r.add_post("/login", g(self._login))
        r.add_post("/logout", g(self._logout))
        for page in PAGES:
            r.add_get(f"/{page}", g(self._page))
        r.add_get("/api/session", g(self._api_session))
        r.add_get("/api/members", g(self._api_members))
        r.add_get("/api/keys/list", g(self._api_keys_list))
        r.add_get("/api/keys/get", g(self._api_keys_get))
        r.add_get("/api/keys/history", g(self._api_keys_history))
        r.add_post("/api/keys/put", g(self._api_keys_put))
        r.add_post("/api/keys/delete", g(self._api_keys_delete))
        r.add_get("/api/config/history", g(self._api_config_history))
        r.add_get("/api/config/version", g(self._api_config_version))
        r.add_get("/api/config/diff", g(self._api_config_diff))
        r.add_post("/api/config/rollback", g(self._api_config_rollback))
        r.add_get("/events/members", g(self._events_members))
        r.add_get("/events/keys", g(self._events_keys))
        r.add_get("/events/services", g(self._events_services))
        r.add_get("/events/locks", g(self._events_locks))
        r.add_get("/events/config", g(self._events_config))
        r.add_static("/static/", STATIC_DIR, append_version=False)
        return app

    async def _security_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        if not request.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")

    def _set_cookie(self, request: web.Request, response: web.StreamResponse, s: WebSession) -> None:
        response.set_cookie(SESSION_COOKIE, s.sid, httponly=True, samesite="Strict", path="/",
                            secure=self.config.cookie_secure or request.secure)

    def _error_response(self, request: web.Request, session: WebSession | None,
                        e: Exception) -> web.Response:
        status, message, extra = self._classify(session, e)
        if status >= 500 and not isinstance(e, MeshkitError):
            _log.error("request %s %s failed: %r", request.method, request.path, e)
        if _wants_json(request):
            return web.json_response({"error": message, **extra}, status=status)
        return self._render(None, "error.html", status=status, title="Error", message=message,
                            page="")

    def _classify(self, session: WebSession | None, e: Exception) -> tuple[int, str, dict[str, Any]]:
        if isinstance(e, _HttpError):
            return e.status, e.message, e.extra
        if isinstance(e, BadParameter | json.JSONDecodeError):
            return 400, str(e), {}
        if isinstance(e, _SESSION_ERRORS):
            if session is not None and session.user is not None:
                self.sessions.end(session)
                return 401, f"etcd no longer accepts the session ({e}): log in again", {"login": "/login"}
            return 401, str(e), {"login": "/login"}
        if isinstance(e, PermissionDeniedError | AuthAdminDeniedError):
            return 403, str(e), {"etcd": True}
        if isinstance(e, ConflictError):
            return 409, str(e), {"current_revision": e.current_revision,
                                 "current_version": e.current_version}
        if isinstance(e, ConfigNotFoundError | RevisionNotFoundError):
            return 404, str(e), {}
        if isinstance(e, InvalidNameError | DocumentError | LeaseNotFoundError | TooManyKeysError):
            return 400, str(e), {}
        if isinstance(e, ConfigCenterError):
            return 400, str(e), {}
        if isinstance(e, ClientError) and not isinstance(e, WatchCanceledError):
            return 503, f"etcd is not reachable: {e}", {}
        if isinstance(e, EtcdError):
            return 502, str(e), {}
        if isinstance(e, MeshkitError):
            return 500, str(e), {}
        return 500, "internal error (see the dashboard's log)", {}

    def _gated(self, handler: GatedHandler) -> Handler:
        """``handler(request, ctx)`` behind the gate: session, CSRF/Origin on writes,
        login when etcd has auth on; errors become JSON (API) or an error page."""

        async def gate(request: web.Request) -> web.StreamResponse:
            s = self.sessions.get(request.cookies.get(SESSION_COOKIE))
            fresh = s is None
            if s is None:
                s = self.sessions.new()
            try:
                if request.method not in _SAFE_METHODS:
                    self._check_write(request, s, await self._provided_token(request))
                auth_on = await self.auth_enabled()
                if not auth_on and s.user is not None:
                    self.sessions.end(s)  # auth was turned off: nobody acts as that user now
                    s, fresh = self.sessions.new(), True
                if auth_on and not s.logged_in and request.path not in ("/login", "/logout"):
                    if _wants_json(request):
                        raise _HttpError(401, "log in first: etcd has auth enabled", login="/login")
                    raise web.HTTPSeeOther("/login?next=" + quote(request.path_qs, safe="/")
                                           if request.path != "/" else "/login")
                assert self._anon is not None
                client = s.client if s.client is not None else self._anon
                resp = await handler(request, _Ctx(s, client, auth_on))
            except web.HTTPException as e:
                if fresh and SESSION_COOKIE not in e.cookies:
                    self._set_cookie(request, e, s)
                raise
            except asyncio.CancelledError:
                raise
            except Exception as e:
                resp = self._error_response(request, s, e)
            if fresh and not resp.prepared and SESSION_COOKIE not in resp.cookies:
                self._set_cookie(request, resp, s)
            return resp

        return gate

    async def _provided_token(self, request: web.Request) -> str | None:
        token = request.headers.get(CSRF_HEADER)
        if token is None and request.content_type in ("application/x-www-form-urlencoded",
                                                      "multipart/form-data"):
            form = await request.post()
            v = form.get(CSRF_FIELD)
            token = v if isinstance(v, str) else None
        return token

    def _check_write(self, request: web.Request, s: WebSession, token: str | None) -> None:
        own = f"{request.scheme}://{request.host}"
        if not origin_ok(request.headers.get("Origin"), request.headers.get("Referer"), own,
                         self.config.allowed_origins):
            raise _HttpError(403, "refused: the request does not come from a page of this dashboard "
                                  "(Origin)")
        if not csrf_ok(s, token):
            raise _HttpError(403, "refused: CSRF token missing or wrong (reload the page)")

    # ---- pages ---------------------------------------------------------------------------

    def _render(self, ctx: _Ctx | None, template: str, *, status: int = 200,
                **values: Any) -> web.Response:
        base = {
            "pages": PAGES, "csrf": ctx.session.csrf if ctx else "",
            "user": ctx.session.user if ctx else None, "auth_on": ctx.auth_on if ctx else False,
            "endpoints": ", ".join(self.config.endpoints), "csrf_field": CSRF_FIELD,
        }
        base.update(values)
        html = self._jinja.get_template(template).render(**base)
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")

    async def _root(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        raise web.HTTPSeeOther("/members")

    async def _page(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        page = request.path.strip("/")
        extra: dict[str, Any] = {}
        if page == "locks":
            extra["lock_prefixes"] = [p or "(every key)" for p in self.config.lock_prefixes]
        if page == "services":
            extra["registry_prefix"] = self.config.registry_prefix
        if page == "config":
            extra["config_prefix"] = self.config.config_prefix
        return self._render(ctx, f"{page}.html", title=PAGES[page], page=page, **extra)

    async def _login_page(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        nxt = _safe_next(request.query.get("next"))
        if not ctx.auth_on or ctx.session.logged_in:
            raise web.HTTPSeeOther(nxt)
        return self._render(ctx, "login.html", title="Log in", page="login", next=nxt,
                            error=None, username="")

    async def _login(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        form = await request.post()
        nxt = _safe_next(str(form.get("next") or ""))
        username = str(form.get("username") or "")
        password = str(form.get("password") or "")
        if not ctx.auth_on:
            raise web.HTTPSeeOther(nxt)
        if not username or not password:
            return self._render(ctx, "login.html", status=400, title="Log in", page="login",
                                next=nxt, error="give a user name and a password",
                                username=username)
        try:
            client = await self._check_login(username, password)
        except AuthFailedError:
            _log.info("login refused for user %s", username)
            return self._render(ctx, "login.html", status=401, title="Log in", page="login",
                                next=nxt, error="authentication failed, invalid user name or password",
                                username=username)
        except AuthNotEnabledError:
            self._auth_cache = None
            raise web.HTTPSeeOther(nxt) from None
        finally:
            password = ""
        s = self.sessions.login(ctx.session, username, client)
        resp = web.HTTPSeeOther(nxt)
        self._set_cookie(request, resp, s)
        raise resp

    async def _logout(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        self.sessions.end(ctx.session)
        s = self.sessions.new()
        resp = web.HTTPSeeOther("/login" if ctx.auth_on else "/members")
        self._set_cookie(request, resp, s)
        raise resp

    # ---- JSON API ------------------------------------------------------------------------

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise _HttpError(415, "send the request body as application/json")
        body = await request.json()
        if not isinstance(body, dict):
            raise BadParameter("the body must be a JSON object")
        return body

    @staticmethod
    def _int(value: Any, what: str, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise BadParameter(f"{what} must be an integer >= {minimum}")
        return value

    @staticmethod
    def _query_int(request: web.Request, name: str, minimum: int = 0) -> int:
        text = request.query.get(name, "")
        if not text.isdigit() or int(text) < minimum:
            raise BadParameter(f"{name} must be an integer >= {minimum}")
        return int(text)

    @staticmethod
    def _query_key(request: web.Request, name: str = "key", *, empty_ok: bool = False) -> bytes:
        key = from_b64(request.query.get(name, ""), name)
        if not key and not empty_ok:
            raise BadParameter(f"{name} must not be empty")
        return key

    async def _api_session(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        return web.json_response({"user": ctx.session.user, "auth": ctx.auth_on})

    async def _api_members(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        snap = await members.members_snapshot(ctx.client, self.probes,
                                              call_timeout=min(self.config.timeout, 3.0))
        return web.json_response(snap)

    async def _api_keys_list(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        prefix = self._query_key(request, "prefix", empty_ok=True)
        return web.json_response(await keys.list_children(ctx.client, prefix,
                                                          limit=self.config.list_limit))

    async def _api_keys_get(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        key = self._query_key(request)
        return web.json_response(await keys.get_key(ctx.client, key,
                                                    max_value_bytes=self.config.max_value_bytes))

    async def _api_keys_history(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        key = self._query_key(request)
        return web.json_response(await keys.key_history(ctx.client, key,
                                                        limit=self.config.history_limit))

    async def _api_keys_put(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        body = await self._body(request)
        key = from_b64(str(body.get("key", "")), "key")
        if not key:
            raise BadParameter("the key must not be empty")
        if isinstance(body.get("value_b64"), str):
            value = from_b64(body["value_b64"], "value_b64")
        elif isinstance(body.get("value"), str):
            value = body["value"].encode("utf-8")
        else:
            raise BadParameter("give value (text) or value_b64")
        expect = self._int(body.get("expect_mod_revision"), "expect_mod_revision")
        lease_text = str(body.get("lease") or "").strip().lower()
        try:
            lease = int(lease_text, 16) if lease_text else 0
        except ValueError:
            raise BadParameter("lease must be a lease id in hex") from None
        result = await keys.put_key(ctx.client, key, value, expect_mod_revision=expect, lease=lease)
        _log.info("user %s put a key (%d bytes) at revision %d", ctx.session.user or "-",
                  len(value), result["revision"])
        return web.json_response(result, status=200 if result["ok"] else 409)

    async def _api_keys_delete(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        body = await self._body(request)
        key = from_b64(str(body.get("key", "")), "key")
        if not key:
            raise BadParameter("the key must not be empty")
        expect = self._int(body.get("expect_mod_revision"), "expect_mod_revision", 1)
        result = await keys.delete_key(ctx.client, key, expect_mod_revision=expect)
        return web.json_response(result, status=200 if result["ok"] else 409)

    def _store(self, ctx: _Ctx) -> ConfigStore:
        return ConfigStore(ctx.client, prefix=self.config.config_prefix,
                           author=ctx.session.user or "dashboard")

    async def _api_config_history(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        name = request.query.get("name", "")
        return web.json_response(await configs.config_history(self._store(ctx), name))

    async def _api_config_version(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        name = request.query.get("name", "")
        v = await self._store(ctx).get(name, self._query_int(request, "revision", 1))
        return web.json_response(configs.version_json(v))

    async def _api_config_diff(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        name = request.query.get("name", "")
        a = self._query_int(request, "from", 1)
        b = self._query_int(request, "to", 1)
        text = await self._store(ctx).diff(name, a, b)
        return web.json_response({"name": name, "from": a, "to": b, "diff": text})

    async def _api_config_rollback(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        body = await self._body(request)
        name = str(body.get("name", ""))
        revision = self._int(body.get("revision"), "revision", 1)
        base = self._int(body.get("base_revision"), "base_revision")
        v = await self._store(ctx).rollback(name, revision, base_revision=base)
        _log.info("user %s rolled %s back to revision %d: version %d", ctx.session.user or "-",
                  name, revision, v.version)
        return web.json_response({"ok": True, "version": v.summary()})

    # ---- event streams -------------------------------------------------------------------

    async def _stream(self, request: web.Request, ctx: _Ctx,
                      producer: Callable[[EventStream, Client], Awaitable[None]]) -> web.StreamResponse:
        # An open page is a used session: each heartbeat marks it used (until its max age).
        async with EventStream(request, heartbeat=self.config.heartbeat,
                               stop=[self._stopping, ctx.session.ended],
                               still_wanted=lambda: self.sessions.get(ctx.session.sid) is ctx.session,
                               ) as es:
            await es.run(lambda stream: producer(stream, ctx.client))
        return es.response

    async def _events_members(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        c = self.config
        return await self._stream(request, ctx, lambda es, client: members.stream_members(
            es, client, self.probes, interval=c.status_interval, call_timeout=min(c.timeout, 3.0)))

    async def _events_keys(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        prefix = self._query_key(request, "prefix", empty_ok=True)
        rev = self._query_int(request, "revision", 1)

        async def produce(es: EventStream, client: Client) -> None:
            start, end = keys.key_range_of(prefix)
            try:
                async with client.watch(start, end, start_revision=rev + 1) as w:
                    async for resp in w:
                        if resp.events:
                            await es.send("change", await keys.child_changes(client, prefix,
                                                                             resp.events))
            except WatchCompactedError as e:  # the page lists the prefix again
                await es.send("resync", {"compact_revision": e.compact_revision})
        return await self._stream(request, ctx, produce)

    async def _events_services(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        c = self.config
        return await self._stream(request, ctx, lambda es, client: services.stream_services(
            es, client, c.registry_prefix, ttl_refresh=c.ttl_refresh, limit=c.scan_limit))

    async def _events_locks(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        c = self.config
        return await self._stream(request, ctx, lambda es, client: locks.stream_locks(
            es, client, c.lock_prefixes, ttl_refresh=c.ttl_refresh, limit=c.scan_limit))

    async def _events_config(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        c = self.config
        return await self._stream(request, ctx, lambda es, client: configs.stream_configs(
            es, client, c.config_prefix, limit=c.scan_limit))
