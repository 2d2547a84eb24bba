"""Use cases for teams, token packs and the rate sheet (RULES T1-T6, P1, A8)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from copy import copy
from dataclasses import replace
from datetime import datetime

from server.clock import Clock
from server.domain import text
from server.domain.alerts import warning_time
from server.domain.changes import Changes
from server.domain.errors import (
    AlreadyExists,
    Problems,
    ProductInUse,
    UnknownPack,
    UnknownTeam,
)
from server.domain.forecast import Forecast, PackBalance, forecast
from server.domain.ledger import LedgerEntry, TokenPack
from server.domain.products import Product, validate_product
from server.domain.teams import Plan, Team, validate_team_id
from server.domain.timers import TimerKind
from server.engine.audit import commit_call, store_fired
from server.engine.commits import Commits
from server.engine.scheduler import Scheduler
from server.engine.state import State
from server.ids import IdFactory
from server.store.port import StorePort

# A5 via UpdateTeamSettings (``Access.set_guest_defaults``): (team_id, enabled, now, changes).
SetGuestDefaults = Callable[[str, bool, datetime, Changes], None]
# P1 via UpsertProduct (``Sessions.product_changed``): (before, after, now, changes).
ProductChanged = Callable[[Product, Product, datetime, Changes], None]


class Accounts:
    def __init__(
        self,
        state: State,
        *,
        store: StorePort,
        scheduler: Scheduler,
        clock: Clock,
        commits: Commits,
        ids: IdFactory,
        set_guest_defaults: SetGuestDefaults,
        product_changed: ProductChanged,
        live_count: Callable[[str], int],
    ) -> None:
        self.state = state
        self._store = store
        self._scheduler = scheduler
        self._clock = clock
        self._commits = commits
        self._ids = ids
        self._set_guest_defaults = set_guest_defaults
        self._product_changed = product_changed
        self._live_count = live_count
        scheduler.on(TimerKind.PACK_EXPIRY, self._on_pack_expiry)

    def schedule_all(self) -> None:
        for pack in self.state.ledger.packs.values():
            if not pack.expired:
                self._scheduler.schedule(pack.expire_time, TimerKind.PACK_EXPIRY, pack.pack_id)

    # -- teams ---------------------------------------------------------------

    def team(self, team_id: str) -> Team:
        return self.state.team(team_id)

    async def create_team(
        self, team_id: str, display_name: str, plan: Plan | None, bad: Problems | None = None
    ) -> Team:
        """``bad``: fields the edge already found bad (a plan out of range), named
        with this call's own in one refusal."""
        bad = Problems(bad or {})
        bad.check(lambda: validate_team_id(team_id))
        name = bad.check(lambda: text.display_name(display_name, "display_name"))
        bad.raise_any()
        name = name or team_id
        teams = self.state.teams
        if team_id in teams:
            raise AlreadyExists(f"team {team_id!r} already exists", team_id=team_id)
        team = Team(team_id, name, plan or Plan.STANDARD, create_time=self._clock.now())
        teams[team_id] = team
        self.state.ledger.add_team(team_id)
        changes = Changes()
        changes.upsert(team)
        answer = copy(team)  # as this call left it: others may change it while it is stored
        await self._commits.commit(changes)
        return answer

    def list_teams(self, visible: frozenset[str] | None = None) -> list[Team]:
        """Every team, or those in ``visible`` (a team administrator's, RULES AD1)."""
        teams = self.state.teams.values()
        found = teams if visible is None else (t for t in teams if t.team_id in visible)
        return sorted(found, key=lambda t: t.team_id)

    async def update_team_settings(
        self,
        team_id: str,
        plan: Plan | None,
        guest_default_assignments: bool | None,
        display_name: str | None,
        low_balance_threshold: int | None = None,
        bad: Problems | None = None,
    ) -> Team:
        bad = Problems(bad or {})
        if not team_id:
            bad["team_id"] = "is required"
        name = (
            bad.check(lambda: text.display_name(display_name, "display_name"))
            if display_name
            else None
        )
        if low_balance_threshold is not None and low_balance_threshold < 0:
            bad["low_balance_threshold"] = "must not be negative"
        bad.raise_any()  # every bad field named, before the team is looked up
        team = self.team(team_id)
        # What fell due before now first: guests losing the defaults (A6) end their
        # sessions as they stand now (``Scheduler.caught_up``).
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        fired = len(changes)
        before = (team.low_balance_threshold, team.plan, team.display_name)
        if low_balance_threshold is not None and low_balance_threshold != before[0]:
            team.low_balance_threshold = low_balance_threshold
            # L1 compares the balance with the new threshold in this commit: at or below
            # it (or turned off), the next fall alerts again; set above it, nothing is
            # queued until the balance falls (server/domain/alerts.py).
            self.state.ledger.note_balance(team_id, now)
        if plan is not None:
            team.plan = plan
        if name:
            team.display_name = name
        if guest_default_assignments is not None:  # (it stores the team if it changes)
            self._set_guest_defaults(team_id, guest_default_assignments, now, changes)
        if (team.low_balance_threshold, team.plan, team.display_name) != before:
            changes.upsert(team)
        # A request that changes nothing leaves no audit event (AD2), and stores only
        # the deadlines it fired.
        answer = copy(team)
        await commit_call(self._commits, changes, fired)
        return answer

    # -- tokens --------------------------------------------------------------

    async def purchase(self, team_id: str, tokens: int, request_id: str) -> TokenPack:
        self.team(team_id)
        # What fell due before now first (``Scheduler.caught_up``): a renewal or an
        # expiry due earlier must not find the tokens bought after it (T3, T4).
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        fired = len(changes)
        try:
            pack, created = self.state.ledger.purchase(
                team_id, tokens, request_id, now, lambda: self._ids.new("pk"), changes
            )
        except Exception:
            await store_fired(self._commits, changes)
            raise
        if created:
            self._scheduler.schedule(pack.expire_time, TimerKind.PACK_EXPIRY, pack.pack_id)
            warning = warning_time(pack, self.state.terms.pack_expiry_warning)
            self._scheduler.schedule(warning, TimerKind.PACK_WARNING, pack.pack_id)
        # (a retry, nothing of its own to store and no event (AD2), answers once the
        # first purchase is stored). The pack as this call left it: an Entitle may hold
        # from it while it is stored, and that hold is not stored with it.
        answer = copy(pack)
        await commit_call(self._commits, changes, fired)
        return answer

    def list_packs(self, team_id: str) -> Sequence[TokenPack]:
        self.team(team_id)
        return self.state.ledger.team_packs(team_id)

    async def move_pack(self, pack_id: str, to_team_id: str, from_team_id: str = "") -> TokenPack:
        bad = Problems()
        if not pack_id:
            bad["pack_id"] = "is required"
        if not to_team_id:
            bad["to_team_id"] = "is required"
        bad.raise_any()
        ledger = self.state.ledger
        ledger.pack(pack_id)
        if to_team_id not in self.state.teams:
            raise UnknownTeam(f"no team {to_team_id!r}", team_id=to_team_id)
        # What fell due before now first (``Scheduler.caught_up``): a grace that ended
        # was captured (the pack holds nothing then), a renewal or an expiry due
        # earlier drew on the pack where it was (T3, T4, T5).
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        try:
            pack = ledger.move(pack_id, to_team_id, now, changes, from_team_id)
        except Exception:
            await store_fired(self._commits, changes)
            raise
        answer = copy(pack)
        await self._commits.commit(changes)
        return answer

    async def forecast(self, team_id: str) -> Forecast:
        """L4 as of now; the charges are read from the committed ledger."""
        self.team(team_id)
        now = self._clock.now()
        await self._commits.settled()  # charges already made in memory are counted
        window = self.state.terms.burn_window
        charged = await self._store.captured_since(team_id, now - window)
        # L4 counts only tokens left to take (a pack spent or held counts for nothing)
        packs = self.state.ledger.live_packs(team_id)
        balances = [PackBalance(p.remaining, p.held, p.expire_time) for p in packs]
        return forecast(now, balances, charged, window_days=window.days)

    async def ledger_page(
        self,
        team_id: str,
        since_seq: int,
        limit: int,
        pack_id: str = "",
        *,
        newest_first: bool = False,
    ) -> list[LedgerEntry]:
        """Entries of a team in order, after ``since_seq`` (before it, newest first;
        0: from the start); reads the committed history. UNKNOWN_TEAM, UNKNOWN_PACK."""
        self.team(team_id)
        try:
            pack = self.state.ledger.pack(pack_id) if pack_id else None
        except UnknownPack:  # in the same words as another team's pack (below)
            raise _never_the_teams(team_id, pack_id) from None
        # Entries already made in memory (a deadline's, being stored) are listed, as
        # the balance beside them already counts them.
        await self._commits.settled()
        entries = await self._store.ledger_page(
            team_id, since_seq, limit, pack_id, newest_first=newest_first
        )
        # Never this team's (it would have an entry here): answered as no pack at all,
        # so a team administrator learns nothing of other teams' packs (AD1); past the
        # first page too (a page token is not a secret: anyone can make one), asking
        # whether the team has any entry of it at all.
        if (
            pack is not None
            and not entries
            and pack.team_id != team_id
            and (not since_seq or not await self._store.ledger_page(team_id, 0, 1, pack_id))
        ):
            raise _never_the_teams(team_id, pack_id)
        return entries

    def _on_pack_expiry(self, pack_id: str, due: datetime, changes: Changes) -> None:
        self.state.ledger.expire(pack_id, due, changes)

    # -- the rate sheet --------------------------------------------------------

    async def upsert_product(self, product: Product) -> Product:
        product = replace(
            product,
            display_name=text.display_name(product.display_name, "product.display_name")
            or product.product_id,
        )
        products = self.state.products
        validate_product(product, products)
        # What fell due before now first, under the rate sheet as it stood then
        # (``Scheduler.caught_up``): a renewal due earlier holds the old rate, and
        # a change of idle awareness (M6) finds the sessions as they stand now
        # (idle since their idle instant, expired at their lease's end).
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        fired = len(changes)
        before = products.get(product.product_id)
        if before == product:  # the sheet as it is: nothing to store, no event (AD2)
            await commit_call(self._commits, changes, fired)
            return before
        # A running session is a product's or a plugin's under its host (P4): one
        # whose kind or host changed under it would be neither. Sessions whose
        # lease ran out have just ended above, so only live ones refuse it.
        if before is not None and (before.kind, before.host_product_id) != (
            product.kind,
            product.host_product_id,
        ):
            live = self._live_count(product.product_id)
            if live:
                await store_fired(self._commits, changes)
                raise ProductInUse(product.product_id, live)
        products[product.product_id] = product
        changes.upsert(product)
        if before is not None:  # running sessions follow idle awareness and rate 0
            self._product_changed(before, product, now, changes)
        await self._commits.commit(changes)
        return product

    def product(self, product_id: str) -> Product:
        return self.state.product(product_id)

    def list_products(self) -> list[Product]:
        return sorted(self.state.products.values(), key=lambda p: p.product_id)


def _never_the_teams(team_id: str, pack_id: str) -> UnknownPack:
    """A ledger filtered by a pack that was never the team's: whether it is another
    team's or no pack at all, in the same words (AD1), neither saying it does not exist."""
    return UnknownPack(
        f"team {team_id!r} has no token pack {pack_id!r}, and never had", pack_id=pack_id
    )
