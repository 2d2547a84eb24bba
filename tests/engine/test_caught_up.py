"""Calls that end sessions, or change what pays for them, at the clock's time
first fire the deadlines already due (RULES A6, R2, C1/C2, P1 and M6, T1 and T5,
with M3, M5 and M7), as the four licensing calls do; so do the invitation
calls (A2), whose invitation may have expired meanwhile.

The real clock's scheduler fires deadlines on time, but a loop that lags may
run a call first. Here the test clock is moved with ``TestClock.set``, which
fires nothing (a late scheduler): a grace that ended, or a lease that lapsed
and a window that closed, are due but not fired when the operator ends a
session or takes access away. The call must find what the rules say stood at
its instant: the charge made at the grace's end (not given back as if the
session ended within its grace), the session expired at its lease's end (not
ended by the call), the renewal made at the window's end before that.

The engine runs over SQLite in ``tmp_path`` (``tests/engine/test_restore.py``);
the ledger is read back from the store, and ``verify`` checks it at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from google.protobuf.message import Message

from server.api.audit import AuditRecorder
from server.api.caller import NOBODY, THE_OPERATOR, Caller
from server.clock import TestClock
from server.domain.coverage import SubscriptionKind
from server.domain.directory import Invitation, InvitationState, MemberState, NotificationKind
from server.domain.errors import (
    AlreadyExists,
    InsufficientTokens,
    InvalidArgument,
    InvitationExpired,
    UnknownInvitation,
    UnknownSession,
    UnknownSubscription,
    UnknownUser,
)
from server.domain.products import Platform, Product
from server.domain.sessions import Coverage, EndReason, Session, SessionState
from server.domain.teams import Plan
from server.engine import Engine
from server.store.audit import verify
from server.store.codec import opt_i2t
from server.store.port import UsageFacts
from server.store.sqlite import Store
from tessera_api.tessera.v1 import admin_service_pb2 as api
from tests.support import entitle_on_engine

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
ANN = "ann@example.com"
BEA = "bea@example.com"
T = TypeVar("T")
MIN, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
#: The first day's charge (M3: held at Entitle, captured at the grace's end).
CHARGED = [("HOLD", 10, T0), ("CAPTURE", 10, T0 + 5 * MIN)]
RENEWAL_CAPTURE = ("CAPTURE", 10, T0 + DAY + 5 * MIN)


@dataclass
class World:
    engine: Engine
    clock: TestClock
    db: Path

    async def entitle(self) -> str:
        """Ann opens REVIT (10 a day, not idle-aware) on d1: 10 held, grace 5 min."""
        return await entitle_on_engine(self.engine, ANN, "REVIT")

    async def audited(
        self,
        method: str,
        request: Message,
        teams: tuple[str, ...],
        call: Awaitable[T],
        caller: Caller = THE_OPERATOR,
    ) -> T:
        """``call``'s answer, run as the API runs ``method`` for ``caller`` (the operator
        unless told): in a task of its own with the call's audit draft begun
        (``AuditRecorder``), so that what it commits carries the event AD2 asks for,
        or none."""

        async def run() -> T:
            AuditRecorder(self.engine.audit)(method, request, caller, teams, "")
            return await call

        return await asyncio.create_task(run())

    async def refused(
        self,
        method: str,
        request: Message,
        teams: tuple[str, ...],
        call: Callable[[], Awaitable[object]],
        error: type[Exception],
        caller: Caller = THE_OPERATOR,
    ) -> None:
        """``call()``, run as ``audited`` runs it, is refused with ``error`` and leaves
        no audit event (AD2): whatever it fired on its way in is the deadlines', not a
        change of its own."""
        events = self.engine.audit.last_seq
        with pytest.raises(error):
            await self.audited(method, request, teams, call(), caller)
        assert self.engine.audit.last_seq == events

    def late(self, to: datetime) -> None:
        """The clock reaches ``to`` with nothing fired: the scheduler lags."""
        self.clock.set(to)

    async def grace_end_due(self) -> str:
        """Ann's Revit session, and the clock at 10 min with nothing fired: its grace
        ended at 5 min (M3: the capture due)."""
        session_id = await self.entitle()
        self.late(T0 + 10 * MIN)
        return session_id

    async def assert_charged(self) -> None:
        """The first day's charge alone stands (M3), not given back."""
        assert await self.moves() == CHARGED
        assert self.tokens() == (90, 0, 10)

    async def heartbeat_at_2h(self, to: datetime = T0 + DAY + 3 * HOUR) -> str:
        """Ann's Revit session, a heartbeat at 2 h (its lease until 1 d 2 h), then the
        clock at ``to`` with nothing fired: by 1 d 3 h its window has closed in use
        (1 d, M5: a renewal due) and its lease has lapsed (1 d 2 h, M7)."""
        session_id = await self.entitle()
        self.late(T0 + 2 * HOUR)
        await self.engine.sessions.heartbeat(ANN, session_id, 0)
        self.late(to)
        return session_id

    async def assert_renewed(self) -> None:
        """The renewal at 1 d stands (M5): 10 held then, captured at 1 d 5 min."""
        assert await self.moves() == [*CHARGED, ("HOLD", 10, T0 + DAY), RENEWAL_CAPTURE]
        assert self.tokens() == (80, 0, 20)

    def session(self, session_id: str) -> Session:
        return self.engine.sessions.lic.session(session_id)

    async def moves(self) -> list[tuple[str, int, datetime]]:
        """acme's stored token moves after its purchase: (kind, tokens, time)."""
        entries = await self.engine.accounts.ledger_page("acme", 1, 100)
        return [(e.kind.value, e.amount, e.time) for e in entries]

    def tokens(self) -> tuple[int, int, int]:
        """acme's (available, held, consumed)."""
        ledger = self.engine.ledger
        consumed = sum(p.consumed for p in ledger.packs.values())
        return ledger.available("acme"), ledger.held("acme"), consumed

    async def invite_bea(self) -> str:
        """Bea, new to the server, invited to acme for ACAD at the clock's time (A1):
        the token her invitation's email carries."""
        await self.engine.access.assign(
            "acme", [f"Bea <{BEA}>"], ["ACAD"], False, False, import_=False
        )
        return self.bea_token()

    def bea_token(self) -> str:
        """The token of Bea's current invitation as the mailer reads the outbox ("" once
        it is spent or expired)."""
        notes = self.engine.access.with_tokens(self.engine.access.notifications("acme", BEA))
        return next((n.invitation_token for n in reversed(notes) if n.invitation_token), "")

    def bea_invitation(self) -> Invitation:
        directory = self.engine.state.directory
        invitation = directory.invitation(directory.member("acme", BEA).invitation_id)
        assert invitation is not None
        return invitation

    async def stored_bea_invitation(self) -> tuple[str, datetime | None, datetime | None]:
        """Bea's invitation as stored: (state, send_time, expire_time)."""
        store = self.engine.store
        assert isinstance(store, Store)
        ((state, sent, expires),) = await store.query(
            "SELECT state, send_time, expire_time FROM invitations WHERE user_id = ?", (BEA,)
        )
        return str(state), opt_i2t(sent), opt_i2t(expires)

    async def events(self) -> list[tuple[str, str, str, str]]:
        """acme's audit events, oldest first: (method, actor, actor name, target)."""
        page = await self.engine.audit.page("acme", 0, 100)
        return [(e.method, e.actor, e.actor_name, e.target) for e in reversed(page)]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """acme with 100 tokens; REVIT (10 a day, Windows, not idle-aware) and ACAD
    (5 a day) on the rate sheet; Ann not assigned yet."""
    db = tmp_path / "t.db"
    clock = TestClock(T0)
    store = await Store.open(db)
    engine = Engine(clock, store)
    await engine.start(heartbeat_flush=0)  # the test clock: no scheduler task
    await engine.accounts.create_team("acme", "Acme", Plan.STANDARD)
    await engine.accounts.purchase("acme", 100, "pack-1")
    windows = frozenset({Platform.WINDOWS})
    await engine.accounts.upsert_product(Product("REVIT", "Revit", 10, platforms=windows))
    await engine.accounts.upsert_product(Product("ACAD", "AutoCAD", 5, platforms=windows))
    w = World(engine, clock, db)
    try:
        yield w
    finally:
        await engine.stop()
        await store.close()
    assert verify(db).ok  # what the calls fired is stored, and adds up


