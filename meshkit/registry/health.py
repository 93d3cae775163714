"""Health checks like Consul's: HTTP (2xx passes), TCP connect, gRPC health
(``grpc.health.v1.Health/Check`` answers SERVING), an exec command (exit 0 passes),
with thresholds for consecutive passes and failures.

:class:`HealthState` is the pure threshold logic; :class:`HealthMonitor` runs a
check every ``interval`` on an injected clock and calls back on each transition.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import aiohttp
import grpc

from meshkit._internal.clock import Clock, RealClock
from meshkit._internal.logging import get_logger
from meshkit.registry.model import RegistryError

__all__ = [
    "CheckResult",
    "ExecCheck",
    "GRPCCheck",
    "HTTPCheck",
    "HealthCheck",
    "HealthMonitor",
    "HealthState",
    "InvalidCheckError",
    "TCPCheck",
    "parse_check",
]

_log = get_logger("registry.health")


class InvalidCheckError(RegistryError, ValueError):
    """A check specification that names no usable check."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    passed: bool
    detail: str


class HealthCheck(Protocol):
    """One probe; ``timeout`` bounds it and a time-out is a failure."""

    def describe(self) -> str: ...

    async def probe(self, timeout: float) -> CheckResult: ...  # noqa: ASYNC109


async def _bounded(coro: Awaitable[CheckResult], seconds: float, what: str) -> CheckResult:
    try:
        return await asyncio.wait_for(coro, seconds)
    except TimeoutError:
        return CheckResult(False, f"{what}: timed out after {seconds:g}s")


class HTTPCheck:
    """GET ``url``; any 2xx status passes (redirects are not followed, like Consul's 3xx = fail)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def describe(self) -> str:
        return f"http {self.url}"

    async def probe(self, timeout: float) -> CheckResult:  # noqa: ASYNC109
        async def run() -> CheckResult:
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                        s.get(self.url, allow_redirects=False) as resp:
                    await resp.read()
                    return CheckResult(200 <= resp.status < 300, f"HTTP {resp.status}")
            except (aiohttp.ClientError, OSError) as e:
                return CheckResult(False, f"HTTP request failed: {e!r}")
        return await _bounded(run(), timeout, self.describe())


class TCPCheck:
    """Passes when a TCP connection to ``host:port`` opens."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def describe(self) -> str:
        return f"tcp {self.host}:{self.port}"

    async def probe(self, timeout: float) -> CheckResult:  # noqa: ASYNC109
        async def run() -> CheckResult:
            try:
                _reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as e:
                return CheckResult(False, f"connect failed: {e}")
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return CheckResult(True, "connected")
        return await _bounded(run(), timeout, self.describe())


def _encode_health_request(service: str) -> bytes:
    # grpc.health.v1.HealthCheckRequest { string service = 1; }
    data = service.encode()
    out = bytearray()
    if data:
        out.append(0x0A)
        n = len(data)
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
        out += data
    return bytes(out)


def _decode_health_status(data: bytes) -> int:
    """``HealthCheckResponse.status`` (field 1, varint); unknown fields skipped."""
    i = 0
    status = 0

    def varint() -> int:
        nonlocal i
        shift = 0
        val = 0
        while True:
            if i >= len(data) or shift > 63:
                raise ValueError("truncated varint")
            b = data[i]
            i += 1
            val |= (b & 0x7F) << shift
            if not b & 0x80:
                return val
            shift += 7

    while i < len(data):
        tag = varint()
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            v = varint()
            if field == 1:
                status = v
        elif wire == 2:
            i += varint()
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return status


GRPC_HEALTH_METHOD = "/grpc.health.v1.Health/Check"
SERVING = 1


class GRPCCheck:
    """``grpc.health.v1.Health/Check`` on ``target``; passes when the status is SERVING."""

    def __init__(self, target: str, service: str = "") -> None:
        self.target = target
        self.service = service

    def describe(self) -> str:
        return f"grpc {self.target}" + (f"/{self.service}" if self.service else "")

    async def probe(self, timeout: float) -> CheckResult:  # noqa: ASYNC109
        async def run() -> CheckResult:
            async with grpc.aio.insecure_channel(self.target) as ch:
                call = ch.unary_unary(GRPC_HEALTH_METHOD, request_serializer=None,
                                      response_deserializer=None)
                try:
                    raw = await call(_encode_health_request(self.service), timeout=timeout)
                except grpc.aio.AioRpcError as e:
                    return CheckResult(False, f"{e.code().name}: {e.details()}")
            status = _decode_health_status(raw)
            names = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
            return CheckResult(status == SERVING, names.get(status, str(status)))
        return await _bounded(run(), timeout + 0.5, self.describe())


