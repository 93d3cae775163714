"""Config names (``NAMESPACE/APP``) and the key layout in etcd.

With the default prefix ``/meshkit/config/``, the config ``prod/payments/api``
(namespace ``prod/payments``, app ``api``) lives under::

    /meshkit/config/prod/payments/api/@current            the published version (a record)
    /meshkit/config/prod/payments/api/@history/0000000007 every published version, never rewritten

Name segments are ``[A-Za-z0-9._-]+`` and cannot start with ``@``, so one app's keys are
never inside another app's ranges, and a namespace's keys are exactly the prefix
``<prefix><namespace>/`` (what the per-namespace etcd roles grant).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshkit.configcenter.errors import InvalidNameError

__all__ = ["DEFAULT_PREFIX", "ConfigName", "namespace_prefix"]

DEFAULT_PREFIX = "/meshkit/config/"
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")
_HISTORY_DIGITS = 10


def _check_prefix(prefix: str) -> str:
    if not prefix.endswith("/"):
        raise ValueError(f"the key prefix must end with '/': {prefix!r}")
    return prefix


def _segments(text: str, what: str) -> list[str]:
    segs = text.strip("/").split("/")
    for s in segs:
        if not s:
            raise InvalidNameError(text, f"empty segment in the {what}")
        if not _SEGMENT.match(s) or s in (".", ".."):
            raise InvalidNameError(
                text, f"segment {s!r} must match [A-Za-z0-9_][A-Za-z0-9._-]*")
    return segs


def namespace_prefix(namespace: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The key prefix holding every config of ``namespace`` (and of its sub-namespaces)."""
    return _check_prefix(prefix) + "/".join(_segments(namespace, "namespace")) + "/"


@dataclass(frozen=True, slots=True)
class ConfigName:
    """``namespace/app`` plus the key prefix it lives under."""

    namespace: str
    app: str
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def parse(cls, name: str, prefix: str = DEFAULT_PREFIX) -> ConfigName:
        segs = _segments(name, "name")
        if len(segs) < 2:
            raise InvalidNameError(name, "expected NAMESPACE/APP, e.g. prod/payments/api")
        return cls("/".join(segs[:-1]), segs[-1], _check_prefix(prefix))

    def __str__(self) -> str:
        return f"{self.namespace}/{self.app}"

    @property
    def base(self) -> str:
        return f"{self.prefix}{self.namespace}/{self.app}/"

    @property
    def current_key(self) -> bytes:
        return (self.base + "@current").encode()

    @property
    def history_prefix(self) -> bytes:
        return (self.base + "@history/").encode()

    def history_key(self, version: int) -> bytes:
        return self.history_prefix + f"{version:0{_HISTORY_DIGITS}d}".encode()
