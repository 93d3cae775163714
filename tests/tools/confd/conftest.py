"""Fixtures of the confd tests: a fresh cluster (the real etcd AND meshkit's server),
a client, a confd directory, and the real nginx when installed."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from meshkit.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from meshkit.client import Client
from tests.support.procs import ServerProc, start_etcd, start_meshkit

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


def require_nginx() -> str:
    """The nginx binary; skip when absent, but fail in CI (MESHKIT_REQUIRE_ETCD=1)."""
    if NGINX is not None:
        return NGINX
    msg = "nginx is not installed (apt-get install nginx)"
    if os.environ.get("MESHKIT_REQUIRE_ETCD"):
        pytest.fail(msg)
    pytest.skip(msg)


def _wait_serving(endpoint: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(endpoint) as ch:
        stub = rpc_pb2_grpc.MaintenanceStub(ch)
        while True:
            try:
                stub.Status(rpc_pb2.StatusRequest(), timeout=1.0, wait_for_ready=True)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture(scope="module", params=["etcd", "meshkit"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One server per module and kind, shared by the module's tests (each test uses
    its own key prefix): the real etcd 3.4 and `meshkit server`."""
    start = start_etcd if request.param == "etcd" else start_meshkit
    sp = start(tmp_path_factory.mktemp(f"confd-{request.param}"))
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
def ns(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test alone (module-scoped servers are shared)."""
    return "/t/" + request.node.name.replace("[", "_").replace("]", "").replace("/", "_")


def write_resource(confdir: Path, name: str, body: dict[str, object]) -> Path:
    """A resource file in confd's TOML format (strings, numbers, bools, lists, tables)."""
    (confdir / "conf.d").mkdir(parents=True, exist_ok=True)
    (confdir / "templates").mkdir(parents=True, exist_ok=True)
    lines = ["[template]"]
    tables: list[str] = []
    for k, v in body.items():
        if isinstance(v, dict):
            tables.append(f"[template.{k}]")
            tables += [f"{json.dumps(str(kk))} = {json.dumps(vv)}" for kk, vv in v.items()]
        else:
            lines.append(f"{k} = {json.dumps(v)}")
    path = confdir / "conf.d" / name
    path.write_text("\n".join(lines + tables) + "\n")
    return path


def write_template(confdir: Path, name: str, text: str) -> Path:
    (confdir / "templates").mkdir(parents=True, exist_ok=True)
    path = confdir / "templates" / name
    path.write_text(text)
    return path


async def eventually(check: object, within: float = 10.0, interval: float = 0.05) -> None:
    """Await until ``check()`` (sync or async) returns truthy; bounded in time."""
    import asyncio
    import inspect

    deadline = time.monotonic() + within
    last: object = None
    while time.monotonic() < deadline:
        last = check()  # type: ignore[operator]
        if inspect.isawaitable(last):
            last = await last
        if last:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within}s (last: {last!r})")
