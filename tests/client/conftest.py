from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest

from meshkit.api.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from meshkit.client import Client
from tests.support.procs import ServerProc


def wait_serving(endpoint: str, timeout: float = 15.0) -> None:
    """Block until the server answers Maintenance.Status (listening is not serving yet)."""
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


@pytest.fixture
def endpoint(real_etcd: ServerProc) -> str:
    """The one server the client tests talk to, as "127.0.0.1:PORT".

    Today the real etcd; the lead parametrizes this over meshkit's own server too.
    """
    wait_serving(real_etcd.endpoint)
    return real_etcd.endpoint


@pytest.fixture
async def client(endpoint: str) -> AsyncIterator[Client]:
    async with Client([endpoint], timeout=5.0) as c:
        yield c
