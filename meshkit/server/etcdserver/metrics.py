"""The member's Prometheus metrics, with etcd's names.

Hot paths only bump plain attributes or observe one histogram per WAL fsync
batch; everything else is read from the server when ``/metrics`` is scraped
(see :mod:`meshkit.server.api.http`). Each member has its own registry so
several in-process members do not share (or clash on) metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

# etcd's walFsyncSec buckets: prometheus.ExponentialBuckets(0.001, 2, 14).
FSYNC_BUCKETS = tuple(0.001 * 2**i for i in range(14))


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.wal_fsync_seconds = Histogram(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
            buckets=FSYNC_BUCKETS, registry=self.registry,
        )
        self.leader_changes = 0
        self._last_lead = 0

    def saw_leader(self, lead: int) -> None:
        """etcd counts a leader change each time a soft state names a new, known leader."""
        if lead and lead != self._last_lead:
            self.leader_changes += 1
        self._last_lead = lead
