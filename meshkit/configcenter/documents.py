"""Parsing config documents (YAML, JSON, flat ``key=value``) and JSON Schema validation.

Every parser returns a JSON-compatible mapping or raises ``DocumentError`` naming the
line. YAML is read with a safe loader that refuses duplicate keys (PyYAML keeps the last
one silently) and keeps timestamps as strings, so the data is always plain JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal, TypeAlias

import yaml

from meshkit.configcenter.errors import DocumentError, SchemaError, SchemaValidationError

__all__ = [
    "FORMATS",
    "Format",
    "detect_format",
    "load_schema",
    "parse_document",
    "validate",
]

Format: TypeAlias = Literal["yaml", "json", "properties"]
FORMATS: tuple[Format, ...] = ("yaml", "json", "properties")
_EXTENSIONS: dict[str, Format] = {
    ".yaml": "yaml", ".yml": "yaml", ".json": "json",
    ".properties": "properties", ".env": "properties", ".conf": "properties", ".kv": "properties",
}


def detect_format(path: str | Path) -> Format:
    """The format a file name implies; ``DocumentError`` when the extension says nothing."""
    p = Path(path)
    ext = p.suffix.lower() or (p.name.lower() if p.name.startswith(".") else "")  # ".env"
    try:
        return _EXTENSIONS[ext]
    except KeyError:
        known = ", ".join(sorted(_EXTENSIONS))
        raise DocumentError(str(path), f"cannot tell the format from {ext or 'no extension'!r} "
                            f"(known: {known}); give the format explicitly") from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without duplicate keys and with timestamps left as strings."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"a mapping key must be a scalar, got {type(key).__name__}",
                key_node.start_mark)
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
    return out


def _construct_timestamp_as_str(loader: _StrictLoader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp_as_str)


def _json_plain(value: Any, source: str, path: str = "$") -> Any:
    """Check (and normalise) a parsed value into plain JSON; keys become strings."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise DocumentError(source, f"{path}: NaN and infinity are not allowed")
        return value
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            ks = k if isinstance(k, str) else json.dumps(k)
            if ks in out:
                raise DocumentError(source, f"{path}: key {ks!r} appears twice after conversion to text")
            out[ks] = _json_plain(v, source, f"{path}.{ks}")
        return out
    if isinstance(value, list):
        return [_json_plain(v, source, f"{path}[{i}]") for i, v in enumerate(value)]
    raise DocumentError(source, f"{path}: a {type(value).__name__} value has no JSON form")


def _parse_yaml(text: str, source: str) -> Any:
    try:
        docs = list(yaml.load_all(text, Loader=_StrictLoader))  # a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        reason = " ".join(str(p) for p in (e.context, e.problem) if p) or str(e)
        if mark is None:
            raise DocumentError(source, f"not valid YAML: {reason}") from None
        raise DocumentError(source, f"not valid YAML: {reason}", line=mark.line + 1,
                            column=mark.column + 1) from None
    except yaml.YAMLError as e:
        raise DocumentError(source, f"not valid YAML: {e}") from None
    if len(docs) > 1:
        raise DocumentError(source, f"expected one YAML document, found {len(docs)}")
    return docs[0] if docs else None


def _parse_json(text: str, source: str) -> Any:
    def no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise DocumentError(source, f"not valid JSON: duplicate key {k!r}")
            out[k] = v
        return out

    def bad_constant(name: str) -> Any:
        raise DocumentError(source, f"not valid JSON: {name} is not allowed")

    try:
        return json.loads(text, object_pairs_hook=no_dupes, parse_constant=bad_constant)
    except json.JSONDecodeError as e:
        raise DocumentError(source, f"not valid JSON: {e.msg}", line=e.lineno, column=e.colno) from None


def _parse_properties(text: str, source: str) -> dict[str, str]:
    """Flat ``key=value`` lines; ``#`` and ``;`` start comments; values are strings."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DocumentError(source, f"expected key=value, got {raw.strip()!r}", line=n)
        if key in out:
            raise DocumentError(source, f"duplicate key {key!r}", line=n)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = value
    return out


def parse_document(text: str, fmt: Format, source: str = "<document>") -> dict[str, Any]:
    """Parse ``text`` as ``fmt`` into a JSON-compatible mapping (``DocumentError`` otherwise)."""
    if fmt == "yaml":
        data = _parse_yaml(text, source)
    elif fmt == "json":
        data = _parse_json(text, source)
    elif fmt == "properties":
        data = _parse_properties(text, source)
    else:
        raise DocumentError(source, f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if not isinstance(data, dict):
        kind = "an empty document" if data is None else f"a {type(data).__name__}"
        raise DocumentError(source, f"the top level must be a mapping of settings, got {kind}")
    result: dict[str, Any] = _json_plain(data, source)
    return result


def load_schema(text: str, source: str = "<schema>") -> dict[str, Any]:
    """Parse and check a JSON Schema (any draft ``jsonschema`` knows; default 2020-12)."""
    import jsonschema

    try:
        schema = json.loads(text)
    except json.JSONDecodeError as e:
        raise SchemaError(source, f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    if not isinstance(schema, dict):
        raise SchemaError(source, "a schema must be a JSON object")
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        raise SchemaError(source, f"not a valid JSON Schema: {e.message}") from None
    return schema


def _path(parts: Any) -> str:
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def validate(data: dict[str, Any], schema: dict[str, Any], source: str = "<document>") -> None:
    """Raise ``SchemaValidationError`` listing every failure (sorted by path), or return."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        raise SchemaValidationError(source, [f"{_path(e.absolute_path)}: {e.message}" for e in errors])
