"""Sessions over the wire (RULES M1, M7-M12, P1-P4, A6, R2), as grpcurl drives them.

A real server on the test clock (2026-01-01T00:00:00Z); every call goes
through reflection and JSON (``tests/grpcurl.py``) with the operator's token
or a user's key. Time moves only through AdvanceClock. The rate sheet and
the helpers are in ``tests/licensing_desk.py``: ACAD (10 a day, idle-aware),
REVIT (10, not idle-aware, Windows only), ACADEL (plugin of ACAD, 3), VIEWER
and FREEPLUG (rate 0). Team ``alpha`` has one pack of 100 tokens bought at T0.

Metering (M2-M6), who pays (C1-C3), the usage report (R1) and the race for
the last tokens are in ``test_metering_api.py``.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

import server.ids
from tests.domain.licensing_world import CountedSessions
from tests.grpcurl import GrpcurlError
from tests.licensing_desk import SHEET, T0, Desk, L, at, ended, num
from tests.support import ServerThread, running

FP = grpc.StatusCode.FAILED_PRECONDITION
NF = grpc.StatusCode.NOT_FOUND
IA = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def ann(desk: Desk) -> str:
    return desk.user("alpha", "ann")


@pytest.fixture
def bob(desk: Desk) -> str:
    return desk.user("alpha", "bob")


# -- M1: the checks, in order ---------------------------------------------------------


def test_m1_credential_comes_first(desk: Desk) -> None:
    body = {"product_id": "NOPE", "platform": "PLATFORM_WINDOWS", "device_id": "d"}
    for token in ("", "tsu_not-a-key"):
        with pytest.raises(GrpcurlError) as info:
            desk.admin(L + "Entitle", body, token=token)
        assert info.value.code is grpc.StatusCode.UNAUTHENTICATED


def test_m1_unknown_product_comes_before_platform_and_access(desk: Desk) -> None:
    viewer_only = desk.user("alpha", "vic", products=["VIEWER"])
    err = desk.refused_entitle(
        viewer_only, NF, "UNKNOWN_PRODUCT", product_id="NOPE", platform="PLATFORM_LINUX"
    )
    assert err.metadata["product_id"] == "NOPE"


def test_m1_platform_and_version_come_before_access(desk: Desk) -> None:
    viewer_only = desk.user("alpha", "vic", products=["VIEWER"])
    err = desk.refused_entitle(
        viewer_only, FP, "UNSUPPORTED_PLATFORM", product_id="REVIT", platform="PLATFORM_MACOS"
    )
    assert err.metadata["platform"] == "MACOS"
    desk.refused_entitle(
        viewer_only,
        FP,
        "UNSUPPORTED_VERSION",
        product_id="ACAD",
        platform="PLATFORM_LINUX",
        product_version="2021",
    )
    err = desk.refused_entitle(viewer_only, grpc.StatusCode.PERMISSION_DENIED, "NOT_ASSIGNED")
    assert err.metadata["product_id"] == "ACAD"
    assert desk.devices(viewer_only) == []


def test_m1_invitation_pending_then_expired(desk: Desk) -> None:
    desk.a(
        "AssignUsers",
        {"team_id": "alpha", "users": ["Nia <nia@example.com>"], "all_products": True},
    )
    desk.keys["nia@example.com"] = desk.a("IssueUserKey", {"user_id": "nia@example.com"})[
        "user_key"
    ]
    err = desk.refused_entitle("nia@example.com", FP, "INVITATION_PENDING")
    assert err.metadata["team_id"] == "alpha"
    desk.to(at(d=7))
    desk.refused_entitle("nia@example.com", FP, "INVITATION_EXPIRED")
    assert desk.moves("alpha") == [("PURCHASE", 100, at())]


def test_m1_access_comes_before_the_device_limit(desk: Desk, ann: str) -> None:
    for device in ("dev-1", "dev-2", "dev-3"):
        desk.release(ann, desk.entitle(ann, device_id=device)["session_id"])
    desk.a("SetUserProducts", {"team_id": "alpha", "user_id": ann, "product_ids": ["REVIT"]})
    desk.refused_entitle(ann, grpc.StatusCode.PERMISSION_DENIED, "NOT_ASSIGNED", device_id="dev-4")


def test_m1_device_limit_comes_before_running_elsewhere(desk: Desk, ann: str) -> None:
    for device in ("dev-1", "dev-2"):
        desk.release(ann, desk.entitle(ann, device_id=device)["session_id"])
    desk.entitle(ann, device_id="dev-3")  # running there
    err = desk.refused_entitle(ann, FP, "DEVICE_LIMIT", device_id="dev-4")
    assert err.metadata["limit"] == "3"


def test_m1_running_elsewhere_comes_before_payment(desk: Desk) -> None:
    desk.team("thin", 10)
    cy = desk.user("thin", "cy")
    di = desk.user("thin", "di")
    s1 = desk.entitle(cy)
    assert desk.idle(cy, s1["session_id"])["state"] == "SESSION_STATE_IDLE"  # hold goes back
    desk.entitle(di, "REVIT")  # takes the team's last 10 tokens
    assert desk.balance("thin") == (0, 10)

    err = desk.refused_entitle(cy, FP, "RUNNING_ELSEWHERE", device_id="dev-2")
    assert err.metadata["device_id"] == "dev-1"
    err = desk.refused_entitle(cy, FP, "INSUFFICIENT_TOKENS", device_id="dev-2", takeover=True)
    assert err.metadata["available"] == "0"
    assert err.metadata["daily_rate"] == "10"

    # A refused Entitle changes nothing: no takeover, no device.
    again = desk.heartbeat(cy, s1["session_id"], 3600)
    assert again["state"] == "SESSION_STATE_IDLE"
    assert [d["device_id"] for d in desk.devices(cy)] == ["dev-1"]


def test_m1_bad_fields_are_invalid_argument_naming_each(desk: Desk, ann: str) -> None:
    V = {"product_version": "2026"}  # a valid version, so each case names one field
    err = desk.refused(
        ann, "Entitle", {"platform": "PLATFORM_WINDOWS", "device_id": "d", **V}, IA, None
    )
    assert set(err.field_violations) == {"product_id"}
    err = desk.refused(ann, "Entitle", {"product_id": "ACAD", "device_id": "d", **V}, IA)
    assert set(err.field_violations) == {"platform"}
    err = desk.refused(ann, "Entitle", {"product_id": "ACAD", "platform": 1, **V}, IA)
    assert set(err.field_violations) == {"device_id"}
    err = desk.refused(ann, "Entitle", {}, IA)
    assert set(err.field_violations) == {"product_id", "platform", "device_id", "product_version"}
    err = desk.refused(
        ann,
        "Entitle",
        {"product_id": "ACAD", "platform": 1, "device_id": "d", "product_version": "abc"},
        IA,
    )
    assert set(err.field_violations) == {"product_version"}
    err = desk.refused(
        ann, "Entitle", {"product_id": "ACAD", "platform": 9, "device_id": "d", **V}, IA
    )
    assert set(err.field_violations) == {"platform"}
    err = desk.refused(
        ann, "Entitle", {"product_id": "ACAD", "platform": 1, "device_id": "d" * 201, **V}, IA
    )
    assert set(err.field_violations) == {"device_id"}
    err = desk.refused(
        ann, "Entitle", {"product_id": "ACAD", "platform": 1, "device_id": "  ", **V}, IA
    )
    assert err.field_violations == {"device_id": "must not be blank"}
    assert desk.moves("alpha") == [("PURCHASE", 100, at())]
    assert desk.devices(ann) == []


# -- P1-P4: products, versions, platforms, plugins ----------------------------------


def test_p2_any_version_of_a_year_shares_one_charge(desk: Desk, ann: str) -> None:
    first = desk.entitle(ann, product_version="2026")
    second = desk.entitle(ann, product_version="2025.1")
    third = desk.entitle(ann, product_version="2024.2.1")
    assert {s["product_version"] for s in (first, second, third)} == {"2026", "2025.1", "2024.2.1"}
    assert len({s["session_id"] for s in (first, second, third)}) == 3
    assert third["grace_end_time"] == at(m=5)
    assert desk.balance("alpha") == (90, 10)
    assert desk.token_moves("alpha") == [("HOLD", 10, at())]


@pytest.mark.parametrize("version", ["0000", "0000.1", "1969", "1969.12"])
def test_p2_a_version_before_1970_is_no_year_and_is_refused_naming_it(
    desk: Desk, ann: str, version: str
) -> None:
    """P2: a version is a year, from 1970 (the API's earliest instant) on: "0000"
    is four digits but no year a product was released in."""
    err = desk.refused_entitle(ann, IA, "INVALID_ARGUMENT", product_version=version)
    assert list(err.field_violations) == ["product_version"]
    assert "1970" in err.field_violations["product_version"]
    assert desk.devices(ann) == []
    assert desk.entitle(ann, product_version="1970.0")["product_version"] == "1970.0"


def test_p3_platforms_and_the_linux_floor(desk: Desk, ann: str) -> None:
    desk.refused_entitle(
        ann, FP, "UNSUPPORTED_PLATFORM", product_id="REVIT", platform="PLATFORM_LINUX"
    )
    err = desk.refused_entitle(
        ann, FP, "UNSUPPORTED_VERSION", platform="PLATFORM_LINUX", product_version="2021.9"
    )
    assert err.metadata["min_linux_version"] == "2022"
    linux = desk.entitle(ann, platform="PLATFORM_LINUX", product_version="2022")
    assert linux["platform"] == "PLATFORM_LINUX"
    old_on_windows = desk.entitle(ann, product_version="2019")  # the floor is Linux's only
    assert old_on_windows["state"] == "SESSION_STATE_ACTIVE"
    mac = desk.entitle(ann, platform="PLATFORM_MACOS")
    assert mac["platform"] == "PLATFORM_MACOS"
    assert desk.balance("alpha") == (90, 10)


def test_p1_rate_0_products_and_plugins_are_coverage_free(desk: Desk) -> None:
    desk.team("broke")
    cy = desk.user("broke", "cy")
    viewer = desk.entitle(cy, "VIEWER")
    assert viewer["coverage"] == "COVERAGE_FREE"
    assert viewer["charge_state"] == "CHARGE_STATE_NONE"
    assert num(viewer, "daily_rate") == 0
    assert "grace_end_time" not in viewer
    desk.advance(301)
    assert desk.heartbeat(cy, viewer["session_id"])["charge_state"] == "CHARGE_STATE_NONE"

    ann = desk.user("alpha", "ann")
    host = desk.entitle(ann)
    plugin = desk.entitle(ann, "FREEPLUG", parent_session_id=host["session_id"])
    assert plugin["coverage"] == "COVERAGE_FREE"
    assert plugin["charge_state"] == "CHARGE_STATE_NONE"
    assert desk.moves("broke") == []
    assert desk.token_moves("alpha") == [("HOLD", 10, at(s=301))]


def rated(product_id: str, daily_rate: int) -> dict[str, object]:
    """The rate sheet's ``product_id`` at another daily rate, for UpsertProduct."""
    (product,) = [p for p in SHEET if p["product_id"] == product_id]
    return {"product": {**product, "daily_rate": daily_rate}}


def test_p1_a_free_product_made_paid_charges_its_running_sessions_from_then(
    desk: Desk, ann: str
) -> None:
    """Rate 0 is what makes a session free (P1, M2): when the rate sheet gives the
    product a rate, its running sessions pay from that instant, as Entitles made
    then would (a grace and its hold, then the charge), and one whose team cannot
    pay ends INSUFFICIENT_TOKENS (M5), not running on for free while it beats."""
    desk.team("broke")
    cy = desk.user("broke", "cy")
    mine = desk.entitle(ann, "VIEWER")
    theirs = desk.entitle(cy, "VIEWER", device_id="cy-pc")
    assert mine["coverage"] == theirs["coverage"] == "COVERAGE_FREE"
    desk.to(at(h=1))
    desk.a("UpsertProduct", rated("VIEWER", 10))
    beat = desk.heartbeat(ann, mine["session_id"])
    assert (beat["coverage"], beat["charge_state"]) == ("COVERAGE_TOKENS", "CHARGE_STATE_GRACE")
    assert beat["grace_end_time"] == at(h=1, m=5)
    assert (num(mine, "daily_rate"), num(beat, "daily_rate")) == (0, 10)  # as it pays
    ended(desk.heartbeat(cy, theirs["session_id"]), "INSUFFICIENT_TOKENS", at(h=1))
    desk.to(at(h=1, m=5))
    assert desk.token_moves("alpha") == [("HOLD", 10, at(h=1)), ("CAPTURE", 10, at(h=1, m=5))]
    assert desk.balance("alpha") == (90, 0)
    assert desk.moves("broke") == []
    desk.assert_ledger_adds_up("alpha")


def test_p1_a_product_made_free_gives_a_hold_back_and_keeps_a_paid_window_paid(
    desk: Desk, ann: str, bob: str
) -> None:
    """The other way: sessions of a product whose rate becomes 0 are free from then.
    Bob's hold, in grace, goes back (as under a subscription granted then, C1); Ann's
    charge, made at her grace's end, stays, and her window is not renewed."""
    desk.entitle(ann, "REVIT")
    desk.to(at(m=6))
    his = desk.entitle(bob, "REVIT")
    assert his["charge_state"] == "CHARGE_STATE_GRACE"
    desk.to(at(m=8))
    desk.a("UpsertProduct", rated("REVIT", 0))
    beat = desk.heartbeat(bob, his["session_id"])
    assert (beat["coverage"], beat["charge_state"]) == ("COVERAGE_FREE", "CHARGE_STATE_NONE")
    assert num(beat, "daily_rate") == 0  # COVERAGE_FREE is rate 0: the session says so
    desk.to(at(d=1, m=10))
    assert desk.token_moves("alpha") == [
        ("HOLD", 10, at()),
        ("CAPTURE", 10, at(m=5)),
        ("HOLD", 10, at(m=6)),
        ("HOLD_RELEASE", 10, at(m=8)),
    ]
    assert desk.balance("alpha") == (90, 0)
    desk.assert_ledger_adds_up("alpha")


def test_p1_a_sessions_rate_is_its_products_now_and_at_its_end_once_ended(
    desk: Desk, ann: str
) -> None:
    """A rate changed on the sheet takes effect at the next hold (the window paid
    stays paid at 10); the running session says the rate its next hold will take,
    as its plan says the team's plan now (A8), and keeps the rate it ended at."""
    s = desk.entitle(ann, "REVIT")
    desk.to(at(h=1))
    desk.a("UpsertProduct", rated("REVIT", 20))
    assert num(desk.heartbeat(ann, s["session_id"]), "daily_rate") == 20
    desk.to(at(d=1, m=5))  # renewed at 24h, charged at 24h05 at the new rate
    assert desk.token_moves("alpha")[-2:] == [("HOLD", 20, at(d=1)), ("CAPTURE", 20, at(d=1, m=5))]
    assert num(desk.release(ann, s["session_id"]), "daily_rate") == 20
    desk.a("UpsertProduct", rated("REVIT", 30))
    (gone,) = [
        x for x in desk.sessions("alpha", include_ended=True) if x["session_id"] == s["session_id"]
    ]
    assert num(gone, "daily_rate") == 20  # the rate it ended at


def test_p4_plugin_needs_a_live_host_session_of_the_same_user_and_device(
    desk: Desk, ann: str, bob: str
) -> None:
    host = desk.entitle(ann)
    other_device = desk.entitle(ann, "REVIT", device_id="dev-2")
    bobs = desk.entitle(bob)
    gone = desk.entitle(ann, product_version="2025")
    desk.release(ann, gone["session_id"])
    for parent, device in (
        ("", "dev-1"),  # none
        (host["session_id"], "dev-2"),  # another device
        (bobs["session_id"], "dev-1"),  # another user's
        (gone["session_id"], "dev-1"),  # ended
        (other_device["session_id"], "dev-2"),  # not the host product
        ("se-nope", "dev-1"),  # no such session
    ):
        err = desk.refused_entitle(
            ann,
            FP,
            "HOST_SESSION_REQUIRED",
            product_id="ACADEL",
            parent_session_id=parent,
            device_id=device,
        )
        assert err.metadata["host_product_id"] == "ACAD"

    plugin = desk.entitle(ann, "ACADEL", parent_session_id=host["session_id"])
    assert plugin["parent_session_id"] == host["session_id"]
    assert plugin["coverage"] == "COVERAGE_TOKENS"
    assert num(plugin, "daily_rate") == 3
    assert plugin["charge_state"] == "CHARGE_STATE_GRACE"
    assert plugin["device_id"] == "dev-1"
    # ann's ACAD (10) and REVIT (10), bob's ACAD (10), ann's ACADEL (3)
    assert desk.balance("alpha") == (67, 33)
    holds = [(e["product_id"], num(e, "amount")) for e in desk.ledger("alpha")[1:]]
    assert holds == [("ACAD", 10), ("REVIT", 10), ("ACAD", 10), ("ACADEL", 3)]


def test_p3_p4_a_plugin_on_a_host_of_another_platform_is_refused(desk: Desk, ann: str) -> None:
    """ACADEL runs on Windows and macOS, not Linux (P3). Ann's ACAD runs on Linux: a
    plugin naming it while claiming Windows would run on Linux after all. Its host must
    be on this device and platform (P4)."""
    host = desk.entitle(ann, platform="PLATFORM_LINUX", product_version="2026")
    desk.refused_entitle(
        ann,
        FP,
        "UNSUPPORTED_PLATFORM",
        product_id="ACADEL",
        platform="PLATFORM_LINUX",
        parent_session_id=host["session_id"],
    )
    err = desk.refused_entitle(
        ann,
        FP,
        "HOST_SESSION_REQUIRED",
        product_id="ACADEL",
        platform="PLATFORM_WINDOWS",
        parent_session_id=host["session_id"],
    )
    assert "platform" in err.message
    assert desk.balance("alpha") == (90, 10)  # ACAD's hold alone


def test_p4_a_host_named_for_a_product_is_invalid_argument_naming_it(desk: Desk, ann: str) -> None:
    """Only a plugin's session has a host: ``parent_session_id`` on an Entitle of a
    product (ACAD) is refused naming the field, whether it names nothing or a live
    session, and opens nothing, rather than being dropped without a word."""
    host = desk.entitle(ann)
    for parent in ("se_nope", host["session_id"]):
        err = desk.refused_entitle(
            ann, IA, "INVALID_ARGUMENT", parent_session_id=parent, request_id=f"r-{parent}"
        )
        assert list(err.field_violations) == ["parent_session_id"]
        assert "plugin" in err.field_violations["parent_session_id"]
    assert [s["session_id"] for s in desk.sessions("alpha")] == [host["session_id"]]
    assert desk.balance("alpha") == (90, 10)


def test_p4_a_kind_or_host_is_not_changed_under_live_sessions(desk: Desk, ann: str) -> None:
    """A running session is a product's, or a plugin's under its host's session (P4):
    turning REVIT into a plugin, or moving ACADEL to another host, while sessions of
    it run would leave them neither, with no host to end with. Refused
    PRODUCT_IN_USE, the rate sheet unchanged; other fields still change, and once no
    session runs the kind and host change too."""
    sheet = {p["product_id"]: p for p in SHEET}
    revit = desk.entitle(ann, "REVIT")
    host = desk.entitle(ann)
    desk.entitle(ann, "ACADEL", parent_session_id=host["session_id"])
    as_plugin = {**sheet["REVIT"], "kind": "PRODUCT_KIND_PLUGIN", "host_product_id": "ACAD"}
    moved = {**sheet["ACADEL"], "host_product_id": "VIEWER"}
    for product in (as_plugin, moved):
        err = desk.refused(None, "UpsertProduct", {"product": product}, FP, "PRODUCT_IN_USE")
        assert err.metadata["product_id"] == product["product_id"]
        assert err.metadata["live_sessions"] == "1"
    listed = {p["product_id"]: p for p in desk.a("ListProducts", {})["products"]}
    assert listed["REVIT"]["kind"] == "PRODUCT_KIND_PRODUCT"
    assert listed["ACADEL"]["host_product_id"] == "ACAD"
    desk.a("UpsertProduct", {"product": {**sheet["ACADEL"], "daily_rate": 4}})  # not kind
    desk.release(ann, revit["session_id"])
    desk.release(ann, host["session_id"])  # its plugin ends with it
    desk.a("UpsertProduct", {"product": as_plugin})
    desk.a("UpsertProduct", {"product": moved})
    listed = {p["product_id"]: p for p in desk.a("ListProducts", {})["products"]}
    assert listed["REVIT"]["kind"] == "PRODUCT_KIND_PLUGIN"
    assert listed["ACADEL"]["host_product_id"] == "VIEWER"


def test_p4_plugin_is_metered_on_its_own_at_its_own_rate(desk: Desk, ann: str) -> None:
    host = desk.entitle(ann)
    desk.advance(60)
    plugin = desk.entitle(ann, "ACADEL", parent_session_id=host["session_id"])
    assert plugin["grace_end_time"] == at(m=6)
    desk.advance(120)
    desk.release(ann, plugin["session_id"])  # 2 minutes: free
    desk.to(at(m=10))
    again = desk.entitle(ann, "ACADEL", parent_session_id=host["session_id"])
    desk.heartbeat(ann, host["session_id"])
    desk.to(at(m=15))
    again = desk.heartbeat(ann, again["session_id"])
    assert again["charge_state"] == "CHARGE_STATE_CHARGED"
    assert again["window_end_time"] == at(d=1, m=10)
    assert desk.token_moves("alpha") == [
        ("HOLD", 10, at()),
        ("HOLD", 3, at(m=1)),
        ("HOLD_RELEASE", 3, at(m=3)),
        ("CAPTURE", 10, at(m=5)),
        ("HOLD", 3, at(m=10)),
        ("CAPTURE", 3, at(m=15)),
    ]
    assert desk.balance("alpha") == (87, 0)
    desk.assert_ledger_adds_up("alpha")


def test_p4_plugin_sessions_end_with_their_host(desk: Desk, ann: str) -> None:
    host = desk.entitle(ann)
    plugin = desk.entitle(ann, "ACADEL", parent_session_id=host["session_id"])
    free = desk.entitle(ann, "FREEPLUG", parent_session_id=host["session_id"])
    desk.advance(120)
    ended(desk.release(ann, host["session_id"]), "RELEASED", at(m=2))
    ended(desk.heartbeat(ann, plugin["session_id"]), "HOST_ENDED", at(m=2))
    ended(desk.heartbeat(ann, free["session_id"]), "HOST_ENDED", at(m=2))
    assert desk.balance("alpha") == (100, 0)  # both graces broken: nothing charged
    assert desk.sessions("alpha") == []


def test_p4_plugin_of_a_taken_over_host_ends_with_it(desk: Desk, ann: str) -> None:
    host = desk.entitle(ann)
    plugin = desk.entitle(ann, "ACADEL", parent_session_id=host["session_id"])
    desk.advance(60)
    desk.entitle(ann, device_id="dev-2", takeover=True)
    ended(desk.heartbeat(ann, host["session_id"]), "TAKEN_OVER", at(m=1))
    ended(desk.heartbeat(ann, plugin["session_id"]), "HOST_ENDED", at(m=1))


# -- M7: the lease ----------------------------------------------------------------------


def test_m7_lease_expires_24h_after_the_last_heartbeat(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann, "REVIT")
    assert s["lease_expire_time"] == at(d=1)
    assert s["heartbeat_interval"] == "300s"
    desk.to(at(h=1))
    assert desk.heartbeat(ann, s["session_id"])["lease_expire_time"] == at(d=1, h=1)
    desk.to(at(d=1, h=1, s=-1))
    alive = desk.sessions("alpha")
    assert [x["session_id"] for x in alive] == [s["session_id"]]
    assert alive[0]["state"] == "SESSION_STATE_ACTIVE"
    desk.to(at(d=1, h=1))
    assert desk.sessions("alpha") == []
    ended(desk.heartbeat(ann, s["session_id"]), "LEASE_EXPIRED", at(d=1, h=1))
    # In use (offline) until the lease's end: renewed at 24 h, charged again at 24 h 5 min.
    assert desk.token_moves("alpha") == [
        ("HOLD", 10, at()),
        ("CAPTURE", 10, at(m=5)),
        ("HOLD", 10, at(d=1)),
        ("CAPTURE", 10, at(d=1, m=5)),
    ]
    assert desk.balance("alpha") == (80, 0)


def test_m7_a_heartbeat_after_the_lease_end_never_revives_it_even_before_the_deadline_fires(
    server: ServerThread, desk: Desk, ann: str
) -> None:
    """The scheduler fires deadlines on time, but a busy server may run a call
    first. Here the clock passes the lease end without firing anything (a late
    scheduler): the heartbeat must find the session expired at the lease's end."""
    s = desk.entitle(ann, "REVIT")
    desk.to(at(h=23, m=59))

    async def late_scheduler() -> None:
        assert server.server.engine is not None
        server.server.engine.clock.set(T0 + timedelta(days=1, seconds=30))  # type: ignore[attr-defined]

    server.call(late_scheduler())
    ended(desk.heartbeat(ann, s["session_id"]), "LEASE_EXPIRED", at(d=1))
    assert desk.sessions("alpha") == []
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=5))]


