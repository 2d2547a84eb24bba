"""RULES' numbers as configuration: "every number below is a default that the
server's configuration may change" (``--terms FILE``, ``server/domain/terms.py``).

A TOML file names the terms to change; the others keep their defaults. What
cannot be a term (an unknown name, a span without its unit, a bound passed,
terms that contradict each other) stops the start in one line naming it. A
server started with terms charges, limits and tells products by them (M3,
M8, the heartbeat interval, L2, L4), records them with the data, and logs
``terms_changed`` when a start's terms are not the last start's.
"""

from __future__ import annotations

import json
import tomllib
from contextlib import closing
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from server.app import TERMS_KEY, _terms_before
from server.clock import SystemClock, TestClock
from server.config import OPTIONS, parse_args
from server.domain.alerts import warning_time
from server.domain.forecast import PackBalance, forecast
from server.domain.instants import rfc3339
from server.domain.ledger import TokenPack
from server.domain.teams import Plan
from server.domain.terms import DEFAULT_TERMS, Terms, instant_across_a_change
from server.engine import Engine
from server.engine.core import LATEST_TEST_CLOCK
from server.store.sqlite import Store
from tests.licensing_desk import Desk, at, num
from tests.support import REPO, ServerProcess, instant

FP = grpc.StatusCode.FAILED_PRECONDITION
EXAMPLE = REPO / "docs" / "terms.example.toml"


@pytest.fixture(autouse=True)
def no_tessera_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)


def terms_file(tmp_path: Path, text: str, name: str = "terms.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_terms_the_example_file_names_every_term_at_its_default() -> None:
    with EXAMPLE.open("rb") as file:
        values = tomllib.load(file)
    assert list(values) == [f.name for f in fields(Terms)]
    assert Terms.from_mapping(values) == DEFAULT_TERMS
    assert Terms.from_mapping({}) == DEFAULT_TERMS
    assert Terms.from_mapping(DEFAULT_TERMS.shown()) == DEFAULT_TERMS  # as logged


def test_terms_spans_are_a_whole_number_and_its_unit() -> None:
    terms = Terms.from_mapping(
        {"grace": "90s", "idle_threshold": "20m", "charge_window": "12h", "burn_window": "7d"}
    )
    assert (terms.grace, terms.idle_threshold, terms.charge_window, terms.burn_window) == (
        timedelta(seconds=90),
        timedelta(minutes=20),
        timedelta(hours=12),
        timedelta(days=7),
    )
    assert terms.devices_per_product == 3  # left out: its default


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"gracee": "5m"}, "'gracee' is not a term (the terms: charge_window, grace,"),
        ({"grace": "5 minutes"}, "grace is '5 minutes': write a whole number and its unit"),
        ({"grace": 300}, "grace is 300: write a whole number and its unit"),
        ({"charge_window": "30m"}, "charge_window is 30m: it must be from 1h to 366d"),
        ({"grace": "0s"}, "grace is 0s: it must be from 1s to 365d"),  # not "0d"
        ({"invitation_validity": "400d"}, "invitation_validity is 400d: it must be from 1h to"),
        ({"devices_per_product": 0}, "devices_per_product is 0: it must be a whole number from 1"),
        ({"devices_per_product": True}, "devices_per_product is True: it must be a whole number"),
        ({"sessions_per_product": 2.5}, "sessions_per_product is 2.5: it must be a whole number"),
        ({"grace": "1d"}, "grace (1d) must be shorter than charge_window (1d)"),
        ({"heartbeat_interval": "20m"}, "heartbeat_interval (20m) must be at most half of"),
        # M3/M6: as long as the threshold (or nearly), each heartbeat found the session
        # idle at its due instant: every grace broken, continuous use never charged.
        ({"idle_threshold": "5m"}, "heartbeat_interval (5m) must be at most half of"),
        ({"heartbeat_interval": "451s"}, "heartbeat_interval (451s) must be at most half of"),
        ({"running_devices_per_product": 4}, "running_devices_per_product (4) must not be over"),
        ({"burn_window": "36h"}, "burn_window is 36h: it must be whole days"),
    ],
)
def test_terms_a_name_or_value_that_cannot_be_a_term_is_refused_naming_it(
    values: dict[str, object], words: str
) -> None:
    with pytest.raises(ValueError) as refused:
        Terms.from_mapping(values)
    assert str(refused.value).startswith(words)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (None, "cannot read"),
        ("grace = ", "is not TOML"),
        ('grace = "1d"', "grace (1d) must be shorter than charge_window (1d)"),
        ('# pause\ngrace = "10m"  # caf\xe9', "is not UTF-8 text (a byte at line 2 is not)"),
    ],
    ids=["missing", "not-toml", "contradiction", "latin-1"],
)
def test_terms_a_file_that_cannot_be_read_or_used_is_a_usage_error_naming_flag_and_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, words: str
) -> None:
    path = tmp_path / "terms.toml"
    if text is not None:
        path.write_bytes(text.encode("latin-1"))  # (all ASCII but the last case's é)
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--terms", str(path)])
    assert exit_.value.code == 2
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith("tessera-server: error: --terms: ")
    assert str(path) in line and words in line


