"""The dashboard's settings: one frozen dataclass whose ``validate()`` names every broken rule."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from meshkit.client.endpoints import parse_endpoint

__all__ = ["DashboardConfig", "split_hostport"]


def split_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6; an empty host means every address)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT with a port in 0..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # raises ValueError when it is not one
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 host in brackets, e.g. [::1]:8080")
    return host, int(port)


def _origin_problem(origin: str) -> str | None:
    u = urlsplit(origin)
    if u.scheme not in ("http", "https") or not u.netloc or u.path or u.query or u.fragment:
        return f"allowed origin {origin!r} must be scheme://host[:port] with nothing after it"
    return None


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    """What ``meshkit dashboard`` needs. Durations are seconds."""

    endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    listen: str = "127.0.0.1:8080"
    timeout: float = 5.0  # per etcd request
    ca_cert: str | None = None  # TLS to etcd, as etcdctl's --cacert/--cert/--key
    cert: str | None = None
    key: str | None = None
    registry_prefix: str = "meshkit/services"
    config_prefix: str = "/meshkit/config/"
    lock_prefixes: tuple[str, ...] = ("",)  # "" is the whole keyspace
    session_idle: float = 1800.0  # a session unused this long ends
    session_max_age: float = 12 * 3600.0  # and every session ends after this
    max_sessions: int = 10000
    status_interval: float = 2.0  # members page: Status of every member this often
    ttl_refresh: float = 5.0  # lease TTLs shown on the services and locks pages
    heartbeat: float = 15.0  # a comment line on idle event streams
    allowed_origins: tuple[str, ...] = ()  # besides the dashboard's own (behind a proxy)
    cookie_secure: bool = False  # always mark the cookie Secure (TLS ends at a proxy)
    history_limit: int = 200  # newest entries of a key's history shown
    list_limit: int = 1000  # children of one prefix listed
    scan_limit: int = 100_000  # keys scanned to find locks and elections
    max_value_bytes: int = 1 << 20  # larger values are shown cut

    def validate(self) -> list[str]:
        problems: list[str] = []
        if not self.endpoints:
            problems.append("at least one endpoint is required")
        for ep in self.endpoints:
            try:
                parse_endpoint(ep)
            except ValueError as e:
                problems.append(f"endpoint: {e}")
        try:
            split_hostport(self.listen)
        except ValueError as e:
            problems.append(f"listen: {e}")
        if (self.cert is None) != (self.key is None):
            problems.append("give both --cert and --key, or neither")
        for name, value in (("timeout", self.timeout), ("session idle time", self.session_idle),
                            ("session max age", self.session_max_age),
                            ("status interval", self.status_interval),
                            ("ttl refresh", self.ttl_refresh), ("heartbeat", self.heartbeat)):
            if not value > 0:
                problems.append(f"{name} must be positive (got {value})")
        for name, n in (("max sessions", self.max_sessions), ("history limit", self.history_limit),
                        ("list limit", self.list_limit), ("scan limit", self.scan_limit),
                        ("max value bytes", self.max_value_bytes)):
            if n < 1:
                problems.append(f"{name} must be at least 1 (got {n})")
        if not self.registry_prefix.strip("/"):
            problems.append("the registry prefix must not be empty")
        if not self.config_prefix.endswith("/"):
            problems.append(f"the config prefix must end with '/': {self.config_prefix!r}")
        if not self.lock_prefixes:
            problems.append("give at least one lock prefix ('' is the whole keyspace)")
        for o in self.allowed_origins:
            p = _origin_problem(o)
            if p:
                problems.append(p)
        return problems