# -- the calls that take REVIT away from Ann (A6), each with its setup ------------------

Step = Callable[[Engine], Awaitable[object]]


def _assign(products: list[str], guest: bool = False) -> Step:
    return lambda e: e.access.assign("acme", [f"Ann <{ANN}>"], products, False, guest, import_=True)


async def _defaults_revit(e: Engine) -> None:
    await e.access.set_default_assignments("acme", ["REVIT"])
    await _assign([])(e)


async def _guest_defaults_revit(e: Engine) -> None:
    await e.accounts.update_team_settings("acme", None, True, None)  # A5: defaults for guests
    await e.access.set_default_assignments("acme", ["REVIT"])
    await _assign([], guest=True)(e)


REVOCATIONS: dict[str, tuple[Step, Step]] = {
    "AssignUsers": (_defaults_revit, _assign([], guest=True)),  # a guest: no defaults (A5)
    "UnassignUser": (_assign(["REVIT"]), lambda e: e.access.unassign("acme", ANN)),
    "SetUserProducts": (
        _assign(["REVIT"]),
        lambda e: e.access.set_user_products("acme", ANN, ["ACAD"], False),
    ),
    "SetDefaultAssignments": (
        _defaults_revit,
        lambda e: e.access.set_default_assignments("acme", []),
    ),
    "UpdateTeamSettings": (
        _guest_defaults_revit,
        lambda e: e.accounts.update_team_settings("acme", None, False, None),
    ),
}


