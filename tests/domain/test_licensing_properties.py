"""Properties of metering over random event histories (RULES T2, T6, M2-M9).

Each example sets up 1-2 teams, 1-3 users with random access, and runs a
random history of Entitle (with or without takeover), Heartbeat (random
``seconds_since_activity``), Idle, Release, a heartbeat from every live session, purchases and clock advances of
random lengths, firing deadlines in time order. After every step and at every
capture, the invariants below must hold.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.domain.changes import Changes, Deleted
from server.domain.errors import DomainError
from server.domain.ledger import EntryKind, Hold, Ledger
from server.domain.sessions import (
    ActivitySpan,
    ChargeState,
    Coverage,
    EndReason,
    Session,
    SessionState,
)
from server.domain.teams import Plan
from server.domain.terms import DEFAULT_TERMS
from server.domain.timers import TimerKind
from server.store.codec import SESSIONS
from tests.domain.licensing_world import T0, FakeSub, World

TEAMS = ("alpha", "beta")
HANDED_ON: list[int] = []  # captures of a grace handed on from another team (C3)
USERS = ("ann", "bob", "cat")
PRODUCTS = ("ACAD", "MAYA")  # MAYA is idle-aware
GRACE = DEFAULT_TERMS.grace
FIXED_AT = tuple(SESSIONS.columns.index(c) for c in SESSIONS.fixed)  # in a session's row
WINDOW = DEFAULT_TERMS.charge_window

SECONDS = st.sampled_from(
    [0, 30, 120, 299, 300, 600, 899, 900, 901, 1800, 7200, 2**63 - 1]
) | st.integers(0, 3 * 3600)
ADVANCE = st.sampled_from(
    [1, 59, 60, 240, 299, 300, 301, 899, 900, 901, 3600, 86_099, 86_100, 86_400, 86_401]
) | st.integers(1, 2 * 86_400)

_EVENTS = [
    st.tuples(
        st.just("entitle"),
        st.integers(0, 2),  # user
        st.integers(0, 1),  # product
        st.integers(0, 4),  # device
        st.booleans(),  # takeover
        st.sampled_from(["", "alpha", "beta"]),  # preferred team
    ),
    st.tuples(st.just("heartbeat"), st.integers(0, 30), SECONDS),
    st.tuples(st.just("pulse"), SECONDS),  # every live session heartbeats
    st.tuples(st.just("idle"), st.integers(0, 30)),
    st.tuples(st.just("release"), st.integers(0, 30)),
    st.tuples(st.just("advance"), ADVANCE),
    st.tuples(st.just("buy"), st.integers(0, 1), st.integers(1, 40)),
]
# Without "next", which steps to the heap's next entry: a restored heap holds no
# stale entries, so it would step elsewhere.
STEADY_EVENTS = st.one_of(*_EVENTS)
EVENTS = st.one_of(
    *_EVENTS,
    st.tuples(st.just("next"), st.integers(0, 2)),  # to the next deadline (or a second before)
)


class WatchedLedger(Ledger):
    """Calls ``before_capture`` with each hold about to be captured."""

    def __init__(self) -> None:
        super().__init__()
        self.before_capture: Any = None

    def capture(self, hold: Hold, now: datetime, changes: Changes) -> None:
        if self.before_capture is not None:
            self.before_capture(hold, now)
        super().capture(hold, now, changes)


def active_periods(
    w: World, team: str, user: str, product: str, now: datetime
) -> list[tuple[datetime, datetime]]:
    periods = [
        (x.start, x.end)
        for x in w.items
        if isinstance(x, ActivitySpan)
        and (x.team_id, x.user_id, x.product_id) == (team, user, product)
    ]
    periods += [
        (s.state_since, now)
        for s in w.lic.sessions_of_user(user, product)
        if s.team_id == team and s.state is SessionState.ACTIVE
    ]
    return sorted(periods)


def covered_without_break(
    periods: list[tuple[datetime, datetime]], start: datetime, end: datetime
) -> bool:
    """Whether the union of ``periods`` (sorted by start) covers [start, end]."""
    reached = start
    for a, b in periods:
        if a > reached:
            break  # a gap before this period
        reached = max(reached, b)
    return reached >= end


def check_capture(w: World, hold: Hold, now: datetime) -> None:
    """M3: a capture only for a meter in use at that instant, after 5 minutes
    of unbroken active use since its grace began (no idle meter is charged). A grace
    handed on from the user's meter in another team (C3) began before its hold: the
    5 minutes of use are the user's, in whichever teams."""
    team, user, product = hold.team_id, hold.cause.user_id, hold.cause.product_id
    assert now - hold.time <= GRACE, (hold.time, now)
    if now - hold.time < GRACE:
        HANDED_ON.append(1)
    every_team = sorted(p for t in w.teams for p in active_periods(w, t, user, product, now))
    assert covered_without_break(every_team, now - GRACE, now), (now, every_team)
    live_active = [
        s
        for s in w.lic.sessions_of_user(user, product)
        if s.team_id == team and s.state is SessionState.ACTIVE and s.coverage is Coverage.TOKENS
    ]
    assert live_active, f"capture for {team}|{user}|{product} with no active session at {now}"
    periods = active_periods(w, team, user, product, now)
    assert covered_without_break(periods, hold.time, now), (hold.time, now, periods)
    w.captures.append((team, user, product, now - GRACE))


