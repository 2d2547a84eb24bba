"""Retry policy: exponential backoff with jitter, on transient statuses only, and
after the delay the server asks for (RetryInfo) when it did not do the call."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import grpc

# CANCELLED too: grpc.aio raises the SDK's own cancellations as asyncio.CancelledError,
# so a CANCELLED status is the server's: what gRPC answers the calls it had received
# but not begun when it stops (a server draining on SIGTERM). Repeated unchanged, as
# after UNAVAILABLE: the same request_id, so a call that was done is not done twice.
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried on ``UNAVAILABLE``, ``DEADLINE_EXCEEDED`` and ``CANCELLED``
    (a server stopping), and on a refusal that carries a ``google.rpc.RetryInfo`` (an
    overloaded server, a rate limit).

    Attempt ``n`` (0-based) that fails waits ``min(max_backoff, initial_backoff *
    multiplier**n)`` seconds, less a random fraction of up to ``jitter`` of it, before
    the next one; after ``max_attempts``, or once ``total_timeout`` seconds (on the
    client's clock) have passed since the call's first attempt began (no attempt begins
    later; ``None``: the attempts alone bound the call), the call fails with
    ``Unavailable``. The request is sent unchanged every time (same ``request_id``), so
    the server can tell a retry from a new request. ``call_timeout`` is every attempt's
    deadline, in seconds.

    The defaults ride out a takeover (RULES H2: a standby takes over within 10 s): calls
    that fail at once (a server that is down refuses the connection, a standby answers
    ``NOT_LEADER``) go on for at least 12 s, jitter included, with up to four addresses
    (0.25, 0.5, 1, 2, then 3 s before each attempt on a server already tried, 12
    attempts at most), so that the server that took over is asked after it did; a
    server that does not answer at all costs ``call_timeout`` an attempt, and no attempt
    begins after 20 s.
    """

    max_attempts: int = 12
    initial_backoff: float = 0.25
    max_backoff: float = 3.0
    multiplier: float = 2.0
    jitter: float = 0.2
    call_timeout: float = 10.0
    total_timeout: float | None = 20.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int, not {type(self.max_attempts).__name__}")
        for name in ("initial_backoff", "max_backoff", "multiplier", "jitter", "call_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value}")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter is a fraction between 0 and 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must not be negative and the multiplier at least 1")
        if self.call_timeout <= 0:
            raise ValueError("call_timeout must be positive")
        if self.total_timeout is not None:
            total = self.total_timeout
            if isinstance(total, bool) or not isinstance(total, int | float):
                raise TypeError(
                    f"total_timeout must be a number of seconds or None, not {type(total).__name__}"
                )
            if not math.isfinite(total) or total <= 0:
                raise ValueError(f"total_timeout must be a positive number of seconds, not {total}")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        return self._grown(attempt) * (1.0 - self.jitter * rng.random())

    def retryable(self, code: grpc.StatusCode) -> bool:
        return code in RETRYABLE

    def out_of_time(self, elapsed: float, delay: float) -> bool:
        """Whether an attempt that would begin ``delay`` seconds from now, ``elapsed``
        seconds after the call's first attempt began, would begin too late."""
        return self.total_timeout is not None and elapsed + delay > self.total_timeout

    def later(self, retry_after: float, attempt: int, rng: random.Random) -> float:
        """Seconds to wait when the server asked for ``retry_after`` (RetryInfo): at least
        that, and at least the backoff of failed attempt ``attempt``, spread up by up to
        ``jitter`` of it so that the clients it shed together do not all come back
        together."""
        return max(retry_after, self._grown(attempt)) * (1.0 + self.jitter * rng.random())

    def _grown(self, attempt: int) -> float:
        if not self.initial_backoff:
            return 0.0
        try:
            grown = self.initial_backoff * self.multiplier**attempt
        except OverflowError:  # 2.0**1024: a call bounded by its attempts alone
            return self.max_backoff
        return min(self.max_backoff, grown)
