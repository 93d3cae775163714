"""A real Go gRPC client, resolving ``etcd:///meshkit/services/hello`` through etcd's own
resolver package, routes only to the instances meshkit's registry keeps registered.

The client (``go/resolverclient/main.go``, ours) is built offline from Debian's Go
sources: ``golang-go``, ``golang-etcd-server-dev`` (etcd 3.4.23, whose Debian package
carries the etcd 3.5 naming API as ``go.etcd.io/etcd/clientv3/naming/resolver``) and
``golang-google-grpc-dev`` (grpc-go 1.33), in GOPATH mode with ``GOPROXY=off``: no
module is downloaded. The binary is cached in the temp dir, keyed by the source and
the Go version. Without ``go`` the test skips, unless ``MESHKIT_REQUIRE_GO=1``.

The backends are real grpc.aio servers on 127.0.0.1 answering
``/meshkit.test.Hello/Say`` with their name, with ``grpc.health.v1`` that the
``meshkit register`` sidecars check. Against the real etcd and ``meshkit server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from meshkit.client import Client
from meshkit.registry import Instance, Registrar, decode_value, encode_value
from tests.tools.registry.conftest import Server, eventually, sidecar_proc

# The first test also builds the client (about 25 s with a cold Go build cache).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

GO_SRC = Path(__file__).parent / "go" / "resolverclient"
GOCODE = Path("/usr/share/gocode")
# Go packages the client imports, from Debian's -dev packages (GOPATH mode).
GO_DEPS = {
    "go.etcd.io/etcd/clientv3/naming/resolver": "golang-etcd-server-dev",
    "google.golang.org/grpc": "golang-google-grpc-dev",
    "github.com/golang/protobuf/ptypes/wrappers": "golang-github-golang-protobuf-1-3-dev",
}
APT = "apt-get install golang-go golang-etcd-server-dev golang-google-grpc-dev"
SERVICE = "hello"
TARGET = f"etcd:///meshkit/services/{SERVICE}"


def _unavailable(msg: str) -> None:
    if os.environ.get("MESHKIT_REQUIRE_GO"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def go_client_binary() -> Path:
    """Build the Go client once (cached across runs in the temp dir)."""
    go = shutil.which("go")
    if go is None:
        _unavailable(f"no Go toolchain ({APT})")
        raise AssertionError("unreachable")
    missing = sorted({pkg for path, pkg in GO_DEPS.items() if not (GOCODE / "src" / path).is_dir()})
    if missing:
        _unavailable(f"Debian Go sources missing: apt-get install {' '.join(missing)}")
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    digest = hashlib.sha256(version.encode() + (GO_SRC / "main.go").read_bytes()).hexdigest()[:16]
    tmp = Path(tempfile.gettempdir())
    binary = tmp / f"meshkit-go-resolverclient-{digest}"
    if binary.exists():
        return binary
    env = {
        **os.environ,
        "GO111MODULE": "off",  # GOPATH mode: imports come from Debian's /usr/share/gocode
        "GOPATH": f"{tmp / 'meshkit-gopath'}:{GOCODE}",
        "GOCACHE": str(tmp / "meshkit-go-build-cache"),
        "GOPROXY": "off",  # never download a module
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
    }
    partial = binary.with_name(binary.name + f".{os.getpid()}.tmp")
    res = subprocess.run([go, "build", "-o", str(partial), "."], cwd=GO_SRC, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, f"go build failed:\n{res.stdout}{res.stderr}"
    os.replace(partial, binary)
    for old in tmp.glob("meshkit-go-resolverclient-*"):  # builds of earlier sources
        if old != binary:
            old.unlink(missing_ok=True)
    return binary


class HelloBackend:
    """A grpc.aio server on 127.0.0.1: ``/meshkit.test.Hello/Say`` answers its name;
    ``grpc.health.v1.Health`` answers what ``set_serving`` said."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.port = 0
        self.health = health_aio.HealthServicer()
        self._server: grpc.aio.Server | None = None

    async def _say(self, request: StringValue, context: grpc.aio.ServicerContext) -> StringValue:
        self.calls += 1
        return StringValue(value=self.name)

    async def start(self) -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("meshkit.test.Hello", {
            "Say": grpc.unary_unary_rpc_method_handler(
                self._say, request_deserializer=StringValue.FromString,
                response_serializer=StringValue.SerializeToString),
        })])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        await self.set_serving(True)

    async def set_serving(self, serving: bool) -> None:
        s = health_pb2.HealthCheckResponse
        await self.health.set("", s.SERVING if serving else s.NOT_SERVING)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def backends(*names: str) -> AsyncIterator[dict[str, HelloBackend]]:
    out = {n: HelloBackend(n) for n in names}
    try:
        for b in out.values():
            await b.start()
        yield out
    finally:
        for b in out.values():
            await b.stop()


