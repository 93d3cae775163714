"""``meshkit register``: the registry sidecar; ``meshkit services``: list what is registered.

    meshkit register --endpoints URLS --service NAME --addr HOST:PORT [--id ID] [--ttl SECONDS]
        [--meta KEY=VALUE ...] [--weight N] [--zone ZONE] [--version V] [--check URL-or-command]
        [--interval DURATION] [--timeout DURATION] [--rise N] [--fall N] [--drain DURATION]
        [--prefix PREFIX] [--logger zap|capnslog] [--log-level LEVEL]

Flags use Go's grammar (``-flag x``, ``--flag=x``) like etcd's. SIGTERM or SIGINT:
withdraw the instance, wait ``--drain``, revoke the lease, exit 0. Exit status 2: a bad
command line; 1: the sidecar failed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any

from meshkit._internal.goflags import (
    Flag,
    FlagError,
    FlagSet,
    HelpRequested,
    ValueError_,
    parse_int,
)
from meshkit._internal.logging import LEVELS, configure_logging, get_logger
from meshkit.cli._values import as_str as _str
from meshkit.cli._values import choice as _choice
from meshkit.cli._values import seconds as _seconds

__all__ = ["main", "parse_args", "services_main"]

_log = get_logger("registry.sidecar")








def _int(text: str) -> int:
    return parse_int(text)


def _meta(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError_("expected KEY=VALUE")
    return key, value




REGISTER_FLAGS = [
    Flag("endpoints", _str), Flag("service", _str), Flag("addr", _str), Flag("id", _str),
    Flag("ttl", _int), Flag("meta", _meta), Flag("weight", _int), Flag("zone", _str),
    Flag("version", _str), Flag("check", _str), Flag("interval", _seconds),
    Flag("timeout", _seconds), Flag("rise", _int), Flag("fall", _int), Flag("drain", _seconds),
    Flag("prefix", _str), Flag("dial-timeout", _seconds),
    Flag("logger", _choice("zap", "capnslog")), Flag("log-level", _choice(*LEVELS)),
]

REGISTER_HELP = """Usage:

  meshkit register --service NAME --addr HOST:PORT [flags]
    Register an instance under <prefix>/<service>/<id> with a kept-alive lease,
    only while its health check passes; SIGTERM/SIGINT drain, revoke, exit 0.

Flags:
  --endpoints 'URLS'     etcd endpoints, comma-separated (default: $ETCDCTL_ENDPOINTS or 127.0.0.1:2379)
  --service 'NAME'       service name (required)
  --addr 'HOST:PORT'     address clients connect to (required)
  --id 'ID'              instance id (default: the address)
  --ttl 'SECONDS'        lease TTL (default 10)
  --meta 'KEY=VALUE'     metadata, repeatable
  --weight 'N'           load-balancing weight (default 1)
  --zone 'ZONE'          zone / locality
  --version 'V'          instance version
  --check 'SPEC'         http(s)://URL (2xx passes), tcp://HOST:PORT, grpc://HOST:PORT[/SERVICE]
                         (grpc.health.v1 SERVING passes), or a command (exit 0 passes)
  --interval 'DURATION'  time between checks (default 10s)
  --timeout 'DURATION'   one check's time limit, also etcd calls' (default 5s)
  --rise 'N'             consecutive passes before registering (default 1)
  --fall 'N'             consecutive failures before withdrawing (default 1)
  --drain 'DURATION'     on SIGTERM/SIGINT: withdraw, wait this long, then revoke (default 0s)
  --prefix 'PREFIX'      key prefix (default 'meshkit/services')
  --dial-timeout 'DURATION'  connection time limit (default 2s)
  --logger 'zap|capnslog'    log format (default zap: one JSON object per line)
  --log-level 'LEVEL'    debug, info, warn, error (default info)
