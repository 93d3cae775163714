"""Client and peer TLS: the real etcdctl with --cacert/--cert/--key against meshkit
and against the real etcd started with the same certificates and flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from meshkit.client import Client
from meshkit.server.embed import EmbeddedServer
from meshkit.server.tls import TLSInfo, client_cert_common_name
from tests.server.tls.certs import Certs, make_certs
from tests.support.procs import ETCD, ETCDCTL, free_ports, require_reference_binaries, wait_port


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _flags(kind: str, data: Path, c: Certs, cport: int, pport: int) -> list[str]:
    return [
        "--name", "default", "--data-dir", str(data),
        "--listen-client-urls", f"https://127.0.0.1:{cport}",
        "--advertise-client-urls", f"https://127.0.0.1:{cport}",
        "--listen-peer-urls", f"https://127.0.0.1:{pport}",
        "--initial-advertise-peer-urls", f"https://127.0.0.1:{pport}",
        "--initial-cluster", f"default=https://127.0.0.1:{pport}",
        "--cert-file", str(c.server_cert), "--key-file", str(c.server_key),
        "--trusted-ca-file", str(c.ca), "--client-cert-auth",
        "--peer-cert-file", str(c.server_cert), "--peer-key-file", str(c.server_key),
        "--peer-trusted-ca-file", str(c.ca), "--peer-client-cert-auth",
    ]


MESHKIT_CTL = [sys.executable, "-m", "meshkit", "ctl"]


def _ctl(cport: int, c: Certs | None, *args: str, tool: str = "etcdctl") -> subprocess.CompletedProcess[str]:
    assert ETCDCTL is not None
    tls = ["--cacert", str(c.ca), "--cert", str(c.client_cert), "--key", str(c.client_key)] if c else []
    argv0 = [ETCDCTL] if tool == "etcdctl" else MESHKIT_CTL
    return subprocess.run([*argv0, "--endpoints", f"https://127.0.0.1:{cport}", "--command-timeout=5s",
                           "--dial-timeout=2s", *tls, *args],
                          capture_output=True, text=True, timeout=30, env={"ETCDCTL_API": "3"})


@pytest.mark.parametrize("kind", ["meshkit", "etcd"])
def test_etcdctl_over_tls_with_client_cert_auth(kind: str, certs: Certs, tmp_path: Path) -> None:
    require_reference_binaries()
    cport, pport = free_ports(2)
    argv = ([sys.executable, "-m", "meshkit", "server"] if kind == "meshkit" else [str(ETCD)])
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen([*argv, *_flags(kind, tmp_path / "data", certs, cport, pport)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_port(cport, 20.0)
        for _ in range(100):
            r = _ctl(cport, certs, "put", "k", "v")
            if r.returncode == 0:
                break
        assert r.stdout == "OK\n", r.stderr
        assert _ctl(cport, certs, "get", "k", "--print-value-only").stdout == "v\n"
        assert _ctl(cport, certs, "endpoint", "health").returncode == 0
        # Without a client certificate the handshake is refused.
        no_cert = subprocess.run([str(ETCDCTL), "--endpoints", f"https://127.0.0.1:{cport}",
                                  "--cacert", str(certs.ca), "--dial-timeout=1s", "--command-timeout=2s",
                                  "get", "k"], capture_output=True, text=True, timeout=30,
                                 env={"ETCDCTL_API": "3"})
        assert no_cert.returncode != 0
        # meshkit ctl with the same TLS flags answers as etcdctl does
        for args in (["put", "k2", "v2"], ["get", "k", "--print-value-only"], ["get", "k2", "-w", "json"]):
            ref, ours = _ctl(cport, certs, *args), _ctl(cport, certs, *args, tool="meshkit")
            assert ours.returncode == ref.returncode == 0, (args, ref.stderr, ours.stderr)
            if args[-1] != "json":
                assert ours.stdout == ref.stdout, args
            else:  # revisions moved on by one put between the two runs
                assert ours.stdout.split('"kvs"')[1] == ref.stdout.split('"kvs"')[1]
        assert _ctl(cport, certs, "del", "k2", tool="meshkit").stdout == "1\n"
        # no client certificate: refused by the server's client-cert-auth
        ours = subprocess.run([*MESHKIT_CTL, "--endpoints", f"https://127.0.0.1:{cport}", "--cacert", str(certs.ca),
                               "--dial-timeout=1s", "--command-timeout=2s", "get", "k"],
                              capture_output=True, text=True, timeout=30)
        assert ours.returncode != 0
        # a certificate without its key is etcdctl's usage error
        half = subprocess.run([*MESHKIT_CTL, "--endpoints", f"https://127.0.0.1:{cport}",
                               "--cert", str(certs.client_cert), "get", "k"], capture_output=True, text=True, timeout=30)
        assert half.returncode == 128 and "KeyFile and CertFile must both be present" in half.stderr, half
    finally:
        proc.terminate()
        proc.wait(10)
    assert "unsupported" not in (tmp_path / "log").read_text()


async def test_client_tls_and_common_name(certs: Certs, tmp_path: Path) -> None:
    """meshkit's Client dials https with ca_cert/cert/key; the servicer sees the verified CN."""
    tls = TLSInfo(str(certs.server_cert), str(certs.server_key), str(certs.ca), True)
    srv = EmbeddedServer.for_test(tmp_path / "d", 0)
    srv.listen_tls, srv.listen, srv.tls = srv.listen, [], tls
    async with srv:
        async with Client([f"https://{srv.endpoint}"], ca_cert=certs.ca, cert=certs.client_cert,
                          key=certs.client_key, timeout=5.0) as c:
            await c.put(b"a", b"1")
            assert (await c.get(b"a")).kvs[0].value == b"1"
    # The CN helper on a bare grpc.aio server with the same credentials.
    seen: list[str | None] = []

    async def whoami(req: bytes, ctx: grpc.aio.ServicerContext) -> bytes:
        seen.append(client_cert_common_name(ctx))
        return b""

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "t.T", {"W": grpc.unary_unary_rpc_method_handler(whoami)}),))
    port = server.add_secure_port("127.0.0.1:0", tls.server_credentials())
    await server.start()
    try:
        creds = grpc.ssl_channel_credentials(certs.ca.read_bytes(), certs.client_key.read_bytes(),
                                             certs.client_cert.read_bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            await ch.unary_unary("/t.T/W")(b"", timeout=5)
    finally:
        await server.stop(0)
    assert seen == ["root"]
