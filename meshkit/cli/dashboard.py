"""``meshkit dashboard``: the web dashboard for any etcd v3 cluster (aiohttp)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from meshkit._internal.goflags import Flag, FlagError, FlagSet, HelpRequested, parse_bool, parse_int
from meshkit._internal.logging import configure_logging
from meshkit.cli._values import as_str as _str
from meshkit.cli._values import level as _level
from meshkit.cli._values import seconds as _seconds
from meshkit.dashboard import Dashboard, DashboardConfig

__all__ = ["HELP", "main"]

HELP = """Usage:

  meshkit dashboard --endpoints URLS --listen HOST:PORT [flags]
    Serve a web dashboard of an etcd v3 cluster (meshkit server or a real etcd):
    members, keys, registry services, locks and elections, config center; live over
    server-sent events fed by etcd watches. With etcd auth enabled, every browser
    logs in as an etcd user and the dashboard acts with that user's rights only.

Flags:
  --endpoints URLS            comma-separated etcd endpoints (default ETCDCTL_ENDPOINTS or 127.0.0.1:2379)
  --listen HOST:PORT          address of the dashboard (default 127.0.0.1:8080)
  --cacert FILE               verify etcd's TLS certificate with this CA bundle
  --cert FILE, --key FILE     client certificate and key for etcd (TLS)
  --timeout DURATION          per-request timeout of etcd calls (default 5s)
  --registry-prefix P         service registry prefix (default meshkit/services)
  --config-prefix P           config center prefix (default /meshkit/config/)
  --lock-prefix P             where to look for locks and elections (repeatable;
                              default: the whole keyspace)
  --session-idle DURATION     a browser session unused this long ends (default 30m)
  --session-max-age DURATION  every session ends after this (default 12h)
  --max-sessions N            sessions kept in memory (default 10000)
  --status-interval DURATION  members page: Status of every member this often (default 2s)
  --ttl-refresh DURATION      lease TTLs on the services and locks pages refreshed this often (default 5s)
  --allowed-origin URL        another origin the pages are served under, e.g. behind a
                              TLS proxy: https://dash.example.com (repeatable)
  --cookie-secure             always mark the session cookie Secure (TLS ends at a proxy)
  --log-level LEVEL           debug, info, warn, error (default info)
"""

FLAGS = FlagSet([
    Flag("endpoints", _str), Flag("listen", _str), Flag("cacert", _str), Flag("cert", _str),
    Flag("key", _str), Flag("timeout", _seconds), Flag("registry-prefix", _str),
    Flag("config-prefix", _str), Flag("lock-prefix", _str), Flag("session-idle", _seconds),
    Flag("session-max-age", _seconds), Flag("status-interval", _seconds),
    Flag("ttl-refresh", _seconds), Flag("allowed-origin", _str),
    Flag("cookie-secure", parse_bool, is_bool=True), Flag("max-sessions", parse_int),
    Flag("log-level", _level),
])


def config_from_args(argv: Sequence[str]) -> DashboardConfig:
    """The configuration a command line gives (``FlagError`` for a malformed one)."""
    parsed = FLAGS.parse(list(argv))
    if parsed.args:
        raise FlagError(f"unexpected argument {parsed.args[0]!r}")
    v = parsed.as_dict()
    eps = v.get("endpoints") or os.environ.get("ETCDCTL_ENDPOINTS", "127.0.0.1:2379")
    locks = tuple(val for k, val in parsed.values if k == "lock-prefix") or ("",)
    origins = tuple(val for k, val in parsed.values if k == "allowed-origin")
    d = DashboardConfig()
    return DashboardConfig(
        endpoints=tuple(e.strip() for e in eps.split(",") if e.strip()),
        listen=v.get("listen", d.listen),
        timeout=v.get("timeout", d.timeout),
        ca_cert=v.get("cacert"), cert=v.get("cert"), key=v.get("key"),
        registry_prefix=v.get("registry-prefix", d.registry_prefix),
        config_prefix=v.get("config-prefix", d.config_prefix),
        lock_prefixes=locks,
        session_idle=v.get("session-idle", d.session_idle),
        session_max_age=v.get("session-max-age", d.session_max_age),
        max_sessions=v.get("max-sessions", d.max_sessions),
        status_interval=v.get("status-interval", d.status_interval),
        ttl_refresh=v.get("ttl-refresh", d.ttl_refresh),
        allowed_origins=origins,
        cookie_secure=v.get("cookie-secure", False),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config = config_from_args(args)
    except HelpRequested:
        print(HELP)
        return 0
    except FlagError as e:
        print(f"meshkit dashboard: {e}\nRun 'meshkit dashboard --help' for usage.", file=sys.stderr)
        return 2
    problems = config.validate()
    if problems:
        for p in problems:
            print(f"meshkit dashboard: {p}", file=sys.stderr)
        return 2
    level = FLAGS.parse(args).as_dict().get("log-level", "info")
    configure_logging(level)
    try:
        return asyncio.run(_amain(config))
    except KeyboardInterrupt:
        return 130
    except OSError as e:  # the address is taken, a certificate file is missing...
        print(f"meshkit dashboard: {e}", file=sys.stderr)
        return 1


async def _amain(config: DashboardConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Dashboard(config) as d:
        print(f"meshkit dashboard: serving on {d.url} (etcd {', '.join(config.endpoints)})",
              file=sys.stderr, flush=True)
        waiter = asyncio.ensure_future(stop.wait())
        try:
            await waiter
        finally:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
    return 0


if __name__ == "__main__":
    sys.exit(main())