@pytest.mark.parametrize("call", list(REVOCATIONS))
async def test_a6_m3_a_revocation_after_a_grace_end_already_due_keeps_its_charge(
    world: World, call: str
) -> None:
    """The grace ended at 5 min (M3: captured, a window paid); the revocation at
    10 min ends the session without refunding it (A6), not as if it ended in
    its grace (a release of the hold, nothing charged). (The domain guards this
    one itself too: ending an active session captures a grace found due.)"""
    setup, revoke = REVOCATIONS[call]
    await setup(world.engine)
    session_id = await world.grace_end_due()
    await revoke(world.engine)
    session = world.session(session_id)
    assert (session.end_reason, session.end_time) == (EndReason.NOT_ASSIGNED, T0 + 10 * MIN)
    await world.assert_charged()


@pytest.mark.parametrize("call", list(REVOCATIONS))
async def test_a6_m7_a_revocation_after_a_lease_lapsed_finds_the_session_expired(
    world: World, call: str
) -> None:
    """A heartbeat at 2 h leaves the lease until 1 d 2 h. At 1 d the window
    closed in use (M5: renewed, charged again at 1 d 5 min); at 1 d 2 h the lease
    lapsed (M7). A revocation at 1 d 3 h finds the session expired then: it
    ends nothing, and the renewal stands."""
    setup, revoke = REVOCATIONS[call]
    await setup(world.engine)
    session_id = await world.heartbeat_at_2h()
    await revoke(world.engine)
    session = world.session(session_id)
    assert (session.end_reason, session.end_time) == (EndReason.LEASE_EXPIRED, T0 + DAY + 2 * HOUR)
    await world.assert_renewed()


# -- EndSession (R2) ---------------------------------------------------------------------


async def test_r2_m3_end_session_after_a_grace_end_already_due_keeps_its_charge(
    world: World,
) -> None:
    """As for A6 above: the charge made at 5 min stands, the session ends at 10."""
    await _assign(["REVIT"])(world.engine)
    session_id = await world.grace_end_due()
    view = await world.engine.sessions.end_session(session_id)
    assert (view.session.end_reason, view.session.end_time) == (
        EndReason.ENDED_BY_ADMIN,
        T0 + 10 * MIN,
    )
    await world.assert_charged()


async def test_r2_m7_end_session_after_a_lease_lapsed_answers_it_expired(world: World) -> None:
    """As M12 answers a heartbeat: the session ended at its lease's end, and
    EndSession, finding it ended, changes nothing more."""
    await _assign(["REVIT"])(world.engine)
    session_id = await world.heartbeat_at_2h()
    view = await world.engine.sessions.end_session(session_id)
    assert (view.session.end_reason, view.session.end_time) == (
        EndReason.LEASE_EXPIRED,
        T0 + DAY + 2 * HOUR,
    )
    await world.assert_renewed()


# -- what a call fired is stored, but is no change of its own (AD2) ------------------------


async def test_ad2_a_revocation_refused_after_a_grace_end_stores_the_charge_and_no_event(
    world: World,
) -> None:
    """UnassignUser of someone who is no member is refused; the capture it fired
    on its way in is stored (else the stored ledger misses it), with no audit
    event: the call changed nothing (AD2)."""
    await _assign(["REVIT"])(world.engine)
    await world.grace_end_due()
    await world.refused(
        "UnassignUser",
        api.UnassignUserRequest(team_id="acme", user_id="nobody@example.com"),
        ("acme",),
        lambda: world.engine.access.unassign("acme", "nobody@example.com"),
        UnknownUser,
    )
    await world.assert_charged()


async def test_ad2_a_revocation_that_changes_nothing_stores_what_it_fired_and_no_event(
    world: World,
) -> None:
    """SetDefaultAssignments to the set the team has changes nothing: no event,
    though the capture due before it is stored with its commit."""
    await _defaults_revit(world.engine)
    await world.grace_end_due()
    events = world.engine.audit.last_seq
    request = api.SetDefaultAssignmentsRequest(team_id="acme", product_ids=["REVIT"])
    same = world.engine.access.set_default_assignments("acme", ["REVIT"])
    await world.audited("SetDefaultAssignments", request, ("acme",), same)
    assert world.engine.audit.last_seq == events
    await world.assert_charged()


