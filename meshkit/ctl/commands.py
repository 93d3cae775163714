"""etcdctl 3.4's commands over the raw v3 API (``meshkit.client.raw``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

import grpc

from meshkit.api.etcdserverpb import rpc_pb2
from meshkit.client.kv import prefix_end
from meshkit.client.raw import RpcFailure
from meshkit.ctl.errors import (
    EXIT_BAD_ARGS,
    EXIT_BAD_CONNECTION,
    EXIT_BAD_FEATURE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_INVALID_INPUT,
    CtlExit,
    rpc_text,
)
from meshkit.ctl.flags import Command, Opt, Parsed, UsageError, go_parse_int, parse_flags
from meshkit.ctl.gofmt import duration, quote
from meshkit.ctl.printer import EpHashKV, EpHealth, EpStatus, Printer
from meshkit.ctl.txnparse import ParseError, argify, parse_compare

if TYPE_CHECKING:
    from meshkit.ctl.app import Ctx

_EOF: Any = getattr(grpc.aio, "EOF", None)


def enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def parse_hex_id(text: str) -> int:
    """``strconv.ParseInt(text, 16, 64)``; the error text etcdctl shows."""
    body = text[1:] if text[:1] in "+-" else text
    if not body or any(c not in "0123456789abcdefABCDEF" for c in body):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    v = int(text, 16)
    if not -(1 << 63) <= v < (1 << 63):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": value out of range')
    return v


def _argv_after(ctx: Ctx, word: str) -> list[str]:
    for i, a in enumerate(ctx.argv):
        if a == word:
            return ctx.argv[i + 1 :]
    return []


# ---------------------------------------------------------------- get / put / del


def _get_request(v: dict[str, Any], args: list[str]) -> rpc_pb2.RangeRequest:
    if len(args) == 0:
        raise CtlExit(EXIT_BAD_ARGS, "get command needs one argument as key and an optional argument as range_end")
    if v["prefix"] and v["from-key"]:
        raise CtlExit(EXIT_BAD_ARGS, "`--prefix` and `--from-key` cannot be set at the same time, choose one")
    req = rpc_pb2.RangeRequest(limit=v["limit"])
    cons = v["consistency"]
    if cons == "s":
        req.serializable = True
    elif cons != "l":
        raise CtlExit(EXIT_BAD_FEATURE, f"unknown consistency flag {quote(cons)}")
    key = args[0]
    if len(args) > 1:
        if v["prefix"] or v["from-key"]:
            raise CtlExit(EXIT_BAD_ARGS, "too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
        req.range_end = enc(args[1])
    if v["rev"] > 0:
        req.revision = v["rev"]
    order = v["order"].upper()
    orders = {"ASCEND": rpc_pb2.RangeRequest.ASCEND, "DESCEND": rpc_pb2.RangeRequest.DESCEND,
              "": rpc_pb2.RangeRequest.NONE}
    if order not in orders:
        raise CtlExit(EXIT_BAD_FEATURE, f"bad sort order {v['order']}")
    target = v["sort-by"].upper()
    targets = {"CREATE": rpc_pb2.RangeRequest.CREATE, "KEY": rpc_pb2.RangeRequest.KEY,
               "MODIFY": rpc_pb2.RangeRequest.MOD, "VALUE": rpc_pb2.RangeRequest.VALUE,
               "VERSION": rpc_pb2.RangeRequest.VERSION, "": rpc_pb2.RangeRequest.KEY}
    if target not in targets:
        raise CtlExit(EXIT_BAD_FEATURE, f"bad sort target {v['sort-by']}")
    req.sort_order = orders[order]
    req.sort_target = targets[target]
    if req.sort_target == rpc_pb2.RangeRequest.KEY and req.sort_order == rpc_pb2.RangeRequest.ASCEND:
        req.sort_order = rpc_pb2.RangeRequest.NONE
    kb = enc(key)
    if v["prefix"]:
        if not kb:
            kb, req.range_end = b"\x00", b"\x00"
        else:
            req.range_end = prefix_end(kb)
    if v["from-key"]:
        if not kb:
            kb = b"\x00"
        req.range_end = b"\x00"
    req.key = kb
    if v["keys-only"]:
        req.keys_only = True
    return req


async def cmd_get(ctx: Ctx, p: Parsed) -> int:
    v = p.values
    req = _get_request(v, p.args)
    pr = ctx.printer
    if v["print-value-only"]:
        if pr.fmt != "simple":
            raise CtlExit(EXIT_BAD_ARGS, "print-value-only is only for `--write-out=simple`")
        pr.value_only = True
    resp = await ctx.call("kv", "Range", req, read=True)
    pr.get(resp)
    return 0


def _read_stdin_all() -> bytes:
    return sys.stdin.buffer.read()


def _put_request(v: dict[str, Any], args: list[str], stdin_ok: bool = True) -> rpc_pb2.PutRequest:
    if len(args) == 0:
        raise CtlExit(EXIT_BAD_ARGS, "put command needs 1 argument and input from stdin or 2 arguments")
    if v["ignore-value"] and len(args) > 1:
        raise CtlExit(EXIT_BAD_ARGS, "put command needs only 1 argument when 'ignore-value' is set")
    value = b""
    if not v["ignore-value"]:
        if len(args) > 1:
            value = enc(args[1])
        else:
            data = _read_stdin_all() if stdin_ok else b""
            if not data:
                raise CtlExit(EXIT_BAD_ARGS, "put command needs 1 argument and input from stdin or 2 arguments")
            value = data
    try:
        lease = parse_hex_id(v["lease"])
    except ValueError as e:
        raise CtlExit(EXIT_BAD_ARGS, f"bad lease ID ({e}), expecting ID in Hex") from None
    return rpc_pb2.PutRequest(key=enc(args[0]), value=value, lease=lease, prev_kv=v["prev-kv"],
                              ignore_value=v["ignore-value"], ignore_lease=v["ignore-lease"])


async def cmd_put(ctx: Ctx, p: Parsed) -> int:
    req = _put_request(p.values, p.args)
    resp = await ctx.call("kv", "Put", req)
    ctx.printer.put(resp)
    return 0


def _del_request(v: dict[str, Any], args: list[str]) -> rpc_pb2.DeleteRangeRequest:
    if len(args) == 0 or len(args) > 2:
        raise CtlExit(EXIT_BAD_ARGS, "del command needs one argument as key and an optional argument as range_end")
    if v["prefix"] and v["from-key"]:
        raise CtlExit(EXIT_BAD_ARGS, "`--prefix` and `--from-key` cannot be set at the same time, choose one")
    req = rpc_pb2.DeleteRangeRequest()
    kb = enc(args[0])
    if len(args) > 1:
        if v["prefix"] or v["from-key"]:
            raise CtlExit(EXIT_BAD_ARGS, "too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
        req.range_end = enc(args[1])
    if v["prefix"]:
        if not kb:
            kb, req.range_end = b"\x00", b"\x00"
        else:
            req.range_end = prefix_end(kb)
    if v["prev-kv"]:
        req.prev_kv = True
    if v["from-key"]:
        if not kb:
            kb = b"\x00"
        req.range_end = b"\x00"
    req.key = kb
    return req


async def cmd_del(ctx: Ctx, p: Parsed) -> int:
    req = _del_request(p.values, p.args)
    resp = await ctx.call("kv", "DeleteRange", req)
    ctx.printer.delete(resp)
    return 0


async def cmd_compaction(ctx: Ctx, p: Parsed) -> int:
    if len(p.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "compaction command needs 1 argument")
    try:
        rev = go_parse_int(p.args[0])
    except Exception as e:
        raise CtlExit(EXIT_ERROR, str(e)) from None
    await ctx.call("kv", "Compact", rpc_pb2.CompactionRequest(revision=rev, physical=p.values["physical"]))
    sys.stdout.write(f"compacted revision {rev}\n")
    return 0


# ---------------------------------------------------------------- txn

GET_OPTS = [
    Opt("consistency", "string", "l", "Linearizable(l) or Serializable(s)"),
    Opt("order", "string", "", "Order of results; ASCEND or DESCEND (ASCEND by default)"),
    Opt("sort-by", "string", "", "Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION"),
    Opt("limit", "int", 0, "Maximum number of results"),
    Opt("prefix", "bool", False, "Get keys with matching prefix"),
    Opt("from-key", "bool", False, "Get keys that are greater than or equal to the given key using byte compare"),
    Opt("rev", "int", 0, "Specify the kv revision"),
    Opt("keys-only", "bool", False, "Get only the keys"),
    Opt("print-value-only", "bool", False, 'Only write values when using the "simple" output format'),
]
PUT_OPTS = [
    Opt("lease", "string", "0", "lease ID (in hexadecimal) to attach to the key"),
    Opt("prev-kv", "bool", False, "return the previous key-value pair before modification"),
    Opt("ignore-value", "bool", False, "updates the key using its current value"),
    Opt("ignore-lease", "bool", False, "updates the key using its current lease"),
]
DEL_OPTS = [
    Opt("prefix", "bool", False, "delete keys with matching prefix"),
    Opt("prev-kv", "bool", False, "return deleted key-value pairs"),
    Opt("from-key", "bool", False, "delete keys that are greater than or equal to the given key using byte compare"),
]


def _defaults(opts: list[Opt]) -> dict[str, Any]:
    return {o.name: o.default for o in opts}


def parse_request_line(line: str) -> rpc_pb2.RequestOp:
    args = argify(line)
    if len(args) < 2:
        raise ParseError(f"invalid txn compare request: {line}")
    kinds = {"put": PUT_OPTS, "get": GET_OPTS, "del": DEL_OPTS}
    name = args[0]
    if name not in kinds:
        raise ParseError(f"invalid txn request: {line}")
    try:
        parsed = parse_flags(args[1:], [*kinds[name], Opt("help", "bool", False, "", "h")])
    except UsageError:
        sys.stderr.write(cobra_usage(name, kinds[name]) + "\n")
        raise ParseError(f"invalid txn request: {line}") from None
    v = _defaults(kinds[name])
    v.update(parsed.values)
    if name == "put":
        return rpc_pb2.RequestOp(request_put=_put_request(v, parsed.args, stdin_ok=False))
    if name == "get":
        return rpc_pb2.RequestOp(request_range=_get_request(v, parsed.args))
    return rpc_pb2.RequestOp(request_delete_range=_del_request(v, parsed.args))


_USES = {"get": "get [options] <key> [range_end]", "del": "del [options] <key> [range_end]",
         "put": "put [options] <key> <value> (<value> can also be given from stdin)"}


def cobra_usage(name: str, opts: list[Opt]) -> str:
    """cobra's default usage text (etcdctl shows it for a bad flag in a txn request line)."""
    rows = []
    for o in sorted([*opts, Opt("help", "bool", False, f"help for {name}", "h")], key=lambda x: x.name):
        head = f"  -{o.short}, --{o.name}" if o.short else f"      --{o.name}"
        if o.kind != "bool":
            head += " " + {"int": "int", "string": "string"}.get(o.kind, o.kind)
        usage = o.usage
        if o.kind == "string" and o.default:
            usage += f' (default "{o.default}")'
        elif o.kind == "int" and o.default:
            usage += f" (default {o.default})"
        rows.append((head, usage))
    width = max(len(h) for h, _ in rows) + 1
    flags = "\n".join(f"{h} {' ' * (width - len(h))} {u}".rstrip() for h, u in rows)
    return f"Usage:\n   {_USES[name]} [flags]\n\nFlags:\n{flags}\n"


