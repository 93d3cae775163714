"""``meshkit ctl``: the command tree, global flags, ``ETCDCTL_*`` variables and dispatch."""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from meshkit._internal.errors import AuthFailedError
from meshkit.client import Client
from meshkit.client.raw import RawAPI, RpcFailure
from meshkit.ctl.errors import (
    EXIT_BAD_ARGS,
    EXIT_BAD_CONNECTION,
    EXIT_BAD_FEATURE,
    EXIT_ERROR,
    CtlExit,
    rpc_text,
)
from meshkit.ctl.flags import Command, Opt, Parsed, UsageError, help_text, parse_flags
from meshkit.ctl.printer import FORMATS, Printer

VERSION = "3.4.23"
API_VERSION = "3.4"

GLOBAL_OPTS = [
    Opt("endpoints", "strings", ["127.0.0.1:2379"], "gRPC endpoints"),
    Opt("debug", "bool", False, "enable client-side debug logging"),
    Opt("write-out", "string", "simple", "set the output format (fields, json, protobuf, simple, table)", "w"),
    Opt("hex", "bool", False, "print byte strings as hex encoded strings"),
    Opt("dial-timeout", "duration", 2.0, "dial timeout for client connections"),
    Opt("command-timeout", "duration", 5.0, "timeout for short running command (excluding dial timeout)"),
    Opt("keepalive-time", "duration", 2.0, "keepalive time for client connections"),
    Opt("keepalive-timeout", "duration", 6.0, "keepalive timeout for client connections"),
    Opt("insecure-transport", "bool", True, "disable transport security for client connections"),
    Opt("insecure-discovery", "bool", True, "accept insecure SRV records describing cluster endpoints"),
    Opt("insecure-skip-tls-verify", "bool", False,
        "skip server certificate verification (CAUTION: this option should be enabled only for testing purposes)"),
    Opt("cert", "string", "", "identify secure client using this TLS certificate file"),
    Opt("key", "string", "", "identify secure client using this TLS key file"),
    Opt("cacert", "string", "", "verify certificates of TLS-enabled secure servers using this CA bundle"),
    Opt("user", "string", "", "username[:password] for authentication (prompt if password is not supplied)"),
    Opt("password", "string", "",
        "password for authentication (if this option is used, --user option shouldn't include password)"),
    Opt("discovery-srv", "string", "", "domain name to query for SRV records describing cluster endpoints", "d"),
    Opt("discovery-srv-name", "string", "", "service name to query when using DNS discovery"),
]

Runner = Callable[["Ctx", Parsed], Awaitable[int | None]]


class Ctx:
    """One invocation: parsed global values, the printer, and a lazily made client."""

    def __init__(self, cmd: Command, values: dict[str, Any], argv: Sequence[str]) -> None:
        self.cmd = cmd
        self.values = values
        self.argv = list(argv)
        fmt = values["write-out"]
        self.printer = Printer(fmt, hex=values["hex"])
        self._client: Client | None = None
        self._raw: RawAPI | None = None

    def g(self, name: str) -> Any:
        return self.values[name]

    @property
    def timeout(self) -> float:
        return float(self.values["command-timeout"])

    @property
    def endpoints(self) -> list[str]:
        return list(self.values["endpoints"])

    def client(self) -> Client:
        if self._client is None:
            if self.g("insecure-skip-tls-verify"):
                raise CtlExit(EXIT_BAD_FEATURE, "--insecure-skip-tls-verify is not implemented in meshkit ctl "
                                                "(grpcio cannot skip verification): give --cacert")
            if self.g("discovery-srv"):
                raise CtlExit(EXIT_BAD_FEATURE, "--discovery-srv is not implemented yet in meshkit ctl")
            user, password = self._credentials()
            self._client = dial(self, self.endpoints, cert=self.g("cert"), key=self.g("key"),
                                cacert=self.g("cacert"), insecure_transport=self.g("insecure-transport"),
                                user=user, password=password, error_code=EXIT_ERROR)
        return self._client

    def _credentials(self) -> tuple[str | None, str | None]:
        from meshkit.ctl.cmd_auth import credentials  # etcdctl 3.4's --user/--password rule

        return credentials(self.g("user") or "", self.g("password") or "")

    def raw(self) -> RawAPI:
        if self._raw is None:
            self._raw = RawAPI(self.client())
        return self._raw

    async def call(self, service: Any, method: str, req: Any, *, endpoint: str | None = None,
                   wrap: str | None = None, code: int = EXIT_ERROR, read: bool = False) -> Any:
        """One unary call; a failure exits like etcdctl (``wrap`` % error text, if given)."""
        try:
            return await self.raw().unary(service, method, req, endpoint=endpoint,
                                          timeout=self.timeout, retry_sent=read)
        except RpcFailure as e:
            text = rpc_text(e)
            if e.details == AuthFailedError.message:
                # etcdctl authenticates while dialing: a wrong password is a bad connection
                code = EXIT_BAD_CONNECTION
            raise CtlExit(code, wrap % text if wrap else text) from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


