"""``meshkit metad``: the /self metadata proxy (yunify/metad's API) in front of etcd v3."""

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
    parse_int,
)
from meshkit._internal.logging import configure_logging
from meshkit.cli._values import as_str as _str
from meshkit.cli._values import level as _level
from meshkit.cli._values import seconds as _seconds
from meshkit.client import Client
from meshkit.client.client import credentials
from meshkit.metad import Metad, MetadConfig

__all__ = ["HELP", "main"]

HELP = """Usage:

  meshkit metad --endpoints URLS --listen HOST:PORT --manage-listen HOST:PORT [flags]
    Serve yunify/metad's metadata API (/self, /{path}, long poll) from an in-memory
    mirror of the cluster's metadata keys, and its manage API on loopback.

Flags:
  --endpoints URLS          comma-separated etcd endpoints (default ETCDCTL_ENDPOINTS or 127.0.0.1:2379)
  --listen HOST:PORT        metadata API address (default 0.0.0.0:80; metad's ":80")
  --manage-listen HOST:PORT manage API address (default 127.0.0.1:9611); loopback only unless
                            --manage-allow-remote is given
  --manage-allow-remote     allow a non-loopback manage address
  --prefix P                key prefix of the metadata (default "")
  --group NAME              metad group: mapping and rules under /_metad/{mapping,rule}/NAME (default "default")
  --xff                     believe X-Forwarded-For, only from --trusted-proxy addresses
  --trusted-proxy CIDR      a proxy whose X-Forwarded-For is believed (repeatable; needed with --xff)
  --wait-timeout DURATION   long poll without &timeout= ends after this (default 60s)
  --max-wait-timeout DURATION  cap on &timeout= (default 300s)
  --max-waiters N           concurrent long polls (default 10000)
  --max-txn-ops N           operations per manage write (default 128, etcd's --max-txn-ops)
  --user NAME[:PASSWORD]    etcd user (or ETCDCTL_USER; password also from ETCDCTL_PASSWORD)
  --timeout DURATION        per-request timeout of the etcd client (default 5s)
  --log-level LEVEL         debug, info, warn, error (default info)
"""








FLAGS = FlagSet([
    Flag("endpoints", _str), Flag("listen", _str), Flag("manage-listen", _str),
    Flag("listen_manage", _str), Flag("manage-allow-remote", parse_bool, is_bool=True),
    Flag("prefix", _str), Flag("group", _str), Flag("xff", parse_bool, is_bool=True),
    Flag("trusted-proxy", _str), Flag("wait-timeout", _seconds), Flag("max-wait-timeout", _seconds),
    Flag("max-waiters", parse_int), Flag("max-txn-ops", parse_int), Flag("user", _str),
    Flag("timeout", _seconds), Flag("log-level", _level),
])


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        parsed = FLAGS.parse(args)
    except HelpRequested:
        print(HELP)
        return 0
    except FlagError as e:
        print(f"meshkit metad: {e}\nRun 'meshkit metad --help' for usage.", file=sys.stderr)
        return 2
    if parsed.args:
        print(f"meshkit metad: unexpected argument {parsed.args[0]!r}", file=sys.stderr)
        return 2
    v = parsed.as_dict()
    proxies = tuple(val for k, val in parsed.values if k == "trusted-proxy")
    config = MetadConfig(
        listen=v.get("listen", "0.0.0.0:80"),
        manage_listen=v.get("manage-listen", v.get("listen_manage", "127.0.0.1:9611")),
        manage_allow_remote=v.get("manage-allow-remote", False),
        prefix=v.get("prefix", ""),
        group=v.get("group", "default"),
        xff=v.get("xff", False),
        trusted_proxies=proxies,
        wait_timeout=v.get("wait-timeout", 60.0),
        max_wait_timeout=v.get("max-wait-timeout", 300.0),
        max_waiters=v.get("max-waiters", 10000),
        max_txn_ops=v.get("max-txn-ops", 128),
    )
    problems = config.validate()
    if problems:
        for p in problems:
            print(f"meshkit metad: {p}", file=sys.stderr)
        return 2
    configure_logging(v.get("log-level", "info"))
    endpoints = v.get("endpoints") or os.environ.get("ETCDCTL_ENDPOINTS", "127.0.0.1:2379")
    user, password = credentials(v.get("user"))
    try:
        return asyncio.run(_amain(config, endpoints, v.get("timeout", 5.0), user, password))
    except KeyboardInterrupt:
        return 130




async def _amain(config: MetadConfig, endpoints: str, request_timeout: float,
                 user: str | None, password: str | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Client(endpoints, timeout=request_timeout, user=user, password=password) as client, \
            Metad(client, config) as metad:
        host = config.listen.rpartition(":")[0] or "0.0.0.0"
        mhost = config.manage_listen.rpartition(":")[0]
        print(f"meshkit metad: metadata API on {host}:{metad.port}, manage API on "
              f"{mhost}:{metad.manage_port}", file=sys.stderr, flush=True)
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