class ExecCheck:
    """Runs ``argv``; exit status 0 passes. A time-out kills the process."""

    def __init__(self, argv: list[str]) -> None:
        if not argv:
            raise InvalidCheckError("an exec check needs a command")
        self.argv = argv

    def describe(self) -> str:
        return "exec " + shlex.join(self.argv)

    async def probe(self, timeout: float) -> CheckResult:  # noqa: ASYNC109
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)
        except OSError as e:
            return CheckResult(False, f"cannot run: {e}")
        try:
            rc = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return CheckResult(False, f"timed out after {timeout:g}s (killed)")
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise
        return CheckResult(rc == 0, f"exit status {rc}")


def parse_check(spec: str) -> HealthCheck:
    """``http(s)://...`` -> HTTP, ``tcp://HOST:PORT`` -> TCP, ``grpc://HOST:PORT[/SERVICE]``
    -> gRPC health; anything else is a command line run without a shell."""
    spec = spec.strip()
    if not spec:
        raise InvalidCheckError("empty check")
    low = spec.lower()
    if low.startswith(("http://", "https://")):
        return HTTPCheck(spec)
    for scheme in ("tcp://", "grpc://"):
        if low.startswith(scheme):
            rest = spec[len(scheme):]
            hostport, _, service = rest.partition("/")
            host, sep, port = hostport.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise InvalidCheckError(f"{spec!r}: expected {scheme}HOST:PORT")
            if scheme == "tcp://":
                if service:
                    raise InvalidCheckError(f"{spec!r}: a tcp check takes no path")
                return TCPCheck(host, int(port))
            return GRPCCheck(hostport, service)
    try:
        argv = shlex.split(spec)
    except ValueError as e:
        raise InvalidCheckError(f"{spec!r}: {e}") from None
    return ExecCheck(argv)


class HealthState:
    """Consecutive-result thresholds: ``rise`` passes make it healthy, ``fall``
    failures make it unhealthy. Starts unhealthy (nothing is registered before it
    passes), like a Consul check that starts critical."""

    def __init__(self, rise: int = 1, fall: int = 1) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be >= 1")
        self.rise = rise
        self.fall = fall
        self.healthy = False
        self.passes = 0
        self.failures = 0

    def record(self, passed: bool) -> bool:
        """Count one result; True when the healthy/unhealthy state changed."""
        if passed:
            self.passes += 1
            self.failures = 0
            if not self.healthy and self.passes >= self.rise:
                self.healthy = True
                return True
        else:
            self.failures += 1
            self.passes = 0
            if self.healthy and self.failures >= self.fall:
                self.healthy = False
                return True
        return False


Transition = Callable[[bool, CheckResult], Awaitable[None]]


class HealthMonitor:
    """``async with HealthMonitor(check, on_change, ...)``: probes every ``interval``.

    ``on_change(healthy, result)`` is awaited on each transition (not concurrently).
    Leaving cancels the probe loop.
    """

    def __init__(self, check: HealthCheck, on_change: Transition, *, interval: float = 10.0,
                 timeout: float = 5.0, rise: int = 1, fall: int = 1, clock: Clock | None = None) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("interval and timeout must be positive")
        self.check = check
        self.state = HealthState(rise, fall)
        self.interval = interval
        self.timeout = timeout
        self.last: CheckResult | None = None
        self.probes = 0
        self._on_change = on_change
        self._clock: Clock = clock or RealClock()
        self._task: asyncio.Task[None] | None = None

    @property
    def healthy(self) -> bool:
        return self.state.healthy

    async def __aenter__(self) -> HealthMonitor:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="meshkit-health")
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_once(self) -> CheckResult:
        """One probe and its bookkeeping (the loop's body)."""
        result = await self.check.probe(self.timeout)
        self.probes += 1
        prev = self.last
        self.last = result
        if prev is None or prev.passed != result.passed:
            _log.info("check %s %s: %s", self.check.describe(),
                      "passed" if result.passed else "failed", result.detail)
        if self.state.record(result.passed):
            _log.info("instance is now %s (check %s)", "healthy" if self.state.healthy else "unhealthy",
                      self.check.describe())
            await self._on_change(self.state.healthy, result)
        return result

    async def _run(self) -> None:
        while True:
            started = self._clock.monotonic()
            await self.run_once()
            await self._clock.sleep(max(0.0, self.interval - (self._clock.monotonic() - started)))
