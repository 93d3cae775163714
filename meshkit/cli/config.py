"""``meshkit config``: publish and follow application configs (the config center).

    meshkit config push prod/payments/api api.yaml --schema api.schema.json -m "raise pool"
    meshkit config get prod/payments/api
    meshkit config history prod/payments/api
    meshkit config diff prod/payments/api 41 57
    meshkit config rollback prod/payments/api 41
    meshkit config watch prod/payments/api

Exit status: 0 done, 1 refused or failed (the reason on stderr; a refused push stored
nothing), 2 bad usage, 3 a concurrent push won (compare-and-swap conflict).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from meshkit._internal.errors import MeshkitError
from meshkit.client import Client
from meshkit.configcenter import (
    DEFAULT_PREFIX,
    FORMATS,
    AppConfig,
    ConfigStore,
    ConfigVersion,
    ConflictError,
    DocumentError,
    Format,
    SchemaError,
    SchemaValidationError,
    format_commands,
    load_schema,
    read_text,
    role_commands,
)

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFLICT = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    def cluster_flags(suppress: bool) -> argparse.ArgumentParser:
        # The flags are accepted before and after the command; the subcommands' copies
        # default to SUPPRESS so they do not overwrite a value given before the command.
        def d(value: Any) -> Any:
            return argparse.SUPPRESS if suppress else value

        common = argparse.ArgumentParser(add_help=False)
        g = common.add_argument_group("cluster")
        g.add_argument("--endpoints", default=d(os.environ.get("ETCDCTL_ENDPOINTS", "127.0.0.1:2379")),
                       help="comma-separated gRPC endpoints (default $ETCDCTL_ENDPOINTS or 127.0.0.1:2379)")
        g.add_argument("--user", default=d(os.environ.get("ETCDCTL_USER")),
                       help="etcd user as NAME or NAME:PASSWORD (default $ETCDCTL_USER)")
        g.add_argument("--password", default=d(os.environ.get("ETCDCTL_PASSWORD")),
                       help="password when --user has none (default $ETCDCTL_PASSWORD)")
        g.add_argument("--prefix", default=d(DEFAULT_PREFIX), help=f"key prefix (default {DEFAULT_PREFIX})")
        g.add_argument("--command-timeout", type=float, default=d(5.0), metavar="SECONDS",
                       help="deadline of each request (default 5)")
        return common

    common = cluster_flags(suppress=True)

    p = argparse.ArgumentParser(prog="meshkit config", parents=[cluster_flags(suppress=False)],
                                description="Namespaced, versioned application config on etcd.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_, description=help_)

    push = add("push", "Validate a YAML, JSON or key=value file and publish it as the next version")
    push.add_argument("name", metavar="NAMESPACE/APP")
    push.add_argument("file", metavar="FILE", help="the document ('-' reads stdin; give --format)")
    push.add_argument("--schema", metavar="SCHEMA.json", help="refuse the push unless it validates")
    push.add_argument("-m", "--message", default="", help="why this version (kept in the history)")
    push.add_argument("--format", choices=FORMATS, help="default: from the file extension")
    push.add_argument("--author", help="default: the --user name, else the login name")
    push.add_argument("--base-revision", type=int, metavar="REV",
                      help="the revision this edit started from (0: none published); a newer "
                           "version makes the push fail with status 3. Default: the current one")

    get = add("get", "Print the current version's document (or the one published at --revision)")
    get.add_argument("name", metavar="NAMESPACE/APP")
    get.add_argument("--revision", type=int, metavar="REV")
    get.add_argument("-o", "--output", choices=("text", "json"), default="text",
                     help="text: the document as pushed; json: the document and its metadata")

    hist = add("history", "List every published version (oldest first)")
    hist.add_argument("name", metavar="NAMESPACE/APP")
    hist.add_argument("-o", "--output", choices=("table", "json"), default="table")

    diff = add("diff", "Unified diff between the versions published at REV1 and REV2")
    diff.add_argument("name", metavar="NAMESPACE/APP")
    diff.add_argument("rev1", type=int, metavar="REV1")
    diff.add_argument("rev2", type=int, metavar="REV2")

    rb = add("rollback", "Publish the version published at REV again, as a new version")
    rb.add_argument("name", metavar="NAMESPACE/APP")
    rb.add_argument("revision", type=int, metavar="REV")
    rb.add_argument("-m", "--message", help="default: 'rollback to revision REV (version N)'")
    rb.add_argument("--author")
    rb.add_argument("--base-revision", type=int, metavar="REV")
    rb.add_argument("--schema", metavar="SCHEMA.json", help="refuse unless the old version validates")

    watch = add("watch", "Print the current version, then every new one, as JSON lines")
    watch.add_argument("name", metavar="NAMESPACE/APP")
    watch.add_argument("--count", type=int, default=0, metavar="N",
                       help="exit after printing N versions (default: run until interrupted)")
    watch.add_argument("--cache-file", metavar="PATH",
                       help="start from this file when the cluster is unreachable; kept up to date")
    watch.add_argument("-o", "--output", choices=("json", "text"), default="json")

    ls = add("list", "List the configs published under a namespace")
    ls.add_argument("namespace", metavar="NAMESPACE")

    roles = add("roles", "Print the etcdctl commands creating a namespace's read and write roles")
    roles.add_argument("namespace", metavar="NAMESPACE")
    roles.add_argument("--reader", action="append", default=[], metavar="USER",
                       help="grant the read role to this user (repeatable)")
    roles.add_argument("--writer", action="append", default=[], metavar="USER",
                       help="grant the write role to this user (repeatable)")
    return p


def _credentials(args: argparse.Namespace) -> tuple[str | None, str | None]:
    if not args.user:
        return None, None
    name, sep, pw = args.user.partition(":")
    return name, (pw if sep else (args.password or ""))


def _client(args: argparse.Namespace) -> Client:
    user, password = _credentials(args)
    return Client(args.endpoints, timeout=args.command_timeout, user=user, password=password)


def _version_json(v: ConfigVersion, *, data: bool) -> dict[str, Any]:
    out = v.summary()
    if data:
        out["data"] = v.data
    return out


def _print(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


async def _push(args: argparse.Namespace, store: ConfigStore) -> int:
    if args.file == "-":
        if not args.format:
            raise DocumentError("<stdin>", "reading a document from stdin needs --format")
        text, source = sys.stdin.read(), "<stdin>"
        schema = load_schema(read_text(args.schema), args.schema) if args.schema else None
        v = await store.push(args.name, text, args.format, schema=schema, message=args.message,
                             author=args.author, base_revision=args.base_revision, source=source)
    else:
        fmt: Format | None = args.format
        v = await store.push_file(args.name, args.file, fmt=fmt, schema_path=args.schema,
                                  message=args.message, author=args.author,
                                  base_revision=args.base_revision)
    _print(f"pushed {v.name} version {v.version} at revision {v.revision}\n")
    return EXIT_OK


async def _watch(args: argparse.Namespace, client: Client) -> int:
    printed = 0
    async with AppConfig(args.name, client=client, prefix=args.prefix, cache_file=args.cache_file,
                         require=False, connect_timeout=args.command_timeout) as app:
        async with app.changes(include_current=True) as stream:
            async for v in stream:
                if args.output == "json":
                    line = json.dumps({**_version_json(v, data=True), "source": app.source},
                                      ensure_ascii=False, sort_keys=True)
                else:
                    line = (f"{v.name} version {v.version} revision {v.revision} {v.time} "
                            f"{v.author}: {v.message}")
                _print(line + "\n")
                printed += 1
                if args.count and printed >= args.count:
                    break
    return EXIT_OK


async def _run(args: argparse.Namespace) -> int:
    if args.command == "roles":
        _print(format_commands(role_commands(args.namespace, prefix=args.prefix,
                                             readers=args.reader, writers=args.writer)))
        return EXIT_OK
    async with _client(args) as client:
        author = getattr(args, "author", None) or _credentials(args)[0]
        store = ConfigStore(client, prefix=args.prefix, author=author)
        if args.command == "push":
            return await _push(args, store)
        if args.command == "get":
            v = await store.get(args.name, args.revision)
            if args.output == "json":
                _print(json.dumps({**_version_json(v, data=True), "text": v.text},
                                  ensure_ascii=False, indent=2, sort_keys=True) + "\n")
            else:
                _print(v.text if v.text.endswith("\n") or not v.text else v.text + "\n")
            return EXIT_OK
        if args.command == "history":
            versions = await store.history(args.name)
            if args.output == "json":
                _print(json.dumps([v.summary() for v in versions], ensure_ascii=False, indent=2) + "\n")
            else:
                rows = [("VERSION", "REVISION", "TIME", "AUTHOR", "MESSAGE")]
                rows += [(str(v.version), str(v.revision), v.time, v.author,
                          v.message.replace("\n", " ")) for v in versions]
                widths = [max(len(r[i]) for r in rows) for i in range(4)]
                _print("".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True))
                               + "  " + r[4] + "\n" for r in rows))
            return EXIT_OK
        if args.command == "diff":
            _print(await store.diff(args.name, args.rev1, args.rev2))
            return EXIT_OK
        if args.command == "rollback":
            schema = load_schema(read_text(args.schema), args.schema) if args.schema else None
            v = await store.rollback(args.name, args.revision, message=args.message,
                                     author=args.author, base_revision=args.base_revision,
                                     schema=schema)
            _print(f"rolled {v.name} back to revision {args.revision}: version {v.version} "
                   f"at revision {v.revision}\n")
            return EXIT_OK
        if args.command == "watch":
            return await _watch(args, client)
        if args.command == "list":
            _print("".join(n + "\n" for n in await store.list(args.namespace)))
            return EXIT_OK
    raise AssertionError(f"unhandled command {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    try:
        return asyncio.run(_run(args))
    except ConflictError as e:
        print(f"meshkit config: {e}", file=sys.stderr)
        return EXIT_CONFLICT
    except (DocumentError, SchemaError, SchemaValidationError) as e:
        print(f"meshkit config {args.command}: refused, nothing was stored: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (MeshkitError, ValueError) as e:
        print(f"meshkit config {args.command}: failed: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
