"""The client port's protocol detection: the TLS ClientHello parser (ALPN) and the
plain-connection classifier (HTTP/2 preface vs an HTTP/1.x request line).

ClientHellos are real ones: OpenSSL's (Python's ssl module) with chosen ALPN lists,
and the first bytes that grpcio, curl and the real etcdctl (grpc-go) send to a raw
listener. Malformed input is produced by truncating and mutating real hellos.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshkit.server.clientport import (
    H2_PREFACE,
    MAX_HTTP1_LINE,
    ClientHello,
    Incomplete,
    Malformed,
    classify_plain,
    classify_tls,
    hello_wants_grpc,
    parse_client_hello,
)
from tests.support.procs import ETCDCTL


def openssl_hello(alpn: list[str] | None, *, tls13_only: bool = False) -> bytes:
    """The ClientHello OpenSSL sends (no network: a memory BIO)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if tls13_only:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="meshkit.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def records(payload: bytes, sizes: list[int], version: bytes = b"\x03\x01") -> bytes:
    """``payload`` (a handshake message) cut into records of the given sizes."""
    out = b""
    pos = 0
    for n in sizes:
        chunk = payload[pos : pos + n]
        out += b"\x16" + version + len(chunk).to_bytes(2, "big") + chunk
        pos += n
    assert pos >= len(payload)
    return out


def hello_message(wire: bytes) -> bytes:
    """The handshake message inside a single-record ClientHello."""
    assert wire[0] == 0x16
    return wire[5 : 5 + int.from_bytes(wire[3:5], "big")]


def build_hello(extensions: bytes | None, *, session_id: bytes = b"", suites: bytes = b"\x13\x01",
                compression: bytes = b"\x00") -> bytes:
    """A hand-made ClientHello on the wire (one record)."""
    body = (b"\x03\x03" + b"\x11" * 32 + bytes([len(session_id)]) + session_id
            + len(suites).to_bytes(2, "big") + suites + bytes([len(compression)]) + compression)
    if extensions is not None:
        body += len(extensions).to_bytes(2, "big") + extensions
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    return records(msg, [len(msg)])


def ext(etype: int, data: bytes) -> bytes:
    return etype.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data


def alpn_ext(*names: bytes) -> bytes:
    lst = b"".join(bytes([len(n)]) + n for n in names)
    return ext(16, len(lst).to_bytes(2, "big") + lst)


# ---------------------------------------------------------------- real hellos


@pytest.mark.parametrize(
    ("alpn", "expected", "grpc_wanted"),
    [
        (["h2"], (b"h2",), True),
        (["grpc-exp", "h2"], (b"grpc-exp", b"h2"), True),
        (["h2", "http/1.1"], (b"h2", b"http/1.1"), False),
        (["http/1.1"], (b"http/1.1",), False),
        (None, None, False),
        (["spdy/3"], (b"spdy/3",), False),
    ],
)
def test_openssl_hellos(alpn: list[str] | None, expected: tuple[bytes, ...] | None,
                        grpc_wanted: bool) -> None:
    for tls13_only in (False, True):
        wire = openssl_hello(alpn, tls13_only=tls13_only)
        hello = parse_client_hello(wire)
        assert hello == ClientHello(alpn=expected)
        assert hello_wants_grpc(hello) is grpc_wanted
        assert classify_tls(wire) == ("grpc" if grpc_wanted else "http")


def test_every_prefix_asks_for_more_and_the_need_is_honest() -> None:
    wire = openssl_hello(["h2"])
    for n in range(len(wire)):
        r = parse_client_hello(wire[:n])
        assert isinstance(r, Incomplete), (n, r)
        assert n < r.need <= len(wire)
        assert classify_tls(wire[:n]) == "more"
    # bytes after the hello (early data, the next flight) do not matter
    assert parse_client_hello(wire + b"\x17\x03\x03\x00\x01x") == ClientHello(alpn=(b"h2",))


