"""Two administrators changing the same thing from the portal: a form sent from a page
drawn before the other's change applies only what was changed on it, on top of what the
server holds now, so the other's change is kept (a lost update would undo it, and for
products end live sessions, RULES A6).

Each test drives two browsers (Starlette's TestClient) and sends each form as a browser
would from its page (``form_fields``: its hidden fields included), then reads the final
state back over gRPC.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from html import unescape
from typing import Any

import pytest
from starlette.testclient import TestClient

from portal.app import create_app
from tests.portal.conftest import World, csrf_of
from tests.portal.test_portal_http import form_fields, sign_in
from tests.support import ADMIN_TOKEN

CARL = "carl@example.com"
MEMBER = f"/teams/alpha/member?user={CARL}"
MEMBER_PRODUCTS = f"/teams/alpha/member/products?user={CARL}"
DEFAULTS = "/teams/alpha/defaults"
SETTINGS = "/teams/alpha/settings"


def _flash(html: str) -> list[str]:
    found = re.findall(r'<p class="flash" role="status">([^<]*)</p>', html)
    return [unescape(f) for f in found]


@contextmanager
def _browser(world: World, credential: str = ADMIN_TOKEN) -> Iterator[TestClient]:
    """A browser of its own, signed in with ``credential`` (the operator's token unless
    told otherwise)."""
    with TestClient(create_app(world.target), base_url="http://127.0.0.1") as client:
        sign_in(client, credential)
        yield client


@pytest.fixture
def two(world: World) -> Iterator[tuple[TestClient, TestClient]]:
    """Two browsers: the operator's, and Alice's (an admin key for alpha)."""
    key = world.a("CreateAdminKey", {"display_name": "Alice", "team_ids": ["alpha"]})
    with _browser(world) as operator, _browser(world, key["admin_key"]) as alice:
        yield operator, alice


@pytest.fixture
def operators(world: World) -> Iterator[tuple[TestClient, TestClient]]:
    """Two browsers signed in with the operator's token."""
    with _browser(world) as one, _browser(world) as other:
        yield one, other


def _older_then(
    stale: TestClient, fresh: TestClient, page: str, action: str, **change: Any
) -> tuple[str, Any]:
    """``page`` as ``stale`` draws it now (its form sent later, from an older page), and
    ``fresh``'s answer to its form ``action`` sent at once from the page drawn now, with
    ``change`` (``_send``'s ticks, unticks and typed fields)."""
    older = stale.get(page).text
    return older, _send(fresh, fresh.get(page).text, action, **change)


def _send(
    client: TestClient,
    html: str,
    action: str,
    *,
    tick: tuple[tuple[str, str], ...] = (),
    untick: tuple[tuple[str, str], ...] = (),
    typed: dict[str, str] | None = None,
) -> Any:
    """Send the page's form ``action`` as a browser would, with these boxes ticked and
    unticked and these fields typed (a select's choice included)."""
    fields = [f for f in form_fields(html, action) + _chosen(html, action) if f not in untick]
    fields += [t for t in tick if t not in fields]
    for name, value in (typed or {}).items():
        fields = [f for f in fields if f[0] != name] + [(name, value)]
    data: dict[str, list[str]] = {}
    for name, value in fields:
        data.setdefault(name, []).append(value)
    return client.post(action, data=data)


def _chosen(html: str, action: str) -> list[tuple[str, str]]:
    """The option each select of the form ``action`` has chosen (``form_fields`` reads
    its inputs only)."""
    form = html.split(f'action="{action}"', 1)[1].split("</form>", 1)[0]
    chosen = []
    for name, options in re.findall(r'<select[^>]* name="([^"]+)">(.*?)</select>', form, re.S):
        found = re.search(r'<option value="([^"]*)" selected>', options)
        assert found, f"no option of {name} chosen"
        chosen.append((name, found.group(1)))
    return chosen


def _member(world: World) -> tuple[list[str], bool]:
    found = world.a("GetMember", {"team_id": "alpha", "user_id": CARL})["member"]
    return sorted(found.get("product_ids", [])), found.get("all_products", False)


def _session(world: World, session_id: str) -> tuple[str, str]:
    """A session's state and end reason."""
    (found,) = [
        s for s in world.desk.sessions("alpha", include_ended=True) if s["session_id"] == session_id
    ]
    return found["state"], found.get("end_reason", "")


