"""etcd 3.4's YAML configuration file (``--config-file``), read into flag values.

Keys are etcd's (see etcd.conf.yml.sample): mostly the flag names, with the TLS
settings nested under ``client-transport-security`` and ``peer-transport-security``.
etcd decodes the file as JSON into Go types, so a value of the wrong type is an
error and durations are integers in nanoseconds; meshkit also takes Go duration
strings (``5s``) there, and a list where etcd wants a comma-separated string.
Keys etcd does not know are reported as warnings (etcd ignores them silently).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from meshkit.server.config import FLAGS, ConfigError, FlagSpec, parse_urls

__all__ = ["load_config_file"]

_VERIFYING = "error verifying flags"

_GO_TYPES = {
    "string": "string",
    "bool": "bool",
    "uint": "uint",
    "int": "int64",
    "duration": "time.Duration",
    "urls": "string",
    "strings": "[]string",
    "unique-strings": "[]string",
    "choice": "string",
}
# The uint flags etcd declares uint64 (the others are Go's uint).
_UINT64 = {"snapshot-count", "experimental-snapshot-catchup-entries"}
# Keys whose YAML form is a comma-separated string although the flag is a list.
_STRING_LISTS = {"cors", "host-whitelist"}


def _yaml_keys() -> tuple[dict[str, FlagSpec], dict[str, dict[str, FlagSpec]]]:
    top: dict[str, FlagSpec] = {}
    sections: dict[str, dict[str, FlagSpec]] = {}
    for spec in FLAGS:
        if spec.yaml is None or spec.status in ("meta", "ignored"):
            continue
        if spec.section:
            sections.setdefault(spec.section, {})[spec.yaml] = spec
        else:
            top[spec.yaml] = spec
    return top, sections


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {value}" if isinstance(value, float) or value < 0 else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_error(key: str, spec: FlagSpec, value: Any) -> ConfigError:
    go_type = "uint64" if spec.name in _UINT64 else _GO_TYPES[spec.kind]
    return ConfigError(
        context=_VERIFYING,
        problems=[
            "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal "
            f"{_json_kind(value)} into Go struct field configYAML.{key} of type {go_type}"
        ],
    )


def _convert(key: str, spec: FlagSpec, value: Any) -> Any:
    from meshkit._internal import goflags

    kind = spec.kind
    if kind in ("string", "choice"):
        if not isinstance(value, str):
            raise _type_error(key, spec, value)
        if spec.name == "initial-cluster-state" and value == "":
            return "new"
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _type_error(key, spec, value)
        return value
    if kind in ("uint", "int"):
        if isinstance(value, bool) or not isinstance(value, int) or (kind == "uint" and value < 0):
            raise _type_error(key, spec, value)
        return value
    if kind == "duration":
        if isinstance(value, str):  # meshkit extension: "5s"
            try:
                return goflags.parse_duration_ns(value)
            except goflags.ValueError_ as exc:
                raise ConfigError(
                    context=_VERIFYING, problems=[f"error setting up {key}: {exc}"]
                ) from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(key, spec, value)
        return value
    if kind == "urls":
        text = (
            ",".join(value)
            if isinstance(value, list) and all(isinstance(v, str) for v in value)
            else value
        )
        if not isinstance(text, str):
            raise _type_error(key, spec, value)
        try:
            return parse_urls(text)
        except goflags.ValueError_ as exc:
            raise ConfigError(
                context=_VERIFYING, problems=[f"unexpected error setting up {key}: {exc}"]
            ) from None
    if kind in ("strings", "unique-strings"):
        if isinstance(value, str):
            items = value.split(",") if value else []
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            items = list(value)
        else:
            raise _type_error(key, spec, value)
        if kind == "unique-strings":
            return tuple(sorted(set(items)))
        return tuple(items)
    raise AssertionError(f"unhandled kind {kind}")  # a broken table, not bad input


def load_config_file(path: str, *, log: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """Read ``path``: {flag name: value} for every setting the file gives.

    Raises :class:`ConfigError` (exit 1) with etcd's wording for unreadable files,
    YAML syntax errors, values of the wrong type and malformed URLs.
    """
    say = log or (lambda _level, _msg: None)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(
            context=_VERIFYING, problems=[f"open {path}: no such file or directory"]
        ) from None
    except IsADirectoryError:
        raise ConfigError(context=_VERIFYING, problems=[f"read {path}: is a directory"]) from None
    except PermissionError:
        raise ConfigError(
            context=_VERIFYING, problems=[f"open {path}: permission denied"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(context=_VERIFYING, problems=[f"open {path}: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(
            context=_VERIFYING, problems=[f"error converting YAML to JSON: yaml: {detail}"]
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            context=_VERIFYING,
            problems=[
                "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal "
                f"{_json_kind(data)} into Go value of type embed.configYAML"
            ],
        )
    top, sections = _yaml_keys()
    values: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        if key in sections:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(
                    context=_VERIFYING,
                    problems=[
                        "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal "
                        f"{_json_kind(value)} into Go struct field configYAML.{key} of type embed.securityConfig"
                    ],
                )
            for sub_key, sub_value in value.items():
                spec = sections[key].get(str(sub_key))
                if spec is None:
                    say("warning", f"unrecognized config key {key}.{sub_key} (ignored)")
                    continue
                if sub_value is not None:
                    values[spec.name] = _convert(f"{key}.{sub_key}", spec, sub_value)
            continue
        spec = top.get(key)
        if spec is None:
            say("warning", f"unrecognized config key {key} (ignored)")
            continue
        if value is None or (spec.kind == "urls" and value == ""):
            continue  # etcd keeps the default for an empty URL list in the file
        if key in _STRING_LISTS and not isinstance(value, str | list):
            raise _type_error(key, spec, value)
        values[spec.name] = _convert(key, spec, value)
    return values
