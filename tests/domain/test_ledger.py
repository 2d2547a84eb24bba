"""T1-T7 in the pure ledger: purchases, balance, consumption order, expiry, moves, entries."""

from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest

from server.domain.changes import Changes, Deleted
from server.domain.errors import (
    AlreadyExists,
    InsufficientTokens,
    InvalidArgument,
    PackHasHolds,
    UnknownPack,
    UnknownTeam,
)
from server.domain.ledger import (
    MAX_PURCHASE_TOKENS,
    NO_CAUSE,
    Cause,
    EntryKind,
    Hold,
    Ledger,
    LedgerEntry,
    PackState,
    TokenPack,
)

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
YEAR_LATER = datetime(2027, 3, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
ALICE_ACAD = Cause(session_id="ss-1", user_id="alice", product_id="ACAD")
BOB_REVIT = Cause(session_id="ss-2", user_id="bob", product_id="REVIT")


class Counter:
    """A fake id maker: prefix-001, prefix-002, ... (zero-padded, so ids sort by count)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count:03d}"


def entries_of(changes: Changes) -> list[LedgerEntry]:
    return [item for item in changes.items if isinstance(item, LedgerEntry)]


def row(e: LedgerEntry) -> tuple[EntryKind, str, str, int, int, int]:
    """An entry without its time, seq and cause: (kind, team, pack, amount, Δremaining, Δheld)."""
    return (e.kind, e.team_id, e.pack_id, e.amount, e.remaining_delta, e.held_delta)


class World:
    """A ledger with teams, fake ids and the log of every entry it has written."""

    def __init__(self, *teams: str, ledger: Ledger | None = None) -> None:
        self.ledger = ledger or Ledger()
        for team in teams:
            self.ledger.add_team(team)
        self.pack_ids = Counter("pk")
        self.hold_ids = Counter("hd")
        self.log: list[LedgerEntry] = []
        self.last = Changes()

    def _record(self, changes: Changes) -> list[LedgerEntry]:
        self.last = changes
        new = entries_of(changes)
        self.log += new
        return new

    def buy(self, team: str, tokens: int, at: datetime = T0, request_id: str = "") -> TokenPack:
        """A purchase; a fresh request id unless told (one is required)."""
        changes = Changes()
        request_id = request_id or f"buy-{len(self.ledger.packs) + 1}"
        pack, _created = self.ledger.purchase(team, tokens, request_id, at, self.pack_ids, changes)
        self._record(changes)
        return pack

    def hold(self, team: str, amount: int, at: datetime = T0, cause: Cause = ALICE_ACAD) -> Hold:
        changes = Changes()
        hold = self.ledger.hold(team, amount, cause, at, self.hold_ids(), changes)
        self._record(changes)
        return hold

    def capture(self, hold: Hold, at: datetime = T0) -> list[LedgerEntry]:
        changes = Changes()
        self.ledger.capture(hold, at, changes)
        return self._record(changes)

    def release(self, hold: Hold, at: datetime = T0) -> list[LedgerEntry]:
        changes = Changes()
        self.ledger.release(hold, at, changes)
        return self._record(changes)

    def expire(self, pack: TokenPack, at: datetime) -> bool:
        changes = Changes()
        fired = self.ledger.expire(pack.pack_id, at, changes)
        self._record(changes)
        return fired

    def move(self, pack_id: str, to_team: str, at: datetime = T0) -> list[LedgerEntry]:
        changes = Changes()
        self.ledger.move(pack_id, to_team, at, changes)
        return self._record(changes)

    def snapshot(self) -> dict[str, tuple[str, int, int, int, int, bool]]:
        return {
            p.pack_id: (p.team_id, p.remaining, p.held, p.consumed, p.expired_tokens, p.expired)
            for p in self.ledger.packs.values()
        }

    def sums(self, pack_id: str, team: str | None = None) -> tuple[int, int]:
        """(Σ remaining_delta, Σ held_delta) of a pack's entries, optionally of one team's."""
        mine = [e for e in self.log if e.pack_id == pack_id and (team is None or e.team_id == team)]
        return sum(e.remaining_delta for e in mine), sum(e.held_delta for e in mine)


def restored_pack(
    pack_id: str,
    tokens: int,
    purchase_time: datetime,
    expire_time: datetime,
    team: str = "acme",
    **state: int,
) -> TokenPack:
    return TokenPack(
        pack_id=pack_id,
        team_id=team,
        tokens=tokens,
        purchase_time=purchase_time,
        expire_time=expire_time,
        remaining=state.get("remaining", tokens),
        held=state.get("held", 0),
        consumed=state.get("consumed", 0),
        expired_tokens=state.get("expired_tokens", 0),
    )


# -- T1 Purchase ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("purchase", "expire"),
    [
        (T0, YEAR_LATER),
        # 29 February maps to 28 February, at the same time of day
        (
            datetime(2028, 2, 29, 9, 30, 15, tzinfo=UTC),
            datetime(2029, 2, 28, 9, 30, 15, tzinfo=UTC),
        ),
        (
            datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
            datetime(2027, 12, 31, 23, 59, 59, tzinfo=UTC),
        ),
        (datetime(2027, 2, 28, 8, tzinfo=UTC), datetime(2028, 2, 28, 8, tzinfo=UTC)),
        (datetime(2027, 3, 1, 0, tzinfo=UTC), datetime(2028, 3, 1, 0, tzinfo=UTC)),
        (
            datetime(2028, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
            datetime(2029, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        ),
    ],
)
def test_t1_pack_expires_one_calendar_year_after_purchase(
    purchase: datetime, expire: datetime
) -> None:
    w = World("acme")
    pack = w.buy("acme", 100, at=purchase)
    assert pack.purchase_time == purchase
    assert pack.expire_time == expire
    assert pack.expire_time.tzinfo is UTC


def test_t1_purchased_tokens_join_the_balance_at_once() -> None:
    w = World("acme")
    assert w.ledger.available("acme") == 0
    pack = w.buy("acme", 100)
    assert w.ledger.available("acme") == 100
    assert w.ledger.held("acme") == 0
    assert (pack.pack_id, pack.team_id, pack.tokens) == ("pk-001", "acme", 100)
    assert (pack.remaining, pack.held, pack.consumed, pack.expired_tokens) == (100, 0, 0, 0)
    assert pack.state is PackState.ACTIVE
    assert [row(e) for e in w.log] == [(EntryKind.PURCHASE, "acme", "pk-001", 100, 100, 0)]
    assert w.log[0].time == T0
    assert w.log[0].cause == NO_CAUSE
    assert pack in w.last.items  # the store is told to write the pack
    assert w.ledger.team_packs("acme") == [pack]

    w.buy("acme", 250, at=T0 + DAY)
    assert w.ledger.available("acme") == 350


@pytest.mark.parametrize("tokens", [0, -1, -100, MAX_PURCHASE_TOKENS + 1])
def test_t1_tokens_must_be_positive_and_within_the_limit(tokens: int) -> None:
    w = World("acme")
    changes = Changes()
    with pytest.raises(InvalidArgument) as err:
        w.ledger.purchase("acme", tokens, "rq-1", T0, w.pack_ids, changes)
    assert set(err.value.violations) == {"tokens"}
    assert "tokens" in str(err.value)
    assert not changes
    assert w.ledger.packs == {}
    assert w.ledger.available("acme") == 0
    # the refused request_id is not remembered: a valid retry creates the pack
    pack = w.buy("acme", 10, request_id="rq-1")
    assert pack.tokens == 10


@pytest.mark.parametrize("tokens", [1, MAX_PURCHASE_TOKENS])
def test_t1_the_smallest_and_largest_purchases_are_accepted(tokens: int) -> None:
    w = World("acme")
    w.buy("acme", tokens)
    assert w.ledger.available("acme") == tokens


def test_t1_purchase_for_an_unknown_team_is_refused() -> None:
    w = World("acme")
    changes = Changes()
    with pytest.raises(UnknownTeam) as err:
        w.ledger.purchase("nobody", 10, "rq-1", T0, w.pack_ids, changes)
    assert err.value.metadata == {"team_id": "nobody"}
    assert not changes
    assert w.ledger.packs == {}


def test_t1_repeated_request_id_returns_the_same_pack() -> None:
    w = World("acme")
    first = w.buy("acme", 100, request_id="rq-1")
    changes = Changes()
    again, created = w.ledger.purchase("acme", 100, "rq-1", T0 + DAY, w.pack_ids, changes)
    assert again is first
    assert created is False
    assert not changes  # no second pack, no second entry
    assert again.purchase_time == T0
    assert list(w.ledger.packs) == ["pk-001"]
    assert w.ledger.available("acme") == 100
    assert [e.kind for e in w.log] == [EntryKind.PURCHASE]


def test_t1_repeated_request_id_with_another_amount_is_already_exists() -> None:
    w = World("acme")
    w.buy("acme", 100, request_id="rq-1")
    changes = Changes()
    with pytest.raises(AlreadyExists) as err:
        w.ledger.purchase("acme", 200, "rq-1", T0, w.pack_ids, changes)
    assert err.value.metadata == {"request_id": "rq-1", "pack_id": "pk-001"}
    assert not changes
    assert list(w.ledger.packs) == ["pk-001"]
    assert w.ledger.available("acme") == 100


@pytest.mark.parametrize("tokens", [-1, 0, 1_000_000_001, 2**63 - 1])
def test_t1_a_bad_number_of_tokens_is_refused_naming_it_even_under_a_used_request_id(
    tokens: int,
) -> None:
    """Bad input is INVALID_ARGUMENT naming the field, whatever else the request
    says: a retry can never make -1 tokens a purchase's, so a used request id is
    not the answer."""
    w = World("acme")
    w.buy("acme", 100, request_id="rq-1")
    for request_id in ("rq-1", "rq-2"):
        with pytest.raises(InvalidArgument) as err:
            w.ledger.purchase("acme", tokens, request_id, T0, w.pack_ids, Changes())
        assert err.value.violations == {"tokens": "must be a whole number from 1 to 1,000,000,000"}
    assert list(w.ledger.packs) == ["pk-001"]


def test_issue12_h2_14_repeated_request_id_for_another_team_is_already_exists() -> None:
    w = World("acme", "beta")
    w.buy("acme", 100, request_id="rq-1")
    changes = Changes()
    with pytest.raises(AlreadyExists) as err:
        w.ledger.purchase("beta", 100, "rq-1", T0, w.pack_ids, changes)
    # Another team's purchase is none of beta's business (AD1): neither named nor shown.
    assert err.value.metadata == {"request_id": "rq-1"}
    assert "another purchase" in err.value.message and "acme" not in err.value.message
    assert not changes
    assert (w.ledger.available("acme"), w.ledger.available("beta")) == (100, 0)


@pytest.mark.parametrize(
    ("request_id", "words"),
    [
        ("", "is required"),
        ("   ", "must not be blank"),
        ("po\x001", "control or format character (found U+0000)"),
        ("po-1\n", "control or format character (found U+000A)"),
        ("po\u202e1", "control or format character (found U+202E)"),
        ("x" * 201, "at most 200 characters"),
    ],
)
def test_issue12_h2_14_purchase_needs_a_request_id_by_the_one_rule(
    request_id: str, words: str
) -> None:
    """Issue 12, points 6 and 14: a purchase without a key bought twice on retry,
    and one with a NUL in it was accepted (Entitle refused it)."""
    w = World("acme")
    changes = Changes()
    with pytest.raises(InvalidArgument) as err:
        w.ledger.purchase("acme", 100, request_id, T0, w.pack_ids, changes)
    assert list(err.value.violations) == ["request_id"]
    assert words in err.value.violations["request_id"]
    assert not changes
    assert w.ledger.packs == {}
    assert w.ledger.available("acme") == 0


# -- T2 Balance ----------------------------------------------------------------------------------


def test_t2_available_is_unexpired_tokens_neither_consumed_nor_held() -> None:
    w = World("acme")
    first = w.buy("acme", 100)
    w.buy("acme", 50, at=T0 + DAY)
    assert w.ledger.available("acme") == 150

    h = w.hold("acme", 30)
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (120, 30)
    w.capture(h)  # consumed
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (120, 0)

    w.hold("acme", 20)
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (100, 20)

    assert w.expire(first, YEAR_LATER)  # 50 left in the first pack expire; its 20 held stay held
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (50, 20)


def test_t2_held_tokens_are_not_available_to_anyone_else() -> None:
    w = World("acme")
    w.buy("acme", 10)
    w.hold("acme", 10, cause=ALICE_ACAD)
    assert w.ledger.available("acme") == 0
    with pytest.raises(InsufficientTokens) as err:
        w.hold("acme", 1, cause=BOB_REVIT)
    assert (err.value.available, err.value.daily_rate) == (0, 1)
    assert w.ledger.available("acme") == 0
    assert w.ledger.held("acme") == 10


def test_t2_a_team_without_packs_has_zero_balance() -> None:
    w = World("acme")
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (0, 0)
    assert w.ledger.team_packs("acme") == []
    assert w.ledger.next_expiry("acme") is None
    with pytest.raises(UnknownTeam):
        w.ledger.available("nobody")


def test_m2_hold_beyond_the_available_balance_is_refused_and_changes_nothing() -> None:
    w = World("acme")
    w.buy("acme", 40)
    w.buy("acme", 20, at=T0 + SECOND)
    w.hold("acme", 15)
    before = w.snapshot()
    log_before = list(w.log)
    changes = Changes()
    with pytest.raises(InsufficientTokens) as err:
        w.ledger.hold("acme", 50, ALICE_ACAD, T0, "hd-x", changes)
    assert err.value.available == 45
    assert err.value.daily_rate == 50
    assert err.value.reason == "INSUFFICIENT_TOKENS"
    assert err.value.metadata == {"team_id": "acme", "available": "45", "daily_rate": "50"}
    assert not changes  # no entries, no packs, no hold
    assert w.snapshot() == before
    assert w.log == log_before
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (45, 15)
    # exactly the available balance can still be held
    w.hold("acme", 45)
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (0, 60)


# -- T3 Consumption order ------------------------------------------------------------------------


def test_t3_earliest_expiry_first() -> None:
    # the later purchase expires first here: restored packs carry their own expire_time
    late = restored_pack("pk-001", 10, T0, T0 + 400 * DAY)
    early = restored_pack("pk-002", 500, T0 + DAY, T0 + 200 * DAY)
    w = World(ledger=Ledger.restore(["acme"], [late, early], next_seq=1))
    h = w.hold("acme", 30)
    assert h.parts == (("pk-002", 30),)
    assert (early.remaining, late.remaining) == (470, 10)


def test_t3_on_equal_expiry_the_smaller_pack_goes_first() -> None:
    w = World("acme")
    w.buy("acme", 100)  # pk-001: earlier id, same instant, so the same expire_time
    small = w.buy("acme", 40)  # pk-002
    h = w.hold("acme", 10)
    assert h.parts == (("pk-002", 10),)
    assert small.remaining == 30


def test_t3_on_equal_expiry_and_size_the_earlier_purchase_goes_first() -> None:
    expiry = T0 + 365 * DAY
    later = restored_pack("pk-001", 50, T0 + DAY, expiry)
    earlier = restored_pack("pk-002", 50, T0, expiry)
    w = World(ledger=Ledger.restore(["acme"], [later, earlier], next_seq=1))
    h = w.hold("acme", 60)
    assert h.parts == (("pk-002", 50), ("pk-001", 10))


def test_t3_on_a_full_tie_the_smaller_pack_id_goes_first() -> None:
    w = World("acme")
    w.buy("acme", 50)  # pk-001
    w.buy("acme", 50)  # pk-002
    h = w.hold("acme", 70)
    assert h.parts == (("pk-001", 50), ("pk-002", 20))

    # and independently of the order the packs are known in
    b = restored_pack("pk-b", 50, T0, YEAR_LATER)
    a = restored_pack("pk-a", 50, T0, YEAR_LATER)
    w2 = World(ledger=Ledger.restore(["acme"], [b, a], next_seq=1))
    assert w2.hold("acme", 70).parts == (("pk-a", 50), ("pk-b", 20))


def test_t3_expiry_outranks_size_and_size_outranks_purchase_time() -> None:
    expiry = T0 + 300 * DAY
    packs = [
        restored_pack("pk-a", 10, T0, expiry + DAY),  # latest expiry: last
        restored_pack("pk-b", 30, T0, expiry),  # bigger: after pk-c and pk-d
        restored_pack("pk-c", 20, T0 + DAY, expiry),  # smaller, later purchase: after pk-d
        restored_pack("pk-d", 20, T0, expiry),
    ]
    w = World(ledger=Ledger.restore(["acme"], packs, next_seq=1))
    h = w.hold("acme", 80)
    assert h.parts == (("pk-d", 20), ("pk-c", 20), ("pk-b", 30), ("pk-a", 10))


def test_t3_one_hold_spanning_packs_records_each_part() -> None:
    w = World("acme")
    w.buy("acme", 30)
    w.buy("acme", 50, at=T0 + DAY)
    w.buy("acme", 100, at=T0 + 2 * DAY)
    w.log.clear()
    h = w.hold("acme", 60, at=T0 + 3 * DAY)
    assert h.amount == 60
    assert h.team_id == "acme"
    assert h.cause == ALICE_ACAD
    assert h.time == T0 + 3 * DAY
    assert h.hold_id == "hd-001"
    assert h.parts == (("pk-001", 30), ("pk-002", 30))
    assert [row(e) for e in w.log] == [
        (EntryKind.HOLD, "acme", "pk-001", 30, -30, 30),
        (EntryKind.HOLD, "acme", "pk-002", 30, -30, 30),
    ]
    assert all(e.cause == ALICE_ACAD and e.time == T0 + 3 * DAY for e in w.log)
    assert h in w.last.items
    p1, p2, p3 = (w.ledger.pack(f"pk-00{i}") for i in (1, 2, 3))
    assert (p1.remaining, p1.held) == (0, 30)
    assert (p2.remaining, p2.held) == (20, 30)
    assert (p3.remaining, p3.held) == (100, 0)
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (120, 60)

    # the next hold goes on where this one stopped
    assert w.hold("acme", 30).parts == (("pk-002", 20), ("pk-003", 10))


def test_t3_capture_consumes_exactly_the_parts_of_the_hold() -> None:
    w = World("acme")
    w.buy("acme", 30)
    w.buy("acme", 50, at=T0 + DAY)
    w.buy("acme", 100, at=T0 + 2 * DAY)
    h = w.hold("acme", 60, cause=BOB_REVIT)
    at = T0 + 3 * DAY + 5 * timedelta(minutes=1)
    captured = w.capture(h, at=at)
    assert [row(e) for e in captured] == [
        (EntryKind.CAPTURE, "acme", "pk-001", 30, 0, -30),
        (EntryKind.CAPTURE, "acme", "pk-002", 30, 0, -30),
    ]
    assert all(e.cause == BOB_REVIT and e.time == at for e in captured)
    assert Deleted(h) in w.last.items
    p1, p2, p3 = (w.ledger.pack(f"pk-00{i}") for i in (1, 2, 3))
    assert (p1.remaining, p1.held, p1.consumed) == (0, 0, 30)
    assert p1.state is PackState.DEPLETED
    assert (p2.remaining, p2.held, p2.consumed) == (20, 0, 30)
    assert (p3.remaining, p3.held, p3.consumed) == (100, 0, 0)
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (120, 0)


def test_t3_release_puts_the_parts_back() -> None:
    w = World("acme")
    w.buy("acme", 30)
    w.buy("acme", 50, at=T0 + DAY)
    h = w.hold("acme", 60, cause=BOB_REVIT)
    released = w.release(h, at=T0 + 2 * DAY)
    assert [row(e) for e in released] == [
        (EntryKind.HOLD_RELEASE, "acme", "pk-001", 30, 30, -30),
        (EntryKind.HOLD_RELEASE, "acme", "pk-002", 30, 30, -30),
    ]
    assert all(e.cause == BOB_REVIT for e in released)
    assert Deleted(h) in w.last.items
    p1, p2 = w.ledger.pack("pk-001"), w.ledger.pack("pk-002")
    assert (p1.remaining, p1.held, p1.consumed) == (30, 0, 0)
    assert (p2.remaining, p2.held, p2.consumed) == (50, 0, 0)
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (80, 0)
    # released tokens are taken again in the same order
    assert w.hold("acme", 40).parts == (("pk-001", 30), ("pk-002", 10))


def test_c3_next_expiry_is_the_expiry_of_the_pack_consumed_next() -> None:
    w = World("acme")
    assert w.ledger.next_expiry("acme") is None
    big = w.buy("acme", 100)
    small = w.buy("acme", 40)  # same expiry, smaller: T3 takes it first
    later = w.buy("acme", 10, at=T0 + 10 * DAY)
    assert w.ledger.next_expiry("acme") == YEAR_LATER
    w.capture(w.hold("acme", 140))  # both T0 packs consumed
    assert (big.remaining, small.remaining) == (0, 0)
    assert w.ledger.next_expiry("acme") == later.expire_time == YEAR_LATER + 10 * DAY
    w.capture(w.hold("acme", 10))
    assert w.ledger.next_expiry("acme") is None


def test_c3_next_expiry_skips_expired_packs_and_follows_t3_order() -> None:
    first = restored_pack("pk-001", 10, T0, T0 + 100 * DAY)
    second = restored_pack("pk-002", 10, T0, T0 + 200 * DAY)
    w = World(ledger=Ledger.restore(["acme"], [second, first], next_seq=1))
    assert w.ledger.next_expiry("acme") == T0 + 100 * DAY
    assert w.hold("acme", 1).parts == (("pk-001", 1),)
    assert w.expire(first, T0 + 100 * DAY)
    assert w.ledger.next_expiry("acme") == T0 + 200 * DAY
    assert w.hold("acme", 1).parts == (("pk-002", 1),)


class WatchedPack(TokenPack):
    """A pack that counts how often each of its fields is read, per class."""

    looked: ClassVar[collections.Counter[str]] = collections.Counter()

    def __getattribute__(self, name: str) -> object:
        type(self).looked[name] += 1
        return super().__getattribute__(name)


class SpentPack(WatchedPack):
    looked: ClassVar[collections.Counter[str]] = collections.Counter()


def test_c3_t3_the_next_tokens_are_found_without_looking_at_spent_or_expired_packs() -> None:
    """A team that bought daily for years keeps every pack it spent (T6): C3's next
    expiry, M2's hold and L4's forecast read only the packs with tokens left, in T3
    order."""
    spent = [
        SpentPack(f"old-{i:04d}", "acme", 10, T0 + i * SECOND, YEAR_LATER + i * SECOND, consumed=10)
        for i in range(1_000)
    ] + [
        SpentPack(f"gone-{i:03d}", "acme", 5, T0, T0 + DAY, expired_tokens=5, expired=True)
        for i in range(100)
    ]
    live = [
        WatchedPack(f"pk-{i}", "acme", 10, T0 + DAY, YEAR_LATER + (3 - i) * DAY, remaining=10)
        for i in range(3)
    ]
    w = World(ledger=Ledger.restore(["acme"], spent + live, next_seq=1))
    SpentPack.looked.clear()
    WatchedPack.looked.clear()
    assert w.ledger.next_expiry("acme") == YEAR_LATER + DAY  # pk-2, the earliest
    hold = w.hold("acme", 25)
    assert hold.parts == (("pk-2", 10), ("pk-1", 10), ("pk-0", 5))
    assert w.ledger.next_expiry("acme") == YEAR_LATER + 3 * DAY  # pk-0's 5 left
    w.release(hold)
    assert w.ledger.next_expiry("acme") == YEAR_LATER + DAY  # pk-2 has tokens again
    assert w.ledger.available("acme") == 30
    # L4's forecast reads the same packs, in the order they will be taken
    assert [p.pack_id for p in w.ledger.live_packs("acme")] == ["pk-2", "pk-1", "pk-0"]
    assert SpentPack.looked["remaining"] == 0
    assert WatchedPack.looked["remaining"] > 0


def test_t2_a_team_s_packs_are_listed_by_purchase_as_they_come_and_go() -> None:
    """ListTokenPacks pages through a team's packs by purchase, then id: the ledger
    keeps them in that order as they are bought, moved in and out and loaded, so a
    page is read from its start, not sorted from all of them."""
    stored = [
        WatchedPack(f"pk-{i:04d}", "acme", 10, T0 + (i % 97) * SECOND, YEAR_LATER, remaining=10)
        for i in range(1_000)
    ]
    w = World(ledger=Ledger.restore(["acme", "globex"], stored[::-1], next_seq=1))
    w.buy("acme", 5, at=T0 + DAY)
    older = w.buy("globex", 5, at=T0 - DAY)
    w.move(older.pack_id, "acme")
    w.move("pk-0500", "globex")
    WatchedPack.looked.clear()
    listed = w.ledger.team_packs("acme")
    assert WatchedPack.looked["purchase_time"] == 0
    assert len(listed) == 1_001
    assert listed[0] is older
    assert [p.bought_key() for p in listed] == sorted(
        (p.purchase_time, p.pack_id) for p in w.ledger.packs.values() if p.team_id == "acme"
    )
    assert [p.pack_id for p in w.ledger.team_packs("globex")] == ["pk-0500"]


# -- T4 Expiry -----------------------------------------------------------------------------------


def test_t4_expiry_records_the_remaining_tokens_and_they_leave_the_balance() -> None:
    w = World("acme")
    pack = w.buy("acme", 100)
    w.capture(w.hold("acme", 30))
    assert w.expire(pack, YEAR_LATER) is True
    assert [row(e) for e in entries_of(w.last)] == [
        (EntryKind.EXPIRY, "acme", "pk-001", 70, -70, 0)
    ]
    assert w.log[-1].time == YEAR_LATER
    assert pack in w.last.items
    assert pack.state is PackState.EXPIRED
    assert (pack.remaining, pack.held, pack.consumed, pack.expired_tokens) == (0, 0, 30, 70)
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (0, 0)
    assert w.ledger.next_expiry("acme") is None


def test_t4_expired_tokens_never_come_back() -> None:
    w = World("acme")
    old = w.buy("acme", 100)
    w.expire(old, YEAR_LATER)
    with pytest.raises(InsufficientTokens) as err:
        w.hold("acme", 1, at=YEAR_LATER)
    assert err.value.available == 0
    new = w.buy("acme", 20, at=YEAR_LATER + DAY)  # a new purchase rolls nothing over
    assert w.ledger.available("acme") == 20
    assert w.hold("acme", 20, at=YEAR_LATER + DAY).parts == ((new.pack_id, 20),)
    assert (old.remaining, old.expired_tokens) == (0, 100)


def test_t4_expiry_before_expire_time_is_a_no_op() -> None:
    w = World("acme")
    pack = w.buy("acme", 100)
    assert w.expire(pack, YEAR_LATER - SECOND) is False
    assert not w.last
    assert pack.state is PackState.ACTIVE
    assert (pack.remaining, pack.expired_tokens) == (100, 0)
    assert w.ledger.available("acme") == 100


def test_t4_expiring_twice_is_a_no_op() -> None:
    w = World("acme")
    pack = w.buy("acme", 100)
    assert w.expire(pack, YEAR_LATER) is True
    assert w.expire(pack, YEAR_LATER + DAY) is False
    assert not w.last
    assert (pack.remaining, pack.expired_tokens) == (0, 100)
    assert [e.kind for e in w.log] == [EntryKind.PURCHASE, EntryKind.EXPIRY]
    assert w.ledger.available("acme") == 0


def test_t4_expiring_an_unknown_pack_is_a_no_op() -> None:
    ledger = Ledger()
    changes = Changes()
    assert ledger.expire("pk-404", YEAR_LATER, changes) is False
    assert not changes


def test_t4_a_pack_with_nothing_left_expires_without_an_entry() -> None:
    w = World("acme")
    pack = w.buy("acme", 10)
    w.capture(w.hold("acme", 10))
    assert w.expire(pack, YEAR_LATER) is True
    assert entries_of(w.last) == []
    assert pack.state is PackState.EXPIRED
    assert (pack.consumed, pack.expired_tokens) == (10, 0)


def test_t4_held_tokens_stay_held_and_expire_at_once_when_released() -> None:
    w = World("acme")
    pack = w.buy("acme", 100)
    h = w.hold("acme", 30)
    assert w.expire(pack, YEAR_LATER) is True
    assert [row(e) for e in entries_of(w.last)] == [
        (EntryKind.EXPIRY, "acme", "pk-001", 70, -70, 0)
    ]
    assert (pack.remaining, pack.held, pack.expired_tokens) == (0, 30, 70)
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (0, 30)

    at = YEAR_LATER + 2 * SECOND
    released = w.release(h, at=at)
    assert [row(e) for e in released] == [
        (EntryKind.HOLD_RELEASE, "acme", "pk-001", 30, 30, -30),
        (EntryKind.EXPIRY, "acme", "pk-001", 30, -30, 0),
    ]
    assert all(e.time == at for e in released)
    assert (pack.remaining, pack.held, pack.consumed, pack.expired_tokens) == (0, 0, 0, 100)
    assert pack.state is PackState.EXPIRED
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (0, 0)


def test_t4_held_tokens_of_an_expired_pack_are_consumed_when_captured() -> None:
    w = World("acme")
    pack = w.buy("acme", 100)
    h = w.hold("acme", 30)
    w.expire(pack, YEAR_LATER)
    captured = w.capture(h, at=YEAR_LATER + SECOND)
    assert [row(e) for e in captured] == [(EntryKind.CAPTURE, "acme", "pk-001", 30, 0, -30)]
    assert (pack.remaining, pack.held, pack.consumed, pack.expired_tokens) == (0, 0, 30, 70)
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (0, 0)


def test_t4_release_spanning_an_expired_and_a_live_pack_expires_only_the_expired_part() -> None:
    w = World("acme")
    old = w.buy("acme", 20)
    new = w.buy("acme", 100, at=T0 + 30 * DAY)
    h = w.hold("acme", 50, at=YEAR_LATER - DAY)
    assert h.parts == (("pk-001", 20), ("pk-002", 30))
    w.expire(old, YEAR_LATER)
    assert entries_of(w.last) == []  # nothing left in it but held tokens
    released = w.release(h, at=YEAR_LATER + DAY)
    assert [row(e) for e in released] == [
        (EntryKind.HOLD_RELEASE, "acme", "pk-001", 20, 20, -20),
        (EntryKind.EXPIRY, "acme", "pk-001", 20, -20, 0),
        (EntryKind.HOLD_RELEASE, "acme", "pk-002", 30, 30, -30),
    ]
    assert (old.remaining, old.expired_tokens) == (0, 20)
    assert (new.remaining, new.held) == (100, 0)
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (100, 0)


def test_t4_a_team_whose_packs_have_all_expired_has_a_balance_of_zero() -> None:
    w = World("acme")
    a = w.buy("acme", 100)
    b = w.buy("acme", 50, at=T0 + 10 * DAY)
    w.capture(w.hold("acme", 120))
    assert w.expire(a, YEAR_LATER)
    assert w.ledger.available("acme") == 30
    assert w.expire(b, YEAR_LATER + 10 * DAY)
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (0, 0)
    assert w.ledger.next_expiry("acme") is None
    assert (a.consumed, a.expired_tokens, b.consumed, b.expired_tokens) == (100, 0, 20, 30)


# -- T5 Move -------------------------------------------------------------------------------------


def test_t5_move_carries_the_remaining_tokens_to_the_other_team() -> None:
    w = World("acme", "globex")
    pack = w.buy("acme", 100)
    w.capture(w.hold("acme", 30))
    at = T0 + DAY
    moved = w.move(pack.pack_id, "globex", at=at)
    assert [row(e) for e in moved] == [
        (EntryKind.MOVE_OUT, "acme", "pk-001", 70, -70, 0),
        (EntryKind.MOVE_IN, "globex", "pk-001", 70, 70, 0),
    ]
    assert all(e.time == at for e in moved)
    assert pack in w.last.items
    assert pack.team_id == "globex"
    assert (pack.remaining, pack.held, pack.consumed) == (70, 0, 30)
    assert (w.ledger.available("acme"), w.ledger.available("globex")) == (0, 70)
    assert w.ledger.team_packs("acme") == []
    assert w.ledger.team_packs("globex") == [pack]
    assert w.ledger.next_expiry("acme") is None
    assert w.ledger.next_expiry("globex") == YEAR_LATER

    # what it paid for stays in the first team's history
    acme = [row(e) for e in w.log if e.team_id == "acme"]
    assert acme == [
        (EntryKind.PURCHASE, "acme", "pk-001", 100, 100, 0),
        (EntryKind.HOLD, "acme", "pk-001", 30, -30, 30),
        (EntryKind.CAPTURE, "acme", "pk-001", 30, 0, -30),
        (EntryKind.MOVE_OUT, "acme", "pk-001", 70, -70, 0),
    ]
    assert w.sums("pk-001", "acme") == (0, 0)
    assert w.sums("pk-001", "globex") == (70, 0)
    assert w.sums("pk-001") == (pack.remaining, pack.held)

    # the new team spends it; the old one cannot
    with pytest.raises(InsufficientTokens):
        w.hold("acme", 1, at=at)
    assert w.hold("globex", 70, at=at).parts == (("pk-001", 70),)


def test_t1_t5_a_pack_sold_without_its_buyer_recorded_is_its_holder_s_once_moved() -> None:
    """A pack an older release sold has no buyer stored (``bought_by`` ""): unmoved,
    the team holding it bought it. Moved, it keeps that team as its buyer, so the
    buyer's retry of the purchase still finds it and the new holder's is refused
    (it was the other way round: the holder then passed for the buyer)."""
    w = World("acme", "globex")
    pack = w.buy("acme", 100, request_id="po-2")
    pack.bought_by = ""  # as an older release stored it
    w.move(pack.pack_id, "globex", at=T0 + DAY)
    assert pack.bought_by == "acme"
    assert w.buy("acme", 100, request_id="po-2") is pack
    with pytest.raises(AlreadyExists):
        w.buy("globex", 100, request_id="po-2")


def test_t5_a_pack_with_held_tokens_cannot_move() -> None:
    w = World("acme", "globex")
    pack = w.buy("acme", 100)
    h = w.hold("acme", 30)
    before = w.snapshot()
    changes = Changes()
    with pytest.raises(PackHasHolds) as err:
        w.ledger.move(pack.pack_id, "globex", T0, changes)
    assert err.value.reason == "PACK_HAS_HOLDS"
    assert err.value.metadata == {"pack_id": "pk-001", "held_tokens": "30"}
    assert not changes
    assert w.snapshot() == before
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (70, 30)
    assert (w.ledger.available("globex"), w.ledger.held("globex")) == (0, 0)
    assert w.ledger.team_packs("acme") == [pack]

    # once the hold is settled it can move
    w.release(h)
    w.move(pack.pack_id, "globex")
    assert (w.ledger.available("acme"), w.ledger.available("globex")) == (0, 100)


def test_t5_moving_to_the_same_team_is_an_invalid_argument() -> None:
    w = World("acme")
    pack = w.buy("acme", 100)
    changes = Changes()
    with pytest.raises(InvalidArgument) as err:
        w.ledger.move(pack.pack_id, "acme", T0, changes)
    assert set(err.value.violations) == {"to_team_id"}
    assert not changes
    assert pack.team_id == "acme"
    assert w.ledger.available("acme") == 100


def test_t5_moving_to_an_unknown_team_is_refused() -> None:
    w = World("acme")
    pack = w.buy("acme", 100)
    changes = Changes()
    with pytest.raises(UnknownTeam) as err:
        w.ledger.move(pack.pack_id, "nobody", T0, changes)
    assert err.value.metadata == {"team_id": "nobody"}
    assert not changes
    assert pack.team_id == "acme"
    assert w.ledger.available("acme") == 100


def test_t5_moving_an_unknown_pack_is_refused() -> None:
    w = World("acme", "globex")
    changes = Changes()
    with pytest.raises(UnknownPack) as err:
        w.ledger.move("pk-404", "globex", T0, changes)
    assert err.value.metadata == {"pack_id": "pk-404"}
    assert not changes
    with pytest.raises(UnknownPack):
        w.ledger.pack("pk-404")


def test_t5_a_moved_pack_keeps_its_expiry_and_expires_in_the_new_team() -> None:
    w = World("acme", "globex")
    pack = w.buy("acme", 100)
    w.buy("acme", 5, at=T0 + DAY)
    w.move(pack.pack_id, "globex", at=T0 + DAY)
    assert pack.expire_time == YEAR_LATER
    assert w.expire(pack, YEAR_LATER)
    assert [row(e) for e in entries_of(w.last)] == [
        (EntryKind.EXPIRY, "globex", "pk-001", 100, -100, 0)
    ]
    assert (w.ledger.available("acme"), w.ledger.available("globex")) == (5, 0)


# -- T6 Ledger -----------------------------------------------------------------------------------


def test_t6_every_change_is_an_entry_with_time_team_pack_amount_and_cause() -> None:
    w = World("acme", "globex")
    t = [T0 + i * timedelta(hours=1) for i in range(8)]
    a = w.buy("acme", 50, at=t[0])
    w.buy("acme", 100, at=t[1])
    h1 = w.hold("acme", 60, at=t[2], cause=ALICE_ACAD)
    w.capture(h1, at=t[3])
    h2 = w.hold("acme", 30, at=t[4], cause=BOB_REVIT)
    w.release(h2, at=t[5])
    w.move(a.pack_id, "globex", at=t[6])  # a has nothing left: a move of 0
    w.move("pk-002", "globex", at=t[7])
    expected = [
        (t[0], EntryKind.PURCHASE, "acme", "pk-001", 50, 50, 0, NO_CAUSE),
        (t[1], EntryKind.PURCHASE, "acme", "pk-002", 100, 100, 0, NO_CAUSE),
        (t[2], EntryKind.HOLD, "acme", "pk-001", 50, -50, 50, ALICE_ACAD),
        (t[2], EntryKind.HOLD, "acme", "pk-002", 10, -10, 10, ALICE_ACAD),
        (t[3], EntryKind.CAPTURE, "acme", "pk-001", 50, 0, -50, ALICE_ACAD),
        (t[3], EntryKind.CAPTURE, "acme", "pk-002", 10, 0, -10, ALICE_ACAD),
        (t[4], EntryKind.HOLD, "acme", "pk-002", 30, -30, 30, BOB_REVIT),
        (t[5], EntryKind.HOLD_RELEASE, "acme", "pk-002", 30, 30, -30, BOB_REVIT),
        (t[6], EntryKind.MOVE_OUT, "acme", "pk-001", 0, 0, 0, NO_CAUSE),
        (t[6], EntryKind.MOVE_IN, "globex", "pk-001", 0, 0, 0, NO_CAUSE),
        (t[7], EntryKind.MOVE_OUT, "acme", "pk-002", 90, -90, 0, NO_CAUSE),
        (t[7], EntryKind.MOVE_IN, "globex", "pk-002", 90, 90, 0, NO_CAUSE),
    ]
    got = [
        (e.time, e.kind, e.team_id, e.pack_id, e.amount, e.remaining_delta, e.held_delta, e.cause)
        for e in w.log
    ]
    assert got == expected
    assert [e.seq for e in w.log] == list(range(1, 13))
    assert w.log[0].entry_id == "000000000001"
    assert w.ledger.next_seq == 13


def test_t6_summing_a_packs_entries_gives_its_remaining_and_held_tokens() -> None:
    w = World("acme", "globex")
    a = w.buy("acme", 40)
    b = w.buy("acme", 100, at=T0 + DAY)
    c = w.buy("globex", 70, at=T0 + 2 * DAY)
    w.capture(w.hold("acme", 50, at=T0 + 3 * DAY))
    open_hold = w.hold("acme", 30, at=T0 + 4 * DAY)
    w.release(w.hold("acme", 5, at=T0 + 5 * DAY), at=T0 + 6 * DAY)
    w.move(c.pack_id, "acme", at=T0 + 7 * DAY)
    w.capture(w.hold("acme", 25, at=T0 + 8 * DAY))
    w.expire(a, YEAR_LATER)
    w.expire(b, YEAR_LATER + DAY)  # with 30 still held by open_hold
    assert open_hold.parts == ((b.pack_id, 30),)

    for pack in (a, b, c):
        assert w.sums(pack.pack_id) == (pack.remaining, pack.held)
    assert (b.remaining, b.held, b.consumed, b.expired_tokens) == (0, 30, 35, 35)
    assert (c.remaining, c.consumed) == (70, 0)  # b expires first, so T3 took b
    # the moved pack: nothing left of it in its first team's entries
    assert w.sums(c.pack_id, "globex") == (0, 0)
    assert w.sums(c.pack_id, "acme") == (70, 0)
    for team in ("acme", "globex"):
        team_entries = [e for e in w.log if e.team_id == team]
        assert sum(e.remaining_delta for e in team_entries) == w.ledger.available(team)
        assert sum(e.held_delta for e in team_entries) == w.ledger.held(team)
    assert (w.ledger.available("acme"), w.ledger.held("acme")) == (70, 30)

    w.release(open_hold, at=YEAR_LATER + 2 * DAY)
    assert w.sums(b.pack_id) == (0, 0)
    assert (b.expired_tokens, w.ledger.held("acme")) == (65, 0)


# -- T7 No per-user limits -----------------------------------------------------------------------


def test_t7_one_user_may_spend_the_whole_balance() -> None:
    w = World("acme")
    w.buy("acme", 100)
    for _ in range(4):
        w.capture(w.hold("acme", 25, cause=ALICE_ACAD))
    assert w.ledger.available("acme") == 0
    assert sum(e.amount for e in w.log if e.kind is EntryKind.CAPTURE) == 100


# -- restore -------------------------------------------------------------------------------------


def test_restore_rebuilds_balances_from_the_packs() -> None:
    packs = [
        restored_pack("pk-001", 100, T0, YEAR_LATER, remaining=60, held=10, consumed=30),
        restored_pack("pk-002", 50, T0 + DAY, YEAR_LATER + DAY, remaining=50),
        restored_pack(
            "pk-003",
            80,
            T0,
            YEAR_LATER,
            team="globex",
            remaining=0,
            held=5,
            consumed=25,
            expired_tokens=50,
        ),
        restored_pack("pk-004", 20, T0, YEAR_LATER, team="globex", remaining=20),
    ]
    packs[2].expired = True
    packs[1].request_id = "rq-7"
    ledger = Ledger.restore(["acme", "globex", "initech"], packs, next_seq=42)
    w = World(ledger=ledger)
    assert (ledger.available("acme"), ledger.held("acme")) == (110, 10)
    assert (ledger.available("globex"), ledger.held("globex")) == (20, 5)
    assert (ledger.available("initech"), ledger.held("initech")) == (0, 0)
    assert [p.pack_id for p in ledger.team_packs("acme")] == ["pk-001", "pk-002"]
    assert ledger.next_expiry("acme") == YEAR_LATER
    assert ledger.next_seq == 42

    # the request_id of a restored pack still makes its purchase idempotent
    changes = Changes()
    pack, created = ledger.purchase("acme", 50, "rq-7", T0 + 2 * DAY, w.pack_ids, changes)
    assert (pack.pack_id, created, bool(changes)) == ("pk-002", False, False)

    # and entries go on from the restored sequence
    w.pack_ids.count = 10
    w.buy("initech", 5, at=T0 + 2 * DAY)
    assert [(e.seq, e.pack_id) for e in w.log] == [(42, "pk-011")]
    assert w.hold("acme", 70, at=T0 + 2 * DAY).parts == (("pk-001", 60), ("pk-002", 10))
    assert (ledger.available("acme"), ledger.held("acme")) == (40, 80)