class _Lines:
    """bufio.Reader.ReadString('\\n') over stdin: a last line without newline is an EOF error."""

    def __init__(self) -> None:
        self.stream = sys.stdin.buffer

    def read(self) -> str:
        data = self.stream.readline()
        if not data.endswith(b"\n"):
            raise CtlExit(EXIT_INVALID_INPUT, "EOF")
        return data.decode("utf-8", "surrogateescape")


async def cmd_txn(ctx: Ctx, p: Parsed) -> int:
    interactive = p.values["interactive"]
    if p.args:
        raise CtlExit(EXIT_BAD_ARGS, "txn command does not accept argument")
    reader = _Lines()
    txn = rpc_pb2.TxnRequest()

    def prompt(s: str) -> None:
        if interactive:
            sys.stdout.write(s + "\n")
            sys.stdout.flush()

    prompt("compares:")
    while True:
        line = reader.read().strip()
        if not line:
            break
        try:
            txn.compare.append(parse_compare(line))
        except ParseError as e:
            raise CtlExit(EXIT_INVALID_INPUT, str(e)) from None
    for label, target in (("success requests (get, put, del):", txn.success),
                          ("failure requests (get, put, del):", txn.failure)):
        prompt(label)
        while True:
            line = reader.read().strip()
            if not line:
                break
            try:
                target.append(parse_request_line(line))
            except ParseError as e:
                raise CtlExit(EXIT_INVALID_INPUT, str(e)) from None
    resp = await ctx.call("kv", "Txn", txn)
    ctx.printer.txn(resp)
    return 0


