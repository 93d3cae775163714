"""The gRPC xDS bootstrap: how a gRPC client (any language) finds the control plane.

gRPC reads it when it creates its xDS client, from the file named by
``GRPC_XDS_BOOTSTRAP`` or the JSON text in ``GRPC_XDS_BOOTSTRAP_CONFIG``. Then
``xds:///<service>`` targets resolve through the control plane.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

__all__ = [
    "BOOTSTRAP_CONFIG_ENV",
    "BOOTSTRAP_ENV",
    "bootstrap_config",
    "use_xds",
    "write_bootstrap",
    "xds_target",
]

BOOTSTRAP_ENV = "GRPC_XDS_BOOTSTRAP"
BOOTSTRAP_CONFIG_ENV = "GRPC_XDS_BOOTSTRAP_CONFIG"


def bootstrap_config(server_uri: str, *, node_id: str = "", zone: str = "",
                     region: str = "", sub_zone: str = "") -> dict[str, Any]:
    """The bootstrap object: one insecure xDS v3 server, a node id and its locality
    (the zone lets the control plane prefer same-zone instances for this client)."""
    locality = {k: v for k, v in (("region", region), ("zone", zone), ("sub_zone", sub_zone)) if v}
    node: dict[str, Any] = {"id": node_id or f"meshkit-{socket.gethostname()}-{os.getpid()}"}
    if locality:
        node["locality"] = locality
    return {
        "xds_servers": [{
            "server_uri": server_uri,
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": node,
    }


def write_bootstrap(path: str | os.PathLike[str], server_uri: str, **node: str) -> Path:
    """Write the bootstrap JSON file (for ``GRPC_XDS_BOOTSTRAP``, in any language)."""
    p = Path(path)
    p.write_text(json.dumps(bootstrap_config(server_uri, **node), indent=2) + "\n")
    return p


def use_xds(server_uri: str, *, path: str | os.PathLike[str] | None = None, **node: str) -> str:
    """Point this process's gRPC at the control plane; returns the bootstrap's JSON text.

    With ``path`` the file is written and ``GRPC_XDS_BOOTSTRAP`` names it, otherwise
    ``GRPC_XDS_BOOTSTRAP_CONFIG`` holds the JSON. Call it before the first ``xds:///``
    channel is created: gRPC reads the bootstrap when it creates its xDS client, and
    keeps that client while any xDS channel is open.
    """
    text = json.dumps(bootstrap_config(server_uri, **node))
    if path is not None:
        write_bootstrap(path, server_uri, **node)
        os.environ[BOOTSTRAP_ENV] = os.fspath(path)
        os.environ.pop(BOOTSTRAP_CONFIG_ENV, None)
    else:
        os.environ[BOOTSTRAP_CONFIG_ENV] = text
        os.environ.pop(BOOTSTRAP_ENV, None)
    return text


def xds_target(service: str) -> str:
    """The target that dials ``service`` through xDS: ``xds:///<service>``."""
    return f"xds:///{service}"
