"""Meters and their tokens: hold, grace, capture, window (RULES M2-M5).

``Meters`` keeps every meter by key and moves a meter between its three
states, with the ledger doing the token side:

    NONE ──hold (M2)──▶ GRACE ──grace end, in use throughout (M3)──▶ CHARGED
      ▲                   │ break: every session ended or idle (M3)     │
      └───── release ─────┘                                             │
      ▲                                                                 │
      └──── window end, not in use (M5) ◀───────────────────────────────┘
                window end, in use (M5): a new GRACE from that instant

Which sessions are in use, and what to end when a hold cannot be made, is
the licensing aggregate's business; this module only knows counts.

Meters are found by user: a user has a handful (one per team and product in
use), and the user id is a string the directory already holds, so the index
costs no key of its own. For the same reason GRACE_END and WINDOW_END
deadlines are keyed by user id; their handler looks for the user's meters
whose grace or window ends at that instant.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime

from server.domain.changes import Changes
from server.domain.few import add_few, drop_few, few
from server.domain.ledger import Cause, Hold, Ledger
from server.domain.policies import TimerSink
from server.domain.sessions import ChargeState, Meter, count_move
from server.domain.terms import Terms
from server.domain.timers import TimerKind


class Meters:
    def __init__(self, ledger: Ledger, terms: Terms) -> None:
        self.ledger = ledger
        self.terms = terms
        self._by_user: dict[str, Meter | tuple[Meter, ...]] = {}
        #: Meters holding or charged, by (product, state): the metrics' gauge, kept as
        #: states change (``_set``), so a scrape walks none of a million meters.
        self.counts: Counter[tuple[str, ChargeState]] = Counter()

    # -- finding -------------------------------------------------------------

    def of_user(self, user_id: str) -> tuple[Meter, ...]:
        return few(self._by_user.get(user_id))

    def get(self, team_id: str, user_id: str, product_id: str) -> Meter | None:
        found = self._by_user.get(user_id)
        if type(found) is Meter:  # the usual one meter: no tuple to build
            return found if found.product_id == product_id and found.team_id == team_id else None
        for meter in few(found):
            if meter.product_id == product_id and meter.team_id == team_id:
                return meter
        return None

    def get_or_create(self, team_id: str, user_id: str, product_id: str) -> Meter:
        meter = self.get(team_id, user_id, product_id)
        if meter is None:
            meter = Meter(team_id, user_id, product_id)
            self._put(meter)
        return meter

    def add(self, meter: Meter, holds: dict[tuple[str, str, str], Hold]) -> None:
        """Restore: index a stored meter and reattach its hold (``holds_by_meter``)."""
        if meter.state is ChargeState.GRACE:
            hold = holds.get((meter.team_id, meter.user_id, meter.product_id))
            if hold is None:
                raise RuntimeError(f"meter {meter.key} is in grace but no hold is stored for it")
            meter.hold = hold
        if meter.state is not ChargeState.NONE:
            self.counts[meter.product_id, meter.state] += 1
        self._put(meter)

    def _put(self, meter: Meter) -> None:
        add_few(self._by_user, meter.user_id, meter)

    def _set(self, meter: Meter, state: ChargeState) -> None:
        """``meter.state = state``, kept in ``counts``."""
        count_move(self.counts, meter.product_id, meter.state, state, ChargeState.NONE)
        meter.state = state

    def drop_if_unused(self, meter: Meter, live: bool, changes: Changes) -> None:
        """A meter with nothing held, no window and no live session (``live``:
        the caller knows its sessions) carries no information: forget it (it
        comes back as NONE when used again)."""
        if meter.state is not ChargeState.NONE or live:
            return
        if drop_few(self._by_user, meter.user_id, meter):  # else already forgotten
            changes.delete(meter)

    def __iter__(self) -> Iterator[Meter]:
        return (m for found in self._by_user.values() for m in few(found))

    def __len__(self) -> int:
        return sum(len(few(found)) for found in self._by_user.values())

    # -- M2: payment ------------------------------------------------------------

    @staticmethod
    def needs_hold(meter: Meter | None, now: datetime) -> bool:
        """M2: tokens must be held unless the meter is in grace or a window covers now."""
        if meter is None:
            return True
        return not (meter.state is ChargeState.GRACE or meter.window_covers(now))

    def start_grace(
        self,
        meter: Meter,
        rate: int,
        cause: Cause,
        now: datetime,
        changes: Changes,
        timers: TimerSink,
        since: datetime | None = None,
    ) -> None:
        """M2/M5: hold ``rate`` tokens (T3 order) and begin grace; raises
        InsufficientTokens and changes nothing when the team cannot pay. ``since``:
        the grace goes on from an earlier instant (C3: one the user's meter in
        another team began, broken now while this one's sessions go on in use),
        so it ends 5 minutes after that, not after ``now``.

        The hold is named after the session that caused it: a session belongs
        to one meter for its whole life and a meter holds once at a time, so no
        two stored holds share that name (a later hold of the same session
        comes after the earlier one was captured or released, and in one
        commit the last write of a key wins). A million meters in grace then
        keep no hold id of their own (80 bytes each)."""
        hold = self.ledger.hold(meter.team_id, rate, cause, now, cause.session_id, changes)
        self._set(meter, ChargeState.GRACE)
        meter.start = start = now if since is None else since
        meter.end = end = start + self.terms.grace
        meter.hold = hold
        changes.upsert(meter)
        timers.schedule(end, TimerKind.GRACE_END, meter.user_id)

    # -- M3: grace ----------------------------------------------------------------

    def grace_due(self, meter: Meter, now: datetime) -> bool:
        return meter.state is ChargeState.GRACE and meter.end is not None and meter.end <= now

    def capture(self, meter: Meter, changes: Changes, timers: TimerSink) -> None:
        """M3: 5 minutes of unbroken use: the hold is consumed, at grace end, and a
        window opens from when grace began."""
        hold, start, end = meter.hold, meter.grace_start, meter.grace_end
        if hold is None or start is None or end is None:
            raise RuntimeError(f"meter {meter.key} is not in grace")
        self.ledger.capture(hold, end, changes)
        self._set(meter, ChargeState.CHARGED)
        meter.end = window_end = start + self.terms.charge_window  # ``start`` stays
        meter.hold = None
        changes.upsert(meter)
        timers.schedule(window_end, TimerKind.WINDOW_END, meter.user_id)

    def release(self, meter: Meter, now: datetime, changes: Changes) -> None:
        """M3: grace broken (or no longer needed, C2): the hold goes back, nothing is charged."""
        if meter.hold is not None:
            self.ledger.release(meter.hold, now, changes)
        self._set(meter, ChargeState.NONE)
        meter.start = meter.end = None
        meter.hold = None
        changes.upsert(meter)

    # -- M5: window end -------------------------------------------------------------

    def close_window(self, meter: Meter, changes: Changes) -> None:
        self._set(meter, ChargeState.NONE)
        meter.start = meter.end = None
        changes.upsert(meter)

    # -- restart --------------------------------------------------------------

    def schedule_all(self, timers: TimerSink) -> None:
        """Every grace end and window end again (a million meters at a restart:
        the loop reads the slots, not the properties)."""
        grace, charged = ChargeState.GRACE, ChargeState.CHARGED
        schedule = timers.schedule
        for found in self._by_user.values():
            for meter in few(found):
                end = meter.end
                if end is None:
                    continue
                if meter.state is grace:
                    schedule(end, TimerKind.GRACE_END, meter.user_id)
                elif meter.state is charged:
                    schedule(end, TimerKind.WINDOW_END, meter.user_id)


def holds_by_meter(holds: Iterable[Hold]) -> dict[tuple[str, str, str], Hold]:
    """Stored holds by the key of the meter they are for (team, user, product):
    a meter holds once at a time. Holds not made for a meter are the ledger's
    alone and are not looked up."""
    return {(h.team_id, h.user_id, h.product_id): h for h in holds}