# ---------------------------------------------------------------- watch

_BAD_NUM = "bad number of arguments"
_BAD_ENV = "bad number of arguments (found conflicting environment key)"
_BAD_SEP = "bad number of arguments (found separator --, but no commands)"


def _watch_request(v: dict[str, Any], args: list[str]) -> rpc_pb2.WatchCreateRequest:
    if len(args) < 1:
        raise ValueError(_BAD_NUM)
    kb = enc(args[0])
    req = rpc_pb2.WatchCreateRequest(start_revision=v["rev"], prev_kv=v["prev-kv"])
    if len(args) == 2:
        if v["prefix"]:
            raise ValueError("`range_end` and `--prefix` are mutually exclusive")
        req.range_end = enc(args[1])
    if v["prefix"]:
        if not kb:
            kb, req.range_end = b"\x00", b"\x00"
        else:
            req.range_end = prefix_end(kb)
    req.key = kb
    return req


class WatchStream:
    """One Watch stream carrying the watches of this invocation (clientv3's watcher)."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.call: Any = None
        self.lock = asyncio.Lock()

    async def open(self) -> None:
        try:
            self.call = await self.ctx.raw().stream("watch", "Watch", timeout=self.ctx.timeout)
        except RpcFailure as e:
            raise CtlExit(EXIT_ERROR, rpc_text(e)) from None

    async def create(self, req: rpc_pb2.WatchCreateRequest) -> None:
        await self.call.write(rpc_pb2.WatchRequest(create_request=req))


async def _run_exec(exec_args: list[str], resp: rpc_pb2.WatchResponse, ev: Any) -> None:
    env = dict(os.environ)
    env["ETCD_WATCH_REVISION"] = str(resp.header.revision)
    env["ETCD_WATCH_EVENT_TYPE"] = '"' + ("PUT" if ev.type == 0 else "DELETE") + '"'
    env["ETCD_WATCH_KEY"] = quote(ev.kv.key)
    env["ETCD_WATCH_VALUE"] = quote(ev.kv.value)
    sys.stdout.flush()
    try:
        proc = await asyncio.create_subprocess_exec(*exec_args, env=env)
        rc = await proc.wait()
    except OSError as e:
        sys.stderr.write(f"command {_go_strs(exec_args)} error (exec: {quote(exec_args[0])}: {e.strerror})\n")
        raise CtlExit(EXIT_ERROR, None) from None
    if rc != 0:
        sys.stderr.write(f"command {_go_strs(exec_args)} error (exit status {rc})\n")
        raise CtlExit(EXIT_ERROR, None)


def _go_strs(items: list[str]) -> str:
    return "[" + " ".join(quote(enc(x)) for x in items) + "]"


async def _pump_watch(ws: WatchStream, pr: Printer, routes: dict[int, list[str]],
                      pending: list[list[str]]) -> None:
    """Read the stream; print each response with events (or a cancel) like printWatchCh."""
    while True:
        try:
            resp = await ws.call.read()
        except grpc.aio.AioRpcError as e:
            raise CtlExit(EXIT_INTERRUPTED, "watch is canceled by the server") from e
        if resp is _EOF:
            raise CtlExit(EXIT_INTERRUPTED, "watch is canceled by the server")
        if resp.created and not resp.canceled:
            if pending:
                routes[resp.watch_id] = pending.pop(0)
            if not resp.events:
                continue
        exec_args = routes.get(resp.watch_id, [])
        if resp.canceled:
            if resp.compact_revision:
                why = "etcdserver: mvcc: required revision has been compacted"
            elif resp.cancel_reason:
                why = resp.cancel_reason
            else:
                why = "etcdserver: mvcc: required revision is a future revision"
            if resp.created and pending:
                pending.pop(0)
            sys.stdout.flush()
            sys.stderr.write(f"watch was canceled ({why})\n")
        if not resp.events and not resp.canceled:
            continue  # progress notifications are not shown by etcdctl 3.4
        pr.watch(resp)
        sys.stdout.flush()
        for ev in resp.events if exec_args else []:
            await _run_exec(exec_args, resp, ev)
        if resp.canceled:
            routes.pop(resp.watch_id, None)
            if not routes and not pending:
                raise CtlExit(EXIT_INTERRUPTED, "watch is canceled by the server")


def _split_exec(raw: list[str], env_key: str, args: list[str]) -> tuple[list[str], list[str]]:
    """etcdctl's parseWatchArgs (non-interactive)."""
    exec_exist = "--" in raw
    exec_idx = raw.index("--") if exec_exist else -1
    if exec_exist and exec_idx == len(raw) - 1:
        raise CtlExit(EXIT_BAD_ARGS, _BAD_SEP)
    if not exec_exist and len(raw) < 1 and not env_key:
        raise CtlExit(EXIT_BAD_ARGS, _BAD_NUM)
    if not exec_exist and args and env_key:
        raise CtlExit(EXIT_BAD_ARGS, _BAD_ENV)
    exec_args = raw[exec_idx + 1 :] if exec_exist else []
    watch_args = list(args)
    if env_key:
        ranges = [env_key]
        if os.environ.get("ETCDCTL_WATCH_RANGE_END"):
            ranges.append(os.environ["ETCDCTL_WATCH_RANGE_END"])
        watch_args = ranges + watch_args
    if exec_exist:
        watch_args = watch_args[: len(watch_args) - len(exec_args)]
    return watch_args, exec_args


