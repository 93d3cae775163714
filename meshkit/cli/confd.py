"""``meshkit confd``: render templates from etcd keys, check them, swap them in, reload.

Flags follow the issue's double-dash spelling; Go's flag grammar also accepts
confd's single-dash spellings (``-onetime``, ``-node URL``, ``-backend etcdv3``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from meshkit._internal.goflags import (
    Flag,
    FlagError,
    FlagSet,
    HelpRequested,
    parse_bool,
)
from meshkit._internal.logging import configure_logging
from meshkit.cli._values import as_str as _str
from meshkit.cli._values import level as _level
from meshkit.cli._values import seconds as _seconds
from meshkit.client import Client
from meshkit.client.client import credentials
from meshkit.confd import Confd, ConfdConfig

__all__ = ["HELP", "main"]

HELP = """Usage:

  meshkit confd --endpoints URLS --confdir DIR [--onetime | --watch | --interval SECONDS] [flags]
    Render DIR/templates/* for the resources in DIR/conf.d/ from the cluster's keys,
    check the result, swap it in atomically and run the reload command.

Flags:
  --endpoints URLS         comma-separated etcd endpoints (default ETCDCTL_ENDPOINTS or 127.0.0.1:2379);
                           confd's -node URL (repeatable) is accepted too
  --confdir DIR            directory holding conf.d/ and templates/ (default /etc/confd)
  --onetime                render every resource once and exit; non-zero if any failed
  --watch                  render, then watch the keys and render on every change
  --interval SECONDS       render every SECONDS (default mode; 600). Also "30s", "5m"
  --noop                   print a unified diff of what would change; write nothing
  --sync-only              write files without running check_cmd and reload_cmd
  --prefix P               key prefix joined before every resource's prefix
  --keep-stage-file        keep the staged file when check_cmd fails
  --status-listen HOST:PORT  serve /status and /health (aiohttp); e.g. 127.0.0.1:9010
  --stuck-after DURATION   a round unfinished for this long makes /health fail
                           (default: per resource, wait.max + command timeouts + 60s)
  --no-watch-files         do not pick up edits of conf.d/ and templates/ without a restart
  --user NAME[:PASSWORD]   etcd user (or ETCDCTL_USER); the password may also come from
                           ETCDCTL_PASSWORD
  --timeout DURATION       per-request timeout of the etcd client (default 5s)
  --log-level LEVEL        debug, info, warn, error (default info)
  --backend NAME           confd compatibility: only etcdv3 (or etcd) is supported
"""








FLAGS = FlagSet([
    Flag("endpoints", _str), Flag("node", _str), Flag("confdir", _str),
    Flag("onetime", parse_bool, is_bool=True), Flag("watch", parse_bool, is_bool=True),
    Flag("interval", _seconds), Flag("noop", parse_bool, is_bool=True),
    Flag("sync-only", parse_bool, is_bool=True), Flag("prefix", _str),
    Flag("keep-stage-file", parse_bool, is_bool=True), Flag("status-listen", _str),
    Flag("stuck-after", _seconds), Flag("no-watch-files", parse_bool, is_bool=True),
    Flag("user", _str), Flag("timeout", _seconds), Flag("log-level", _level),
    Flag("backend", _str),
])


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        parsed = FLAGS.parse(args)
    except HelpRequested:
        print(HELP)
        return 0
    except FlagError as e:
        print(f"meshkit confd: {e}\nRun 'meshkit confd --help' for usage.", file=sys.stderr)
        return 2
    if parsed.args:
        print(f"meshkit confd: unexpected argument {parsed.args[0]!r}", file=sys.stderr)
        return 2
    values = parsed.as_dict()
    nodes = [v for k, v in parsed.values if k == "node"]

    problems: list[str] = []
    modes = [m for m in ("onetime", "watch") if values.get(m)] + (["interval"] if "interval" in values else [])
    if len(modes) > 1:
        problems.append("give one of --onetime, --watch, --interval")
    mode = "onetime" if values.get("onetime") else "watch" if values.get("watch") else "interval"
    backend = values.get("backend", "etcdv3")
    if backend not in ("etcdv3", "etcd"):
        problems.append(f"backend {backend!r} is not supported (only etcdv3)")
    endpoints = values.get("endpoints") or ",".join(nodes) or os.environ.get(
        "ETCDCTL_ENDPOINTS", "127.0.0.1:2379")
    config = ConfdConfig(
        confdir=values.get("confdir", "/etc/confd"),
        mode=mode,  # type: ignore[arg-type]
        interval=values.get("interval", 600.0),
        prefix=values.get("prefix", ""),
        noop=values.get("noop", False),
        sync_only=values.get("sync-only", False),
        keep_stage_file=values.get("keep-stage-file", False),
        status_listen=values.get("status-listen", ""),
        watch_files=not values.get("no-watch-files", False),
        stuck_after=values.get("stuck-after", 0.0),
    )
    problems += config.validate()
    if problems:
        for p in problems:
            print(f"meshkit confd: {p}", file=sys.stderr)
        return 2
    configure_logging(values.get("log-level", "info"))
    user, password = credentials(values.get("user"))
    try:
        return asyncio.run(_amain(config, endpoints, values.get("timeout", 5.0), user, password))
    except KeyboardInterrupt:
        return 130




async def _amain(config: ConfdConfig, endpoints: str, request_timeout: float,
                 user: str | None, password: str | None) -> int:
    async with Client(endpoints, timeout=request_timeout, user=user, password=password) as client:
        if config.mode == "onetime":
            outcomes = await Confd(client, config).run_once()
            failed = [o for o in outcomes if not o.ok]
            for o in failed:
                print(f"meshkit confd: {o.name}: {o.error}", file=sys.stderr)
                if o.output:
                    print(o.output.rstrip(), file=sys.stderr)
            return 1 if failed else 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Confd(client, config) as confd:
            if confd.status_port:
                print(f"meshkit confd: status on {config.status_listen.rpartition(':')[0]}:"
                      f"{confd.status_port}", file=sys.stderr, flush=True)
            waiter = asyncio.ensure_future(confd.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stopper
            if waiter.done() and not waiter.cancelled():
                waiter.result()  # the runners ended by themselves: raise what ended them
        return 0


if __name__ == "__main__":
    sys.exit(main())
