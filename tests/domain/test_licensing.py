"""RULES §4-§6 on the licensing domain, one test per rule, on fixed UTC instants."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from datetime import timedelta
from typing import Any

import pytest

from server.domain.changes import Changes
from server.domain.errors import (
    AlreadyExists,
    DeviceInUse,
    DeviceLimit,
    HostSessionRequired,
    IdleNotSupported,
    InsufficientTokens,
    InvalidArgument,
    InvitationPending,
    NotAssigned,
    RunningElsewhere,
    SessionLimit,
    UnknownProduct,
    UnknownSession,
    UnsupportedPlatform,
    UnsupportedVersion,
)
from server.domain.ledger import EntryKind, Hold
from server.domain.licensing import Licensing
from server.domain.products import Platform
from server.domain.sessions import (
    ChargeState,
    Coverage,
    Device,
    EndReason,
    Meter,
    Session,
    SessionState,
)
from server.domain.teams import Plan
from server.domain.terms import DEFAULT_TERMS
from server.domain.timers import TimerHeap
from tests.domain.licensing_world import T0, CountedSessions, FakeSub, World

MIN = timedelta(minutes=1)
SEC = timedelta(seconds=1)
HOUR = timedelta(hours=1)
DAY = timedelta(hours=24)


@pytest.fixture
def w() -> World:
    world = World()
    world.buy("alpha", 100)
    world.access.grant("ann", "alpha", "ACAD", "MAYA", "PLUG", "FREE", "FPLUG")
    world.access.grant("bob", "alpha", "ACAD", "MAYA", "PLUG")
    return world


def two_teams() -> World:
    world = World({"alpha": Plan.STANDARD, "beta": Plan.PREMIUM})
    world.access.grant("ann", "alpha", "ACAD", "MAYA", "PLUG")
    world.access.grant("ann", "beta", "ACAD", "MAYA", "PLUG")
    return world


def acad_in_both_teams(alpha: int, beta: int) -> tuple[World, Session, Session]:
    """Ann, in alpha and beta with ``alpha`` and ``beta`` tokens, runs ACAD in each
    (one device) under a trial that ends at T0 + 1 hour (C2)."""
    w = two_teams()
    for team, tokens in (("alpha", alpha), ("beta", beta)):
        if tokens:
            w.buy(team, tokens)
    w.coverage.subs.append(FakeSub("ann", "ACAD", "TRIAL", T0, T0 + HOUR))
    a = w.entitle(team="alpha", version="2026")
    b = w.entitle(team="beta", version="2025")
    return w, a, b


# -- M1: Entitle checks, in order ---------------------------------------------


def test_m1_required_fields_are_named(w: World) -> None:
    with pytest.raises(InvalidArgument) as e:
        w.entitle(product="", device="")
    assert set(e.value.violations) == {"product_id", "device_id"}
    with pytest.raises(InvalidArgument) as e:
        w.entitle(device="x" * 201)
    assert set(e.value.violations) == {"device_id"}
    with pytest.raises(InvalidArgument) as e:
        w.entitle(device="bad\ndevice", request_id="r\x00")
    assert set(e.value.violations) == {"device_id", "request_id"}


def test_m1_unknown_product(w: World) -> None:
    with pytest.raises(UnknownProduct):
        w.entitle(product="NOPE")


def test_p2_version_must_start_with_a_year(w: World) -> None:
    with pytest.raises(InvalidArgument) as e:
        w.entitle(version="latest")
    assert set(e.value.violations) == {"product_version"}
    assert w.entitle(version="2025.1").product_version == "2025.1"


@pytest.mark.parametrize(
    "version", ["2025 R2", "2025-SP1", "2025.1-beta", "2025.0.1", "2025_1", "2025.1+build7"]
)
def test_p2_a_version_starting_with_a_year_is_taken_whatever_follows_a_separator(
    w: World, version: str
) -> None:
    """P2: "years (2025) or start with one": a vendor's 2025 R2 or 2025-SP1 too."""
    assert w.entitle(version=version, request_id=version).product_version == version


