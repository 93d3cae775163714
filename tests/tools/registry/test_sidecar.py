"""`meshkit register` as a real process in front of a real HTTP app, against both servers."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from meshkit.client import Client
from meshkit.registry import Instance, Registrar, decode_value
from tests.tools.registry.conftest import REGISTER, HealthApp, Server, eventually, sidecar_proc

KEY = "meshkit/services/web/w1"


def _args(server: Server, app: HealthApp, *extra: str) -> list[str]:
    return ["--endpoints", server.endpoint, "--service", "web", "--addr", app.addr, "--id", "w1",
            "--check", app.url, "--interval", "100ms", "--timeout", "1s", "--ttl", "2",
            "--meta", "team=a", "--meta", "tier=web", "--weight", "7", "--zone", "z1", *extra]


async def _present(c: Client) -> bool:
    return bool((await c.get(KEY)).kvs)


async def _absent(c: Client) -> bool:
    return not (await c.get(KEY)).kvs


async def test_health_flips_and_sigterm(server: Server, client: Client, health_app: HealthApp,
                                        tmp_path: Path) -> None:
    log = tmp_path / "sidecar.log"
    with sidecar_proc(_args(server, health_app, "--drain", "300ms", "--fall", "2"), log) as p:
        await eventually(lambda: _present(client), 15, "registered once the check passes")
        up = decode_value((await client.get(KEY)).kvs[0].value)
        assert up.addr == health_app.addr
        assert up.metadata is None and up.meshkit["meta"] == {"team": "a", "tier": "web"}
        assert (up.meshkit["weight"], up.meshkit["zone"]) == (7, "z1")
        health_app.healthy = False
        await eventually(lambda: _absent(client), 5, "withdrawn while the check fails")
        health_app.healthy = True
        await eventually(lambda: _present(client), 5, "back once the check passes again")
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        await eventually(lambda: _absent(client), 1.0, "withdrawn at once on SIGTERM")
        assert time.monotonic() - t0 < 1.0
        rc = await asyncio.to_thread(p.wait, 10)
        assert rc == 0
        assert (await client.leases()).ids == []  # the lease was revoked after the drain
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    msgs = [x["msg"] for x in lines]
    for word in ("registered", "withdrawn", "now unhealthy", "now healthy", "draining",
                 "deregistered"):
        assert any(word in m for m in msgs), (word, msgs)


async def test_kill_9_disappears_within_ttl(server: Server, client: Client, health_app: HealthApp,
                                            tmp_path: Path) -> None:
    with sidecar_proc(_args(server, health_app), tmp_path / "sidecar.log") as p:
        await eventually(lambda: _present(client), 15, "registered")
        p.kill()
        p.wait(5)
        t0 = time.monotonic()
        await eventually(lambda: _absent(client), 6, "gone once the lease expires")
        # The server's minimum TTL (etcd: 1.5 x election timeout, so 2 s here) bounds it.
        assert time.monotonic() - t0 < 2 + 2.5


async def test_restart_with_same_id_does_not_duplicate(server: Server, client: Client,
                                                      health_app: HealthApp, tmp_path: Path) -> None:
    with sidecar_proc(_args(server, health_app), tmp_path / "a.log") as p:
        await eventually(lambda: _present(client), 15, "registered")
        old_lease = (await client.get(KEY)).kvs[0].lease
        p.kill()
        p.wait(5)
    with sidecar_proc(_args(server, health_app), tmp_path / "b.log") as p2:
        await eventually(lambda: _owned_by_other_lease(client, old_lease), 15,
                         "re-registered by the new sidecar")
        await asyncio.sleep(2.5)  # the dead sidecar's lease expires
        res = await client.get("meshkit/services/", prefix=True)
        assert [kv.key.decode() for kv in res.kvs] == [KEY]
        p2.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(p2.wait, 10) == 0


async def _owned_by_other_lease(c: Client, old: int) -> bool:
    res = await c.get(KEY)
    return bool(res.kvs) and res.kvs[0].lease not in (0, old)


def test_bad_flags_are_clear_errors() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*REGISTER, *args], capture_output=True, text=True, timeout=30)

    r = run("--service", "web")
    assert r.returncode == 2 and "--addr is required" in r.stderr
    r = run("--service", "web", "--addr", "1.2.3.4:80", "--ttl", "abc")
    assert r.returncode == 2 and 'invalid value "abc" for flag -ttl' in r.stderr
    r = run("--service", "a/b", "--addr", "nohost", "--meta", "x=1", "--meta", "x=2",
            "--check", "tcp://nohost")
    assert r.returncode == 2
    for word in ("service 'a/b'", "addr 'nohost'", "given twice: x", "--check"):
        assert word in r.stderr, (word, r.stderr)
    r = run("--bogus")
    assert r.returncode == 2 and "flag provided but not defined: -bogus" in r.stderr
    r = run("--help")
    assert r.returncode == 0 and "--check" in r.stdout


async def test_services_listing(server: Server, client: Client) -> None:
    async with Registrar(client, Instance("web", "127.0.0.1:81", id="a", weight=4, zone="z9"),
                         ttl=30) as r:
        await r.wait_registered(10)
        code = "import sys; from meshkit.cli.register import services_main; sys.exit(services_main(sys.argv[1:]))"

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                                  text=True, timeout=30)

        out = await asyncio.to_thread(run, "web", "--endpoints", server.endpoint, "-w", "json")
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        assert len(rows) == 1
        row = rows[0]
        assert (row["service"], row["id"], row["addr"], row["weight"], row["zone"], row["health"]) == (
            "web", "a", "127.0.0.1:81", 4, "z9", "passing")
        assert 20 < row["ttl"] <= 30
        table = await asyncio.to_thread(run, "--endpoints", server.endpoint)
        assert table.returncode == 0
        header, line = table.stdout.strip().splitlines()
        assert header.split() == ["SERVICE", "ID", "ADDR", "HEALTH", "WEIGHT", "ZONE", "VERSION", "TTL"]
        assert line.split()[:6] == ["web", "a", "127.0.0.1:81", "passing", "4", "z9"]