"""


def parse_args(argv: Sequence[str]) -> Any:
    """The :class:`SidecarConfig` for ``argv`` plus logging choices, or raise ``FlagError``."""
    import os

    from meshkit.registry.sidecar import SidecarConfig

    parsed = FlagSet(REGISTER_FLAGS).parse(argv)
    if parsed.args:
        raise FlagError(f"unexpected argument(s): {' '.join(parsed.args)}")
    values = parsed.as_dict()
    meta = tuple(v for name, v in parsed.values if name == "meta")
    eps_text = values.get("endpoints") or os.environ.get("ETCDCTL_ENDPOINTS", "127.0.0.1:2379")
    endpoints = tuple(e.strip() for e in eps_text.split(",") if e.strip())
    cfg = SidecarConfig(
        endpoints=endpoints, service=values.get("service", ""), addr=values.get("addr", ""),
        id=values.get("id", ""), ttl=values.get("ttl", 10), metadata=meta,
        weight=values.get("weight", 1), zone=values.get("zone", ""),
        version=values.get("version", ""), check=values.get("check", ""),
        interval=values.get("interval", 10.0), timeout=values.get("timeout", 5.0),
        rise=values.get("rise", 1), fall=values.get("fall", 1), drain=values.get("drain", 0.0),
        prefix=values.get("prefix", "meshkit/services"),
        dial_timeout=values.get("dial-timeout", 2.0),
    )
    return cfg, values.get("logger", "zap"), values.get("log-level", "info")


async def run_sidecar(cfg: Any) -> int:
    from meshkit.client import Client
    from meshkit.registry.sidecar import Sidecar

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    got: list[str] = []

    def on_signal(name: str) -> None:
        got.append(name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        async with Client(list(cfg.endpoints), timeout=cfg.timeout,
                          dial_timeout=cfg.dial_timeout) as client:
            sidecar = Sidecar(client, cfg)
            _log.info("starting service=%s id=%s addr=%s check=%s ttl=%d prefix=%s endpoints=%s",
                      cfg.service, sidecar.registrar.instance.instance_id, cfg.addr,
                      sidecar.check.describe() if sidecar.check else "none", cfg.ttl, cfg.prefix,
                      ",".join(cfg.endpoints))
            async with sidecar:
                await stop.wait()
                _log.info("received %s", got[0] if got else "stop")
                await sidecar.drain()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    _log.info("stopped service=%s", cfg.service)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg, logger, level = parse_args(args)
    except HelpRequested:
        print(REGISTER_HELP)
        return 0
    except FlagError as e:
        print(f"meshkit register: {e}", file=sys.stderr)
        print("See 'meshkit register --help'.", file=sys.stderr)
        return 2
    problems = cfg.validate()
    if problems:
        for p in problems:
            print(f"meshkit register: {p}", file=sys.stderr)
        print("See 'meshkit register --help'.", file=sys.stderr)
        return 2
    configure_logging(level=level, logger=logger, outputs=("stderr",))
    try:
        return asyncio.run(run_sidecar(cfg))
    except KeyboardInterrupt:
        return 130


# ---- meshkit services ---------------------------------------------------------------------

SERVICES_FLAGS = [
    Flag("endpoints", _str), Flag("prefix", _str), Flag("w", _choice("table", "json")),
    Flag("write-out", _choice("table", "json")), Flag("timeout", _seconds),
]


async def list_services(endpoints: Sequence[str], prefix: str, service: str | None,
                        timeout: float) -> list[dict[str, Any]]:  # noqa: ASYNC109
    """Every registered instance (of ``service``) with its lease's TTL left."""
    from meshkit.client import Client
    from meshkit.registry.model import InvalidValueError, instance_from_value, service_prefix

    base = (service_prefix(prefix, service) if service else prefix.rstrip("/")) + "/"
    async with Client(list(endpoints), timeout=timeout) as client:
        res = await client.get(base, prefix=True)
        rows: list[dict[str, Any]] = []
        ttl_cache: dict[int, int] = {}
        for kv in res.kvs:
            key = kv.key.decode("utf-8", "replace")
            try:
                inst = instance_from_value(prefix, key, kv.value)
            except InvalidValueError as e:
                rows.append({"key": key, "error": e.detail})
                continue
            if inst is None:
                continue
            if kv.lease and kv.lease not in ttl_cache:
                ttl_cache[kv.lease] = (await client.time_to_live(kv.lease)).ttl
            rows.append({
                "service": inst.service, "id": inst.instance_id, "addr": inst.addr,
                # The registrar writes a key only while its check passes.
                "health": "passing", "weight": inst.weight, "zone": inst.zone,
                "version": inst.version, "metadata": dict(inst.metadata),
                "lease": f"{kv.lease:x}" if kv.lease else "", "ttl": ttl_cache.get(kv.lease, -1)
                if kv.lease else None, "key": key,
            })
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    cols = ["SERVICE", "ID", "ADDR", "HEALTH", "WEIGHT", "ZONE", "VERSION", "TTL"]
    body = []
    for r in rows:
        if "error" in r:
            body.append(["?", r["key"], "", f"bad value: {r['error']}", "", "", "", ""])
            continue
        ttl = "-" if r["ttl"] is None else ("expired" if r["ttl"] < 0 else f"{r['ttl']}s")
        body.append([r["service"], r["id"], r["addr"], r["health"], str(r["weight"]), r["zone"],
                     r["version"], ttl])
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths, strict=True)).rstrip() for b in body]
    return "\n".join(lines)


def services_main(argv: Sequence[str] | None = None) -> int:
    """``meshkit services [NAME] [-w table|json] [--endpoints URLS] [--prefix P]``."""
    import os

    args = list(sys.argv[1:] if argv is None else argv)
    # Flags may come before or after NAME.
    positional = {i for i, a in enumerate(args)
                  if not a.startswith("-") and (i == 0 or not _takes_value(args[i - 1]))}
    names = [args[i] for i in sorted(positional)]
    rest = [a for i, a in enumerate(args) if i not in positional]
    try:
        parsed = FlagSet(SERVICES_FLAGS).parse(rest)
    except HelpRequested:
        print("Usage: meshkit services [NAME] [-w table|json] [--endpoints URLS] [--prefix PREFIX]")
        return 0
    except FlagError as e:
        print(f"meshkit services: {e}", file=sys.stderr)
        return 2
    if len(names) > 1:
        print(f"meshkit services: give at most one service name (got {' '.join(names)})", file=sys.stderr)
        return 2
    values = parsed.as_dict()
    fmt = values.get("w") or values.get("write-out") or "table"
    eps_text = values.get("endpoints") or os.environ.get("ETCDCTL_ENDPOINTS", "127.0.0.1:2379")
    endpoints = [e.strip() for e in eps_text.split(",") if e.strip()]
    from meshkit._internal.errors import MeshkitError

    try:
        rows = asyncio.run(list_services(endpoints, values.get("prefix", "meshkit/services"),
                                         names[0] if names else None, values.get("timeout", 5.0)))
    except MeshkitError as e:
        print(f"meshkit services: {e}", file=sys.stderr)
        return 1
    if fmt == "json":
        print(json.dumps(rows, indent=2, sort_keys=True))
    else:
        print(format_table(rows))
    return 0


def _takes_value(flag: str) -> bool:
    if not flag.startswith("-") or "=" in flag:
        return False
    return flag.lstrip("-") in {f.name for f in SERVICES_FLAGS}


if __name__ == "__main__":
    sys.exit(main())
