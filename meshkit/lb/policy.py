"""Picking one instance per call: the pure part of the balancer (no I/O, no clock).

An :class:`Endpoint` is one instance's sub-channel as the picker sees it. Which
endpoints may take a new call (:func:`candidates`):

* never one the registry no longer lists (``withdrawn``: removed, so draining),
  one with weight 0 (registered but draining), one whose connection is failing
  (TRANSIENT_FAILURE) or whose gRPC health check fails;
* protect threshold: when the healthy share of the known endpoints (listed ones
  plus those withdrawn within the protect window) drops below the threshold, every
  known endpoint whose connection works is a candidate again (Nacos's rule), so a
  mass check failure does not pile every call on the last instance;
* local zone: when some candidate is in the local zone, only those are.

Then a policy picks one: :class:`RoundRobin`, :class:`PowerOfTwo` (two at random,
the one with fewer calls in flight per unit of weight), :class:`Weighted`
(nginx's smooth weighted round robin).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from meshkit.registry.model import Instance

__all__ = [
    "POLICIES",
    "Endpoint",
    "Policy",
    "PolicyName",
    "PowerOfTwo",
    "RoundRobin",
    "Weighted",
    "candidates",
    "make_policy",
]

PolicyName = Literal["round_robin", "p2c", "weighted"]
POLICIES: tuple[PolicyName, ...] = ("round_robin", "p2c", "weighted")


@dataclass(eq=False)
class Endpoint:
    """One instance's sub-channel. ``channel`` is the grpc channel (aio or blocking)."""

    key: str
    instance: Instance
    channel: Any = None
    in_flight: int = 0
    calls: int = 0  # calls started on it
    connected_ok: bool = True  # False while the channel is in TRANSIENT_FAILURE
    health_ok: bool = True  # False while the gRPC health check fails
    withdrawn_at: float | None = None  # when the registry stopped listing it
    closed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def addr(self) -> str:
        return self.instance.addr

    @property
    def withdrawn(self) -> bool:
        return self.withdrawn_at is not None

    @property
    def healthy(self) -> bool:
        """May take new calls in normal operation."""
        return (not self.withdrawn and not self.closed and self.instance.weight > 0
                and self.connected_ok and self.health_ok)


def candidates(endpoints: Sequence[Endpoint], *, local_zone: str = "",
               protect_threshold: float = 0.0) -> list[Endpoint]:
    """The endpoints a new call may go to (see the module doc), sorted by key."""
    eps = sorted((e for e in endpoints if not e.closed), key=lambda e: e.key)
    healthy = [e for e in eps if e.healthy]
    if protect_threshold > 0:
        known = [e for e in eps if e.instance.weight > 0]
        if known and len(healthy) < protect_threshold * len(known):
            healthy = [e for e in known if e.connected_ok]
    if local_zone:
        local = [e for e in healthy if e.instance.zone == local_zone]
        if local:
            return local
    return healthy


class Policy(Protocol):
    def pick(self, cands: Sequence[Endpoint]) -> Endpoint: ...


class RoundRobin:
    """Each candidate in key order, in turn."""

    def __init__(self) -> None:
        self._next = 0

    def pick(self, cands: Sequence[Endpoint]) -> Endpoint:
        ep = cands[self._next % len(cands)]
        self._next = (self._next + 1) % (1 << 62)
        return ep


class PowerOfTwo:
    """Two distinct candidates at random; the one with fewer calls in flight per unit
    of weight (ties: fewer calls so far, then the first drawn)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, cands: Sequence[Endpoint]) -> Endpoint:
        if len(cands) == 1:
            return cands[0]
        a, b = self._rng.sample(range(len(cands)), 2)
        ea, eb = cands[a], cands[b]

        def load(e: Endpoint) -> float:
            return (e.in_flight + 1) / max(e.instance.weight, 1)

        if load(eb) < load(ea):
            return eb
        return ea


class Weighted:
    """Smooth weighted round robin (nginx): each pick adds every candidate's weight
    to its score, takes the highest and subtracts the total from it. Over W picks
    (W the sum of weights) each candidate gets exactly its weight, interleaved."""

    def __init__(self) -> None:
        self._score: dict[str, int] = {}

    def pick(self, cands: Sequence[Endpoint]) -> Endpoint:
        total = 0
        best: Endpoint | None = None
        keys = set()
        for e in cands:
            w = max(e.instance.weight, 1)
            total += w
            keys.add(e.key)
            s = self._score.get(e.key, 0) + w
            self._score[e.key] = s
            if best is None or s > self._score[best.key]:
                best = e
        assert best is not None
        self._score[best.key] -= total
        if len(self._score) > 2 * len(keys) + 16:
            self._score = {k: v for k, v in self._score.items() if k in keys}
        return best


def make_policy(name: PolicyName, rng: random.Random | None = None) -> Policy:
    if name == "round_robin":
        return RoundRobin()
    if name == "p2c":
        return PowerOfTwo(rng)
    if name == "weighted":
        return Weighted()
    raise ValueError(f"unknown policy {name!r} (one of {', '.join(POLICIES)})")