async def test_ad2_end_subscription_refused_after_a_grace_end_stores_the_charge_and_no_event(
    world: World,
) -> None:
    """EndSubscription fired what was due before it already; refused (no such
    subscription), it now stores that too, with no event of its own."""
    await _assign(["REVIT"])(world.engine)
    await world.grace_end_due()
    await world.refused(
        "EndSubscription",
        api.EndSubscriptionRequest(subscription_id="sub-nope"),
        (),
        lambda: world.engine.access.end_subscription("sub-nope"),
        UnknownSubscription,
    )
    await world.assert_charged()


# -- GrantSubscription and StartTrial: who pays for running sessions (C1, C2) --------------


def _grant(kind: SubscriptionKind, user_id: str = ANN) -> Step:
    """REVIT for ``user_id`` from the clock's time (a trial starts then) for 30 days."""

    def step(e: Engine) -> Awaitable[object]:
        now = e.now()
        start = None if kind is SubscriptionKind.TRIAL else now
        return e.access.grant(user_id, "REVIT", start, now + 30 * DAY, kind)

    return step


GRANTS = {
    "GrantSubscription": (SubscriptionKind.SUBSCRIPTION, Coverage.SUBSCRIPTION),
    "StartTrial": (SubscriptionKind.TRIAL, Coverage.TRIAL),
}


@pytest.mark.parametrize("call", list(GRANTS))
async def test_c1_c2_m3_a_grant_after_a_grace_end_already_due_keeps_its_charge(
    world: World, call: str
) -> None:
    """The grace ended at 5 min (M3: captured, a window paid until 1 d); a
    subscription or trial granted at 10 min covers the session from then, and
    the paid window stays paid (C1/C2: only a hold still in grace goes back),
    not released as if the grace were still running."""
    kind, coverage = GRANTS[call]
    await _assign(["REVIT"])(world.engine)
    session_id = await world.grace_end_due()
    await _grant(kind)(world.engine)
    session = world.session(session_id)
    assert (session.live, session.coverage, session.coverage_since) == (
        True,
        coverage,
        T0 + 10 * MIN,
    )
    await world.assert_charged()


@pytest.mark.parametrize("call", list(GRANTS))
async def test_c1_c2_m7_a_grant_after_a_lease_lapsed_finds_the_session_expired(
    world: World, call: str
) -> None:
    """A heartbeat at 2 h leaves the lease until 1 d 2 h; the window closed in
    use at 1 d (M5: renewed, charged at 1 d 5 min). A grant at 1 d 3 h finds the
    session expired at its lease's end (M7), still under tokens, and the
    renewal stands."""
    kind, _ = GRANTS[call]
    await _assign(["REVIT"])(world.engine)
    session_id = await world.heartbeat_at_2h()
    await _grant(kind)(world.engine)
    session = world.session(session_id)
    assert (session.end_reason, session.end_time, session.coverage) == (
        EndReason.LEASE_EXPIRED,
        T0 + DAY + 2 * HOUR,
        Coverage.TOKENS,
    )
    await world.assert_renewed()


async def test_ad2_a_grant_refused_after_a_grace_end_stores_the_charge_and_no_event(
    world: World,
) -> None:
    """GrantSubscription for a user who does not exist is refused; the capture it
    fired on its way in is stored, with no audit event (AD2)."""
    await _assign(["REVIT"])(world.engine)
    await world.grace_end_due()
    await world.refused(
        "GrantSubscription",
        api.GrantSubscriptionRequest(user_id="nobody@example.com", product_id="REVIT"),
        (),
        lambda: _grant(SubscriptionKind.SUBSCRIPTION, "nobody@example.com")(world.engine),
        UnknownUser,
    )
    await world.assert_charged()


async def test_c2_ad2_end_subscription_of_a_trial_over_after_its_end_fired_writes_no_event(
    world: World,
) -> None:
    """Ann's trial of REVIT ends at 1 h: her session goes on under tokens then
    (C2: a hold at 1 h, captured at 1 h 5 min). EndSubscription at 2 h fires
    both first and finds the trial over: it changes nothing itself, so it
    stores what it fired with no audit event (AD2), and answers the trial as
    it ended."""
    await _assign(["REVIT"])(world.engine)
    trial = await world.engine.access.grant(ANN, "REVIT", None, T0 + HOUR, SubscriptionKind.TRIAL)
    session_id = await world.entitle()
    assert world.tokens() == (100, 0, 0)  # the trial pays (C2)
    world.late(T0 + 2 * HOUR)
    events = world.engine.audit.last_seq
    request = api.EndSubscriptionRequest(subscription_id=trial.subscription_id)
    end = world.engine.access.end_subscription(trial.subscription_id)
    sub = await world.audited("EndSubscription", request, (), end)
    assert (sub.start_time, sub.end_time) == (T0, T0 + HOUR)
    assert world.engine.audit.last_seq == events
    session = world.session(session_id)
    assert (session.live, session.coverage, session.coverage_since) == (
        True,
        Coverage.TOKENS,
        T0 + HOUR,
    )
    assert await world.moves() == [("HOLD", 10, T0 + HOUR), ("CAPTURE", 10, T0 + HOUR + 5 * MIN)]
    assert world.tokens() == (90, 0, 10)


