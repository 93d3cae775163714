"""The dashboard over plain HTTP (no browser): CSRF and Origin on writes, sessions and
login, the user's own rights, guarded writes, event streams, headers; the CLI."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from meshkit._internal.clock import FakeClock
from meshkit.client import Client
from meshkit.dashboard import Dashboard, DashboardConfig
from meshkit.dashboard.feeds import Changes, PrefixFeed, Snapshot
from tests.support.procs import ServerProc
from tests.tools.dashboard.conftest import ALICE, DashboardProc

pytestmark = pytest.mark.etcd

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def http() -> aiohttp.ClientSession:
    # The dashboard runs on 127.0.0.1: keep cookies for an IP host, as a browser does.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                 timeout=aiohttp.ClientTimeout(total=20))


async def page_token(s: aiohttp.ClientSession, url: str) -> str:
    async with s.get(url) as r:
        text = await r.text()
        assert r.status == 200, text
    m = CSRF_META.search(text)
    assert m, text[:500]
    return m.group(1)


def cookie(s: aiohttp.ClientSession) -> str:
    return next(c.value for c in s.cookie_jar if c.key == "meshkit_dashboard")


async def login(s: aiohttp.ClientSession, d: Dashboard, user: str, password: str) -> str:
    """Log in through the form; returns the new session's CSRF token."""
    token = await page_token(s, d.url + "/login")
    async with s.post(d.url + "/login", data={"username": user, "password": password,
                                              "csrf_token": token, "next": "/keys"},
                      headers={"Origin": d.url}, allow_redirects=False) as r:
        assert r.status == 303, await r.text()
        assert r.headers["Location"] == "/keys"
    return await page_token(s, d.url + "/members")


@pytest.fixture
async def mk_dashboard(mk_auth: ServerProc) -> AsyncIterator[Dashboard]:
    async with Dashboard(DashboardConfig(endpoints=(mk_auth.endpoint,), listen="127.0.0.1:0")) as d:
        yield d


@pytest.fixture
async def root(mk_auth: ServerProc) -> AsyncIterator[Client]:
    async with Client([mk_auth.endpoint], user="root", password="rootpw") as c:
        yield c


async def put(s: aiohttp.ClientSession, d: Dashboard, body: dict[str, Any],
              headers: dict[str, str]) -> tuple[int, Any]:
    async with s.post(d.url + "/api/keys/put", json=body, headers=headers) as r:
        return r.status, await r.json()


async def test_writes_need_the_csrf_token_and_an_origin_of_the_dashboard(
        mk_dashboard: Dashboard, root: Client) -> None:
    d = mk_dashboard
    key = "app/http/csrf"
    async with http() as s:
        token = await login(s, d, *ALICE)
        body = {"key": b64(key), "value": "written", "expect_mod_revision": 0}
        refused = [
            ({"Origin": d.url}, "CSRF"),  # no token
            ({"Origin": d.url, "X-CSRF-Token": token[:-1] + "x"}, "CSRF"),  # a wrong one
            ({"Origin": "http://evil.example", "X-CSRF-Token": token}, "Origin"),
            ({"Origin": "null", "X-CSRF-Token": token}, "Origin"),
            ({"X-CSRF-Token": token}, "Origin"),  # neither Origin nor Referer
            ({"Referer": "http://evil.example/keys", "X-CSRF-Token": token}, "Origin"),
        ]
        for headers, why in refused:
            status, answer = await put(s, d, body, headers)
            assert status == 403 and why in answer["error"], (headers, answer)
        assert (await root.get(key)).kvs == []  # nothing was written
        # a token from another session does not do either
        async with http() as other:
            other_token = await login(other, d, *ALICE)
        status, _ = await put(s, d, body, {"Origin": d.url, "X-CSRF-Token": other_token})
        assert status == 403
        # the form field is accepted as the token, but the API takes JSON only
        async with s.post(d.url + "/api/keys/put", data={"csrf_token": token, "key": b64(key)},
                          headers={"Origin": d.url}) as r:
            assert r.status == 415
        # the right token with the dashboard's Origin, or lacking Origin its Referer
        status, answer = await put(s, d, body, {"Origin": d.url, "X-CSRF-Token": token})
        assert status == 200 and answer["ok"], answer
        rev = answer["revision"]
        body2 = {"key": b64(key), "value": "again", "expect_mod_revision": rev}
        status, answer = await put(s, d, body2, {"Referer": d.url + "/keys", "X-CSRF-Token": token})
        assert status == 200 and answer["ok"], answer
        assert (await root.get(key)).value == b"again"
        # logging out is a write too
        async with s.post(d.url + "/logout", headers={"Origin": d.url}) as r:
            assert r.status == 403


