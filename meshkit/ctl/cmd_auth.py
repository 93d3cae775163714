"""etcdctl 3.4's ``auth``, ``user`` and ``role`` commands over the raw Auth API.

What etcdctl 3.4.23 does, kept here (checked against the real binary by
``tests/tools/ctl/test_ctl_auth_diff.py``):

- Argument errors exit 128 with etcdctl's texts; server errors exit 1 with the
  server's text (``etcdserver: user name already exists``, ``... role name not found``,
  ``... permission denied``, ``... user name is empty``).
- ``auth enable`` answers ``root user does not have root role`` by adding the role
  ``root``, granting it to ``root`` and trying again; ``auth enable|disable`` print
  ``Authentication Enabled|Disabled`` in every output format.
- ``user add NAME`` and ``user passwd NAME`` ask twice on the terminal (speakeasy: the
  prompt on stdout, ``stty -echo`` on the inherited descriptors, one line read byte by
  byte from fd 0, spaces trimmed, a newline on stdout); ``--interactive=false`` reads
  one word with ``fmt.Scanf("%s")``. ``user add NAME:PASSWORD`` splits at the first
  colon; ``--new-user-password`` takes the argument as the name unsplit.
- Output formats: simple; json and protobuf (the response as sent); fields (the
  header, plus permissions for ``role get`` and names for ``role list``; not for
  ``user get`` / ``user list``); table is refused (exit 4) after the request was made.
- ``role grant-permission`` / ``revoke-permission``: an empty key means ``"\\x00"``
  (the whole key space with ``--prefix`` / ``--from-key``); ``--prefix`` takes
  ``GetPrefixRangeEnd(key)``, ``--from-key`` the range end ``"\\x00"``; a fourth
  argument (third for revoke) is the range end; further arguments are ignored.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from meshkit.api.authpb import auth_pb2
from meshkit.api.etcdserverpb import rpc_pb2
from meshkit.client.kv import prefix_end
from meshkit.client.raw import RpcFailure
from meshkit.ctl.errors import EXIT_BAD_ARGS, EXIT_ERROR, CtlExit, rpc_text
from meshkit.ctl.flags import Command, Opt, Parsed
from meshkit.ctl.gofmt import quote

if TYPE_CHECKING:
    from meshkit.ctl.app import Ctx

ROOT_ROLE_MISSING = "etcdserver: root user does not have root role"


def _b(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _name(s: str) -> str:
    """A name for a protobuf ``string`` field (which must be valid UTF-8 in Python)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise CtlExit(EXIT_BAD_ARGS, f"{quote(_b(s))} is not valid UTF-8 "
                                     "(meshkit ctl sends user and role names as UTF-8 text)") from None
    return s


# ---------------------------------------------------------------- reading passwords

# Go's unicode.IsSpace (what strings.TrimSpace and fmt's %s verb stop at)
_GO_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                      "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def go_trim_space(s: str) -> str:
    """``strings.TrimSpace``."""
    i, j = 0, len(s)
    while i < j and s[i] in _GO_SPACE:
        i += 1
    while j > i and s[j - 1] in _GO_SPACE:
        j -= 1
    return s[i:j]


def _read_byte() -> bytes:
    try:
        return os.read(0, 1)
    except OSError:
        return b""


class AskError(Exception):
    """speakeasy could not ask (no ``stty``, or it could not be started)."""


def _stty(path: str, arg: str) -> None:
    # speakeasy ForkExecs stty with our stdin, stdout and stderr
    subprocess.run(["stty", arg], executable=path, check=False)


def _echo_on(path: str) -> None:
    with contextlib.suppress(OSError):  # speakeasy ignores a failure to turn echo back on
        _stty(path, "echo")


def speakeasy_ask(prompt: str) -> str:
    """``speakeasy.Ask(prompt)`` as etcdctl 3.4 uses it for passwords.

    The prompt goes to stdout, ``stty -echo`` runs on our descriptors (on a pipe it
    complains on stderr, as under etcdctl), one line is read from fd 0 a byte at a
    time (so a second prompt reads the next line), ``stty echo`` restores the
    terminal, and a newline follows on stdout. A terminating signal meanwhile
    restores echo and exits 255, as speakeasy's handler does.
    """
    out = sys.stdout.buffer
    sys.stdout.flush()
    if prompt:
        out.write(_b(prompt))
        out.flush()
    try:
        return _get_password()
    finally:
        out.write(b"\n")
        out.flush()


