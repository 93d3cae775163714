"""HTTP/2 framing and the few HPACK encodings the gRPC server writes (pure).

Header blocks the server *sends* are encoded without the dynamic table (static
indexes and literals "without indexing"), so encoding is stateless, the bytes
of the common blocks are computed once, and frames may be written in any
order. Received blocks are decoded by the ``hpack`` library (connection state).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (RFC 9113 §6)
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# settings
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

# error codes
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
MAX_WINDOW = 2**31 - 1
MAX_FRAME_LIMIT = 2**24 - 1


class H2Error(Exception):
    """A connection error: answered with GOAWAY carrying ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (len(payload).to_bytes(3, "big") + bytes((ftype, flags))
            + stream_id.to_bytes(4, "big") + payload)


def settings_frame(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big")
                                          for k, v in values.items()))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4, "big"))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big"))


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, last_stream_id.to_bytes(4, "big") + code.to_bytes(4, "big") + debug)


def header_frames(stream_id: int, block: bytes, end_stream: bool, max_frame: int) -> bytes:
    """HEADERS (and CONTINUATION frames when the block exceeds the peer's frame size)."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return frame(HEADERS, flags | END_HEADERS, stream_id, block)
    parts = [block[i : i + max_frame] for i in range(0, len(block), max_frame)]
    out = [frame(HEADERS, flags, stream_id, parts[0])]
    for i, part in enumerate(parts[1:], 1):
        out.append(frame(CONTINUATION, END_HEADERS if i == len(parts) - 1 else 0, stream_id, part))
    return b"".join(out)


# ---- HPACK, encoder side (RFC 7541), stateless ----------------------------------


def hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer with an N-bit prefix; ``first`` holds the high flag bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, with a literal name (no Huffman)."""
    return (b"\x00" + hpack_int(len(name), 7, 0) + name + hpack_int(len(value), 7, 0) + value)


# ":status: 200" is static entry 8; "content-type" is static entry 31, here as
# the name of a literal without indexing.
RESPONSE_HEADERS = b"\x88" + hpack_int(31, 4, 0) + hpack_int(16, 7, 0) + b"application/grpc"
STATUS_OK = hpack_literal(b"grpc-status", b"0")


def status_block(code: int, message: str, trailing: Sequence[tuple[str, str | bytes]] = ()) -> bytes:
    parts = [hpack_literal(b"grpc-status", str(code).encode())]
    if message:
        parts.append(hpack_literal(b"grpc-message", percent_encode(message)))
    for key, value in trailing:
        parts.append(hpack_literal(key.encode(), metadata_value(key, value)))
    return b"".join(parts)


def metadata_value(key: str, value: str | bytes) -> bytes:
    if key.endswith("-bin"):
        import base64

        raw = value if isinstance(value, bytes) else value.encode()
        return base64.b64encode(raw).rstrip(b"=")
    return value if isinstance(value, bytes) else value.encode()


_UNRESERVED = frozenset(range(0x20, 0x7F)) - {ord("%")}


def percent_encode(message: str) -> bytes:
    """grpc-message's encoding: printable ASCII but '%' as is, the rest %XX of UTF-8."""
    raw = message.encode("utf-8", errors="replace")
    if all(b in _UNRESERVED for b in raw):
        return raw
    return b"".join(bytes((b,)) if b in _UNRESERVED else b"%%%02X" % b for b in raw)


_TIMEOUT = re.compile(rb"([0-9]{1,8})([HMSmun])")
_UNIT = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def parse_timeout(value: bytes) -> float | None:
    """grpc-timeout in seconds; None when malformed (grpc-go resets such a stream)."""
    m = _TIMEOUT.fullmatch(value)
    if m is None:
        return None
    return int(m.group(1)) * _UNIT[m.group(2)]
