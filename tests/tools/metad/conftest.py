"""Fixtures of the metad tests: a fresh cluster per module (the real etcd AND meshkit's
server), a client, a metad on loopback, and HTTP callers bound to distinct loopback
addresses (127.0.0.2, 127.0.0.3, ...) so that /self differs per caller."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from meshkit.client import Client
from meshkit.metad import Metad, MetadConfig
from tests.support.procs import ServerProc, start_etcd, start_meshkit
from tests.tools.confd.conftest import _wait_serving

LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module", params=["etcd", "meshkit"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    start = start_etcd if request.param == "etcd" else start_meshkit
    sp = start(tmp_path_factory.mktemp(f"metad-{request.param}"))
    try:
        _wait_serving(sp.endpoint)
        yield sp
    finally:
        sp.stop()


@pytest.fixture
async def client(server: ServerProc) -> AsyncIterator[Client]:
    async with Client([server.endpoint], timeout=5.0) as c:
        yield c


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test alone (module-scoped servers are shared)."""
    return "/t/" + request.node.name.replace("[", "_").replace("]", "").replace("/", "_")


def config(prefix: str, **kw: Any) -> MetadConfig:
    group = prefix.strip("/").replace("/", "_")
    base: dict[str, Any] = dict(listen=f"{LOOPBACK}:0", manage_listen=f"{LOOPBACK}:0",
                                prefix=prefix, group=group, wait_timeout=5.0)
    base.update(kw)
    return MetadConfig(**base)


@asynccontextmanager
async def running_metad(client: Client, cfg: MetadConfig) -> AsyncIterator[Metad]:
    async with Metad(client, cfg) as m:
        await m.wait_ready(10)
        yield m


@pytest.fixture
async def metad(client: Client, prefix: str) -> AsyncIterator[Metad]:
    async with running_metad(client, config(prefix)) as m:
        yield m


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def version(self) -> int:
        return int(self.headers["X-Metad-Version"])


class Caller:
    """HTTP requests from one loopback source address (loopback only)."""

    def __init__(self, source: str) -> None:
        assert source.startswith("127."), "tests use loopback addresses only"
        self.source = source
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Caller:
        conn = aiohttp.TCPConnector(local_addr=(self.source, 0), force_close=True)
        self._session = aiohttp.ClientSession(connector=conn)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        await self._session.close()

    async def request(self, method: str, port: int, path: str, *, accept: str | None = None,
                      headers: dict[str, str] | None = None, data: Any = None,
                      timeout: float = 15.0) -> Reply:  # noqa: ASYNC109
        assert self._session is not None
        h = dict(headers or {})
        if accept:
            h["Accept"] = accept
        async with self._session.request(method, f"http://{LOOPBACK}:{port}{path}", headers=h,
                                         data=data, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            body = await r.read()
            return Reply(r.status, body, dict(r.headers))

    async def get(self, port: int, path: str, **kw: Any) -> Reply:
        return await self.request("GET", port, path, **kw)


@asynccontextmanager
async def callers(*sources: str) -> AsyncIterator[list[Caller]]:
    cs = [Caller(s) for s in sources]
    for c in cs:
        await c.__aenter__()
    try:
        yield cs
    finally:
        for c in cs:
            await c.__aexit__(None, None, None)


async def eventually(check: Any, within: float = 10.0, interval: float = 0.05) -> Any:
    """Await until ``check()`` (sync or async) returns truthy; bounded in time."""
    import inspect

    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within}s (last: {last!r})")


# The fixture of yunify/metad's docs/api.md: six nodes, caller 127.0.0.2 is node 2.
NODES: dict[str, Any] = {
    "nodes": {
        "1": {"ip": "192.168.1.1", "name": "nn_node1"},
        "2": {"ip": "192.168.1.2", "name": "node2"},
        "3": {"ip": "192.168.1.3", "name": "node3"},
        "6": {"ip": "192.168.1.6", "name": "node6", "label": {"key3": "value3"}},
    },
}
MAPPING: dict[str, Any] = {
    "127.0.0.2": {"node": "/nodes/2"},
    "127.0.0.3": {"node": "/nodes/3", "peer": {"ip": "/nodes/6/ip"}},
}