def _get_password() -> str:
    path = shutil.which("stty")
    if path is None:
        raise AskError('stty binary not found:\n\texec: "stty": executable file not found in $PATH')
    sigs = [signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM]

    def on_signal(signum: int, frame: Any) -> None:
        _echo_on(path)
        sys.stdout.flush()
        os._exit(255)

    old = {s: signal.signal(s, on_signal) for s in sigs}
    try:
        try:
            _stty(path, "-echo")
        except OSError as e:
            raise AskError(f"failed turning off console echo for password entry:\n\t{(e.strerror or str(e)).lower()}") from None
        try:
            line = bytearray()
            while True:
                c = _read_byte()
                if not c or c == b"\n":
                    break
                line += c
        finally:
            _echo_on(path)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    text = bytes(line).decode("utf-8", "surrogateescape")
    text = text.removesuffix("\r")
    return go_trim_space(text)


def read_password_interactive(name: str) -> str:
    """etcdctl's ``readPasswordInteractive``: ask twice, refuse empty or different."""
    try:
        first = speakeasy_ask(f"Password of {name}: ")
    except AskError as e:
        raise CtlExit(EXIT_BAD_ARGS, f"failed to ask password: {e}") from None
    if not first:
        raise CtlExit(EXIT_BAD_ARGS, "empty password")
    try:
        second = speakeasy_ask(f"Type password of {name} again for confirmation: ")
    except AskError as e:
        raise CtlExit(EXIT_BAD_ARGS, f"failed to ask password: {e}") from None
    if first != second:
        raise CtlExit(EXIT_BAD_ARGS, "given passwords are different")
    return first


def scanf_word() -> str:
    """``fmt.Scanf("%s", &password)`` on stdin: one word; "" when a newline or EOF comes first."""
    dec = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    buf: list[str] = []

    def rune() -> str:  # the next character, "" at EOF
        while not buf:
            c = _read_byte()
            buf.extend(dec.decode(c, final=not c))
            if not c and not buf:
                return ""
        return buf.pop(0)

    r = rune()
    while True:  # SkipSpace, where a newline ("\n" or "\r\n") is an error
        if r in ("", "\n"):
            return ""
        if r == "\r":
            r = rune()
            if r == "\n":
                return ""
            continue
        if r in _GO_SPACE:
            r = rune()
            continue
        break
    word = [r]
    while True:
        r = rune()
        if not r or r in _GO_SPACE:
            return "".join(word)
        word.append(r)


def credentials(user: str, password: str) -> tuple[str | None, str | None]:
    """etcdctl 3.4's ``authCfgFromCmd``: ``--user NAME[:PASSWORD]`` and ``--password``.

    No user: no authentication (a ``--password`` alone is ignored). With
    ``--password`` the user is taken whole (a colon stays in the name). Without, the
    user splits at its first colon, and a user with no colon is asked ``Password: ``.
    An empty password means no authentication, as clientv3 only authenticates when
    both are set. (``meshkit.ctl.app.Ctx`` is where the global flags are read.)
    """
    if not user:
        return None, None
    if password:
        name, pw = user, password
    else:
        name, sep, pw = user.partition(":")
        if not sep:
            try:
                pw = speakeasy_ask("Password: ")
            except AskError as e:
                raise CtlExit(EXIT_ERROR, str(e)) from None
    if not name or not pw:
        return None, None
    return name, pw


# ---------------------------------------------------------------- auth


