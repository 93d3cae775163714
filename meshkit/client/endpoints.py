"""Endpoint parsing and the pool of lazily created grpc.aio channels (one per endpoint)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc

from meshkit.api.etcdserverpb import rpc_pb2_grpc

MAX_RECV = 2**31 - 1  # etcd's client: math.MaxInt32
MAX_SEND = 2 * 1024 * 1024  # etcd's client: 2 MiB


def parse_endpoint(ep: str) -> str:
    """"host:port", "http://host:port" -> the gRPC target "host:port"."""
    ep = ep.strip()
    if not ep:
        raise ValueError("empty endpoint")
    if "://" in ep:
        u = urlsplit(ep)
        if u.scheme not in ("http", "https", "grpc"):
            raise ValueError(f"unsupported endpoint scheme in {ep!r}")
        if not u.hostname or u.port is None:
            raise ValueError(f"endpoint needs host and port: {ep!r}")
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        return f"{host}:{u.port}"
    host, sep, port = ep.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"endpoint must be host:port or http://host:port, got {ep!r}")
    return ep


@dataclass(frozen=True, slots=True)
class Stubs:
    kv: rpc_pb2_grpc.KVStub
    watch: rpc_pb2_grpc.WatchStub
    lease: rpc_pb2_grpc.LeaseStub
    cluster: rpc_pb2_grpc.ClusterStub
    maintenance: rpc_pb2_grpc.MaintenanceStub
    auth: rpc_pb2_grpc.AuthStub


class EndpointPool:
    """The endpoints in order, a sticky "current" one, and one channel each, made on first use."""

    def __init__(
        self, endpoints: Iterable[str], *, keepalive_time: float = 30.0,
        keepalive_timeout: float = 10.0, max_reconnect_backoff: float = 1.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        endpoints = list(endpoints)
        self.endpoints = [parse_endpoint(e) for e in endpoints]
        # TLS for https:// endpoints, and for every endpoint when credentials are given
        # (etcd's clientv3 with a TLS config); https without them trusts the system CAs.
        self._credentials = credentials
        self._secure = {t for e, t in zip(endpoints, self.endpoints, strict=True)
                        if credentials is not None or e.strip().startswith("https://")}
        if not self.endpoints:
            raise ValueError("at least one endpoint is required")
        if len(set(self.endpoints)) != len(self.endpoints):
            raise ValueError(f"duplicate endpoints: {self.endpoints}")
        self._current = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, Stubs] = {}
        self.options: list[tuple[str, int]] = [
            ("grpc.keepalive_time_ms", int(keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", int(keepalive_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_receive_message_length", MAX_RECV),
            ("grpc.max_send_message_length", MAX_SEND),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", int(max_reconnect_backoff * 1000)),
            ("grpc.enable_retries", 0),  # the client's own rule decides what is retried
        ]
        self.closed = False

    @property
    def current(self) -> str:
        return self.endpoints[self._current]

    def rotation(self) -> list[str]:
        """Every endpoint once, starting at the current one."""
        n = len(self.endpoints)
        return [self.endpoints[(self._current + i) % n] for i in range(n)]

    def advance(self, failed: str) -> None:
        """Move "current" past ``failed`` (no-op when another task already moved it)."""
        if self.current == failed:
            self._current = (self._current + 1) % len(self.endpoints)

    def prefer(self, ep: str) -> None:
        if ep in self.endpoints:
            self._current = self.endpoints.index(ep)

    def channel(self, ep: str) -> grpc.aio.Channel:
        if self.closed:
            raise RuntimeError("the client is closed")
        ch = self._channels.get(ep)
        if ch is None:
            if ep in self._secure:
                creds = self._credentials or grpc.ssl_channel_credentials()
                ch = grpc.aio.secure_channel(ep, creds, options=self.options)
            else:
                ch = grpc.aio.insecure_channel(ep, options=self.options)
            self._channels[ep] = ch
        return ch

    def stubs(self, ep: str) -> Stubs:
        s = self._stubs.get(ep)
        if s is None:
            ch = self.channel(ep)
            s = Stubs(
                rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.WatchStub(ch), rpc_pb2_grpc.LeaseStub(ch),
                rpc_pb2_grpc.ClusterStub(ch), rpc_pb2_grpc.MaintenanceStub(ch), rpc_pb2_grpc.AuthStub(ch),
            )
            self._stubs[ep] = s
        return s

    async def ready(self, ep: str, timeout: float, *, wait_failed: bool = False) -> bool:  # noqa: ASYNC109
        """Connect ``ep`` if needed; False if it is failing or not ready within ``timeout``.

        A channel already in TRANSIENT_FAILURE answers False at once unless
        ``wait_failed`` (then it may recover within the timeout).
        """
        ch = self.channel(ep)
        C = grpc.ChannelConnectivity
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        state = ch.get_state(try_to_connect=True)
        while state != C.READY:
            if state == C.SHUTDOWN or (state == C.TRANSIENT_FAILURE and not wait_failed):
                return False
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(ch.wait_for_state_change(state), remaining)
            except TimeoutError:
                return False
            state = ch.get_state(try_to_connect=True)
            wait_failed = False  # after one change, a fresh failure is final for this attempt
        return True

    async def close(self) -> None:
        self.closed = True
        chans = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        for ch in chans:
            with contextlib.suppress(Exception):
                await ch.close(None)
