"""Team alerts (RULES L1-L3): when each is queued, once, and what it says.

Each alert is a ``Notification`` addressed to the team: ``email`` is empty and
``user_id`` too, except for TOKENS_EXHAUSTED, which names the refused user. Its
``create_time`` is the instant the rule fired (a deadline's own instant when the
clock is advanced past it).

- **L1 LOW_BALANCE.** With a threshold (> 0), a change that lowers the balance
  (a hold, an expiry, a pack moved out) to below it queues one alert naming
  that balance and sets ``Team.low_balance_alerted``; a balance at or above it
  (or the threshold turned off) clears the flag, so the next fall alerts again.
  The balance is compared after every change of it (``Ledger.take_balances``)
  and when the threshold is set. Only a *fall* alerts ("when its available
  tokens fall below it"): setting a threshold above the current balance queues
  nothing by itself, and neither does a purchase that leaves the balance below
  it; the team is told at the next fall. (A team that sets its threshold before
  buying its first tokens is not told of the empty balance it had then.)
- **L2 PACK_EXPIRING.** A pack's warning instant is its expiry minus 30 days.
  Then, if the pack still has remaining tokens (neither consumed, held nor
  expired, as a TokenPack's ``remaining_tokens`` and the forecast's
  ``expiring_tokens_30d`` count them), one alert names the pack, those tokens
  and its expiry, for the team holding the pack then. A pack whose tokens are
  all held then waits: when a hold gives tokens back before the pack expires,
  it is warned at that instant; once its held tokens are captured, it has
  nothing left to warn of. A pack with nothing left is never warned.
- **L3 TOKENS_EXHAUSTED.** The first Entitle of a UTC day refused with
  INSUFFICIENT_TOKENS in a team queues one alert naming the user and product
  refused; later refusals in that team that day queue nothing.

Once-ness is derived from the alerts themselves: the packs already warned and
each team's last TOKENS_EXHAUSTED day are read back from the stored
notifications at start (``TeamAlerts.restore``); L1 keeps its flag on the team.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, KeysView
from datetime import date, datetime, timedelta

from server.domain.directory import Notification, NotificationKind
from server.domain.ledger import TokenPack
from server.domain.teams import Team
from server.domain.terms import DEFAULT_TERMS

#: L2: how long before a pack's expiry it is warned of (RULES' table; a term).
PACK_WARNING = DEFAULT_TERMS.pack_expiry_warning

NewId = Callable[[], str]


def warning_time(pack: TokenPack, warning: timedelta = PACK_WARNING) -> datetime:
    """L2: the instant a pack with tokens left is warned of, ``warning`` before
    its expiry."""
    return pack.expire_time - warning


def _team_alert(
    new_id: NewId,
    team_id: str,
    kind: NotificationKind,
    now: datetime,
    *,
    user_id: str = "",
    pack_id: str = "",
    tokens: int = 0,
    expire_time: datetime | None = None,
    product_id: str = "",
) -> Notification:
    """A notification addressed to the team (no email)."""
    return Notification(
        new_id(),
        team_id,
        user_id,
        "",
        kind,
        now,
        pack_id=pack_id,
        tokens=tokens,
        expire_time=expire_time,
        product_id=product_id,
    )


class TeamAlerts:
    """What L2 and L3 remember so that each alert is queued once; L1's memory is
    the team's ``low_balance_alerted``."""

    def __init__(self) -> None:
        self._warned: set[str] = set()  # L2: packs already warned of
        # L2: packs past their warning instant whose tokens were all held then, by
        # the team each was in when it began to wait (in the order they began), and
        # that team by pack: a change of a team's balance looks at its own packs only
        self._waiting: dict[str, dict[str, None]] = {}
        self._waiting_in: dict[str, str] = {}
        self._exhausted: dict[str, date] = {}  # L3: each team's last alerted day

    @classmethod
    def restore(cls, notifications: Iterable[Notification]) -> TeamAlerts:
        alerts = cls()
        for n in notifications:
            if n.kind is NotificationKind.PACK_EXPIRING:
                alerts._warned.add(n.pack_id)
            elif n.kind is NotificationKind.TOKENS_EXHAUSTED:
                day = n.create_time.date()
                if day > alerts._exhausted.get(n.team_id, date.min):
                    alerts._exhausted[n.team_id] = day
        return alerts

    # -- L1 -------------------------------------------------------------------------

    @staticmethod
    def low_balance(
        team: Team, available: int, fell: bool, now: datetime, new_id: NewId
    ) -> tuple[bool, Notification | None]:
        """L1 for the team's balance at ``now``, after a change that lowered it
        (``fell``) or did not: (whether the team's flag changed, the alert if one
        is due)."""
        threshold = team.low_balance_threshold
        if threshold > 0 and available < threshold:
            if team.low_balance_alerted or not fell:
                return False, None
            team.low_balance_alerted = True
            note = _team_alert(
                new_id, team.team_id, NotificationKind.LOW_BALANCE, now, tokens=available
            )
            return True, note
        if team.low_balance_alerted:  # back at or above it (or turned off)
            team.low_balance_alerted = False
            return True, None
        return False, None

    # -- L2 -------------------------------------------------------------------------

    def warned(self, pack_id: str) -> bool:
        return pack_id in self._warned

    @property
    def waiting(self) -> KeysView[str]:
        """The packs that wait for tokens back (``pack_expiring``)."""
        return self._waiting_in.keys()

    def waiting_in(self, team_ids: Iterable[str]) -> list[str]:
        """The waiting packs that were in these teams when they began to wait: every
        waiting pack now in one of them is among them (a pack with tokens held never
        moves, T5, and a move changes both teams' balances, so the first look after
        it finds a pack in the team it left)."""
        waiting = self._waiting
        return [p for t in team_ids if (packs := waiting.get(t)) for p in packs]

    def _wait(self, pack: TokenPack) -> None:
        self.forget_waiting(pack.pack_id)  # (in the team it is in now)
        self._waiting.setdefault(pack.team_id, {})[pack.pack_id] = None
        self._waiting_in[pack.pack_id] = pack.team_id

    def forget_waiting(self, pack_id: str) -> None:
        """The pack waits no more (warned, spent, or no more)."""
        team_id = self._waiting_in.pop(pack_id, None)
        if team_id is not None:
            packs = self._waiting[team_id]
            del packs[pack_id]
            if not packs:
                del self._waiting[team_id]

    def pack_expiring(self, pack: TokenPack, now: datetime, new_id: NewId) -> Notification | None:
        """L2 at the pack's warning instant ``now``, or at a later instant when a
        waiting pack got tokens back: the alert naming its remaining tokens,
        if it has some and was not warned of before. A pack whose tokens are all
        held waits for its holds' end: released, they are its again (warned then);
        captured, they are gone. Whether a pack is warned thus depends only on the
        ledger's own sequence of events, so a start that fires a warning missed while
        the server was down (and then the holds' ends due meanwhile) decides as the
        server would have."""
        pack_id = pack.pack_id
        if pack.remaining <= 0 and pack.held > 0 and not pack.expired and not self.warned(pack_id):
            self._wait(pack)  # all held: released, they are its again
            return None
        self.forget_waiting(pack_id)
        if pack_id in self._warned or pack.expired or pack.remaining <= 0:
            return None
        self._warned.add(pack_id)
        return _team_alert(
            new_id,
            pack.team_id,
            NotificationKind.PACK_EXPIRING,
            now,
            pack_id=pack_id,
            tokens=pack.remaining,
            expire_time=pack.expire_time,
        )

    # -- L3 -------------------------------------------------------------------------

    def tokens_exhausted(
        self, team_id: str, user_id: str, product_id: str, now: datetime, new_id: NewId
    ) -> Notification | None:
        """L3 for an Entitle refused with INSUFFICIENT_TOKENS in ``team_id`` at
        ``now``: the alert if it is the team's first such refusal of the UTC day."""
        day = now.date()  # every instant is UTC
        if self._exhausted.get(team_id) == day:
            return None
        self._exhausted[team_id] = day
        kind = NotificationKind.TOKENS_EXHAUSTED
        return _team_alert(new_id, team_id, kind, now, user_id=user_id, product_id=product_id)
