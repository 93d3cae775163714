"""The registry's key/value layout: etcd Go's ``naming/endpoints`` format.

Key: ``<prefix>/<service>/<instance-id>``. Value: the JSON that Go's
``encoding/json`` writes for etcd's ``endpoints/internal.Update`` with one more
field after it::

    {"Op":0,"Addr":"10.0.0.7:8080","Metadata":null,"Meshkit":{...}}

(fields in declaration order, no spaces, map keys sorted, ``<``/``>``/``&`` and
U+2028/U+2029 escaped, other non-ASCII text written as UTF-8). ``Metadata`` is
``null``, as Go's ``endpoints.Manager`` writes for ``Endpoint{Addr: addr}``: etcd's
resolver copies it into grpc-go's ``resolver.Address.Metadata``, and grpc-go's
balancers use that struct as a map key or compare it with ``==``, so a JSON object
there (a Go map) panics every Go client with "hash of unhashable type
map[string]interface {}" (etcd-io/etcd#19700). meshkit's richer fields (instance
id, weight, zone, version, user metadata) live in ``Meshkit``, which Go's
``json.Unmarshal`` into ``internal.Update`` ignores. Values of the earlier layout
(meshkit's fields inside ``Metadata``) and values written by Go's
``endpoints.Manager`` (any ``Metadata``) are read too.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshkit._internal.errors import MeshkitError

__all__ = [
    "DEFAULT_PREFIX",
    "OP_ADD",
    "OP_DELETE",
    "EndpointUpdate",
    "Instance",
    "InvalidInstanceError",
    "InvalidValueError",
    "RegistryError",
    "decode_value",
    "encode_value",
    "go_json",
    "instance_from_value",
    "instance_key",
    "parse_key",
    "service_prefix",
]

DEFAULT_PREFIX = "meshkit/services"
OP_ADD = 0
OP_DELETE = 1

# Keys inside Metadata that meshkit itself writes (user metadata goes under "meta").
_META_ID = "id"
_META_SERVICE = "service"
_META_WEIGHT = "weight"
_META_ZONE = "zone"
_META_VERSION = "version"
_META_USER = "meta"
_MESHKIT = "meshkit"  # the value's extra top-level field (written "Meshkit"), matched like Go

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]*")


class RegistryError(MeshkitError):
    """Root of the registry's errors."""


class InvalidInstanceError(RegistryError, ValueError):
    """An instance description breaks a rule; ``problems`` names every broken rule."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid instance: " + "; ".join(problems))
        self.problems = problems


class InvalidValueError(RegistryError, ValueError):
    """A stored value is not an endpoints ``Update`` JSON object."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"{key}: {detail}")
        self.key = key
        self.detail = detail


def _check_addr(addr: str) -> str | None:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"addr {addr!r} is not HOST:PORT with a port in 1..65535"
    if any(c.isspace() for c in addr) or "/" in addr:
        return f"addr {addr!r} holds a space or a slash"
    return None


@dataclass(frozen=True, slots=True)
class Instance:
    """One service instance as the registry stores it."""

    service: str
    addr: str
    id: str = ""  # "" means: the address (one key per address, like Go's examples)
    metadata: Mapping[str, str] = field(default_factory=dict)
    weight: int = 1
    zone: str = ""
    version: str = ""

    @property
    def instance_id(self) -> str:
        return self.id or self.addr

    def validate(self) -> None:
        """Raise :class:`InvalidInstanceError` naming every broken rule."""
        problems: list[str] = []
        if not _NAME.fullmatch(self.service):
            problems.append(f"service {self.service!r} must match {_NAME.pattern} (no slash)")
        if self.id and not _NAME.fullmatch(self.id):
            problems.append(f"id {self.id!r} must match {_NAME.pattern} (no slash)")
        bad_addr = _check_addr(self.addr)
        if bad_addr:
            problems.append(bad_addr)
        if isinstance(self.weight, bool) or not isinstance(self.weight, int) or not 0 <= self.weight <= 1_000_000:
            problems.append(f"weight {self.weight!r} must be an integer in 0..1000000")
        for k, v in self.metadata.items():
            if not isinstance(k, str) or not k or not isinstance(v, str):
                problems.append(f"metadata {k!r}={v!r} must map non-empty strings to strings")
        if problems:
            raise InvalidInstanceError(problems)

    def metadata_json(self) -> dict[str, Any]:
        """meshkit's fields as stored in the value's ``Meshkit`` object."""
        return {
            _META_ID: self.instance_id,
            _META_SERVICE: self.service,
            _META_WEIGHT: self.weight,
            _META_ZONE: self.zone,
            _META_VERSION: self.version,
            _META_USER: dict(self.metadata),
        }


@dataclass(frozen=True, slots=True)
class EndpointUpdate:
    """A decoded value: Go's ``internal.Update`` (``metadata`` is whatever JSON was
    stored) and meshkit's ``Meshkit`` object beside it (None when absent)."""

    op: int
    addr: str
    metadata: Any
    meshkit: Any = None


