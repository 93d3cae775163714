"""Leases: the Lessor (clock injected) and its limits."""

from meshkit.server.lease.lessor import (
    BUCKET,
    EXPIRED_RETRY_INTERVAL,
    EXPIRY_CHECK_INTERVAL,
    LEASE_REVOKE_RATE,
    MAX_LEASE_TTL,
    NO_LEASE,
    Lease,
    LeaseExpiredError,
    Lessor,
    NotPrimaryError,
    min_ttl_seconds,
)

__all__ = [
    "BUCKET",
    "EXPIRED_RETRY_INTERVAL",
    "EXPIRY_CHECK_INTERVAL",
    "LEASE_REVOKE_RATE",
    "MAX_LEASE_TTL",
    "NO_LEASE",
    "Lease",
    "LeaseExpiredError",
    "Lessor",
    "NotPrimaryError",
    "min_ttl_seconds",
]
