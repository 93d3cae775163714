"""Paths of the metadata tree and where they live in the cluster (yunify/metad's layout).

* data:    ``{prefix}/{path}``           (``--prefix``, default ``""``)
* mapping: ``/_metad/mapping/{group}/{ip}/...``  (leaves are data paths)
* rules:   ``/_metad/rule/{group}/{host}`` = JSON ``[{"path": "/x", "mode": 1}, ...]``

A path is a tuple of components. Empty components collapse (``//a/`` is ``/a``);
``.`` and ``..`` components, NUL and other control characters are refused, so a
path can never climb out of its tree.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal, TypeAlias

from meshkit.metad.errors import BadRequestError

__all__ = ["META_ROOT", "KeyLayout", "Parts", "canonical_ip", "join", "split_path"]

Parts: TypeAlias = tuple[str, ...]
Kind: TypeAlias = Literal["data", "mapping", "rule"]
META_ROOT = "/_metad/"


def _bad_component(c: str) -> bool:
    return c in (".", "..") or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in c)


def split_path(path: str, *, what: str = "path") -> Parts:
    """``/a//b/`` -> ``("a", "b")``; raises BadRequestError on ``.``/``..``/control characters."""
    parts = tuple(p for p in path.split("/") if p)
    for p in parts:
        if _bad_component(p):
            raise BadRequestError(f"invalid {what} {path!r}: components '.', '..' and control "
                                  "characters are not allowed")
    return parts


def join(parts: Parts) -> str:
    return "/" + "/".join(parts)


def canonical_ip(text: str) -> str | None:
    """The canonical text of an IP address (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _norm_prefix(prefix: str) -> str:
    parts = split_path(prefix, what="prefix")
    return join(parts) if parts else ""


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Key layout of one metad group; ``prefix`` is normalized (``""`` or ``/a/b``)."""

    prefix: str = ""
    group: str = "default"

    @classmethod
    def make(cls, prefix: str = "", group: str = "default") -> KeyLayout:
        if not group or "/" in group or _bad_component(group):
            raise ValueError(f"invalid group name {group!r}")
        return cls(_norm_prefix(prefix), group)

    # -- the three trees ---------------------------------------------------------------

    def base(self, kind: Kind) -> str:
        """The key every key of ``kind`` starts with (ends with '/')."""
        if kind == "data":
            return self.prefix + "/"
        return f"{META_ROOT}{kind}/{self.group}/"

    def key(self, kind: Kind, parts: Parts) -> bytes:
        if not parts:
            raise ValueError("the root of a tree is not a key")
        return (self.base(kind) + "/".join(parts)).encode()

    def data_is_reserved(self, parts: Parts) -> bool:
        """With an empty prefix the data tree shares the keyspace with ``/_metad/``."""
        return self.prefix == "" and bool(parts) and parts[0] == "_metad"

    def classify(self, key: bytes) -> tuple[Kind, Parts] | None:
        """Which tree a key belongs to and its path there; None for other keys."""
        try:
            text = key.decode()
        except UnicodeDecodeError:
            return None
        kind: Kind
        for kind in ("mapping", "rule"):
            base = self.base(kind)
            if text.startswith(base):
                return self._parts(kind, text[len(base):])
        if text.startswith(META_ROOT) and self.prefix == "":
            return None  # another group's mapping/rules, never data
        base = self.base("data")
        if text.startswith(base):
            return self._parts("data", text[len(base):])
        return None

    @staticmethod
    def _parts(kind: Kind, rest: str) -> tuple[Kind, Parts] | None:
        parts = tuple(p for p in rest.split("/") if p)
        if not parts or any(_bad_component(p) for p in parts):
            return None
        return kind, parts

    def watch_ranges(self) -> list[tuple[bytes, bool]]:
        """(key, is_prefix) ranges to read and watch: data, and ``/_metad/`` unless covered."""
        data = self.base("data").encode()
        if self.prefix == "":
            return [(data, True)]  # "/" covers /_metad/ too
        return [(data, True), (META_ROOT.encode(), True)]
