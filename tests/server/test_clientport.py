"""The client port serves gRPC and HTTP/1.1 together (etcd's cmux), over http and
https, and --listen-client-http-urls moves HTTP elsewhere (etcd 3.5).

Real servers on 127.0.0.1: EmbeddedServer, `meshkit server`, and ClientMux in front
of a plain TCP upstream to check the forwarding itself (half-close, backpressure).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from meshkit.api.etcdserverpb import rpc_pb2 as pb
from meshkit.api.etcdserverpb import rpc_pb2_grpc as rpc
from meshkit.client import Client
from meshkit.server.clientport import H2_PREFACE, ClientMux, GrpcTarget
from meshkit.server.config import ConfigError, ServerConfig
from meshkit.server.embed import EmbeddedServer, ListenError
from meshkit.server.tls import TLSInfo
from tests.server.conftest import wait_ready
from tests.server.tls.certs import Certs, make_certs
from tests.support.procs import free_ports, start_meshkit, wait_port

CORS_ORIGIN = "Access-Control-Allow-Origin"


async def http_get(url: str, *, method: str = "GET", ssl_ctx: ssl.SSLContext | None = None,
                   ) -> tuple[int, dict[str, str], str]:
    connector = aiohttp.TCPConnector(ssl=ssl_ctx) if ssl_ctx is not None else None
    async with aiohttp.ClientSession(connector=connector) as s, \
            s.request(method, url, timeout=aiohttp.ClientTimeout(total=10)) as r:
        return r.status, dict(r.headers), await r.text()


async def raw_exchange(port: int, chunks: list[bytes], *, pause: float = 0.0,
                       read_for: float = 1.0) -> bytes:
    """Send ``chunks`` (``pause`` s apart), then read until EOF or ``read_for`` s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for c in chunks:
            writer.write(c)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        out = b""
        deadline = time.monotonic() + read_for
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
            except TimeoutError:
                break
            if not chunk:
                return out + b"<EOF>"
            out += chunk
        return out
    finally:
        writer.close()


@pytest.fixture(autouse=True, params=["native", "grpcio"])
def grpc_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test against both gRPC servers: meshkit's own (in the event loop, the
    default) and grpcio's behind the mux (MESHKIT_GRPC_SERVER=grpcio)."""
    monkeypatch.setenv("MESHKIT_GRPC_SERVER", request.param)
    return str(request.param)


