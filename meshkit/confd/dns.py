"""DNS lookups for templates: ``lookupIP`` through the system resolver, ``lookupSRV`` over UDP.

The standard library has no SRV lookup, so this is a small stub resolver: one
question, the nameservers of ``/etc/resolv.conf`` (or given), a per-server timeout,
and a parser of the answer section (with name compression). Like confd, a failed
lookup gives an empty list rather than failing the template.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["SRV", "lookup_ip", "lookup_srv", "nameservers_from_resolv_conf", "query_srv"]

_TYPE_SRV = 33
_CLASS_IN = 1


@dataclass(frozen=True, slots=True)
class SRV:
    """One SRV record; the field names are Go's ``net.SRV`` (what confd templates use)."""

    Target: str  # Go's field names, as templates spell them
    Port: int
    Priority: int
    Weight: int

    @property
    def target(self) -> str:
        return self.Target

    @property
    def port(self) -> int:
        return self.Port


def lookup_ip(name: str, family: int = socket.AF_UNSPEC) -> list[str]:
    """The addresses of ``name``, as sorted unique text (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    out = {str(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])) for info in infos}
    return sorted(out)


def nameservers_from_resolv_conf(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    servers: list[tuple[str, int]] = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    servers.append((parts[1], 53))
    except OSError:
        pass
    return servers or [("127.0.0.1", 53)]


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if label else b""
        if not raw or len(raw) > 63:
            raise ValueError(f"bad DNS name {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def _read_name(msg: bytes, off: int) -> tuple[str, int]:
    labels: list[str] = []
    end = -1
    for _hop in range(128):  # bounded: a loop of pointers is a malformed message
        if off >= len(msg):
            raise ValueError("truncated name")
        length = msg[off]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = off + 2
            off = ((length & 0x3F) << 8) | msg[off + 1]
            continue
        if length == 0:
            return ".".join(labels), (end if end >= 0 else off + 1)
        labels.append(msg[off + 1 : off + 1 + length].decode("ascii", errors="replace"))
        off += 1 + length
    raise ValueError("too many name pointers")


def parse_srv_response(msg: bytes, qid: int) -> list[SRV]:
    if len(msg) < 12:
        raise ValueError("short DNS message")
    rid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", msg[:12])
    if rid != qid or not flags & 0x8000:
        raise ValueError("not the answer to our question")
    if flags & 0x000F not in (0, 3):  # NOERROR or NXDOMAIN (empty)
        raise ValueError(f"DNS error rcode {flags & 0xF}")
    off = 12
    for _ in range(qd):
        _n, off = _read_name(msg, off)
        off += 4
    records: list[SRV] = []
    for _ in range(an):
        _n, off = _read_name(msg, off)
        rtype, rclass, _ttl, rdlen = struct.unpack("!HHIH", msg[off : off + 10])
        off += 10
        if rtype == _TYPE_SRV and rclass == _CLASS_IN:
            prio, weight, port = struct.unpack("!HHH", msg[off : off + 6])
            target, _ = _read_name(msg, off + 6)
            records.append(SRV(target.rstrip(".") + ".", port, prio, weight))
        off += rdlen
    return records


def query_srv(qname: str, nameservers: Sequence[tuple[str, int]], timeout: float = 2.0) -> list[SRV]:
    """Ask each nameserver in turn for the SRV records of ``qname``; raises OSError if none answered."""
    qid = secrets.randbelow(1 << 16)
    packet = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _encode_name(qname) + struct.pack(
        "!HH", _TYPE_SRV, _CLASS_IN)
    last: Exception = OSError("no nameserver")
    for host, port in nameservers:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            try:
                s.sendto(packet, (host, port))
                for _ in range(8):  # skip stray datagrams, bounded
                    data, _addr = s.recvfrom(4096)
                    try:
                        return parse_srv_response(data, qid)
                    except ValueError as e:
                        last = e
            except OSError as e:
                last = e
    raise OSError(f"SRV lookup of {qname} failed: {last}")


def lookup_srv(service: str, proto: str, name: str, *,
               nameservers: Sequence[tuple[str, int]] | None = None, timeout: float = 2.0) -> list[SRV]:
    """Go's ``net.LookupSRV(service, proto, name)`` as confd uses it: records sorted by
    target, port, priority, weight; empty on failure."""
    qname = f"_{service}._{proto}.{name}" if service or proto else name
    try:
        records = query_srv(qname, nameservers or nameservers_from_resolv_conf(), timeout)
    except (OSError, ValueError):
        return []
    return sorted(records, key=lambda r: f"{r.Target}:{r.Port}:{r.Priority}:{r.Weight}")