async def cmd_auth_enable(ctx: Ctx, p: Parsed) -> int:
    if p.args:
        raise CtlExit(EXIT_BAD_ARGS, "auth enable command does not accept any arguments")
    raw = ctx.raw()

    async def enable() -> None:
        # etcdctl's loop shares one command deadline; a server that keeps refusing ends there
        while True:
            try:
                await raw.unary("auth", "AuthEnable", rpc_pb2.AuthEnableRequest(), timeout=ctx.timeout)
                return
            except RpcFailure as e:
                if e.details != ROOT_ROLE_MISSING:
                    raise
            await raw.unary("auth", "RoleAdd", rpc_pb2.AuthRoleAddRequest(name="root"), timeout=ctx.timeout)
            await raw.unary("auth", "UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"),
                            timeout=ctx.timeout)

    try:
        async with asyncio.timeout(ctx.timeout):
            await enable()
    except RpcFailure as e:
        raise CtlExit(EXIT_ERROR, rpc_text(e)) from None
    except TimeoutError:
        raise CtlExit(EXIT_ERROR, "context deadline exceeded") from None
    ctx.printer.w("Authentication Enabled\n")
    return 0


async def cmd_auth_disable(ctx: Ctx, p: Parsed) -> int:
    if p.args:
        raise CtlExit(EXIT_BAD_ARGS, "auth disable command does not accept any arguments")
    await ctx.call("auth", "AuthDisable", rpc_pb2.AuthDisableRequest())
    ctx.printer.w("Authentication Disabled\n")
    return 0


# ---------------------------------------------------------------- user


async def cmd_user_add(ctx: Ctx, p: Parsed) -> int:
    v = p.values
    if len(p.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "user add command requires user name as its argument")
    arg = p.args[0]
    no_password = bool(v["no-password"])
    password = ""
    if no_password:
        user = arg
    elif v["new-user-password"]:
        user, password = arg, v["new-user-password"]
    else:
        user, sep, rest = arg.partition(":")
        if sep:
            password = rest
            if not user:
                raise CtlExit(EXIT_BAD_ARGS, "empty user name is not allowed")
        else:
            user = arg
            password = read_password_interactive(arg) if v["interactive"] else scanf_word()
    req = rpc_pb2.AuthUserAddRequest(name=_name(user), password=_name(password),
                                     options=auth_pb2.UserAddOptions(no_password=no_password))
    resp = await ctx.call("auth", "UserAdd", req)
    ctx.printer.user_add(user, resp)
    return 0


async def cmd_user_delete(ctx: Ctx, p: Parsed) -> int:
    if len(p.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "user delete command requires user name as its argument")
    name = p.args[0]
    resp = await ctx.call("auth", "UserDelete", rpc_pb2.AuthUserDeleteRequest(name=_name(name)))
    ctx.printer.user_delete(name, resp)
    return 0


async def cmd_user_get(ctx: Ctx, p: Parsed) -> int:
    if len(p.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "user get command requires user name as its argument")
    name = p.args[0]
    pr = ctx.printer
    resp = await ctx.call("auth", "UserGet", rpc_pb2.AuthUserGetRequest(name=_name(name)), read=True)
    if not p.values["detail"]:
        pr.user_get(name, resp)
        return 0
    pr.w(f"User: {name}\n")  # etcdctl prints these lines itself, in every format
    for role in resp.roles:
        pr.w("\n")
        r = await ctx.call("auth", "RoleGet", rpc_pb2.AuthRoleGetRequest(role=role), read=True)
        pr.role_get(role, r)
    return 0


async def cmd_user_list(ctx: Ctx, p: Parsed) -> int:
    if p.args:
        raise CtlExit(EXIT_BAD_ARGS, "user list command requires no arguments")
    resp = await ctx.call("auth", "UserList", rpc_pb2.AuthUserListRequest(), read=True)
    ctx.printer.user_list(resp)
    return 0


async def cmd_user_passwd(ctx: Ctx, p: Parsed) -> int:
    if len(p.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "user passwd command requires user name as its argument")
    name = p.args[0]
    password = read_password_interactive(name) if p.values["interactive"] else scanf_word()
    req = rpc_pb2.AuthUserChangePasswordRequest(name=_name(name), password=_name(password))
    resp = await ctx.call("auth", "UserChangePassword", req)
    ctx.printer.user_change_password(resp)
    return 0