@pytest.fixture
async def member(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    async with EmbeddedServer.for_test(tmp_path / "d", 0) as srv:
        await wait_ready(srv.endpoint)
        yield srv


# ------------------------------------------------------------------ one port, two protocols


async def test_grpc_and_http_share_the_client_port(member: EmbeddedServer) -> None:
    srv = member
    assert len(srv.ports) == 1 and srv.ports[0] > 0 and srv.endpoint == f"127.0.0.1:{srv.ports[0]}"
    if srv.native_grpc:  # served in process: no internal listener
        assert not srv.grpc_internal
    else:  # grpcio listens on a unix socket in a private directory only
        (internal,) = srv.grpc_internal
        assert internal.startswith("unix:")
        private = Path(internal[len("unix:"):]).parent
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
    async with Client([srv.endpoint], timeout=5.0) as c:
        await c.put(b"k", b"v")
        assert (await c.get(b"k")).kvs[0].value == b"v"
    base = f"http://{srv.endpoint}"
    status, headers, body = await http_get(base + "/health")
    assert (status, body, headers[CORS_ORIGIN]) == (200, '{"health":"true"}', "*")
    status, headers, body = await http_get(base + "/version")
    assert (status, headers["Content-Type"], body) == (
        200, "application/json", '{"etcdserver":"3.4.0","etcdcluster":"3.4.0"}')
    status, headers, body = await http_get(base + "/metrics")
    assert status == 200 and "etcd_server_has_leader 1.0" in body
    assert srv._muxes[0].routed["grpc"] >= 1 and srv._muxes[0].routed["http"] == 3


async def test_private_directory_removed_and_port_released(tmp_path: Path) -> None:
    srv = EmbeddedServer.for_test(tmp_path / "d", 0)
    async with srv:
        port = srv.ports[0]
        private = Path(srv.grpc_internal[0][len("unix:"):]).parent if srv.grpc_internal else None
        assert srv.native_grpc or (private is not None and private.is_dir())
    assert private is None or not private.exists()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free again


async def test_a_taken_port_is_a_listen_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        srv = EmbeddedServer.for_test(tmp_path / "d", port)
        with pytest.raises(ListenError, match=f"listen tcp 127.0.0.1:{port}: bind: address already in use"):
            await srv.start()
    if not srv.native_grpc:
        assert srv.grpc_internal and not Path(srv.grpc_internal[0][len("unix:"):]).parent.exists()


async def test_watch_streams_and_big_values_cross_the_mux(member: EmbeddedServer) -> None:
    big = os.urandom(1024 * 1024)
    async with Client([member.endpoint], timeout=10.0) as c:
        async with c.watch(b"w/", prefix=True) as w:
            await asyncio.sleep(0.1)
            for i in range(20):
                await c.put(b"w/%d" % i, big if i == 7 else b"x" * i)
            seen: list[bytes] = []
            async with asyncio.timeout(10):
                async for resp in w:
                    seen += [ev.kv.key for ev in resp.events]
                    if len(seen) == 20:
                        break
        assert seen == [b"w/%d" % i for i in range(20)]
        assert (await c.get(b"w/7")).kvs[0].value == big
        # many concurrent calls on one connection
        got = await asyncio.gather(*(c.get(b"w/%d" % (i % 20)) for i in range(200)))
        assert all(r.kvs for r in got)


async def test_cmux_rules_for_what_is_neither(member: EmbeddedServer) -> None:
    port = member.ports[0]
    # not HTTP/2, not an HTTP/1.x request line: closed without an answer (as etcd)
    assert await raw_exchange(port, [b"hello there\r\n\r\n"]) == b"<EOF>"
    assert await raw_exchange(port, [b"GET /health HTTP/2.0\r\n\r\n"]) == b"<EOF>"
    # the preface one byte at a time is still gRPC: the server's SETTINGS frame answers
    out = await raw_exchange(port, [H2_PREFACE[i:i + 1] for i in range(len(H2_PREFACE))],
                             pause=0.002, read_for=1.0)
    assert out[3:4] == b"\x04"  # frame type SETTINGS
    # an HTTP/1.0 request in pieces
    out = await raw_exchange(port, [b"GET /hea", b"lth HTTP/1.0\r", b"\n\r\n"], pause=0.02, read_for=5.0)
    assert out.startswith(b"HTTP/1.0 200 OK\r\n") and out.endswith(b'{"health":"true"}<EOF>')
    # connecting and leaving, or saying nothing, costs nothing
    for _ in range(20):
        socket.create_connection(("127.0.0.1", port)).close()
    async with Client([member.endpoint], timeout=5.0) as c:
        await c.put(b"still", b"ok")


async def test_a_silent_connection_is_dropped_after_the_sniff_timeout() -> None:
    loop = asyncio.get_running_loop()
    async with ClientMux([("127.0.0.1", 0)], grpc=GrpcTarget(host="127.0.0.1", port=1),
                         http=lambda: asyncio.Protocol(), sniff_timeout=0.3) as mux:
        t0 = loop.time()
        assert await raw_exchange(mux.ports[0], [], read_for=3.0) == b"<EOF>"
        assert 0.25 < loop.time() - t0 < 2.5
        assert mux.routed["reject"] == 1


# ------------------------------------------------------------------ forwarding itself


async def _upstream(handler: object) -> tuple[asyncio.Server, GrpcTarget]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    return server, GrpcTarget(host="127.0.0.1", port=server.sockets[0].getsockname()[1])


async def half_close_scenario() -> None:
    """Client: preface + data, then EOF. Upstream: reads to EOF, answers, closes."""
    async def echo_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until EOF: the client's half-close came through
        writer.write(b"got %d bytes" % len(data))
        await writer.drain()
        writer.close()

    server, target = await _upstream(echo_then_close)
    async with server, ClientMux([("127.0.0.1", 0)], grpc=target, http=lambda: asyncio.Protocol()) as mux:
        reader, writer = await asyncio.open_connection("127.0.0.1", mux.ports[0])
        payload = H2_PREFACE + os.urandom(3 * 1024 * 1024)
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        async with asyncio.timeout(10):
            answer = await reader.read()  # to EOF
        assert answer == b"got %d bytes" % len(payload)
        writer.close()
        await asyncio.sleep(0.05)
        assert not mux._links


async def backpressure_scenario() -> None:
    """An upstream that stops reading makes the client's writes block; nothing
    piles up in the mux; once it reads again every byte arrives in order."""
    go = asyncio.Event()
    done = asyncio.Event()
    received = bytearray()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await go.wait()
        while chunk := await reader.read(1 << 20):
            received.extend(chunk)
        done.set()
        writer.close()

    server, target = await _upstream(slow)
    total = 64 * 1024 * 1024
    payload = H2_PREFACE + bytes(range(256)) * ((total - len(H2_PREFACE)) // 256)
    async with server, ClientMux([("127.0.0.1", 0)], grpc=target, http=lambda: asyncio.Protocol()) as mux:
        _reader, writer = await asyncio.open_connection("127.0.0.1", mux.ports[0])
        writer.write(payload)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(writer.drain(), 1.0)
        (client_half,) = mux._links
        assert client_half.peer.transport is not None and client_half.transport is not None
        # what waits in the mux is about one read's worth, not the 64 MiB
        assert client_half.peer.transport.get_write_buffer_size() < 2 * 1024 * 1024
        assert not client_half.transport.is_reading()
        go.set()
        async with asyncio.timeout(30):
            await writer.drain()
            writer.write_eof()
            await done.wait()
        assert received == payload
        writer.close()


async def test_half_close_travels_both_ways() -> None:
    await half_close_scenario()


async def test_backpressure_instead_of_buffering() -> None:
    await backpressure_scenario()


def test_forwarding_on_uvloop() -> None:
    """`meshkit server` runs on uvloop, whose transports differ (no Python frame
    per chunk there: data_received is the other transport's write)."""
    import uvloop

    uvloop.run(half_close_scenario())
    uvloop.run(backpressure_scenario())


def test_embedded_server_on_uvloop(tmp_path: Path) -> None:
    import uvloop

    async def scenario() -> None:
        async with EmbeddedServer.for_test(tmp_path / "d", 0) as srv:
            await wait_ready(srv.endpoint)
            async with Client([srv.endpoint], timeout=5.0) as c:
                async with c.watch(b"k") as w:
                    await asyncio.sleep(0.05)
                    await c.put(b"k", os.urandom(512 * 1024))
                    async with asyncio.timeout(5):
                        async for resp in w:
                            assert resp.events[0].kv.key == b"k"
                            break
                got = await asyncio.gather(*(c.get(b"k") for _ in range(50)))
                assert all(len(r.kvs[0].value) == 512 * 1024 for r in got)
            status, _, body = await http_get(f"http://{srv.endpoint}/health")
            assert (status, body) == (200, '{"health":"true"}')
            assert await raw_exchange(srv.ports[0], [b"nonsense\r\n"]) == b"<EOF>"

    uvloop.run(scenario())


async def test_an_unreachable_grpc_server_drops_the_connection() -> None:
    (port,) = free_ports(1)
    async with ClientMux([("127.0.0.1", 0)], grpc=GrpcTarget(host="127.0.0.1", port=port),
                         http=lambda: asyncio.Protocol()) as mux:
        assert await raw_exchange(mux.ports[0], [H2_PREFACE], read_for=3.0) == b"<EOF>"
        assert mux.routed["grpc"] == 1


async def test_close_sends_goaway_and_ends_streams(tmp_path: Path) -> None:
    srv = EmbeddedServer.for_test(tmp_path / "d", 0)
    await srv.start()
    try:
        await wait_ready(srv.endpoint)
        ch = grpc.aio.insecure_channel(srv.endpoint)
        watch = rpc.WatchStub(ch).Watch()
        await watch.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(key=b"a")))
        assert (await watch.read()).created
    finally:
        t0 = time.monotonic()
        await srv.close(grace=0.5)
        assert time.monotonic() - t0 < 5
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        async with asyncio.timeout(5):
            await watch.read()
    assert ei.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    await ch.close()