# -- UpsertProduct: the rate sheet as it stood when each deadline fell due (P1, M6) --------

WINDOWS = frozenset({Platform.WINDOWS})


async def test_m6_idle_awareness_turned_off_after_an_idle_instant_due_resumes_the_session_then(
    world: World,
) -> None:
    """REVIT is idle-aware: Ann's session, opened at 0, is charged at 5 min (M3)
    and idle at 15 min (M6: no activity since Entitle). UpsertProduct at 30 min
    turns idle awareness off: the session, idle since 15 min, resumes at 30 min
    (no hold: the window paid at 5 min covers it), not found active all along."""
    await world.engine.accounts.upsert_product(
        Product("REVIT", "Revit", 10, idle_aware=True, platforms=WINDOWS)
    )
    await _assign(["REVIT"])(world.engine)
    session_id = await world.entitle()
    world.late(T0 + 30 * MIN)
    await world.engine.accounts.upsert_product(Product("REVIT", "Revit", 10, platforms=WINDOWS))
    session = world.session(session_id)
    assert (session.state, session.state_since) == (SessionState.ACTIVE, T0 + 30 * MIN)
    await world.assert_charged()


async def test_m6_m7_idle_awareness_turned_on_after_a_lease_lapsed_finds_the_session_expired(
    world: World,
) -> None:
    """REVIT is not idle-aware; a heartbeat at 2 h leaves the lease until 1 d 2 h,
    and the window closed in use at 1 d (M5: renewed). UpsertProduct at 1 d 3 h
    turns idle awareness on: the session expired at its lease's end (M7), so it
    is not watched for idle from 1 d 3 h (M6), and the renewal stands."""
    await _assign(["REVIT"])(world.engine)
    session_id = await world.heartbeat_at_2h()
    await world.engine.accounts.upsert_product(
        Product("REVIT", "Revit", 10, idle_aware=True, platforms=WINDOWS)
    )
    session = world.session(session_id)
    assert (session.end_reason, session.end_time, session.last_activity) == (
        EndReason.LEASE_EXPIRED,
        T0 + DAY + 2 * HOUR,
        T0,  # Entitle's: not idle-aware, its heartbeats' reports were ignored (M6)
    )
    await world.assert_renewed()


async def test_p1_m5_a_rate_change_after_a_window_closed_in_use_renews_at_the_old_rate(
    world: World,
) -> None:
    """The window closed in use at 1 d (M5: renewed at 10, the rate then). REVIT
    costs 20 from 1 d 1 h: the renewal made at 1 d holds 10, not 20, once the
    late scheduler has fired everything up to 1 d 1 h."""
    await _assign(["REVIT"])(world.engine)
    session_id = await world.heartbeat_at_2h(to=T0 + DAY + HOUR)
    await world.engine.accounts.upsert_product(Product("REVIT", "Revit", 20, platforms=WINDOWS))
    await world.engine.scheduler.advance(T0 + DAY + HOUR)  # the scheduler catches up
    assert world.session(session_id).live
    await world.assert_renewed()


# -- PurchaseTokens and MoveTokenPack: the packs as they stood (T1, T3, T4, T5) ------------


async def test_t5_m3_a_move_after_a_grace_end_due_moves_the_pack_with_nothing_held(
    world: World,
) -> None:
    """The grace ended at 5 min (M3: the 10 held captured); MoveTokenPack at 10
    min finds pack-1 holding nothing and moves its 90 remaining tokens (T5),
    not refused as if the 10 were still held."""
    await world.engine.accounts.create_team("beta", "Beta", Plan.STANDARD)
    await _assign(["REVIT"])(world.engine)
    await world.grace_end_due()
    (pack,) = world.engine.accounts.list_packs("acme")
    moved = await world.engine.accounts.move_pack(pack.pack_id, "beta")
    assert (moved.team_id, moved.remaining, moved.held) == ("beta", 90, 0)
    assert await world.moves() == [
        ("HOLD", 10, T0),
        ("CAPTURE", 10, T0 + 5 * MIN),
        ("MOVE_OUT", 90, T0 + 10 * MIN),
    ]
    assert world.tokens() == (0, 0, 10)


async def test_ad2_a_move_refused_after_a_grace_end_stores_the_charge_and_no_event(
    world: World,
) -> None:
    """MoveTokenPack to the team that holds the pack is refused; the capture it
    fired on its way in is stored, with no audit event (AD2)."""
    await _assign(["REVIT"])(world.engine)
    await world.grace_end_due()
    (pack,) = world.engine.accounts.list_packs("acme")
    await world.refused(
        "MoveTokenPack",
        api.MoveTokenPackRequest(pack_id=pack.pack_id, to_team_id="acme"),
        ("acme",),
        lambda: world.engine.accounts.move_pack(pack.pack_id, "acme"),
        InvalidArgument,
    )
    await world.assert_charged()


