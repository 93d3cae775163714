"""xDS v3 control plane fed by the registry, and the bootstrap that points gRPC at it."""

from meshkit.lb.xds.bootstrap import (
    BOOTSTRAP_CONFIG_ENV,
    BOOTSTRAP_ENV,
    bootstrap_config,
    use_xds,
    write_bootstrap,
    xds_target,
)
from meshkit.lb.xds.server import XdsServer

__all__ = [
    "BOOTSTRAP_CONFIG_ENV",
    "BOOTSTRAP_ENV",
    "XdsServer",
    "bootstrap_config",
    "use_xds",
    "write_bootstrap",
    "xds_target",
]