def check_invariants(w: World) -> None:
    ledger = w.ledger
    # T2: no balance below zero; T6: every pack's entries add up to its state.
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in w.entries():
        sums[e.pack_id][0] += e.remaining_delta
        sums[e.pack_id][1] += e.held_delta
    for pack in ledger.packs.values():
        assert pack.remaining >= 0 and pack.held >= 0
        assert sums[pack.pack_id] == [pack.remaining, pack.held], pack
        # Tokens are conserved: bought = remaining + held + consumed + expired.
        assert pack.tokens == pack.remaining + pack.held + pack.consumed + pack.expired_tokens
    for team in w.teams:
        assert ledger.available(team) >= 0
        assert ledger.available(team) == sum(p.remaining for p in ledger.team_packs(team))
        assert ledger.held(team) == sum(p.held for p in ledger.team_packs(team))
    consumed = sum(p.consumed for p in ledger.packs.values())
    assert consumed == sum(e.amount for e in w.entries(EntryKind.CAPTURE))

    # M3/M5 with C3: never two captures for one user and product within a window of
    # each other, whichever teams they were made in ("a named user pays a product's
    # rate once per 24 hours whichever teams they belong to").
    starts: dict[tuple[str, str], list[tuple[datetime, str]]] = defaultdict(list)
    for team, user, product, start in w.captures:
        starts[(user, product)].append((start, team))
    for times in starts.values():
        for (a, team_a), (b, team_b) in itertools.pairwise(sorted(times)):
            assert b - a >= WINDOW, (a, team_a, b, team_b)

    live = [s for s in w.lic.all_sessions() if s.live]
    held_meters = 0
    for s in live:
        meter = w.lic.meter(s.team_id, s.user_id, s.product_id)
        assert meter is not None and w.lic.meter_of(s) is meter
        device = w.lic.device_of(s)
        assert device is not None and s in device.sessions()
        # M2 with C3: every active session under tokens is paid for now, by a grace or
        # a window of its meter or of the user's meter for the product in another team.
        if s.active and s.coverage is Coverage.TOKENS:
            paid = meter.state is ChargeState.GRACE or meter.window_covers(w.now)
            assert paid or w.lic.paying_elsewhere(meter, w.now) is not None, (s, meter)
    for meter in w.lic.meters:
        mine = [s for s in live if w.lic.meter_of(s) is meter]
        assert w.lic._meter_live(meter) == bool(mine)
        assert meter.active == sum(s.active for s in mine)
        # a meter with nothing held, no window and no live session is forgotten
        assert mine or meter.state is not ChargeState.NONE, meter
        if meter.state is ChargeState.GRACE:
            # M3: grace lasts only while the meter is in use.
            assert meter.active > 0 and meter.hold is not None
            assert meter.grace_end is not None and meter.grace_end > w.now
            held_meters += meter.hold.amount
    assert held_meters == sum(ledger.held(t) for t in w.teams)
    check_kept_counts(w)

    # The store leaves a session's ``fixed`` columns as they were inserted
    # (server/store/codec.py, SESSIONS): no event may change them.
    for s in w.lic.all_sessions():
        row = SESSIONS.to_row(s)
        fixed = tuple(row[i] for i in FIXED_AT)
        assert w.fixed.setdefault(s.session_id, fixed) == fixed, s  # type: ignore[attr-defined]

    # M8, M9: at most 3 devices, at most one running device, per user and product.
    for user in USERS:
        for product in PRODUCTS:
            devices = w.lic.devices(user, product)
            assert len(devices) <= DEFAULT_TERMS.devices_per_product
            assert sum(d.running for d in devices) <= 1
    # Lazy deadlines: every live session has its one deadline outstanding, no later
    # than its lease end and, while active on an idle-aware product, its idle instant.
    pending = {
        (key, due)
        for due, kind, key in w.heap.pending()
        if kind in (TimerKind.LEASE_END, TimerKind.IDLE)
    }
    for s in live:
        assert s.due is not None and (s.session_id, s.due) in pending, s
        assert s.due <= s.lease_end
        if s.active and w.products[s.product_id].idle_aware:
            assert s.due <= s.idle_instant(DEFAULT_TERMS.idle_threshold)


