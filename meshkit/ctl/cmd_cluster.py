"""etcdctl 3.4's cluster commands: ``member add/remove/update/promote``, ``move-leader``,
``make-mirror`` and ``defrag`` (with a progress bar on a terminal).

The texts, exit codes and order of checks follow etcdctl 3.4.23
(``etcdctl/ctlv3/command/member_command.go``, ``move_leader_command.go``,
``make_mirror_command.go``, ``defrag_command.go``) and the client-side URL check of
``clientv3`` (``types.NewURLs`` over Go's ``net/url.Parse``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import grpc

from meshkit.api.etcdserverpb import rpc_pb2
from meshkit.client.kv import prefix_end
from meshkit.client.raw import RpcFailure
from meshkit.ctl.errors import EXIT_BAD_ARGS, EXIT_ERROR, CtlExit, rpc_text
from meshkit.ctl.flags import Command, Opt, Parsed
from meshkit.ctl.gofmt import quote

if TYPE_CHECKING:
    from meshkit.ctl.app import Ctx

_EOF: Any = getattr(grpc.aio, "EOF", None)
_U64 = (1 << 64) - 1
# clientv3 calls in make-mirror run under context.TODO(): no deadline at all
_NO_DEADLINE = 24 * 3600.0


# ---------------------------------------------------------------- Go parsing rules


def parse_uint_hex(text: str) -> int:
    """``strconv.ParseUint(text, 16, 64)``; ValueError carries Go's error text."""
    if not text:
        raise ValueError(f"strconv.ParseUint: parsing {quote(text)}: invalid syntax")
    n = 0
    for ch in text:
        d = int(ch, 16) if ch in "0123456789abcdefABCDEF" else -1
        if d < 0:
            raise ValueError(f"strconv.ParseUint: parsing {quote(text)}: invalid syntax")
        n = n * 16 + d
        if n > _U64:  # Go stops at the first overflow, before looking at later digits
            raise ValueError(f"strconv.ParseUint: parsing {quote(text)}: value out of range")
    return n


class _URLError(Exception):
    pass


_HOST_OK = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~!$&'()*+,;=:[]<>\"")
_USERINFO_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:~!$&'()*+,;=%@")
_HEX = set(b"0123456789abcdefABCDEF")


def _unescape_check(s: bytes, host: bool) -> None:
    """The errors of net/url's ``unescape`` (host mode: %-escapes only for bytes >= 0x80)."""
    i = 0
    while i < len(s):
        c = s[i]
        if c == 0x25:  # '%'
            if i + 2 >= len(s) or s[i + 1] not in _HEX or s[i + 2] not in _HEX:
                raise _URLError(f"invalid URL escape {quote(s[i : i + 3])}")
            if host and int(chr(s[i + 1]), 16) < 8 and s[i : i + 3] != b"%25":
                raise _URLError(f"invalid URL escape {quote(s[i : i + 3])}")
            i += 3
            continue
        if host and c < 0x80 and c not in _HOST_OK:
            raise _URLError(f"invalid character {quote(bytes([c]))} in host name")
        i += 1


def _valid_optional_port(p: bytes) -> bool:
    return p == b"" or (p[:1] == b":" and all(0x30 <= c <= 0x39 for c in p[1:]))


def _parse_host(host: bytes) -> None:
    if host.startswith(b"["):
        i = host.rfind(b"]")
        if i < 0:
            raise _URLError("missing ']' in host")
        if not _valid_optional_port(host[i + 1 :]):
            raise _URLError(f"invalid port {quote(host[i + 1:])} after host")
        zone = host[:i].find(b"%25")
        if zone >= 0:  # RFC 6874 zone: any escape goes
            _unescape_check(host[:zone], True)
            _unescape_check(host[i:], True)
            return
    else:
        i = host.rfind(b":")
        if i >= 0 and not _valid_optional_port(host[i:]):
            raise _URLError(f"invalid port {quote(host[i:])} after host")
    _unescape_check(host, True)


