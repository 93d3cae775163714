"""Locks, elections and transactions on etcd's v3 API (etcd Go ``concurrency``'s keys
and algorithms, so Python, Go programs and ``etcdctl lock``/``elect`` interoperate).

    async with Client(eps) as c, Session(c, ttl=10) as s:
        async with Mutex(s, "jobs/lock") as m:
            await m.guarded_put("jobs/state", "done")   # only while m still holds the lock
"""

from meshkit.concurrency.election import Election
from meshkit.concurrency.errors import (
    ConcurrencyError,
    LockLostError,
    LockTimeoutError,
    NoLeaderError,
    NotHeldError,
    NotLeaderError,
    SessionExpiredError,
    SessionLostError,
    STMConflictError,
)
from meshkit.concurrency.mutex import Mutex
from meshkit.concurrency.recipes import Barrier, RWLock, Semaphore
from meshkit.concurrency.session import Session
from meshkit.concurrency.stm import STM, Isolation, run_stm

__all__ = [
    "STM",
    "Barrier",
    "ConcurrencyError",
    "Election",
    "Isolation",
    "LockLostError",
    "LockTimeoutError",
    "Mutex",
    "NoLeaderError",
    "NotHeldError",
    "NotLeaderError",
    "RWLock",
    "STMConflictError",
    "Semaphore",
    "Session",
    "SessionExpiredError",
    "SessionLostError",
    "run_stm",
]
