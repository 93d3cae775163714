"""Watch and interval modes against the real etcd and meshkit: nothing missed between the
render and the watch, compaction -> full re-read, quiescence under a burst, reload groups,
a stuck resource that blocks nobody, the status endpoint, files edited on disk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import meshkit.confd.runner as runner_mod
from meshkit._internal.clock import FakeClock
from meshkit.client import Client
from meshkit.confd import Confd, ConfdConfig, ResourceRunner, Snapshot, TemplateResource
from tests.tools.confd.conftest import eventually, write_resource, write_template


@asynccontextmanager
async def running(client: Client, confdir: Path, **kw: Any) -> AsyncIterator[Confd]:
    kw.setdefault("mode", "watch")
    kw.setdefault("watch_files", False)
    async with Confd(client, ConfdConfig(str(confdir), **kw)) as confd:
        yield confd


def read(p: Path) -> str:
    try:
        return p.read_text()
    except FileNotFoundError:
        return ""


def one_key_resource(confdir: Path, ns: str, dest: Path, **extra: Any) -> None:
    write_template(confdir, "v.tmpl", "v={{ getv('/v', 'none') }}\n")
    write_resource(confdir, "v.toml", {"src": "v.tmpl", "dest": str(dest), "prefix": ns,
                                       "keys": ["/v"], **extra})


async def test_change_between_render_and_watch_is_not_missed(
        client: Client, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    confdir, dest = tmp_path / "confd", tmp_path / "v.out"
    one_key_resource(confdir, ns, dest)
    await client.put(f"{ns}/v", "1")
    real_fetch = runner_mod.fetch
    calls = 0

    async def fetch_then_write(*a: Any, **kw: Any) -> Snapshot:
        nonlocal calls
        snap = await real_fetch(*a, **kw)
        calls += 1
        if calls == 1:  # a change lands after the snapshot, before the watch exists
            await client.put(f"{ns}/v", "2")
        return snap

    monkeypatch.setattr(runner_mod, "fetch", fetch_then_write)
    async with running(client, confdir) as confd:
        await eventually(lambda: read(dest) == "v=2\n")
        for i in range(3, 13):  # every later change shows up too, in order
            await client.put(f"{ns}/v", str(i))
        await eventually(lambda: read(dest) == "v=12\n")
        st = confd.status()["resources"][0]
        assert st["last_revision"] == (await client.get(f"{ns}/v")).header.revision
        await client.delete(f"{ns}/v")
        await eventually(lambda: read(dest) == "v=none\n")


async def test_compacted_watch_rereads_everything(
        client: Client, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    confdir, dest = tmp_path / "confd", tmp_path / "v.out"
    one_key_resource(confdir, ns, dest)
    await client.put(f"{ns}/v", "1")
    real_fetch = runner_mod.fetch
    calls = 0

    async def fetch_then_compact(*a: Any, **kw: Any) -> Snapshot:
        nonlocal calls
        snap = await real_fetch(*a, **kw)
        calls += 1
        if calls == 1:  # history after the snapshot is compacted away before the watch starts
            for v in ("2", "3", "4"):
                r = await client.put(f"{ns}/v", v)
            await client.compact(r.header.revision, physical=True)
        return snap

    monkeypatch.setattr(runner_mod, "fetch", fetch_then_compact)
    async with running(client, confdir) as confd:
        await eventually(lambda: read(dest) == "v=4\n")
        st = confd.status()["resources"][0]
        assert st["compactions"] == 1 and calls >= 2
        await client.put(f"{ns}/v", "5")  # and it watches again afterwards
        await eventually(lambda: read(dest) == "v=5\n")


async def test_burst_is_quiesced(client: Client, ns: str, tmp_path: Path) -> None:
    confdir, dest, log = tmp_path / "confd", tmp_path / "v.out", tmp_path / "reloads"
    one_key_resource(confdir, ns, dest, wait={"min": "300ms", "max": "3s"},
                     reload_cmd=f"echo r >> {log}")
    await client.put(f"{ns}/v", "0")
    async with running(client, confdir):
        await eventually(lambda: read(dest) == "v=0\n" and read(log) == "r\n")
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(1, 101):  # 100 changes within about a second
            await client.put(f"{ns}/v", str(i))
            await asyncio.sleep(max(0.0, start + i * 0.01 - loop.time()))
        await eventually(lambda: read(dest) == "v=100\n")
        await asyncio.sleep(0.8)  # anything still queued would show up now
        assert read(dest) == "v=100\n"
        reloads = read(log).count("r")
        assert 2 <= reloads <= 4, reloads  # the first render, then at most a few for the burst


async def test_reload_group_reloads_once_per_change(client: Client, ns: str, tmp_path: Path) -> None:
    confdir, log = tmp_path / "confd", tmp_path / "reloads"
    write_template(confdir, "g.tmpl", "{{ getv('/shared') }}\n")
    for name in ("a", "b", "c"):
        write_resource(confdir, f"{name}.toml", {
            "src": "g.tmpl", "dest": str(tmp_path / f"{name}.out"), "prefix": ns, "keys": ["/shared"],
            "reload_cmd": f"echo r >> {log}", "reload_group": "web"})
    await client.put(f"{ns}/shared", "1")
    async with running(client, confdir, group_settle=0.3) as confd:
        await eventually(lambda: all(read(tmp_path / f"{n}.out") == "1\n" for n in "abc"))
        await eventually(lambda: read(log) == "r\n")
        await client.put(f"{ns}/shared", "2")
        await eventually(lambda: all(read(tmp_path / f"{n}.out") == "2\n" for n in "abc"))
        await eventually(lambda: all(r["state"] == "idle" for r in confd.status()["resources"]))
        assert read(log) == "r\nr\n"
        assert [r["reloads"] for r in confd.status()["resources"]] == [2, 2, 2]
    # --onetime: the group runs once too
    await client.put(f"{ns}/shared", "3")
    outcomes = await Confd(client, ConfdConfig(str(confdir), mode="onetime")).run_once()
    assert all(o.ok for o in outcomes) and read(log) == "r\nr\nr\n"


async def test_stuck_resource_blocks_nobody_and_fails_health(client: Client, ns: str, tmp_path: Path) -> None:
    confdir = tmp_path / "confd"
    write_template(confdir, "t.tmpl", "{{ getv('/x') }}\n")
    write_template(confdir, "h.tmpl", "{{ getv('/h', 'h') }}\n")
    write_resource(confdir, "hung.toml", {"src": "h.tmpl", "dest": str(tmp_path / "hung.out"),
                                          "prefix": ns, "keys": ["/h"], "check_cmd": "sleep 30",
                                          "check_timeout": "2s"})
    write_resource(confdir, "fine.toml", {"src": "t.tmpl", "dest": str(tmp_path / "fine.out"),
                                          "prefix": ns, "keys": ["/x"]})
    await client.put(f"{ns}/x", "1")
    async with running(client, confdir, status_listen="127.0.0.1:0", stuck_after=0.5) as confd, \
            aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{confd.status_port}"

        async def health() -> tuple[int, Any]:
            async with http.get(f"{base}/health") as r:
                return r.status, await r.json()

        await eventually(lambda: read(tmp_path / "fine.out") == "1\n")
        await client.put(f"{ns}/x", "2")  # the other resource keeps going while one hangs
        await eventually(lambda: read(tmp_path / "fine.out") == "2\n")
        status, body = await health()
        if status == 200:
            await eventually(lambda: confd.stuck() == ["hung.toml"], within=1.5)
            status, body = await health()
        assert status == 503 and body["stuck"] == ["hung.toml"]
        # the hung check is killed at its timeout: the resource fails, and is no longer stuck
        await eventually(lambda: confd.runners["hung.toml"].status.last_error != "", within=5)
        async with http.get(f"{base}/status") as r:
            st = await r.json()
        hung = next(x for x in st["resources"] if x["name"] == "hung.toml")
        assert "check_cmd timed out and was killed" in hung["last_error"]
        assert hung["state"] == "failed" and not hung["stuck"]
        assert not (tmp_path / "hung.out").exists()
        fine = next(x for x in st["resources"] if x["name"] == "fine.toml")
        assert fine["last_success"] and fine["last_revision"] >= 2 and fine["writes"] == 2
        await eventually(lambda: confd.stuck() == [])
        assert (await health())[0] == 200


async def test_files_edited_on_disk_are_picked_up(client: Client, ns: str, tmp_path: Path) -> None:
    confdir, dest = tmp_path / "confd", tmp_path / "v.out"
    one_key_resource(confdir, ns, dest)
    await client.put(f"{ns}/v", "1")
    async with running(client, confdir, watch_files=True):
        await eventually(lambda: read(dest) == "v=1\n")
        write_template(confdir, "v.tmpl", "value is {{ getv('/v') }}\n")
        await eventually(lambda: read(dest) == "value is 1\n")
        write_template(confdir, "new.tmpl", "new {{ getv('/v') }}\n")
        write_resource(confdir, "new.toml", {"src": "new.tmpl", "dest": str(tmp_path / "new.out"),
                                             "prefix": ns, "keys": ["/v"]})
        await eventually(lambda: read(tmp_path / "new.out") == "new 1\n")
        await client.put(f"{ns}/v", "2")
        await eventually(lambda: read(tmp_path / "new.out") == "new 2\n" and read(dest) == "value is 2\n")


async def test_interval_mode(client: Client, ns: str, tmp_path: Path) -> None:
    confdir, dest = tmp_path / "confd", tmp_path / "v.out"
    one_key_resource(confdir, ns, dest)
    await client.put(f"{ns}/v", "1")
    async with running(client, confdir, mode="interval", interval=0.3) as confd:
        await eventually(lambda: read(dest) == "v=1\n")
        await client.put(f"{ns}/v", "2")
        await eventually(lambda: read(dest) == "v=2\n", within=3)
        assert confd.status()["resources"][0]["renders"] >= 2


async def test_quiescence_window_on_a_fake_clock(tmp_path: Path) -> None:
    """wait {min 1s, max 3s}: render 1 s after the last change, never later than 3 s."""
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "templates").mkdir()
    clock = FakeClock()
    async with Client(["127.0.0.1:1"]) as unused:  # never called: _quiesce reads no key
        confd = Confd(unused, ConfdConfig(str(tmp_path), mode="watch"), clock=clock)
        res = TemplateResource(name="r", src="t", dest="/tmp/r", keys=("/r",), wait_min=1.0, wait_max=3.0)
        runner = ResourceRunner(confd, res)

        async def settle() -> None:
            for _ in range(10):
                await asyncio.sleep(0)

        task = asyncio.create_task(runner._quiesce())
        await settle()
        clock.advance(0.9)
        runner._changed.set()  # a change at t=0.9 restarts the quiet period
        await settle()
        clock.advance(0.9)
        await settle()
        assert not task.done()  # t=1.8: only 0.9 s of quiet
        clock.advance(0.2)
        await settle()
        assert task.done()  # t=2.0: 1 s of quiet

        task = asyncio.create_task(runner._quiesce())
        start = clock.monotonic()
        for _ in range(20):  # a change every 0.5 s, forever
            await settle()
            if task.done():
                break
            clock.advance(0.5)
            runner._changed.set()
        await settle()
        assert task.done() and clock.monotonic() - start == 3.0  # capped by wait.max


def test_status_json_is_serialisable(tmp_path: Path) -> None:
    from meshkit.confd import ResourceStatus

    st = ResourceStatus("r", "t", "/d", "g", busy_since=1.0)
    d = st.as_dict(now=100.0, stuck_after=10.0)
    assert d["stuck"] is True and d["busy_for"] == 99.0
    assert json.loads(json.dumps(d))["name"] == "r"


async def test_cli_watch_serves_status_and_stops_on_sigterm(
        client: Client, ns: str, tmp_path: Path, server: Any) -> None:
    import signal
    import sys

    from tests.support.procs import free_port

    confdir, dest = tmp_path / "confd", tmp_path / "v.out"
    one_key_resource(confdir, ns, dest)
    await client.put(f"{ns}/v", "1")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshkit.cli.confd", "--endpoints", server.url, "--confdir", str(confdir),
        "--watch", "--status-listen", f"127.0.0.1:{port}", "--log-level", "warn",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        await eventually(lambda: read(dest) == "v=1\n", within=15)
        await client.put(f"{ns}/v", "2")
        await eventually(lambda: read(dest) == "v=2\n")
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/status") as r:
            body = await r.json()
        assert r.status == 200 and body["mode"] == "watch" and body["healthy"] is True
        assert body["resources"][0]["last_revision"] == (await client.get(f"{ns}/v")).header.revision
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