def _get_scheme(raw: bytes) -> tuple[bytes, bytes]:
    for i, c in enumerate(raw):
        if 0x61 <= c | 0x20 <= 0x7A:
            continue
        if 0x30 <= c <= 0x39 or c in b"+-.":
            if i == 0:
                return b"", raw
            continue
        if c == 0x3A:
            if i == 0:
                raise _URLError("missing protocol scheme")
            return raw[:i], raw[i + 1 :]
        return b"", raw
    return b"", raw


def go_url_parse(raw: bytes) -> tuple[str, bytes, bytes]:
    """Go's ``url.Parse``: (scheme, host, path) or _URLError with the text after ``parse "...": ``.

    Raises ``_URLError`` whose args are (message, the URL text Go quotes)."""
    u, sep, frag = raw.partition(b"#")
    try:
        if any(c < 0x20 or c == 0x7F for c in u):
            raise _URLError("net/url: invalid control character in URL")
        scheme_b, rest = _get_scheme(u)
        scheme = scheme_b.decode("latin-1").lower()
        if rest.endswith(b"?") and rest.count(b"?") == 1:
            rest = rest[:-1]
        else:
            rest = rest.partition(b"?")[0]
        host = b""
        path = b""
        if not rest.startswith(b"/"):
            if scheme:
                return scheme, b"", b""  # opaque
            if b":" in rest.partition(b"/")[0]:
                raise _URLError("first path segment in URL cannot contain colon")
        if rest.startswith(b"//"):  # (with or without a scheme: not via a request)
            if scheme or not rest.startswith(b"///"):
                authority, slash, tail = rest[2:].partition(b"/")
                rest = slash + tail
                at = authority.rfind(b"@")
                _parse_host(authority[at + 1 :] if at >= 0 else authority)
                if at >= 0:
                    userinfo = authority[:at].decode("utf-8", "surrogateescape")
                    if any(ch not in _USERINFO_OK for ch in userinfo):
                        raise _URLError("net/url: invalid userinfo")
                    for part in authority[:at].split(b":", 1):
                        _unescape_check(part, False)
                host = authority[at + 1 :] if at >= 0 else authority
        _unescape_check(rest, False)
        path = rest
    except _URLError as e:
        raise _URLError(str(e), u) from None
    if sep:
        try:
            _unescape_check(frag, False)
        except _URLError as e:
            raise _URLError(str(e), raw) from None
    return scheme, host, path


def _split_host_port_ok(hostport: bytes) -> bool:
    """Whether ``net.SplitHostPort`` accepts it."""
    i = hostport.rfind(b":")
    if i < 0:
        return False
    j = k = 0
    if hostport[:1] == b"[":
        end = hostport.find(b"]")
        if end < 0 or end + 1 != i:
            return False
        j, k = 1, end + 1
    elif b":" in hostport[:i]:
        return False
    return b"[" not in hostport[j:] and b"]" not in hostport[k:]


def check_peer_urls(urls: list[str]) -> str | None:
    """``types.NewURLs`` (clientv3's fail-fast check before MemberAdd/MemberUpdate):
    the error text, or None."""
    if not urls:
        return "no valid URLs given"
    for text in urls:
        s = text.strip()
        raw = s.encode("utf-8", "surrogateescape")
        try:
            scheme, host, path = go_url_parse(raw)
        except _URLError as e:
            msg, shown = e.args
            return f"parse {quote(shown)}: {msg}"
        if scheme not in ("http", "https", "unix", "unixs"):
            return f"URL scheme must be http, https, unix, or unixs: {s}"
        if not _split_host_port_ok(_unescaped_host(host)):
            return f'URL address does not have the form "host:port": {s}'
        if path:
            return f"URL must not contain a path: {s}"
    return None


def _unescaped_host(host: bytes) -> bytes:
    """The host with its %-escapes decoded (``_parse_host`` has checked them)."""
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), host)


def go_strings(items: list[str]) -> str:
    """``fmt.Sprintf("%v", []string{...})``."""
    return "[" + " ".join(items) + "]"


# ---------------------------------------------------------------- member


def _member_id(p: Parsed) -> int:
    if len(p.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "member ID is not provided")
    try:
        return parse_uint_hex(p.args[0])
    except ValueError as e:
        raise CtlExit(EXIT_BAD_ARGS, f"bad member ID arg ({e}), expecting ID in Hex") from None