def _team(world: World) -> dict[str, Any]:
    team: dict[str, Any] = world.a("GetTeam", {"team_id": "alpha"})["team"]
    return team


def _audited(world: World, method: str) -> int:
    events = world.a("ListAuditEvents", {"team_id": "alpha", "page_size": 100})["events"]
    return sum(1 for e in events if e["method"].endswith("/" + method))


def test_a6_portal_member_products_from_an_older_page_keep_another_admins_product(
    world: World, two: tuple[TestClient, TestClient]
) -> None:
    """Carl may run Revit. Both open his page; Alice adds AutoCAD and Carl starts it. The
    operator, from the page drawn before, adds Viewer and takes Revit away: AutoCAD is
    kept and Carl's AutoCAD runs on; what the operator changed is said and made."""
    operator, alice = two
    older, first = _older_then(
        operator, alice, MEMBER, MEMBER_PRODUCTS, tick=(("product_ids", "ACAD"),)
    )
    acad = world.desk.entitle(CARL, "ACAD", device_id="dev-c")
    second = _send(
        operator,
        older,
        MEMBER_PRODUCTS,
        tick=(("product_ids", "VIEWER"),),
        untick=(("product_ids", "REVIT"),),
    )
    assert second.status_code == 200
    assert _member(world) == (["ACAD", "VIEWER"], False)
    assert _session(world, acad["session_id"]) == ("SESSION_STATE_ACTIVE", "")
    assert _flash(first.text) == [f"Products of {CARL} changed. Added: AutoCAD."]
    assert _flash(second.text) == [f"Products of {CARL} changed. Added: Viewer. Taken away: Revit."]

    # Sent from a page with nothing changed on it: said so, and nothing sent.
    before = _audited(world, "SetUserProducts")
    for page in (older, operator.get(MEMBER).text):
        unchanged = _send(operator, page, MEMBER_PRODUCTS)
        assert _flash(unchanged.text) == [f"Products of {CARL}: nothing changed."]
    assert _audited(world, "SetUserProducts") == before
    assert _member(world) == (["ACAD", "VIEWER"], False)

    # A form that does not say what its page showed (posted by hand) is the whole list.
    by_hand = operator.post(
        MEMBER_PRODUCTS, data={"csrf": csrf_of(older), "product_ids": ["REVIT"]}
    )
    assert _flash(by_hand.text) == [
        f"Products of {CARL} changed. Added: Revit. Taken away: AutoCAD, Viewer."
    ]
    assert _member(world) == (["REVIT"], False)
    assert _session(world, acad["session_id"]) == ("SESSION_STATE_ENDED", "END_REASON_NOT_ASSIGNED")


def test_a6_portal_member_all_products_from_an_older_page_keep_another_admins_choice(
    world: World, two: tuple[TestClient, TestClient]
) -> None:
    """Alice gives Carl all products and he starts AutoCAD. The operator, from the page
    drawn before (Revit only, all products unticked), adds Viewer: all products stays,
    as only Viewer was changed there, and Carl's AutoCAD runs on."""
    operator, alice = two
    older, first = _older_then(
        operator, alice, MEMBER, MEMBER_PRODUCTS, tick=(("all_products", "on"),)
    )
    acad = world.desk.entitle(CARL, "ACAD", device_id="dev-c")
    second = _send(operator, older, MEMBER_PRODUCTS, tick=(("product_ids", "VIEWER"),))
    assert _member(world) == ([], True)
    assert _session(world, acad["session_id"]) == ("SESSION_STATE_ACTIVE", "")
    assert _flash(first.text) == [f"Products of {CARL} changed. All products: yes."]
    assert _flash(second.text) == [f"Products of {CARL} changed. Added: Viewer."]