# ------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def client_ssl(c: Certs, *, with_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(c.ca))
    if with_cert:
        ctx.load_cert_chain(str(c.client_cert), str(c.client_key))
    return ctx


async def test_tls_port_serves_grpc_with_cn_auth_and_https(certs: Certs, tmp_path: Path) -> None:
    srv = EmbeddedServer.for_test(tmp_path / "d", 0, bcrypt_cost=4)
    srv.listen_tls, srv.listen = srv.listen, []
    srv.tls = TLSInfo(str(certs.server_cert), str(certs.server_key), str(certs.ca), True)
    async with srv:
        assert srv.native_grpc or srv.grpc_internal[0].endswith("grpc-tls.sock")
        url = f"https://{srv.endpoint}"
        async with Client([url], ca_cert=certs.ca, cert=certs.client_cert, key=certs.client_key,
                          timeout=5.0) as c:
            for _ in range(100):
                try:
                    await c.status()
                    break
                except Exception:
                    await asyncio.sleep(0.05)
            # auth on; the certificate's CN (root) is the user, no password needed
            ch = grpc.aio.secure_channel(srv.endpoint, grpc.ssl_channel_credentials(
                certs.ca.read_bytes(), certs.client_key.read_bytes(), certs.client_cert.read_bytes()))
            auth = rpc.AuthStub(ch)
            await auth.UserAdd(pb.AuthUserAddRequest(name="root", password="pw"))
            await auth.UserGrantRole(pb.AuthUserGrantRoleRequest(user="root", role="root"))
            await auth.AuthEnable(pb.AuthEnableRequest())
            await c.put(b"k", b"as-root")
            assert (await c.get(b"k")).kvs[0].value == b"as-root"
            await ch.close()
        # https: HTTP/1.1 terminated by Python with the same certificate and client auth
        status, headers, body = await http_get(url + "/health", ssl_ctx=client_ssl(certs))
        assert (status, body, headers[CORS_ORIGIN]) == (200, '{"health":"true"}', "*")
        status, _, body = await http_get(url + "/version", ssl_ctx=client_ssl(certs))
        assert status == 200 and '"etcdcluster":"3.4.0"' in body
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
            await http_get(url + "/health", ssl_ctx=client_ssl(certs, with_cert=False))
        # curl offers h2 and http/1.1: it gets HTTP/1.1
        p = await asyncio.to_thread(subprocess.run, [
            "curl", "-s", "-i", "--cacert", str(certs.ca), "--cert", str(certs.client_cert),
            "--key", str(certs.client_key), "-m", "5", url + "/health"], capture_output=True, text=True)
        assert p.stdout.startswith("HTTP/1.1 200 OK") and p.stdout.endswith('{"health":"true"}'), p
        routed = srv._muxes[0].routed
        assert routed["grpc"] >= 2 and routed["http"] >= 4


