"""T1-T6 as properties: random purchases, holds, captures, releases, expiries and moves."""

from __future__ import annotations

import calendar
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from server.domain.changes import Changes, Deleted
from server.domain.errors import InsufficientTokens, InvalidArgument, PackHasHolds
from server.domain.ledger import NO_CAUSE, Cause, Hold, Ledger, LedgerEntry, TokenPack, add_one_year

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
TEAMS = ("acme", "globex", "initech")


class Counter:
    """A fake id maker: prefix-001, prefix-002, ..."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count:03d}"


def entries_of(changes: Changes) -> list[LedgerEntry]:
    return [item for item in changes.items if isinstance(item, LedgerEntry)]


def t3_key(p: TokenPack) -> tuple[datetime, int, datetime, str]:
    """T3 written out again, independently of TokenPack.order_key."""
    return (p.expire_time, p.tokens, p.purchase_time, p.pack_id)


def expected_parts(packs: list[TokenPack], amount: int) -> list[tuple[str, int]]:
    parts = []
    for p in sorted((p for p in packs if p.remaining > 0 and not p.expired), key=t3_key):
        take = min(amount, p.remaining)
        parts.append((p.pack_id, take))
        amount -= take
        if amount == 0:
            break
    return parts


# -- T1: one calendar year -----------------------------------------------------------------------


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2200, 12, 31), timezones=st.just(UTC)
    )
)
def test_t1_expire_time_is_one_calendar_year_later(t: datetime) -> None:
    end = add_one_year(t)
    assert end.year == t.year + 1
    assert (end.month, end.hour, end.minute, end.second, end.microsecond, end.tzinfo) == (
        t.month,
        t.hour,
        t.minute,
        t.second,
        t.microsecond,
        t.tzinfo,
    )
    if t.month == 2 and t.day == 29 and not calendar.isleap(end.year):
        assert end.day == 28
    else:
        assert end.day == t.day
    assert (end - t).days in (365, 366)


# -- T3: order of a hold over any packs ----------------------------------------------------------


@st.composite
def pack_sets(draw: st.DrawFn) -> list[TokenPack]:
    """Restored packs with many ties: few distinct expiries, sizes and purchase times."""
    n = draw(st.integers(1, 8))
    ids = draw(st.lists(st.sampled_from("abcdefghij"), min_size=n, max_size=n, unique=True))
    packs = []
    for pid in ids:
        tokens = draw(st.sampled_from([10, 20, 50]))
        used = draw(st.integers(0, tokens))
        purchase = T0 + timedelta(days=draw(st.integers(0, 2)))
        expire = T0 + timedelta(days=draw(st.sampled_from([300, 365, 400])))
        packs.append(
            TokenPack(
                f"pk-{pid}",
                "acme",
                tokens,
                purchase,
                expire,
                remaining=tokens - used,
                consumed=used,
            )
        )
    return packs


@settings(max_examples=150)
@given(pack_sets(), st.integers(1, 400))
def test_t3_a_hold_takes_packs_in_order_and_records_each_part(
    packs: list[TokenPack], amount: int
) -> None:
    ledger = Ledger.restore(["acme"], packs, next_seq=1)
    available = sum(p.remaining for p in packs)
    assert ledger.available("acme") == available
    changes = Changes()
    if amount > available:
        try:
            ledger.hold("acme", amount, Cause(), T0, "hd-1", changes)
        except InsufficientTokens as err:
            assert (err.available, err.daily_rate) == (available, amount)
        else:
            raise AssertionError("a hold beyond the balance was accepted")
        assert not changes
        return
    want = expected_parts(packs, amount)
    hold = ledger.hold("acme", amount, Cause(), T0, "hd-1", changes)
    assert list(hold.parts) == want
    assert [(e.pack_id, e.amount) for e in entries_of(changes)] == want
    assert ledger.available("acme") == available - amount
    assert ledger.held("acme") == amount
    nxt = [p for p in packs if p.remaining > 0]
    assert ledger.next_expiry("acme") == (min(nxt, key=t3_key).expire_time if nxt else None)


# -- the whole ledger as a state machine ---------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger()
        for team in TEAMS:
            self.ledger.add_team(team)
        self.now = T0
        self.pack_ids = Counter("pk")
        self.hold_ids = Counter("hd")
        self.holds: list[Hold] = []
        self.log: list[LedgerEntry] = []
        self.purchased = 0
        # request_id -> (pack_id, tokens, the team that bought it: a retry is that
        # team's wherever the pack has moved since, T1 and T5)
        self.request_ids: dict[str, tuple[str, int, str]] = {}

    def _record(self, changes: Changes) -> list[LedgerEntry]:
        new = entries_of(changes)
        for e in new:
            assert e.time == self.now
        self.log += new
        return new

    def _balances(self) -> dict[str, tuple[int, int]]:
        return {t: (self.ledger.available(t), self.ledger.held(t)) for t in TEAMS}

    # -- rules ---------------------------------------------------------------------------------

    @rule(
        team=st.sampled_from(TEAMS),
        tokens=st.integers(1, 300),
        request=st.sampled_from(["", "", "rq-1", "rq-2", "rq-3"]),  # "": a fresh one
    )
    def purchase(self, team: str, tokens: int, request: str) -> None:
        before = self.ledger.available(team)
        changes = Changes()
        request = request or f"fresh-{len(self.ledger.packs) + 1}"
        known = self.request_ids.get(request)
        if known is not None and known[1:] != (tokens, team):
            return  # AlreadyExists is checked in test_ledger.py; keep the run going
        pack, created = self.ledger.purchase(
            team, tokens, request, self.now, self.pack_ids, changes
        )
        new = self._record(changes)
        if request in self.request_ids:
            assert not created
            assert not changes
            assert pack.pack_id == self.request_ids[request][0]
            return
        assert created
        assert [(e.kind.value, e.amount, e.remaining_delta) for e in new] == [
            ("PURCHASE", tokens, tokens)
        ]
        assert pack.expire_time == add_one_year(self.now)
        assert self.ledger.available(team) == before + tokens
        self.purchased += tokens
        self.request_ids[request] = (pack.pack_id, tokens, team)

    @rule(
        team=st.sampled_from(TEAMS),
        amount=st.integers(1, 250),
        user=st.sampled_from(["alice", "bob"]),
        fit=st.sampled_from([True, True, False]),
    )
    def hold(self, team: str, amount: int, user: str, fit: bool) -> None:
        funded = [t for t in TEAMS if self.ledger.available(t)]
        if fit and funded:  # mostly holds that can succeed; the rest may be refused
            team = funded[TEAMS.index(team) % len(funded)]
            amount = 1 + (amount - 1) % self.ledger.available(team)
        available = self.ledger.available(team)
        balances = self._balances()
        want = expected_parts(self.ledger.team_packs(team), amount)
        cause = Cause(f"ss-{self.hold_ids.count + 1}", user, "ACAD")
        changes = Changes()
        try:
            hold = self.ledger.hold(team, amount, cause, self.now, self.hold_ids(), changes)
        except InsufficientTokens as err:
            assert amount > available
            assert (err.available, err.daily_rate) == (available, amount)
            assert not changes
            assert self._balances() == balances
            return
        assert amount <= available
        assert list(hold.parts) == want
        new = self._record(changes)
        assert [(e.kind.value, e.pack_id, e.amount, e.cause) for e in new] == [
            ("HOLD", pid, n, cause) for pid, n in want
        ]
        assert self.ledger.available(team) == available - amount
        self.holds.append(hold)

    @precondition(lambda self: self.holds)
    @rule(index=st.integers(0, 1000))
    def capture(self, index: int) -> None:
        hold = self.holds.pop(index % len(self.holds))
        available = self.ledger.available(hold.team_id)
        held = self.ledger.held(hold.team_id)
        changes = Changes()
        self.ledger.capture(hold, self.now, changes)
        new = self._record(changes)
        assert [(e.kind.value, e.pack_id, e.amount) for e in new] == [
            ("CAPTURE", pid, n) for pid, n in hold.parts
        ]
        assert Deleted(hold) in changes.items
        assert self.ledger.available(hold.team_id) == available
        assert self.ledger.held(hold.team_id) == held - hold.amount

    @precondition(lambda self: self.holds)
    @rule(index=st.integers(0, 1000))
    def release(self, index: int) -> None:
        hold = self.holds.pop(index % len(self.holds))
        available = self.ledger.available(hold.team_id)
        back = sum(n for pid, n in hold.parts if not self.ledger.pack(pid).expired)
        changes = Changes()
        self.ledger.release(hold, self.now, changes)
        new = self._record(changes)
        want = []
        for pid, n in hold.parts:
            want.append(("HOLD_RELEASE", pid, n))
            if self.ledger.pack(pid).expired:
                want.append(("EXPIRY", pid, n))
        assert [(e.kind.value, e.pack_id, e.amount) for e in new] == want
        assert Deleted(hold) in changes.items
        assert self.ledger.available(hold.team_id) == available + back

    @rule(days=st.sampled_from([0, 0, 1, 30, 90, 200, 365, 366]), seconds=st.integers(0, 86_399))
    def advance(self, days: int, seconds: int) -> None:
        """The clock moves forward and every pack due expires, in order of its expiry."""
        self.now += timedelta(days=days, seconds=seconds)
        due = sorted(
            (p for p in self.ledger.packs.values() if not p.expired and p.expire_time <= self.now),
            key=lambda p: (p.expire_time, p.pack_id),
        )
        for pack in due:
            at = pack.expire_time
            saved, self.now = self.now, at
            left, held, available = pack.remaining, pack.held, self.ledger.available(pack.team_id)
            changes = Changes()
            assert self.ledger.expire(pack.pack_id, at, changes) is True
            new = self._record(changes)
            self.now = saved
            assert [(e.kind.value, e.amount) for e in new] == ([("EXPIRY", left)] if left else [])
            assert (pack.remaining, pack.held) == (0, held)
            assert self.ledger.available(pack.team_id) == available - left

    @precondition(lambda self: self.holds)
    @rule(index=st.integers(0, 1000), extra=st.integers(0, 3600))
    def advance_past_a_held_pack(self, index: int, extra: int) -> None:
        """The clock reaches the expiry of a pack with held tokens (T4 on held tokens), so
        that later captures and releases meet expired packs more often than by chance."""
        hold = self.holds[index % len(self.holds)]
        pack = self.ledger.pack(hold.parts[-1][0])
        if pack.expire_time > self.now:
            self.advance(days=0, seconds=int((pack.expire_time - self.now).total_seconds()) + extra)

    @precondition(lambda self: self.ledger.packs)
    @rule(index=st.integers(0, 1000))
    def expire_again_or_early(self, index: int) -> None:
        """Firing expiry twice, or before a pack's expire_time, changes nothing (T4)."""
        pack = list(self.ledger.packs.values())[index % len(self.ledger.packs)]
        if not pack.expired and pack.expire_time <= self.now:
            return  # due: `advance` expires it
        changes = Changes()
        assert self.ledger.expire(pack.pack_id, self.now, changes) is False
        assert not changes

    @precondition(lambda self: self.ledger.packs)
    @rule(index=st.integers(0, 1000), to_team=st.sampled_from(TEAMS))
    def move(self, index: int, to_team: str) -> None:
        pack = list(self.ledger.packs.values())[index % len(self.ledger.packs)]
        from_team, n = pack.team_id, pack.remaining
        balances = self._balances()
        changes = Changes()
        try:
            self.ledger.move(pack.pack_id, to_team, self.now, changes)
        except PackHasHolds:
            assert pack.held > 0
            assert not changes
            assert self._balances() == balances
            return
        except InvalidArgument as err:
            assert to_team == from_team
            assert set(err.violations) == {"to_team_id"}
            assert not changes
            return
        assert pack.held == 0
        assert to_team != from_team
        new = self._record(changes)
        assert [(e.kind.value, e.team_id, e.amount) for e in new] == [
            ("MOVE_OUT", from_team, n),
            ("MOVE_IN", to_team, n),
        ]
        assert pack.team_id == to_team
        assert self.ledger.available(from_team) == balances[from_team][0] - n
        assert self.ledger.available(to_team) == balances[to_team][0] + n

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def packs_add_up(self) -> None:
        for p in self.ledger.packs.values():
            assert min(p.remaining, p.held, p.consumed, p.expired_tokens) >= 0
            assert p.remaining + p.held + p.consumed + p.expired_tokens == p.tokens
            if p.expired:
                assert p.remaining == 0

    @invariant()
    def entries_sum_to_packs(self) -> None:
        by_pack: dict[str, list[int]] = {}
        by_team_pack: dict[tuple[str, str], list[int]] = {}
        for e in self.log:
            for sums in (
                by_pack.setdefault(e.pack_id, [0, 0]),
                by_team_pack.setdefault((e.team_id, e.pack_id), [0, 0]),
            ):
                sums[0] += e.remaining_delta
                sums[1] += e.held_delta
        for p in self.ledger.packs.values():
            assert by_pack[p.pack_id] == [p.remaining, p.held]
        for (team, pack_id), sums in by_team_pack.items():
            p = self.ledger.pack(pack_id)
            assert sums == ([p.remaining, p.held] if p.team_id == team else [0, 0])

    @invariant()
    def balances_are_the_sums_of_packs(self) -> None:
        seen = 0
        for team in TEAMS:
            packs = self.ledger.team_packs(team)
            seen += len(packs)
            assert all(p.team_id == team for p in packs)
            assert self.ledger.available(team) == sum(p.remaining for p in packs) >= 0
            assert self.ledger.held(team) == sum(p.held for p in packs) >= 0
            nxt = [p for p in packs if p.remaining > 0 and not p.expired]
            assert self.ledger.next_expiry(team) == (
                min(nxt, key=t3_key).expire_time if nxt else None
            )
            assert list(self.ledger.live_packs(team)) == sorted(nxt, key=t3_key)
        assert seen == len(self.ledger.packs)

    @invariant()
    def a_restart_takes_the_same_tokens_next(self) -> None:
        """The packs as stored, loaded again: C3 and T3 find the same next tokens."""
        copies = [replace(p) for p in self.ledger.packs.values()]
        restored = Ledger.restore(TEAMS, copies, next_seq=self.ledger.next_seq)
        for team in TEAMS:
            assert restored.next_expiry(team) == self.ledger.next_expiry(team)
            available = restored.available(team)
            if available:
                want = expected_parts(restored.team_packs(team), available)
                hold = restored.hold(team, available, NO_CAUSE, self.now, "h", Changes())
                assert list(hold.parts) == want

    @invariant()
    def holds_account_for_every_held_token(self) -> None:
        held: dict[str, int] = {}
        for h in self.holds:
            assert h.amount == sum(n for _, n in h.parts) > 0
            for pid, n in h.parts:
                held[pid] = held.get(pid, 0) + n
        for p in self.ledger.packs.values():
            assert p.held == held.get(p.pack_id, 0)

    @invariant()
    def tokens_are_never_created_or_lost(self) -> None:
        packs = self.ledger.packs.values()
        assert (
            self.purchased
            == sum(p.tokens for p in packs)
            == sum(p.remaining + p.held + p.consumed + p.expired_tokens for p in packs)
        )

    @invariant()
    def entries_are_append_only_in_sequence(self) -> None:
        assert [e.seq for e in self.log] == list(range(1, len(self.log) + 1))
        assert self.ledger.next_seq == len(self.log) + 1
        assert all(a.time <= b.time for a, b in zip(self.log, self.log[1:], strict=False))


LedgerMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    suppress_health_check=[HealthCheck.too_slow],
)
test_t1_to_t6_ledger_state_machine = LedgerMachine.TestCase
