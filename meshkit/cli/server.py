"""``meshkit server``: etcd 3.4's command line, environment and config file."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from meshkit.server.config import (
    FLAGS,
    ConfigError,
    FlagSpec,
    HelpRequested,
    ServerConfig,
    VersionRequested,
)

__all__ = ["help_text", "main"]

USAGE_LINES = """Usage:

  meshkit server [flags]
    Start an etcd 3.4 compatible server.

  meshkit server --version
    Show the version of meshkit.

  meshkit server -h | --help
    Show the help information about meshkit server.

  meshkit server --config-file
    Path to the server configuration file. Note that if a configuration file is provided, other command line flags and environment variables will be ignored."""

_HINT = "See 'meshkit server --help'."


def _default_text(spec: FlagSpec) -> str:
    from meshkit._internal.goflags import format_duration_ns

    value = spec.default
    if spec.name == "data-dir":
        return "'${name}.etcd'"
    if spec.name == "max-concurrent-streams":
        return "'math.MaxUint32'"
    if spec.kind == "duration":
        return f"'{format_duration_ns(value)}'" if value else "''"
    if isinstance(value, bool):
        return f"'{str(value).lower()}'"
    if isinstance(value, tuple):
        return "'" + ",".join(value) + "'"
    return f"'{value}'"


def help_text() -> str:
    lines = [USAGE_LINES, "", "Flags (etcd 3.4's; environment variable ETCD_<FLAG_NAME>):"]
    for spec in FLAGS:
        if spec.status in ("ignored",) or spec.name == "version":
            continue
        note = ""
        if spec.status == "unsupported":
            note = " [recognised; only the default is supported yet]"
        lines.append(f"  --{spec.name} {_default_text(spec)}")
        lines.append(f"    {spec.help}{note}")
    return "\n".join(lines)


def _print_error(err: ConfigError) -> None:
    lead = f"{err.context}, " if err.context else ""
    for problem in err.problems:
        if err.exit_code == 2:  # Go's flag package: its message alone
            print(problem, file=sys.stderr)
        else:
            print(f"meshkit: {lead}{problem}", file=sys.stderr)
    print(_HINT, file=sys.stderr)


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    messages: list[tuple[str, str]] = []
    try:
        config = ServerConfig.from_args(
            argv,
            os.environ if environ is None else environ,
            log=lambda level, msg: messages.append((level, msg)),
        )
    except HelpRequested:
        print(help_text())
        return 0
    except VersionRequested:
        from meshkit.cli.main import version_text

        print(version_text())
        return 0
    except ConfigError as err:
        for level, msg in messages:
            if level != "info":
                print(f"meshkit: {msg}", file=sys.stderr)
        _print_error(err)
        return err.exit_code

    from meshkit._internal.logging import configure_logging, get_logger

    configure_logging(config.log_level, config.logger, config.log_outputs)
    log = get_logger("etcdmain")
    for level, msg in messages:
        log.warning(msg) if level == "warning" else log.info(msg)

    try:
        from meshkit.server.run import run_server
    except ModuleNotFoundError as exc:
        if exc.name != "meshkit.server.run":
            raise
        print(
            "meshkit: the server is not part of this build yet (meshkit.server.run is missing)",
            file=sys.stderr,
        )
        return 1
    return int(run_server(config))