def _peer_urls(p: Parsed) -> list[str]:
    flag = p.values["peer-urls"]
    if not flag:
        raise CtlExit(EXIT_BAD_ARGS, "member peer urls not provided")
    return str(flag).split(",")


def _checked(urls: list[str]) -> list[str]:
    err = check_peer_urls(urls)
    if err is not None:
        raise CtlExit(EXIT_ERROR, err)
    return urls


async def cmd_member_add(ctx: Ctx, p: Parsed) -> int:
    args = p.args
    if len(args) < 1:
        raise CtlExit(EXIT_BAD_ARGS, "member name not provided")
    if len(args) > 1:
        ev = "too many arguments"
        for s in args:
            if s.lower().startswith("http"):
                ev += f", did you mean --peer-urls={s}"
        raise CtlExit(EXIT_BAD_ARGS, ev)
    name = args[0]
    urls = _peer_urls(p)
    ctx.raw()  # the client is made (and its flags checked) before the URLs are
    resp = await ctx.call("cluster", "MemberAdd",
                          rpc_pb2.MemberAddRequest(peerURLs=_checked(urls), isLearner=p.values["learner"]))
    new_id = resp.member.ID
    pr = ctx.printer
    pr.member_change("added to", new_id, resp)
    if pr.fmt != "simple":
        return 0
    # the latest member list, from the member that answered the add (etcdctl's loop)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.timeout
    lst = await _call_until(ctx, deadline, "cluster", "MemberList", rpc_pb2.MemberListRequest())
    answered_by = resp.header.member_id
    for _ in range(100):
        if lst.header.member_id == answered_by:
            break
        g = await _call_until(ctx, deadline, "kv", "Range", rpc_pb2.RangeRequest(key=b"_"))
        answered_by = g.header.member_id
        lst = await _call_until(ctx, deadline, "cluster", "MemberList", rpc_pb2.MemberListRequest())
    conf = []
    for m in lst.members:
        for u in m.peerURLs:
            conf.append(f"{name if m.ID == new_id else m.name}={u}")
    pr.member_add_config(name, ",".join(conf), str(p.values["peer-urls"]))
    return 0


async def _call_until(ctx: Ctx, deadline: float, service: Any, method: str, req: Any) -> Any:
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        raise CtlExit(EXIT_ERROR, "context deadline exceeded")
    try:
        return await ctx.raw().unary(service, method, req, timeout=remaining, retry_sent=True)
    except RpcFailure as e:
        raise CtlExit(EXIT_ERROR, rpc_text(e)) from None


async def cmd_member_remove(ctx: Ctx, p: Parsed) -> int:
    mid = _member_id(p)
    resp = await ctx.call("cluster", "MemberRemove", rpc_pb2.MemberRemoveRequest(ID=mid))
    ctx.printer.member_change("removed from", mid, resp)
    return 0


async def cmd_member_update(ctx: Ctx, p: Parsed) -> int:
    mid = _member_id(p)
    urls = _peer_urls(p)
    ctx.raw()
    resp = await ctx.call("cluster", "MemberUpdate",
                          rpc_pb2.MemberUpdateRequest(ID=mid, peerURLs=_checked(urls)))
    ctx.printer.member_change("updated in", mid, resp)
    return 0


async def cmd_member_promote(ctx: Ctx, p: Parsed) -> int:
    mid = _member_id(p)
    resp = await ctx.call("cluster", "MemberPromote", rpc_pb2.MemberPromoteRequest(ID=mid))
    # etcdctl 3.4 panics here for every format but simple (its printers lack
    # MemberPromote); meshkit prints json/protobuf like the other member commands
    ctx.printer.member_change("promoted in", mid, resp)
    return 0


# ---------------------------------------------------------------- move-leader