def test_m7_lease_ending_at_the_window_end_is_not_renewed(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann, "REVIT")
    desk.to(at(d=1))
    ended(desk.heartbeat(ann, s["session_id"]), "LEASE_EXPIRED", at(d=1))
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=5))]
    assert desk.balance("alpha") == (90, 0)


def test_m7_lease_lapsing_in_grace_gives_the_hold_back(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann, "REVIT")
    desk.to(at(m=2))
    assert desk.heartbeat(ann, s["session_id"])["lease_expire_time"] == at(d=1, m=2)
    desk.to(at(d=1))  # the window closes in use: renewed, a new grace until 24 h 5 min
    renewed = desk.sessions("alpha")[0]
    assert renewed["charge_state"] == "CHARGE_STATE_GRACE"
    assert renewed["grace_end_time"] == at(d=1, m=5)
    desk.to(at(d=1, m=5))  # ... but the lease lapsed at 24 h 2 min, in grace
    ended(desk.heartbeat(ann, s["session_id"]), "LEASE_EXPIRED", at(d=1, m=2))
    assert desk.token_moves("alpha") == [
        ("HOLD", 10, at()),
        ("CAPTURE", 10, at(m=5)),
        ("HOLD", 10, at(d=1)),
        ("HOLD_RELEASE", 10, at(d=1, m=2)),
    ]
    assert desk.balance("alpha") == (90, 0)


