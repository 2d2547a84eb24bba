"""The hot state: what the use cases read and change in memory.

Built first (empty, or from what the store loaded at start), then handed to
each use case with the other things it names (``server/engine/core.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from server.domain.coverage import Coverages, Subscription
from server.domain.directory import Directory, Invitation, Member, Notification, User
from server.domain.errors import InvalidArgument, UnknownProduct, UnknownTeam
from server.domain.ledger import Ledger, TokenPack
from server.domain.products import Product
from server.domain.teams import Team
from server.domain.terms import DEFAULT_TERMS, Terms
from server.store.port import Snapshot


@dataclass
class State:
    directory: Directory
    teams: dict[str, Team] = field(default_factory=dict)
    products: dict[str, Product] = field(default_factory=dict)
    ledger: Ledger = field(default_factory=Ledger)
    coverages: Coverages = field(default_factory=Coverages)
    terms: Terms = DEFAULT_TERMS  # RULES' numbers, as configured

    @classmethod
    def empty(cls, terms: Terms) -> State:
        return cls(Directory(terms.invitation_validity), terms=terms)

    @classmethod
    def restore(cls, snapshot: Snapshot, terms: Terms) -> State:
        teams = {t.team_id: t for t in snapshot.of(Team)}
        return cls(
            directory=Directory.restore(
                snapshot.of(User),
                snapshot.of(Member),
                snapshot.of(Invitation),
                snapshot.of(Notification),
                terms.invitation_validity,
            ),
            teams=teams,
            products={p.product_id: p for p in snapshot.of(Product)},
            ledger=Ledger.restore(
                teams,
                snapshot.of(TokenPack),
                next_seq=snapshot.max_ledger_seq + 1,
                last_hash=snapshot.last_ledger_hash,
            ),
            coverages=Coverages.restore(snapshot.of(Subscription)),
            terms=terms,
        )

    def team(self, team_id: str) -> Team:
        team = self.teams.get(team_id)
        if team is None:
            if not team_id:
                raise InvalidArgument.field("team_id", "is required")
            raise UnknownTeam(f"no team {team_id!r}", team_id=team_id)
        return team

    def product(self, product_id: str) -> Product:
        product = self.products.get(product_id)
        if product is None:
            raise UnknownProduct(f"{product_id!r} is not on the rate sheet", product_id=product_id)
        return product
