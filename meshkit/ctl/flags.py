"""etcdctl's command line grammar: cobra commands with pflag flags, and its help text.

pflag rules kept here: ``--name=value``, ``--name value``, ``-n value``, ``-nvalue``,
``-abc`` (grouped boolean shorthands), a boolean takes no separate argument
(``--prefix=false``), flags may follow positional arguments, ``--`` ends the flags
(what follows is positional). Errors carry pflag's texts (``unknown flag: --x``,
``flag needs an argument: --rev``, ``invalid argument "x" for "--rev" flag: ...``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshkit._internal.goflags import ValueError_, parse_duration_ns


class UsageError(Exception):
    """A malformed command line (etcdctl prints the command's usage and exits 1)."""


def go_parse_int(text: str) -> int:
    """``strconv.ParseInt(s, 10, 64)`` with its error text."""
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isdigit() or not body.isascii():
        raise ValueError_(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    v = int(text)
    if not -(1 << 63) <= v < (1 << 63):
        raise ValueError_(f'strconv.ParseInt: parsing "{text}": value out of range')
    return v


def go_parse_uint(text: str) -> int:
    if not text or not text.isdigit() or not text.isascii():
        raise ValueError_(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    v = int(text)
    if v >= 1 << 64:
        raise ValueError_(f'strconv.ParseUint: parsing "{text}": value out of range')
    return v


def go_parse_bool(text: str) -> bool:
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError_(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def go_parse_duration(text: str) -> float:
    """Seconds, from Go's ``time.ParseDuration`` syntax."""
    return parse_duration_ns(text) / 1e9


def _parse_string_slice(text: str) -> list[str]:
    return [s for s in text.split(",")] if text else []


@dataclass(frozen=True)
class Opt:
    """One flag: ``kind`` is bool, string, int, uint, duration or strings (a slice)."""

    name: str
    kind: str
    default: Any
    usage: str
    short: str = ""

    def parse(self, text: str) -> Any:
        if self.kind == "bool":
            return go_parse_bool(text)
        if self.kind == "int":
            return go_parse_int(text)
        if self.kind == "uint":
            return go_parse_uint(text)
        if self.kind == "duration":
            return go_parse_duration(text)
        if self.kind == "strings":
            return _parse_string_slice(text)
        return text

    def default_text(self) -> str:
        if self.kind == "bool":
            return "true" if self.default else "false"
        if self.kind == "strings":
            return "[" + ",".join(self.default) + "]"
        if self.kind == "duration":
            return _format_duration(self.default)
        return str(self.default)


def _format_duration(seconds: float) -> str:
    if seconds == int(seconds):
        s = int(seconds)
        h, rem = divmod(s, 3600)
        m, sec = divmod(rem, 60)
        if h:
            return f"{h}h{m}m{sec}s"
        if m:
            return f"{m}m{sec}s"
        return f"{sec}s"
    return f"{seconds:g}s"


def go_quote_simple(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Command:
    """A cobra command: ``run(ctx, args)`` returns an exit code; ``subs`` are children."""

    name: str
    short: str
    use: str = ""
    opts: list[Opt] = field(default_factory=list)
    run: Callable[..., Any] | None = None
    subs: list[Command] = field(default_factory=list)
    long: str = ""
    parent: Command | None = None
    aliases: tuple[str, ...] = ()

    def add(self, *cmds: Command) -> Command:
        for c in cmds:
            c.parent = self
            self.subs.append(c)
        return self

    def find_sub(self, name: str) -> Command | None:
        for c in self.subs:
            if c.name == name or name in c.aliases:
                return c
        return None

    @property
    def path(self) -> str:
        return self.name if self.parent is None else f"{self.parent.path} {self.name}"

    @property
    def short_path(self) -> str:
        """The path without the root (what etcdctl's help shows after NAME)."""
        return self.name if self.parent is None or self.parent.parent is None else f"{self.parent.short_path} {self.name}"

    def help_opt(self) -> Opt:
        return Opt("help", "bool", False, f"help for {self.name}", "h")

    def local_opts(self) -> list[Opt]:
        return [*self.opts, self.help_opt()]

    def inherited_opts(self) -> list[Opt]:
        out: list[Opt] = []
        p = self.parent
        while p is not None:
            if p.parent is None:
                out.extend(p.opts)  # only the root's are persistent
            p = p.parent
        return out


@dataclass
class Parsed:
    values: dict[str, Any]
    args: list[str]
    dash_at: int = -1  # index into args where "--" was seen (cobra's ArgsLenAtDash), -1 if none


def parse_flags(argv: Sequence[str], opts: Sequence[Opt]) -> Parsed:
    """pflag's interspersed parsing over ``opts``; raises UsageError with pflag's text."""
    by_name = {o.name: o for o in opts}
    by_short = {o.short: o for o in opts if o.short}
    values: dict[str, Any] = {}
    args: list[str] = []
    dash_at = -1
    i = 0
    n = len(argv)
    while i < n:
        s = argv[i]
        i += 1
        if len(s) == 0 or s[0] != "-" or len(s) == 1:
            args.append(s)
            continue
        if s[1] == "-":
            if len(s) == 2:
                dash_at = len(args)
                args.extend(argv[i:])
                break
            name = s[2:]
            if name[0] in "-=":
                raise UsageError(f"bad flag syntax: {s}")
            value: str | None = None
            if "=" in name:
                name, value = name.split("=", 1)
            o = by_name.get(name)
            if o is None:
                raise UsageError(f"unknown flag: --{name}")
            if value is None:
                if o.kind == "bool":
                    value = "true"
                elif i < n:
                    value = argv[i]
                    i += 1
                else:
                    raise UsageError(f"flag needs an argument: {s}")
            _set(values, o, value, f"--{o.name}")
        else:
            shorts = s[1:]
            j = 0
            while j < len(shorts):
                c = shorts[j]
                o = by_short.get(c)
                if o is None:
                    raise UsageError(f"unknown shorthand flag: '{c}' in -{shorts}")
                rest = shorts[j + 1 :]
                if rest.startswith("="):
                    _set(values, o, rest[1:], f"-{c}, --{o.name}")
                    break
                if o.kind == "bool":
                    _set(values, o, "true", f"-{c}, --{o.name}")
                    j += 1
                    continue
                if rest:
                    _set(values, o, rest, f"-{c}, --{o.name}")
                    break
                if i < n:
                    _set(values, o, argv[i], f"-{c}, --{o.name}")
                    i += 1
                    break
                raise UsageError(f"flag needs an argument: '{c}' in -{shorts}")
    return Parsed(values, args, dash_at)


def _set(values: dict[str, Any], o: Opt, text: str, shown: str) -> None:
    try:
        v = o.parse(text)
    except ValueError_ as e:
        raise UsageError(f'invalid argument "{text}" for "{shown}" flag: {e}') from None
    if o.kind == "strings" and o.name in values:
        v = values[o.name] + v  # pflag's StringSlice appends after the first Set
    values[o.name] = v


# ---------------------------------------------------------------- help text


def tabwriter(text: str, tabwidth: int = 8, padding: int = 1) -> str:
    """Go's ``text/tabwriter`` with padchar '\\t' (minwidth 0, flags 0)."""
    lines = [ln.split("\t") for ln in text.split("\n")]
    widths: list[int] = []
    out: list[str] = []

    def write_lines(line0: int, line1: int) -> None:
        for k in range(line0, line1):
            cells = lines[k]
            parts: list[str] = []
            for j, c in enumerate(cells):
                if j < len(cells) - 1 and j < len(widths):
                    cellw = (widths[j] + tabwidth - 1) // tabwidth * tabwidth
                    pad = cellw - len(c)
                    parts.append(c + "\t" * ((pad + tabwidth - 1) // tabwidth))
                elif j < len(cells) - 1:
                    parts.append(c)
                else:
                    parts.append(c)
            out.append("".join(parts))

    def fmt(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write_lines(line0, this)
            line0 = this
            width = 0
            while this < line1 and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            fmt(line0, this)
            widths.pop()
            line0 = this
        write_lines(line0, line1)

    fmt(0, len(lines))
    return "\n".join(out)


def flag_usages(opts: Sequence[Opt]) -> str:
    lines = []
    for o in sorted(opts, key=lambda x: x.name):
        head = f"  -{o.short}, --{o.name}" if o.short else f"      --{o.name}"
        dv = go_quote_simple(o.default_text()) if o.kind == "string" else o.default_text()
        head += f"[={dv}]" if o.kind == "bool" else f"={dv}"
        lines.append(f"{head}\t{o.usage}\n")
    return "".join(lines)


def help_text(cmd: Command, version: str = "3.4.23", api: str = "3.4") -> str:
    use = cmd.use or cmd.name
    has_flags = True
    use_line = (cmd.parent.path + " " if cmd.parent else "") + use
    if has_flags and "[flags]" not in use_line:
        use_line += " [flags]"
    t = "NAME:\n" + f"\t{cmd.short_path} - {cmd.short}\n\nUSAGE:\n\t{use_line}\n"
    if cmd.parent is None:
        t += f"\nVERSION:\n\t{version}\n"
    if cmd.subs:
        t += f"\nAPI VERSION:\n\t{api}\n"
        t += "\n\nCOMMANDS:\n"
        for sub in _runnable(cmd):
            t += f"\t{sub.path[len(cmd.path) + 1:]}\t{sub.short}\n"
    if cmd.long:
        t += "\nDESCRIPTION:\n" + "".join(f"\t{ln}\n" for ln in cmd.long.split("\n"))
    t += "\nOPTIONS:\n" + flag_usages(cmd.local_opts() if cmd.parent else [*cmd.opts, cmd.help_opt()])
    inherited = cmd.inherited_opts()
    if inherited:
        t += "\nGLOBAL OPTIONS:\n" + flag_usages(inherited)
    return tabwriter(t + "\n")


def _runnable(cmd: Command) -> list[Command]:
    out: list[Command] = []
    for s in sorted(cmd.subs, key=lambda c: c.name):
        if s.run is not None:
            out.append(s)
        out.extend(_runnable(s) if s.subs else [])
    return out