async def test_t4_t1_a_purchase_after_a_pack_expiry_due_follows_the_expiry(world: World) -> None:
    """pack-1 (100, bought at 0) expired a year later (T4); a purchase of 50 an
    hour after that comes after the expiry in the ledger, and the balance is
    the new pack's 50, not 150."""
    expiry = datetime(2027, 1, 5, 9, 0, tzinfo=UTC)
    world.late(expiry + HOUR)
    (old,) = world.engine.accounts.list_packs("acme")
    request = api.PurchaseTokensRequest(team_id="acme", tokens=50, request_id="pack-2")
    buy = world.engine.accounts.purchase("acme", 50, "pack-2")
    new = (await world.audited("PurchaseTokens", request, ("acme",), buy)).pack_id
    assert await world.moves() == [("EXPIRY", 100, expiry), ("PURCHASE", 50, expiry + HOUR)]
    assert world.tokens() == (50, 0, 0)
    # Its audit event is about the pack it bought, not the one the expiry changed (AD2).
    (event,) = await world.engine.audit.page("acme", world.engine.audit.last_seq + 1, 1)
    assert (event.method, event.target) == ("PurchaseTokens", new)
    assert new != old.pack_id


async def test_ad2_a_purchase_retry_after_a_pack_expiry_due_stores_it_and_no_event(
    world: World,
) -> None:
    """A retry of pack-1's purchase buys nothing (T1); the expiry it fired on its
    way in is stored, with no audit event of the retry (AD2)."""
    expiry = datetime(2027, 1, 5, 9, 0, tzinfo=UTC)
    world.late(expiry + HOUR)
    events = world.engine.audit.last_seq
    request = api.PurchaseTokensRequest(team_id="acme", tokens=100, request_id="pack-1")
    retry = world.engine.accounts.purchase("acme", 100, "pack-1")
    pack = await world.audited("PurchaseTokens", request, ("acme",), retry)
    assert (pack.remaining, pack.expired) == (0, True)
    assert world.engine.audit.last_seq == events
    assert await world.moves() == [("EXPIRY", 100, expiry)]
    assert world.tokens() == (0, 0, 0)


# -- ResendInvitation and AcceptInvitation: the invitation as it stood (A2) ---------------

WEEK = 7 * DAY  # an invitation can be accepted for 7 days after it was sent (A2)
SECOND = timedelta(seconds=1)


@pytest.mark.parametrize("past", [timedelta(0), HOUR], ids=["at-7d", "at-7d-1h"])
async def test_a2_accept_after_its_expiry_due_is_refused_and_stores_the_expiry(
    world: World, past: timedelta
) -> None:
    """Bea's invitation, sent at 0, expired at 7 d (A2). The scheduler lags: at 7 d
    (or an hour later) its expiry is due, not fired. AcceptInvitation then is
    refused (INVITATION_EXPIRED: Bea stays invited, with no key, and no audit
    event, AD2), and the expiry it fired on its way in is stored: the invitation
    is EXPIRED in memory and on disk, not left PENDING until the loop catches up."""
    token = await world.invite_bea()
    world.late(T0 + WEEK + past)
    request = api.AcceptInvitationRequest(invitation_token=token)
    with pytest.raises(InvitationExpired):
        accept = world.engine.access.accept_invitation(token)
        await world.audited("AcceptInvitation", request, ("acme",), accept, NOBODY)
    directory = world.engine.state.directory
    assert directory.member("acme", BEA).state is MemberState.INVITED
    assert directory.user(BEA).key_hash is None
    assert world.bea_invitation().state is InvitationState.EXPIRED
    assert await world.stored_bea_invitation() == ("EXPIRED", T0, T0 + WEEK)
    assert await world.events() == []


async def test_a2_resend_after_its_expiry_due_starts_seven_days_from_the_resend(
    world: World,
) -> None:
    """Bea's invitation expired at 7 d; the scheduler lags, and ResendInvitation at
    8 d finds it expired: a new 7 days from 8 d (until 15 d), a new token, the old
    one worthless (A2), one audit event. Once the loop catches up, the old
    invitation's expiry changes nothing: the new token is good at 15 d - 1 s."""
    old = await world.invite_bea()
    world.late(T0 + 8 * DAY)
    request = api.ResendInvitationRequest(team_id="acme", user_id=BEA)
    resend = world.engine.access.resend_invitation("acme", BEA)
    invitation, new = await world.audited("ResendInvitation", request, ("acme",), resend)
    assert (invitation.state, invitation.send_time, invitation.expire_time) == (
        InvitationState.PENDING,
        T0 + 8 * DAY,
        T0 + 15 * DAY,
    )
    assert new == world.bea_token() != old
    assert await world.stored_bea_invitation() == ("PENDING", T0 + 8 * DAY, T0 + 15 * DAY)
    assert await world.events() == [("ResendInvitation", "operator", "operator", BEA)]
    await world.engine.scheduler.advance(T0 + 15 * DAY - SECOND)
    with pytest.raises(UnknownInvitation):
        await world.engine.access.accept_invitation(old)
    user_id, _key = await world.engine.access.accept_invitation(new)
    assert user_id == BEA
    assert await world.stored_bea_invitation() == ("ACCEPTED", T0 + 8 * DAY, T0 + 15 * DAY)


