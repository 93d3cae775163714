"""The functions a template can call: confd's names, memkv's key functions, registry helpers.

confd's Go templates call ``{{getv "/k"}}``; the same in Jinja2 is ``{{ getv("/k") }}``,
and the default value form is ``getv("/k", "fallback")``. Every function is also
a filter unless Jinja2 already has a filter of that name (``join``, ``map``,
``replace`` keep Jinja2's meaning as filters, confd's as functions).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json as _json
import os
import posixpath
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshkit._internal.goflags import ValueError_, parse_bool
from meshkit.confd.dns import SRV, lookup_ip, lookup_srv
from meshkit.confd.errors import MissingKeyError
from meshkit.confd.resource import MissingKeyMode, join_key
from meshkit.confd.store import KVPair, Snapshot

__all__ = ["Instance", "instances", "make_functions", "parse_instance", "services"]


# ---- Go's helpers -----------------------------------------------------------------------


def go_base(p: str) -> str:
    """Go's ``path.Base``."""
    if p == "":
        return "."
    p = p.rstrip("/")
    if p == "":
        return "/"
    return p.rsplit("/", 1)[-1]


def go_dir(p: str) -> str:
    """Go's ``path.Dir``."""
    d = p[: p.rfind("/") + 1]
    if d == "":
        return "."
    cleaned = posixpath.normpath(d)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def go_split(s: str, sep: str) -> list[str]:
    if sep == "":
        return list(s)
    return s.split(sep)


def go_replace(s: str, old: str, new: str, n: int = -1) -> str:
    return s.replace(old, new, n if n >= 0 else -1)


_ATOI = re.compile(r"[+-]?[0-9]+")


def go_atoi(s: str) -> int:
    """``strconv.Atoi``: base 10, optional sign, nothing else."""
    if not isinstance(s, str) or not _ATOI.fullmatch(s):
        raise ValueError(f'strconv.Atoi: parsing "{s}": invalid syntax')
    return int(s)


def go_parse_bool(s: str) -> bool:
    try:
        return parse_bool(s)
    except ValueError_:
        raise ValueError(f'strconv.ParseBool: parsing "{s}": invalid syntax') from None


def go_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def go_mod(a: int, b: int) -> int:
    return a - go_div(a, b) * b


def create_map(*values: Any) -> dict[Any, Any]:
    if len(values) % 2:
        raise ValueError("invalid map call")
    return {values[i]: values[i + 1] for i in range(0, len(values), 2)}


def seq(first: int, last: int) -> list[int]:
    return list(range(first, last + 1))


def unmarshal_object(s: str) -> dict[str, Any]:
    v = _json.loads(s)
    if not isinstance(v, dict):
        raise ValueError("json: the value is not a JSON object")
    return v


def unmarshal_array(s: str) -> list[Any]:
    v = _json.loads(s)
    if not isinstance(v, list):
        raise ValueError("jsonArray: the value is not a JSON array")
    return v