# ---------------------------------------------------------------- TLS


def dial(ctx: Ctx, endpoints: Sequence[str], *, cert: str, key: str, cacert: str,
         insecure_transport: bool, user: str | None = None, password: str | None = None,
         error_code: int = EXIT_BAD_CONNECTION) -> Client:
    """etcdctl's client from its TLS flags: a certificate or CA (or
    ``--insecure-transport=false``) means TLS to every endpoint."""
    if (cert or key) and not (cert and key):
        raise CtlExit(EXIT_BAD_ARGS, f"KeyFile and CertFile must both be present[key: {key}, cert: {cert}]")
    for path in (cert, key, cacert):
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as e:
                why = e.strerror or str(e)
                raise CtlExit(EXIT_BAD_ARGS, f"open {path}: {why[:1].lower()}{why[1:]}") from None
    eps = list(endpoints)
    if not insecure_transport and not (cert or cacert):
        # TLS with the system's roots: the https scheme tells the client so
        eps = [e if e.startswith("https://") else "https://" + e.removeprefix("http://") for e in eps]
    try:
        return Client(eps, timeout=ctx.timeout, dial_timeout=float(ctx.g("dial-timeout")),
                      user=user, password=password, ca_cert=cacert or None, cert=cert or None, key=key or None)
    except (ValueError, NotImplementedError) as e:
        raise CtlExit(error_code, str(e)) from None


# ---------------------------------------------------------------- env variables


def _capnslog(level: str, msg: str) -> str:
    ts = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")
    return f"{ts} {level} | pkg/flags: {msg}\n"


def apply_env(values: dict[str, Any], given: set[str], opts: Sequence[Opt]) -> None:
    """etcd's ``SetPflagsFromEnv("ETCDCTL", ...)``: variables fill flags not on the command line."""
    known: set[str] = set()
    for o in opts:
        key = "ETCDCTL_" + o.name.upper().replace("-", "_")
        known.add(key)
        val = os.environ.get(key)
        if val is None or val == "":
            continue
        if o.name in given:
            sys.stderr.write(_capnslog(
                "C", f'conflicting environment variable "{key}" is shadowed by corresponding '
                     "command-line flag (either unset environment variable or disable flag)"))
            raise CtlExit(EXIT_ERROR, None)
        try:
            values[o.name] = o.parse(val)
        except Exception as e:
            raise CtlExit(EXIT_BAD_ARGS, f"invalid value {val!r} for {key}: {e}") from None
    for k, v in sorted(os.environ.items()):
        if k.startswith("ETCDCTL_") and k not in known and k not in (
                "ETCDCTL_API", "ETCDCTL_WATCH_KEY", "ETCDCTL_WATCH_RANGE_END"):
            sys.stderr.write(_capnslog("W", f"unrecognized environment variable {k}={v}"))


# ---------------------------------------------------------------- the tree


