"""The dashboard's logic without a server or a browser: sessions and their expiry,
CSRF and Origin checks, how bytes are shown, configuration, the lock and service tables."""

from __future__ import annotations

import asyncio
import re

import pytest

from meshkit._internal.clock import FakeClock
from meshkit.cli.dashboard import config_from_args
from meshkit.client import Client, Event, EventType, KeyValue
from meshkit.dashboard import DashboardConfig
from meshkit.dashboard.codec import (
    BadParameter,
    b64,
    bytes_view,
    from_b64,
    key_text,
    pretty,
    value_text,
)
from meshkit.dashboard.feeds import Changes, sse_message
from meshkit.dashboard.locks import LockTable, lock_name
from meshkit.dashboard.security import SessionStore, csrf_ok, origin_ok
from meshkit.dashboard.server import _safe_next
from meshkit.dashboard.services import ServiceRows, instance_row
from meshkit.registry import Instance, encode_value

# ---- sessions ----------------------------------------------------------------------------


def store(clock: FakeClock, **kw: float) -> SessionStore:
    return SessionStore(idle=kw.get("idle", 60.0), max_age=kw.get("max_age", 600.0),
                        max_sessions=int(kw.get("max_sessions", 100)), clock=clock,
                        reap_interval=kw.get("reap", 30.0))


async def test_sessions_expire_when_idle_and_at_their_max_age() -> None:
    clock = FakeClock()
    async with store(clock) as st:
        s = st.new()
        assert st.get(s.sid) is s and len(s.sid) >= 40 and len(s.csrf) >= 40
        assert st.get("not-a-session") is None and st.get(None) is None
        clock.advance(59)
        assert st.get(s.sid) is s  # used: the idle time starts again
        clock.advance(59)
        assert st.get(s.sid) is s
        clock.advance(61)
        assert st.get(s.sid) is None and s.ended.is_set()
        # used all the time, a session still ends at its max age
        t = st.new()
        for _ in range(10):
            clock.advance(55)
            assert st.get(t.sid) is t
        clock.advance(55)  # 605 s since it began
        assert st.get(t.sid) is None


async def test_the_reaper_ends_expired_sessions_and_closes_their_clients() -> None:
    clock = FakeClock()
    async with store(clock, reap=10.0) as st:
        await asyncio.sleep(0)  # the reaper starts sleeping
        anon = st.new()
        client = Client(["127.0.0.1:1"])
        user = st.login(None, "alice", client)
        assert user.logged_in and user.client is client
        clock.advance(70)
        for _ in range(5):
            await asyncio.sleep(0)  # let the reaper and the close run
        assert len(st) == 0 and anon.ended.is_set() and user.ended.is_set()
        assert user.client is None and not user.logged_in
        with pytest.raises(RuntimeError):
            client.watch(b"k")  # closed with the session


async def test_login_issues_a_new_id_and_token_and_ends_the_old_session() -> None:
    clock = FakeClock()
    st = store(clock)
    with pytest.raises(RuntimeError):  # a store not entered owns no task to close clients
        st.login(None, "alice", Client(["127.0.0.1:1"]))
    async with st:
        anon = st.new()
        s = st.login(anon, "alice", Client(["127.0.0.1:1"]))
        assert (s.sid, s.csrf) != (anon.sid, anon.csrf)
        assert anon.ended.is_set() and st.get(anon.sid) is None
        assert st.get(s.sid) is s and s.user == "alice"
        st.end(s)
        assert st.get(s.sid) is None and s.ended.is_set()
    assert len(st) == 0


async def test_a_full_store_drops_the_least_recently_used_anonymous_session() -> None:
    clock = FakeClock()
    async with store(clock, max_sessions=3) as st:
        user = st.login(None, "alice", Client(["127.0.0.1:1"]))
        clock.advance(1)
        a = st.new()
        clock.advance(1)
        b = st.new()
        clock.advance(1)
        st.get(a.sid)  # a is used again: b is now the least recently used
        c = st.new()
        assert st.get(b.sid) is None and b.ended.is_set()
        assert st.get(a.sid) is a and st.get(c.sid) is c and st.get(user.sid) is user


async def test_closing_the_store_ends_every_session() -> None:
    clock = FakeClock()
    st = store(clock)
    async with st:
        s = st.login(None, "alice", Client(["127.0.0.1:1"]))
    assert s.ended.is_set() and len(st) == 0
    with pytest.raises(RuntimeError):
        st.new()


# ---- CSRF and Origin ---------------------------------------------------------------------


async def test_csrf_token_comparison() -> None:
    async with store(FakeClock()) as st:
        s = st.new()
        assert csrf_ok(s, s.csrf)
        assert not csrf_ok(s, s.csrf[:-1])
        assert not csrf_ok(s, s.csrf + "x")
        assert not csrf_ok(s, "")
        assert not csrf_ok(s, None)
        assert not csrf_ok(None, s.csrf)
        assert not csrf_ok(s, "é" * 43)
        other = st.new()
        assert not csrf_ok(s, other.csrf)
        st.end(s)
        assert not csrf_ok(s, s.csrf)  # an ended session accepts nothing


