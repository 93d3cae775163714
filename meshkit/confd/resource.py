"""Template resources: confd's ``conf.d/*.toml`` read unchanged, the same in YAML, plus extras.

A confd resource::

    [template]
    src = "nginx.conf.tmpl"          # under CONFDIR/templates
    dest = "/etc/nginx/nginx.conf"
    keys = ["/services", "/nginx"]
    prefix = "/prod"                 # optional, joined after the global --prefix
    mode = "0644"                    # octal text; default: the existing file's, else 0644
    uid = 0                          # default: the effective uid/gid of confd
    gid = 0
    check_cmd = "nginx -t -c {{.src}}"
    reload_cmd = "nginx -s reload"

meshkit's extras, each optional (confd ignores unknown keys, so one file serves both)::

    wait = { min = "2s", max = "10s" }   # quiescence: render after 2 s without change, at most 10 s late
    check_timeout = "30s"                # each command's own timeout (default 30 s)
    reload_timeout = "30s"
    missing_key = "error"                # error | empty | default (uses the `defaults` table)
    defaults = { "/nginx/listen" = "127.0.0.1:80" }
    reload_group = "nginx"               # resources of one group reload once per change
    backup = true                        # keep DEST.bak (or backup = ".orig": that suffix)
    delimiters = ["{{", "}}"]            # Jinja2 variable delimiters
    block_delimiters = ["{%", "%}"]
    registry_prefix = "/meshkit/services" # where the registry helpers look (a store key)

YAML resources (``*.yaml``/``*.yml``) hold the same mapping under ``template:``.
"""

from __future__ import annotations

import os
import posixpath
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from meshkit._internal.goflags import ValueError_, parse_duration_ns
from meshkit._internal.logging import get_logger
from meshkit.confd.errors import ResourceConfigError

__all__ = [
    "DEFAULT_COMMAND_TIMEOUT",
    "MissingKeyMode",
    "TemplateResource",
    "join_key",
    "load_resource",
    "load_resources",
    "parse_seconds",
]

log = get_logger("confd")

DEFAULT_COMMAND_TIMEOUT = 30.0
MissingKeyMode = Literal["error", "empty", "default"]
_MISSING_MODES = ("error", "empty", "default")
RESOURCE_SUFFIXES = (".toml", ".yaml", ".yml")

_CONFD_FIELDS = {"src", "dest", "keys", "prefix", "mode", "uid", "gid", "check_cmd", "reload_cmd"}
_EXTRA_FIELDS = {
    "wait", "check_timeout", "reload_timeout", "missing_key", "defaults", "reload_group",
    "backup", "delimiters", "block_delimiters", "registry_prefix",
}


def join_key(*parts: str) -> str:
    """Go's ``path.Join("/", parts...)``: one clean absolute key, no trailing slash."""
    joined = posixpath.normpath("/" + "/".join(p for p in parts if p))
    return "/" if joined in ("/", "//") else joined.replace("//", "/")


def _relative_key(key: str) -> str:
    return join_key(key).lstrip("/")


