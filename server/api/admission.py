"""Overload: how many calls the server takes on at once, and what it tells the rest (issue 17).

Where the calls wait when there are too many, measured (``docs/performance.md``):

1. gRPC's core accepts every call the connections bring and queues it until the
   Python server asks for it; grpc.aio asks for one call at a time, from the event
   loop, so a busy loop leaves calls in that queue. Past
   ``grpc.server.max_pending_requests`` (1,000 by default) gRPC cancels queued
   calls at random, and past the hard limit (3,000) every new one: the client
   sees ``CANCELLED``, which it cannot tell from its own cancellation, and the
   server never sees the call, so it logs nothing. A bare grpc.aio echo does the
   same at 3,000 calls in flight on one channel. The server raises both limits
   to ``PENDING_CALLS``: a call waits in that queue (its deadline still runs, and
   a client past its deadline sees ``DEADLINE_EXCEEDED``, which the SDK retries)
   rather than being dropped without a word.
2. In the server's own code, a call that waits for a commit (Entitle, Release,
   Idle, a heartbeat that took a hold) stays under way until the store has it.
   ``Admission`` lets at most ``limit`` calls be under way at once; the next one
   is refused at once with ``RESOURCE_EXHAUSTED``, reason ``OVERLOADED`` and a
   ``google.rpc.RetryInfo`` (``retry_after`` seconds): nothing was done, so the
   client repeats the very same request after that delay (the SDK does,
   ``client_sdk/failover.py``). Health checks and reflection do not pass the
   edge, so they answer whatever the load.

3. When the server stops, gRPC's own stop cancels the calls still in (1), bare:
   445 of 512 calls in flight came back ``CANCELLED`` at a SIGTERM (and the SDK
   took an admin change among them for one whose outcome is unknown). So a stop
   first refuses calls for a moment (``Closing``): each is taken in and answered
   ``UNAVAILABLE``, reason ``NOT_SERVING``, with a RetryInfo (nothing was done: the
   client sends it again, here once the server is back or to another server),
   until no call has come for ``QUIET`` seconds (the queue is empty) or
   ``LONGEST_CLOSING`` have passed; only then does gRPC stop.

grpc.aio's own ``maximum_concurrent_rpcs`` counts the same calls as (2) but
refuses health checks too, with no ErrorInfo or RetryInfo, and (like (2)) does
nothing for (1): measured with the echo at 3,000 calls in flight, a limit of
100 refused 57 calls and gRPC still cancelled 3,312 of 20,000.
"""

from __future__ import annotations

import asyncio

import structlog

from server.api.errors import NotServing, Overloaded
from server.clock import monotonic

log = structlog.get_logger()

#: Calls gRPC's core may hold for the server before the server takes them (both
#: ``grpc.server.max_pending_requests`` and its hard limit; see the module docstring).
PENDING_CALLS = 10_000
RETRY_AFTER = 0.5  # seconds a shed call is told to wait
LOG_EVERY = 1.0  # seconds: at most one line about shed calls this often


#: Seconds without a new call after which gRPC's queue of calls not yet taken in is
#: taken to be empty (``Closing.close``).
QUIET = 0.05
#: The longest a stop refuses calls before gRPC's own stop, which cancels the rest bare.
LONGEST_CLOSING = 2.0
#: What a call refused as the server stops is told to wait: a restart takes seconds.
CLOSING_RETRY = 1.0
CLOSING = (
    "the server is stopping (a restart, an upgrade); nothing was done: send the call "
    "again in a moment, to this server once it is back or to another of the deployment"
)


class Closing:
    """A server's last moment (the module docstring, 3): every call refused with a
    RetryInfo until gRPC's queue of calls not yet taken in has emptied."""

    def __init__(self) -> None:
        self.on = False
        self.refused = 0
        self._last = 0.0  # when the last call came (or the closing began)

    def refusal(self) -> NotServing:
        """What a call that comes now is told (counted: ``refused``)."""
        self._last = monotonic()
        self.refused += 1
        return NotServing(CLOSING, retry_after_seconds=CLOSING_RETRY)

    async def close(self, longest: float = LONGEST_CLOSING) -> None:
        """Refuse every call from now on; return once none has come for ``QUIET``
        seconds, or after ``longest``, whichever is first."""
        self.on = True
        self._last = monotonic()
        end = self._last + longest
        while (now := monotonic()) < end:
            wait = self._last + QUIET - now
            if wait <= 0:
                break
            await asyncio.sleep(min(wait, end - now))
        if self.refused:
            log.info("closing_refused", refused=self.refused, retry_after_s=CLOSING_RETRY)


class Admission:
    """At most ``limit`` calls under way at once (0: no limit)."""

    def __init__(self, limit: int, retry_after: float = RETRY_AFTER) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self.in_flight = 0
        self.shed = 0  # calls refused since the start
        self._logged_shed = 0
        self._logged_at = -LOG_EVERY
        self._due = False  # a line for the calls shed since the last one is on its way

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def enter(self) -> None:
        """Take one place, or refuse the call (``Overloaded``) when none is free."""
        if self.in_flight >= self.limit:
            self.shed += 1
            self._note()
            raise Overloaded(
                f"the server has {self.limit} calls under way; "
                f"repeat this one in {self.retry_after:g} s",
                retry_after_seconds=self.retry_after,
                in_flight=self.limit,
            )
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1

    def _note(self) -> None:
        """One line a second at most while calls are shed (not one per call: under
        overload, a line per refused call would cost what the refusal saves). Calls
        shed after a line are told in the next one, a second later at most, also when
        no call is shed then (the burst is over)."""
        now = monotonic()
        if now - self._logged_at >= LOG_EVERY:
            self._log(now)
        elif not self._due:
            self._due = True
            asyncio.get_running_loop().call_later(self._logged_at + LOG_EVERY - now, self._late)

    def _late(self) -> None:
        self._due = False
        if self.shed > self._logged_shed:
            self._log(monotonic())

    def _log(self, now: float) -> None:
        log.warning(
            "overloaded",
            shed=self.shed - self._logged_shed,
            limit=self.limit,
            retry_after_s=self.retry_after,
        )
        self._logged_at, self._logged_shed = now, self.shed