async def cmd_user_grant_role(ctx: Ctx, p: Parsed) -> int:
    if len(p.args) != 2:
        raise CtlExit(EXIT_BAD_ARGS, "user grant command requires user name and role name as its argument")
    user, role = p.args
    resp = await ctx.call("auth", "UserGrantRole",
                          rpc_pb2.AuthUserGrantRoleRequest(user=_name(user), role=_name(role)))
    ctx.printer.user_grant_role(user, role, resp)
    return 0


async def cmd_user_revoke_role(ctx: Ctx, p: Parsed) -> int:
    if len(p.args) != 2:
        raise CtlExit(EXIT_BAD_ARGS, "user revoke-role requires user name and role name as its argument")
    user, role = p.args
    resp = await ctx.call("auth", "UserRevokeRole",
                          rpc_pb2.AuthUserRevokeRoleRequest(name=_name(user), role=_name(role)))
    ctx.printer.user_revoke_role(user, role, resp)
    return 0


# ---------------------------------------------------------------- role


async def cmd_role_add(ctx: Ctx, p: Parsed) -> int:
    if len(p.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "role add command requires role name as its argument")
    name = p.args[0]
    resp = await ctx.call("auth", "RoleAdd", rpc_pb2.AuthRoleAddRequest(name=_name(name)))
    ctx.printer.role_add(name, resp)
    return 0


async def cmd_role_delete(ctx: Ctx, p: Parsed) -> int:
    if len(p.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "role delete command requires role name as its argument")
    name = p.args[0]
    resp = await ctx.call("auth", "RoleDelete", rpc_pb2.AuthRoleDeleteRequest(role=_name(name)))
    ctx.printer.role_delete(name, resp)
    return 0


async def cmd_role_get(ctx: Ctx, p: Parsed) -> int:
    if len(p.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "role get command requires role name as its argument")
    name = p.args[0]
    resp = await ctx.call("auth", "RoleGet", rpc_pb2.AuthRoleGetRequest(role=_name(name)), read=True)
    ctx.printer.role_get(name, resp)
    return 0


async def cmd_role_list(ctx: Ctx, p: Parsed) -> int:
    if p.args:
        raise CtlExit(EXIT_BAD_ARGS, "role list command requires no arguments")
    resp = await ctx.call("auth", "RoleList", rpc_pb2.AuthRoleListRequest(), read=True)
    ctx.printer.role_list(resp)
    return 0


def perm_type(text: str) -> int:
    """``clientv3.StrToPermissionType``."""
    names = {"READ": auth_pb2.Permission.READ, "WRITE": auth_pb2.Permission.WRITE,
             "READWRITE": auth_pb2.Permission.READWRITE}
    t = names.get(text.upper())
    if t is None:
        raise CtlExit(EXIT_BAD_ARGS, f"invalid permission type: {text}")
    return int(t)


def perm_range(args: list[str], prefix: bool, from_key: bool) -> tuple[bytes, bytes]:
    """etcdctl's ``permRange``: (key, range_end) from ``<key> [endkey]`` and the flags."""
    key = _b(args[0])
    if not key:
        if prefix and from_key:
            raise CtlExit(EXIT_BAD_ARGS, "--from-key and --prefix flags are mutually exclusive")
        # the empty key means the whole key space from "\x00" (open ended with a flag)
        return b"\x00", (b"\x00" if prefix or from_key else b"")
    if len(args) == 1:
        if prefix:
            if from_key:
                raise CtlExit(EXIT_BAD_ARGS, "--from-key and --prefix flags are mutually exclusive")
            return key, prefix_end(key)
        if from_key:
            return key, b"\x00"
        return key, b""
    if prefix:
        raise CtlExit(EXIT_BAD_ARGS, "unexpected endkey argument with --prefix flag")
    if from_key:
        raise CtlExit(EXIT_BAD_ARGS, "unexpected endkey argument with --from-key flag")
    return key, _b(args[1])


