"""Team alerts wired to the engine (RULES L1-L3; the rules themselves are
``server/domain/alerts.py``). Each alert is stored in the same commit as what
caused it, and filed in the outbox (ListNotifications) at once.

- **L1** is a ``Commits`` hook. The ledger logs each team's available balance
  after every change of it (``Ledger.take_balances``: purchase, hold, release,
  expiry, move out and in, and whether the change lowered it), and
  UpdateTeamSettings logs it when the threshold is set (which can only re-arm
  the alert); the hook replays those balances, in order and at their own
  instants, through the rule. It runs on every commit, the heartbeat flush's included: with
  no balance changed since the last commit it costs one test of an empty dict,
  and it never looks at the commit's items. It also runs after each deadline
  fired (``Scheduler.after_each``): one commit may fire many (an AdvanceClock, a
  start, a lagging loop's catch-up before a call such as UpdateTeamSettings), and
  each balance must meet the threshold that stood at its instant, each waiting
  pack the tokens it had then.
- **L2** is a timer per pack at its warning instant (``TimerKind.PACK_WARNING``):
  scheduled at purchase (``Accounts.purchase``) and, at start, for every pack
  not expired, with tokens, and not yet warned (``schedule_all``); one that fell
  due while the server was down fires at start, at its own instant. The packs
  already warned are read back from the stored PACK_EXPIRING notifications. A
  pack whose tokens were all held at its instant is looked at again when its
  team's balance changes (a release gives tokens back: ``_tokens_back``).
- **L3** is ``tokens_exhausted``, which Entitle calls where it is refused with
  INSUFFICIENT_TOKENS (``Sessions.entitle``): the alert is committed, then the
  refusal answered. The team's last alerted day is read back from the stored
  TOKENS_EXHAUSTED notifications.
"""

from __future__ import annotations

from datetime import datetime

from server.domain.alerts import TeamAlerts
from server.domain.changes import Changes
from server.domain.directory import Notification
from server.domain.ledger import BalanceNote
from server.domain.terms import SpanChange, Terms, instant_across_a_change
from server.domain.timers import TimerKind
from server.engine.commits import Commits
from server.engine.scheduler import Scheduler
from server.engine.state import State
from server.ids import IdFactory


class Alerts:
    def __init__(
        self, state: State, *, scheduler: Scheduler, commits: Commits, ids: IdFactory
    ) -> None:
        self.state = state
        self._scheduler = scheduler
        self._ids = ids
        self._book = TeamAlerts.restore(state.directory.list_notifications())
        # The span from a pack's expiry to its warning (the term, less) that a start
        # replaced, and when (``terms_changed``).
        self._warning_before: SpanChange | None = None
        state.ledger.track_balances()
        commits.add_hook(self._balances_changed)
        scheduler.after_each(self._balances_changed)
        scheduler.on(TimerKind.PACK_WARNING, self._on_pack_warning)

    def _new_id(self) -> str:
        return self._ids.new("ntf")

    def _queue(self, note: Notification, changes: Changes) -> None:
        self.state.directory.queue(note, changes)

    # -- L1 ---------------------------------------------------------------------------

    def _balances_changed(self, changes: Changes) -> None:
        balances = self.state.ledger.take_balances()
        if not balances:
            return
        self._low_balance(balances, changes)
        if self._book.waiting:
            self._tokens_back(balances, changes)

    def _low_balance(self, balances: dict[str, list[BalanceNote]], changes: Changes) -> None:
        teams = self.state.teams
        for team_id, seen in balances.items():
            team = teams.get(team_id)
            if team is None or (team.low_balance_threshold <= 0 and not team.low_balance_alerted):
                continue
            flagged = False
            for when, available, fell in seen:
                flipped, note = TeamAlerts.low_balance(team, available, fell, when, self._new_id)
                flagged |= flipped
                if note is not None:
                    self._queue(note, changes)
            if flagged:
                changes.upsert(team)

    # -- L2 ---------------------------------------------------------------------------

    def terms_changed(self, before: Terms, at: datetime) -> None:
        """A start at ``at`` serves by other terms than the data was served by: a
        warning that fell before ``at`` under the term then fires at its own instant;
        a later one follows the new term, from ``at`` on."""
        if before.pack_expiry_warning != self.state.terms.pack_expiry_warning:
            self._warning_before = (-before.pack_expiry_warning, at)

    def schedule_all(self) -> None:
        """At start: the warning of every pack that may still need one."""
        book, warning = self._book, self.state.terms.pack_expiry_warning
        for pack in self.state.ledger.packs.values():
            if not pack.expired and (pack.remaining or pack.held) and not book.warned(pack.pack_id):
                # ``warning_time``, the term from a start that changed it on
                due = instant_across_a_change(pack.expire_time, -warning, self._warning_before)
                self._scheduler.schedule(due, TimerKind.PACK_WARNING, pack.pack_id)

    def _on_pack_warning(self, pack_id: str, due: datetime, changes: Changes) -> None:
        pack = self.state.ledger.packs.get(pack_id)
        if pack is not None and (note := self._book.pack_expiring(pack, due, self._new_id)):
            self._queue(note, changes)

    def _tokens_back(self, balances: dict[str, list[BalanceNote]], changes: Changes) -> None:
        """A pack past its warning instant with all its tokens held then: warned
        when a hold's release gives it tokens back (at that instant), dropped once
        it has none left to warn of. Only the packs of the teams whose balance
        changed are looked at (``TeamAlerts.waiting_in``), not every waiting pack."""
        packs, book = self.state.ledger.packs, self._book
        for pack_id in book.waiting_in(balances):
            pack = packs.get(pack_id)
            if pack is None:
                book.forget_waiting(pack_id)
                continue
            seen = balances.get(pack.team_id)
            if seen is not None and (note := book.pack_expiring(pack, seen[-1].time, self._new_id)):
                self._queue(note, changes)

    # -- L3 ---------------------------------------------------------------------------

    def tokens_exhausted(
        self, team_id: str, user_id: str, product_id: str, now: datetime, changes: Changes
    ) -> None:
        """An Entitle was refused with INSUFFICIENT_TOKENS in ``team_id`` at ``now``."""
        note = self._book.tokens_exhausted(team_id, user_id, product_id, now, self._new_id)
        if note is not None:
            self._queue(note, changes)