async def cmd_watch(ctx: Ctx, p: Parsed) -> int:
    env_key = os.environ.get("ETCDCTL_WATCH_KEY", "")
    env_range = os.environ.get("ETCDCTL_WATCH_RANGE_END", "")
    if not env_key and env_range:
        raise CtlExit(EXIT_BAD_ARGS, f"ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={quote(enc(env_range))}")
    pr = ctx.printer
    if p.values["interactive"]:
        return await _watch_interactive(ctx, env_key)
    raw = _argv_after(ctx, "watch")
    watch_args, exec_args = _split_exec(raw, env_key, p.args)
    try:
        req = _watch_request(p.values, watch_args)
    except ValueError as e:
        raise CtlExit(EXIT_BAD_ARGS, str(e)) from None
    ws = WatchStream(ctx)
    await ws.open()
    await ws.create(req)
    await _pump_watch(ws, pr, {}, [exec_args])
    return 0


async def _watch_interactive(ctx: Ctx, env_key: str) -> int:
    ws = WatchStream(ctx)
    await ws.open()
    routes: dict[int, list[str]] = {}
    pending: list[list[str]] = []
    loop = asyncio.get_running_loop()
    pump = asyncio.create_task(_pump_watch(ws, ctx.printer, routes, pending))
    try:
        while True:
            read = loop.run_in_executor(None, sys.stdin.buffer.readline)
            done, _ = await asyncio.wait({pump, read}, return_when=asyncio.FIRST_COMPLETED)
            if pump in done:
                pump.result()
            data = await read
            if not data.endswith(b"\n"):
                raise CtlExit(EXIT_INVALID_INPUT, "Error reading watch request line: EOF")
            line = data[:-1].decode("utf-8", "surrogateescape")
            try:
                args = argify(line)
            except ParseError as e:
                raise CtlExit(EXIT_INVALID_INPUT, str(e)) from None
            if not args or args[0] != "watch":
                sys.stderr.write(f"Invalid command {line} (only support watch)\n")
                continue
            if len(args) < 2 and not env_key:
                sys.stderr.write(f"Invalid command {line} (command type or key is not provided)\n")
                continue
            wargs = args[1:]
            if "--" in wargs and wargs.index("--") == len(wargs) - 1:
                raise CtlExit(EXIT_BAD_ARGS, _BAD_SEP)
            try:
                parsed = parse_flags(wargs, WATCH_OPTS)
            except UsageError as e:
                raise CtlExit(EXIT_BAD_ARGS, str(e)) from None
            v = _defaults(WATCH_OPTS)
            v.update(parsed.values)
            exec_args = wargs[wargs.index("--") + 1 :] if "--" in wargs else []
            pargs = parsed.args[: len(parsed.args) - len(exec_args)] if exec_args else parsed.args
            if env_key:
                pargs = [env_key, *([os.environ["ETCDCTL_WATCH_RANGE_END"]] if os.environ.get("ETCDCTL_WATCH_RANGE_END") else []), *pargs]
            try:
                req = _watch_request(v, pargs)
            except ValueError as e:
                sys.stderr.write(f"Invalid command {line} ({e})\n")
                continue
            pending.append(exec_args)
            await ws.create(req)
    finally:
        pump.cancel()
        with contextlib.suppress(BaseException):
            await pump


WATCH_OPTS = [
    Opt("interactive", "bool", False, "Interactive mode", "i"),
    Opt("prefix", "bool", False, "Watch on a prefix if prefix is set"),
    Opt("rev", "int", 0, "Revision to start watching"),
    Opt("prev-kv", "bool", False, "get the previous key-value pair before the event happens"),
]


# ---------------------------------------------------------------- lease


async def cmd_lease_grant(ctx: Ctx, p: Parsed) -> int:
    if len(p.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "lease grant command needs TTL argument")
    try:
        ttl = go_parse_int(p.args[0])
    except Exception as e:
        raise CtlExit(EXIT_BAD_ARGS, f"bad TTL ({e})") from None
    resp = await ctx.call("lease", "LeaseGrant", rpc_pb2.LeaseGrantRequest(TTL=ttl),
                          wrap="failed to grant lease (%s)")
    if resp.error:
        raise CtlExit(EXIT_ERROR, f"failed to grant lease ({resp.error})")
    ctx.printer.grant(resp)
    return 0