async def test_a2_ad2_resend_refused_after_an_expiry_due_stores_it_and_no_event(
    world: World,
) -> None:
    """Bea's invitation expired at 7 d; the scheduler lags. ResendInvitation at
    7 d 1 h of Ann, an active member, is refused (ALREADY_EXISTS): the expiry it
    fired on its way in is stored (Bea's invitation EXPIRED on disk), with no
    audit event (AD2)."""
    await _assign(["REVIT"])(world.engine)
    await world.invite_bea()
    world.late(T0 + WEEK + HOUR)
    await world.refused(
        "ResendInvitation",
        api.ResendInvitationRequest(team_id="acme", user_id=ANN),
        ("acme",),
        lambda: world.engine.access.resend_invitation("acme", ANN),
        AlreadyExists,
    )
    assert await world.stored_bea_invitation() == ("EXPIRED", T0, T0 + WEEK)
    assert await world.events() == []


async def test_a2_m3_accept_after_a_grace_end_due_stores_the_charge_with_it(
    world: World,
) -> None:
    """Ann's grace ended at 5 min (M3: captured); the scheduler lags. Bea accepts
    her invitation at 10 min: she is an active member with a key, the capture
    is stored with her acceptance (in that order), and the one audit event is
    hers (actor ``invitee``, about Bea), not the charge's."""
    await _assign(["REVIT"])(world.engine)
    token = await world.invite_bea()
    await world.grace_end_due()
    request = api.AcceptInvitationRequest(invitation_token=token)
    accept = world.engine.access.accept_invitation(token)
    user_id, key = await world.audited("AcceptInvitation", request, ("acme",), accept, NOBODY)
    assert (user_id, world.engine.resolve_user_key(key)) == (BEA, BEA)
    assert world.engine.state.directory.member("acme", BEA).state is MemberState.ACTIVE
    assert await world.stored_bea_invitation() == ("ACCEPTED", T0, T0 + WEEK)
    assert await world.events() == [("AcceptInvitation", "invitee", BEA, BEA)]
    await world.assert_charged()


async def test_a2_ad2_accept_refused_after_a_grace_end_due_stores_the_charge_and_no_event(
    world: World,
) -> None:
    """AcceptInvitation with a token nobody was sent is refused (UNKNOWN_INVITATION);
    the capture due before it is stored, with no audit event (AD2)."""
    await _assign(["REVIT"])(world.engine)
    await world.grace_end_due()
    await world.refused(
        "AcceptInvitation",
        api.AcceptInvitationRequest(invitation_token="tsi_not-a-token"),
        (),
        lambda: world.engine.access.accept_invitation("tsi_not-a-token"),
        UnknownInvitation,
        NOBODY,
    )
    assert await world.events() == []
    await world.assert_charged()


async def test_a2_m3_resend_after_a_grace_end_due_stores_the_charge_with_it(
    world: World,
) -> None:
    """Ann's grace ended at 5 min (M3: captured); the scheduler lags. Resending
    Bea's invitation at 10 min gives 7 days from 10 min, stores the capture with
    it, and writes one audit event, the resend's."""
    await _assign(["REVIT"])(world.engine)
    await world.invite_bea()
    await world.grace_end_due()
    request = api.ResendInvitationRequest(team_id="acme", user_id=BEA)
    resend = world.engine.access.resend_invitation("acme", BEA)
    invitation, _token = await world.audited("ResendInvitation", request, ("acme",), resend)
    assert (invitation.send_time, invitation.expire_time) == (T0 + 10 * MIN, T0 + 10 * MIN + WEEK)
    assert await world.events() == [("ResendInvitation", "operator", "operator", BEA)]
    await world.assert_charged()


def _lows(world: World) -> list[tuple[int, datetime]]:
    notes = world.engine.access.notifications("acme", "")
    return [(n.tokens, n.create_time) for n in notes if n.kind is NotificationKind.LOW_BALANCE]


