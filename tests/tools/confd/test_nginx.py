"""End to end with a real nginx on loopback, configured by templates/nginx exactly as shipped
(only dest and the nginx command lines point at the test's own prefix directory):
two registered backends, a deregistration, a bad value and a bad template."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from meshkit.client import Client
from meshkit.confd import Confd, ConfdConfig
from meshkit.registry.model import Instance, encode_value
from tests.support.procs import free_port, wait_port
from tests.tools.confd.conftest import eventually, require_nginx

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "templates" / "nginx"
REGISTRY = "meshkit/services"  # the registry's default prefix (relative keys, like etcd Go naming)


def go_value(service: str, inst_id: str, addr: str, weight: int = 1) -> str:
    """The value the registrar writes (the registry's own encoder)."""
    inst = Instance(service=service, id=inst_id, addr=addr, weight=weight)
    return encode_value(inst).decode()


@asynccontextmanager
async def backend(name: str) -> AsyncIterator[int]:
    async def hello(_req: web.Request) -> web.Response:
        return web.Response(text=name)

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


@pytest.fixture
def nginx_prefix(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    binary = require_nginx()
    prefix = tmp_path / "nginx"
    for d in ("conf", "logs", "tmp"):
        (prefix / d).mkdir(parents=True)
    yield binary, prefix


def nginx_args(binary: str, prefix: Path, conf: str, *extra: str, daemon: bool = True) -> str:
    glob = f"{'' if daemon else 'daemon off; '}pid {prefix}/nginx.pid;"
    return f"{binary} -p {prefix}/ -e {prefix}/logs/error.log -c {conf} -g '{glob}' " + " ".join(extra)


async def test_nginx_follows_the_registry(client: Client, tmp_path: Path,
                                          nginx_prefix: tuple[str, Path]) -> None:
    binary, prefix = nginx_prefix
    conf = prefix / "conf" / "nginx.conf"
    confdir = tmp_path / "confd"
    (confdir / "conf.d").mkdir(parents=True)
    (confdir / "templates").mkdir()
    template = confdir / "templates" / "nginx.conf.tmpl"
    template.write_text((EXAMPLE / "templates" / "nginx.conf.tmpl").read_text())
    resource = (EXAMPLE / "conf.d" / "nginx.toml").read_text()
    resource = resource.replace('dest = "/etc/nginx/nginx.conf"', f'dest = "{conf}"')
    resource = resource.replace('check_cmd = "nginx -t -q -c {{.src}}"',
                                f'check_cmd = "{nginx_args(binary, prefix, "{{.src}}", "-t -q")}"')
    resource = resource.replace('reload_cmd = "nginx -s reload"',
                                f'reload_cmd = "{nginx_args(binary, prefix, str(conf), "-s reload")}"')
    assert str(conf) in resource and "-s reload" in resource and str(prefix) in resource
    (confdir / "conf.d" / "nginx.toml").write_text(resource)

    port = free_port()
    await client.put("/nginx/listen", f"127.0.0.1:{port}")
    async with backend("A") as port_a, backend("B") as port_b, aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True)) as http:
        leases = {}
        for name, p in (("a", port_a), ("b", port_b)):
            lease = await client.grant(30)
            leases[name] = lease.id
            await client.put(f"{REGISTRY}/web/{name}", go_value("web", name, f"127.0.0.1:{p}"), lease=lease.id)

        async def hits(n: int = 8) -> set[str]:
            seen = set()
            for _ in range(n):
                async with http.get(f"http://127.0.0.1:{port}/web/") as r:
                    seen.add(await r.text() if r.status == 200 else f"HTTP {r.status}")
            return seen

        cfg = ConfdConfig(str(confdir), mode="watch", watch_files=True)
        async with Confd(client, cfg) as confd:
            await eventually(lambda: conf.exists() and f"127.0.0.1:{port_b}" in conf.read_text())
            text = conf.read_text()
            assert "upstream web {" in text and f"server 127.0.0.1:{port_a} weight=1;" in text
            proc = start_nginx(nginx_args(binary, prefix, str(conf), daemon=False))
            try:
                wait_port(port, proc=proc)
                assert await hits() == {"A", "B"}

                # deregistered (the registrar revokes its lease): rendered, checked, reloaded
                await client.revoke(leases["b"])
                await eventually(lambda: f"127.0.0.1:{port_b}" not in conf.read_text())
                await eventually(lambda: hits(), within=10)  # nginx answers throughout
                await eventually(lambda: _only_a(hits), within=10)
                st = confd.runners["nginx.toml"].status
                assert st.reloads >= 1 and st.last_error == ""
                good = conf.read_bytes()

                # a bad value breaks the nginx config: check_cmd refuses it, nginx keeps serving
                await client.put("/nginx/listen", f"127.0.0.1:{port}; no_such_directive on")
                await eventually(lambda: "check_cmd exited" in st.last_error)
                assert "no_such_directive" in st.last_error_output
                assert conf.read_bytes() == good
                assert await hits() == {"A"}
                await client.put("/nginx/listen", f"127.0.0.1:{port}")
                await eventually(lambda: st.last_error == "" and st.state == "idle")
                assert conf.read_bytes() == good  # the same output again: nothing written

                # a template that breaks the config, edited on disk: refused the same way
                template.write_text(template.read_text().replace("worker_connections 256;",
                                                                 "worker_connections 256; broken_here;"))
                await eventually(lambda: "check_cmd exited" in st.last_error)
                assert "broken_here" in st.last_error_output
                assert conf.read_bytes() == good
                assert await hits() == {"A"}
            finally:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def start_nginx(command: str) -> subprocess.Popen[bytes]:
    """nginx in the foreground (daemon off), so the test owns and stops the master."""
    return subprocess.Popen(shlex.split(command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _only_a(hits: object) -> bool:
    return await hits() == {"A"}  # type: ignore[operator,no-any-return]