def _lease_arg(p: Parsed, need: str) -> int:
    if len(p.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, need)
    try:
        return parse_hex_id(p.args[0])
    except ValueError as e:
        raise CtlExit(EXIT_BAD_ARGS, f"bad lease ID arg ({e}), expecting ID in Hex") from None


async def cmd_lease_revoke(ctx: Ctx, p: Parsed) -> int:
    lid = _lease_arg(p, "lease revoke command needs 1 argument")
    resp = await ctx.call("lease", "LeaseRevoke", rpc_pb2.LeaseRevokeRequest(ID=lid),
                          wrap="failed to revoke lease (%s)")
    ctx.printer.revoke(lid, resp)
    return 0


async def cmd_lease_timetolive(ctx: Ctx, p: Parsed) -> int:
    lid = _lease_arg(p, "lease timetolive command needs lease ID as argument")
    resp = await ctx.call("lease", "LeaseTimeToLive",
                          rpc_pb2.LeaseTimeToLiveRequest(ID=lid, keys=p.values["keys"]),
                          wrap="failed to get TTL of lease (%s)", read=True)
    ctx.printer.time_to_live(resp, p.values["keys"])
    return 0


async def cmd_lease_list(ctx: Ctx, p: Parsed) -> int:
    resp = await ctx.call("lease", "LeaseLeases", rpc_pb2.LeaseLeasesRequest(),
                          wrap="failed to list leases (%s)", read=True)
    ctx.printer.leases(resp)
    return 0


async def cmd_lease_keepalive(ctx: Ctx, p: Parsed) -> int:
    lid = _lease_arg(p, "lease keep-alive command needs lease ID as argument")
    pr = ctx.printer
    raw = ctx.raw()
    try:
        call = await raw.stream("lease", "LeaseKeepAlive", timeout=ctx.timeout)
    except RpcFailure as e:
        raise CtlExit(EXIT_BAD_CONNECTION, rpc_text(e)) from None
    once = p.values["once"]
    try:
        while True:
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lid))
            try:
                resp = await asyncio.wait_for(call.read(), ctx.timeout)
            except TimeoutError:
                raise CtlExit(EXIT_BAD_CONNECTION, "context deadline exceeded") from None
            if resp is _EOF:
                raise CtlExit(EXIT_BAD_CONNECTION, "rpc error: code = Canceled desc = stream closed")
            if resp.TTL <= 0:
                if once:
                    raise CtlExit(EXIT_BAD_CONNECTION, "etcdserver: requested lease not found")
                if pr.fmt == "simple":
                    sys.stdout.write(f"lease {lid & (2**64 - 1):016x} expired or revoked.\n")
                return 0
            pr.keep_alive(resp)
            sys.stdout.flush()
            if once:
                return 0
            await asyncio.sleep(max(resp.TTL / 3.0, 0.5))
    except grpc.aio.AioRpcError as e:
        raise CtlExit(EXIT_BAD_CONNECTION, rpc_text(RpcFailure(e.code(), e.details() or ""))) from None
    finally:
        call.cancel()


# ---------------------------------------------------------------- cluster / maintenance


async def cmd_member_list(ctx: Ctx, p: Parsed) -> int:
    resp = await ctx.call("cluster", "MemberList", rpc_pb2.MemberListRequest(), read=True)
    ctx.printer.member_list(resp)
    return 0


async def _cluster_endpoints(ctx: Ctx, p: Parsed) -> list[str]:
    if not p.values.get("cluster"):
        return ctx.endpoints
    resp = await ctx.call("cluster", "MemberList", rpc_pb2.MemberListRequest(), read=True)
    eps: list[str] = []
    for m in resp.members:
        eps.extend(m.clientURLs)
    return eps


async def _each_endpoint(ctx: Ctx, eps: list[str], service: Any, method: str, req: Any) -> list[tuple[str, Any]]:
    from meshkit.client import Client
    from meshkit.client.raw import RawAPI

    out = []
    for ep in eps:
        client = Client([ep], timeout=ctx.timeout, dial_timeout=float(ctx.g("dial-timeout")))
        try:
            try:
                resp = await RawAPI(client).unary(service, method, req, timeout=ctx.timeout,
                                                  retry_sent=True)
            except RpcFailure as e:
                sys.stderr.write(f"Failed to get the status of endpoint {ep} ({rpc_text(e)})\n")
                continue
            out.append((ep, resp))
        finally:
            await client.close()
    return out


async def cmd_endpoint_status(ctx: Ctx, p: Parsed) -> int:
    eps = await _cluster_endpoints(ctx, p)
    got = await _each_endpoint(ctx, eps, "maintenance", "Status", rpc_pb2.StatusRequest())
    ctx.printer.endpoint_status([EpStatus(ep, r) for ep, r in got])
    if len(got) != len(eps):
        raise CtlExit(EXIT_ERROR, None)
    return 0


async def cmd_endpoint_hashkv(ctx: Ctx, p: Parsed) -> int:
    eps = await _cluster_endpoints(ctx, p)
    got = await _each_endpoint(ctx, eps, "maintenance", "HashKV", rpc_pb2.HashKVRequest(revision=p.values["rev"]))
    ctx.printer.endpoint_hashkv([EpHashKV(ep, r) for ep, r in got])
    if len(got) != len(eps):
        raise CtlExit(EXIT_ERROR, None)
    return 0