def test_m3_m8_l2_l4_a_server_started_with_terms_charges_limits_and_warns_by_them(
    tmp_path: Path,
) -> None:
    """Grace of 10 minutes (M3: the hold is captured at 10, not 5), one device per
    product (M8), products told to heartbeat every 2 minutes, a pack warned of 60
    days before its expiry (L2), the burn rate over 7 days (L4)."""
    path = terms_file(
        tmp_path,
        'grace = "10m"\ndevices_per_product = 1\nheartbeat_interval = "2m"\n'
        'pack_expiry_warning = "60d"\nburn_window = "7d"\n',
    )
    server = ServerProcess(tmp_path / "t.db", extra=["--terms", str(path)]).start()
    try:
        with closing(Desk(server.target).sheet()) as desk:
            desk.team("tm", 100)
            ann = desk.user("tm", "ann")
            s = desk.entitle(ann, "REVIT")
            assert s["heartbeat_interval"] == "120s"
            desk.to(at(m=9, s=59))
            assert desk.heartbeat(ann, s["session_id"])["charge_state"] == "CHARGE_STATE_GRACE"
            desk.to(at(m=10))
            assert desk.token_moves("tm") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=10))]
            desk.release(ann, s["session_id"])
            err = desk.refused_entitle(
                ann, FP, "DEVICE_LIMIT", product_id="REVIT", device_id="dev-2"
            )
            assert err.metadata["limit"] == "1"
            forecast = desk.a("GetTeam", {"team_id": "tm"})["team"]["forecast"]
            assert forecast["daily_burn_tokens"] == 10 / 7
            desk.to("2026-11-01T23:59:59Z")
            assert not desk.a("ListNotifications", {"team_id": "tm"}).get("notifications")
            desk.to("2026-11-02T00:00:00Z")  # the pack expires on 2027-01-01
            [note] = desk.a("ListNotifications", {"team_id": "tm"})["notifications"]
            assert (note["kind"], note["create_time"], num(note, "tokens")) == (
                "NOTIFICATION_KIND_PACK_EXPIRING",
                "2026-11-02T00:00:00Z",
                90,
            )
    finally:
        server.terminate()