# -- M8: three devices -------------------------------------------------------------------


def test_m8_fourth_device_is_refused_until_an_admin_removes_one(desk: Desk, ann: str) -> None:
    for i, device in enumerate(("dev-1", "dev-2", "dev-3")):
        desk.to(at(m=i))
        desk.release(ann, desk.entitle(ann, device_id=device)["session_id"])
    desk.entitle(ann, device_id="dev-2")  # a known device again: fine
    err = desk.refused_entitle(ann, FP, "DEVICE_LIMIT", device_id="dev-4", takeover=True)
    assert err.metadata["limit"] == "3"
    assert err.metadata["product_id"] == "ACAD"
    listed = desk.devices(ann)
    assert [(d["device_id"], d["register_time"], d.get("running", False)) for d in listed] == [
        ("dev-1", at(), False),
        ("dev-2", at(m=1), True),
        ("dev-3", at(m=2), False),
    ]
    # Devices count per product: REVIT has none yet.
    assert desk.devices(ann, "REVIT") == []

    desk.a("RemoveDevice", {"user_id": ann, "product_id": "ACAD", "device_id": "dev-1"})
    assert [d["device_id"] for d in desk.devices(ann)] == ["dev-2", "dev-3"]
    fourth = desk.entitle(ann, device_id="dev-4", takeover=True)
    assert fourth["state"] == "SESSION_STATE_ACTIVE"
    assert [d["device_id"] for d in desk.devices(ann)] == ["dev-2", "dev-3", "dev-4"]


