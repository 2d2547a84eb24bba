"""A team's forecast (RULES L4): burn rate, depletion time, tokens expiring soon.

Decisions where L4 is silent:

- The burn rate counts the tokens *captured* (CAPTURE entries) in the window
  ``[now - 30 days, now]``, divided by 30: tokens per day (30: the burn window,
  a term, ``Terms.burn_window``, in whole days). Holds not yet
  captured are not charges.
- Only *available* tokens are consumed in the forecast: a pack's remaining
  tokens (T2). Held tokens are not available (they are on their way to a
  capture, or come back only if the hold is released), so they are left out
  of the depletion time and of ``expiring_tokens_30d``.
- Packs are consumed one after the other in T3 order (earliest expiry first),
  continuously at the burn rate; when a pack reaches its expiry with tokens
  left, those are lost at that instant and consumption goes on with the next
  pack. A pack already expired at ``now`` counts for nothing.
- The time left until depletion is truncated to the whole second ("pro rata
  to the second"; the depletion time is ``now`` plus it, so never before ``now``),
  unless the last tokens are lost to an expiry: then it is that
  pack's expiry. With charges but no available tokens it is ``now``; with no
  charges in 30 days there is none (``None``).
- ``expiring_tokens_30d``: remaining tokens of unexpired packs whose expiry is
  at or before ``now + 30 days`` (30 days whatever the burn window: the API's
  field says so).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

from server.domain.instants import MICROSECOND

#: expiring_tokens_30d's horizon.
EXPIRING = timedelta(days=30)
#: The burn window's default (``Terms.burn_window``).
WINDOW_DAYS = 30
DAY_SECONDS = 86400


@dataclass(frozen=True, slots=True)
class PackBalance:
    """What the forecast needs of one pack."""

    remaining: int
    held: int
    expire_time: datetime


@dataclass(frozen=True, slots=True)
class Forecast:
    daily_burn_tokens: float
    depletion_time: datetime | None
    expiring_tokens_30d: int


def forecast(
    now: datetime,
    packs: Sequence[PackBalance],
    charged: Iterable[int],
    *,
    window_days: int = WINDOW_DAYS,
) -> Forecast:
    """L4 for one team: ``packs`` in T3 order, ``charged`` the amounts of its
    captures in the last ``window_days`` days."""
    live = [p for p in packs if p.expire_time > now and p.remaining > 0]
    expiring = sum(p.remaining for p in live if p.expire_time <= now + EXPIRING)
    total = sum(charged)
    rate = total / window_days
    if total <= 0:
        return Forecast(rate, None, expiring)
    per_second = Fraction(total, window_days * DAY_SECONDS)
    at = Fraction(0)  # seconds after now when the current pack starts being used
    lost_at: datetime | None = None
    for pack in live:
        expiry = _seconds(pack.expire_time - now)
        if expiry <= at:
            continue  # expires as the packs before it run out: all lost, nothing used
        done = at + pack.remaining / per_second
        if done <= expiry:
            at, lost_at = done, None
        else:
            at, lost_at = expiry, pack.expire_time
    if lost_at is not None:
        return Forecast(rate, lost_at, expiring)
    return Forecast(rate, now + timedelta(seconds=int(at)), expiring)


def _seconds(span: timedelta) -> Fraction:
    return Fraction(span // MICROSECOND, 1_000_000)