def test_a_hello_fragmented_over_records() -> None:
    msg = hello_message(openssl_hello(["grpc-exp", "h2"]))
    for sizes in ([1, len(msg) - 1], [3, 1, len(msg) - 4], [len(msg) // 2, len(msg) - len(msg) // 2],
                  [1] * len(msg)):
        wire = records(msg, sizes)
        assert parse_client_hello(wire) == ClientHello(alpn=(b"grpc-exp", b"h2"))
        assert isinstance(parse_client_hello(wire[:-1]), Incomplete)


def test_hand_made_hellos() -> None:
    assert parse_client_hello(build_hello(None)) == ClientHello(alpn=None)
    assert parse_client_hello(build_hello(b"")) == ClientHello(alpn=None)
    assert parse_client_hello(build_hello(ext(0, b"") + alpn_ext(b"h2") + ext(43, b"\x02\x03\x04"))) == \
        ClientHello(alpn=(b"h2",))
    assert parse_client_hello(build_hello(alpn_ext(b"h2"), session_id=b"s" * 32)) == ClientHello(alpn=(b"h2",))


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\x17\x03\x03\x00\x05hello", "record type"),
        (b"GET / HTTP/1.1\r\n\r\n", "record type"),
        (b"\x16\x02\x00\x00\x05hello", "record version"),
        (b"\x16\x03\x05\x00\x05hello", "record version"),
        (b"\x16\x03\x01\x00\x00", "record length"),
        (b"\x16\x03\x01\x40\x01" + b"\x00" * 16385, "record length"),
        (records(b"\x02\x00\x00\x00", [4]), "handshake type"),
        (records(b"\x01\x01\x00\x01", [4]), "ClientHello of"),
        (records(b"\x01\x00\x00\x01\x00\x00", [6]), "bytes after the ClientHello"),
        (records(b"\x01\x00\x00\x02\x03\x03", [6]), "truncated"),
        (build_hello(None, session_id=b"s" * 33), "session id"),
        (build_hello(None, suites=b""), "cipher suite"),
        (build_hello(None, suites=b"\x13\x01\x13"), "cipher suite"),
        (build_hello(None, compression=b""), "compression"),
        (build_hello(alpn_ext(b"h2") + alpn_ext(b"h2")), "given twice"),
        (build_hello(ext(16, b"\x00\x00")), "empty ALPN list"),
        (build_hello(ext(16, b"\x00\x01\x00")), "empty ALPN protocol name"),
        (build_hello(ext(16, b"\x00\x03\x03h2")), "truncated"),
        (build_hello(ext(16, b"\x00\x03\x02h2x")), "bytes after the ALPN list"),
        (build_hello(ext(16, b"\x00\x02\x02h2")), "bytes after the ALPN list"),
        (build_hello(b"\x00"), "truncated"),
        (build_hello(ext(0, b"abc")[:-1]), "truncated"),
    ],
)
def test_malformed_hellos(wire: bytes, reason: str) -> None:
    r = parse_client_hello(wire)
    assert isinstance(r, Malformed), r
    assert reason in r.reason
    assert not hello_wants_grpc(r)
    assert classify_tls(wire) == "http"  # Python's TLS refuses it, the listener goes on


def test_bytes_after_the_extensions_are_malformed() -> None:
    wire = build_hello(alpn_ext(b"h2"))
    msg = bytearray(hello_message(wire)) + b"\x00"
    msg[1:4] = (len(msg) - 4).to_bytes(3, "big")
    assert parse_client_hello(records(bytes(msg), [len(msg)])) == Malformed("bytes after the extensions")


