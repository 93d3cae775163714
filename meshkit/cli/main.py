"""``meshkit``: the entry point; dispatches to subcommands."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import meshkit

__all__ = ["COMMANDS", "main"]

# name -> (module with main(argv) -> int, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "server": (
        "meshkit.cli.server",
        "Run an etcd 3.4 compatible server (etcd's flags, ETCD_* variables)",
    ),
    "cluster": ("meshkit.cli.cluster", "Start N members on loopback ports for development (like etcd's Procfile)"),
    "register": ("meshkit.cli.register", "Register a service instance with health checks (sidecar)"),
    "services": ("meshkit.cli.services", "List registered services and instances (health, weight, zone, TTL)"),
    "confd": ("meshkit.cli.confd", "Render templates from etcd keys, check them, swap them in atomically, reload"),
    "config": ("meshkit.cli.config", "Publish, version, diff, roll back and watch application config (config center)"),
    "metad": ("meshkit.cli.metad", "Serve /self metadata over HTTP from a watched mirror (yunify/metad API)"),
    "ctl": ("meshkit.cli.ctl", "etcdctl v3's commands, flags, output formats and exit codes (works against any etcd)"),
    "snapshot": ("meshkit.cli.snapshot", "Save, inspect and restore etcd snapshots (restore bootstraps meshkit members from an etcd backup)"),
    "xds": ("meshkit.cli.xds", "Serve xDS v3 (ADS) from the registry for gRPC xds:/// clients"),
    "dashboard": ("meshkit.cli.dashboard", "Web dashboard: members, keys, services, locks, config center (live)"),
}
# Announced in the docs; each gets its module when it is built.
PLANNED: tuple[str, ...] = ()


def usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [
        "Usage:",
        "",
        "  meshkit <command> [flags]",
        "",
        "Commands:",
        *(f"  {name.ljust(width)}  {desc}" for name, (_mod, desc) in COMMANDS.items()),
        "",
        "  meshkit --version   Show the version of meshkit.",
        "  meshkit --help      Show this help.",
        "",
        "Run 'meshkit <command> --help' for a command's flags.",
    ]
    return "\n".join(lines)


def version_text() -> str:
    import platform

    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return "\n".join(
        [
            f"meshkit Version: {meshkit.__version__}",
            "etcd API Version: 3.4",
            "Git SHA: Not provided",
            f"Python Version: {platform.python_version()}",
            f"OS/Arch: {sys.platform}/{machine}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(), file=sys.stderr)
        return 2
    first = args[0]
    if first in ("--version", "-version", "version"):
        print(version_text())
        return 0
    if first in ("-h", "--help", "-help", "help"):
        print(usage())
        return 0
    if first in COMMANDS:
        module = importlib.import_module(COMMANDS[first][0])
        try:
            return int(module.main(args[1:]))
        except KeyboardInterrupt:
            return 130
    available = ", ".join(COMMANDS)
    if first in PLANNED:
        print(
            f'meshkit: command "{first}" is not available yet (available commands: {available})',
            file=sys.stderr,
        )
    elif first.startswith("-"):
        print(
            f"meshkit: flag provided but not defined: {first} (give a command first, "
            f"e.g. 'meshkit server {first}'; available commands: {available})",
            file=sys.stderr,
        )
    else:
        print(
            f'meshkit: unknown command "{first}" (available commands: {available})', file=sys.stderr
        )
    print("Run 'meshkit --help' for usage.", file=sys.stderr)
    return 2