def test_terms_a_start_with_other_terms_than_the_last_logs_both(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    first = ServerProcess(db).start()  # the defaults, recorded with the data
    first.terminate()
    assert not [x for x in first.lines if x.get("event") == "terms_changed"]
    path = terms_file(tmp_path, 'grace = "10m"\n')
    second = ServerProcess(db, extra=["--terms", str(path)]).start()
    second.terminate()
    [changed] = [x for x in second.lines if x.get("event") == "terms_changed"]
    assert (changed["was"]["grace"], changed["now"]["grace"]) == ("5m", "10m")
    assert changed["level"] == "warning"
    third = ServerProcess(db, extra=["--terms", str(path)]).start()  # the same again
    third.terminate()
    assert not [x for x in third.lines if x.get("event") == "terms_changed"]


def test_m6_terms_refused_now_are_still_read_as_those_the_data_was_served_by() -> None:
    """A database last served with a 10-minute heartbeat and the 15-minute idle
    threshold (allowed before the heartbeat had to be at most half the threshold) is
    started with other terms: what fell due while down keeps the terms then (M6's 15
    minutes), so the terms recorded are read back as they were, not taken as no
    change because a start may no longer use them."""
    was = replace(DEFAULT_TERMS, heartbeat_interval=timedelta(minutes=10))
    with pytest.raises(ValueError, match="heartbeat_interval"):
        Terms.from_mapping(was.shown())
    now = replace(DEFAULT_TERMS, idle_threshold=timedelta(hours=4))
    stored = {TERMS_KEY: json.dumps(was.shown(), sort_keys=True)}
    assert _terms_before(now, stored) == was
    assert _terms_before(was, stored) is None
    assert _terms_before(now, {TERMS_KEY: '{"not_a_term": 1}'}) is None


def test_l2_l4_the_warning_and_the_burn_window_follow_their_terms() -> None:
    """L2: a pack is warned of ``pack_expiry_warning`` before its expiry. L4: the
    burn rate is the charges of the last ``burn_window`` days over its days."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    pack = TokenPack("pk-1", "acme", 100, t0, datetime(2027, 1, 1, tzinfo=UTC), remaining=100)
    terms = Terms.from_mapping({"pack_expiry_warning": "60d", "burn_window": "7d"})
    assert warning_time(pack, terms.pack_expiry_warning) == datetime(2026, 11, 2, tzinfo=UTC)
    seen = forecast(
        t0, [PackBalance(70, 0, pack.expire_time)], [14, 7], window_days=terms.burn_window.days
    )
    assert seen.daily_burn_tokens == 3.0  # 21 tokens over 7 days
    assert seen.depletion_time == t0 + timedelta(days=70 / 3)


@pytest.mark.parametrize(
    ("base", "span", "before", "changed", "expected"),
    [
        # fell before the change, under the span then: stays where it fell
        (at(), timedelta(hours=4), timedelta(minutes=15), at(h=1), at(m=15)),
        # after the change under the span then: follows the new one
        (at(), timedelta(hours=4), timedelta(minutes=15), at(m=10), at(h=4)),
        # the new span puts it before the change: at the change, never before it
        (at(), timedelta(minutes=15), timedelta(hours=4), at(h=1), at(h=1)),
        (at(), timedelta(minutes=15), timedelta(hours=4), at(m=5), at(m=15)),
        # no change at all
        (at(), timedelta(minutes=15), timedelta(minutes=15), at(h=9), at(m=15)),
    ],
)
def test_terms_an_instant_a_term_sets_follows_a_change_from_the_start_that_makes_it(
    base: str, span: timedelta, before: timedelta, changed: str, expected: str
) -> None:
    found = instant_across_a_change(instant(base), span, (before, instant(changed)))
    assert found == instant(expected)


def test_m5_m6_an_idle_instant_that_fell_while_down_keeps_the_threshold_then(
    tmp_path: Path,
) -> None:
    """Ann's window closes at 2020-01-02T00:00, the instant her session goes idle
    under the 15 minutes then in force (her last activity 23:45), while the server is
    down. It comes back years later with a 4 h threshold: what fell due meanwhile
    fell under the terms then, so the meter was not in use at the window's end and
    nothing renews (M5, M6), where the new threshold would have charged a second day."""
    db = tmp_path / "t.db"
    first = ServerProcess(db, test_clock="2020-01-01T00:00:00Z").start()
    try:
        with closing(Desk(first.target)) as desk:
            desk.sheet().team("alpha", 100)
            ann = desk.user("alpha", "ann")
            s = desk.entitle(ann)  # ACAD, idle-aware: charged at 00:05, window to 24:00
            desk.to("2020-01-01T23:45:00Z")
            desk.heartbeat(ann, s["session_id"], 0)  # idle at 2020-01-02T00:00
            desk.to("2020-01-01T23:50:00Z")
    finally:
        assert first.terminate() == 0
    terms = terms_file(tmp_path, 'idle_threshold = "4h"\n')
    second = ServerProcess(
        db, test_clock=None, extra=["--end-test-clock", "--terms", str(terms)]
    ).start()
    try:
        with closing(Desk(second.target)) as desk:
            assert desk.token_moves("alpha") == [
                ("HOLD", 10, "2020-01-01T00:00:00Z"),
                ("CAPTURE", 10, "2020-01-01T00:05:00Z"),
                ("EXPIRY", 90, "2021-01-01T00:00:00Z"),
            ]
            (ended,) = desk.sessions("alpha", include_ended=True)
            assert ended["end_reason"] == "END_REASON_LEASE_EXPIRED"
            assert ended["end_time"] == "2020-01-02T23:45:00Z"
    finally:
        assert second.terminate() == 0


async def test_l2_a_warning_that_fell_while_down_keeps_the_term_then_and_a_later_one_follows_the_new(
    tmp_path: Path,
) -> None:
    """Two packs; the server is down from their purchase until 20 days before the
    first expires, and comes back with a 10-day warning instead of 30: the first
    pack's warning fell meanwhile (30 days before its expiry) and fires at that
    instant; the second's (bought 15 days later) falls after the start, under the
    new term: 10 days before its expiry."""
    db = tmp_path / "t.db"
    t0 = datetime(2026, 1, 5, 9, tzinfo=UTC)
    store = await Store.open(db)
    engine = Engine.restore(await store.load(), TestClock(t0), store)
    await engine.start(heartbeat_flush=0)
    await engine.accounts.create_team("acme", "Acme", Plan.STANDARD)
    first = await engine.accounts.purchase("acme", 100, "po-1")
    await engine.advance_clock(t0 + timedelta(days=15), None)
    second = await engine.accounts.purchase("acme", 100, "po-2")
    await engine.stop()
    await engine.settled()
    await store.close()

    store = await Store.open(db)
    snapshot = await store.load()
    clock = SystemClock(wall=lambda: first.expire_time - timedelta(days=20))
    terms = replace(DEFAULT_TERMS, pack_expiry_warning=timedelta(days=10))
    engine = Engine.restore(snapshot, clock, store, terms, terms_before=DEFAULT_TERMS)
    await engine.start(heartbeat_flush=0)
    try:
        notes = [(n.pack_id, n.create_time) for n in engine.directory.list_notifications("acme")]
        assert notes == [(first.pack_id, first.expire_time - timedelta(days=30))]
        (due,) = [
            d for d, kind, _ in engine.scheduler.heap.pending() if kind.name == "PACK_WARNING"
        ]
        assert due == second.expire_time - timedelta(days=10)
    finally:
        await engine.stop()
        await store.close()


def test_m9_with_two_devices_running_at_once_a_takeover_stops_one_the_least_recently_seen(
    tmp_path: Path,
) -> None:
    """``running_devices_per_product = 2``: Ann runs on dev-1, then dev-2 (allowed), and
    takes over from dev-3: room for one is made, on the device seen least recently
    (dev-1); dev-2 runs on."""
    path = terms_file(tmp_path, "running_devices_per_product = 2\n")
    server = ServerProcess(tmp_path / "t.db", extra=["--terms", str(path)]).start()
    try:
        with closing(Desk(server.target).sheet()) as desk:
            desk.team("alpha", 100)
            ann = desk.user("alpha", "ann")
            first = desk.entitle(ann, device_id="dev-1")
            desk.to(at(m=1))
            second = desk.entitle(ann, device_id="dev-2")
            desk.to(at(m=2))
            desk.heartbeat(ann, second["session_id"])
            desk.entitle(ann, device_id="dev-3", takeover=True)
            ends = [desk.heartbeat(ann, s["session_id"]) for s in (first, second)]
            assert ends[0]["end_reason"] == "END_REASON_TAKEN_OVER"
            assert ends[1]["state"] == "SESSION_STATE_ACTIVE"
            running = sorted(d["device_id"] for d in desk.devices(ann) if d.get("running"))
            assert running == ["dev-2", "dev-3"]
    finally:
        server.terminate()


def test_a1_terms_at_their_longest_with_the_test_clock_at_its_latest_still_serve(
    tmp_path: Path,
) -> None:
    """The longest invitation, window and burn rate --terms allow (366 days) from the
    test clock's latest time (both taken at start) end within the last day an instant
    may have: an invitation sent then expires on 9999-12-31, where it overflowed
    (INTERNAL, and a member left invited with no invitation)."""
    path = terms_file(
        tmp_path,
        'invitation_validity = "366d"\ncharge_window = "366d"\nburn_window = "366d"\n',
    )
    latest = rfc3339(LATEST_TEST_CLOCK)  # the latest --test-clock takes
    assert parse_args(["--test-clock", latest]).test_clock == LATEST_TEST_CLOCK
    server = ServerProcess(tmp_path / "t.db", extra=["--terms", str(path)], test_clock=latest)
    server.start()
    try:
        with closing(Desk(server.target).sheet()) as desk:
            desk.team("tm", 100)
            desk.a("AssignUsers", {"team_id": "tm", "users": ["Ann <ann@example.com>"]})
            ann = desk.a("GetMember", {"team_id": "tm", "user_id": "ann@example.com"})
            assert ann["member"]["state"] == "MEMBER_STATE_INVITED"
            assert ann["member"]["invitation"]["expire_time"] == "9999-12-31T00:00:00Z"
            bob = desk.user("tm", "bob")
            s = desk.entitle(bob, "REVIT")
            assert s["charge_state"] == "CHARGE_STATE_GRACE"
    finally:
        server.terminate()


def test_terms_a_heartbeat_interval_of_exactly_half_the_idle_threshold_is_accepted() -> None:
    """docs/rules.md, "The numbers": terms are refused for "a heartbeat interval
    longer than half the idle threshold"; exactly half is not longer, so it serves."""
    terms = Terms.from_mapping({"heartbeat_interval": "10m", "idle_threshold": "20m"})
    assert (terms.heartbeat_interval, terms.idle_threshold) == (
        timedelta(minutes=10),
        timedelta(minutes=20),
    )
