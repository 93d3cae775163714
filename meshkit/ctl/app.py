"""``meshkit ctl``: the command tree, global flags, ``ETCDCTL_*`` variables and dispatch."""

from __future__ import annotations

import asyncio
import datetime
import getpass
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from meshkit.client import Client
from meshkit.client.raw import RawAPI, RpcFailure
from meshkit.ctl.errors import EXIT_BAD_ARGS, EXIT_BAD_FEATURE, EXIT_ERROR, CtlExit, rpc_text
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
            if self.g("cert") or self.g("key") or self.g("cacert") or not self.g("insecure-transport"):
                raise CtlExit(EXIT_BAD_FEATURE, "TLS (--cacert/--cert/--key) is not implemented yet in meshkit ctl")
            if self.g("discovery-srv"):
                raise CtlExit(EXIT_BAD_FEATURE, "--discovery-srv is not implemented yet in meshkit ctl")
            user, password = self._credentials()
            try:
                self._client = Client(self.endpoints, timeout=self.timeout,
                                      dial_timeout=float(self.g("dial-timeout")),
                                      user=user, password=password)
            except (ValueError, NotImplementedError) as e:
                raise CtlExit(EXIT_ERROR, str(e)) from None
        return self._client

    def _credentials(self) -> tuple[str | None, str | None]:
        user = self.g("user")
        password = self.g("password")
        if not user:
            if password:
                raise CtlExit(EXIT_BAD_ARGS, "empty username")
            return None, None
        if password:
            if ":" in user:
                raise CtlExit(EXIT_BAD_ARGS, "If password is given with --password, username can't have colon")
            return user, password
        name, sep, pw = user.partition(":")
        if not sep:
            try:
                pw = getpass.getpass("Password: ")
            except (EOFError, OSError) as e:
                raise CtlExit(EXIT_BAD_ARGS, f"failed to read password: {e}") from None
        return name, pw

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
            raise CtlExit(code, wrap % text if wrap else text) from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


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
