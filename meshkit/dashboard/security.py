"""Browser sessions, CSRF tokens and the Origin rule of the dashboard.

* A session is a random id in a cookie (``HttpOnly``, ``SameSite=Strict``) naming a
  server-side record: its CSRF token and, once logged in, the user's own etcd client.
  The password is never kept by the dashboard: it lives only inside that client (which
  needs it to renew etcd's token) and goes with it when the session ends.
* Sessions end after ``idle`` seconds unused and ``max_age`` seconds in all; logging in
  issues a new id and token (no fixation); at ``max_sessions`` the least recently used
  anonymous session goes first.
* Every write carries the session's CSRF token (header or form field), compared with
  ``hmac.compare_digest``, and an ``Origin`` (or, lacking it, ``Referer``) of the
  dashboard itself or of a configured origin.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlsplit

from meshkit._internal.clock import Clock, RealClock
from meshkit._internal.logging import get_logger
from meshkit.client import Client

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "SessionStore",
    "WebSession",
    "csrf_ok",
    "origin_ok",
]

_log = get_logger("dashboard.sessions")

SESSION_COOKIE = "meshkit_dashboard"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


def _token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(eq=False)
class WebSession:
    """One browser's session. ``client`` is the logged-in user's own etcd client (None
    for an anonymous session, which uses the dashboard's anonymous client)."""

    sid: str
    csrf: str
    created: float
    last_seen: float
    user: str | None = None
    client: Client | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def logged_in(self) -> bool:
        return self.user is not None and not self.ended.is_set()


def csrf_ok(session: WebSession | None, provided: str | None) -> bool:
    """Whether ``provided`` is this session's CSRF token (constant-time comparison)."""
    if session is None or not provided or session.ended.is_set():
        return False
    return hmac.compare_digest(session.csrf.encode("utf-8"), provided.encode("utf-8"))


def _origin_of(url: str) -> str | None:
    try:
        u = urlsplit(url)
    except ValueError:
        return None
    if not u.scheme or not u.netloc:
        return None
    return f"{u.scheme}://{u.netloc}".lower()


def origin_ok(origin: str | None, referer: str | None, own: str, allowed: Iterable[str] = ()) -> bool:
    """A write must come from a page of the dashboard: its ``Origin`` (or, when the
    browser sent none, its ``Referer``'s origin) is ``own`` or one of ``allowed``.
    A request with neither is refused, and so is ``Origin: null``."""
    accepted = {own.lower().rstrip("/"), *(a.lower().rstrip("/") for a in allowed)}
    if origin is not None:
        return origin.strip().lower().rstrip("/") in accepted
    if referer:
        o = _origin_of(referer.strip())
        return o is not None and o in accepted
    return False


class SessionStore:
    """Sessions by id, with expiry; an async context manager owning the reaper task and
    the closing of ended sessions' clients."""

    def __init__(self, *, idle: float, max_age: float, max_sessions: int,
                 clock: Clock | None = None, reap_interval: float = 30.0) -> None:
        if idle <= 0 or max_age <= 0 or max_sessions < 1:
            raise ValueError("idle and max_age must be positive, max_sessions at least 1")
        self.idle = idle
        self.max_age = max_age
        self.max_sessions = max_sessions
        self.clock: Clock = clock or RealClock()
        self.reap_interval = reap_interval
        self._sessions: dict[str, WebSession] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    # ---- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> SessionStore:
        tg = asyncio.TaskGroup()
        await tg.__aenter__()
        self._tg = tg
        self._reaper = tg.create_task(self._reap_loop(), name="dashboard-session-reaper")
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """End every session (closing the users' clients) and stop the reaper."""
        if self._closed:
            return
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for s in sessions:
            s.ended.set()
        for s in sessions:
            if s.client is not None:
                await s.client.close()
        if self._tg is not None:
            tg, self._tg = self._tg, None
            await tg.__aexit__(None, None, None)

    # ---- sessions ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sessions)

    def _expired(self, s: WebSession, now: float) -> bool:
        return now - s.last_seen > self.idle or now - s.created > self.max_age

    def new(self) -> WebSession:
        """A fresh anonymous session (the least recently used one goes when full)."""
        if self._closed:
            raise RuntimeError("the session store is closed")
        now = self.clock.monotonic()
        while len(self._sessions) >= self.max_sessions:
            anon = [s for s in self._sessions.values() if s.user is None]
            victim = min(anon or self._sessions.values(), key=lambda s: s.last_seen)
            self._drop(victim)
        s = WebSession(sid=_token(), csrf=_token(), created=now, last_seen=now)
        self._sessions[s.sid] = s
        return s

    def get(self, sid: str | None) -> WebSession | None:
        """The live session with this id (marked as used now), or None."""
        if not sid:
            return None
        s = self._sessions.get(sid)
        if s is None:
            return None
        now = self.clock.monotonic()
        if self._expired(s, now):
            self._drop(s)
            return None
        s.last_seen = now
        return s

    def login(self, old: WebSession | None, user: str, client: Client) -> WebSession:
        """A new session (new id, new CSRF token) for ``user`` acting through ``client``,
        which the store now owns; ``old`` ends."""
        if self._tg is None:
            raise RuntimeError("enter the session store (async with) before logging users in")
        if old is not None:
            self._drop(old)
        s = self.new()
        s.user = user
        s.client = client
        _log.info("user %s logged in", user)
        return s

    def end(self, s: WebSession) -> None:
        """End a session now (logout, or etcd no longer accepts its user)."""
        if s.user is not None:
            _log.info("user %s logged out", s.user)
        self._drop(s)

    def _drop(self, s: WebSession) -> None:
        if self._sessions.get(s.sid) is s:
            del self._sessions[s.sid]
        s.ended.set()
        client, s.client = s.client, None
        if client is not None and self._tg is not None:
            self._tg.create_task(client.close(), name="dashboard-session-close")

    def reap(self) -> int:
        """End every expired session now; returns how many ended."""
        now = self.clock.monotonic()
        dead = [s for s in self._sessions.values() if self._expired(s, now)]
        for s in dead:
            self._drop(s)
        return len(dead)

    async def _reap_loop(self) -> None:
        while True:
            await self.clock.sleep(self.reap_interval)
            n = self.reap()
            if n:
                _log.debug("%d expired sessions ended", n)