async def cmd_endpoint_health(ctx: Ctx, p: Parsed) -> int:
    from meshkit.client import Client
    from meshkit.client.raw import RawAPI

    eps = await _cluster_endpoints(ctx, p)

    async def check(ep: str) -> EpHealth:
        client = Client([ep], timeout=ctx.timeout, dial_timeout=float(ctx.g("dial-timeout")),
                        user=None, password=None)
        started = time.monotonic()
        try:
            raw = RawAPI(client)
            # etcdctl's probe: a linearized Get of "health"; a permission error still means healthy
            try:
                await raw.unary("kv", "Range", rpc_pb2.RangeRequest(key=b"health"), timeout=ctx.timeout,
                                retry_sent=True)
                err = ""
            except RpcFailure as e:
                err = "" if "permission denied" in e.details else rpc_text(e)
            took = duration(time.monotonic() - started)
            if not err:
                alarms = await raw.unary("maintenance", "Alarm", rpc_pb2.AlarmRequest(), timeout=ctx.timeout)
                if alarms.alarms:
                    names = {1: "NOSPACE", 2: "CORRUPT"}
                    err = "Active Alarm(s): " + ", ".join(names.get(a.alarm, str(a.alarm)) for a in alarms.alarms)
            return EpHealth(ep, not err, took, err)
        except RpcFailure as e:
            return EpHealth(ep, False, duration(time.monotonic() - started), rpc_text(e))
        finally:
            await client.close()

    hs = await asyncio.gather(*(check(ep) for ep in eps))
    ctx.printer.endpoint_health(list(hs))
    if any(not h.health for h in hs):
        raise CtlExit(EXIT_ERROR, "unhealthy cluster")
    return 0


async def cmd_alarm_list(ctx: Ctx, p: Parsed) -> int:
    resp = await ctx.call("maintenance", "Alarm", rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET))
    ctx.printer.alarm(resp)
    return 0


async def cmd_alarm_disarm(ctx: Ctx, p: Parsed) -> int:
    resp = await ctx.call("maintenance", "Alarm", rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET))
    out = rpc_pb2.AlarmResponse(header=resp.header)
    for a in resp.alarms:
        r = await ctx.call("maintenance", "Alarm", rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=a.memberID, alarm=a.alarm))
        out.header.CopyFrom(r.header)
        out.alarms.extend(r.alarms)
    ctx.printer.alarm(out if resp.alarms else resp)
    return 0


async def cmd_version(ctx: Ctx, p: Parsed) -> int:
    sys.stdout.write("etcdctl version: 3.4.23\nAPI version: 3.4\n")
    return 0


# ---------------------------------------------------------------- lock / elect
#
# etcdctl 3.4's lock_command.go and elect_command.go: the session keeps its lease
# (TTL --ttl for lock, 60 s for elect) and is left to expire, not revoked; SIGINT and
# SIGTERM end the wait (unlock / resign and exit 0, or "context canceled" while still
# waiting); the held key is shown with the get printer.

_GO_SIGNAL_NAMES = {
    1: "hangup", 2: "interrupt", 3: "quit", 4: "illegal instruction", 5: "trace/breakpoint trap",
    6: "aborted", 7: "bus error", 8: "floating point exception", 9: "killed",
    10: "user defined signal 1", 11: "segmentation fault", 12: "user defined signal 2",
    13: "broken pipe", 14: "alarm clock", 15: "terminated",
}


def _typed_error_text(e: BaseException) -> str:
    """What etcdctl shows for a failure of the typed client (sessions, locks, elections)."""
    from meshkit._internal.errors import EtcdError

    if isinstance(e, EtcdError):
        return str(e)
    return "context deadline exceeded"  # no endpoint, connection lost, deadline passed


async def _open_session(ctx: Ctx, ttl: int) -> Any:
    from meshkit._internal.errors import MeshkitError
    from meshkit.concurrency.session import Session

    # concurrency.WithTTL ignores a TTL <= 0 (the default, 60 s, stays)
    s = Session(ctx.client(), ttl=ttl if ttl > 0 else 60)
    try:
        await s.open()
    except MeshkitError as e:
        raise CtlExit(EXIT_ERROR, _typed_error_text(e)) from None
    s.orphan()  # etcdctl never closes its session: the lease runs out its TTL
    return s


async def _until_first(*aws: Any) -> set[asyncio.Task[Any]]:
    """Run the awaitables as tasks; cancel the rest when one ends; return the finished ones."""
    tasks = {asyncio.ensure_future(a) for a in aws}
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()
        with contextlib.suppress(BaseException):
            await t
    return done


def _show(pr: Printer, resp: rpc_pb2.RangeResponse) -> None:
    """``display.Get`` at once (stdout is read while we keep running). etcdctl 3.4.23's
    printPB is ``fmt.Print``: the bytes as they are, a ``%`` in an id included."""
    if pr.fmt == "protobuf":
        pr.w(resp.SerializeToString())
    else:
        pr.get(resp)
    sys.stdout.flush()


async def _get_key(ctx: Ctx, key: bytes) -> rpc_pb2.RangeResponse:
    try:
        return await ctx.raw().unary("kv", "Range", rpc_pb2.RangeRequest(key=key), timeout=ctx.timeout)
    except RpcFailure as e:
        raise CtlExit(EXIT_ERROR, rpc_text(e)) from None


