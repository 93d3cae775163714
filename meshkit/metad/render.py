"""yunify/metad's output formats, byte for byte: text, JSON (Go's encoding/json) and
YAML (gopkg.in/yaml.v2), picked from the Accept header as metad does.

* text: a string value as is; a tree flattened to ``/path<TAB>value`` lines sorted
  by path, each ending in ``\\n``.
* JSON: Go's ``json.Marshal`` (map keys sorted, ``<``, ``>``, ``&``, U+2028/9 escaped,
  control characters as ``\\u00XX``); ``?pretty`` gives ``json.MarshalIndent(v, "", "  ")``.
* YAML: block style, keys sorted; strings that would read back as another type
  (numbers, booleans, null, ...) double-quoted; multi-line strings as literal blocks.

Struct-like values (the rules of ``/v1/rule``) keep their field order: :class:`Struct`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias

import yaml

__all__ = [
    "CONTENT_TYPES",
    "Format",
    "Struct",
    "error_body",
    "flatten_text",
    "negotiate",
    "ok_body",
    "render",
    "to_json",
    "to_text",
    "to_yaml",
]

Format: TypeAlias = Literal["text", "json", "yaml"]
CONTENT_TYPES: dict[str, str] = {
    "text": "text/plain", "json": "application/json", "yaml": "application/yaml",
}
_OFFERS = ("text/plain", "application/json", "application/yaml", "application/x-yaml",
           "text/yaml", "text/x-yaml")


class Struct(dict[str, Any]):
    """A dict rendered in insertion order (a Go struct), not sorted (a Go map)."""


# ---- content negotiation (golang/gddo httputil.NegotiateContentType) ------------------


def _parse_accept(header: str) -> list[tuple[str, float]]:
    specs: list[tuple[str, float]] = []
    for item in header.split(","):
        fields = [f.strip() for f in item.split(";")]
        value = fields[0].lower()
        if not value:
            continue
        q = 1.0
        for f in fields[1:]:
            name, _, arg = f.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(arg.strip())
                except ValueError:
                    q = 0.0
        specs.append((value, q))
    return specs


def negotiate(accept: str | None) -> Format:
    best, best_q, best_wild = "text/plain", -1.0, 3
    for offer in _OFFERS:
        for value, q in _parse_accept(accept or ""):
            if q == 0.0 or q < best_q:
                continue
            if value == "*/*":
                if q > best_q or best_wild > 2:
                    best, best_q, best_wild = offer, q, 2
            elif value.endswith("/*"):
                if offer.startswith(value[:-1]) and (q > best_q or best_wild > 1):
                    best, best_q, best_wild = offer, q, 1
            elif value == offer and (q > best_q or best_wild > 0):
                best, best_q, best_wild = offer, q, 0
    if "json" in best:
        return "json"
    if "yaml" in best:
        return "yaml"
    return "text"


# ---- text ------------------------------------------------------------------------------


def _flat(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k == "":
                continue
            _flat(v, f"{prefix}/{k}", out)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for i, v in enumerate(value):
            _flat(v, f"{prefix}/{i}", out)
    elif isinstance(value, bool):
        out[prefix] = "true" if value else "false"
    elif value is None:
        out[prefix] = ""
    else:
        out[prefix] = str(value)


def flatten_text(value: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    _flat(value, "", out)
    return out


def to_text(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, Mapping):
        flat = flatten_text(value)
        return "".join(f"{k}\t{flat[k]}\n" for k in sorted(flat)).encode()
    return b""


# ---- JSON (Go encoding/json) -------------------------------------------------------------

_JSON_ESC = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029]')
_JSON_MAP = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_str(s: str) -> str:
    return '"' + _JSON_ESC.sub(lambda m: _JSON_MAP.get(m.group(), f"\\u{ord(m.group()):04x}"), s) + '"'


def _json(value: Any, indent: str | None, level: int) -> str:
    if isinstance(value, str):
        return _json_str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        keys = list(value) if isinstance(value, Struct) else sorted(value)
        if not keys:
            return "{}"
        items = [(_json_str(str(k)), _json(value[k], indent, level + 1)) for k in keys]
        if indent is None:
            return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
        pad, inner = indent * level, indent * (level + 1)
        return "{\n" + ",\n".join(f"{inner}{k}: {v}" for k, v in items) + "\n" + pad + "}"
    if isinstance(value, Sequence):
        if not value:
            return "[]"
        elems = [_json(v, indent, level + 1) for v in value]
        if indent is None:
            return "[" + ",".join(elems) + "]"
        pad, inner = indent * level, indent * (level + 1)
        return "[\n" + ",\n".join(inner + e for e in elems) + "\n" + pad + "]"
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


def to_json(value: Any, pretty: bool = False) -> bytes:
    return _json(value, "  " if pretty else None, 0).encode()


# ---- YAML (gopkg.in/yaml.v2) ----------------------------------------------------------------

_STR = "tag:yaml.org,2002:str"
_resolver = yaml.resolver.Resolver()
# yaml.v2 also reads "1e3" (no dot) and "+1" style numbers as floats/ints.
_GO_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")


def _needs_quotes(s: str) -> bool:
    if _resolver.resolve(yaml.ScalarNode, s, (True, False)) != _STR:
        return True
    return bool(_GO_FLOAT.match(s))


def _yaml_node(value: Any) -> yaml.Node:
    if isinstance(value, Mapping):
        keys = list(value) if isinstance(value, Struct) else sorted(value)
        return yaml.MappingNode("tag:yaml.org,2002:map",
                                [(_yaml_node(str(k)), _yaml_node(value[k])) for k in keys],
                                flow_style=False)
    if isinstance(value, str):
        if "\n" in value:
            style: str | None = "|"
        elif _needs_quotes(value):
            style = '"'
        else:
            style = None
        return yaml.ScalarNode(_STR, value, style=style)
    if isinstance(value, bool):
        return yaml.ScalarNode("tag:yaml.org,2002:bool", "true" if value else "false")
    if isinstance(value, int):
        return yaml.ScalarNode("tag:yaml.org,2002:int", str(value))
    if value is None:
        return yaml.ScalarNode("tag:yaml.org,2002:null", "null")
    if isinstance(value, Sequence):
        return yaml.SequenceNode("tag:yaml.org,2002:seq", [_yaml_node(v) for v in value],
                                 flow_style=False)
    raise TypeError(f"cannot render {type(value).__name__} as YAML")


def to_yaml(value: Any) -> bytes:
    node = _yaml_node(value)
    if isinstance(node, yaml.MappingNode) and not node.value:
        return b"{}\n"
    if isinstance(node, yaml.SequenceNode) and not node.value:
        return b"[]\n"
    text = yaml.serialize(node, allow_unicode=True, width=80, indent=2)
    assert isinstance(text, str)
    if text.endswith("\n...\n"):  # PyYAML closes a top-level plain scalar; yaml.v2 does not
        text = text[:-4]
    return text.encode()


def render(value: Any, fmt: Format, pretty: bool = False) -> bytes:
    if fmt == "json":
        return to_json(value, pretty)
    if fmt == "yaml":
        return to_yaml(value)
    return to_text(value)


def error_body(message: str, status: int, fmt: Format) -> bytes:
    """metad's error body (Go's http.Error adds the newline)."""
    if fmt == "text":
        return (message + "\n").encode()
    obj = {"code": status, "message": message, "type": "ERROR"}
    return render(obj, fmt) + b"\n"


def ok_body(fmt: Format, pretty: bool = False) -> bytes:
    """metad's answer to a manage write that returns nothing."""
    if fmt == "text":
        return b"OK"
    return render({"code": 200, "type": "OK"}, fmt, pretty)