# -- M9: one device at a time ----------------------------------------------------------


def test_m9_another_device_is_running_elsewhere_naming_it(desk: Desk, ann: str) -> None:
    s1 = desk.entitle(ann)
    err = desk.refused_entitle(ann, FP, "RUNNING_ELSEWHERE", device_id="dev-2")
    assert err.metadata["device_id"] == "dev-1"
    assert [d["device_id"] for d in desk.devices(ann)] == ["dev-1"]
    assert desk.heartbeat(ann, s1["session_id"])["state"] == "SESSION_STATE_ACTIVE"
    # Another product is another matter.
    assert desk.entitle(ann, "REVIT", device_id="dev-2")["state"] == "SESSION_STATE_ACTIVE"
    # Two versions side by side on one device are allowed.
    assert desk.entitle(ann, product_version="2025")["device_id"] == "dev-1"
    (dev1,) = desk.devices(ann)
    assert (dev1["running"], dev1["running_session_count"]) == (True, 2)  # both counted
    desk.release(ann, s1["session_id"])
    (dev1,) = desk.devices(ann)
    assert (dev1["running"], dev1["running_session_count"]) == (True, 1)


def test_m9_takeover_revokes_the_other_device_and_is_no_break(desk: Desk, ann: str) -> None:
    s1 = desk.entitle(ann)
    s1b = desk.entitle(ann, product_version="2025")
    desk.to(at(m=3))
    s2 = desk.entitle(ann, device_id="dev-2", takeover=True)
    assert s2["charge_state"] == "CHARGE_STATE_GRACE"
    assert s2["grace_end_time"] == at(m=5)  # the same grace: the meter stayed in use
    ended(desk.heartbeat(ann, s1["session_id"]), "TAKEN_OVER", at(m=3))
    ended(desk.heartbeat(ann, s1b["session_id"]), "TAKEN_OVER", at(m=3))
    desk.to(at(m=5))
    assert desk.heartbeat(ann, s2["session_id"])["charge_state"] == "CHARGE_STATE_CHARGED"
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=5))]
    running = {d["device_id"]: d.get("running", False) for d in desk.devices(ann)}
    assert running == {"dev-1": False, "dev-2": True}