# ---- registry helpers -------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    """One registered instance, read from etcd Go's ``naming/endpoints`` layout.

    ``metadata`` is the user metadata (meshkit's ``Metadata.meta``; for values
    written by Go's ``endpoints.Manager``, the whole ``Metadata`` object when it is
    one); ``raw`` is ``Metadata`` as stored.
    """

    service: str
    id: str
    addr: str
    key: str
    weight: int = 1
    zone: str = ""
    version: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    raw: Any = None

    @property
    def host(self) -> str:
        host = self.addr.rpartition(":")[0] if ":" in self.addr else self.addr
        return host.strip("[]")

    @property
    def port(self) -> int:
        tail = self.addr.rpartition(":")[2]
        return int(tail) if tail.isdigit() else 0


def parse_instance(key: str, value: str, prefix: str) -> Instance | None:
    """The instance stored at ``key`` (a store key under ``prefix``), None if it is not one.

    Only ``"Op": 0`` (Add) values are instances; values that are not JSON objects
    are skipped. Field names match case-insensitively (Go's ``json.Unmarshal``).
    """
    base = join_key(prefix)
    base = "/" if base == "/" else base + "/"
    if not key.startswith(base):
        return None
    service, _, inst_id = key[len(base):].rpartition("/")
    if not service or not inst_id:
        return None
    try:
        obj = _json.loads(value)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    fields = {k.lower(): v for k, v in obj.items()
              if k.lower() in ("op", "addr", "metadata", "meshkit")}
    op = fields.get("op") or 0
    addr = fields.get("addr")
    if op != 0 or not isinstance(addr, str) or not addr:
        return None
    md = fields.get("metadata")
    # meshkit's registrar writes its fields beside a null Metadata ("Meshkit"); values
    # of the earlier layout carry them inside Metadata.
    mk = fields.get("meshkit")
    src = mk if isinstance(mk, dict) and isinstance(mk.get("meta"), dict) else md
    user: Mapping[str, Any] = {}
    weight, zone, version = 1, "", ""
    if isinstance(src, dict):
        user = src["meta"] if isinstance(src.get("meta"), dict) else src
        w = src.get("weight", 1)
        if isinstance(w, float) and w.is_integer():
            w = int(w)
        weight = w if isinstance(w, int) and not isinstance(w, bool) and w >= 0 else 1
        zone = str(src.get("zone") or "")
        version = str(src.get("version") or "")
    return Instance(service=service, id=inst_id, addr=addr, key=key, weight=weight, zone=zone,
                    version=version, metadata=user, raw=md)


def instances(snap: Snapshot, service: str, prefix: str) -> list[Instance]:
    """The live instances of ``service``, sorted by id.

    The registrar withdraws an instance's key when it turns unhealthy or starts
    draining, and the key dies with its lease, so a key present is a live, healthy
    instance.
    """
    base = join_key(prefix, service) + "/"
    out = []
    for k in sorted(snap.data):
        if k.startswith(base) and "/" not in k[len(base):]:
            inst = parse_instance(k, snap.data[k], prefix)
            if inst is not None and inst.service == service:
                out.append(inst)
    return out


def services(snap: Snapshot, prefix: str) -> list[str]:
    """The names of the services that have at least one live instance, sorted."""
    names = set()
    for k, v in snap.data.items():
        inst = parse_instance(k, v, prefix)
        if inst is not None:
            names.add(inst.service)
    return sorted(names)


# ---- the function table ---------------------------------------------------------------------


def make_functions(
    snap: Snapshot,
    *,
    missing_key: MissingKeyMode = "error",
    defaults: Mapping[str, str] | None = None,
    registry_prefix: str = "/meshkit/services",
    nameservers: Sequence[tuple[str, int]] | None = None,
) -> dict[str, Callable[..., Any]]:
    """Every function a template of this snapshot can call, by name."""
    defaults = dict(defaults or {})

    def fallback(key: str) -> str:
        k = join_key(key)
        if missing_key == "empty":
            return ""
        if missing_key == "default" and k in defaults:
            return defaults[k]
        raise MissingKeyError(k)

    def getv(key: str, *default: str) -> str:
        if snap.exists(key):
            return snap.getv(key)
        if default:
            return default[0]
        return fallback(key)

    def get(key: str) -> KVPair:
        if snap.exists(key):
            return snap.get(key)
        return KVPair(join_key(key), fallback(key))

    def reverse(values: Sequence[Any]) -> list[Any]:
        return list(reversed(values))

    funcs: dict[str, Callable[..., Any]] = {
        # memkv
        "exists": snap.exists,
        "get": get,
        "gets": snap.gets,
        "getv": getv,
        "getvs": snap.getvs,
        "ls": snap.ls,
        "lsdir": snap.lsdir,
        # confd's template_funcs.go
        "base": go_base,
        "dir": go_dir,
        "split": go_split,
        "join": lambda values, sep: sep.join(values),
        "json": unmarshal_object,
        "jsonArray": unmarshal_array,
        "map": create_map,
        "getenv": lambda key, *default: os.environ.get(key) or (default[0] if default else ""),
        "datetime": _dt.datetime.now,
        "toUpper": lambda s: s.upper(),
        "toLower": lambda s: s.lower(),
        "contains": lambda s, sub: sub in s,
        "replace": go_replace,
        "trimSuffix": lambda s, suffix: s[: -len(suffix)] if suffix and s.endswith(suffix) else s,
        "lookupIP": lambda name: lookup_ip(name),
        "lookupIPV4": lambda name: lookup_ip(name, socket.AF_INET),
        "lookupIPV6": lambda name: lookup_ip(name, socket.AF_INET6),
        "lookupSRV": lambda service, proto, name: lookup_srv(service, proto, name,
                                                             nameservers=nameservers),
        "fileExists": lambda p: os.path.exists(p),
        "base64Encode": lambda s: base64.b64encode(s.encode()).decode(),
        "base64Decode": lambda s: base64.b64decode(s.encode(), validate=True).decode(),
        "parseBool": go_parse_bool,
        "reverse": reverse,
        "sortByLength": lambda values: sorted(values, key=len),
        "sortKVByLength": lambda pairs: sorted(pairs, key=lambda p: len(p.key)),
        "add": lambda a, b: a + b,
        "sub": lambda a, b: a - b,
        "mul": lambda a, b: a * b,
        "div": go_div,
        "mod": go_mod,
        "seq": seq,
        "atoi": go_atoi,
        # meshkit: the registry
        "services": lambda prefix=None: services(snap, prefix or registry_prefix),
        "instances": lambda service, prefix=None: instances(snap, service, prefix or registry_prefix),
    }
    return funcs


__all__ += ["SRV"]