def check_kept_counts(w: World) -> None:
    """The metrics' gauges, kept as states change, are what a walk of every live
    session and meter counts."""
    kept = {key: n for key, n in w.lic.live_counts.items() if n}
    assert kept == Counter((s.product_id, s.state) for s in w.lic.all_sessions() if s.live)
    kept = {key: n for key, n in w.lic.meters.counts.items() if n}
    none = ChargeState.NONE
    assert kept == Counter((m.product_id, m.state) for m in w.lic.meters if m.state is not none)


def check_no_team_left_to_pay(w: World, ended_before: set[str]) -> None:
    """M5 and C2 with C3 over a step of time alone (sessions only go idle or end in
    it): a session ended INSUFFICIENT_TOKENS in it means none of its user's teams
    running the product could pay then, so no session of that user and product still
    runs in use under tokens, paid for by another team, that was running at that end."""
    live = [s for s in w.lic.all_sessions() if s.live]
    for s in w.lic.all_sessions():
        if s.session_id in ended_before or s.end_reason is not EndReason.INSUFFICIENT_TOKENS:
            continue
        going_on = [
            o
            for o in live
            if (o.user_id, o.product_id) == (s.user_id, s.product_id)
            and o.active
            and o.coverage is Coverage.TOKENS
            and o.start_time <= s.state_since
        ]
        assert not going_on, (s, going_on)


def build(n_teams: int, n_users: int, grants: list[int], tokens: list[int], trial: int) -> World:
    ledger = WatchedLedger()
    w = World({t: Plan.STANDARD for t in TEAMS[:n_teams]}, ledger=ledger)
    w.captures = []  # type: ignore[attr-defined]
    w.fixed = {}  # type: ignore[attr-defined]  # each session's fixed columns, first seen
    w.users = USERS[:n_users]  # type: ignore[attr-defined]
    ledger.before_capture = lambda hold, now: check_capture(w, hold, now)
    for i, team in enumerate(TEAMS[:n_teams]):
        if tokens[i]:
            w.buy(team, tokens[i])
    bits = iter(grants)
    for user in USERS[:n_users]:
        for product in PRODUCTS:
            for team in TEAMS[:n_teams]:
                if next(bits):
                    w.access.grant(user, team, product)
    if trial:  # C2: a trial of MAYA for ann that ends mid-history
        w.coverage.subs.append(FakeSub("ann", "MAYA", "TRIAL", T0, T0 + timedelta(seconds=trial)))
    return w


