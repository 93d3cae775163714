"""Fixtures for the load-balancing tests: every server-backed test runs against the
real etcd 3.4 and `meshkit server` as the registry store (the registry tests'
fixtures), with real gRPC backends on 127.0.0.1 registered through the Registrar."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from meshkit.client import Client
from meshkit.registry import Instance, Registrar
from tests.tools.lb.backends import Backend
from tests.tools.registry.conftest import client, server  # noqa: F401  (fixtures)


class Fleet:
    """Backends and their registrars; ``add`` starts and registers one more."""

    def __init__(self, etcd: Client, stack: contextlib.AsyncExitStack) -> None:
        self.client = etcd
        self.stack = stack
        self.backends: dict[str, Backend] = {}
        self.registrars: dict[str, Registrar] = {}

    async def add(self, ident: str, *, weight: int = 1, zone: str = "",
                  register: bool = True) -> Backend:
        b = await self.stack.enter_async_context(Backend(ident))
        self.backends[ident] = b
        if register:
            await self.register(ident, weight=weight, zone=zone)
        return b

    async def register(self, ident: str, *, weight: int = 1, zone: str = "") -> Registrar:
        b = self.backends[ident]
        r = Registrar(self.client, Instance("web", b.addr, id=ident, weight=weight, zone=zone),
                      ttl=30)
        await r.start()
        self.stack.push_async_callback(r.close)
        await r.wait_registered(10)
        self.registrars[ident] = r
        return r

    async def deregister(self, ident: str) -> None:
        await self.registrars.pop(ident).close()


@pytest.fixture
async def fleet(client: Client) -> AsyncIterator[Fleet]:  # noqa: F811
    async with contextlib.AsyncExitStack() as stack:
        yield Fleet(client, stack)