def _go_escape(text: str) -> str:
    # encoding/json's HTMLEscape plus its U+2028/U+2029 rule.
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def go_json(value: Any) -> bytes:
    """``json.Marshal`` of a JSON-shaped value, byte for byte (maps sorted, HTML-escaped)."""
    def check(v: Any) -> None:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("Go's encoding/json refuses NaN and infinities")
        if isinstance(v, float) and not v.is_integer():
            # Go formats floats with strconv 'g'-like rules; keep to integers and text.
            raise ValueError("non-integral floats are not supported in registry values")
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    raise ValueError("JSON object keys must be strings")
                check(x)
        elif isinstance(v, list):
            for x in v:
                check(x)

    check(value)
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                      allow_nan=False)
    return _go_escape(text).encode("utf-8")


def encode_value(inst: Instance) -> bytes:
    """The stored value: ``{"Op":0,"Addr":...,"Metadata":null,"Meshkit":{...}}``, as Go's
    ``json.Marshal`` writes ``struct{Op uint8; Addr string; Metadata interface{};
    Meshkit map[string]interface{}}``. ``Metadata`` stays null so that Go clients using
    etcd's resolver can route to the instance (see the module's doc)."""
    inst.validate()
    meshkit = go_json(inst.metadata_json()).decode("utf-8")
    addr = go_json(inst.addr).decode("utf-8")
    # Struct fields keep declaration order (Op, Addr, Metadata, Meshkit); only maps are sorted.
    return f'{{"Op":{OP_ADD},"Addr":{addr},"Metadata":null,"Meshkit":{meshkit}}}'.encode()


def decode_value(value: bytes, key: str = "") -> EndpointUpdate:
    """Parse a value as Go's ``json.Unmarshal`` into ``internal.Update`` would.

    Field names match case-insensitively (Go's rule); a missing field keeps its
    zero value; ``Op`` must be an integer 0..255 (a ``uint8``).
    """
    try:
        obj = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidValueError(key, f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise InvalidValueError(key, "not a JSON object")
    # Go matches JSON names to fields case-insensitively; later keys overwrite earlier ones.
    fields: dict[str, Any] = {}
    for k, v in obj.items():
        low = k.lower()
        if low in ("op", "addr", "metadata", _MESHKIT):
            fields[low] = v
    op = fields.get("op", 0)
    if op is None:
        op = 0
    if isinstance(op, bool) or not isinstance(op, int) or not 0 <= op <= 255:
        raise InvalidValueError(key, f"Op {op!r} is not a uint8")
    addr = fields.get("addr", "")
    if addr is None:
        addr = ""
    if not isinstance(addr, str):
        raise InvalidValueError(key, f"Addr {addr!r} is not a string")
    return EndpointUpdate(op, addr, fields.get("metadata"), fields.get(_MESHKIT))


def service_prefix(prefix: str, service: str) -> str:
    """``<prefix>/<service>``: the Go resolver's target (watched with a trailing slash)."""
    return f"{prefix.rstrip('/')}/{service}"


def instance_key(prefix: str, service: str, instance_id: str) -> str:
    return f"{service_prefix(prefix, service)}/{instance_id}"


def parse_key(prefix: str, key: str) -> tuple[str, str] | None:
    """``(service, instance_id)`` of a key under ``prefix``, or None for other keys."""
    base = prefix.rstrip("/") + "/"
    if not key.startswith(base):
        return None
    service, sep, inst = key[len(base):].partition("/")
    if not sep or not service or not inst:
        return None
    return service, inst


def _meshkit_fields(md: Any) -> bool:
    return isinstance(md, dict) and isinstance(md.get(_META_USER), dict)


def instance_from_value(prefix: str, key: str, value: bytes) -> Instance | None:
    """The instance a stored key/value describes (None if it is not an instance key
    or its value says ``Op: Delete``). meshkit's fields come from ``Meshkit`` (or, in
    values of the earlier layout, from ``Metadata``). Values written by Go carry no
    meshkit fields: the id comes from the key, weight is 1 and a non-object
    ``Metadata`` is kept under ``metadata["_raw"]`` as its JSON text."""
    parsed = parse_key(prefix, key)
    if parsed is None:
        return None
    service, inst_id = parsed
    up = decode_value(value, key)
    if up.op != OP_ADD:
        return None
    md = up.meshkit if _meshkit_fields(up.meshkit) else up.metadata
    if _meshkit_fields(md):
        user = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in md[_META_USER].items()}
        weight = md.get(_META_WEIGHT, 1)
        if isinstance(weight, float) and weight.is_integer():
            weight = int(weight)
        if not isinstance(weight, int) or isinstance(weight, bool):
            weight = 1
        return Instance(service=service, addr=up.addr, id=inst_id, metadata=user, weight=weight,
                        zone=str(md.get(_META_ZONE) or ""), version=str(md.get(_META_VERSION) or ""))
    user = {}
    if md is not None:
        user = ({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in md.items()}
                if isinstance(md, dict) else {"_raw": json.dumps(md)})
    return Instance(service=service, addr=up.addr, id=inst_id, metadata=user)