def parse_seconds(value: Any, what: str) -> float:
    """A duration as Go text (``"1m30s"``, ``"500ms"``) or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_duration_ns(value.strip()) / 1e9
        except ValueError_ as e:
            raise ValueError(f"{what}: {e}") from None
    else:
        raise ValueError(f"{what} must be a duration, got {value!r}")
    if seconds < 0:
        raise ValueError(f"{what} must not be negative")
    return seconds


@dataclass(frozen=True)
class TemplateResource:
    """One resource: where the template is, which keys feed it, how the output is checked.

    ``keys`` are the resource's keys as written (store keys, relative to ``prefix``);
    :attr:`watch_keys` are the full etcd keys after the prefix is applied.
    """

    name: str
    src: str
    dest: str
    keys: tuple[str, ...]
    prefix: str = ""  # "" when neither --prefix nor the resource gives one
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    check_cmd: str = ""
    reload_cmd: str = ""
    wait_min: float = 0.0
    wait_max: float = 0.0
    check_timeout: float = DEFAULT_COMMAND_TIMEOUT
    reload_timeout: float = DEFAULT_COMMAND_TIMEOUT
    missing_key: MissingKeyMode = "error"
    defaults: Mapping[str, str] = field(default_factory=dict)
    reload_group: str = ""
    backup: str = ""
    delimiters: tuple[str, str] = ("{{", "}}")
    block_delimiters: tuple[str, str] = ("{%", "%}")
    registry_prefix: str = "/meshkit/services"
    path: str = ""

    @property
    def watch_keys(self) -> tuple[str, ...]:
        """The etcd keys (prefix applied) fetched and watched, each as a prefix.

        confd joins every key under ``/``; meshkit does too, except that a key written
        without a leading ``/`` in a resource without any prefix is read as written,
        so registries that use relative keys (etcd Go's ``naming/endpoints``
        examples, meshkit's ``meshkit/services``) can be rendered.
        """
        return tuple(
            _relative_key(k) if not self.prefix and not k.startswith("/") else join_key(self.prefix, k)
            for k in self.keys
        )

    @property
    def group(self) -> str:
        """The reload group's name: the explicit one, else the resource's own."""
        return self.reload_group or f"resource:{self.name}"

    @property
    def stuck_budget(self) -> float:
        """How long one round may take before the resource counts as stuck (without margin)."""
        return self.wait_max + self.check_timeout + self.reload_timeout

    def validate(self) -> list[str]:
        """Every broken rule, in words (empty when the resource is usable)."""
        problems: list[str] = []
        if not self.src:
            problems.append("src is required")
        elif os.path.isabs(self.src) or ".." in Path(self.src).parts:
            problems.append(f"src must be a path under the templates directory, got {self.src!r}")
        if not self.dest:
            problems.append("dest is required")
        elif not os.path.isabs(self.dest):
            problems.append(f"dest must be an absolute path, got {self.dest!r}")
        if not self.keys:
            problems.append("keys must list at least one key")
        for k in self.keys:
            if not k:
                problems.append("keys must not contain an empty key")
        if self.mode is not None and not 0 <= self.mode <= 0o7777:
            problems.append(f"mode {self.mode:o} is not a file mode")
        for what, v in (("uid", self.uid), ("gid", self.gid)):
            if v is not None and v < 0:
                problems.append(f"{what} must not be negative")
        if self.wait_max and self.wait_min > self.wait_max:
            problems.append("wait.min must not exceed wait.max")
        if self.check_timeout <= 0 or self.reload_timeout <= 0:
            problems.append("command timeouts must be positive")
        if self.missing_key not in _MISSING_MODES:
            problems.append(f"missing_key must be one of {', '.join(_MISSING_MODES)}, got {self.missing_key!r}")
        for what, pair in (("delimiters", self.delimiters), ("block_delimiters", self.block_delimiters)):
            if len(pair) != 2 or not all(pair):
                problems.append(f"{what} must be two non-empty strings")
        if self.delimiters == self.block_delimiters:
            problems.append("delimiters and block_delimiters must differ")
        return problems


def _table(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        doc: Any = tomllib.loads(text)
    else:
        doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("template"), dict):
        raise ValueError("the file must hold a [template] table (TOML) or a template: mapping (YAML)")
    return doc["template"]


def _mode(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML reads 0644 as the integer 420 (octal literal) and TOML has no such
        # literal: an integer is taken as the mode's value.
        return value
    if isinstance(value, str):
        return int(value, 8)  # confd: strconv.ParseUint(mode, 0, 32) on "0644" -> octal
    raise ValueError(f"mode must be octal text such as \"0644\", got {value!r}")


def _pair(value: Any, what: str) -> tuple[str, str]:
    if not isinstance(value, list | tuple) or len(value) != 2 or not all(isinstance(x, str) for x in value):
        raise ValueError(f"{what} must be a list of two strings")
    return (value[0], value[1])


def load_resource(path: str | os.PathLike[str], *, global_prefix: str = "") -> TemplateResource:
    """Read one resource file; raises :class:`ResourceConfigError` naming every problem."""
    p = Path(path)
    problems: list[str] = []
    try:
        t = _table(p)
    except (OSError, UnicodeDecodeError, ValueError, tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ResourceConfigError(str(p), [str(e)]) from None
    unknown = sorted(set(t) - _CONFD_FIELDS - _EXTRA_FIELDS)
    if unknown:
        log.warning("%s: ignoring unknown fields %s", p, ", ".join(unknown))
    kwargs: dict[str, Any] = {"name": p.name, "path": str(p)}

    def take(name: str, conv: Any) -> None:
        if name in t and t[name] is not None:
            try:
                kwargs[name] = conv(t[name])
            except (TypeError, ValueError) as e:
                problems.append(f"{name}: {e}")

    def text(v: Any) -> str:
        if not isinstance(v, str):
            raise ValueError(f"must be text, got {v!r}")
        return v

    def integer(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be an integer, got {v!r}")
        return v

    def keys(v: Any) -> tuple[str, ...]:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(k, str) for k in v):
            raise ValueError("must be a list of keys")
        return tuple(v)

    for name in ("src", "dest", "check_cmd", "reload_cmd", "reload_group", "registry_prefix"):
        take(name, text)
    take("keys", keys)
    take("mode", _mode)
    take("uid", integer)
    take("gid", integer)
    take("check_timeout", lambda v: parse_seconds(v, "check_timeout"))
    take("reload_timeout", lambda v: parse_seconds(v, "reload_timeout"))
    take("missing_key", text)
    take("delimiters", lambda v: _pair(v, "delimiters"))
    take("block_delimiters", lambda v: _pair(v, "block_delimiters"))
    if "defaults" in t:
        d = t["defaults"]
        if isinstance(d, dict) and all(isinstance(v, str | int | float) for v in d.values()):
            kwargs["defaults"] = {join_key(str(k)): str(v) for k, v in d.items()}
        else:
            problems.append("defaults must be a table of key = value")
    if "backup" in t:
        b = t["backup"]
        if b is True:
            kwargs["backup"] = ".bak"
        elif b is False or b == "":
            kwargs["backup"] = ""
        elif isinstance(b, str) and "/" not in b:
            kwargs["backup"] = b
        else:
            problems.append("backup must be true/false or a file name suffix such as \".orig\"")
    if "wait" in t:
        w = t["wait"]
        try:
            if isinstance(w, dict):
                wmin = parse_seconds(w.get("min", 0), "wait.min")
                wmax = parse_seconds(w["max"], "wait.max") if "max" in w else 4 * wmin
            else:  # consul-template's short form: wait = "2s" (max = 4 * min)
                wmin = parse_seconds(w, "wait")
                wmax = 4 * wmin
            kwargs["wait_min"], kwargs["wait_max"] = wmin, wmax
        except (KeyError, ValueError) as e:
            problems.append(str(e))
    own_prefix = t.get("prefix") or ""
    if not isinstance(own_prefix, str):
        problems.append(f"prefix: must be text, got {own_prefix!r}")
    elif global_prefix or own_prefix:
        kwargs["prefix"] = join_key(global_prefix, own_prefix)
    if problems:
        raise ResourceConfigError(str(p), problems)
    for required in ("src", "dest"):
        kwargs.setdefault(required, "")
    kwargs.setdefault("keys", ())
    res = TemplateResource(**kwargs)
    problems = res.validate()
    if problems:
        raise ResourceConfigError(str(p), problems)
    return res


def load_resources(confdir: str | os.PathLike[str], *, global_prefix: str = "",
                   ) -> tuple[list[TemplateResource], list[ResourceConfigError]]:
    """Every resource in ``CONFDIR/conf.d`` (sorted by name) and the files that failed to load.

    A broken file does not stop the others: it is reported, the rest run.
    """
    d = Path(confdir) / "conf.d"
    resources: list[TemplateResource] = []
    errors: list[ResourceConfigError] = []
    if not d.is_dir():
        return resources, [ResourceConfigError(str(d), ["not a directory"])]
    for p in sorted(d.iterdir()):
        if p.suffix not in RESOURCE_SUFFIXES or p.name.startswith(".") or not p.is_file():
            continue
        try:
            resources.append(load_resource(p, global_prefix=global_prefix))
        except ResourceConfigError as e:
            errors.append(e)
    groups: dict[str, str] = {}
    kept: list[TemplateResource] = []
    for r in resources:
        if r.reload_group:
            first = groups.setdefault(r.reload_group, r.reload_cmd)
            if first != r.reload_cmd:
                errors.append(ResourceConfigError(r.path, [
                    f"reload_group {r.reload_group!r}: every member must have the same reload_cmd"]))
                continue
        kept.append(r)
    return kept, errors