async def cmd_move_leader(ctx: Ctx, p: Parsed) -> int:
    if len(p.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "move-leader command needs 1 argument")
    try:
        target = parse_uint_hex(p.args[0])
    except ValueError as e:
        raise CtlExit(EXIT_BAD_ARGS, str(e)) from None
    raw = ctx.raw()
    eps = ctx.endpoints
    deadline = asyncio.get_running_loop().time() + ctx.timeout  # one command context for all calls
    leader_ep: str | None = None
    leader_id = 0
    for ep in raw.endpoints:
        resp = await _pinned(ctx, deadline, ep, "maintenance", "Status", rpc_pb2.StatusRequest(), read=True)
        if resp.header.member_id == resp.leader:
            leader_ep, leader_id = ep, resp.leader
            break
    if leader_ep is None:
        raise CtlExit(EXIT_BAD_ARGS, f"no leader endpoint given at {go_strings(eps)}")
    moved = await _pinned(ctx, deadline, leader_ep, "maintenance", "MoveLeader",
                          rpc_pb2.MoveLeaderRequest(targetID=target))
    ctx.printer.move_leader(leader_id, target, moved)
    return 0


async def _pinned(ctx: Ctx, deadline: float, ep: str, service: Any, method: str, req: Any,
                  read: bool = False) -> Any:
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        raise CtlExit(EXIT_ERROR, "context deadline exceeded")
    try:
        return await ctx.raw().unary(service, method, req, endpoint=ep, timeout=remaining, retry_sent=read)
    except RpcFailure as e:
        raise CtlExit(EXIT_ERROR, rpc_text(e)) from None


# ---------------------------------------------------------------- progress on a terminal


class Progress:
    """A tqdm bar on stderr, only when stderr is a terminal; lines for stdout go around it."""

    def __init__(self, desc: str, unit: str, total: int | None = None) -> None:
        self.bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                            dynamic_ncols=True)

    def update(self, n: int = 1, **postfix: Any) -> None:
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)

    def refresh(self) -> None:
        """Draw now (tqdm draws at most every 0.1 s on updates; a mirror then waits idle)."""
        if self.bar is not None:
            self.bar.refresh()

    def out(self, text: str) -> None:
        """One line for stdout, with the bar cleared around it."""
        if self.bar is not None:
            sys.stdout.flush()
            self.bar.write(text, file=sys.stdout)
        else:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def err(self, text: str) -> None:
        sys.stdout.flush()
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def progress(desc: str, unit: str, total: int | None = None) -> Iterator[Progress]:
    pg = Progress(desc, unit, total)
    try:
        yield pg
    finally:
        pg.close()


# ---------------------------------------------------------------- defrag


async def cmd_defrag(ctx: Ctx, p: Parsed) -> int:
    if p.values.get("data-dir"):
        raise CtlExit(EXIT_ERROR, "defrag --data-dir (offline defragmentation) is not implemented yet in meshkit ctl")
    from meshkit.client import Client
    from meshkit.client.raw import RawAPI
    from meshkit.ctl.commands import _cluster_endpoints

    eps = await _cluster_endpoints(ctx, p)
    failed = False
    with progress("defragmenting", " members", total=len(eps)) as pg:
        for ep in eps:
            client = Client([ep], timeout=ctx.timeout, dial_timeout=float(ctx.g("dial-timeout")))
            try:
                await RawAPI(client).unary("maintenance", "Defragment", rpc_pb2.DefragmentRequest(),
                                           timeout=ctx.timeout)
                pg.out(f"Finished defragmenting etcd member[{ep}]")
            except RpcFailure as e:
                pg.err(f"Failed to defragment etcd member[{ep}] ({rpc_text(e)})")
                failed = True
            finally:
                await client.close()
            pg.update(1)
    if failed:
        raise CtlExit(EXIT_ERROR, None)
    return 0


# ---------------------------------------------------------------- make-mirror


def _dest_client(ctx: Ctx, p: Parsed) -> Any:
    """etcdctl's client for the destination: its own TLS flags, never the source's auth."""
    from meshkit.ctl.app import dial

    v = p.values
    return dial(ctx, [p.args[0]], cert=v["dest-cert"], key=v["dest-key"], cacert=v["dest-cacert"],
                insecure_transport=v["dest-insecure-transport"])


