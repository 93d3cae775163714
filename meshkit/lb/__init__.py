"""gRPC client-side load balancing fed by the registry, two ways:

* :class:`BalancedChannel` (grpc.aio) and :class:`BlockingBalancedChannel` (sync):
  a pure-Python balancer with one sub-channel per instance (no control plane);
* :mod:`meshkit.lb.xds`: an xDS v3 control plane, so any gRPC client (Python's
  ``xds:///`` targets, Go, Java, ...) balances with its own built-in xDS client.
"""

from meshkit.lb.aio import HEALTH_METHOD, BalancedChannel, NoInstanceError
from meshkit.lb.blocking import BlockingBalancedChannel
from meshkit.lb.policy import (
    POLICIES,
    Endpoint,
    Policy,
    PolicyName,
    PowerOfTwo,
    RoundRobin,
    Weighted,
    candidates,
    make_policy,
)
from meshkit.lb.pool import BalancerOptions, Pool

__all__ = [
    "HEALTH_METHOD",
    "POLICIES",
    "BalancedChannel",
    "BalancerOptions",
    "BlockingBalancedChannel",
    "Endpoint",
    "NoInstanceError",
    "Policy",
    "PolicyName",
    "Pool",
    "PowerOfTwo",
    "RoundRobin",
    "Weighted",
    "candidates",
    "make_policy",
]