@pytest.mark.parametrize("version", ["20251", "2025R2", "2025 ", "2025..1", "2025 -1", "2025.é"])
def test_p2_a_year_then_no_separator_or_an_empty_part_is_refused(w: World, version: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        w.entitle(version=version)
    assert set(e.value.violations) == {"product_version"}


@pytest.mark.parametrize(
    "version", ["\u0662\u0660\u0662\u0665", "\uff12\uff10\uff12\uff15", "2025\n", "0000", "1969.1"]
)
def test_p2_a_year_is_four_ascii_digits(w: World, version: str) -> None:
    """Arabic-Indic or fullwidth digits, a line break after the year, or a year
    before 1970 (the API's earliest) are no version of P2's: refused, so no
    session is stored under such a version."""
    with pytest.raises(InvalidArgument) as e:
        w.entitle(version=version)
    assert set(e.value.violations) == {"product_version"}
    assert w.lic.devices("ann", "ACAD") == []


@pytest.mark.parametrize(
    ("device", "why"),
    [
        ("dev\u202e", "U+202E"),  # a right-to-left override: reorders what an operator reads
        ("\u200b", "U+200B"),  # a zero-width space: an id no one can see
        ("d\u0085x", "U+0085"),  # C1 next line
        ("d\tx", "U+0009"),
        (" dev-1", "space"),  # a second device beside "dev-1"
        ("dev-1 ", "space"),
    ],
)
def test_m8_a_device_id_is_printable_text_without_spaces_around_it(
    w: World, device: str, why: str
) -> None:
    """A device id names one of the three devices (M8) in refusals and lists: it
    follows the text rule of request ids, and " dev-1" is not a second "dev-1"."""
    with pytest.raises(InvalidArgument) as e:
        w.entitle(device=device)
    assert set(e.value.violations) == {"device_id"}
    assert why in e.value.violations["device_id"]
    assert w.lic.devices("ann", "ACAD") == []
    assert w.entitle(device="dev-1").device_id == "dev-1"


@pytest.mark.parametrize("team", ["Acme", "acme\n", "acme corp"])
def test_c3_a_preferred_team_is_named_by_a_team_id(w: World, team: str) -> None:
    """C3: a preference that cannot be a team id is a mistake to say, not to
    pass over in silence (a well-formed one the user has no access to is passed
    over, as C3 says)."""
    with pytest.raises(InvalidArgument) as e:
        w.entitle(team=team)
    assert set(e.value.violations) == {"team_id"}
    assert w.entitle(team="nope").live


def test_p3_platform_and_linux_floor(w: World) -> None:
    with pytest.raises(UnsupportedPlatform):
        w.entitle(platform=Platform.LINUX)  # ACAD does not run on Linux
    with pytest.raises(UnsupportedVersion):
        w.entitle(product="MAYA", platform=Platform.LINUX, version="2019")
    assert w.entitle(product="MAYA", platform=Platform.LINUX, version="2020").live


def test_m1_access_refusals_come_from_the_directory(w: World) -> None:
    with pytest.raises(NotAssigned):
        w.entitle(user="cat")
    w.access.pending.add("cat")
    with pytest.raises(InvitationPending):
        w.entitle(user="cat")


def test_m1_checks_in_order(w: World) -> None:
    # Unknown product wins over everything after it.
    with pytest.raises(UnknownProduct):
        w.entitle(user="cat", product="NOPE", platform=Platform.LINUX)
    # Platform before access.
    with pytest.raises(UnsupportedPlatform):
        w.entitle(user="cat", platform=Platform.LINUX)
    # Access before the device limit.
    for d in ("d1", "d2", "d3"):
        w.release(w.entitle(device=d))
    w.access.revoke("ann", "alpha", "ACAD")
    with pytest.raises(NotAssigned):
        w.entitle(device="d4")
    w.access.grant("ann", "alpha", "ACAD")
    # Device limit before running elsewhere.
    w.entitle(device="d1")
    with pytest.raises(DeviceLimit):
        w.entitle(device="d4")
    # Running elsewhere before payment: an idle session whose trial ended holds no
    # meter open (C3 would otherwise run the next one under it, unpaid again).
    two = two_teams()
    two.buy("alpha", 5)
    two.coverage.subs.append(FakeSub("ann", "MAYA", "TRIAL", T0, T0 + HOUR))
    two.entitle(product="MAYA", device="d1")
    two.advance(2 * HOUR)  # idle after 15 minutes, then the trial ends
    with pytest.raises(InsufficientTokens):
        two.entitle(product="MAYA", device="d1", team="beta")
    with pytest.raises(RunningElsewhere):
        two.entitle(product="MAYA", device="d2", team="beta")


def test_m1_refused_entitle_changes_nothing(w: World) -> None:
    w.access.grant("cat", "alpha", "ACAD")
    first = w.entitle(user="cat", device="d1")
    before_items = len(w.items)
    before_heap = len(w.heap)
    for kwargs, refusal in (
        ({"device": "d2"}, RunningElsewhere),
        ({"product": "NOPE"}, UnknownProduct),
        ({"platform": Platform.LINUX}, UnsupportedPlatform),
    ):
        with pytest.raises(refusal):  # a refusal, not a crash
            w.entitle(user="cat", **kwargs)  # type: ignore[arg-type]
        assert not w.last_changes
    assert len(w.items) == before_items and len(w.heap) == before_heap
    assert [d.device_id for d in w.lic.devices("cat", "ACAD")] == ["d1"]
    assert first.state is SessionState.ACTIVE


# -- M2: payment check and hold ------------------------------------------------------


def test_m2_entitle_holds_the_daily_rate_and_enters_grace(w: World) -> None:
    s = w.entitle()
    assert w.available() == 90 and w.held() == 10
    [hold] = w.entries(EntryKind.HOLD)
    assert hold.amount == 10 and hold.cause.session_id == s.session_id
    view = w.lic.session_view(s, w.now)
    assert view.charge_state is ChargeState.GRACE
    assert view.grace_end_time == T0 + 5 * MIN
    assert view.window_end_time is None
    assert view.lease_expire_time == T0 + DAY
    assert view.team_available_tokens == 90
    assert view.heartbeat_interval == DEFAULT_TERMS.heartbeat_interval
    assert s.coverage is Coverage.TOKENS and s.daily_rate == 10 and s.plan is Plan.STANDARD


def test_m2_insufficient_tokens_carries_balance_and_rate() -> None:
    w = World()
    w.buy("alpha", 7)
    w.access.grant("ann", "alpha", "ACAD")
    with pytest.raises(InsufficientTokens) as e:
        w.entitle()
    assert (e.value.available, e.value.daily_rate) == (7, 10)
    assert e.value.metadata == {"team_id": "alpha", "available": "7", "daily_rate": "10"}
    assert w.lic.devices("ann", "ACAD") == []


def test_m2_a_meter_in_grace_holds_nothing_more(w: World) -> None:
    w.entitle(device="d1", version="2024")
    w.entitle(device="d1", version="2025")
    assert w.held() == 10 and len(w.entries(EntryKind.HOLD)) == 1


def test_m2_race_for_the_last_tokens() -> None:
    w = World()
    w.buy("alpha", 10)
    w.access.grant("ann", "alpha", "ACAD")
    w.access.grant("bob", "alpha", "ACAD")
    w.entitle(user="ann")
    with pytest.raises(InsufficientTokens) as e:
        w.entitle(user="bob")
    assert (e.value.available, e.value.daily_rate) == (0, 10)


def test_t3_hold_spans_packs_in_consumption_order() -> None:
    w = World()
    w.buy("alpha", 4)
    w.now += DAY
    w.buy("alpha", 50)
    w.access.grant("ann", "alpha", "ACAD")
    w.entitle()
    parts = [(e.pack_id, e.amount) for e in w.entries(EntryKind.HOLD)]
    assert parts == [("pk_000001", 4), ("pk_000002", 6)]


# -- M3: grace ----------------------------------------------------------------------


def test_m3_release_within_grace_is_free(w: World) -> None:
    s = w.entitle()
    w.advance(4 * MIN + 59 * SEC)
    w.release(s)
    assert w.charged() == 0 and w.available() == 100 and w.held() == 0
    assert [e.amount for e in w.entries(EntryKind.HOLD_RELEASE)] == [10]
    assert w.lic.meter("alpha", "ann", "ACAD") is None  # nothing left to remember
    w.advance(DAY)
    assert w.charged() == 0


def test_m3_release_after_grace_is_charged(w: World) -> None:
    s = w.entitle()
    w.advance(5 * MIN + SEC)
    w.release(s)
    assert w.charged() == 10 and w.available() == 90 and w.held() == 0
    [capture] = w.entries(EntryKind.CAPTURE)
    assert capture.time == T0 + 5 * MIN


def test_m3_release_at_exactly_grace_end_is_charged(w: World) -> None:
    s = w.entitle()
    w.advance(5 * MIN)
    w.release(s)
    assert w.charged() == 10


def test_m3_window_opens_from_when_grace_began(w: World) -> None:
    s = w.entitle()
    w.advance(10 * MIN)
    meter = w.lic.meter("alpha", "ann", "ACAD")
    assert meter is not None and meter.state is ChargeState.CHARGED
    assert (meter.window_start, meter.window_end) == (T0, T0 + DAY)
    view = w.lic.session_view(s, w.now)
    assert view.charge_state is ChargeState.CHARGED and view.window_end_time == T0 + DAY


def test_m3_idle_before_grace_end_releases_the_hold(w: World) -> None:
    s = w.entitle(product="MAYA")
    w.advance(2 * MIN)
    w.idle(s)
    assert w.held() == 0 and w.available() == 100
    w.advance(HOUR)
    assert w.charged() == 0


def test_m3_grace_continues_while_another_session_is_active(w: World) -> None:
    a = w.entitle(version="2024")
    w.advance(MIN)
    w.entitle(version="2025")
    w.advance(MIN)
    w.release(a)
    assert w.held() == 10
    w.advance(3 * MIN)
    assert w.charged() == 10


def test_m3_lease_expiry_counts_as_release(w: World) -> None:
    """A session whose lease lapses stops at its lease end, as if released then."""
    w.products["MAYA"].idle_aware = False
    s = w.entitle(product="MAYA")
    w.advance(DAY + HOUR)
    assert s.end_reason is EndReason.LEASE_EXPIRED and s.end_time == T0 + DAY
    assert w.charged() == 8  # one capture at 5 min; no renewal at exactly 24 h


# -- M4: window -------------------------------------------------------------------------


def test_m4_window_covers_any_device_and_version(w: World) -> None:
    s = w.entitle(device="d1", version="2024")
    w.advance(HOUR)
    w.release(s)
    w.advance(HOUR)
    t = w.entitle(device="d2", version="2026")
    assert w.lic.session_view(t, w.now).charge_state is ChargeState.CHARGED
    assert len(w.entries(EntryKind.HOLD)) == 1 and w.held() == 0
    w.advance(20 * HOUR)
    assert w.charged() == 10


# -- M5: renewal -----------------------------------------------------------------------


def test_m5_renewal_at_exactly_24_hours(w: World) -> None:
    s = w.entitle()
    w.advance(to=T0 + DAY - SEC)
    assert len(w.entries(EntryKind.HOLD)) == 1 and w.held() == 0
    w.heartbeat(s)
    w.advance(to=T0 + DAY)
    assert w.held() == 10
    assert [e.time for e in w.entries(EntryKind.HOLD)] == [T0, T0 + DAY]
    view = w.lic.session_view(s, w.now)
    assert view.charge_state is ChargeState.GRACE and view.grace_end_time == T0 + DAY + 5 * MIN
    w.advance(to=T0 + DAY + 5 * MIN)
    captures = w.entries(EntryKind.CAPTURE)
    assert [(e.time, e.amount) for e in captures] == [(T0 + 5 * MIN, 10), (T0 + DAY + 5 * MIN, 10)]
    meter = w.lic.meter("alpha", "ann", "ACAD")
    assert meter is not None and meter.window_start == T0 + DAY


def test_m5_renewal_without_tokens_ends_every_session_of_the_meter() -> None:
    w = World()
    w.buy("alpha", 15)
    w.access.grant("ann", "alpha", "MAYA")
    a = w.entitle(product="MAYA", version="2024")
    b = w.entitle(product="MAYA", version="2025")
    w.advance(HOUR)
    w.heartbeat(a, 0)
    w.idle(b)  # idle sessions end too
    w.advance(to=T0 + DAY - MIN)
    w.heartbeat(a, 0)
    w.heartbeat(b, seconds=10**6)  # still idle; lease extended
    assert b.state is SessionState.IDLE
    w.advance(to=T0 + DAY)
    for s in (a, b):
        assert s.end_reason is EndReason.INSUFFICIENT_TOKENS and s.end_time == T0 + DAY
    assert w.charged() == 8 and w.held() == 0
    # The product learns it from its next heartbeat.
    assert w.heartbeat(a).state is SessionState.ENDED


def test_m5_idle_at_exactly_the_window_end_does_not_renew(w: World) -> None:
    """The idle deadline is pushed lazily, so the window's end pops first at
    that instant; the meter is still not in use then."""
    s = w.entitle(product="MAYA")
    while w.now < T0 + 23 * HOUR + 40 * MIN:
        w.advance(10 * MIN)
        w.heartbeat(s, 0)
    w.advance(10 * MIN)
    w.heartbeat(s, seconds=5 * 60)  # last activity 23:45: idle at exactly 24:00
    w.advance(to=T0 + DAY + HOUR)
    assert s.state is SessionState.IDLE and s.state_since == T0 + DAY
    assert len(w.entries(EntryKind.HOLD)) == 1 and w.held() == 0


def test_m5_meter_not_in_use_at_window_end_costs_nothing(w: World) -> None:
    s = w.entitle(product="MAYA")
    w.advance(HOUR)
    w.idle(s)
    w.advance(to=T0 + DAY + HOUR)
    assert len(w.entries(EntryKind.HOLD)) == 1 and w.charged() == 8
    assert w.lic.session_view(s, w.now).charge_state is ChargeState.NONE


# -- M6: idle ----------------------------------------------------------------------


def test_m6_idle_15_minutes_after_last_activity(w: World) -> None:
    s = w.entitle(product="MAYA")
    w.advance(10 * MIN)
    w.heartbeat(s, seconds=2 * 60)  # active 8 minutes after the start
    w.advance(to=T0 + 23 * MIN - SEC)
    assert s.state is SessionState.ACTIVE
    w.advance(to=T0 + 23 * MIN)
    assert s.state is SessionState.IDLE and s.state_since == T0 + 23 * MIN


def test_m6_entitle_counts_as_activity_and_old_reports_do_not_go_back(w: World) -> None:
    s = w.entitle(product="MAYA")
    w.advance(5 * MIN)
    w.heartbeat(s, seconds=3600)  # "an hour ago": before the session began
    assert s.last_activity == T0
    w.advance(to=T0 + 15 * MIN)
    assert s.state is SessionState.IDLE


def test_m6_idle_call_and_resume_with_new_grace(w: World) -> None:
    s = w.entitle(product="MAYA")
    w.advance(2 * MIN)
    w.idle(s)
    w.advance(10 * MIN)
    w.heartbeat(s, seconds=5 * 60)  # activity at 7 min: after it went idle at 2 min
    assert s.state is SessionState.ACTIVE and s.state_since == T0 + 12 * MIN
    view = w.lic.session_view(s, w.now)
    assert view.charge_state is ChargeState.GRACE and view.grace_end_time == T0 + 17 * MIN
    w.advance(5 * MIN)
    assert w.charged() == 8


def test_m6_older_activity_does_not_resume(w: World) -> None:
    s = w.entitle(product="MAYA")
    w.advance(2 * MIN)
    w.heartbeat(s, 0)
    w.idle(s)
    w.advance(5 * MIN)
    w.heartbeat(s, seconds=6 * 60)  # 1 min: before it went idle
    assert s.state is SessionState.IDLE and w.held() == 0


def test_m6_lapsed_activity_does_not_resume(w: World) -> None:
    """Decision: activity newer than the idle moment but already 15 minutes old
    changes nothing (it would go idle again at once)."""
    s = w.entitle(product="MAYA")
    w.idle(s)
    w.advance(40 * MIN)
    w.heartbeat(s, seconds=20 * 60)
    assert s.state is SessionState.IDLE and w.held() == 0 and s.last_activity == T0 + 20 * MIN


def test_m6_resume_within_a_window_costs_nothing(w: World) -> None:
    s = w.entitle(product="MAYA")
    w.advance(HOUR)
    assert s.state is SessionState.IDLE and w.charged() == 8
    w.heartbeat(s, 0)
    assert s.state is SessionState.ACTIVE
    assert len(w.entries(EntryKind.HOLD)) == 1
    assert w.lic.session_view(s, w.now).charge_state is ChargeState.CHARGED


def test_m6_idle_across_a_window_end(w: World) -> None:
    s = w.entitle(product="MAYA")
    w.advance(to=T0 + 23 * HOUR)
    w.heartbeat(s, 0)  # resumes (it went idle at 15 min) inside the window
    w.idle(s)
    w.advance(to=T0 + DAY + 2 * HOUR)
    assert len(w.entries(EntryKind.HOLD)) == 1  # idle at the window's end: no renewal
    w.heartbeat(s, 0)
    holds = w.entries(EntryKind.HOLD)
    assert [e.time for e in holds] == [T0, T0 + DAY + 2 * HOUR]
    w.advance(5 * MIN)
    assert w.charged() == 16
    meter = w.lic.meter("alpha", "ann", "MAYA")
    assert meter is not None and meter.window_start == T0 + DAY + 2 * HOUR


def test_m6_resume_without_tokens_ends_the_session() -> None:
    w = World()
    w.buy("alpha", 8)
    w.access.grant("ann", "alpha", "MAYA")
    w.access.grant("bob", "alpha", "ACAD")
    s = w.entitle(product="MAYA")
    w.idle(s)  # within grace: released
    w.buy("alpha", 2)
    w.entitle(user="bob")  # takes 10 of the 10
    w.advance(MIN)
    w.heartbeat(s, 0)
    assert s.state is SessionState.ENDED and s.end_reason is EndReason.INSUFFICIENT_TOKENS


def test_m6_idle_not_supported_and_reports_ignored(w: World) -> None:
    s = w.entitle()
    with pytest.raises(IdleNotSupported):
        w.idle(s)
    w.advance(HOUR)
    w.heartbeat(s, seconds=3600)
    assert s.state is SessionState.ACTIVE and s.last_activity == T0


def _idle_aware(w: World, product_id: str, aware: bool) -> None:
    """The operator's UpsertProduct turning ``product_id``'s idle awareness on or off."""
    w.products[product_id] = dataclasses.replace(w.products[product_id], idle_aware=aware)
    w._run(w.lic.idle_awareness_changed, product_id)


def test_m6_a_product_that_stops_being_idle_aware_resumes_its_idle_sessions(w: World) -> None:
    """M6 with P1: without idle awareness no report could wake an idle session, so
    it would run unpaid until its lease ends. It resumes when the rate sheet
    changes, with a new grace (M2), and later reports are ignored."""
    s = w.entitle(product="MAYA")
    w.advance(2 * MIN)
    w.idle(s)
    w.advance(10 * MIN)
    _idle_aware(w, "MAYA", aware=False)
    assert s.state is SessionState.ACTIVE and s.state_since == T0 + 12 * MIN
    view = w.lic.session_view(s, w.now)
    assert view.charge_state is ChargeState.GRACE and view.grace_end_time == T0 + 17 * MIN
    w.advance(5 * MIN)
    assert w.charged() == 8
    w.heartbeat(s, seconds=3600)  # ignored now
    w.advance(HOUR)
    assert s.state is SessionState.ACTIVE


def test_m6_a_product_that_becomes_idle_aware_counts_activity_from_then(w: World) -> None:
    """M6 with P1: activity reports were ignored until the change, so the 15 minutes
    count from it, not from the Entitle an hour before."""
    s = w.entitle()  # ACAD: not idle-aware
    w.advance(HOUR)
    _idle_aware(w, "ACAD", aware=True)
    assert s.last_activity == T0 + HOUR
    w.advance(to=T0 + HOUR + 15 * MIN - SEC)
    assert s.state is SessionState.ACTIVE
    w.advance(to=T0 + HOUR + 15 * MIN)
    assert s.state is SessionState.IDLE and s.state_since == T0 + HOUR + 15 * MIN


def test_m6_negative_seconds_is_invalid_and_huge_ones_mean_before_the_start(w: World) -> None:
    s = w.entitle(product="MAYA")
    with pytest.raises(InvalidArgument) as e:
        w.heartbeat(s, seconds=-1)
    assert set(e.value.violations) == {"seconds_since_activity"}
    w.advance(MIN)
    w.heartbeat(s, seconds=2**63 - 1)
    assert s.last_activity == T0 and s.lease_end == T0 + MIN + DAY


def test_m6_active_time_is_recorded(w: World) -> None:
    s = w.entitle(product="MAYA")
    w.advance(20 * MIN)  # idle at 15
    w.heartbeat(s, 0)  # active from 20
    w.advance(2 * MIN)
    w.release(s)
    spans = [(x.start, x.end) for x in w.spans()]
    assert spans == [(T0, T0 + 15 * MIN), (T0 + 20 * MIN, T0 + 22 * MIN)]


# -- M7: lease --------------------------------------------------------------------------


def test_m7_lease_expires_exactly_24_hours_after_the_last_heartbeat(w: World) -> None:
    s = w.entitle()
    w.advance(3 * HOUR)
    w.heartbeat(s)
    assert w.lic.session_view(s, w.now).lease_expire_time == T0 + 27 * HOUR
    w.advance(to=T0 + 27 * HOUR - SEC)
    assert s.live
    w.advance(to=T0 + 27 * HOUR)
    assert s.end_reason is EndReason.LEASE_EXPIRED and s.end_time == T0 + 27 * HOUR


def test_m7_heartbeats_push_no_deadlines(w: World) -> None:
    s = w.entitle(product="MAYA")
    size = len(w.heap)
    for _ in range(50):
        w.advance(MIN)
        w.heartbeat(s, 0)
    assert len(w.heap) <= size + 1  # only the grace's capture scheduled the window end


# -- M8, M9: devices ---------------------------------------------------------------------


def test_m8_fourth_device_refused_and_nothing_registered(w: World) -> None:
    for d in ("d1", "d2", "d3"):
        w.release(w.entitle(device=d))
    with pytest.raises(DeviceLimit) as e:
        w.entitle(device="d4")
    assert e.value.metadata["limit"] == "3"
    assert "already registered on 3 devices;" in str(e.value)
    assert [d.device_id for d in w.lic.devices("ann", "ACAD")] == ["d1", "d2", "d3"]
    w.entitle(device="d2")  # a registered one is fine
    changes = w.changes()
    w.lic.remove_device("ann", "ACAD", "d1", w.now, changes, w.heap)
    assert w.entitle(device="d4", takeover=True).live


# -- M13: the session cap -------------------------------------------------------------

CAP = DEFAULT_TERMS.sessions_per_product


def test_m13_cap_is_ten() -> None:
    assert CAP == 10


def test_m13_one_more_live_session_than_the_cap_is_refused(w: World) -> None:
    """Issue 12, point 3: one key opened 4,219 sessions, a new version each time."""
    first = [w.entitle(version=str(2016 + i), request_id=f"r{i}") for i in range(CAP)]
    items = len(w.items)
    with pytest.raises(SessionLimit) as e:
        w.entitle(version="2030")
    assert e.value.reason == "SESSION_LIMIT"
    assert e.value.metadata == {"session_limit": "10", "product_id": "ACAD"}
    assert len(w.items) == items  # a refused Entitle changes nothing
    assert w.entitle(version="2025", request_id="r9") is first[-1]  # M11 still answers
    w.entitle(product="MAYA")  # another product has its own cap
    w.release(first[3])  # frees its place at once
    assert w.entitle(version="2030").live
    with pytest.raises(SessionLimit):
        w.entitle(version="2031")


def test_m13_an_expired_session_frees_its_place(w: World) -> None:
    sessions = [w.entitle(version=str(2016 + i)) for i in range(CAP)]
    w.advance(12 * HOUR)
    for s in sessions[1:]:
        w.heartbeat(s)
    w.advance(12 * HOUR)  # the first one's lease has ended
    assert sessions[0].end_reason is EndReason.LEASE_EXPIRED
    assert w.entitle(version="2030").live


def test_m13_counts_every_team_together() -> None:
    w = two_teams()
    w.buy("alpha", 100)
    w.buy("beta", 100)
    # Covered, so the preference is honoured each time (C3: no meter to share).
    w.coverage.subs.append(FakeSub("ann", "ACAD", "SUBSCRIPTION", T0, T0 + DAY))
    for i in range(CAP):
        w.entitle(version=str(2016 + i), team=("alpha", "beta")[i % 2])
    assert {s.team_id for s in w.lic.sessions_of_user("ann", "ACAD")} == {"alpha", "beta"}
    with pytest.raises(SessionLimit):
        w.entitle(team="beta")


def test_m13_comes_after_m9_and_a_takeover_does_not_count_what_it_ends(w: World) -> None:
    for i in range(CAP):
        w.entitle(device="d1", version=str(2016 + i))
    with pytest.raises(RunningElsewhere):
        w.entitle(device="d2")
    moved = w.entitle(device="d2", takeover=True)
    assert w.lic.sessions_of_user("ann", "ACAD") == [moved]


def test_m13_comes_before_payment() -> None:
    w = World()
    w.access.grant("ann", "alpha", "MAYA")
    w.buy("alpha", 8)  # one day of MAYA: the meter holds it once for every session
    sessions = [w.entitle(product="MAYA", version=str(2016 + i)) for i in range(CAP)]
    w.advance(5 * MIN)  # captured: a window until T0 + 24 h, no tokens left
    for s in sessions:
        w.idle(s)
    w.advance(23 * HOUR)
    for s in sessions:
        w.heartbeat(s, seconds=23 * 3600)  # the lease goes on, the session stays idle
    w.advance(2 * HOUR)  # the window has closed: one more session would need tokens
    assert w.available() == 0 and all(s.live for s in sessions)
    with pytest.raises(SessionLimit):
        w.entitle(product="MAYA", version="2030")
    w.release(sessions[0])
    with pytest.raises(InsufficientTokens):
        w.entitle(product="MAYA", version="2030")


def test_m9_running_elsewhere(w: World) -> None:
    s = w.entitle(device="d1")
    with pytest.raises(RunningElsewhere) as e:
        w.entitle(device="d2")
    assert e.value.metadata["device_id"] == "d1"
    assert s.live and [d.device_id for d in w.lic.devices("ann", "ACAD")] == ["d1"]
    assert w.entitle(device="d1", version="2024").live  # same device: fine


def test_m9_takeover_keeps_the_meter_in_use(w: World) -> None:
    old = w.entitle(device="d1")
    w.advance(2 * MIN)
    new = w.entitle(device="d2", takeover=True)
    assert old.end_reason is EndReason.TAKEN_OVER and old.end_time == T0 + 2 * MIN
    assert new.state is SessionState.ACTIVE
    assert w.entries(EntryKind.HOLD_RELEASE) == [] and w.held() == 10
    w.advance(3 * MIN)
    assert w.charged() == 10 and len(w.entries(EntryKind.HOLD)) == 1
    assert w.heartbeat(old).end_reason is EndReason.TAKEN_OVER
    running = {d.device_id: d.running for d in w.lic.devices("ann", "ACAD")}
    assert running == {"d1": False, "d2": True}


def test_m9_refused_takeover_revokes_nothing() -> None:
    w = World()
    w.buy("alpha", 10)
    w.access.grant("ann", "alpha", "MAYA")
    w.access.grant("bob", "alpha", "ACAD")
    first = w.entitle(device="d1", product="MAYA")
    w.idle(first)  # within grace: released, 10 available again
    w.entitle(user="bob")  # takes all 10
    with pytest.raises(InsufficientTokens):
        w.entitle(device="d2", product="MAYA", takeover=True)
    assert first.live and [d.device_id for d in w.lic.devices("ann", "MAYA")] == ["d1"]


# -- M10-M12 ------------------------------------------------------------------------------


def test_m10_release_twice_returns_the_same_ended_session(w: World) -> None:
    s = w.entitle()
    w.advance(10 * MIN)
    first = w.release(s)
    w.advance(MIN)
    second = w.release(s)
    assert second is first and second.end_time == T0 + 10 * MIN
    assert not w.last_changes
    assert w.charged() == 10 and w.entries(EntryKind.HOLD_RELEASE) == []


def test_m11_repeated_request_id_returns_the_earlier_session(w: World) -> None:
    s = w.entitle(request_id="req-1")
    w.advance(MIN)
    again = w.entitle(request_id="req-1")
    assert again is s and not w.last_changes and len(w.entries(EntryKind.HOLD)) == 1
    w.release(s)
    assert w.entitle(request_id="req-1") is s  # its current state: ended
    other = w.entitle(user="bob", request_id="req-1")  # another user's key space
    assert other is not s
    with pytest.raises(AlreadyExists):
        w.entitle(request_id="req-1", product="MAYA")


def test_m11_p4_a_plugins_request_id_repeated_on_another_host_is_already_exists(
    w: World,
) -> None:
    """The host session is part of what a plugin's Entitle asks for: a repeat naming
    another host, or none that lives, is not the same request (never the first
    plugin, still on the first host), while the same host is the first answer."""
    first_host = w.entitle(device="d1", version="2025")
    plug = w.entitle(product="PLUG", device="d1", parent=first_host.session_id, request_id="p-1")
    second_host = w.entitle(device="d1", version="2026")
    for parent in (second_host.session_id, "se_no_such_host"):
        with pytest.raises(AlreadyExists) as refused:
            w.entitle(product="PLUG", device="d1", parent=parent, request_id="p-1")
        assert refused.value.metadata["session_id"] == plug.session_id
        assert first_host.session_id in str(refused.value)
    holds = len(w.entries(EntryKind.HOLD))
    again = w.entitle(product="PLUG", device="d1", parent=first_host.session_id, request_id="p-1")
    assert again is plug and len(w.entries(EntryKind.HOLD)) == holds


def test_m11_repeats_are_found_on_a_device_with_its_most_sessions(w: World) -> None:
    """A live session is found by its request id in its device's set (M13: at
    most 10, past 8 a dict); an ended one in the index of ended sessions."""
    first = [w.entitle(version=f"2025.{i}", request_id=f"req-{i}") for i in range(9)]
    bare = w.entitle(version="2025.99")  # no request id
    holds = len(w.entries(EntryKind.HOLD))
    device = w.lic.devices("ann", "ACAD")[0]
    assert isinstance(device.live, dict) and len(device.sessions()) == 10
    for i, s in enumerate(first):
        assert w.entitle(version=f"2025.{i}", request_id=f"req-{i}") is s
    assert len(w.entries(EntryKind.HOLD)) == holds and len(device.sessions()) == 10
    for s in first[:5]:
        w.release(s)
    assert device.sessions() == (*first[5:], bare)
    for i, s in enumerate(first):  # ended or live, each is its Entitle's answer
        assert w.entitle(version=f"2025.{i}", request_id=f"req-{i}") is s
    assert w.entitle(user="bob", request_id="req-3") not in first  # bob's own key space
    assert len(device.sessions()) == 5


def test_m12_ended_sessions_answer_and_never_revive(w: World) -> None:
    s = w.entitle(product="MAYA")
    w.release(s)
    w.advance(MIN)
    for act in (lambda: w.heartbeat(s, 0), lambda: w.idle(s), lambda: w.release(s)):
        got = act()
        assert got.state is SessionState.ENDED and got.end_reason is EndReason.RELEASED
        assert not w.last_changes
    assert w.lic.session_view(s, w.now).lease_expire_time is None


def test_m12_a_session_belongs_to_its_user(w: World) -> None:
    s = w.entitle()
    for act in (
        lambda: w.heartbeat(s, 0, user="bob"),
        lambda: w.release(s, user="bob"),
        lambda: w.lic.idle("bob", s.session_id, w.now, Changes(), w.heap),
        lambda: w.lic.heartbeat("ann", "se_missing", 0, w.now, Changes(), w.heap),
    ):
        with pytest.raises(UnknownSession) as e:
            act()
        assert e.value.reason == "UNKNOWN_SESSION"
    assert s.state is SessionState.ACTIVE


# -- P1, P4: free products and plugins -------------------------------------------------------


def test_p1_rate_zero_is_free(w: World) -> None:
    s = w.entitle(product="FREE")
    w.advance(2 * DAY)
    assert s.coverage is Coverage.FREE and w.entries(EntryKind.HOLD) == []
    assert w.lic.session_view(s, w.now).charge_state is ChargeState.NONE


def test_p4_plugin_needs_a_live_host_of_the_same_user_on_the_same_device(w: World) -> None:
    host = w.entitle(device="d1")
    bobs = w.entitle(user="bob", device="d1")
    for parent, device in (("", "d1"), (host.session_id, "d2"), (bobs.session_id, "d1")):
        with pytest.raises(HostSessionRequired):
            w.entitle(product="PLUG", device=device, parent=parent)
    maya = w.entitle(product="MAYA", device="d1")
    with pytest.raises(HostSessionRequired):
        w.entitle(product="PLUG", device="d1", parent=maya.session_id)  # not its host
    w.idle(maya)
    plug = w.entitle(product="PLUG", device="d1", parent=host.session_id)
    assert plug.parent_session_id == host.session_id
    w.release(host)
    with pytest.raises(HostSessionRequired):
        w.entitle(product="PLUG", device="d1", parent=host.session_id)


def test_p4_plugin_metered_on_its_own_and_ended_with_its_host(w: World) -> None:
    host = w.entitle(device="d1")
    plug = w.entitle(product="PLUG", device="d1", parent=host.session_id)
    assert w.held() == 13
    w.advance(10 * MIN)
    assert w.charged() == 13
    w.release(host)
    assert plug.end_reason is EndReason.HOST_ENDED and plug.end_time == w.now


def test_p4_idle_host_keeps_plugins_and_takeover_ends_them(w: World) -> None:
    host = w.entitle(product="MAYA", device="d1")
    plug = w.entitle(product="FPLUG", device="d1", parent=host.session_id)
    assert plug.coverage is Coverage.FREE
    w.advance(HOUR)
    assert host.state is SessionState.IDLE and plug.live
    w.entitle(product="MAYA", device="d2", takeover=True)
    assert host.end_reason is EndReason.TAKEN_OVER
    assert plug.end_reason is EndReason.HOST_ENDED


# -- C1-C3: who pays ---------------------------------------------------------------------------


def test_c1_subscription_consumes_no_tokens(w: World) -> None:
    w.coverage.subs.append(FakeSub("ann", "ACAD", "SUBSCRIPTION", T0 - DAY, T0 + 30 * DAY))
    w.coverage.subs.append(FakeSub("ann", "ACAD", "TRIAL", T0 - DAY, T0 + 60 * DAY))
    s = w.entitle()
    w.advance(3 * DAY)
    assert s.coverage is Coverage.SUBSCRIPTION and w.entries(EntryKind.HOLD) == []


def test_c2_trial_ending_mid_session_starts_grace_then(w: World) -> None:
    w.coverage.subs.append(FakeSub("ann", "ACAD", "TRIAL", T0 - DAY, T0 + 2 * HOUR))
    s = w.entitle()
    assert s.coverage is Coverage.TRIAL and w.held() == 0
    w.advance(to=T0 + 2 * HOUR)
    assert s.coverage is Coverage.TOKENS and w.held() == 10
    assert [e.time for e in w.entries(EntryKind.HOLD)] == [T0 + 2 * HOUR]
    w.advance(to=T0 + 2 * HOUR + 5 * MIN - SEC)
    assert w.charged() == 0
    w.advance(SEC)
    assert w.charged() == 10
    w.heartbeat(s)
    w.advance(to=T0 + 2 * HOUR + DAY)  # renewal from when the tokens began
    assert w.held() == 10


def test_c2_trial_ending_without_tokens_ends_the_sessions() -> None:
    w = World()
    w.access.grant("ann", "alpha", "ACAD")
    w.coverage.subs.append(FakeSub("ann", "ACAD", "TRIAL", T0, T0 + HOUR))
    s = w.entitle()
    w.advance(2 * HOUR)
    assert s.end_reason is EndReason.INSUFFICIENT_TOKENS and s.end_time == T0 + HOUR


def test_c2_trial_ending_while_idle_costs_nothing_until_resumed(w: World) -> None:
    w.coverage.subs.append(FakeSub("ann", "MAYA", "TRIAL", T0, T0 + HOUR))
    s = w.entitle(product="MAYA")
    w.advance(2 * HOUR)
    assert s.state is SessionState.IDLE and s.coverage is Coverage.TOKENS and w.held() == 0
    w.heartbeat(s, 0)
    assert w.held() == 8


def test_c2_coverage_starting_mid_session_releases_the_hold(w: World) -> None:
    w.coverage.subs.append(FakeSub("ann", "ACAD", "SUBSCRIPTION", T0 + 2 * MIN, T0 + DAY))
    s = w.entitle()
    assert w.held() == 10
    w.advance(3 * MIN)
    assert s.coverage is Coverage.SUBSCRIPTION and w.held() == 0 and w.charged() == 0


def test_c2_granted_while_running_applies_at_once(w: World) -> None:
    s = w.entitle()
    w.advance(MIN)
    w.coverage.subs.append(FakeSub("ann", "ACAD", "SUBSCRIPTION", w.now, T0 + HOUR))
    changes = w.changes()
    w.lic.coverage_changed("ann", "ACAD", w.now, changes, w.heap)
    assert s.coverage is Coverage.SUBSCRIPTION and w.held() == 0
    w.advance(to=T0 + HOUR)
    assert s.coverage is Coverage.TOKENS and w.held() == 10


def test_c3_preferred_team_is_honoured() -> None:
    w = two_teams()
    w.buy("alpha", 50)
    w.buy("beta", 50)
    s = w.entitle(team="beta")
    assert s.team_id == "beta" and s.plan is Plan.PREMIUM
    assert w.entitle(product="MAYA", team="gamma").team_id == "alpha"  # no access there


def test_c3_team_whose_tokens_expire_soonest() -> None:
    w = two_teams()
    w.buy("beta", 50)
    w.now += DAY
    w.buy("alpha", 50)
    assert w.entitle().team_id == "beta"


def test_c3_ties_by_team_id_and_only_teams_that_can_pay() -> None:
    w = two_teams()
    w.buy("alpha", 5)
    w.buy("beta", 50)
    assert w.entitle().team_id == "beta"  # alpha cannot pay 10
    w2 = two_teams()
    w2.buy("alpha", 50)
    w2.buy("beta", 50)
    assert w2.entitle().team_id == "alpha"


def test_c3_open_window_wins() -> None:
    w = two_teams()
    w.buy("alpha", 50)
    w.buy("beta", 50)
    s = w.entitle(team="beta")
    w.advance(10 * MIN)
    w.release(s)
    assert w.entitle(device="d2").team_id == "beta"  # alpha's tokens are no sooner to expire


def test_c3_preferred_team_yields_to_an_open_window_elsewhere() -> None:
    w = two_teams()
    w.buy("alpha", 50)
    w.buy("beta", 50)
    s = w.entitle(team="alpha")
    w.advance(5 * MIN)  # grace over: alpha charged, its window open for 24 hours
    w.release(s)
    assert w.charged("alpha") == 10
    again = w.entitle(team="beta")
    assert again.team_id == "alpha"
    assert w.held("beta") == 0 and w.available("beta") == 50 and w.charged("beta") == 0
    w.release(again)
    w.advance(to=T0 + DAY)  # alpha's window has closed
    assert w.entitle(team="beta").team_id == "beta"
    assert w.held("beta") == 10 and w.charged("alpha") == 10


def test_c3_preferred_team_yields_to_grace_elsewhere() -> None:
    w = two_teams()
    w.buy("alpha", 50)
    w.buy("beta", 50)
    w.entitle(team="alpha")
    w.advance(MIN)  # still in grace in alpha
    assert w.entitle(team="beta").team_id == "alpha"
    assert w.held("beta") == 0 and w.held("alpha") == 10


def test_c3_sessions_in_two_teams_pay_once_when_their_trial_ends() -> None:
    """C3: "a named user pays a product's rate once per 24 hours whichever teams they
    belong to". Under a trial Ann runs ACAD twice, once in each team (nothing binds
    her to one: no meter is paying). At the trial's end tokens pay, once: alpha's
    meter holds (the first team), beta's session rides on it."""
    w = two_teams()
    w.buy("alpha", 50)
    w.buy("beta", 50)
    w.coverage.subs.append(FakeSub("ann", "ACAD", "TRIAL", T0, T0 + 2 * HOUR))
    a = w.entitle(team="alpha", version="2026")
    b = w.entitle(team="beta", version="2025")
    assert (a.team_id, b.team_id) == ("alpha", "beta")
    w.advance(2 * HOUR + 10 * MIN)
    assert (w.charged("alpha"), w.charged("beta"), w.held("beta")) == (10, 0, 0)
    assert a.coverage is b.coverage is Coverage.TOKENS and a.live and b.live
    view = w.lic.session_view(b, w.now)  # beta's session says what pays for it
    assert view.charge_state is ChargeState.CHARGED
    assert view.window_end_time == T0 + 2 * HOUR + DAY
    w.heartbeat(a)
    w.heartbeat(b)
    w.advance(to=T0 + 2 * HOUR + DAY + 10 * MIN)  # the renewal: once again
    assert (w.charged("alpha"), w.charged("beta")) == (20, 0)


def test_c3_a_session_resumed_in_one_team_rides_on_the_grace_of_another() -> None:
    """C3 with M6: Ann's MAYA in alpha goes idle in its grace (the hold goes back);
    she opens MAYA in beta, which holds; the alpha session resumes: beta's grace pays
    for it, and when beta's session goes idle in turn, alpha holds from then. One
    capture in all."""
    w = two_teams()
    w.buy("alpha", 50)
    w.buy("beta", 50)
    a = w.entitle(product="MAYA", team="alpha", version="2026")
    w.advance(MIN)
    w.idle(a)
    assert w.held("alpha") == 0
    b = w.entitle(product="MAYA", team="beta", version="2025")
    assert b.team_id == "beta" and w.held("beta") == 8  # MAYA: 8 a day
    w.advance(MIN)
    w.heartbeat(a)  # activity: resumes, on beta's grace
    assert a.state is SessionState.ACTIVE and w.held("alpha") == 0
    w.advance(MIN)
    w.idle(b)  # beta's grace broken: its hold goes back, alpha's session pays now
    assert w.held("beta") == 0 and w.held("alpha") == 8
    w.advance(10 * MIN)
    assert (w.charged("alpha"), w.charged("beta")) == (8, 0)


def test_c3_m3_a_grace_handed_to_another_team_goes_on_from_when_it_began() -> None:
    """M3's 5 minutes of unbroken use are the user's, not a team's: Ann's ACAD runs in
    alpha and in beta; at the trial's end alpha holds; she closes alpha's at 4 minutes,
    so beta's session pays now, but its grace ends when alpha's would have, and 8
    minutes of use are charged once (not handed on forever, never charged)."""
    w, a, b = acad_in_both_teams(50, 50)
    w.advance(to=T0 + HOUR + 4 * MIN)
    w.release(a)
    assert (w.held("alpha"), w.held("beta")) == (0, 10)
    assert w.lic.session_view(b, w.now).grace_end_time == T0 + HOUR + 5 * MIN
    w.advance(to=T0 + HOUR + 8 * MIN)
    w.release(b)
    w.advance(HOUR)
    assert (w.charged("alpha"), w.charged("beta")) == (0, 10)
    (capture,) = w.entries(EntryKind.CAPTURE)
    assert capture.time == T0 + HOUR + 5 * MIN


def test_c3_m2_an_entitle_riding_on_another_teams_window_needs_no_tokens() -> None:
    """M2 with C3: an Entitle needs the daily rate available only if it must hold.
    Ann's beta session rides on alpha's open window; she leaves alpha (its window
    stays paid), and a new Entitle in beta, which has no tokens, rides too."""
    w = two_teams()
    w.buy("alpha", 50)
    w.coverage.subs.append(FakeSub("ann", "ACAD", "TRIAL", T0, T0 + HOUR))
    w.entitle(team="alpha", version="2026")
    b = w.entitle(team="beta", version="2025")
    w.advance(to=T0 + HOUR + 10 * MIN)  # alpha held and captured: its window is open
    w.access.revoke("ann", "alpha", "ACAD")
    w._run(w.lic.revoke_access, "alpha", "ann", ["ACAD"])  # A6
    assert b.live
    c = w.entitle(team="beta", version="2027")
    assert (c.team_id, c.live, w.held("beta")) == ("beta", True, 0)
    assert w.lic.session_view(c, w.now).charge_state is ChargeState.CHARGED


def test_c3_m6_a_rider_idle_at_the_paying_windows_end_goes_idle_not_charged() -> None:
    """Deadlines of one instant: alpha's window ends at the very instant Ann's MAYA in
    beta, riding on it, reaches its idle instant (M6), and alpha's own session is
    idle. The rider goes idle then; beta, with no tokens, holds nothing and ends
    nothing (it would have been ended INSUFFICIENT_TOKENS had the window's end come
    first)."""
    w = two_teams()
    w.buy("alpha", 50)
    w.coverage.subs.append(FakeSub("ann", "MAYA", "TRIAL", T0, T0 + HOUR))
    a = w.entitle(product="MAYA", team="alpha", version="2026")
    b = w.entitle(product="MAYA", team="beta", version="2025")
    window_end = T0 + HOUR + DAY  # alpha holds at the trial's end; b rides
    stop = window_end - 15 * MIN  # b's last activity: idle at the window's end
    while w.now + 10 * MIN <= stop:
        w.advance(10 * MIN)
        w.heartbeat(a)
        w.heartbeat(b)
    w.advance(to=stop)
    w.heartbeat(a)
    w.heartbeat(b)
    w.idle(a)
    w.advance(to=window_end + MIN)
    assert (b.state, b.end_reason) == (SessionState.IDLE, None)
    assert (w.charged("alpha"), w.charged("beta")) == (8, 0)
    assert [e for e in w.entries() if e.team_id == "beta"] == []


def test_c3_nobody_can_pay_names_the_first_team() -> None:
    w = two_teams()
    w.buy("alpha", 3)
    w.buy("beta", 4)
    with pytest.raises(InsufficientTokens) as e:
        w.entitle()
    assert e.value.metadata == {"team_id": "alpha", "available": "3", "daily_rate": "10"}


def test_c3_covered_user_runs_under_the_first_team() -> None:
    w = two_teams()
    w.coverage.subs.append(FakeSub("ann", "ACAD", "TRIAL", T0, T0 + DAY))
    assert w.entitle().team_id == "alpha"


def test_c3_plugin_prefers_its_host_team() -> None:
    w = two_teams()
    w.buy("alpha", 50)
    w.buy("beta", 50)
    host = w.entitle(team="beta")
    assert w.entitle(product="PLUG", parent=host.session_id).team_id == "beta"


def test_c3_a_plugin_whose_host_team_cannot_pay_runs_where_a_team_can() -> None:
    """C3 orders the teams by who can pay; the host's team goes first only when it
    can (the plugin was refused INSUFFICIENT_TOKENS in alpha while beta could pay)."""
    w = two_teams()
    w.buy("alpha", 10)
    w.buy("beta", 100)
    host = w.entitle()  # holds alpha's 10
    assert host.team_id == "alpha" and w.available("alpha") == 0
    plug = w.entitle(product="PLUG", parent=host.session_id)
    assert plug.team_id == "beta" and w.held("beta") == 3


def test_c3_a_covered_session_runs_where_a_window_is_open() -> None:
    """Once per 24 hours whatever the teams: a session opened under a subscription
    runs where the user's window is open, so when the subscription ends it goes on
    under that window (C2), not a new grace and a second charge in the first team."""
    w = two_teams()
    w.buy("alpha", 50)
    w.buy("beta", 50)
    first = w.entitle(product="MAYA", team="beta")
    w.advance(5 * MIN)  # beta charged: its window is open for 24 hours
    w.release(first)
    w.coverage.subs.append(FakeSub("ann", "MAYA", "SUBSCRIPTION", T0 + HOUR, T0 + 3 * HOUR))
    w.advance(to=T0 + 90 * MIN)
    covered = w.entitle(product="MAYA")
    assert covered.team_id == "beta" and covered.coverage is Coverage.SUBSCRIPTION
    w.advance(to=T0 + 3 * HOUR + 10 * MIN)  # the subscription has ended
    assert covered.live and covered.coverage is Coverage.TOKENS
    assert w.charged() == 8 and w.held() == 0 and w.held("beta") == 0


def test_c3_a_covered_session_runs_in_a_team_that_can_pay_when_the_trial_ends() -> None:
    """Under a trial every team is covered; the session is placed where it can go on
    under tokens when the trial ends (C2), not in the first team, which has none."""
    w = two_teams()
    w.buy("beta", 100)
    w.coverage.subs.append(FakeSub("ann", "ACAD", "TRIAL", T0, T0 + HOUR))
    s = w.entitle()
    assert s.team_id == "beta"
    w.advance(to=T0 + HOUR)
    assert s.live and s.coverage is Coverage.TOKENS and w.held("beta") == 10


def test_c3_c2_at_the_trials_end_a_team_that_can_pay_holds_for_both() -> None:
    """C2 with C3: Ann's ACAD runs in alpha (5 tokens, preferred) and in beta (50)
    under a trial. When it ends the user pays once, by the team C3 chooses among
    those that can: beta holds, and alpha's session rides on beta's grace instead
    of ending INSUFFICIENT_TOKENS because alpha, tried first by id, cannot pay."""
    w, a, b = acad_in_both_teams(5, 50)
    w.advance(to=T0 + HOUR + 10 * MIN)
    assert (a.live, b.live) == (True, True)
    assert (w.charged("alpha"), w.charged("beta")) == (0, 10)
    assert w.lic.session_view(a, w.now).charge_state is ChargeState.CHARGED


def test_c3_m5_a_renewal_goes_to_the_users_team_that_can_pay() -> None:
    """M5 with C3: alpha paid Ann's first day of ACAD (its 10 tokens) while her beta
    session rode on it. At the window's end alpha cannot hold again; beta can: beta
    holds and captures, and both sessions go on (alpha's would have ended
    INSUFFICIENT_TOKENS)."""
    w, a, b = acad_in_both_teams(10, 50)
    w.advance(to=T0 + HOUR + 10 * MIN)  # alpha (first by id, both can pay) charged
    assert (w.charged("alpha"), w.charged("beta")) == (10, 0)
    for _ in range(2):
        w.advance(12 * HOUR)
        w.heartbeat(a)
        w.heartbeat(b)
    assert w.now > T0 + HOUR + DAY + 5 * MIN  # the window closed and the grace is over
    assert (a.live, b.live) == (True, True)
    assert (w.charged("alpha"), w.charged("beta")) == (10, 10)


def test_c3_r2_removing_a_device_ends_the_rider_by_admin_not_for_the_tokens_of_its_team() -> None:
    """Sessions ended together end together: Ann's ACAD in alpha holds at the trial's
    end and her ACAD in beta, which has no tokens, rides on that grace, both on one
    device. Removing the device (end_sessions) ends both ENDED_BY_ADMIN and returns
    both; alpha's hold goes back, and beta is not asked to pay for the instant
    between the two ends (it would have ended INSUFFICIENT_TOKENS, and gone
    missing from the answer)."""
    w, a, b = acad_in_both_teams(50, 0)
    w.advance(to=T0 + HOUR + 2 * MIN)
    assert (w.held("alpha"), w.held("beta")) == (10, 0)
    ended = w._run(w.lic.remove_device, "ann", "ACAD", "d1", end_sessions=True)
    assert ended == [a, b]
    assert (a.end_reason, b.end_reason) == (EndReason.ENDED_BY_ADMIN, EndReason.ENDED_BY_ADMIN)
    assert (w.held("alpha"), w.held("beta")) == (0, 0)
    assert [e for e in w.entries() if e.team_id == "beta"] == []


def test_c3_r2_removing_a_device_does_not_hold_for_a_rider_that_ends_with_it() -> None:
    """As above with tokens in beta: beta holds nothing and releases nothing (no hold
    made and given back at one instant) for a rider ended in the same call."""
    w, a, b = acad_in_both_teams(50, 50)
    w.advance(to=T0 + HOUR + 2 * MIN)
    ended = w._run(w.lic.remove_device, "ann", "ACAD", "d1", end_sessions=True)
    assert ended == [a, b]
    assert [e.kind for e in w.entries() if e.team_id == "beta"] == [EntryKind.PURCHASE]
    assert [e.kind for e in w.entries() if e.team_id == "alpha"] == [
        EntryKind.PURCHASE,
        EntryKind.HOLD,
        EntryKind.HOLD_RELEASE,
    ]


def test_c3_p4_a_hosts_end_ends_its_plugins_in_two_teams_as_host_ended() -> None:
    """P4 with C3: Ann's host runs two PLUG sessions, one in alpha that holds at the
    trial's end and one in beta (no tokens) riding on it. Releasing the host ends
    both HOST_ENDED, and beta pays nothing."""
    w = two_teams()
    w.buy("alpha", 50)
    w.coverage.subs.append(FakeSub("ann", "PLUG", "TRIAL", T0, T0 + HOUR))
    host = w.entitle(team="alpha")
    p1 = w.entitle(product="PLUG", parent=host.session_id, team="alpha")
    p2 = w.entitle(product="PLUG", parent=host.session_id, team="beta", version="2026")
    assert (p1.team_id, p2.team_id) == ("alpha", "beta")
    w.advance(to=T0 + HOUR + 2 * MIN)
    w.release(host)
    assert (p1.end_reason, p2.end_reason) == (EndReason.HOST_ENDED, EndReason.HOST_ENDED)
    assert [e for e in w.entries() if e.team_id == "beta"] == []


def test_c3_p4_sessions_ended_for_tokens_end_with_their_plugins_paying_nothing_more() -> None:
    """M5 with P4 and C3: two ACAD hosts in alpha, whose renewal fails at its window's
    end; their PLUG sessions (one in alpha paying, one in beta riding on it, a trial
    over just before) end with their hosts, HOST_ENDED, and beta, which could pay
    for PLUG, holds and gives back nothing at that instant."""
    w = two_teams()
    w.buy("alpha", 10 + 5)  # ACAD's first day, then enough for PLUG's 3, not ACAD's 10
    w.buy("beta", 3)
    w.coverage.subs.append(FakeSub("ann", "PLUG", "TRIAL", T0, T0 + DAY - 2 * MIN))
    s1 = w.entitle(team="alpha", version="2025")
    s2 = w.entitle(team="alpha", version="2026")
    p1 = w.entitle(product="PLUG", parent=s1.session_id, team="alpha")
    p2 = w.entitle(product="PLUG", parent=s2.session_id, team="beta", version="2026")
    for _ in range(2):
        w.advance(12 * HOUR - 3 * MIN)
        for s in (s1, s2, p1, p2):
            w.heartbeat(s)
    w.advance(to=T0 + DAY)
    assert [s.end_reason for s in (s1, s2)] == [EndReason.INSUFFICIENT_TOKENS] * 2
    assert [s.end_reason for s in (p1, p2)] == [EndReason.HOST_ENDED] * 2
    assert [e.kind for e in w.entries() if e.team_id == "beta"] == [EntryKind.PURCHASE]


def test_c3_m5_none_can_pay_ends_every_team_s_sessions_whatever_the_team_ids() -> None:
    """C3 with M5: when no team of the user's running ACAD can pay at the trial's end
    (alpha 5; beta 7 available, 3 held for a PLUG grace of alpha's host), both ACAD
    sessions end then; beta's hold given back by that end does not leave beta's
    ACAD running and charged beside alpha's ended one."""
    w = two_teams()
    w.buy("alpha", 5)
    w.buy("beta", 10)
    w.coverage.subs.append(FakeSub("ann", "ACAD", "TRIAL", T0, T0 + HOUR))
    w.coverage.subs.append(FakeSub("ann", "PLUG", "TRIAL", T0, T0 + HOUR - 2 * MIN))
    s1 = w.entitle(team="alpha", version="2025")
    s2 = w.entitle(team="beta", version="2026")
    p1 = w.entitle(product="PLUG", parent=s1.session_id, team="beta")
    w.advance(to=T0 + HOUR - MIN)
    assert w.held("beta") == 3  # PLUG's grace from the end of its trial
    w.advance(to=T0 + HOUR)
    assert [s.end_reason for s in (s1, s2)] == [EndReason.INSUFFICIENT_TOKENS] * 2
    assert p1.end_reason is EndReason.HOST_ENDED
    assert (w.held("alpha"), w.held("beta"), w.charged()) == (0, 0, 0)


def test_p4_m5_a_plugin_is_not_renewed_at_the_instant_its_hosts_lease_ends() -> None:
    """P4 with M5 and M7: a host under a subscription and its PLUG start together;
    the plugin heartbeats, the host does not. At the host's lease end, which is also
    the plugin's window end, the host ends and the plugin with it: no renewal hold
    made and given back at that instant."""
    w = World()
    w.buy("alpha", 100)
    w.access.grant("ann", "alpha", "ACAD", "PLUG")
    w.coverage.subs.append(FakeSub("ann", "ACAD", "SUBSCRIPTION", T0, T0 + 400 * DAY))
    host = w.entitle()
    plug = w.entitle(product="PLUG", parent=host.session_id)
    w.advance(to=T0 + 12 * HOUR)
    w.heartbeat(plug)
    w.advance(to=T0 + DAY)
    assert (host.end_reason, plug.end_reason) == (EndReason.LEASE_EXPIRED, EndReason.HOST_ENDED)
    assert [e.kind for e in w.entries()] == [EntryKind.PURCHASE, EntryKind.HOLD, EntryKind.CAPTURE]


# -- A6, R2 ---------------------------------------------------------------------------------------


def test_a6_revoking_access_ends_sessions_without_refund(w: World) -> None:
    acad = w.entitle()
    maya = w.entitle(product="MAYA")
    w.advance(10 * MIN)
    plug = w.entitle(product="PLUG", parent=acad.session_id)
    bobs = w.entitle(user="bob", device="b1")
    changes = w.changes()
    ended = w.lic.revoke_access("alpha", "ann", ["ACAD"], w.now, changes, w.heap)
    assert ended == [acad, plug]
    assert acad.end_reason is EndReason.NOT_ASSIGNED and plug.end_reason is EndReason.HOST_ENDED
    assert maya.live and bobs.live
    assert w.charged() == 18 and [e.amount for e in w.entries(EntryKind.HOLD_RELEASE)] == [3]
    changes = w.changes()
    assert w.lic.revoke_access("alpha", "ann", None, w.now, changes, w.heap) == [maya]


class UnwalkedCatalog(dict[str, object]):
    """The rate sheet, whose products may be looked up but not walked."""

    def __iter__(self) -> Any:
        raise AssertionError("the whole catalog was walked")

    def keys(self) -> Any:
        raise AssertionError("the whole catalog was walked")


def test_a6_taking_every_product_finds_the_users_sessions_from_their_devices() -> None:
    """Taking everything from a user (UnassignUser, a default set cleared for each
    member) ends their sessions in that team found from their few devices, not by
    walking the rate sheet: for each of a team's members it walked every product
    (a default set cleared for 300,000 members held the event loop 4.4 s)."""
    w = two_teams()
    w.buy("alpha", 100)
    w.buy("beta", 100)
    acad = w.entitle(team="alpha")
    maya = w.entitle(product="MAYA", team="alpha", device="d2")
    plug = w.entitle(product="PLUG", parent=acad.session_id, team="alpha")
    w.access.grant("ann", "beta", "FREE")  # hers in beta alone
    kept = w.entitle(product="FREE", team="beta", device="d2")
    w.lic.products = UnwalkedCatalog(w.lic.products)  # type: ignore[assignment]
    # whom a team-wide change must look at: those with a device (the rest run nothing)
    assert w.lic.running(["zed", "ann", "bob"]) == ["ann"]
    assert w.lic.sessions_of_user("ann") == [acad, maya, plug, kept]
    assert w.lic.access_teams("alpha", "ann", None) == {"alpha"}
    assert w.lic.access_teams("beta", "ann", ["ACAD"]) == frozenset()
    assert kept.team_id == "beta"
    changes = w.changes()
    assert w.lic.revoke_access("alpha", "ann", ["MAYA"], w.now, changes, w.heap) == [maya]
    # the plugin lost too first, for that, then its host (``revoke_access``)
    assert w.lic.revoke_access("alpha", "ann", None, w.now, changes, w.heap) == [plug, acad]
    assert [acad.end_reason, plug.end_reason] == [EndReason.NOT_ASSIGNED] * 2
    assert kept.live and w.lic.sessions_of_user("ann") == [kept]


def test_r2_end_session_by_admin(w: World) -> None:
    s = w.entitle()
    changes = w.changes()
    got = w.lic.end_session(s.session_id, EndReason.ENDED_BY_ADMIN, w.now, changes, w.heap)
    assert got.end_reason is EndReason.ENDED_BY_ADMIN and w.held() == 0
    with pytest.raises(UnknownSession):
        w.lic.end_session("nope", EndReason.ENDED_BY_ADMIN, w.now, changes, w.heap)


def test_issue12_h2_14_remove_device_in_use_is_refused_and_changes_nothing(w: World) -> None:
    """Issue 12, point 14: RemoveDevice silently ended running sessions."""
    a = w.entitle(device="d1")
    b = w.entitle(device="d1", version="2026")
    with pytest.raises(DeviceInUse) as e:
        w._run(w.lic.remove_device, "ann", "ACAD", "d1")
    assert e.value.metadata == {"device_id": "d1", "live_sessions": "2"}
    assert w.last_changes == []
    assert a.live and b.live
    assert [d.device_id for d in w.lic.devices("ann", "ACAD")] == ["d1"]


def test_issue12_h2_14_remove_device_with_end_sessions_ends_them_and_says_which(w: World) -> None:
    a = w.entitle(device="d1")
    plug = w.entitle(product="PLUG", device="d1", parent=a.session_id)
    b = w.entitle(device="d1", version="2026")
    ended = w._run(w.lic.remove_device, "ann", "ACAD", "d1", end_sessions=True)
    assert ended == [a, plug, b]
    assert [s.end_reason for s in ended] == [
        EndReason.ENDED_BY_ADMIN,
        EndReason.HOST_ENDED,
        EndReason.ENDED_BY_ADMIN,
    ]
    assert w.lic.devices("ann", "ACAD") == [] and w.held() == 0
    with pytest.raises(InvalidArgument) as e:
        w._run(w.lic.remove_device, "ann", "ACAD", "d1", end_sessions=True)
    assert set(e.value.violations) == {"device_id"}


def test_issue12_h2_14_remove_device_without_live_sessions_needs_no_flag(w: World) -> None:
    w.release(w.entitle(device="d1"))
    assert w._run(w.lic.remove_device, "ann", "ACAD", "d1") == []
    assert w.lic.devices("ann", "ACAD") == []


def test_r2_live_sessions_and_queries(w: World) -> None:
    a = w.entitle()
    b = w.entitle(user="bob", device="b1")
    w.release(b)
    assert list(w.lic.live_sessions("alpha")) == [a]
    assert list(w.lic.all_sessions()) == [a, b]
    assert w.lic.sessions_of_user("ann") == [a]
    assert w.lic.session(a.session_id) is a


def test_r2_a_page_of_sessions_starts_after_the_last_without_reading_those_before() -> None:
    """ListSessions' next page starts at the session after the last one listed: it
    reads the page's sessions, not every session before it (a million, deep in a
    listing, on the loop every call waits for). Ended ones in memory are listed too,
    all in the order of their ids; sessions forgotten (``forget_ended``) are not."""
    w = World()
    w.buy("alpha", 10_000)
    users = [f"u{i:03d}" for i in range(200)]
    for user in users:
        w.access.grant(user, "alpha", "ACAD")
    opened = [w.entitle(user=user, device=user) for user in users]
    for s in opened[::3]:
        w.release(s)
    w.lic._sessions = counted = CountedSessions(w.lic._sessions)
    page = list(itertools.islice(w.lic.sessions_after(opened[150].session_id), 5))
    assert page == opened[151:156]
    assert counted.reads == 5
    assert list(w.lic.sessions_after(None)) == opened
    assert list(w.lic.sessions_after(opened[-1].session_id)) == []
    w.lic._sessions = dict(counted)
    assert w.lic.forget_ended(w.now + timedelta(seconds=1)) == len(opened[::3])
    kept = [s for s in opened if s.live]
    assert list(w.lic.sessions_after(None)) == kept
    assert list(w.lic.sessions_after(opened[0].session_id)) == kept


def test_m11_the_recent_bound_is_the_first_session_opened_lately_and_names_those_before() -> None:
    """Where a start reads the sessions from (``SESSIONS_RECENT_FROM_KEY``): the first
    in memory opened in the days asked for, and the ids of those before it (a
    session live for weeks), at most ``most`` of them: past that, the bound stays
    on the first not named. Only the sessions before the bound are looked at."""
    w = World()
    w.buy("alpha", 10_000)
    users = [f"u{i:03d}" for i in range(10)]
    for user in users:
        w.access.grant(user, "alpha", "ACAD")
    opened = []
    for user in users:
        opened.append(w.entitle(user=user, device=user))
        w.advance(timedelta(hours=1))
    ids = [s.session_id for s in opened]
    lately = opened[6].start_time
    w.lic._sessions = counted = CountedSessions(w.lic._sessions)
    assert w.lic.recent_split(lately) == (ids[6], ids[:6])
    assert counted.reads == 7
    assert w.lic.recent_split(lately, most=4) == (ids[4], ids[:4])
    assert w.lic.recent_split(opened[0].start_time) == (ids[0], [])
    assert w.lic.recent_split(w.now + timedelta(days=1)) == (ids[-1], ids[:-1])  # none lately
    w.lic._sessions = dict(counted)
    w.lic._ids = []
    assert w.lic.recent_split(lately) is None


# -- restart --------------------------------------------------------------------------------------


def test_restore_rebuilds_state_and_deadlines(w: World) -> None:
    a = w.entitle(product="MAYA", request_id="r1")
    w.advance(10 * MIN)
    w.heartbeat(a, 0)
    b = w.entitle(device="d1")  # in grace
    plug = w.entitle(product="PLUG", parent=b.session_id)
    gone = [id(o) for o in w.deleted()]
    stored = [copy.copy(o) for o in {id(o): o for o in w.items if id(o) not in gone}.values()]
    sessions = [o for o in stored if isinstance(o, Session)]
    meters = [o for o in stored if isinstance(o, Meter)]
    devices = [o for o in stored if isinstance(o, Device)]
    holds = [o for o in stored if isinstance(o, Hold)]
    heap = TimerHeap()
    lic = Licensing.restore(
        sessions,
        meters,
        devices,
        holds,
        ledger=w.ledger,
        products=w.products,
        teams=w.teams,
        terms=DEFAULT_TERMS,
        access=w.access,
        coverage=w.coverage,
        new_id=w.new_id,
    )
    lic.schedule_all(heap, w.now)
    w.lic, w.heap = lic, heap
    assert {len(d.sessions()) for d in lic.devices("ann", "ACAD")} == {1}
    assert [s.session_id for s in lic.sessions_after(None)] == sorted(
        s.session_id for s in sessions
    )
    a, b, plug = (lic.session(x.session_id) for x in (a, b, plug))
    assert w.entitle(product="MAYA", request_id="r1") is a
    with pytest.raises(RunningElsewhere):
        w.entitle(device="d9")
    w.advance(to=T0 + 25 * MIN)  # b grace ends at 15 min: captured; a idles at 25 min
    assert w.charged() == 8 + 10 + 3 and a.state is SessionState.IDLE
    w.release(b)
    assert plug.end_reason is EndReason.HOST_ENDED
    w.advance(to=T0 + 10 * MIN + DAY)
    assert a.end_reason is EndReason.LEASE_EXPIRED


def test_m8_a_limit_of_one_device_is_said_in_the_singular() -> None:
    assert "already registered on 1 device;" in str(DeviceLimit("ACAD", 1))
    assert "already registered on 2 devices;" in str(DeviceLimit("ACAD", 2))


def test_m9_a_takeover_stops_the_least_recently_seen_device_not_the_first_by_id() -> None:
    """M9 with running_devices_per_product = 2: Ann runs on dev-b, then on dev-a
    (allowed: two at once), and takes over from dev-c. Room for one is made on the
    device seen least recently, dev-b, though dev-a comes first by id."""
    w = World()
    w.lic.terms = dataclasses.replace(DEFAULT_TERMS, running_devices_per_product=2)
    w.access.grant("ann", "alpha", "ACAD")
    w.buy("alpha", 100)
    older = w.entitle(device="dev-b")
    w.advance(MIN)
    newer = w.entitle(device="dev-a")
    w.advance(MIN)
    w.heartbeat(newer)
    w.entitle(device="dev-c", takeover=True)
    assert (older.state, older.end_reason) == (SessionState.ENDED, EndReason.TAKEN_OVER)
    assert (newer.state, newer.end_reason) == (SessionState.ACTIVE, None)


def test_m6_activity_exactly_the_idle_threshold_ago_does_not_resume_an_idle_session() -> None:
    """M6 (licensing.py: a heartbeat resumes an idle session only if the activity it
    reports is *less than* the idle threshold ago): Ann's MAYA went idle; a day and
    more later its heartbeat reports activity exactly 15 minutes (900 s) ago. That
    activity has lapsed already: the session stays idle, holds nothing, and so is not
    ended for want of tokens (alpha has none left after the first day)."""
    w = World()
    w.access.grant("ann", "alpha", "MAYA")
    w.buy("alpha", 8)  # MAYA: 8 a day
    s = w.entitle(product="MAYA")
    w.advance(10 * MIN)  # charged: window [T0, T0 + 24 h)
    w.idle(s)
    w.advance(12 * 60 * MIN)
    w.heartbeat(s, seconds=12 * 3600)  # keeps the lease; activity from before the idle
    w.advance(18 * 60 * MIN)  # T0 + 30 h 10 min: the window is over
    w.heartbeat(s, seconds=900)
    assert (s.state, s.end_reason) == (SessionState.IDLE, None)
    assert w.held() == 0


def test_m6_a_heartbeat_reporting_activity_at_the_idle_instant_does_not_resume_it() -> None:
    """M6: "a heartbeat reporting activity *after* the session went idle makes it
    active again". Ann's MAYA goes idle in its grace at T0 + 2 min (the hold goes
    back, M3); a minute later its heartbeat reports activity 60 s ago, at the very
    instant it went idle: nothing new, so it stays idle and nothing is held or
    charged (resumed, a new grace would be charged at T0 + 8 min)."""
    w = World()
    w.access.grant("ann", "alpha", "MAYA")
    w.buy("alpha", 50)
    s = w.entitle(product="MAYA")
    w.advance(2 * MIN)
    w.idle(s)
    assert w.held() == 0
    w.advance(MIN)
    w.heartbeat(s, seconds=60)
    assert s.state is SessionState.IDLE and w.held() == 0
    w.advance(10 * MIN)
    assert w.charged() == 0


def test_c3_p4_a_covered_plugin_runs_in_its_hosts_team_though_that_team_cannot_pay() -> None:
    """C3: "a plugin runs in its host's team when that team can pay (or coverage
    does)". Ann's ACAD runs in beta and takes beta's last tokens; her PLUG is under a
    trial, so it runs in beta too, not in alpha (which could pay)."""
    w = two_teams()
    w.buy("alpha", 50)
    w.buy("beta", 10)  # ACAD: 10 a day
    w.coverage.subs.append(FakeSub("ann", "PLUG", "TRIAL", T0, T0 + DAY))
    host = w.entitle(team="beta")
    assert host.team_id == "beta" and w.available("beta") == 0
    plug = w.entitle(product="PLUG", parent=host.session_id)
    assert plug.team_id == "beta"


def test_c3_p4_a_plugin_runs_in_its_hosts_team_when_that_team_has_exactly_its_rate() -> None:
    """C3: the host's team "can pay" with exactly the plugin's daily rate left (M2:
    "at least the daily rate"): Ann's PLUG (3 a day) runs in beta, which has 3 left
    after her ACAD's hold, though alpha's tokens expire sooner."""
    w = two_teams()
    w.buy("alpha", 50)
    w.now += MIN
    w.buy("beta", 13)
    host = w.entitle(team="beta")
    assert w.available("beta") == 3
    plug = w.entitle(product="PLUG", parent=host.session_id)
    assert plug.team_id == "beta" and w.held("beta") == 13 and w.held("alpha") == 0