class _Mirror:
    def __init__(self, ctx: Ctx, dest: Any, prefix: bytes, dest_prefix: bytes, pg: Progress) -> None:
        from meshkit.client.raw import RawAPI

        self.ctx = ctx
        self.src = ctx.raw()
        self.dst = RawAPI(dest)
        self.prefix = prefix
        self.dest_prefix = dest_prefix
        self.total = 0
        self.pg = pg

    def key(self, k: bytes) -> bytes:
        # Go's strings.Replace(key, prefix, destPrefix, 1)
        return k.replace(self.prefix, self.dest_prefix, 1)

    async def src_call(self, method: str, req: Any) -> Any:
        try:
            return await self.src.unary("kv", method, req, timeout=_NO_DEADLINE, retry_sent=True)
        except RpcFailure as e:
            raise CtlExit(EXIT_ERROR, rpc_text(e)) from None

    async def dst_call(self, method: str, req: Any) -> Any:
        try:
            return await self.dst.unary("kv", method, req, timeout=_NO_DEADLINE)
        except RpcFailure as e:
            raise CtlExit(EXIT_ERROR, rpc_text(e)) from None

    def count(self, rev: int) -> None:
        self.total += 1
        self.pg.update(1, rev=rev)

    async def report(self) -> None:
        """etcdctl prints the number of keys mirrored so far every 30 seconds."""
        while True:
            await asyncio.sleep(30)
            self.pg.out(str(self.total))

    def ranges(self) -> tuple[bytes, bytes]:
        if self.prefix:
            return self.prefix, prefix_end(self.prefix)
        return b"\x00", b"\x00"

    async def sync_base(self, rev: int) -> None:
        """clientv3/mirror's SyncBase: the prefix at ``rev`` in pages of 1000 keys."""
        key, end = self.ranges()
        while True:
            resp = await self.src_call("Range", rpc_pb2.RangeRequest(key=key, range_end=end, limit=1000,
                                                                     revision=rev))
            for kv in resp.kvs:
                await self.dst_call("Put", rpc_pb2.PutRequest(key=self.key(kv.key), value=kv.value))
                self.count(rev)
            self.pg.refresh()
            if not resp.more or not resp.kvs:
                return
            key = resp.kvs[-1].key + b"\x00"

    async def sync_updates(self, rev: int) -> None:
        """Watch from ``rev + 1``; each revision's events become one txn at the destination."""
        key, end = self.ranges()
        next_rev = rev + 1
        pause = 0.1
        while True:
            call = await self._open_watch(key, end, next_rev)
            try:
                while True:
                    try:
                        wr = await call.read()
                    except grpc.aio.AioRpcError:
                        break  # clientv3 resumes the watch on another stream
                    if wr is _EOF:
                        break
                    pause = 0.1
                    if wr.compact_revision:
                        raise CtlExit(EXIT_ERROR, "etcdserver: mvcc: required revision has been compacted")
                    if wr.canceled:
                        raise CtlExit(EXIT_ERROR, "<nil>")  # etcdctl: the channel closed, err == nil
                    if wr.events:
                        await self.apply(wr.events)
                        next_rev = wr.events[-1].kv.mod_revision + 1
                        self.pg.refresh()
            finally:
                call.cancel()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    async def _open_watch(self, key: bytes, end: bytes, start: int) -> Any:
        while True:
            try:
                call = await self.src.stream("watch", "Watch", timeout=_NO_DEADLINE)
                await call.write(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                    key=key, range_end=end, start_revision=start)))
                return call
            except RpcFailure as e:
                raise CtlExit(EXIT_ERROR, rpc_text(e)) from None
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.5)

    async def apply(self, events: Any) -> None:
        ops: list[rpc_pb2.RequestOp] = []
        last = 0
        for ev in events:
            nxt = ev.kv.mod_revision
            if last and nxt > last:
                await self.dst_call("Txn", rpc_pb2.TxnRequest(success=ops))
                ops = []
            last = nxt
            if ev.type == 0:
                ops.append(rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                    key=self.key(ev.kv.key), value=ev.kv.value)))
            else:
                ops.append(rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(
                    key=self.key(ev.kv.key))))
            self.count(nxt)
        if ops:
            await self.dst_call("Txn", rpc_pb2.TxnRequest(success=ops))