def apply(w: World, event: tuple[Any, ...], sessions: list[Session]) -> None:
    kind = event[0]
    pick = (lambda i: sessions[i % len(sessions)]) if sessions else None
    try:
        if kind == "entitle":
            _, u, p, d, takeover, team = event
            user = USERS[u % len(w.users)]
            sessions.append(w.entitle(user, PRODUCTS[p], f"dev{d}", takeover=takeover, team=team))
        elif kind == "heartbeat" and pick:
            w.heartbeat(pick(event[1]), event[2])
        elif kind == "pulse":
            for s in [s for s in sessions if s.live]:
                w.heartbeat(s, event[1])
        elif kind == "idle" and pick:
            w.idle(pick(event[1]))
        elif kind == "release" and pick:
            w.release(pick(event[1]))
        elif kind == "advance":
            w.advance(timedelta(seconds=event[1]))
        elif kind == "next" and (due := w.heap.next_due()) is not None:
            w.advance(to=max(w.now, due - timedelta(seconds=event[1] % 2)))
        elif kind == "buy" and event[1] < len(w.teams):
            w.buy(TEAMS[event[1]], event[2])
    except DomainError:
        assert not w.last_changes, "a refusal changed something"


def run_history(w: World, events: list[tuple[Any, ...]]) -> None:
    """Apply ``events``, checking the invariants after every step; then, left alone,
    every lease lapses: nothing stays live or held."""
    sessions: list[Session] = []
    for event in events:
        ended = {s.session_id for s in w.lic.all_sessions() if not s.live}
        apply(w, event, sessions)
        check_invariants(w)
        if event[0] in ("advance", "next"):
            check_no_team_left_to_pay(w, ended)
    w.advance(timedelta(days=3))
    check_invariants(w)
    assert not any(s.live for s in w.lic.all_sessions())
    assert all(w.ledger.held(t) == 0 for t in w.teams)


@settings(
    max_examples=800,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    n_teams=st.integers(1, 2),
    n_users=st.integers(1, 3),
    grants=st.lists(st.sampled_from([1, 1, 1, 0]), min_size=12, max_size=12),
    tokens=st.lists(st.sampled_from([0, 8, 10, 18, 25, 40, 100, 1000]), min_size=2, max_size=2),
    trial=st.sampled_from([0, 0, 600, 3600, 90_000]),
    events=st.lists(EVENTS, min_size=10, max_size=50),
)
def test_metering_invariants_over_random_histories(
    n_teams: int,
    n_users: int,
    grants: list[int],
    tokens: list[int],
    trial: int,
    events: list[tuple[Any, ...]],
) -> None:
    w = build(n_teams, n_users, grants, tokens, trial)
    run_history(w, events)
    assert len(w.lic.meters) == 0 or all(m.state is ChargeState.NONE for m in w.lic.meters), (
        "meters remember nothing once every window has closed"
    )