async def _run_with_lock(argv: list[str], key: bytes, rev: int) -> str | None:
    """``exec.Command(argv...).Run()`` with ETCD_LOCK_KEY/REV; None on success, else Go's error text."""
    import shutil

    name = argv[0]
    path: str | None = name
    if "/" not in name:
        path = shutil.which(name) if name else None
        if path is None:
            return f"exec: {quote(enc(name))}: executable file not found in $PATH"
    # etcdctl puts the lock variables first and os.Environ() after: the environment wins
    env = {"ETCD_LOCK_KEY": key.decode("utf-8", "surrogateescape"), "ETCD_LOCK_REV": str(rev), **os.environ}
    sys.stdout.flush()
    try:
        proc = await asyncio.create_subprocess_exec(*argv, executable=path, env=env)
    except OSError as e:
        return f"fork/exec {path}: {(e.strerror or str(e)).lower()}"
    rc = await proc.wait()
    if rc > 0:
        return f"exit status {rc}"
    if rc < 0:
        return f"signal: {_GO_SIGNAL_NAMES.get(-rc, f'signal {-rc}')}"
    return None


async def cmd_lock(ctx: Ctx, p: Parsed) -> int:
    from meshkit._internal.errors import MeshkitError
    from meshkit.concurrency.mutex import Mutex

    if len(p.args) == 0:
        raise CtlExit(EXIT_BAD_ARGS, "lock takes a lock name argument and an optional command to execute")
    s = await _open_session(ctx, p.values["ttl"])
    stop = _signal_event()
    try:
        m = Mutex(s, enc(p.args[0]))
        locking = asyncio.ensure_future(m.lock())
        if locking not in await _until_first(locking, stop.wait()):
            raise CtlExit(EXIT_ERROR, "context canceled")  # m.lock() took its key out of the queue
        locking.result()
        assert m.header is not None
        if len(p.args) > 1:
            failed = await _run_with_lock(p.args[1:], m.key, m.header.revision)
            try:
                await m.unlock()
            except MeshkitError as e:  # the command's own failure is the one reported
                failed = failed or _typed_error_text(e)
            if failed:
                raise CtlExit(EXIT_ERROR, failed)
            return 0
        resp = await _get_key(ctx, m.key)
        if not resp.kvs:
            raise CtlExit(EXIT_ERROR, "lock lost on init")
        _show(ctx.printer, resp)
        if not stop.is_set():
            await _until_first(stop.wait(), s.lost.wait())
        if not stop.is_set():
            raise CtlExit(EXIT_ERROR, "session expired")
        await m.unlock()
        return 0
    except MeshkitError as e:
        raise CtlExit(EXIT_ERROR, _typed_error_text(e)) from None
    except RpcFailure as e:
        raise CtlExit(EXIT_ERROR, rpc_text(e)) from None
    finally:
        await s.close()


def _signal_event() -> asyncio.Event:
    ev = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, ev.set)
    return ev


def _pb_header(h: Any) -> rpc_pb2.ResponseHeader:
    return rpc_pb2.ResponseHeader(cluster_id=h.cluster_id, member_id=h.member_id, revision=h.revision,
                                  raft_term=h.raft_term)


def _pb_kv(kv: Any) -> Any:
    from meshkit.api.mvccpb import kv_pb2

    return kv_pb2.KeyValue(key=kv.key, create_revision=kv.create_revision, mod_revision=kv.mod_revision,
                           version=kv.version, value=kv.value, lease=kv.lease)


async def _observe(ctx: Ctx, prefix: bytes) -> None:
    """clientv3's ``Election.Observe`` as etcdctl prints it: the leader (a Get's header, or
    the watch's with the put's revision), each value it proclaims, then the next leader.
    Returns when a watch ends (the observer is lost)."""
    from meshkit.client import EventType

    raw, client, pr = ctx.raw(), ctx.client(), ctx.printer
    end = prefix_end(prefix)
    first = rpc_pb2.RangeRequest(key=prefix, range_end=end, limit=1, sort_order=rpc_pb2.RangeRequest.ASCEND,
                                 sort_target=rpc_pb2.RangeRequest.CREATE)
    while True:
        resp = await raw.unary("kv", "Range", first, timeout=ctx.timeout)
        hdr: rpc_pb2.ResponseHeader | None = None
        kv: Any = None
        if resp.kvs:
            hdr, kv = resp.header, resp.kvs[0]
        else:
            async with client.watch(prefix, end, start_revision=resp.header.revision) as w:
                async for wr in w:
                    puts = [ev.kv for ev in wr.events if ev.type == EventType.PUT]
                    if puts:
                        hdr, kv = _pb_header(wr.header), _pb_kv(puts[0])
                        hdr.revision = kv.mod_revision
                        break
            if hdr is None:
                return
        _show(pr, rpc_pb2.RangeResponse(header=hdr, kvs=[kv]))
        deleted = False
        async with client.watch(kv.key, start_revision=hdr.revision + 1) as w:
            async for wr in w:
                for ev in wr.events:
                    if ev.type == EventType.DELETE:
                        deleted = True
                        break
                    # clientv3 reuses the first Get's response here (its count and more stay)
                    resp.header.CopyFrom(_pb_header(wr.header))
                    del resp.kvs[:]
                    resp.kvs.append(_pb_kv(ev.kv))
                    _show(pr, resp)
                if deleted:
                    break
        if not deleted:
            return