async def cmd_make_mirror(ctx: Ctx, p: Parsed) -> int:
    if len(p.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "make-mirror takes one destination argument")
    v = p.values
    dest = _dest_client(ctx, p)
    try:
        ctx.raw()
        prefix = v["prefix"].encode("utf-8", "surrogateescape")
        dest_prefix = v["dest-prefix"].encode("utf-8", "surrogateescape")
        with progress("make-mirror", " keys") as pg:
            m = _Mirror(ctx, dest, prefix, dest_prefix, pg)
            reporter = asyncio.create_task(m.report())
            try:
                # SyncBase takes the revision (a Get of "foo") before the flags are checked,
                # and its error is seen after that check
                try:
                    rev = (await m.src.unary("kv", "Range", rpc_pb2.RangeRequest(key=b"foo"),
                                             timeout=_NO_DEADLINE, retry_sent=True)).header.revision
                    failed: RpcFailure | None = None
                except RpcFailure as e:
                    rev, failed = 0, e
                if v["no-dest-prefix"] and dest_prefix:
                    raise CtlExit(EXIT_BAD_ARGS, "`--dest-prefix` and `--no-dest-prefix` cannot be set at "
                                                 "the same time, choose one")
                if failed is not None:
                    raise CtlExit(EXIT_ERROR, rpc_text(failed))
                if not v["no-dest-prefix"] and not dest_prefix:
                    m.dest_prefix = prefix
                await m.sync_base(rev)
                await m.sync_updates(rev)
            finally:
                reporter.cancel()
                with contextlib.suppress(BaseException):
                    await reporter
    finally:
        await dest.close()
    return 0


# ---------------------------------------------------------------- the command tree


def member_commands() -> list[Command]:
    promote = Command("promote", "Promotes a non-voting member in the cluster", use="promote <memberID>",
                      run=cmd_member_promote,
                      long="Promotes a non-voting learner member to a voting one in the cluster.")
    return [
        Command("add", "Adds a member into the cluster", use="add <memberName> [options]", run=cmd_member_add,
                opts=[Opt("peer-urls", "string", "", "comma separated peer URLs for the new member."),
                      Opt("learner", "bool", False, "indicates if the new member is raft learner")]),
        Command("remove", "Removes a member from the cluster", use="remove <memberID>", run=cmd_member_remove),
        Command("update", "Updates a member in the cluster", use="update <memberID> [options]",
                run=cmd_member_update,
                opts=[Opt("peer-urls", "string", "", "comma separated peer URLs for the updated member.")]),
        promote,
    ]


def move_leader_command() -> Command:
    return Command("move-leader", "Transfers leadership to another etcd cluster member.",
                   use="move-leader <transferee-member-id>", run=cmd_move_leader)


def make_mirror_command() -> Command:
    return Command("make-mirror", "Makes a mirror at the destination etcd cluster",
                   use="make-mirror [options] <destination>", run=cmd_make_mirror, opts=[
                       Opt("prefix", "string", "", "Key-value prefix to mirror"),
                       Opt("dest-prefix", "string", "",
                           "destination prefix to mirror a prefix to a different prefix in the destination cluster"),
                       Opt("no-dest-prefix", "bool", False, "mirror key-values to the root of the destination cluster"),
                       Opt("dest-cert", "string", "",
                           "Identify secure client using this TLS certificate file for the destination cluster"),
                       Opt("dest-key", "string", "", "Identify secure client using this TLS key file"),
                       Opt("dest-cacert", "string", "",
                           "Verify certificates of TLS enabled secure servers using this CA bundle"),
                       Opt("dest-insecure-transport", "bool", True, "Disable transport security for client connections"),
                   ])


def defrag_command(cluster_opt: Opt) -> Command:
    return Command("defrag", "Defragments the storage of the etcd members with given endpoints",
                   use="defrag", run=cmd_defrag, opts=[
                       cluster_opt,
                       Opt("data-dir", "string", "", "Optional. If present, defragments a data directory not in use by etcd."),
                   ])
