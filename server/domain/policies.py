"""The collaborators that sessions depend on, as Protocols, and the pure
decisions made from them: who pays (C1, C2, P1) and which team (C3).

The directory (who may run what) and the coverages (subscriptions and trials)
live in their own modules; the licensing aggregate sees them only through
``AccessPolicy`` and ``CoveragePolicy`` so that it imports neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Protocol

from server.domain.ledger import Ledger
from server.domain.sessions import ChargeState, Coverage, Meter
from server.domain.timers import TimerKind


class AccessPolicy(Protocol):
    def teams_for(self, user_id: str, product_id: str, now: datetime) -> list[str]:
        """Sorted ids of the teams where the user may run the product now; raises
        NotAssigned / InvitationPending / InvitationExpired when there are none."""
        ...


class Covering(Protocol):
    """A subscription or trial: ``kind`` is "SUBSCRIPTION" or "TRIAL" (or an Enum
    whose ``value`` is one of them)."""

    @property
    def kind(self) -> object: ...

    @property
    def end_time(self) -> datetime: ...


class CoveragePolicy(Protocol):
    def covering(self, user_id: str, product_id: str, now: datetime) -> Covering | None: ...

    def next_change(self, user_id: str, product_id: str, now: datetime) -> datetime | None: ...

    def seats(self) -> Iterable[tuple[str, str]]:
        """Every (user, product) with a subscription or trial, past or to come."""
        ...


class TimerSink(Protocol):
    def schedule(self, due: datetime, kind: TimerKind, key: str) -> None: ...


def coverage_of(covering: Covering | None, daily_rate: int) -> Coverage:
    """C1 subscription, then C2 trial, then P1 rate 0 (free), else tokens."""
    if covering is not None:
        kind = covering.kind
        name = kind.value if isinstance(kind, Enum) else kind
        if name == "SUBSCRIPTION":
            return Coverage.SUBSCRIPTION
        if name == "TRIAL":
            return Coverage.TRIAL
    return Coverage.FREE if daily_rate == 0 else Coverage.TOKENS


def choose_team(
    teams: Sequence[str],
    *,
    preferred: str,
    host_team: str,
    covered: bool,
    meters: Sequence[Meter | None],
    ledger: Ledger,
    daily_rate: int,
    now: datetime,
) -> str:
    """C3: the team an Entitle runs under, deterministically.

    ``teams`` are sorted and non-empty; ``meters[i]`` is this user's meter for
    the product in ``teams[i]``, if any. A team whose meter is in grace or has a
    window open now comes first: the user pays a product's rate once per 24
    hours whichever teams they belong to (also under a subscription or trial,
    which covers every team: the session goes on under tokens where it runs
    when the coverage ends, C2, and must not pay again there). Then: the
    preferred team; a plugin's host team, when coverage pays or that team can;
    the team able to pay whose next tokens expire soonest (then by id; with a
    subscription or trial too, so that the session can go on when it ends);
    else the first team, which will fail the payment check with its own figures
    (or that coverage pays for).
    """
    for team_id, meter in zip(teams, meters, strict=True):
        if meter is not None and (meter.state is ChargeState.GRACE or meter.window_covers(now)):
            return team_id
    if preferred and preferred in teams:
        return preferred
    if host_team in teams and (covered or ledger.available(host_team) >= daily_rate):
        return host_team
    return paying_team(teams, ledger, daily_rate) or teams[0]


def paying_team(teams: Iterable[str], ledger: Ledger, daily_rate: int) -> str | None:
    """C3: among ``teams``, the one whose available balance covers the daily rate and
    whose next tokens to be consumed expire soonest, ties by id; None if none can pay.
    Also who pays when a seat must hold again (``SessionBook._settle_seat``)."""
    payers = [t for t in teams if ledger.available(t) >= daily_rate]
    # A team that can pay nothing but a rate of 0 has no next expiry: it sorts last.
    return min(payers, key=lambda t: (ledger.next_expiry(t) or _NEVER, t), default=None)


_NEVER = datetime.max.replace(tzinfo=UTC)