async def cmd_elect(ctx: Ctx, p: Parsed) -> int:
    from meshkit._internal.errors import MeshkitError
    from meshkit.concurrency.election import Election

    listen = p.values["listen"]
    if len(p.args) not in (1, 2):
        raise CtlExit(EXIT_BAD_ARGS, "elect takes one election name argument and an optional proposal argument")
    ctx.client()
    if len(p.args) == 1 and not listen:
        raise CtlExit(EXIT_BAD_ARGS, "no proposal argument but -l not set")
    if len(p.args) == 2 and listen:
        raise CtlExit(EXIT_BAD_ARGS, "proposal given but -l is set")
    s = await _open_session(ctx, 60)
    stop = _signal_event()
    try:
        if listen:
            observing = asyncio.ensure_future(_observe(ctx, enc(p.args[0]) + b"/"))
            if observing in await _until_first(observing, stop.wait()):
                exc = observing.exception()
                if exc is not None and not isinstance(exc, MeshkitError | RpcFailure):
                    raise exc
                raise CtlExit(EXIT_ERROR, "elect: observer lost")
            return 0
        e = Election(s, enc(p.args[0]))
        campaigning = asyncio.ensure_future(e.campaign(enc(p.args[1])))
        if campaigning not in await _until_first(campaigning, stop.wait()):
            raise CtlExit(EXIT_ERROR, "context canceled")  # the campaign resigned
        campaigning.result()
        resp = await _get_key(ctx, e.key)
        _show(ctx.printer, resp)
        if not stop.is_set():
            await _until_first(stop.wait(), s.lost.wait())
        if not stop.is_set():
            raise CtlExit(EXIT_ERROR, "elect: session expired")
        await e.resign()
        return 0
    except MeshkitError as err:
        raise CtlExit(EXIT_ERROR, _typed_error_text(err)) from None
    except RpcFailure as err:
        raise CtlExit(EXIT_ERROR, rpc_text(err)) from None
    finally:
        await s.close()


# ---------------------------------------------------------------- not yet


def _not_implemented(what: str) -> Any:
    async def run(ctx: Ctx, p: Parsed) -> int:
        raise CtlExit(EXIT_ERROR, f"{what} is not implemented yet in meshkit ctl (see docs/ctl.md)")

    return run


def register(root: Command) -> None:
    # member add/remove/update/promote, move-leader, make-mirror, defrag
    # (cmd_snapshot: snapshot save, status, restore)
    from meshkit.ctl import cmd_cluster, cmd_snapshot

    def c(name: str, short: str, run: Any = None, use: str = "", opts: list[Opt] | None = None,
          subs: list[Command] | None = None) -> Command:
        cmd = Command(name, short, use=use or name, opts=opts or [], run=run)
        for s in subs or []:
            cmd.add(s)
        return cmd

    endpoint_cluster = Opt("cluster", "bool", False, "use all endpoints from the cluster member list")
    from meshkit.ctl.cmd_auth import auth_commands

    root.add(
        c("get", "Gets the key or a range of keys", cmd_get, "get [options] <key> [range_end]", GET_OPTS),
        c("put", "Puts the given key into the store", cmd_put,
          "put [options] <key> <value> (<value> can also be given from stdin)", PUT_OPTS),
        c("del", "Removes the specified key or range of keys [key, range_end)", cmd_del,
          "del [options] <key> [range_end]", DEL_OPTS),
        c("txn", "Txn processes all the requests in one transaction", cmd_txn, "txn [options]",
          [Opt("interactive", "bool", False, "Input transaction in interactive mode", "i")]),
        c("compaction", "Compacts the event history in etcd", cmd_compaction,
          "compaction [options] <revision>",
          [Opt("physical", "bool", False, "'true' to wait for compaction to physically remove all old revisions")]),
        c("watch", "Watches events stream on keys or prefixes", cmd_watch,
          "watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]", WATCH_OPTS),
        c("version", "Prints the version of etcdctl", cmd_version),
        c("lease", "Lease related commands", use="lease <subcommand>", subs=[
            c("grant", "Creates leases", cmd_lease_grant, "grant <ttl>"),
            c("revoke", "Revokes leases", cmd_lease_revoke, "revoke <leaseID>"),
            c("timetolive", "Get lease information", cmd_lease_timetolive, "timetolive <leaseID> [options]",
              [Opt("keys", "bool", False, "Get keys attached to this lease")]),
            c("list", "List all active leases", cmd_lease_list),
            c("keep-alive", "Keeps leases alive (renew)", cmd_lease_keepalive, "keep-alive [options] <leaseID>",
              [Opt("once", "bool", False, "Resets the keep-alive time to its original value and exits immediately")]),
        ]),
        c("member", "Membership related commands", use="member <subcommand>", subs=[
            c("list", "Lists all members in the cluster", cmd_member_list),
            *cmd_cluster.member_commands(),  # add, remove, update, promote
        ]),
        c("endpoint", "Endpoint related commands", use="endpoint <subcommand>", subs=[
            c("health", "Checks the healthiness of endpoints specified in `--endpoints` flag", cmd_endpoint_health,
              "health", [endpoint_cluster]),
            c("status", "Prints out the status of endpoints specified in `--endpoints` flag", cmd_endpoint_status,
              "status", [endpoint_cluster]),
            c("hashkv", "Prints the KV history hash for each endpoint in --endpoints", cmd_endpoint_hashkv,
              "hashkv", [endpoint_cluster, Opt("rev", "int", 0, "maximum revision to hash (default: all revisions)")]),
        ]),
        c("alarm", "Alarm related commands", use="alarm <subcommand>", subs=[
            c("list", "Lists all alarms", cmd_alarm_list),
            c("disarm", "Disarms all alarms", cmd_alarm_disarm),
        ]),
        cmd_cluster.defrag_command(endpoint_cluster),
        c("lock", "Acquires a named lock", cmd_lock, "lock <lockname> [exec-command arg1 arg2 ...]",
          [Opt("ttl", "int", 10, "timeout for session")]),
        c("elect", "Observes and participates in leader election", cmd_elect, "elect <election-name> [proposal]",
          [Opt("listen", "bool", False, "observation mode", "l")]),
        c("snapshot", "Manages etcd node snapshots", use="snapshot <subcommand>",
          subs=cmd_snapshot.snapshot_commands()),  # save, status, restore
        cmd_cluster.make_mirror_command(),
        cmd_cluster.move_leader_command(),
        *auth_commands(),  # auth, user, role: meshkit/ctl/cmd_auth.py
    )
