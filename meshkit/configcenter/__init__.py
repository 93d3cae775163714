"""Config center: namespaced, versioned application config on etcd, with live reload.

* ``ConfigStore`` publishes (``push``, ``rollback``) and reads (``get``, ``history``,
  ``diff``, ``list``); every version is kept under its own key, so history outlives
  compaction; pushes are compare-and-swap on the revision they were based on.
* ``AppConfig`` is an application's live view: current config, change stream,
  callbacks, a local cache file for when the cluster is unreachable.
* ``role_commands`` gives the etcdctl commands of the per-namespace roles.

It uses only the public etcd v3 API (``meshkit.client``): it runs against meshkit's
server and a real etcd alike. See docs/configcenter.md.
"""

from meshkit.configcenter.app import AppConfig, Callback, ChangeStream, load_cache, save_cache
from meshkit.configcenter.documents import (
    FORMATS,
    Format,
    detect_format,
    load_schema,
    parse_document,
    validate,
)
from meshkit.configcenter.errors import (
    ConfigCenterError,
    ConfigNotFoundError,
    ConfigUnavailableError,
    ConflictError,
    DocumentError,
    InvalidNameError,
    RevisionNotFoundError,
    SchemaError,
    SchemaValidationError,
)
from meshkit.configcenter.names import DEFAULT_PREFIX, ConfigName, namespace_prefix
from meshkit.configcenter.records import ConfigVersion
from meshkit.configcenter.roles import format_commands, role_commands, role_names
from meshkit.configcenter.store import MAX_RECORD_BYTES, ConfigStore, default_author, read_text

__all__ = [
    "DEFAULT_PREFIX",
    "FORMATS",
    "MAX_RECORD_BYTES",
    "AppConfig",
    "Callback",
    "ChangeStream",
    "ConfigCenterError",
    "ConfigName",
    "ConfigNotFoundError",
    "ConfigStore",
    "ConfigUnavailableError",
    "ConfigVersion",
    "ConflictError",
    "DocumentError",
    "Format",
    "InvalidNameError",
    "RevisionNotFoundError",
    "SchemaError",
    "SchemaValidationError",
    "default_author",
    "detect_format",
    "format_commands",
    "load_cache",
    "load_schema",
    "namespace_prefix",
    "parse_document",
    "read_text",
    "role_commands",
    "role_names",
    "save_cache",
    "validate",
]
