"""The dashboard in a real headless browser (Debian chromium, playwright).

Against `meshkit server` with etcd auth on: log in as an etcd user, browse a prefix,
edit a key and read it back with the real etcdctl, watch a registry change appear
without reload, roll back a config version, see locks/elections and members, and
render a ``<script>`` key and an HTML value as text. The key browser runs against
the real etcd 3.4 too. Screenshots of the main pages go to $MESHKIT_SCREENSHOT_DIR
(else a temp dir).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    Dialog,
    Page,
    async_playwright,
    expect,
)

from meshkit.client import Client
from meshkit.concurrency import Election, Mutex, Session
from meshkit.configcenter import ConfigStore
from meshkit.registry import Instance, Registrar
from tests.support.procs import ServerProc
from tests.tools.dashboard.conftest import (
    ALICE,
    CHROMIUM,
    CHROMIUM_ARGS,
    DashboardProc,
    etcdctl,
)

pytestmark = [pytest.mark.etcd, pytest.mark.asyncio(loop_scope="module")]

XSS_KEY = "<script>alert(1)</script>"
XSS_VALUE = '<img src=x onerror="alert(2)"><b>bold</b><script>alert(3)</script>'
TIMEOUT_MS = 10_000
LOGIN_URL = re.compile(r"/login\?next=")


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium (CI installs it: missing there is a failure, elsewhere a skip)."""
    if not Path(CHROMIUM).exists():
        msg = "Debian chromium is not installed (apt-get install chromium)"
        if os.environ.get("MESHKIT_REQUIRE_ETCD"):
            pytest.fail(msg)
        pytest.skip(msg)
    return CHROMIUM


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture(scope="module")
def mk_dash(mk_auth: ServerProc, start_dashboard: Callable[..., DashboardProc]) -> DashboardProc:
    return start_dashboard(mk_auth.endpoint, "--lock-prefix", "locks/", "--status-interval", "1s",
                           "--ttl-refresh", "1s")


@pytest.fixture(scope="module")
def etcd_dash(real_etcd_noauth: ServerProc,
              start_dashboard: Callable[..., DashboardProc]) -> DashboardProc:
    return start_dashboard(real_etcd_noauth.endpoint)