@pytest.mark.parametrize(("origin", "referer", "ok"), [
    ("http://127.0.0.1:8080", None, True),
    ("HTTP://127.0.0.1:8080/", None, True),
    ("http://127.0.0.1:8081", None, False),
    ("https://127.0.0.1:8080", None, False),
    ("null", None, False),
    ("", None, False),
    ("https://dash.example.com", None, True),  # configured
    (None, "http://127.0.0.1:8080/keys?prefix=x", True),
    (None, "http://evil.example/http://127.0.0.1:8080/", False),
    (None, "not a url", False),
    (None, None, False),
    ("http://evil.example", "http://127.0.0.1:8080/keys", False),  # Origin decides
])
def test_origin_rule(origin: str | None, referer: str | None, ok: bool) -> None:
    assert origin_ok(origin, referer, "http://127.0.0.1:8080", ["https://dash.example.com"]) is ok


def test_safe_next_stays_on_the_dashboard() -> None:
    assert _safe_next("/keys?prefix=YQ") == "/keys?prefix=YQ"
    for bad in (None, "", "//evil.example/", "https://evil.example/", "/\\evil", "keys", "/a\nb"):
        assert _safe_next(bad) == "/members"


# ---- bytes shown as text -------------------------------------------------------------------


def test_keys_and_values_are_shown_as_text() -> None:
    assert key_text(b"<script>alert(1)</script>") == "<script>alert(1)</script>"
    assert key_text("clé/ü".encode()) == "clé/ü"
    assert key_text(b"a\nb\x00c") == "a\\x0ab\\x00c"
    assert key_text(b"a\\b") == "a\\b"  # plain text stays plain
    assert key_text(b"\xff/a\\b") == "\\xff/a\\\\b"  # escaped form: backslash doubled
    assert value_text(b"line1\nline2\t<b>") == ("line1\nline2\t<b>", True)
    assert value_text(b"\x00\xffok\xc3") == ("\\x00\\xffok\\xc3", False)
    v = bytes_view("é".encode() * 10, limit=5)
    assert v["cut"] and v["utf8"] and v["size"] == 20 and v["text"] == "éé"
    assert from_b64(v["b64"]) == "é".encode() * 2 + b"\xc3"
    w = bytes_view(b"\xff" * 10, limit=4)
    assert w["cut"] and not w["utf8"] and w["text"] == "\\xff" * 4


def test_base64_parameters() -> None:
    for raw in (b"", b"a", b"\xff\xfe\xfd", b"app/<x>?&=", bytes(range(256))):
        assert from_b64(b64(raw)) == raw
        assert "=" not in b64(raw) and "+" not in b64(raw) and "/" not in b64(raw)
    assert from_b64("YQ==") == b"a"  # standard padding accepted
    for bad in ("%%", "a", "YQ=x", "é"):
        with pytest.raises(BadParameter):
            from_b64(bad)


def test_pretty_printing() -> None:
    j = pretty(b'{"b": [1, 2], "a": "<x>"}')
    assert j == {"format": "json", "text": '{\n  "b": [\n    1,\n    2\n  ],\n  "a": "<x>"\n}'}
    y = pretty(b"a: 1\nb: [x, y]\n")
    assert y == {"format": "yaml", "text": "a: 1\nb:\n- x\n- y\n"}
    for plain in (b"hello", b"42", b'"text"', b"", b"\xff\xfe", b"a: [1"):
        assert pretty(plain) is None, plain


def test_sse_messages_are_one_data_line() -> None:
    msg = sse_message("change", {"text": "a\nb\r\n\u2028<script>"})
    lines = msg.decode().split("\n")
    assert lines[0] == "event: change" and lines[1].startswith("data: ") and lines[2:] == ["", ""]


# ---- configuration -------------------------------------------------------------------------


def test_config_names_every_broken_rule() -> None:
    assert DashboardConfig().validate() == []
    bad = DashboardConfig(endpoints=(), listen="nope", timeout=0, cert="c.pem",
                          config_prefix="/x", lock_prefixes=(), allowed_origins=("x",),
                          history_limit=0, registry_prefix="/")
    problems = bad.validate()
    for text in ("at least one endpoint", "listen:", "timeout must be positive", "--cert and --key",
                 "config prefix must end with '/'", "at least one lock prefix",
                 "allowed origin 'x'", "history limit", "registry prefix"):
        assert any(text in p for p in problems), (text, problems)
    assert DashboardConfig(listen="[::1]:8080").validate() == []
    assert DashboardConfig(listen="::1:8080").validate() != []