# -- M10-M12: release, idempotency, ended sessions ---------------------------------------


def test_m10_release_twice_returns_the_same_ended_session(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    desk.to(at(m=10))
    first = desk.release(ann, s["session_id"])
    ended(first, "RELEASED", at(m=10))
    assert first["charge_state"] == "CHARGE_STATE_CHARGED"  # the paid window stays
    desk.to(at(m=20))
    assert desk.release(ann, s["session_id"]) == first
    assert desk.balance("alpha") == (90, 0)  # never refunded
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("CAPTURE", 10, at(m=5))]


def test_m11_a_repeated_request_id_returns_the_first_session_and_holds_once(
    desk: Desk, ann: str, bob: str
) -> None:
    first = desk.entitle(ann, request_id="req-1")
    desk.advance(30)
    again = desk.entitle(ann, request_id="req-1")
    assert again["session_id"] == first["session_id"]
    assert again["start_time"] == at()
    assert desk.balance("alpha") == (90, 10)
    assert len(desk.sessions("alpha")) == 1
    # The key is the user's: bob's req-1 is his own Entitle.
    bobs = desk.entitle(bob, request_id="req-1")
    assert bobs["session_id"] != first["session_id"]
    assert desk.balance("alpha") == (80, 20)
    # After the release the repeat still answers that session and holds nothing.
    desk.release(ann, first["session_id"])
    repeat = desk.entitle(ann, request_id="req-1")
    assert repeat["session_id"] == first["session_id"]
    assert repeat["state"] == "SESSION_STATE_ENDED"
    assert desk.balance("alpha") == (90, 10)
    # A request_id reused for something else is not an answer about the first.
    desk.refused_entitle(
        ann,
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
        product_id="REVIT",
        request_id="req-1",
    )
    assert [m[0] for m in desk.token_moves("alpha")] == ["HOLD", "HOLD", "HOLD_RELEASE"]


def test_m11_a_request_id_reused_on_another_platform_or_version_is_already_exists(
    desk: Desk, ann: str
) -> None:
    """A repeat is the same request: a macOS caller reusing a Windows Entitle's id,
    or another version, is refused as another product or device is, and not handed
    the first session. takeover and the preferred team may differ (the SDK retries
    an unanswered Entitle with takeover off): that is still the same request."""
    first = desk.entitle(ann, request_id="req-1")
    for other in (
        {"platform": "PLATFORM_MACOS"},
        {"product_version": "2025"},
        {"product_version": "2026.1"},
    ):
        err = desk.refused_entitle(
            ann, grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS", request_id="req-1", **other
        )
        assert err.metadata["session_id"] == first["session_id"]
        assert err.metadata["request_id"] == "req-1"
        assert "2026 on WINDOWS" in err.message
    again = desk.entitle(ann, request_id="req-1", takeover=True, team_id="alpha")
    assert again["session_id"] == first["session_id"]
    assert len(desk.sessions("alpha")) == 1
    assert desk.balance("alpha") == (90, 10)