def test_a4_portal_default_assignments_from_an_older_page_keep_another_admins_default(
    world: World, two: tuple[TestClient, TestClient]
) -> None:
    """alpha has no default set. Both open Team settings; Alice makes AutoCAD a default
    and Carl (Revit only) starts AutoCAD through it. The operator, from the page drawn
    before, ticks Viewer: the set is AutoCAD and Viewer, and Carl's AutoCAD runs on."""
    operator, alice = two
    older, first = _older_then(operator, alice, DEFAULTS, DEFAULTS, tick=(("product_ids", "ACAD"),))
    acad = world.desk.entitle(CARL, "ACAD", device_id="dev-c")
    second = _send(operator, older, DEFAULTS, tick=(("product_ids", "VIEWER"),))
    assert sorted(_team(world)["default_product_ids"]) == ["ACAD", "VIEWER"]
    assert _session(world, acad["session_id"]) == ("SESSION_STATE_ACTIVE", "")
    assert _flash(first.text) == ["Default assignments saved. Added: AutoCAD."]
    assert _flash(second.text) == ["Default assignments saved. Added: Viewer."]

    # Unticking only what the page showed takes only that away.
    page = operator.get(DEFAULTS).text
    world.a(
        "SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["ACAD", "VIEWER", "REVIT"]}
    )
    third = _send(operator, page, DEFAULTS, untick=(("product_ids", "VIEWER"),))
    assert _flash(third.text) == ["Default assignments saved. Taken away: Viewer."]
    assert sorted(_team(world)["default_product_ids"]) == ["ACAD", "REVIT"]
    unchanged = _send(operator, older, DEFAULTS)
    assert _flash(unchanged.text) == ["Default assignments: nothing changed."]
    assert sorted(_team(world)["default_product_ids"]) == ["ACAD", "REVIT"]


def test_a5_portal_guests_from_an_older_settings_page_keep_another_operators_plan(
    world: World, operators: tuple[TestClient, TestClient]
) -> None:
    """Two operators open alpha's Team settings (Standard, guests without defaults). One
    makes it Premium; the other, from the page drawn before, only ticks "Guests get the
    default assignments too": alpha stays Premium, and its guests get the defaults."""
    one, other = operators
    older, first = _older_then(other, one, DEFAULTS, SETTINGS, typed={"plan": "premium"})
    second = _send(other, older, SETTINGS, tick=(("guest_defaults", "on"),))
    team = _team(world)
    assert (team["plan"], team.get("guest_default_assignments")) == ("PLAN_PREMIUM", True)
    assert _flash(first.text) == ["Plan set to Premium."]
    assert _flash(second.text) == ["Guests now get the default assignments."]

    # Sent from that older page with nothing changed: said so, and nothing sent.
    before = _audited(world, "UpdateTeamSettings")
    unchanged = _send(other, older, SETTINGS)
    assert _flash(unchanged.text) == ["Plan and guests: nothing changed."]
    assert _audited(world, "UpdateTeamSettings") == before
    team = _team(world)
    assert (team["plan"], team.get("guest_default_assignments")) == ("PLAN_PREMIUM", True)


def test_a8_portal_plan_from_an_older_settings_page_keeps_another_operators_guests(
    world: World, operators: tuple[TestClient, TestClient]
) -> None:
    """One operator gives alpha's guests the default assignments; the other, from the
    page drawn before, only makes alpha Premium: guests keep the defaults."""
    one, other = operators
    older, _ = _older_then(other, one, DEFAULTS, SETTINGS, tick=(("guest_defaults", "on"),))
    second = _send(other, older, SETTINGS, typed={"plan": "premium"})
    team = _team(world)
    assert (team["plan"], team.get("guest_default_assignments")) == ("PLAN_PREMIUM", True)
    assert _flash(second.text) == ["Plan set to Premium."]


def _acad(world: World) -> dict[str, Any]:
    (found,) = [p for p in world.a("ListProducts")["products"] if p["product_id"] == "ACAD"]
    return found


ACAD = {
    "product_id": "ACAD",
    "display_name": "AutoCAD",
    "daily_rate": "10",
    "kind": "PRODUCT_KIND_PRODUCT",
    "idle_aware": True,
    "platforms": ["PLATFORM_WINDOWS", "PLATFORM_MACOS", "PLATFORM_LINUX"],
    "min_linux_version": 2022,
}


