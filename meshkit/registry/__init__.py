"""Service registry over the public etcd v3 API: a lease-backed registrar, health
checks for a sidecar, and a discovery cache that never misses a change.

Keys and values follow etcd Go's ``client/v3/naming/endpoints`` (see
:mod:`meshkit.registry.model`), so Go's etcd resolver reads what meshkit writes.
"""

from meshkit.registry.discovery import Change, ChangeKind, ChangeStream, Discovery
from meshkit.registry.health import (
    CheckResult,
    ExecCheck,
    GRPCCheck,
    HealthCheck,
    HealthMonitor,
    HealthState,
    HTTPCheck,
    InvalidCheckError,
    TCPCheck,
    parse_check,
)
from meshkit.registry.model import (
    DEFAULT_PREFIX,
    OP_ADD,
    OP_DELETE,
    EndpointUpdate,
    Instance,
    InvalidInstanceError,
    InvalidValueError,
    RegistryError,
    decode_value,
    encode_value,
    go_json,
    instance_from_value,
    instance_key,
    parse_key,
    service_prefix,
)
from meshkit.registry.registrar import Backoff, Registrar
from meshkit.registry.sidecar import Sidecar, SidecarConfig

__all__ = [
    "DEFAULT_PREFIX",
    "OP_ADD",
    "OP_DELETE",
    "Backoff",
    "Change",
    "ChangeKind",
    "ChangeStream",
    "CheckResult",
    "Discovery",
    "EndpointUpdate",
    "ExecCheck",
    "GRPCCheck",
    "HTTPCheck",
    "HealthCheck",
    "HealthMonitor",
    "HealthState",
    "Instance",
    "InvalidCheckError",
    "InvalidInstanceError",
    "InvalidValueError",
    "Registrar",
    "RegistryError",
    "Sidecar",
    "SidecarConfig",
    "TCPCheck",
    "decode_value",
    "encode_value",
    "go_json",
    "instance_from_value",
    "instance_key",
    "parse_check",
    "parse_key",
    "service_prefix",
]