async def test_login_rotates_the_session_and_logout_ends_it(mk_dashboard: Dashboard) -> None:
    d = mk_dashboard
    async with http() as s:
        async with s.get(d.url + "/api/keys/list?prefix=" + b64("app/")) as r:
            assert r.status == 401 and (await r.json())["login"] == "/login"
        anon_token = await page_token(s, d.url + "/login")
        anon_sid = cookie(s)
        # the login form needs the token as well
        async with s.post(d.url + "/login", data={"username": "alice", "password": ALICE[1]},
                          headers={"Origin": d.url}, allow_redirects=False) as r:
            assert r.status == 403
        # a wrong password: refused, the name shown back escaped, still anonymous
        async with s.post(d.url + "/login", data={"username": "<script>x</script>", "password": "no",
                                                  "csrf_token": anon_token, "next": "/keys"},
                          headers={"Origin": d.url}) as r:
            text = await r.text()
            assert r.status == 401
            assert "authentication failed" in text
            assert "&lt;script&gt;x&lt;/script&gt;" in text and "<script>x" not in text
        assert cookie(s) == anon_sid
        # the right one: a new session id and a new token
        async with s.post(d.url + "/login", data={"username": "alice", "password": ALICE[1],
                                                  "csrf_token": anon_token,
                                                  "next": "//evil.example/"},
                          headers={"Origin": d.url}, allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"] == "/members"  # never off-site
            set_cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
            assert ALICE[1] not in set_cookie
        sid = cookie(s)
        assert sid != anon_sid
        token = await page_token(s, d.url + "/members")
        assert token != anon_token
        async with s.get(d.url + "/api/session") as r:
            assert await r.json() == {"user": "alice", "auth": True}
        page = await (await s.get(d.url + "/keys")).text()
        assert ALICE[1] not in page  # no secret in pages
        # logout ends that session for good
        async with s.post(d.url + "/logout", data={"csrf_token": token},
                          headers={"Origin": d.url}, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/login"
    async with http() as s2:
        s2.cookie_jar.update_cookies({"meshkit_dashboard": sid})
        async with s2.get(d.url + "/api/session") as r:
            assert r.status == 401
    assert len(d.sessions) <= 3


async def test_the_user_acts_with_their_own_rights_only(mk_dashboard: Dashboard,
                                                        root: Client) -> None:
    d = mk_dashboard
    async with http() as s:
        token = await login(s, d, *ALICE)
        headers = {"Origin": d.url, "X-CSRF-Token": token}
        status, answer = await put(s, d, {"key": b64("outside/x"), "value": "no",
                                          "expect_mod_revision": 0}, headers)
        assert status == 403 and answer["error"] == "etcdserver: permission denied"
        assert (await root.get("outside/x")).kvs == []
        async with s.get(d.url + "/api/keys/list?prefix=") as r:
            assert r.status == 403
        async with s.get(d.url + "/api/keys/list?prefix=" + b64("app/")) as r:
            assert r.status == 200


async def test_writes_are_guarded_by_the_revision_shown(mk_dashboard: Dashboard,
                                                       root: Client) -> None:
    d = mk_dashboard
    key = "app/http/guarded"
    first = await root.put(key, "v1")
    await root.put(key, "v2 by someone else")
    async with http() as s:
        token = await login(s, d, *ALICE)
        headers = {"Origin": d.url, "X-CSRF-Token": token}
        stale = first.header.revision
        status, answer = await put(s, d, {"key": b64(key), "value": "mine",
                                          "expect_mod_revision": stale}, headers)
        assert status == 409 and not answer["ok"]
        assert answer["current"]["mod_revision"] > stale
        async with s.post(d.url + "/api/keys/delete", json={"key": b64(key), "expect_mod_revision": stale},
                          headers=headers) as r:
            assert r.status == 409
        status, answer = await put(s, d, {"key": b64(key), "value": "new", "expect_mod_revision": 0},
                                   headers)
        assert status == 409  # create-only: it exists
        assert (await root.get(key)).value == b"v2 by someone else"
        async with s.post(d.url + "/api/keys/put", json={"key": "!!", "value": "x", "expect_mod_revision": 0},
                          headers=headers) as r:
            assert r.status == 400
        async with s.get(d.url + "/api/keys/get?key=%25%25") as r:
            assert r.status == 400 and "base64" in (await r.json())["error"]


async def test_sessions_expire(mk_auth: ServerProc) -> None:
    clock = FakeClock()
    config = DashboardConfig(endpoints=(mk_auth.endpoint,), listen="127.0.0.1:0",
                             session_idle=60.0, session_max_age=600.0, heartbeat=0.1)
    async with Dashboard(config, clock=clock) as d, http() as s:
        await login(s, d, *ALICE)
        async with s.get(d.url + "/api/session") as r:
            assert (await r.json())["user"] == "alice"
        clock.advance(59)
        async with s.get(d.url + "/api/session") as r:
            assert r.status == 200  # used: idle time starts again
        clock.advance(61)
        async with s.get(d.url + "/api/session") as r:
            assert r.status == 401
        assert all(x.user is None for x in d.sessions._sessions.values())
        # an open page (its event stream) keeps its session in use, until the max age
        await login(s, d, *ALICE)
        (alice,) = [x for x in d.sessions._sessions.values() if x.user == "alice"]
        async with s.get(d.url + "/events/config") as r:
            for _ in range(3):
                await asyncio.sleep(0.3)  # heartbeats every 0.1 s mark the session used
                clock.advance(50)
            await asyncio.sleep(0.3)
            assert not alice.ended.is_set() and d.sessions.get(alice.sid) is alice
            clock.advance(600)  # past the max age: the session ends, and the stream with it
            async with asyncio.timeout(5):
                await r.content.read()
        assert alice.ended.is_set()


async def test_headers_static_assets_and_auth_off(real_etcd_noauth: ServerProc) -> None:
    config = DashboardConfig(endpoints=(real_etcd_noauth.endpoint,), listen="127.0.0.1:0")
    async with Dashboard(config) as d, http() as s:
        async with s.get(d.url + "/members") as r:
            text = await r.text()
            assert r.status == 200
            csp = r.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp
            assert "unsafe-inline" not in csp
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["X-Frame-Options"] == "DENY"
            assert "etcd auth is off: no login needed" in text
            assert "<script>" not in text.replace('<script src="/static/dashboard.js" defer></script>', "")
        async with s.get(d.url + "/login", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/members"
        for path, ctype in (("/static/dashboard.js", "javascript"), ("/static/dashboard.css", "text/css")):
            async with s.get(d.url + path) as r:
                body = await r.text()
                assert r.status == 200 and ctype in r.headers["Content-Type"]
                assert "innerHTML" not in body and "http://" not in body and "https://" not in body
        async with s.get(d.url + "/nope") as r:
            assert r.status == 404


async def test_event_stream_carries_watch_changes(real_etcd_noauth: ServerProc) -> None:
    ep = real_etcd_noauth.endpoint
    config = DashboardConfig(endpoints=(ep,), listen="127.0.0.1:0", heartbeat=0.2)
    prefix = b64("sse/")
    async with Dashboard(config) as d, http() as s, Client([ep]) as c:
        await c.put("sse/before", "1")
        async with s.get(d.url + "/api/keys/list?prefix=" + prefix) as r:
            listing = await r.json()
        assert [x["name"] for x in listing["children"]] == ["before"]
        url = f"{d.url}/events/keys?prefix={prefix}&revision={listing['revision']}"
        async with s.get(url) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            await c.put("sse/dir/inner", "2")
            await c.delete("sse/before")
            upserts: list[Any] = []
            removed: list[Any] = []
            touched: list[Any] = []
            async with asyncio.timeout(10):
                while not (upserts and removed):
                    line = (await r.content.readline()).decode()
                    if line.startswith("data: "):
                        ev = json.loads(line[6:])
                        upserts += ev["upserts"]
                        removed += ev["removed"]
                        touched += ev["touched"]
            # idle: comment lines keep the connection alive
            async with asyncio.timeout(5):
                while not (await r.content.readline()).startswith(b":"):
                    pass
        assert upserts == [{"name": "dir/", "key": b64("sse/dir/"), "dir": True}]
        assert removed == [{"key": b64("sse/before"), "dir": False}]
        assert [t["type"] for t in touched] == ["PUT", "DELETE"]


async def test_history_of_a_key_across_revisions(real_etcd_noauth: ServerProc) -> None:
    ep = real_etcd_noauth.endpoint
    config = DashboardConfig(endpoints=(ep,), listen="127.0.0.1:0")
    async with Dashboard(config) as d, http() as s, Client([ep]) as c:
        await c.put("hist/k", "one")
        await c.put("hist/k", "two")
        await c.delete("hist/k")
        await c.put("hist/k", b"\xff\xfe three")
        async with s.get(d.url + "/api/keys/history?key=" + b64("hist/k")) as r:
            h = await r.json()
        assert h["complete"] and h["total"] == 4
        assert [(e["type"], e.get("value", {}).get("text")) for e in h["entries"]] == [
            ("PUT", "\\xff\\xfe three"), ("DELETE", None), ("PUT", "two"), ("PUT", "one")]
        assert h["entries"][0]["value"]["utf8"] is False
        await c.delete("hist/k")
        async with s.get(d.url + "/api/keys/history?key=" + b64("hist/k")) as r:
            h = await r.json()
        assert h["complete"] and [e["type"] for e in h["entries"]][:2] == ["DELETE", "PUT"]
        async with s.get(d.url + "/api/keys/history?key=" + b64("hist/never")) as r:
            h = await r.json()
        assert h["complete"] and h["entries"] == []


# ---- the command line -------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshkit", "dashboard", *args], capture_output=True,
                          text=True, timeout=30)


def test_cli_usage_and_bad_flags() -> None:
    p = run_cli("--help")
    assert p.returncode == 0 and "--lock-prefix" in p.stdout and "--listen" in p.stdout
    p = run_cli("--listen", "nowhere")
    assert p.returncode == 2 and "listen:" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("--bogus")
    assert p.returncode == 2 and "flag provided but not defined: -bogus" in p.stderr
    p = run_cli("--endpoints", "127.0.0.1:2379", "--session-idle", "0s", "--allowed-origin", "x")
    assert p.returncode == 2
    assert "session idle time must be positive" in p.stderr and "allowed origin 'x'" in p.stderr
    top = subprocess.run([sys.executable, "-m", "meshkit", "--help"], capture_output=True, text=True,
                         timeout=30)
    assert "dashboard" in top.stdout


async def test_cli_serves_and_stops_on_sigterm(real_etcd_noauth: ServerProc,
                                               start_dashboard: Callable[..., DashboardProc]) -> None:
    dash = start_dashboard(real_etcd_noauth.endpoint)
    async with http() as s, s.get(dash.url + "/members") as r:
        assert r.status == 200 and "Members" in await r.text()
    assert await asyncio.to_thread(dash.stop) == 0
    assert "serving on" in dash.log.read_text()


async def test_locks_page_names_the_flag_when_the_user_may_not_scan(mk_auth: ServerProc) -> None:
    config = DashboardConfig(endpoints=(mk_auth.endpoint,), listen="127.0.0.1:0")  # every key
    async with Dashboard(config) as d, http() as s:
        await login(s, d, *ALICE)
        async with s.get(d.url + "/events/locks") as r:
            async with asyncio.timeout(10):
                body = (await r.content.read()).decode()
    assert "event: failure" in body
    assert "permission denied reading keys in the whole keyspace" in body and "--lock-prefix" in body


async def test_a_feed_reads_again_after_compaction(real_etcd_noauth: ServerProc) -> None:
    async with Client([real_etcd_noauth.endpoint]) as c:
        first = await c.put("feed/a", "1")
        await c.put("feed/b", "2")
        last = await c.put("feed/a", "3")
        await c.compact(last.header.revision)
        start, end = b"feed/", b"feed0"
        async with PrefixFeed(c, start, end, start_revision=first.header.revision) as feed:
            it = aiter(feed)
            async with asyncio.timeout(10):
                snap = await anext(it)
                assert isinstance(snap, Snapshot) and snap.resync
                assert {kv.key: kv.value for kv in snap.kvs} == {b"feed/a": b"3", b"feed/b": b"2"}
                await c.delete("feed/b")
                ch = await anext(it)
        assert isinstance(ch, Changes) and [e.kv.key for e in ch.events] == [b"feed/b"]