async def test_l1_a_threshold_set_after_a_fall_already_due_alerts_nothing_for_that_fall(
    world: World,
) -> None:
    """The renewal at 1 d (90 -> 80) is due but not fired when
    a threshold of 85 is set at 1 d 1 h: the fall came before the threshold existed,
    and a threshold set above the balance queues nothing by itself (L1)."""
    await _assign(["REVIT"])(world.engine)
    await world.heartbeat_at_2h(T0 + DAY + HOUR)
    await world.engine.accounts.update_team_settings("acme", None, None, None, 85)
    assert world.tokens()[0] == 80
    assert _lows(world) == []


async def test_l1_a_threshold_turned_off_after_a_fall_already_due_still_alerts_that_fall(
    world: World,
) -> None:
    """A threshold of 85 stands when the renewal at 1 d takes the balance from 90 to
    80; the loop lags, and the threshold is turned off at 1 d 1 h: the fall came
    while it stood, so its alert is queued at 1 d (L1, RULES §7)."""
    await world.engine.accounts.update_team_settings("acme", None, None, None, 85)
    await _assign(["REVIT"])(world.engine)
    await world.heartbeat_at_2h(T0 + DAY + HOUR)
    assert world.tokens()[0] == 90 and _lows(world) == []
    await world.engine.accounts.update_team_settings("acme", None, None, None, 0)
    assert world.tokens()[0] == 80
    assert _lows(world) == [(80, T0 + DAY)]


@pytest.mark.parametrize("call", ["heartbeat", "idle", "release"])
async def test_t6_m12_a_call_on_a_forgotten_session_fires_what_is_due_after_its_read(
    world: World, call: str
) -> None:
    """A Heartbeat, Idle or Release naming a session memory does not hold reads the
    store (M12). The capture due meanwhile (a lagging loop) must not wait in that call
    over its read while another call takes the next ledger entry and is answered: a
    crash then would leave the ledger a gap, and the pack row ahead of its entries."""
    await _assign(["REVIT"])(world.engine)
    await world.grace_end_due()  # the capture at 5 min is due, unfired
    store = world.engine.store
    read = store.ended_session
    go_on = asyncio.Event()

    async def held_read(session_id: str) -> Session | None:
        found = await read(session_id)
        await go_on.wait()  # the read takes a while (a busy database)
        return found

    store.ended_session = held_read  # type: ignore[method-assign]
    sessions = world.engine.sessions
    calls = {"heartbeat": lambda: sessions.heartbeat(ANN, "se_gone", 0)}
    calls |= {"idle": lambda: sessions.idle(ANN, "se_gone")}
    calls |= {"release": lambda: sessions.release(ANN, "se_gone")}
    waiting = asyncio.create_task(calls[call]())
    await asyncio.sleep(0)  # it reaches its read
    await world.engine.accounts.purchase("acme", 5, "po-late")  # answered: stored
    on_disk = verify(world.db)  # what a crash now would leave
    go_on.set()
    with pytest.raises(UnknownSession):
        await waiting
    assert on_disk.ok, on_disk.problems
    assert await world.moves() == [*CHARGED, ("PURCHASE", 5, T0 + 10 * MIN)]


async def test_r1_a_release_while_the_report_reads_the_store_keeps_its_active_time(
    world: World,
) -> None:
    """Ann's session is active for an hour and released while GetUsageReport reads
    the store: its span is stored after the read, and it is no longer running when
    the reads are done. The report still says the hour."""
    await _assign(["REVIT"])(world.engine)
    session_id = await world.entitle()
    await world.engine.advance_clock(T0 + HOUR, None)
    store = world.engine.store
    read = store.usage_facts
    reading, go_on = asyncio.Event(), asyncio.Event()

    async def held_read(*args: Any) -> UsageFacts:
        facts = await read(*args)
        reading.set()
        await go_on.wait()
        return facts

    store.usage_facts = held_read  # type: ignore[method-assign]
    report = asyncio.create_task(world.engine.sessions.usage_report("acme", None, None))
    await reading.wait()
    await world.engine.sessions.release(ANN, session_id)
    go_on.set()
    assert (await report).total_active_seconds == 3600


async def test_t4_m2_an_entitle_after_a_pack_expiry_due_finds_the_pack_expired(
    world: World,
) -> None:
    """§7: Entitle first fires the deadlines already due. pack-1 (acme's only 100
    tokens, bought at T0) expired a year later (T4: its unused tokens are lost); the
    scheduler lags, and Ann's Entitle an hour after the expiry must find nothing to
    hold (INSUFFICIENT_TOKENS), not hold 10 of the expired pack's tokens."""
    await _assign(["REVIT"])(world.engine)
    expiry = datetime(2027, 1, 5, 9, 0, tzinfo=UTC)
    world.late(expiry + HOUR)
    with pytest.raises(InsufficientTokens):
        await entitle_on_engine(world.engine, "ann@example.com", "REVIT")
    assert await world.moves() == [("EXPIRY", 100, expiry)]
    assert world.tokens() == (0, 0, 0)