def test_p1_portal_rate_sheet_change_from_an_older_form_keeps_another_operators_rate(
    world: World, operators: tuple[TestClient, TestClient]
) -> None:
    """Two operators click AutoCAD's Change. One sets 99 tokens a day; the other, from
    the form drawn before, only renames it: the rate stays 99. When the other changes
    the rate too, theirs wins (the last change)."""
    one, other = operators
    older, first = _older_then(
        other, one, "/products?edit=ACAD", "/products", typed={"daily_rate": "99"}
    )
    second = _send(other, older, "/products", typed={"display_name": "AutoCAD 2026"})
    assert _acad(world) == {**ACAD, "display_name": "AutoCAD 2026", "daily_rate": "99"}
    assert _flash(first.text) == ["Product ACAD saved. Changed: tokens a day."]
    assert _flash(second.text) == ["Product ACAD saved. Changed: name."]

    unchanged = _send(other, older, "/products")
    assert _flash(unchanged.text) == ["Product ACAD: nothing changed."]
    assert _acad(world) == {**ACAD, "display_name": "AutoCAD 2026", "daily_rate": "99"}

    last = _send(
        other,
        older,
        "/products",
        typed={"daily_rate": "12"},
        untick=(("platforms", "PLATFORM_MACOS"),),
    )
    assert _flash(last.text) == ["Product ACAD saved. Changed: tokens a day, platforms."]
    assert _acad(world) == {
        **ACAD,
        "display_name": "AutoCAD 2026",
        "daily_rate": "12",
        "platforms": ["PLATFORM_WINDOWS", "PLATFORM_LINUX"],
    }


def test_a5_portal_save_guest_adds_back_no_one_another_admin_removed_meanwhile(
    world: World, two: tuple[TestClient, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alice ticks "guest" on Carl's page; between the form's read of Carl (GetMember)
    and its AssignUsers, the operator removes Carl from alpha. AssignUsers added him
    back, as a guest, and the page said "now a guest": the removal was undone. The
    form now asks for members only (``members_only``): Carl stays out, and the page
    says he is no longer in the team."""
    from client_sdk.admin import AsyncAdminClient

    _, alice = two
    page = alice.get(MEMBER)
    read = AsyncAdminClient.get_member

    async def read_then_removed(self: AsyncAdminClient, team_id: str, user_id: str) -> Any:
        member = await read(self, team_id, user_id)
        monkeypatch.undo()  # once: the form's read
        world.a("UnassignUser", {"team_id": team_id, "user_id": user_id})
        return member

    monkeypatch.setattr(AsyncAdminClient, "get_member", read_then_removed)
    answer = alice.post(
        f"/teams/alpha/member/guest?user={CARL}", data={"csrf": csrf_of(page.text), "guest": "on"}
    )
    members = [m["user_id"] for m in world.a("ListMembers", {"team_id": "alpha"})["members"]]
    assert CARL not in members
    assert answer.status_code == 404
    assert "There is no such user in this team." in unescape(answer.text)


def test_t5_portal_a_move_from_an_older_page_undoes_no_other_administrator_s_move(
    world: World, two: tuple[TestClient, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator moves one of alpha's packs to gamma; between the form's check that
    the pack is alpha's and its MoveTokenPack, Bert (a key for alpha and beta) moves it
    to beta. The move took it out of beta, undoing Bert's. It now names the team it
    moves from (``from_team_id``): refused, in words, and the pack stays in beta."""
    from client_sdk.admin import AsyncAdminClient

    world.desk.team("gamma")
    operator, _ = two
    bert = world.a("CreateAdminKey", {"display_name": "Bert", "team_ids": ["alpha", "beta"]})
    pack = world.desk.buy("alpha", 300)["pack_id"]
    page = operator.get(f"/teams/alpha/packs/move?pack={pack}")
    listed = AsyncAdminClient.list_token_packs

    async def listed_then_moved(self: AsyncAdminClient, team_id: str) -> Any:
        packs = await listed(self, team_id)
        monkeypatch.undo()  # once: the form's check
        body = {"pack_id": pack, "to_team_id": "beta"}
        world.desk.admin("tessera.v1.AdminService/MoveTokenPack", body, token=bert["admin_key"])
        return packs

    monkeypatch.setattr(AsyncAdminClient, "list_token_packs", listed_then_moved)
    answer = operator.post(
        f"/teams/alpha/packs/move?pack={pack}",
        data={"csrf": csrf_of(page.text), "to_team_id": "gamma"},
    )
    assert pack in [p["pack_id"] for p in world.desk.packs("beta")]
    assert world.desk.packs("gamma") == []
    assert _flash(answer.text) == [
        "This pack was moved to beta by another administrator since this page was drawn: "
        "nothing was moved."
    ]