def build_tree() -> Command:
    from meshkit.ctl.commands import register

    root = Command("etcdctl", "A simple command line client for etcd3.", use="etcdctl", opts=GLOBAL_OPTS)
    register(root)
    return root


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _find(root: Command, argv: Sequence[str]) -> tuple[Command, list[str]]:
    """cobra's Find: the command named by the leading non-flag words (prefix matching on)."""
    all_opts = {o.name: o for o in GLOBAL_OPTS}
    shorts = {o.short: o for o in GLOBAL_OPTS if o.short}

    def opts_of(c: Command) -> None:
        for o in c.opts:
            all_opts.setdefault(o.name, o)
            if o.short:
                shorts.setdefault(o.short, o)
        for s in c.subs:
            opts_of(s)

    opts_of(root)
    words: list[str] = []
    i = 0
    while i < len(argv):
        s = argv[i]
        i += 1
        if s == "--":
            break
        if s.startswith("--") and "=" not in s:
            o = all_opts.get(s[2:])
            if o is None or o.kind != "bool":
                i += 1
            continue
        if s.startswith("-") and "=" not in s and len(s) == 2:
            o = shorts.get(s[1:])
            if (o is None or o.kind != "bool") and s[1:] != "h":
                i += 1
            continue
        if s and not s.startswith("-"):
            words.append(s)
    cmd = root
    used: list[str] = []
    for w in words:
        sub = cmd.find_sub(w)
        if sub is None:
            matches = [c for c in cmd.subs if c.name.startswith(w)]
            sub = matches[0] if len(matches) == 1 else None
        if sub is None:
            break
        cmd = sub
        used.append(w)
    if cmd is root and words:
        typed = words[0]
        sugg = [c.name for c in sorted(root.subs, key=lambda c: c.name)
                if _levenshtein(typed, c.name) <= 2 or c.name.startswith(typed)]
        msg = f'unknown command "{typed}" for "etcdctl"'
        if sugg:
            msg += "\n\nDid you mean this?\n" + "".join(f"\t{s}\n" for s in sugg)
        raise _UnknownCommand(msg)
    rest = list(argv)
    for w in used:
        rest.remove(w)
    return cmd, rest


class _UnknownCommand(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    root = build_tree()
    try:
        cmd, rest = _find(root, args)
    except _UnknownCommand as e:
        sys.stderr.write(f"Error: {e}\nRun 'etcdctl --help' for usage.\nError: {e}\n")
        return EXIT_ERROR
    opts = [*GLOBAL_OPTS, *cmd.opts, cmd.help_opt()]
    try:
        parsed = parse_flags(rest, opts)
    except UsageError as e:
        sys.stderr.write(f"Error: {e}\n")
        sys.stdout.write(help_text(cmd, VERSION, API_VERSION))
        sys.stdout.flush()
        sys.stderr.write(f"\nError: {e}\n")
        return EXIT_ERROR
    if parsed.values.get("help") or cmd.run is None:
        sys.stdout.write(help_text(cmd, VERSION, API_VERSION))
        return 0
    values = {o.name: o.default for o in opts}
    given = set(parsed.values)
    values.update(parsed.values)
    try:
        apply_env(values, given, GLOBAL_OPTS)
        if values["write-out"] not in FORMATS:
            raise CtlExit(EXIT_BAD_FEATURE, "unsupported output format")
        parsed.values = values
        ctx = Ctx(cmd, values, args)
        run = cmd.run
        return asyncio.run(_run(ctx, run, parsed))
    except CtlExit as e:
        sys.stdout.flush()
        if e.message is not None:
            sys.stderr.write(f"Error: {e.message}\n")
        return e.code
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout.flush()


async def _run(ctx: Ctx, run: Runner, parsed: Parsed) -> int:
    try:
        rc = await run(ctx, parsed)
        return 0 if rc is None else rc
    finally:
        try:
            sys.stdout.buffer.flush()
        finally:
            await ctx.close()
