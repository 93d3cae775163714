"""The Lessor alone, on a fake clock: no event loop, no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshkit._internal.clock import FakeClock
from meshkit._internal.errors import LeaseExistError, LeaseNotFoundError, LeaseTTLTooLargeError
from meshkit.server.backend import Backend
from meshkit.server.lease import (
    EXPIRED_RETRY_INTERVAL,
    LEASE_REVOKE_RATE,
    MAX_LEASE_TTL,
    LeaseExpiredError,
    Lessor,
    NotPrimaryError,
    min_ttl_seconds,
)


def primary(clock: FakeClock, min_ttl: int = 2, backend: Backend | None = None) -> Lessor:
    le = Lessor(clock, min_ttl=min_ttl, backend=backend)
    le.promote(0)
    return le


def test_min_ttl_follows_election_timeout() -> None:
    # etcd: ceil(((3 * electionTicks) / 2) * heartbeat), integer tick division.
    assert min_ttl_seconds(1000, 100) == 2  # etcd defaults: a 1 s grant answers 2 s
    assert min_ttl_seconds(5000, 500) == 8  # 15 ticks * 0.5 s = 7.5 -> 8
    assert min_ttl_seconds(1500, 100) == 3  # 22 ticks * 0.1 s = 2.2 -> 3
    assert min_ttl_seconds(100, 100) == 1


def test_grant_raises_small_ttl_and_checks_in_etcds_order() -> None:
    le = primary(FakeClock())
    assert le.grant(1, 1).ttl == 2
    assert le.grant(2, 0).ttl == 2
    assert le.grant(3, -5).ttl == 2
    assert le.grant(4, 60).ttl == 60
    assert le.grant(-3, 5).ttl == 5  # negative ids are accepted, as in etcd
    assert le.grant(5, MAX_LEASE_TTL).ttl == MAX_LEASE_TTL
    with pytest.raises(LeaseTTLTooLargeError):
        le.grant(6, MAX_LEASE_TTL + 1)
    with pytest.raises(LeaseExistError):
        le.grant(4, 10)
    with pytest.raises(LeaseTTLTooLargeError):  # the TTL is checked before existence
        le.grant(4, MAX_LEASE_TTL + 1)
    with pytest.raises(LeaseNotFoundError):
        le.grant(0, 10)


def test_expiry_in_order_and_renew_pushes_it_back() -> None:
    clock = FakeClock()
    le = primary(clock)
    le.grant(1, 10)
    le.grant(2, 5)
    le.grant(3, 7)
    clock.advance(4.9)
    assert le.find_expired() == []
    clock.advance(0.1)
    assert le.find_expired() == [2]
    le.revoke(2)  # what applying the leader's proposal does
    assert le.renew(3) == 7  # expires at 12 now
    clock.advance(5.0)  # t = 10
    assert le.find_expired() == [1]
    clock.advance(1.9)
    assert le.find_expired() == []
    clock.advance(0.1)
    assert le.find_expired() == [3]


def test_find_expired_limit_and_retry_after_interval() -> None:
    clock = FakeClock()
    le = primary(clock)
    for i in range(1, 6):
        le.grant(i, 10 + i)
    clock.advance(100)
    assert le.find_expired(limit=3) == [1, 2, 3]
    assert le.find_expired(limit=3) == [4, 5]
    assert le.find_expired() == []  # offered; the revocations are in flight
    le.revoke(1)
    clock.advance(EXPIRED_RETRY_INTERVAL)
    assert le.find_expired() == [2, 3, 4, 5]  # not revoked yet: offered again


def test_renew_unknown_expired_and_not_primary() -> None:
    clock = FakeClock()
    le = primary(clock)
    le.grant(1, 5)
    with pytest.raises(LeaseNotFoundError):
        le.renew(99)
    clock.advance(5)
    with pytest.raises(LeaseExpiredError):
        le.renew(1)
    le.revoke(1)
    with pytest.raises(LeaseNotFoundError):
        le.renew(1)
    follower = Lessor(clock, min_ttl=2)
    follower.grant(7, 5)
    with pytest.raises(NotPrimaryError):
        follower.renew(7)
    assert follower.find_expired() == []
    assert follower.lookup(7) is not None and follower.lookup(7).remaining(clock.monotonic()) == float("inf")


def test_stale_heap_entries_do_not_expire_renewed_leases() -> None:
    clock = FakeClock()
    le = primary(clock)
    le.grant(1, 3)
    for _ in range(5000):
        le.renew(1)
    assert len(le._heap) <= 2 * len(le) + 1024 + 1
    clock.advance(2.9)
    assert le.find_expired() == []
    clock.advance(0.1)
    assert le.find_expired() == [1]


def test_attach_detach_revoke() -> None:
    le = primary(FakeClock())
    le.grant(1, 10)
    le.grant(2, 10)
    le.attach(1, b"a")
    le.attach(1, b"b")
    le.attach(2, b"c")
    le.attach(99, b"x")  # unknown lease: ignored (the applier checked existence)
    le.detach(1, b"a")
    le.detach(2, b"nope")
    assert le.lookup(1).keys == {b"b"}
    gone = le.revoke(1)
    assert gone.keys == {b"b"}
    assert not le.exists(1) and le.exists(2)
    with pytest.raises(LeaseNotFoundError):
        le.revoke(1)


def test_leases_listed_soonest_expiry_first() -> None:
    clock = FakeClock()
    le = primary(clock)
    le.grant(10, 30)
    le.grant(20, 5)
    le.grant(30, 60)
    clock.advance(1)
    le.renew(20)
    assert [x.id for x in le.leases()] == [20, 10, 30]


def test_promote_after_restart_gives_a_fresh_ttl(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    be = Backend.open(tmp_path / "db")
    le = primary(clock, backend=be)
    le.grant(1, 10)
    le.grant(2, 1)  # stored with the minimum TTL
    le.grant(3, 20)
    le.revoke(3)
    be.commit()
    be.close()
    clock.advance(3600)  # down for an hour: nothing may expire because of that

    be2 = Backend.open(tmp_path / "db")
    le2 = Lessor(clock, min_ttl=2, backend=be2)
    le2.recover([(b"k1", 1), (b"k2", 1), (b"orphan", 42)])
    assert sorted(x.id for x in le2) == [1, 2]
    assert le2.lookup(1).keys == {b"k1", b"k2"}
    assert le2.lookup(2).ttl == 2
    assert le2.find_expired() == []  # not primary yet: forever
    le2.promote(extend=1.0)
    assert le2.lookup(1).remaining(clock.monotonic()) == pytest.approx(11.0)
    clock.advance(2.9)
    assert le2.find_expired() == []
    clock.advance(0.1)
    assert le2.find_expired() == [2]
    be2.close()


def test_demote_stops_expiry_and_promote_restarts_it() -> None:
    clock = FakeClock()
    le = primary(clock)
    le.grant(1, 5)
    clock.advance(4)
    le.demote()
    clock.advance(100)
    assert le.find_expired() == []
    le.promote(1.0)
    clock.advance(5.9)
    assert le.find_expired() == []
    clock.advance(0.1)
    assert le.find_expired() == [1]


def test_promote_spreads_a_mass_expiry_over_the_revoke_rate() -> None:
    clock = FakeClock()
    le = Lessor(clock, min_ttl=2)
    n = 3 * LEASE_REVOKE_RATE
    for i in range(1, n + 1):
        le.grant(i, 10)
    le.promote(1.0)
    target = (3 * LEASE_REVOKE_RATE) // 4
    per_second: dict[int, int] = {}
    for x in le:
        per_second[int(x.remaining(0))] = per_second.get(int(x.remaining(0)), 0) + 1
    assert min(per_second) == 11
    assert max(per_second.values()) <= target + 1
    assert sum(per_second.values()) == n


def test_checkpoint_remaining_ttl_is_used_on_promote() -> None:
    clock = FakeClock()
    le = Lessor(clock, min_ttl=2)
    le.grant(1, 100)
    le.checkpoint(1, 30)
    le.checkpoint(99, 30)  # unknown: ignored
    le.promote(0)
    assert le.lookup(1).remaining(0) == 30
    le.renew(1)  # a renewal clears the checkpointed remainder
    assert le.lookup(1).remaining(0) == 100
