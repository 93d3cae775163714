"""``meshkit xds``: the xDS v3 control plane (ADS) fed by the registry.

    meshkit xds --endpoints URLS --listen HOST:PORT [--prefix PREFIX] [--prefer-local=true|false]
        [--bootstrap PATH] [--node-zone ZONE] [--logger zap|capnslog] [--log-level LEVEL]

gRPC clients whose bootstrap names this server dial ``xds:///<service>``.
``--bootstrap PATH`` writes a bootstrap file for clients that points at the listen
address (``--node-zone`` fills its ``node.locality.zone``). SIGTERM/SIGINT stop it.
Exit status 2: a bad command line; 1: the server failed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from meshkit._internal.goflags import (
    Flag,
    FlagError,
    FlagSet,
    HelpRequested,
)
from meshkit._internal.goflags import parse_bool as _bool
from meshkit._internal.logging import LEVELS, configure_logging, get_logger
from meshkit.cli._values import as_str as _str
from meshkit.cli._values import choice as _choice
from meshkit.cli._values import seconds as _seconds

__all__ = ["XDS_HELP", "main", "parse_args"]

_log = get_logger("lb.xds")










XDS_FLAGS = [
    Flag("endpoints", _str), Flag("listen", _str), Flag("prefix", _str),
    Flag("prefer-local", _bool, is_bool=True), Flag("bootstrap", _str), Flag("node-zone", _str),
    Flag("dial-timeout", _seconds), Flag("logger", _choice("zap", "capnslog")),
    Flag("log-level", _choice(*LEVELS)),
]

XDS_HELP = """Usage:

  meshkit xds [flags]
    Serve xDS v3 (ADS: listeners, routes, clusters, endpoints) from the registry;
    gRPC clients dial xds:///<service>.

Flags:
  --endpoints 'URLS'      etcd endpoints, comma-separated (default: $ETCDCTL_ENDPOINTS or 127.0.0.1:2379)
  --listen 'HOST:PORT'    where to serve ADS (default 127.0.0.1:18000)
  --prefix 'PREFIX'       registry key prefix (default 'meshkit/services')
  --prefer-local          a client whose bootstrap names its zone gets its zone's instances
                          at priority 0, the others at priority 1 (default true)
  --bootstrap 'PATH'      also write a gRPC xDS bootstrap file for clients (GRPC_XDS_BOOTSTRAP)
  --node-zone 'ZONE'      node.locality.zone in that bootstrap file
  --dial-timeout 'DURATION'  etcd connection time limit (default 2s)
  --logger 'zap|capnslog'    log format (default zap)
  --log-level 'LEVEL'     debug, info, warn, error (default info)
"""


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """The settings for ``argv``; raises ``FlagError`` naming every broken rule."""
    parsed = FlagSet(XDS_FLAGS).parse(argv)
    problems = []
    if parsed.args:
        problems.append(f"unexpected argument(s): {' '.join(parsed.args)}")
    values = parsed.as_dict()
    eps_text = values.get("endpoints") or os.environ.get("ETCDCTL_ENDPOINTS", "127.0.0.1:2379")
    endpoints = [e.strip() for e in eps_text.split(",") if e.strip()]
    listen = values.get("listen", "127.0.0.1:18000")
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        problems.append(f"--listen {listen!r} is not HOST:PORT")
    if not endpoints:
        problems.append("--endpoints is empty")
    if problems:
        raise FlagError("; ".join(problems))
    return {
        "endpoints": endpoints, "listen": listen,
        "prefix": values.get("prefix", "meshkit/services"),
        "prefer_local": values.get("prefer-local", True),
        "bootstrap": values.get("bootstrap", ""), "node_zone": values.get("node-zone", ""),
        "dial_timeout": values.get("dial-timeout", 2.0),
        "logger": values.get("logger", "zap"), "log_level": values.get("log-level", "info"),
    }


async def run(cfg: dict[str, Any]) -> int:
    from meshkit.client import Client
    from meshkit.lb.xds import XdsServer, write_bootstrap

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Client(cfg["endpoints"], dial_timeout=cfg["dial_timeout"]) as client, \
                XdsServer(client, cfg["listen"], prefix=cfg["prefix"],
                          prefer_local=cfg["prefer_local"]) as server:
            if cfg["bootstrap"]:
                write_bootstrap(cfg["bootstrap"], server.address, zone=cfg["node_zone"])
                _log.info("wrote the gRPC xDS bootstrap to %s", cfg["bootstrap"])
            _log.info("serving xDS on %s from %s (prefix %s)", server.address,
                      ",".join(cfg["endpoints"]), cfg["prefix"])
            await stop.wait()
            _log.info("stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = parse_args(args)
    except HelpRequested:
        print(XDS_HELP)
        return 0
    except FlagError as e:
        print(f"meshkit xds: {e}", file=sys.stderr)
        print("See 'meshkit xds --help'.", file=sys.stderr)
        return 2
    configure_logging(level=cfg["log_level"], logger=cfg["logger"], outputs=("stderr",))
    from meshkit._internal.errors import MeshkitError

    try:
        return asyncio.run(run(cfg))
    except KeyboardInterrupt:
        return 130
    except (MeshkitError, OSError) as e:
        print(f"meshkit xds: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