def test_a_hello_too_big_to_peek_goes_to_python_tls() -> None:
    # 1-byte records: six bytes on the wire per byte of hello
    msg = b"\x01" + (20000).to_bytes(3, "big") + b"\x03" * 12000
    wire = records(msg, [1] * len(msg))
    r = parse_client_hello(wire)
    assert isinstance(r, Incomplete) and r.need > 64 * 1024
    assert classify_tls(wire) == "http"
    assert classify_tls(wire[:6000]) == "more"


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_hellos_never_raise(data: st.DataObject) -> None:
    base = bytearray(data.draw(st.sampled_from(_REAL_HELLOS)))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(base) - 1))
        base[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    wire = bytes(base[:cut])
    r = parse_client_hello(wire)
    assert isinstance(r, ClientHello | Incomplete | Malformed)
    assert classify_tls(wire) in ("grpc", "http", "more")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(blob: bytes) -> None:
    assert isinstance(parse_client_hello(blob), ClientHello | Incomplete | Malformed)
    assert isinstance(parse_client_hello(b"\x16\x03\x01" + blob), ClientHello | Incomplete | Malformed)
    assert classify_plain(blob) in ("grpc", "http", "more", "reject")


_REAL_HELLOS = [openssl_hello(["h2"]), openssl_hello(["grpc-exp", "h2"]), openssl_hello(None),
                openssl_hello(["h2", "http/1.1"], tls13_only=True)]


# ---------------------------------------------------------------- what real clients send


async def _first_bytes(connect: object, *, limit: float = 10.0) -> bytes:
    """Start a raw listener, let ``connect(port)`` dial it, return the complete hello."""
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buf = b""
        while not got.done():
            chunk = await reader.read(65536)
            if not chunk:
                break
            buf += chunk
            if not isinstance(parse_client_hello(buf), Incomplete):
                got.set_result(buf)
        writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        task = asyncio.ensure_future(connect(port))  # type: ignore[operator]
        try:
            return await asyncio.wait_for(got, limit)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        server.close()
        await server.wait_closed()


async def test_grpcio_offers_h2_without_http11() -> None:
    async def dial(port: int) -> None:
        creds = grpc.ssl_channel_credentials()
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            await ch.channel_ready()

    hello = parse_client_hello(await _first_bytes(dial))
    assert isinstance(hello, ClientHello) and hello.alpn is not None
    assert b"h2" in hello.alpn and b"http/1.1" not in hello.alpn
    assert hello_wants_grpc(hello)


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")
async def test_curl_offers_http11() -> None:
    async def dial(port: int) -> None:
        await asyncio.to_thread(subprocess.run, ["curl", "-sk", "-m", "5", f"https://127.0.0.1:{port}/health"],
                                capture_output=True, timeout=20)

    hello = parse_client_hello(await _first_bytes(dial))
    assert isinstance(hello, ClientHello) and hello.alpn is not None and b"http/1.1" in hello.alpn
    assert not hello_wants_grpc(hello)


@pytest.mark.skipif(ETCDCTL is None, reason="the real etcdctl is not installed")
async def test_etcdctl_grpc_go_offers_h2_only(tmp_path: Path) -> None:
    async def dial(port: int) -> None:
        await asyncio.to_thread(subprocess.run, [str(ETCDCTL), "--endpoints", f"https://127.0.0.1:{port}",
                                                 "--insecure-skip-tls-verify", "--dial-timeout=3s",
                                                 "--command-timeout=3s", "get", "k"],
                                capture_output=True, timeout=20, env={"ETCDCTL_API": "3"})

    hello = parse_client_hello(await _first_bytes(dial))
    assert isinstance(hello, ClientHello)
    assert hello_wants_grpc(hello), hello


# ---------------------------------------------------------------- plain connections


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"", "more"),
        (H2_PREFACE[:1], "more"),
        (H2_PREFACE[:23], "more"),
        (H2_PREFACE, "grpc"),
        (H2_PREFACE + b"\x00\x00\x12\x04", "grpc"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", "http"),
        (b"GET /health HTTP/1.0\r\n\r\n", "http"),
        (b"POST /v3/kv/range HTTP/1.1\n", "http"),
        (b"OPTIONS * HTTP/1.1\r\n", "http"),
        (b"GET /health HTTP/1.1", "more"),
        (b"GET /health HTTP/2.0\r\n", "reject"),
        (b"GET /health HTTP/1.10\r\n", "reject"),
        (b"GET /health\r\n", "reject"),
        (b"hello there\r\n\r\n", "reject"),
        (b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", "reject"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "more"),
        (b"GET /" + b"a" * MAX_HTTP1_LINE, "reject"),
        (b"GET /" + b"a" * (MAX_HTTP1_LINE - 30) + b" HTTP/1.1\r\n", "http"),
    ],
)
def test_classify_plain(data: bytes, verdict: str) -> None:
    assert classify_plain(data) == verdict
