"""etcd's gRPC keepalive (--grpc-keepalive-*), as grpc-go's server applies it (pure).

* Enforcement (``--grpc-keepalive-min-time``, 5 s): a client PING sooner than
  that after the previous one is a strike; once the server has sent headers or
  data, the next PING is not checked and the strikes start over (clients' BDP
  pings follow data); the third strike ends the connection with GOAWAY
  ENHANCE_YOUR_CALM "too_many_pings".
* Server pings (``--grpc-keepalive-interval``, 2 h, and ``-timeout``, 20 s): a
  connection the client sent nothing on for an interval is pinged; no frame
  within the timeout closes it.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PING_STRIKES = 2


@dataclass(frozen=True, slots=True)
class KeepalivePolicy:
    min_time: float = 5.0
    interval: float = 2 * 3600.0
    timeout: float = 20.0


class PingStrikes:
    """Counts client PINGs that come too often."""

    __slots__ = ("last", "min_time", "reset", "strikes")

    def __init__(self, min_time: float) -> None:
        self.min_time = min_time
        self.last: float | None = None
        self.strikes = 0
        # set when the server sent headers or data (grpc-go's resetPingStrikes):
        # the next ping is not checked and the strikes start over
        self.reset = False

    def on_ping(self, now: float) -> bool:
        """A client PING at ``now``; True when the connection must be closed."""
        last, self.last = self.last, now
        if self.reset:
            self.reset = False
            self.strikes = 0
            return False
        if last is not None and now - last < self.min_time:
            self.strikes += 1
        return self.strikes > MAX_PING_STRIKES

    def forgive(self) -> None:
        self.reset = True


def keepalive_due(now: float, last_received: float, ping_sent: float | None,
                  policy: KeepalivePolicy) -> str | None:
    """What a connection needs: "ping", "close" (a ping went unanswered), or None."""
    if ping_sent is not None:
        return "close" if now - ping_sent >= policy.timeout else None
    if policy.interval > 0 and now - last_received >= policy.interval:
        return "ping"
    return None