# One user in both teams, on one device or two, naming a team at each Entitle, going
# idle and coming back: the histories where C3's "once per 24 hours whichever teams"
# is at stake (sessions of one product in two teams, riding on one meter's payment).
SEAT_EVENTS = st.one_of(
    st.tuples(
        st.just("entitle"),
        st.just(0),  # ann
        st.integers(0, 1),  # ACAD or MAYA (idle-aware)
        st.integers(0, 1),  # device
        st.booleans(),
        st.sampled_from(["alpha", "beta"]),
    ),
    st.tuples(st.just("heartbeat"), st.integers(0, 8), st.sampled_from([0, 0, 30, 900, 7200])),
    st.tuples(st.just("pulse"), st.sampled_from([0, 0, 30, 900])),  # every live session beats
    st.tuples(st.just("idle"), st.integers(0, 8)),
    st.tuples(st.just("release"), st.integers(0, 8)),
    st.tuples(st.just("advance"), st.sampled_from([30, 60, 240, 300, 301, 900, 3600, 86_400])),
    st.tuples(st.just("next"), st.integers(0, 2)),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    tokens=st.lists(st.sampled_from([0, 8, 10, 18, 40, 1000]), min_size=2, max_size=2),
    trial=st.sampled_from([0, 600, 3600]),
    events=st.lists(SEAT_EVENTS, min_size=10, max_size=40),
)
def test_c3_one_user_in_two_teams_pays_once_a_day_over_random_histories(
    tokens: list[int], trial: int, events: list[tuple[Any, ...]]
) -> None:
    """C3 over random histories of one user with every product in both teams: the
    invariants above (no two captures for the user and product within a window,
    every active session under tokens paid for by its meter or the one it rides
    on) after every step."""
    w = build(2, 1, [1] * 12, tokens, trial)
    if trial:  # ACAD too: sessions opened in both teams under it pay when it ends
        w.coverage.subs.append(FakeSub("ann", "ACAD", "TRIAL", T0, T0 + timedelta(seconds=trial)))
    run_history(w, events)


@settings(max_examples=250)
@given(events=st.lists(STEADY_EVENTS, min_size=10, max_size=40), cut=st.integers(0, 40))
def test_restart_changes_nothing(events: list[tuple[Any, ...]], cut: int) -> None:
    """Restoring from what was recorded, mid-history, gives the same ledger."""
    import copy

    from server.domain.licensing import Licensing
    from server.domain.sessions import Device, Meter
    from server.domain.timers import TimerHeap

    def run(restart_at: int | None) -> list[tuple[Any, ...]]:
        w = build(2, 3, [1] * 12, [40, 25], 3600)
        sessions: list[Session] = []
        for i, event in enumerate(events):
            if i == restart_at:
                last: dict[tuple[type, str], object] = {}  # the store: upserts and deletes
                for o in w.items:
                    if isinstance(o, Deleted) and isinstance(
                        o.obj, Session | Meter | Device | Hold
                    ):
                        last.pop((type(o.obj), _key(o.obj)), None)
                    elif isinstance(o, Session | Meter | Device | Hold):
                        last[(type(o), _key(o))] = o
                stored = [copy.copy(o) for o in last.values()]
                w.lic = Licensing.restore(
                    [o for o in stored if isinstance(o, Session)],
                    [o for o in stored if isinstance(o, Meter)],
                    [o for o in stored if isinstance(o, Device)],
                    [o for o in stored if isinstance(o, Hold)],
                    ledger=w.ledger,
                    products=w.products,
                    teams=w.teams,
                    terms=DEFAULT_TERMS,
                    access=w.access,
                    coverage=w.coverage,
                    new_id=w.new_id,
                )
                w.heap = TimerHeap()
                w.lic.schedule_all(w.heap, w.now)
                sessions = [w.lic.session(s.session_id) for s in sessions]
                check_kept_counts(w)
            apply(w, event, sessions)
        check_kept_counts(w)
        w.advance(timedelta(days=3))
        # Deadlines of different meters due at one instant may pop in another order.
        return sorted((e.time, e.kind.value, e.pack_id, e.amount) for e in w.entries())

    assert run(None) == run(cut)


def _key(o: object) -> str:
    if isinstance(o, Session):
        return o.session_id
    if isinstance(o, Hold):
        return o.hold_id
    if hasattr(o, "key"):
        return str(o.key)
    return f"{o.user_id}|{o.product_id}|{o.device_id}"  # type: ignore[attr-defined]