async def test_tls_port_refuses_a_grpc_client_without_certificate(certs: Certs, tmp_path: Path) -> None:
    srv = EmbeddedServer.for_test(tmp_path / "d", 0)
    srv.listen_tls, srv.listen = srv.listen, []
    srv.tls = TLSInfo(str(certs.server_cert), str(certs.server_key), str(certs.ca), True)
    async with srv:
        creds = grpc.ssl_channel_credentials(certs.ca.read_bytes())
        async with grpc.aio.secure_channel(srv.endpoint, creds) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await rpc.KVStub(ch).Range(pb.RangeRequest(key=b"k"), timeout=3)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE


# ------------------------------------------------------------------ --listen-client-http-urls


async def test_client_http_urls_move_http_off_the_client_port(tmp_path: Path) -> None:
    srv = EmbeddedServer.for_test(tmp_path / "d", 0)
    srv.client_http_listen = [("127.0.0.1", 0)]
    async with srv:
        assert not srv.muxed and not srv.grpc_internal
        # grpcio binds the client port itself; the native server sits behind a
        # listener that serves gRPC only
        assert bool(srv._muxes) == srv.native_grpc
        (http_port,) = srv.client_http_ports
        await wait_ready(srv.endpoint)
        status, headers, body = await http_get(f"http://127.0.0.1:{http_port}/health")
        assert (status, body, headers[CORS_ORIGIN]) == (200, '{"health":"true"}', "*")
        assert (await http_get(f"http://127.0.0.1:{http_port}/version"))[0] == 200
        # the client port is grpc's own now: HTTP/1.1 gets no etcd answer there
        out = await raw_exchange(srv.ports[0], [b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"], read_for=2.0)
        assert b'{"health":"true"}' not in out


async def test_server_flag_env_and_yaml(tmp_path: Path) -> None:
    base = ["--listen-client-urls", "http://127.0.0.1:23791", "--advertise-client-urls", "http://127.0.0.1:23791"]
    c = ServerConfig.from_args([*base, "--listen-client-http-urls", "http://127.0.0.1:23795,http://127.0.0.1:23794"], {})
    assert c.listen_client_http_urls == ("http://127.0.0.1:23794", "http://127.0.0.1:23795")
    assert c.listen_addresses("client-http") == [("127.0.0.1", 23794, "http"), ("127.0.0.1", 23795, "http")]
    assert ServerConfig.from_args(base, {}).listen_client_http_urls == ()
    c = ServerConfig.from_args(base, {"ETCD_LISTEN_CLIENT_HTTP_URLS": "http://localhost:23796"})
    assert c.listen_addresses("client-http") == [("127.0.0.1", 23796, "http")]
    with pytest.raises(ConfigError, match=r"ETCD_LISTEN_CLIENT_HTTP_URLS.*shadowed"):
        ServerConfig.from_args([*base, "--listen-client-http-urls", "http://127.0.0.1:1"],
                               {"ETCD_LISTEN_CLIENT_HTTP_URLS": "http://127.0.0.1:2"})
    cfg = tmp_path / "etcd.yml"
    cfg.write_text("listen-client-urls: http://127.0.0.1:23791\nadvertise-client-urls: http://127.0.0.1:23791\n"
                   "listen-client-http-urls: http://127.0.0.1:23797\n")
    c = ServerConfig.from_args(["--config-file", str(cfg), "--listen-client-http-urls", "http://127.0.0.1:9"], {})
    assert c.listen_client_http_urls == ("http://127.0.0.1:23797",)
    with pytest.raises(ConfigError, match=r"must be provided for client url https://127\.0\.0\.1:23798"):
        ServerConfig.from_args([*base, "--listen-client-http-urls", "https://127.0.0.1:23798"], {})
    with pytest.raises(ConfigError, match="expected IP in URL for binding"):
        ServerConfig.from_args([*base, "--listen-client-http-urls", "http://example.com:23799"], {})
    with pytest.raises(ConfigError, match="-listen-client-http-urls"):
        ServerConfig.from_args([*base, "--listen-client-http-urls", "ftp://x:1"], {})


async def test_meshkit_server_with_client_http_urls(tmp_path: Path) -> None:
    (hport,) = free_ports(1)
    sp = start_meshkit(tmp_path, "--listen-client-http-urls", f"http://127.0.0.1:{hport}")
    try:
        await wait_ready(sp.endpoint)
        wait_port(hport, 10.0)
        status, _, body = await http_get(f"http://127.0.0.1:{hport}/health")
        assert (status, body) == (200, '{"health":"true"}')
        async with Client([sp.endpoint], timeout=5.0) as c:
            await c.put(b"k", b"v")
    finally:
        sp.stop()
    assert "gRPC)" in sp.log_path.read_text()  # "serving client requests on ... (gRPC)"