async def cmd_role_grant_permission(ctx: Ctx, p: Parsed) -> int:
    args = p.args
    if len(args) < 3:
        raise CtlExit(EXIT_BAD_ARGS,
                      "role grant command requires role name, permission type, and key [endkey] as its argument")
    ptype = perm_type(args[1])
    key, end = perm_range(args[2:], p.values["prefix"], p.values["from-key"])
    req = rpc_pb2.AuthRoleGrantPermissionRequest(
        name=_name(args[0]), perm=auth_pb2.Permission(permType=ptype, key=key, range_end=end))  # type: ignore[arg-type]
    resp = await ctx.call("auth", "RoleGrantPermission", req)
    ctx.printer.role_grant_permission(args[0], resp)
    return 0


async def cmd_role_revoke_permission(ctx: Ctx, p: Parsed) -> int:
    args = p.args
    if len(args) < 2:
        raise CtlExit(EXIT_BAD_ARGS,
                      "role revoke-permission command requires role name and key [endkey] as its argument")
    key, end = perm_range(args[1:], p.values["prefix"], p.values["from-key"])
    req = rpc_pb2.AuthRoleRevokePermissionRequest(role=_name(args[0]), key=key, range_end=end)
    resp = await ctx.call("auth", "RoleRevokePermission", req)
    # etcdctl shows the key as typed (an empty key stays empty) with the range end it sent
    ctx.printer.role_revoke_permission(args[0], _b(args[1]), end, resp)
    return 0


# ---------------------------------------------------------------- the tree


def auth_commands() -> list[Command]:
    """The ``auth``, ``user`` and ``role`` command groups (registered by ``commands.register``)."""

    def c(name: str, short: str, run: Any, use: str = "", opts: list[Opt] | None = None) -> Command:
        return Command(name, short, use=use or name, opts=opts or [], run=run)

    def group(name: str, short: str, use: str, subs: list[Command]) -> Command:
        g = Command(name, short, use=use)
        g.add(*subs)
        return g

    perm_flags = {
        verb: [Opt("from-key", "bool", False,
                   f"{verb} a permission of keys that are greater than or equal to the given key using byte compare"),
               Opt("prefix", "bool", False, f"{verb} a prefix permission")]
        for verb in ("grant", "revoke")
    }
    return [
        group("auth", "Enable or disable authentication", "auth <enable or disable>", [
            c("enable", "Enables authentication", cmd_auth_enable),
            c("disable", "Disables authentication", cmd_auth_disable),
        ]),
        group("user", "User related commands", "user <subcommand>", [
            c("add", "Adds a new user", cmd_user_add, "add <user name or user:password> [options]", [
                Opt("interactive", "bool", True, "Read password from stdin instead of interactive terminal"),
                Opt("new-user-password", "string", "", "Supply password from the command line flag"),
                Opt("no-password", "bool", False, "Create a user without password (CN based auth only)"),
            ]),
            c("delete", "Deletes a user", cmd_user_delete, "delete <user name>"),
            c("get", "Gets detailed information of a user", cmd_user_get, "get <user name> [options]",
              [Opt("detail", "bool", False, "Show permissions of roles granted to the user")]),
            c("list", "Lists all users", cmd_user_list),
            c("passwd", "Changes password of user", cmd_user_passwd, "passwd <user name> [options]",
              [Opt("interactive", "bool", True, "If true, read password from stdin instead of interactive terminal")]),
            c("grant-role", "Grants a role to a user", cmd_user_grant_role, "grant-role <user name> <role name>"),
            c("revoke-role", "Revokes a role from a user", cmd_user_revoke_role,
              "revoke-role <user name> <role name>"),
        ]),
        group("role", "Role related commands", "role <subcommand>", [
            c("add", "Adds a new role", cmd_role_add, "add <role name>"),
            c("delete", "Deletes a role", cmd_role_delete, "delete <role name>"),
            c("get", "Gets detailed information of a role", cmd_role_get, "get <role name>"),
            c("list", "Lists all roles", cmd_role_list),
            c("grant-permission", "Grants a key to a role", cmd_role_grant_permission,
              "grant-permission [options] <role name> <permission type> <key> [endkey]", perm_flags["grant"]),
            c("revoke-permission", "Revokes a key from a role", cmd_role_revoke_permission,
              "revoke-permission <role name> <key> [endkey]", perm_flags["revoke"]),
        ]),
    ]