def test_command_line_flags() -> None:
    c = config_from_args(["--endpoints", "a:1,b:2", "--listen", "0.0.0.0:9", "--lock-prefix", "x/",
                          "--lock-prefix", "y/", "--allowed-origin", "https://d.example",
                          "--session-idle", "5m", "--status-interval", "500ms", "--cookie-secure"])
    assert c.endpoints == ("a:1", "b:2") and c.listen == "0.0.0.0:9"
    assert c.lock_prefixes == ("x/", "y/") and c.allowed_origins == ("https://d.example",)
    assert c.session_idle == 300.0 and c.status_interval == 0.5 and c.cookie_secure
    assert config_from_args([]).lock_prefixes == ("",)


# ---- the locks and services tables ---------------------------------------------------------


def kv(key: bytes, value: bytes = b"", lease: int = 0, create: int = 1, mod: int = 0) -> KeyValue:
    return KeyValue(key, value, create, mod or create, 1, lease)


def test_locks_are_keys_named_after_their_lease() -> None:
    assert lock_name(kv(b"jobs/lock/694d", lease=0x694D)) == b"jobs/lock"
    assert lock_name(kv(b"jobs/lock/694D", lease=0x694D)) is None  # Go writes lowercase hex
    assert lock_name(kv(b"jobs/lock/694d", lease=0)) is None
    assert lock_name(kv(b"jobs/lock/694d", lease=0x694E)) is None
    assert lock_name(kv(b"694d", lease=0x694D)) is None
    t = LockTable()
    changed = t.reset([kv(b"a/l/2", lease=2, create=5), kv(b"a/l/1", lease=1, create=3),
                       kv(b"a/e/3", b"node-a", lease=3, create=4), kv(b"a/other", b"x")])
    assert changed == {b"a/l", b"a/e"}
    view = t.view(b"a/l")
    assert view is not None and view["kind"] == "lock"
    assert view["holder"]["lease"] == "1" and [w["lease"] for w in view["waiters"]] == ["2"]
    e = t.view(b"a/e")
    assert e is not None and e["kind"] == "election" and e["holder"]["value"]["text"] == "node-a"
    gone = Event(EventType.DELETE, kv(b"a/l/1", create=0, mod=9), None)
    assert t.apply(Changes([gone], 9)) == {b"a/l"}
    view = t.view(b"a/l")
    assert view is not None and view["holder"]["lease"] == "2" and view["waiters"] == []
    assert t.apply(Changes([Event(EventType.DELETE, kv(b"a/l/2", mod=10), None)], 10)) == {b"a/l"}
    assert t.view(b"a/l") is None and b"a/l" not in t.groups
    assert t.leases() == {3}


def test_service_rows_follow_puts_and_deletes() -> None:
    prefix = "meshkit/services"
    inst = Instance("web", "10.0.0.1:80", id="w1", weight=3, zone="z", metadata={"k": "<v>"})
    good = kv(b"meshkit/services/web/w1", encode_value(inst), lease=7)
    bad = kv(b"meshkit/services/web/w2", b"{not json", lease=8)
    row = instance_row(prefix, good)
    assert row is not None and (row["health"], row["weight"], row["metadata"]) == ("passing", 3, {"k": "<v>"})
    brow = instance_row(prefix, bad)
    assert brow is not None and brow["health"] == "bad value"
    assert instance_row(prefix, kv(b"meshkit/services/web", b"{}")) is None
    assert instance_row(prefix, kv(b"meshkit/services/web/x", b'{"Op":1,"Addr":"a:1"}')) is None
    t = ServiceRows(prefix)
    t.reset([good])
    ups, removed, leases = t.apply(Changes([Event(EventType.PUT, bad, None)], 5))
    assert [u["id"] for u in ups] == ["w2"] and removed == [] and leases == {8}
    withdrawn = kv(b"meshkit/services/web/w1", b'{"Op":1,"Addr":"10.0.0.1:80"}', lease=7)
    ups, removed, _ = t.apply(Changes([Event(EventType.PUT, withdrawn, None)], 6))
    assert ups == [] and removed == ["meshkit/services/web/w1"]
    ups, removed, _ = t.apply(Changes([Event(EventType.DELETE, bad, None)], 7))
    assert removed == ["meshkit/services/web/w2"] and t.sorted_rows() == []


# ---- the docs -------------------------------------------------------------------------------


def test_docs_cite_existing_tests_and_every_flag() -> None:
    from pathlib import Path

    from meshkit.cli.dashboard import FLAGS, HELP

    root = Path(__file__).resolve().parents[3]
    doc = (root / "docs" / "dashboard.md").read_text()
    cited = re.findall(r"`(tests/tools/dashboard/\w+\.py)(?:::(\w+))?`", doc)
    assert len(cited) >= 12
    for path, name in cited:
        src = (root / path).read_text()
        assert not name or re.search(rf"^(async )?def {name}\b", src, re.M), f"{path}::{name}"
    for flag in FLAGS._flags:
        assert f"`--{flag}`" in doc, flag
        assert f"--{flag}" in HELP, flag