def test_m12_ended_sessions_are_answered_as_they_are(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    desk.to(at(m=1))
    released = desk.release(ann, s["session_id"])
    ended(released, "RELEASED", at(m=1))
    desk.to(at(m=2))
    for answer in (
        desk.heartbeat(ann, s["session_id"], 0),
        desk.idle(ann, s["session_id"]),
        desk.release(ann, s["session_id"]),
    ):
        ended(answer, "RELEASED", at(m=1))
    assert desk.sessions("alpha") == []
    assert desk.balance("alpha") == (100, 0)


def test_m12_sessions_are_private_to_their_user(desk: Desk, ann: str, bob: str) -> None:
    s = desk.entitle(ann)
    for method, body in (
        ("Heartbeat", {"session_id": s["session_id"], "seconds_since_activity": 0}),
        ("Idle", {"session_id": s["session_id"]}),
        ("Release", {"session_id": s["session_id"]}),
    ):
        err = desk.refused(bob, method, body, NF, "UNKNOWN_SESSION")
        assert ann not in err.message
    assert desk.heartbeat(ann, s["session_id"])["state"] == "SESSION_STATE_ACTIVE"


def test_m12_unknown_or_missing_session_ids(desk: Desk, ann: str) -> None:
    for method in ("Heartbeat", "Idle", "Release"):
        desk.refused(ann, method, {"session_id": "se-nope"}, NF, "UNKNOWN_SESSION")
        err = desk.refused(ann, method, {}, IA)
        assert set(err.field_violations) == {"session_id"}


def test_m12_a_session_id_holding_nul_is_unknown_on_every_store(desk: Desk, ann: str) -> None:
    """Found on PostgreSQL (issue 13): its text cannot hold NUL, and the store's
    lookup of an id memory did not know failed on the encoding: INTERNAL for an
    unknown session, where SQLite answered NOT_FOUND."""
    for method in ("Heartbeat", "Idle", "Release"):
        desk.refused(ann, method, {"session_id": "se-\x00"}, NF, "UNKNOWN_SESSION")


# -- M13: the session cap ----------------------------------------------------------------

RE = grpc.StatusCode.RESOURCE_EXHAUSTED


def test_m13_ten_live_sessions_then_session_limit_until_one_is_released(
    desk: Desk, ann: str
) -> None:
    """Issue 12, point 3: one key opened 4,219 sessions, a new product_version each."""
    opened = [
        desk.entitle(ann, product_version=str(2017 + i), request_id=f"rq-{i}") for i in range(10)
    ]
    assert len({s["session_id"] for s in opened}) == 10
    err = desk.refused_entitle(ann, RE, "SESSION_LIMIT", product_version="2030")
    assert err.metadata == {"session_limit": "10", "product_id": "ACAD"}
    assert "10 live sessions of ACAD" in err.message
    again = desk.entitle(ann, product_version="2026", request_id="rq-9")  # M11 still answers
    assert again["session_id"] == opened[9]["session_id"]
    assert len(desk.sessions("alpha")) == 10
    desk.release(ann, opened[4]["session_id"])
    extra = desk.entitle(ann, product_version="2030")
    assert extra["state"] == "SESSION_STATE_ACTIVE"
    desk.refused_entitle(ann, RE, "SESSION_LIMIT", product_version="2031")
    desk.entitle(ann, product_id="REVIT")  # another product has its own ten
    desk.to(at(h=24, s=1))  # every lease has ended: each place is free again
    assert len(desk.entitle(ann, product_version="2031")["session_id"]) > 0
    assert len(desk.sessions("alpha")) == 1


@pytest.mark.parametrize("request_id", ["rq\x00", "rq\x85", "rq\u202e1", "  ", "r" * 201])
def test_issue12_h2_6_entitle_request_id_follows_the_one_rule(
    desk: Desk, ann: str, request_id: str
) -> None:
    """Issue 12, point 6: one rule for request ids (PurchaseTokens follows it too)."""
    err = desk.refused_entitle(ann, IA, "INVALID_ARGUMENT", request_id=request_id)
    assert list(err.field_violations) == ["request_id"]
    assert desk.sessions() == [] and desk.devices(ann) == []


# -- A6: losing access --------------------------------------------------------------------


def test_a6_unassigning_revokes_live_sessions_with_not_assigned(desk: Desk, ann: str) -> None:
    acad = desk.entitle(ann)
    desk.to(at(m=3))
    revit = desk.entitle(ann, "REVIT")
    desk.to(at(m=6))
    desk.a("UnassignUser", {"team_id": "alpha", "user_id": ann})
    ended(desk.heartbeat(ann, acad["session_id"]), "NOT_ASSIGNED", at(m=6))
    ended(desk.heartbeat(ann, revit["session_id"]), "NOT_ASSIGNED", at(m=6))
    # ACAD's window was paid and stays paid; REVIT's grace was broken.
    assert desk.token_moves("alpha") == [
        ("HOLD", 10, at()),
        ("HOLD", 10, at(m=3)),
        ("CAPTURE", 10, at(m=5)),
        ("HOLD_RELEASE", 10, at(m=6)),
    ]
    assert desk.balance("alpha") == (90, 0)
    desk.refused_entitle(ann, grpc.StatusCode.PERMISSION_DENIED, "NOT_ASSIGNED")


def test_a6_removing_a_product_revokes_only_its_sessions(desk: Desk, ann: str) -> None:
    acad = desk.entitle(ann)
    host_plugin = desk.entitle(ann, "ACADEL", parent_session_id=acad["session_id"])
    revit = desk.entitle(ann, "REVIT")
    desk.to(at(m=2))
    desk.a("SetUserProducts", {"team_id": "alpha", "user_id": ann, "product_ids": ["REVIT"]})
    ended(desk.heartbeat(ann, acad["session_id"]), "NOT_ASSIGNED", at(m=2))
    # ACADEL was lost too: its session ends for that, not as its host's plugin.
    ended(desk.heartbeat(ann, host_plugin["session_id"]), "NOT_ASSIGNED", at(m=2))
    assert desk.heartbeat(ann, revit["session_id"])["state"] == "SESSION_STATE_ACTIVE"
    assert desk.balance("alpha") == (90, 10)  # REVIT's hold only


def test_a6_default_set_cleared_revokes_what_it_gave(desk: Desk) -> None:
    desk.a("SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["REVIT"]})
    cy = desk.user("alpha", "cy", products=[])
    s = desk.entitle(cy, "REVIT")
    desk.to(at(m=1))
    desk.a("SetDefaultAssignments", {"team_id": "alpha", "product_ids": []})
    ended(desk.heartbeat(cy, s["session_id"]), "NOT_ASSIGNED", at(m=1))
    assert desk.balance("alpha") == (100, 0)


# -- R2: the live view -------------------------------------------------------------------


def test_r2_list_sessions_pages_in_opening_order(desk: Desk) -> None:
    desk.team("beta", 100)
    users = [desk.user("alpha", n) for n in ("ann", "bob", "cy", "di", "eve")]
    opened = []
    for i, user in enumerate(users):
        desk.to(at(s=i))
        opened.append(desk.entitle(user)["session_id"])
    elsewhere = desk.user("beta", "fay")
    desk.entitle(elsewhere)
    desk.release(users[0], opened[0])

    page = desk.a("ListSessions", {"team_id": "alpha", "page_size": 2})
    assert [s["session_id"] for s in page["sessions"]] == opened[1:3]
    token = page["next_page_token"]
    page = desk.a("ListSessions", {"team_id": "alpha", "page_size": 2, "page_token": token})
    assert [s["session_id"] for s in page["sessions"]] == opened[3:5]
    assert page.get("next_page_token", "") == ""

    every = desk.sessions("alpha", include_ended=True)
    assert [s["session_id"] for s in every] == opened
    assert every[0]["state"] == "SESSION_STATE_ENDED"
    seen: list[str] = []
    token = ""
    for _ in range(3):
        page = desk.a(
            "ListSessions",
            {"team_id": "alpha", "include_ended": True, "page_size": 2, "page_token": token},
        )
        seen += [s["session_id"] for s in page.get("sessions", [])]
        token = page.get("next_page_token", "")
    assert seen == opened and token == ""
    assert len(desk.sessions()) == 5  # every team
    only_bob = desk.a("ListSessions", {"user_id": users[1]})["sessions"]
    assert [s["session_id"] for s in only_bob] == [opened[1]]

    desk.refused(None, "ListSessions", {"page_size": -1}, IA)
    err = desk.refused(None, "ListSessions", {"page_token": "garbage!"}, IA)
    assert set(err.field_violations) == {"page_token"}
    desk.refused(None, "ListSessions", {"team_id": "nope"}, NF, "UNKNOWN_TEAM")


def test_r2_list_sessions_pages_every_session_after_a_start_on_a_clock_behind(
    database: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next server on a database (a restart after the clock stepped back, a
    standby taking over on a machine behind; skew the rules allow, section 7) runs
    on a clock 10 minutes behind the last one's: its sessions' ids still sort after
    the stored ones, so a walk of ListSessions' pages lists them too."""
    with running(database) as srv:
        desk = Desk(srv.target).sheet()
        desk.team("alpha", 1000)
        before = [desk.entitle(desk.user("alpha", n))["session_id"] for n in ("ann", "bob")]
        keys = dict(desk.keys)
        desk.close()
    real = time.time_ns
    monkeypatch.setattr(server.ids, "time", SimpleNamespace(time_ns=lambda: real() - 600 * 10**9))
    with running(database) as srv:
        desk = Desk(srv.target)
        desk.keys.update(keys)
        after = [desk.entitle(desk.user("alpha", n))["session_id"] for n in ("cy", "di")]
        walked: list[str] = []
        token = ""
        for _ in range(10):
            page = desk.a("ListSessions", {"team_id": "alpha", "page_size": 1, "page_token": token})
            walked += [s["session_id"] for s in page.get("sessions", [])]
            if not (token := page.get("next_page_token", "")):
                break
        desk.close()
    assert walked == before + after
    assert sorted(walked) == walked


def test_r2_list_sessions_reads_a_users_own_and_a_deep_pages_own_not_every_session(
    server: ServerThread, desk: Desk
) -> None:
    """ListSessions runs on the loop every call waits for: one user's live sessions (a
    portal's member page asks for them) come from that user's devices, and a page deep
    in a listing starts after the last one listed; neither walks every session in
    memory (a million at most: a quarter of a second each, on the loop)."""
    users = [desk.user("alpha", n) for n in ("ann", "bob", "cy", "di", "eve")]
    opened = [desk.entitle(user)["session_id"] for user in users]
    lic = server.server.engine.sessions.lic  # type: ignore[attr-defined]
    lic._sessions = counted = CountedSessions(lic._sessions)

    only_bob = desk.a("ListSessions", {"team_id": "alpha", "user_id": users[1]})["sessions"]
    assert [s["session_id"] for s in only_bob] == [opened[1]]
    assert counted.reads == 0
    token = desk.a("ListSessions", {"team_id": "alpha", "page_size": 3})["next_page_token"]
    counted.reads = 0
    page = desk.a("ListSessions", {"team_id": "alpha", "page_size": 1, "page_token": token})
    assert [s["session_id"] for s in page["sessions"]] == [opened[3]]
    assert counted.reads == 2  # the page's one, and the next, which says there is more
    last = desk.a("ListSessions", {"team_id": "alpha", "page_token": page["next_page_token"]})
    assert [s["session_id"] for s in last["sessions"]] == [opened[4]]


def test_r2_end_session_ends_it_ended_by_admin(desk: Desk, ann: str) -> None:
    s = desk.entitle(ann)
    desk.to(at(m=2))
    first = desk.a("EndSession", {"session_id": s["session_id"]})["session"]
    ended(first, "ENDED_BY_ADMIN", at(m=2))
    ended(desk.heartbeat(ann, s["session_id"]), "ENDED_BY_ADMIN", at(m=2))
    assert desk.a("EndSession", {"session_id": s["session_id"]})["session"] == first
    assert desk.token_moves("alpha") == [("HOLD", 10, at()), ("HOLD_RELEASE", 10, at(m=2))]
    desk.refused(None, "EndSession", {"session_id": "se-nope"}, NF, "UNKNOWN_SESSION")
    err = desk.refused(None, "EndSession", {}, IA)
    assert set(err.field_violations) == {"session_id"}


def test_issue12_h2_14_list_devices_and_remove_a_running_one_only_when_told(
    desk: Desk, ann: str
) -> None:
    desk.release(ann, desk.entitle(ann, device_id="dev-1")["session_id"])
    desk.to(at(m=1))
    s = desk.entitle(ann, device_id="dev-2")
    desk.to(at(m=7))
    desk.heartbeat(ann, s["session_id"])
    listed = desk.devices(ann)
    assert listed == [
        {
            "user_id": ann,
            "product_id": "ACAD",
            "device_id": "dev-1",
            "register_time": at(),
            "last_seen_time": at(),
        },
        {
            "user_id": ann,
            "product_id": "ACAD",
            "device_id": "dev-2",
            "register_time": at(m=1),
            "last_seen_time": at(m=7),
            "running": True,
            "running_session_count": 1,
        },
    ]
    remove = {"user_id": ann, "product_id": "ACAD", "device_id": "dev-2"}
    err = desk.refused(None, "RemoveDevice", remove, FP, "DEVICE_IN_USE")
    assert err.metadata == {"device_id": "dev-2", "live_sessions": "1"}
    assert desk.heartbeat(ann, s["session_id"])["state"] == "SESSION_STATE_ACTIVE"
    [gone] = desk.a("RemoveDevice", {**remove, "end_sessions": True})["ended_sessions"]
    ended(gone, "ENDED_BY_ADMIN", at(m=7))
    assert gone["session_id"] == s["session_id"]
    ended(desk.heartbeat(ann, s["session_id"]), "ENDED_BY_ADMIN", at(m=7))
    assert [d["device_id"] for d in desk.devices(ann)] == ["dev-1"]
    assert desk.a("RemoveDevice", {**remove, "device_id": "dev-1"}) == {}  # not in use
    assert desk.devices(ann) == []

    desk.refused(
        None,
        "ListDevices",
        {"user_id": "nobody@example.com", "product_id": "ACAD"},
        NF,
        "UNKNOWN_USER",
    )
    desk.refused(None, "ListDevices", {"user_id": ann, "product_id": "NOPE"}, NF, "UNKNOWN_PRODUCT")
    err = desk.refused(None, "ListDevices", {"product_id": "ACAD"}, IA)
    assert set(err.field_violations) == {"user_id"}
    err = desk.refused(
        None, "RemoveDevice", {"user_id": ann, "product_id": "ACAD", "device_id": "dev-9"}, IA
    )
    assert set(err.field_violations) == {"device_id"}


def test_m8_a_users_devices_of_every_product_come_in_one_list(desk: Desk, ann: str) -> None:
    """ListDevices naming no product: the user's devices of every product, by product
    then oldest first, those of a product they may no longer run included (they still
    count toward its limit, M8). A page about a member asked product by product: at
    a 10,000-product rate sheet, 10,000 calls."""
    desk.release(ann, desk.entitle(ann, "REVIT", device_id="dev-r")["session_id"])
    desk.to(at(m=1))
    desk.release(ann, desk.entitle(ann, device_id="dev-2")["session_id"])
    desk.to(at(m=2))
    s = desk.entitle(ann, device_id="dev-1")
    desk.a("AssignUsers", {"team_id": "alpha", "users": [ann], "all_products": False})
    desk.a("SetUserProducts", {"team_id": "alpha", "user_id": ann, "product_ids": ["ACAD"]})
    member = desk.a("GetMember", {"team_id": "alpha", "user_id": ann})["member"]
    assert member["effective_product_ids"] == ["ACAD"]  # REVIT taken
    every = desk.a("ListDevices", {"user_id": ann})["devices"]
    assert [(d["product_id"], d["device_id"], d.get("running", False)) for d in every] == [
        ("ACAD", "dev-2", False),
        ("ACAD", "dev-1", True),
        ("REVIT", "dev-r", False),
    ]
    assert every[:2] == desk.devices(ann)  # as the product's own list gives them
    assert s["session_id"]
    desk.refused(None, "ListDevices", {"user_id": "nobody@example.com"}, NF, "UNKNOWN_USER")


def test_m1_plugin_access_comes_before_its_host_and_then_payment(desk: Desk) -> None:
    desk.team("thin", 12)
    cy = desk.user("thin", "cy", products=["ACAD"])
    desk.refused_entitle(cy, grpc.StatusCode.PERMISSION_DENIED, "NOT_ASSIGNED", product_id="ACADEL")
    desk.a("SetUserProducts", {"team_id": "thin", "user_id": cy, "all_products": True})
    desk.refused_entitle(cy, FP, "HOST_SESSION_REQUIRED", product_id="ACADEL")
    host = desk.entitle(cy)  # 10 of 12
    err = desk.refused_entitle(
        cy, FP, "INSUFFICIENT_TOKENS", product_id="ACADEL", parent_session_id=host["session_id"]
    )
    assert (err.metadata["available"], err.metadata["daily_rate"]) == ("2", "3")


def test_r2_end_session_of_a_host_ends_its_plugins(desk: Desk, ann: str) -> None:
    host = desk.entitle(ann)
    plugin = desk.entitle(ann, "ACADEL", parent_session_id=host["session_id"])
    desk.to(at(m=1))
    desk.a("EndSession", {"session_id": plugin["session_id"]})
    assert desk.heartbeat(ann, host["session_id"])["state"] == "SESSION_STATE_ACTIVE"
    plugin = desk.entitle(ann, "ACADEL", parent_session_id=host["session_id"])
    desk.to(at(m=2))
    desk.a("EndSession", {"session_id": host["session_id"]})
    ended(desk.heartbeat(ann, plugin["session_id"]), "HOST_ENDED", at(m=2))
    assert desk.balance("alpha") == (100, 0)


def test_a6_a_guest_losing_the_default_set_is_revoked(desk: Desk) -> None:
    desk.a("SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["REVIT"]})
    desk.a("UpdateTeamSettings", {"team_id": "alpha", "guest_default_assignments": True})
    gus = desk.user("alpha", "gus", products=[], guest=True)
    s = desk.entitle(gus, "REVIT")
    desk.to(at(m=1))
    desk.a("UpdateTeamSettings", {"team_id": "alpha", "guest_default_assignments": False})
    ended(desk.heartbeat(gus, s["session_id"]), "NOT_ASSIGNED", at(m=1))
    assert desk.balance("alpha") == (100, 0)


def test_m12_idle_on_an_ended_session_answers_it_whatever_the_product(desk: Desk, ann: str) -> None:
    # M6 refuses Idle for a product without idle awareness, but an ended
    # session is answered as it is (M12): the product learns why it ended.
    s = desk.entitle(ann, "REVIT")
    desk.refused(ann, "Idle", {"session_id": s["session_id"]}, FP, "IDLE_NOT_SUPPORTED")
    desk.to(at(m=1))
    desk.a("EndSession", {"session_id": s["session_id"]})
    ended(desk.idle(ann, s["session_id"]), "ENDED_BY_ADMIN", at(m=1))


def test_m12_over_long_ids_are_invalid_argument_not_a_broken_stream(desk: Desk, ann: str) -> None:
    """An id far longer than any the server makes is a bad field. (Echoed back in
    a NOT_FOUND it overflowed the client's 8 KiB trailer limit: RESOURCE_EXHAUSTED.)"""
    long = "x" * 5000
    for method in ("Heartbeat", "Idle", "Release"):
        err = desk.refused(ann, method, {"session_id": long}, IA)
        assert set(err.field_violations) == {"session_id"}
    for method, body, field in (
        ("EndSession", {"session_id": long}, "session_id"),
        ("ListDevices", {"user_id": long, "product_id": "ACAD"}, "user_id"),
        ("ListDevices", {"user_id": ann, "product_id": long}, "product_id"),
        ("RemoveDevice", {"user_id": long, "product_id": "ACAD", "device_id": "d"}, "user_id"),
        ("RemoveDevice", {"user_id": ann, "product_id": "ACAD", "device_id": long}, "device_id"),
        ("ListSessions", {"team_id": long}, "team_id"),
        ("ListSessions", {"user_id": long}, "user_id"),
        ("GetUsageReport", {"team_id": long}, "team_id"),
    ):
        err = desk.refused(None, method, body, IA)
        assert set(err.field_violations) == {field}, method
    for field in (
        "product_id",
        "product_version",
        "device_id",
        "parent_session_id",
        "request_id",
        "team_id",
    ):
        err = desk.refused_entitle(ann, IA, "INVALID_ARGUMENT", **{field: long})
        assert set(err.field_violations) == {field}


def test_a6_a_plugin_kept_ends_with_its_revoked_host(desk: Desk, ann: str) -> None:
    host = desk.entitle(ann)
    plugin = desk.entitle(ann, "ACADEL", parent_session_id=host["session_id"])
    desk.to(at(m=1))
    desk.a(
        "SetUserProducts",
        {"team_id": "alpha", "user_id": ann, "product_ids": ["ACADEL", "REVIT"]},
    )
    ended(desk.heartbeat(ann, host["session_id"]), "NOT_ASSIGNED", at(m=1))
    ended(desk.heartbeat(ann, plugin["session_id"]), "HOST_ENDED", at(m=1))


def test_a6_unassigning_ends_host_and_plugin_as_not_assigned(desk: Desk, ann: str) -> None:
    host = desk.entitle(ann)
    plugin = desk.entitle(ann, "ACADEL", parent_session_id=host["session_id"])
    desk.to(at(m=1))
    desk.a("UnassignUser", {"team_id": "alpha", "user_id": ann})
    ended(desk.heartbeat(ann, host["session_id"]), "NOT_ASSIGNED", at(m=1))
    ended(desk.heartbeat(ann, plugin["session_id"]), "NOT_ASSIGNED", at(m=1))
    assert desk.balance("alpha") == (100, 0)


def test_p4_an_idle_host_session_is_live_enough(desk: Desk, ann: str) -> None:
    host = desk.entitle(ann)
    desk.idle(ann, host["session_id"])
    plugin = desk.entitle(ann, "ACADEL", parent_session_id=host["session_id"])
    assert plugin["state"] == "SESSION_STATE_ACTIVE"
    assert plugin["charge_state"] == "CHARGE_STATE_GRACE"
    assert desk.balance("alpha") == (97, 3)  # the idle host holds nothing
