"""Every concurrency test runs against the real etcd 3.4 and against `meshkit server`.

One server per module and kind (starting servers dominates the run time); tests keep
to their own key prefixes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from meshkit.client import Client
from tests.client.conftest import wait_serving
from tests.support.procs import ServerProc, require_reference_binaries, start_etcd, start_meshkit

SERVERS = ["etcd", "meshkit"]


@pytest.fixture(scope="module", params=SERVERS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    if request.param == "etcd":
        require_reference_binaries()
    tmp = tmp_path_factory.mktemp(request.param)
    sp = (start_etcd if request.param == "etcd" else start_meshkit)(tmp)
    try:
        wait_serving(sp.endpoint)
        yield sp
    finally:
        sp.stop()


@pytest.fixture
def endpoint(server: ServerProc) -> str:
    return server.endpoint


@pytest.fixture
async def client(endpoint: str) -> AsyncIterator[Client]:
    async with Client([endpoint], timeout=5.0) as c:
        yield c


@pytest.fixture
def pfx(request: pytest.FixtureRequest) -> str:
    """A key prefix of the test's own."""
    return "t/" + request.node.name.replace("[", "-").rstrip("]")
