"""confd's errors: one root under ``MeshkitError``, classes with fields."""

from __future__ import annotations

from meshkit._internal.errors import MeshkitError

__all__ = [
    "ConfdError",
    "MissingKeyError",
    "ResourceConfigError",
    "TemplateRenderError",
]


class ConfdError(MeshkitError):
    """Root of the errors raised by :mod:`meshkit.confd`."""


class ResourceConfigError(ConfdError):
    """A template resource file is unreadable or breaks rules; ``problems`` names each one."""

    def __init__(self, path: str, problems: list[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(problems))
        self.path = path
        self.problems = list(problems)


class MissingKeyError(ConfdError, KeyError):
    """A template asked for a key the resource's snapshot does not hold."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key does not exist: {key}")
        self.key = key

    def __str__(self) -> str:
        return str(self.args[0])


class TemplateRenderError(ConfdError):
    """The template could not be loaded or rendered (syntax error, missing key, bad call)."""

    def __init__(self, src: str, detail: str) -> None:
        super().__init__(f"template {src}: {detail}")
        self.src = src
        self.detail = detail
