"""``MetadConfig``: a frozen dataclass whose ``validate()`` names every broken rule."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from meshkit.metad.errors import MetadError
from meshkit.metad.paths import KeyLayout

__all__ = ["MetadConfig", "split_hostport"]


def split_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``; an empty host means every interface)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"listen address must be HOST:PORT, got {text!r}")
    p = int(port)
    if not 0 <= p <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    host = host.strip("[]")
    return (host or "0.0.0.0"), p


@dataclass(frozen=True)
class MetadConfig:
    listen: str = "0.0.0.0:80"  # the metadata API (metad: ":80")
    manage_listen: str = "127.0.0.1:9611"  # the manage API (metad's default)
    manage_allow_remote: bool = False  # allow a non-loopback manage address
    prefix: str = ""
    group: str = "default"
    xff: bool = False
    trusted_proxies: tuple[str, ...] = ()
    wait_timeout: float = 60.0  # a long poll without &timeout=
    max_wait_timeout: float = 300.0  # the cap on &timeout=
    max_waiters: int = 10000  # concurrent long polls; more get 503
    max_body: int = 1 << 20  # manage request bodies
    max_txn_ops: int = 128  # etcd's --max-txn-ops default
    history: int = 1024  # revisions kept for &prev_version=
    cache_entries: int = 4096  # rendered answers kept per mirror version
    ready_timeout: float = 30.0

    def layout(self) -> KeyLayout:
        return KeyLayout.make(self.prefix, self.group)

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(c, strict=False) for c in self.trusted_proxies]

    def validate(self) -> list[str]:
        problems: list[str] = []
        for name, value in (("listen", self.listen), ("manage listen", self.manage_listen)):
            try:
                split_hostport(value)
            except ValueError as e:
                problems.append(f"{name}: {e}")
        try:
            host, _ = split_hostport(self.manage_listen)
            if not self.manage_allow_remote:
                try:
                    loop = ipaddress.ip_address(host).is_loopback
                except ValueError:
                    loop = host == "localhost"
                if not loop:
                    problems.append(f"the manage API must listen on loopback (got {host}); "
                                    "give --manage-allow-remote to override")
        except ValueError:
            pass
        try:
            self.layout()
        except ValueError as e:
            problems.append(str(e))
        except MetadError as e:  # a bad prefix component
            problems.append(f"prefix: {e}")
        for c in self.trusted_proxies:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                problems.append(f"trusted proxy {c!r} is not an IP address or CIDR")
        if self.xff and not self.trusted_proxies:
            problems.append("--xff needs at least one --trusted-proxy CIDR: X-Forwarded-For is "
                            "believed only from trusted proxies")
        if self.trusted_proxies and not self.xff:
            problems.append("--trusted-proxy is given without --xff")
        if not 0 < self.wait_timeout <= self.max_wait_timeout:
            problems.append("wait timeout must be > 0 and <= the max wait timeout")
        for name, v in (("max waiters", self.max_waiters), ("max body", self.max_body),
                        ("max txn ops", self.max_txn_ops), ("history", self.history),
                        ("cache entries", self.cache_entries)):
            if v < 1:
                problems.append(f"{name} must be at least 1")
        return problems
