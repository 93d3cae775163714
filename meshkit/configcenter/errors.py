"""The config center's errors: one root under ``MeshkitError``, each class with fields."""

from __future__ import annotations

from collections.abc import Sequence

from meshkit._internal.errors import MeshkitError

__all__ = [
    "ConfigCenterError",
    "ConfigNotFoundError",
    "ConfigUnavailableError",
    "ConflictError",
    "DocumentError",
    "InvalidNameError",
    "RevisionNotFoundError",
    "SchemaError",
    "SchemaValidationError",
]


class ConfigCenterError(MeshkitError):
    """The root of the config center's errors."""


class InvalidNameError(ConfigCenterError, ValueError):
    """A config name is not ``NAMESPACE/APP`` made of safe segments."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"invalid config name {name!r}: {reason}")
        self.name = name
        self.reason = reason


class DocumentError(ConfigCenterError, ValueError):
    """A document is not valid YAML, JSON or ``key=value`` text (or not a mapping)."""

    def __init__(self, source: str, reason: str, *, line: int | None = None,
                 column: int | None = None) -> None:
        where = source
        if line is not None:
            where += f", line {line}"
            if column is not None:
                where += f", column {column}"
        super().__init__(f"{where}: {reason}")
        self.source = source
        self.reason = reason
        self.line = line
        self.column = column


class SchemaError(ConfigCenterError, ValueError):
    """The JSON Schema itself is broken (not JSON, or not a valid schema)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"schema {source}: {reason}")
        self.source = source
        self.reason = reason


class SchemaValidationError(ConfigCenterError, ValueError):
    """A document fails its JSON Schema; ``errors`` holds one ``"$.path: message"`` per failure."""

    def __init__(self, source: str, errors: Sequence[str]) -> None:
        listed = "\n".join(f"  - {e}" for e in errors)
        super().__init__(f"{source} fails its schema ({len(errors)} error(s)):\n{listed}")
        self.source = source
        self.errors = list(errors)


class ConflictError(ConfigCenterError):
    """A compare-and-swap push lost: the config moved on since ``base_revision``.

    ``current_revision`` is the revision of the version now published (0: none), with its
    version number, author and message, so the publisher can look before pushing again.
    """

    def __init__(self, name: str, *, base_revision: int, current_revision: int,
                 current_version: int, current_author: str, current_message: str) -> None:
        by = f" by {current_author}" if current_author else ""
        msg = f": {current_message!r}" if current_message else ""
        super().__init__(
            f"conflict on {name}: the push was based on revision {base_revision}, but version "
            f"{current_version} (revision {current_revision}) was published meanwhile{by}{msg}; "
            f"nothing was stored"
        )
        self.name = name
        self.base_revision = base_revision
        self.current_revision = current_revision
        self.current_version = current_version
        self.current_author = current_author
        self.current_message = current_message


class ConfigNotFoundError(ConfigCenterError, LookupError):
    """No version of this config has been published."""

    def __init__(self, name: str) -> None:
        super().__init__(f"config {name} has no published version")
        self.name = name


class RevisionNotFoundError(ConfigCenterError, LookupError):
    """No published version of ``name`` has this revision (see ``history``)."""

    def __init__(self, name: str, revision: int, known: Sequence[int]) -> None:
        shown = ", ".join(str(r) for r in known[-10:]) or "none"
        super().__init__(
            f"config {name} has no version published at revision {revision} "
            f"(published revisions: {shown})"
        )
        self.name = name
        self.revision = revision
        self.known = list(known)


class ConfigUnavailableError(ConfigCenterError):
    """The cluster could not be reached and no usable local cache file exists."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"config {name} is unavailable: {reason}")
        self.name = name
        self.reason = reason