class GoClient:
    """The Go client as a subprocess; a thread collects its output lines."""

    def __init__(self, binary: Path, endpoint: str, log: Path, target: str = TARGET) -> None:
        self.log = log
        self._stderr = open(log, "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            [str(binary), "-endpoints", endpoint, "-target", target, "-interval", "20ms",
             "-duration", "90s", "-call-timeout", "1s"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._lock:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def answers(self) -> list[str]:
        """The backend name of every successful call, in order."""
        return [ln.split()[2] for ln in self.snapshot() if ln.startswith("ok ")]

    def errors(self) -> list[str]:
        return [ln for ln in self.snapshot() if ln.startswith("err ")]

    async def routes_to(self, expected: set[str], what: str, window: int = 40,
                        timeout: float = 15.0) -> int:  # noqa: ASYNC109
        """Wait until the last ``window`` answers came from exactly ``expected`` (each
        of them answered, no other did); return the number of answers at that point."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.answers()
            if len(got) >= window and set(got[-window:]) == expected:
                return len(got)
            if self.proc.poll() is not None:
                err = self.log.read_text(errors="replace")[:2000]
                raise AssertionError(f"the Go client exited ({self.proc.returncode}) before: {what}\n{err}")
            if time.monotonic() > deadline:
                tail = got[-window:]
                raise AssertionError(f"{what}: after {timeout}s the last {len(tail)} answers came "
                                     f"from {sorted(set(tail))}, expected {sorted(expected)}")
            await asyncio.sleep(0.05)

    async def stays_on(self, since: int, allowed: set[str], calls: int = 40,
                       timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """``calls`` more answers arrive, and every answer from ``since`` on is allowed."""
        deadline = time.monotonic() + timeout
        while len(self.answers()) < since + calls:
            assert time.monotonic() < deadline, "the Go client stopped answering"
            await asyncio.sleep(0.05)
        stray = [(i, a) for i, a in enumerate(self.answers()) if i >= since and a not in allowed]
        assert not stray, f"answers from outside {sorted(allowed)}: {stray[:5]}"

    def stop(self) -> int:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()  # the client stops at once when stdin closes
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self._reader.join(5)
        self._stderr.close()
        return rc


@contextlib.contextmanager
def go_client(binary: Path, endpoint: str, log: Path, target: str = TARGET) -> Iterator[GoClient]:
    gc = GoClient(binary, endpoint, log, target)
    try:
        yield gc
    finally:
        if gc.proc.poll() is None:
            gc.proc.kill()
            gc.proc.wait(5)


def _sidecar_args(server: Server, b: HelloBackend, *extra: str) -> list[str]:
    return ["--endpoints", server.endpoint, "--service", SERVICE, "--addr", b.addr,
            "--id", b.name, "--check", f"grpc://{b.addr}", "--interval", "100ms",
            "--timeout", "1s", "--ttl", "5", *extra]


async def test_go_resolver_routes_to_live_healthy_instances(
        server: Server, client: Client, go_client_binary: Path, tmp_path: Path) -> None:
    async with backends("a", "b", "c", "d") as bk:
        a, b, c, d = bk["a"], bk["b"], bk["c"], bk["d"]
        # d is up but registered only under another service: it must never answer.
        async with Registrar(client, Instance("other", d.addr, id="d"), ttl=30) as rd:
            await rd.wait_registered(10)
            with sidecar_proc(_sidecar_args(server, a), tmp_path / "sidecar-a.log"), \
                    sidecar_proc(_sidecar_args(server, b), tmp_path / "sidecar-b.log") as side_b:

                async def two_keys() -> bool:
                    res = await client.get(f"meshkit/services/{SERVICE}/", prefix=True)
                    return len(res.kvs) == 2
                await eventually(two_keys, 15, "both sidecars registered")

                with go_client(go_client_binary, server.endpoint, tmp_path / "go-client.log") as gc:
                    await gc.routes_to({"a", "b"}, "calls spread over the two registered backends")

                    # a's health check fails: its sidecar withdraws it, calls stop reaching it.
                    t0 = time.monotonic()
                    await a.set_serving(False)
                    n = await gc.routes_to({"b"}, "a withdrawn after its check failed")
                    withdraw_s = time.monotonic() - t0
                    await gc.stays_on(n, {"b"})

                    # A new instance registered in-process starts receiving calls.
                    async with Registrar(client, Instance(SERVICE, c.addr, id="c"), ttl=30) as rc:
                        await rc.wait_registered(10)
                        await gc.routes_to({"b", "c"}, "c receives calls once registered")

                        # a passes again: back in the rotation.
                        await a.set_serving(True)
                        await gc.routes_to({"a", "b", "c"}, "a back after its check passes")
                    # Leaving revoked c's lease: its key is gone, so are its calls.
                    n = await gc.routes_to({"a", "b"}, "c deregistered")
                    await gc.stays_on(n, {"a", "b"})

                    # b's sidecar is stopped (SIGTERM): b deregistered, a alone answers.
                    side_b.send_signal(signal.SIGTERM)
                    assert await asyncio.to_thread(side_b.wait, 10) == 0
                    n = await gc.routes_to({"a"}, "b deregistered by its sidecar")
                    await gc.stays_on(n, {"a"})

                    lines = gc.snapshot()
                    assert gc.stop() == 0
    answers = gc.answers()
    assert d.calls == 0 and "d" not in answers
    # Every backend was running throughout: no call failed once the first one went through.
    first_ok = next(i for i, ln in enumerate(lines) if ln.startswith("ok "))
    failed = [ln for ln in lines[first_ok:] if ln.startswith("err ")]
    assert failed == [], failed[:5]
    assert withdraw_s < 5.0
    assert sum(bk[n].calls for n in "abc") == len(answers)


async def test_go_target_needs_a_trailing_slash_when_names_share_a_prefix(
        server: Server, client: Client, go_client_binary: Path, tmp_path: Path) -> None:
    """etcd's resolver watches its target as a plain key prefix: etcd:///<prefix>/hello
    also takes the instances of a service named hello-2; etcd:///<prefix>/hello/ does not."""
    async with backends("h", "h2") as bk, \
            Registrar(client, Instance(SERVICE, bk["h"].addr, id="h"), ttl=30) as r1, \
            Registrar(client, Instance(f"{SERVICE}-2", bk["h2"].addr, id="h2"), ttl=30) as r2:
        await r1.wait_registered(10)
        await r2.wait_registered(10)
        with go_client(go_client_binary, server.endpoint, tmp_path / "go-bare.log") as bare:
            await bare.routes_to({"h", "h2"}, "the bare target takes hello-2's instance too")
            assert bare.stop() == 0
        with go_client(go_client_binary, server.endpoint, tmp_path / "go-slash.log",
                       TARGET + "/") as slash:
            n = await slash.routes_to({"h"}, "the target with a trailing slash takes hello's only")
            await slash.stays_on(0, {"h"}, calls=n + 20)
            assert slash.stop() == 0


def test_values_encode_as_go_marshals_them(go_client_binary: Path) -> None:
    """meshkit's value bytes are what Go's encoding/json writes for the same struct."""
    insts = [
        Instance("web", "10.0.0.7:8080", id="web-1", metadata={"team": "a&b", "tag": "<x>"},
                 weight=5, zone="eu-1", version="1.2.3"),
        Instance("api", "[::1]:9000", metadata={"city": "Zürich", "sep": "a\u2028b\u2029c", "e": ""}),
        Instance("x", "h:1", weight=0),
    ]
    lines = "".join(json.dumps([i.addr, i.metadata_json()]) + "\n" for i in insts)
    res = subprocess.run([str(go_client_binary), "-marshal"], input=lines.encode(),
                         capture_output=True, timeout=30, check=False)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout.splitlines() == [encode_value(i) for i in insts]
    for i in insts:
        assert decode_value(encode_value(i)).metadata is None  # what Go's resolver hands to grpc-go
