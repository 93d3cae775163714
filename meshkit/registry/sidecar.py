"""The sidecar: a :class:`Registrar` driven by a :class:`HealthMonitor`.

With a check, the instance is registered only while the check passes (after
``rise`` consecutive passes) and withdrawn after ``fall`` consecutive failures;
the lease stays alive meanwhile. ``drain()`` withdraws the key, waits ``drain``
seconds so in-flight requests finish, then revokes the lease.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import TracebackType

from meshkit._internal.clock import Clock, RealClock
from meshkit._internal.errors import MeshkitError
from meshkit._internal.logging import get_logger
from meshkit.client import Client
from meshkit.registry.health import CheckResult, HealthCheck, HealthMonitor, parse_check
from meshkit.registry.model import DEFAULT_PREFIX, Instance, InvalidInstanceError
from meshkit.registry.registrar import Registrar

__all__ = ["Sidecar", "SidecarConfig"]

_log = get_logger("registry.sidecar")


@dataclass(frozen=True)
class SidecarConfig:
    """What ``meshkit register`` runs with; ``validate()`` names every broken rule."""

    endpoints: tuple[str, ...]
    service: str
    addr: str
    id: str = ""
    ttl: int = 10
    metadata: tuple[tuple[str, str], ...] = ()
    weight: int = 1
    zone: str = ""
    version: str = ""
    check: str = ""
    interval: float = 10.0
    timeout: float = 5.0
    rise: int = 1
    fall: int = 1
    drain: float = 0.0
    prefix: str = DEFAULT_PREFIX
    dial_timeout: float = 2.0

    def instance(self) -> Instance:
        return Instance(service=self.service, addr=self.addr, id=self.id,
                        metadata=dict(self.metadata), weight=self.weight, zone=self.zone,
                        version=self.version)

    def validate(self) -> list[str]:
        """Every broken rule, as messages (empty: valid)."""
        problems: list[str] = []
        if not self.endpoints:
            problems.append("--endpoints: at least one endpoint is required")
        if not self.service:
            problems.append("--service is required")
        if not self.addr:
            problems.append("--addr is required (HOST:PORT the instance serves on)")
        if self.service and self.addr:
            try:
                self.instance().validate()
            except InvalidInstanceError as e:
                problems.extend(e.problems)
        keys = [k for k, _ in self.metadata]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            problems.append(f"--meta: key(s) given twice: {', '.join(dup)}")
        if self.ttl < 1:
            problems.append(f"--ttl {self.ttl}: must be >= 1 (seconds)")
        if self.interval <= 0:
            problems.append("--interval must be positive")
        if self.timeout <= 0:
            problems.append("--timeout must be positive")
        if self.rise < 1 or self.fall < 1:
            problems.append("--rise and --fall must be >= 1")
        if self.drain < 0:
            problems.append("--drain must be >= 0")
        if not self.prefix.strip("/"):
            problems.append("--prefix must not be empty")
        if self.check:
            try:
                parse_check(self.check)
            except ValueError as e:
                problems.append(f"--check: {e}")
        return problems


class Sidecar:
    """``async with Sidecar(client, config) as s: ...; await s.drain()``."""

    def __init__(self, client: Client, config: SidecarConfig, *, check: HealthCheck | None = None,
                 clock: Clock | None = None) -> None:
        problems = config.validate()
        if problems:
            raise ValueError("; ".join(problems))
        self.config = config
        self.client = client
        self._clock: Clock = clock or RealClock()
        self.check = check if check is not None else (parse_check(config.check) if config.check else None)
        self.registrar = Registrar(client, config.instance(), prefix=config.prefix, ttl=config.ttl,
                                   serving=self.check is None, clock=self._clock)
        self.monitor: HealthMonitor | None = None
        if self.check is not None:
            self.monitor = HealthMonitor(self.check, self._on_health, interval=config.interval,
                                         timeout=config.timeout, rise=config.rise,
                                         fall=config.fall, clock=self._clock)
        self.draining = False

    async def _on_health(self, healthy: bool, result: CheckResult) -> None:
        if self.draining:
            return
        try:
            await self.registrar.set_serving(healthy, timeout=self.config.timeout + 5.0)
        except TimeoutError:
            # The registrar keeps retrying in the background; it logs each failure.
            _log.warning("the store did not confirm %s yet; still retrying",
                         "registration" if healthy else "withdrawal")

    async def __aenter__(self) -> Sidecar:
        await self.registrar.start()
        if self.monitor is not None:
            try:
                await self.monitor.__aenter__()
            except BaseException:
                await self.registrar.close()
                raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def drain(self) -> None:
        """Withdraw the key, wait ``drain`` seconds, then revoke the lease."""
        self.draining = True
        if self.monitor is not None:
            await self.monitor.close()
        _log.info("draining service=%s id=%s drain=%gs", self.config.service,
                  self.registrar.instance.instance_id, self.config.drain)
        if self.config.drain > 0:
            with contextlib.suppress(TimeoutError, MeshkitError):
                await self.registrar.set_serving(False, timeout=min(self.config.drain, 5.0))
            await self._clock.sleep(self.config.drain)
        await self.close()

    async def close(self) -> None:
        if self.monitor is not None:
            await self.monitor.close()
        await self.registrar.close()
