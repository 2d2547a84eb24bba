"""Use cases for teams, token packs and the rate sheet (RULES T1-T6, P1, A8)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from server.domain import text
from server.domain.changes import Changes
from server.domain.errors import AlreadyExists, InvalidArgument, UnknownProduct, UnknownTeam
from server.domain.ledger import LedgerEntry, TokenPack
from server.domain.products import Product, validate_product
from server.domain.teams import Plan, Team, validate_team_id
from server.domain.timers import TimerKind

if TYPE_CHECKING:
    from server.engine.core import Engine


class Accounts:
    def __init__(self, engine: Engine) -> None:
        self.e = engine
        engine.scheduler.on(TimerKind.PACK_EXPIRY, self._on_pack_expiry)

    def schedule_all(self) -> None:
        for pack in self.e.ledger.packs.values():
            if not pack.expired:
                self.e.scheduler.schedule(pack.expire_time, TimerKind.PACK_EXPIRY, pack.pack_id)

    # -- teams ---------------------------------------------------------------

    def team(self, team_id: str) -> Team:
        team = self.e.teams.get(team_id)
        if team is None:
            if not team_id:
                raise InvalidArgument.field("team_id", "is required")
            raise UnknownTeam(f"no team {team_id!r}", team_id=team_id)
        return team

    async def create_team(self, team_id: str, display_name: str, plan: Plan | None) -> Team:
        validate_team_id(team_id)
        name = text.display_name(display_name, "display_name") or team_id
        if team_id in self.e.teams:
            raise AlreadyExists(f"team {team_id!r} already exists", team_id=team_id)
        team = Team(team_id, name, plan or Plan.STANDARD, create_time=self.e.now())
        self.e.teams[team_id] = team
        self.e.ledger.add_team(team_id)
        changes = Changes()
        changes.upsert(team)
        await self.e.commit(changes)
        return team

    def list_teams(self) -> list[Team]:
        return sorted(self.e.teams.values(), key=lambda t: t.team_id)

    async def update_team_settings(
        self,
        team_id: str,
        plan: Plan | None,
        guest_default_assignments: bool | None,
        display_name: str | None,
    ) -> Team:
        team = self.team(team_id)
        name = text.display_name(display_name, "display_name") if display_name else None
        if plan is not None:
            team.plan = plan
        changes = Changes()
        if guest_default_assignments is not None:
            self.e.access.set_guest_defaults(team_id, guest_default_assignments, changes)
        if name:
            team.display_name = name
        changes.upsert(team)
        await self.e.commit(changes)
        return team

    # -- tokens --------------------------------------------------------------

    async def purchase(self, team_id: str, tokens: int, request_id: str) -> TokenPack:
        self.team(team_id)
        changes = Changes()
        pack, created = self.e.ledger.purchase(
            team_id, tokens, request_id, self.e.now(), lambda: self.e.ids.new("pk"), changes
        )
        if created:
            self.e.scheduler.schedule(pack.expire_time, TimerKind.PACK_EXPIRY, pack.pack_id)
            await self.e.commit(changes)
        else:  # a retry answers once the first purchase is stored
            await self.e.settled()
        return pack

    def list_packs(self, team_id: str) -> list[TokenPack]:
        self.team(team_id)
        return self.e.ledger.team_packs(team_id)

    async def move_pack(self, pack_id: str, to_team_id: str) -> TokenPack:
        if not pack_id:
            raise InvalidArgument.field("pack_id", "is required")
        if not to_team_id:
            raise InvalidArgument.field("to_team_id", "is required")
        self.e.ledger.pack(pack_id)
        if to_team_id not in self.e.teams:
            raise UnknownTeam(f"no team {to_team_id!r}", team_id=to_team_id)
        changes = Changes()
        pack = self.e.ledger.move(pack_id, to_team_id, self.e.now(), changes)
        await self.e.commit(changes)
        return pack

    async def ledger_page(
        self, team_id: str, after_seq: int, limit: int, pack_id: str = ""
    ) -> list[LedgerEntry]:
        """Entries of a team in order, after ``after_seq``; reads the committed history."""
        self.team(team_id)
        return await self.e.store.ledger_page(team_id, after_seq, limit, pack_id)

    def _on_pack_expiry(self, pack_id: str, due: datetime, changes: Changes) -> None:
        self.e.ledger.expire(pack_id, due, changes)

    # -- the rate sheet --------------------------------------------------------

    async def upsert_product(self, product: Product) -> Product:
        product = replace(
            product,
            display_name=text.display_name(product.display_name, "product.display_name")
            or product.product_id,
        )
        validate_product(product, self.e.products)
        self.e.products[product.product_id] = product
        changes = Changes()
        changes.upsert(product)
        await self.e.commit(changes)
        return product

    def product(self, product_id: str) -> Product:
        product = self.e.products.get(product_id)
        if product is None:
            raise UnknownProduct(f"{product_id!r} is not on the rate sheet", product_id=product_id)
        return product

    def list_products(self) -> list[Product]:
        return sorted(self.e.products.values(), key=lambda p: p.product_id)