class Dialogs:
    """Every JavaScript dialog a page opens (none may: alert() means a script ran)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def watch(self, page: Page) -> Page:
        async def on_dialog(d: Dialog) -> None:
            self.seen.append(d.message)
            await d.dismiss()
        page.on("dialog", on_dialog)
        return page


async def new_page(context: BrowserContext, dialogs: Dialogs) -> Page:
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return dialogs.watch(page)


async def login(page: Page, url: str, user: str, password: str, then: str = "/members") -> None:
    await page.goto(url + then)
    await page.wait_for_url(LOGIN_URL)
    await page.fill("#username", user)
    await page.fill("#password", password)
    await page.click("#login-submit")
    await page.wait_for_url(f"**{then}")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def alice(browser: Browser, mk_dash: DashboardProc) -> AsyncIterator[BrowserContext]:
    """A browser context logged in as alice (through the login form)."""
    ctx = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await ctx.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await login(page, mk_dash.url, *ALICE)
    await page.close()
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def root_client(mk_auth: ServerProc) -> AsyncIterator[Client]:
    async with Client([mk_auth.endpoint], user="root", password="rootpw") as c:
        yield c


async def mark_no_reload(page: Page) -> None:
    await page.evaluate("window.__noReload = 'still the same document'")


async def assert_not_reloaded(page: Page) -> None:
    assert await page.evaluate("window.__noReload") == "still the same document"


# ---- meshkit server with auth ----------------------------------------------------------------


async def test_login_with_an_etcd_user(browser: Browser, mk_dash: DashboardProc,
                                       screenshot_dir: Path) -> None:
    dialogs = Dialogs()
    ctx = await browser.new_context()
    try:
        page = await new_page(ctx, dialogs)
        await page.goto(mk_dash.url + "/keys")
        await page.wait_for_url(LOGIN_URL)  # auth is on: nothing without a login
        await page.fill("#username", "alice")
        await page.fill("#password", "wrong")
        await page.click("#login-submit")
        await expect(page.locator("#login-error")).to_contain_text("authentication failed")
        await expect(page.locator("#password")).to_have_value("")  # never sent back
        await page.screenshot(path=str(screenshot_dir / "login.png"))
        await page.fill("#password", ALICE[1])
        await page.click("#login-submit")
        await page.wait_for_url("**/keys")
        await expect(page.locator("#user")).to_contain_text("signed in as alice")
        cookies = await ctx.cookies()
        (c,) = [c for c in cookies if c["name"] == "meshkit_dashboard"]
        assert c["httpOnly"] and c["sameSite"] == "Strict"
        await page.click("#logout")
        await page.wait_for_url("**/login")
        await page.goto(mk_dash.url + "/keys")
        await page.wait_for_url(LOGIN_URL)
    finally:
        await ctx.close()
    assert dialogs.seen == []


async def test_browse_a_prefix_and_edit_a_key(alice: BrowserContext, mk_dash: DashboardProc,
                                              mk_auth: ServerProc, root_client: Client,
                                              screenshot_dir: Path) -> None:
    c = root_client
    await c.put("app/cfg/db.json", '{"pool": 5, "hosts": ["a", "b"]}')
    await c.put("app/cfg/feature.yaml", "flags:\n  a: true\n  b: [x, y]\n")
    await c.put("app/plain", "hello")
    lease = await c.grant(120)
    await c.put("app/leased", "on a lease", lease=lease.id)
    await c.put("outside/secret", "alice may not read this")
    dialogs = Dialogs()
    page = await new_page(alice, dialogs)
    await page.goto(mk_dash.url + "/keys")
    # alice acts with her own rights: the root of the keyspace is not hers
    await expect(page.locator("#list-error")).to_contain_text("permission denied")
    await mark_no_reload(page)
    await page.fill("#prefix-input", "app/")
    await page.click("#prefix-form button[type=submit]")
    children = page.locator("#children")
    for name in ("cfg/", "leased", "plain"):
        await expect(children.get_by_text(name, exact=True)).to_be_visible()
    await children.get_by_text("cfg/", exact=True).click()
    await children.get_by_text("db.json", exact=True).click()
    await expect(page.locator("#key-name")).to_have_text("app/cfg/db.json")
    await expect(page.locator("#value-raw")).to_have_text('{"pool": 5, "hosts": ["a", "b"]}')
    await page.click("#tab-pretty")
    await expect(page.locator("#value-pretty")).to_contain_text('"hosts": [\n    "a",')
    await children.get_by_text("feature.yaml", exact=True).click()
    await page.click("#tab-pretty")
    await expect(page.locator("#tab-pretty")).to_have_text("Pretty YAML")
    await expect(page.locator("#value-pretty")).to_contain_text("b:\n  - x\n  - y")

    # edit with confirmation, then read it with the real etcdctl
    await children.get_by_text("db.json", exact=True).click()
    await expect(page.locator("#key-name")).to_have_text("app/cfg/db.json")
    await page.click("#edit")
    await page.fill("#edit-value", '{"pool": 10}')
    await page.click("#save")
    await expect(page.locator(".confirm")).to_contain_text("only if it is still at revision")
    await page.click("#confirm-ok")
    await expect(page.locator("#banner")).to_contain_text("Saved at revision")
    got = await asyncio.to_thread(etcdctl, mk_auth.endpoint, "get", "app/cfg/db.json",
                                  "--print-value-only", user="root:rootpw")
    assert got.stdout.strip() == '{"pool": 10}'
    await expect(page.locator("#value-raw")).to_have_text('{"pool": 10}')

    # history across revisions
    await page.click("#history")
    rows = page.locator("#history-table tbody tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_contain_text('{"pool": 10}')
    await expect(rows.nth(1)).to_contain_text('{"pool": 5')

    # changes made elsewhere arrive by watch, without reload
    await asyncio.to_thread(etcdctl, mk_auth.endpoint, "put", "app/cfg/added-by-etcdctl", "x",
                            user="root:rootpw")
    await expect(children.get_by_text("added-by-etcdctl", exact=True)).to_be_visible()
    await asyncio.to_thread(etcdctl, mk_auth.endpoint, "put", "app/cfg/db.json", '{"pool": 11}',
                            user="root:rootpw")
    await expect(page.locator("#value-raw")).to_have_text('{"pool": 11}')
    await page.screenshot(path=str(screenshot_dir / "keys.png"), full_page=True)

    # a key on a lease shows the lease and the TTL left
    await page.locator("#crumbs a", has_text="app/").click()
    await children.get_by_text("leased", exact=True).click()
    await expect(page.locator("#key-lease")).to_contain_text(f"{lease.id:x}")
    await expect(page.locator("#key-lease .ttl")).to_have_text(
        re.compile(r"^(1[01]\d|120|\d\d?) s$"))

    # delete with confirmation
    await children.get_by_text("plain", exact=True).click()
    await page.click("#delete")
    await expect(page.locator(".confirm")).to_contain_text("Delete “app/plain”")
    await page.click("#confirm-ok")
    await expect(page.locator("#key-missing")).to_be_visible()
    await expect(children.get_by_text("plain", exact=True)).to_have_count(0)
    got = await asyncio.to_thread(etcdctl, mk_auth.endpoint, "get", "app/plain",
                                  user="root:rootpw")
    assert got.stdout == ""
    await assert_not_reloaded(page)
    assert dialogs.seen == []


async def test_registry_change_appears_without_reload(alice: BrowserContext,
                                                      mk_dash: DashboardProc,
                                                      mk_auth: ServerProc,
                                                      screenshot_dir: Path) -> None:
    dialogs = Dialogs()
    page = await new_page(alice, dialogs)
    await page.goto(mk_dash.url + "/services")
    await expect(page.locator("#updated")).to_contain_text("live since revision")
    await mark_no_reload(page)
    inst = Instance("web", "127.0.0.1:9007", id="web-7", weight=5, zone="eu-1", version="1.2.3",
                    metadata={"note": "<img src=x onerror=alert(4)>"})
    other = Instance("api", "127.0.0.1:9008", id="api-1", zone="eu-2")
    async with Client([mk_auth.endpoint], user=ALICE[0], password=ALICE[1]) as c, \
            Registrar(c, inst, ttl=30) as r1, Registrar(c, other, ttl=30) as r2:
        await r1.wait_registered()
        await r2.wait_registered()
        row = page.locator('tr[data-key="meshkit/services/web/web-7"]')
        await expect(row).to_contain_text("127.0.0.1:9007")
        cells = row.locator("td")
        await expect(cells.nth(2)).to_have_text("passing")
        await expect(cells.nth(3)).to_have_text("5")
        await expect(cells.nth(4)).to_have_text("eu-1")
        await expect(cells.nth(5)).to_have_text("1.2.3")
        await expect(cells.nth(6)).to_have_text("note=<img src=x onerror=alert(4)>")
        await expect(cells.nth(8)).to_have_text(re.compile(r"^\d+ s$"))
        await expect(page.locator('section[data-service="api"]')).to_contain_text("api-1")
        await page.screenshot(path=str(screenshot_dir / "services.png"), full_page=True)
        await assert_not_reloaded(page)
    # the registrars left: their leases were revoked, the rows go
    await expect(page.locator('tr[data-key="meshkit/services/web/web-7"]')).to_have_count(0)
    await expect(page.locator("#no-services")).to_be_visible()
    await assert_not_reloaded(page)
    assert dialogs.seen == []


async def test_roll_back_a_config_version(alice: BrowserContext, mk_dash: DashboardProc,
                                          mk_auth: ServerProc, root_client: Client,
                                          screenshot_dir: Path) -> None:
    store = ConfigStore(root_client, author="deployer")
    name = "prod/payments/api"
    v1 = await store.push(name, "pool: 5\nname: api\n", "yaml", message="first")
    v2 = await store.push(name, "pool: 10\nname: api\n", "yaml", message="bigger pool")
    dialogs = Dialogs()
    page = await new_page(alice, dialogs)
    await page.goto(mk_dash.url + "/config")
    await page.locator('#configs li[data-name="prod/payments/api"] a').click()
    await expect(page.locator("#config-name")).to_have_text(name)
    await expect(page.locator("#config-current")).to_contain_text(f"version 2 at revision {v2.revision}")
    await mark_no_reload(page)
    await page.click("#diff")
    await expect(page.locator("#diff-text")).to_contain_text("-pool: 5")
    await expect(page.locator("#diff-text")).to_contain_text("+pool: 10")
    await page.locator(f'tr[data-revision="{v1.revision}"] button.view').click()
    await expect(page.locator("#version-text")).to_have_text("pool: 5\nname: api\n")
    await page.locator(f'tr[data-revision="{v1.revision}"] button.rollback').click()
    await expect(page.locator(".confirm")).to_contain_text(f"revision {v1.revision}")
    await page.click("#confirm-ok")
    await expect(page.locator("#banner")).to_contain_text("Rolled back: version 3")
    # the new version reached etcd
    cur = await store.current(name)
    assert (cur.version, cur.data, cur.rollback_of, cur.author) == (3, {"pool": 5, "name": "api"},
                                                                   v1.revision, "alice")
    got = await asyncio.to_thread(etcdctl, mk_auth.endpoint, "get",
                                  "/meshkit/config/prod/payments/api/@current",
                                  "--print-value-only", user="root:rootpw")
    assert json.loads(got.stdout)["data"] == {"pool": 5, "name": "api"}
    # and the page follows it by watch
    await expect(page.locator("#config-current")).to_contain_text(f"version 3 at revision {cur.revision}")
    await expect(page.locator("#versions tbody tr")).to_have_count(3)
    await expect(page.locator('#configs li[data-name="prod/payments/api"]')).to_contain_text("v3")
    await page.screenshot(path=str(screenshot_dir / "config.png"), full_page=True)
    await assert_not_reloaded(page)
    assert dialogs.seen == []


async def test_locks_elections_and_members(alice: BrowserContext, mk_dash: DashboardProc,
                                           mk_auth: ServerProc, screenshot_dir: Path) -> None:
    dialogs = Dialogs()
    page = await new_page(alice, dialogs)
    await page.goto(mk_dash.url + "/locks")
    await expect(page.locator("#updated")).to_contain_text("live")
    async with Client([mk_auth.endpoint], user=ALICE[0], password=ALICE[1]) as c, \
            Session(c, ttl=30) as s1, Session(c, ttl=30) as s2, Session(c, ttl=30) as s3:
        m1 = Mutex(s1, "locks/jobs")
        await m1.lock(timeout=5)
        waiter = asyncio.ensure_future(Mutex(s2, "locks/jobs").lock(timeout=30))
        try:
            await Election(s3, "locks/leader").campaign("node-a", timeout=5)
            jobs = page.locator(f'tr[data-group="{b64("locks/jobs")}"]')
            await expect(jobs).to_contain_text("lock")
            await expect(jobs.locator("td").nth(2)).to_contain_text(f"{s1.lease_id:x}")
            await expect(jobs.locator("td").nth(4)).to_contain_text(f"{s2.lease_id:x}")
            leader = page.locator(f'tr[data-group="{b64("locks/leader")}"]')
            await expect(leader).to_contain_text("election")
            await expect(leader.locator("td").nth(3)).to_have_text("node-a")
            await page.screenshot(path=str(screenshot_dir / "locks.png"), full_page=True)
            await m1.unlock()
            await asyncio.wait_for(waiter, 10)
            await expect(jobs.locator("td").nth(2)).to_contain_text(f"{s2.lease_id:x}")
            await expect(jobs.locator("td").nth(4)).to_have_text("none")
        finally:
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)

    await page.goto(mk_dash.url + "/members")
    await expect(page.locator("#leader-name")).to_have_text("default")
    row = page.locator("#members tr").first
    await expect(row).to_contain_text("leader")
    await expect(row).to_contain_text("healthy")
    term = page.locator("#raft-term")
    await expect(term).to_have_text(re.compile(r"^[1-9]\d*$"))
    await expect(page.locator("#alarms")).to_have_text("no alarms")
    first = await page.locator("#updated").text_content()
    await expect(page.locator("#updated")).not_to_have_text(first or "", timeout=5000)  # live
    await page.screenshot(path=str(screenshot_dir / "members.png"), full_page=True)
    assert dialogs.seen == []


async def test_html_in_keys_and_values_renders_as_text(alice: BrowserContext,
                                                       mk_dash: DashboardProc,
                                                       root_client: Client,
                                                       screenshot_dir: Path) -> None:
    await root_client.put(XSS_KEY, XSS_VALUE)
    dialogs = Dialogs()
    page = await new_page(alice, dialogs)
    await page.goto(f"{mk_dash.url}/keys?prefix={b64('<script>')}&key={b64(XSS_KEY)}")
    await expect(page.locator("#key-name")).to_have_text(XSS_KEY)
    await expect(page.locator("#value-raw")).to_have_text(XSS_VALUE)
    await expect(page.locator("#children")).to_contain_text("alert(1)</")
    assert await page.locator("#value-raw img, #value-raw b, #value-raw script").count() == 0
    assert await page.locator("main img").count() == 0
    await page.screenshot(path=str(screenshot_dir / "keys-html-as-text.png"), full_page=True)
    assert dialogs.seen == []


# ---- the real etcd, no auth -------------------------------------------------------------------


async def test_key_browser_on_the_real_etcd(browser: Browser, etcd_dash: DashboardProc,
                                            real_etcd_noauth: ServerProc,
                                            screenshot_dir: Path) -> None:
    ep = real_etcd_noauth.endpoint
    for k, v in (("app/one", "1"), ("app/sub/two", "2"), (XSS_KEY, XSS_VALUE)):
        await asyncio.to_thread(etcdctl, ep, "put", k, v)
    dialogs = Dialogs()
    ctx = await browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = await new_page(ctx, dialogs)
        await page.goto(etcd_dash.url + "/keys")
        await expect(page.locator("#auth-off")).to_have_text("etcd auth is off: no login needed")
        children = page.locator("#children")
        await expect(children.get_by_text("app/", exact=True)).to_be_visible()
        await expect(children.get_by_text("<script>alert(1)</", exact=True)).to_be_visible()
        await mark_no_reload(page)
        await children.get_by_text("app/", exact=True).click()
        await expect(children.get_by_text("sub/", exact=True)).to_be_visible()
        await children.get_by_text("one", exact=True).click()
        await page.click("#edit")
        await page.fill("#edit-value", "uno")
        await page.click("#save")
        await page.click("#confirm-ok")
        await expect(page.locator("#banner")).to_contain_text("Saved at revision")
        got = await asyncio.to_thread(etcdctl, ep, "get", "app/one", "--print-value-only")
        assert got.stdout.strip() == "uno"
        # a new key through the form
        await page.click("#new-key")
        await expect(page.locator("#new-key-name")).to_have_value("app/")
        await page.fill("#new-key-name", "app/created")
        await page.fill("#new-key-value", "made in the browser")
        await page.click("#new-key-save")
        await page.click("#confirm-ok")
        await expect(page.locator("#key-name")).to_have_text("app/created")
        got = await asyncio.to_thread(etcdctl, ep, "get", "app/created", "--print-value-only")
        assert got.stdout.strip() == "made in the browser"
        await expect(children.get_by_text("created", exact=True)).to_be_visible()
        # live: a change by etcdctl appears
        await asyncio.to_thread(etcdctl, ep, "put", "app/sub2/three", "3")
        await expect(children.get_by_text("sub2/", exact=True)).to_be_visible()
        await assert_not_reloaded(page)
        await page.screenshot(path=str(screenshot_dir / "keys-real-etcd.png"), full_page=True)
        # the script-named key and the HTML value, as text
        await page.goto(f"{etcd_dash.url}/keys?prefix={b64('<script>alert(1)</')}&key={b64(XSS_KEY)}")
        await expect(page.locator("#key-name")).to_have_text(XSS_KEY)
        await expect(page.locator("#value-raw")).to_have_text(XSS_VALUE)
        await expect(children.get_by_text("script>", exact=True)).to_be_visible()
        assert await page.locator("#value-raw img, #value-raw b, #value-raw script").count() == 0
    finally:
        await ctx.close()
    assert dialogs.seen == []
