"""The picking rules on their own (no servers)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from meshkit.lb import Endpoint, PowerOfTwo, RoundRobin, Weighted, candidates, make_policy
from meshkit.lb.pool import BalancerOptions
from meshkit.registry import Instance


def ep(i: str, weight: int = 1, zone: str = "", **kw: object) -> Endpoint:
    e = Endpoint(f"k/{i}", Instance("web", f"127.0.0.1:{1000 + len(i)}", id=i, weight=weight,
                                    zone=zone))
    for k, v in kw.items():
        setattr(e, k, v)
    return e


def test_round_robin_cycles_in_key_order() -> None:
    eps = [ep("a"), ep("b"), ep("c")]
    rr = RoundRobin()
    assert [rr.pick(eps).instance.id for _ in range(6)] == list("abcabc")


def test_smooth_weighted_gives_exact_shares_interleaved() -> None:
    eps = [ep("a", 5), ep("b", 1), ep("c", 1)]
    w = Weighted()
    seq = [w.pick(eps).instance.id for _ in range(7)]
    assert seq == ["a", "a", "b", "a", "c", "a", "a"]  # nginx's example
    assert Counter(w.pick(eps).instance.id for _ in range(700)) == {"a": 500, "b": 100, "c": 100}


def test_p2c_prefers_fewer_calls_in_flight() -> None:
    busy, idle = ep("busy", in_flight=10), ep("idle")
    p = PowerOfTwo(random.Random(1))
    assert {p.pick([busy, idle]).instance.id for _ in range(20)} == {"idle"}


def test_candidates_exclude_unhealthy_draining_withdrawn() -> None:
    eps = [ep("ok"), ep("sick", health_ok=False), ep("down", connected_ok=False),
           ep("drain", weight=0), ep("gone", withdrawn_at=1.0)]
    assert [e.instance.id for e in candidates(eps)] == ["ok"]


def test_protect_threshold_and_zone() -> None:
    eps = [ep("a"), ep("b", withdrawn_at=1.0), ep("c", withdrawn_at=1.0),
           ep("d", connected_ok=False)]
    assert [e.instance.id for e in candidates(eps)] == ["a"]
    # 1 healthy of 4 known < 0.5: every known endpoint whose connection works.
    assert [e.instance.id for e in candidates(eps, protect_threshold=0.5)] == ["a", "b", "c"]
    assert [e.instance.id for e in candidates(eps, protect_threshold=0.25)] == ["a"]
    z = [ep("x", zone="a"), ep("y", zone="b")]
    assert [e.instance.id for e in candidates(z, local_zone="b")] == ["y"]
    assert [e.instance.id for e in candidates(z, local_zone="c")] == ["x", "y"]


def test_options_name_every_broken_rule() -> None:
    with pytest.raises(ValueError) as ei:
        BalancerOptions(policy="nope", protect_threshold=2, drain_timeout=-1)  # type: ignore[arg-type]
    msg = str(ei.value)
    assert "policy" in msg and "protect_threshold" in msg and "drain_timeout" in msg
    with pytest.raises(ValueError):
        make_policy("nope")  # type: ignore[arg-type]
