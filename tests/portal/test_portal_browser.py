"""The portal in a real browser: Playwright driving the system's headless Chromium
(``tests/portal/conftest.py``) against ``python -m server --http-listen``'s portal.

Each change made by clicking is read back over gRPC afterwards (assign a user, change
products, resend an invitation, set defaults, end a session, remove a device); the usage
chart's data and the CSV equal GetUsageReport; a form without its CSRF token is refused; a
signed-out cookie no longer works; a team administrator sees only their teams. Every page
is photographed at 1280 px and at a phone's width into test-output/portal/.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from playwright.sync_api import expect

from portal.web import IDLE_SECONDS
from tests.licensing_desk import at, num
from tests.portal.conftest import SHOTS, World
from tests.support import ADMIN_TOKEN

pytestmark = pytest.mark.sqlite_only(
    "the browser drives the portal, a client of AdminService; the same calls run on both "
    "stores in test_portal_http.py"
)

WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def page(browser: Any, world: World) -> Iterator[Any]:
    context = browser.new_context(viewport=WIDE, base_url=world.portal, timezone_id="Europe/Paris")
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    try:
        yield tab
    finally:
        context.close()


def sign_in(page: Any, credential: str = ADMIN_TOKEN) -> None:
    page.goto("/signin")
    page.get_by_label("Admin key or operator token").fill(credential)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/teams")


def flash(page: Any) -> str:
    text: str = page.locator(".flash").inner_text()
    return text


def test_portal_changes_are_read_back_over_grpc(page: Any, world: World) -> None:
    sign_in(page)
    assert page.get_by_role("link", name="Alpha").is_visible()
    page.get_by_role("link", name="Alpha").click()
    assert page.locator("#available").inner_text() != ""

    # assign a user
    page.get_by_role("link", name="By User").click()
    page.get_by_label("One user a line").fill("Dora Explorer <dora@example.com>")
    page.locator("form.card").get_by_role("checkbox", name="AutoCAD (").check()
    page.get_by_role("button", name="Add users").click()
    assert "1 user assigned" in flash(page)
    dora = world.a("GetMember", {"team_id": "alpha", "user_id": "dora@example.com"})["member"]
    assert (dora["state"], dora["product_ids"]) == ("MEMBER_STATE_INVITED", ["ACAD"])

    # change a user's products
    page.goto("/teams/alpha/member?user=carl@example.com")
    page.get_by_role("checkbox", name="AutoCAD (").check()
    page.get_by_role("checkbox", name="Revit (").uncheck()
    page.get_by_role("button", name="Save products").click()
    assert "Products of carl@example.com changed." in flash(page)
    carl = world.a("GetMember", {"team_id": "alpha", "user_id": "carl@example.com"})["member"]
    assert carl["product_ids"] == ["ACAD"]

    # resend an invitation
    before = _invitations(world, "bob@example.com")
    page.get_by_role("link", name="Invitations").click()
    page.get_by_role("button", name="Resend the invitation to bob@example.com").click()
    assert "Invitation sent again to bob@example.com." in flash(page)
    assert _invitations(world, "bob@example.com") == before + 1

    # default assignments
    page.get_by_role("link", name="Team settings").click()
    page.get_by_role("checkbox", name="Viewer (").check()
    page.get_by_role("button", name="Save default assignments").click()
    assert "Default assignments saved." in flash(page)
    team = world.a("GetTeam", {"team_id": "alpha"})["team"]
    assert team["default_product_ids"] == ["VIEWER"]

    # end a session, with confirmation
    page.get_by_role("link", name="Sessions & devices").click()
    page.get_by_role("link", name="End session of ada@example.com AutoCAD on dev-1").click()
    question = "End the AutoCAD session of Ada (ada@example.com) on device dev-1?"
    assert page.get_by_role("heading", name=question).is_visible()
    page.get_by_role("button", name="End session").click()
    assert f"Session {world.session_id} ended." in flash(page)
    (ended,) = [
        s
        for s in world.desk.sessions("alpha", include_ended=True)
        if s["session_id"] == world.session_id
    ]
    assert (ended["state"], ended["end_reason"]) == (
        "SESSION_STATE_ENDED",
        "END_REASON_ENDED_BY_ADMIN",
    )

    # remove a device, with confirmation
    page.goto("/teams/alpha/member?user=ada@example.com")
    page.get_by_role("link", name="Remove device dev-1 (AutoCAD)").click()
    page.get_by_role("button", name="Remove device").click()
    assert "Device dev-1 removed." in flash(page)
    assert world.desk.devices("ada@example.com", "ACAD") == []

    # import a guest with all products, then remove them (a box to tick first)
    page.goto("/teams/alpha/users")
    page.get_by_label("One user a line").fill("Eve Guest <eve@example.com>")
    page.get_by_role("checkbox", name="All products").check()
    page.get_by_label("Guests").check()
    page.get_by_label("Import: active at once").check()
    page.get_by_role("button", name="Add users").click()
    assert "1 user imported." in flash(page)
    eve = world.a("GetMember", {"team_id": "alpha", "user_id": "eve@example.com"})["member"]
    assert (eve["state"], eve["guest"], eve["all_products"]) == ("MEMBER_STATE_ACTIVE", True, True)
    page.get_by_role("link", name="Eve Guest").click()
    page.get_by_role("button", name="Remove Eve Guest").click()  # refused: box not ticked
    assert "/member?user=eve" in page.url
    page.get_by_label("Yes, remove them from the team").check()
    page.get_by_role("button", name="Remove Eve Guest").click()
    assert "eve@example.com removed from the team." in flash(page)
    members = world.a("ListMembers", {"team_id": "alpha"})["members"]
    assert "eve@example.com" not in {m["user_id"] for m in members}

    # the low-balance threshold: refused in words next to its field, then set
    page.get_by_role("link", name="Overview").click()
    page.get_by_label("Alert when available tokens fall below").fill("-5")
    page.get_by_role("button", name="Save threshold").click()
    assert page.locator("#low_balance_threshold-error").is_visible()
    assert page.get_by_label("Alert when available tokens fall below").input_value() == "-5"
    page.get_by_label("Alert when available tokens fall below").fill("500")
    page.get_by_role("button", name="Save threshold").click()
    assert "Low-balance alert set at 500 tokens." in flash(page)
    team = world.a("GetTeam", {"team_id": "alpha"})["team"]
    assert num(team, "low_balance_threshold") == 500

    # search as you type (SearchUsers)
    page.goto("/teams/alpha/users")
    page.get_by_label("Find a user").press_sequentially("car", delay=30)
    page.wait_for_url("**/teams/alpha/users?q=car")  # the script's last answer is in
    expect(page.locator("#user-rows tr")).to_have_count(1)
    assert page.locator("#user-rows").get_by_role("link", name="Carl").is_visible()
    # the rows swapped in have the table's columns: products and state, not teams
    headings = page.locator("#user-rows").locator("xpath=..").locator("thead th")
    assert headings.all_inner_texts() == ["Name", "Email", "Products", "State"]
    cells = page.locator("#user-rows td").all_inner_texts()
    assert cells == ["Carl", "carl@example.com", "AutoCAD", "active"]  # changed above


def _invitations(world: World, user_id: str) -> int:
    notes = world.a("ListNotifications", {"user_id": user_id}).get("notifications", [])
    return sum(1 for n in notes if n["kind"] == "NOTIFICATION_KIND_INVITATION")


def test_usage_chart_and_csv_equal_get_usage_report(page: Any, world: World) -> None:
    sign_in(page)
    page.goto("/teams/alpha/usage?from=2026-01-01&to=2026-01-03")
    chart = page.evaluate(
        "() => ({labels: window.tesseraUsageChart.data.labels,"
        " sets: window.tesseraUsageChart.data.datasets.map(d => [d.product_id, d.data])})"
    )
    report = world.a(
        "GetUsageReport", {"team_id": "alpha", "start_time": at(), "end_time": at(d=3)}
    )
    expected: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    days = ["2026-01-01", "2026-01-02", "2026-01-03"]
    for row in report["rows"]:
        expected[row["product_id"]][days.index(row["date"])] += num(row, "tokens_charged")
    assert chart["labels"] == days
    assert {product: data for product, data in chart["sets"]} == dict(expected)
    assert page.locator("#total-tokens").inner_text() == str(num(report, "total_tokens_charged"))
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    text = Path(download.value.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["date"], r["product_id"], int(r["tokens_charged"])) for r in rows] == [
        (r["date"], r["product_id"], num(r, "tokens_charged")) for r in report["rows"]
    ]


def test_keyboard_signs_in_and_times_are_local_with_utc_on_hover(page: Any, world: World) -> None:
    page.goto("/signin")
    assert page.evaluate("() => document.activeElement.id") == "credential"  # autofocus
    page.keyboard.type(ADMIN_TOKEN)
    page.keyboard.press("Enter")
    page.wait_for_url("**/teams")
    page.goto("/teams/alpha")
    focused = []
    for _ in range(7):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("() => document.activeElement.textContent.trim()"))
    assert focused == [
        "Skip to content",
        "Tessera",
        "Teams",
        "Rate sheet",
        "Admin keys",
        "Sign out",
        "Overview",
    ]
    expires = page.locator("table time").nth(1)  # the pack's expiry, a year after purchase
    assert expires.get_attribute("title") == "2027-01-01 00:00 UTC"
    assert "GMT+1" in expires.inner_text() and "01:00" in expires.inner_text()  # Paris


def test_a_form_without_its_csrf_token_is_refused(page: Any, world: World) -> None:
    sign_in(page)
    page.goto("/teams/alpha/defaults")
    page.get_by_role("checkbox", name="Viewer (").check()
    page.evaluate("() => document.querySelector('form.card input[name=csrf]').remove()")
    page.get_by_role("button", name="Save default assignments").click()
    assert "did not carry the portal's security token" in page.locator("p.error").inner_text()
    assert "default_product_ids" not in world.a("GetTeam", {"team_id": "alpha"})["team"]


def test_a_signed_out_cookie_no_longer_works(page: Any, world: World) -> None:
    sign_in(page)
    cookies = page.context.cookies()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/signin")
    page.context.add_cookies(cookies)  # the old cookie, put back
    page.goto("/teams")
    assert page.url.endswith("/signin")


def test_a_team_administrator_sees_only_their_teams(page: Any, world: World) -> None:
    key = world.a("CreateAdminKey", {"display_name": "Beta's admin", "team_ids": ["beta"]})
    sign_in(page, key["admin_key"])
    assert page.get_by_text("Team administrator").is_visible()
    links = page.locator("main table a").all_inner_texts()
    assert links == ["Beta"]
    page.goto("/teams/alpha")
    assert page.locator("p.error").inner_text() == "You do not manage this team."
    page.goto("/teams/beta/audit")
    assert page.locator("#audit").is_visible() or page.get_by_text("No changes").is_visible()


def test_search_as_you_type_after_the_key_was_revoked_goes_to_sign_in(
    page: Any, world: World
) -> None:
    key = world.a("CreateAdminKey", {"display_name": "Alpha's admin", "team_ids": ["alpha"]})
    sign_in(page, key["admin_key"])
    page.goto("/teams/alpha/users")
    world.a("RevokeAdminKey", {"admin_key_id": key["key"]["admin_key_id"]})
    page.get_by_label("Find a user").press_sequentially("car", delay=30)
    page.wait_for_url("**/signin")  # the whole page, not the sign-in form inside the table
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.locator("#user-rows").count() == 0
    page.goto("/teams")
    assert page.url.endswith("/signin")  # the portal's session ended too


def test_search_as_you_type_says_when_the_portal_did_not_answer(page: Any, world: World) -> None:
    """A search the portal does not answer (offline, or a proxy's error page) leaves the
    last list, says under the box that the list is not this search's, with no error
    thrown in the page; the next search that is answered clears the words."""
    thrown: list[str] = []
    page.on("pageerror", lambda error: thrown.append(str(error)))
    sign_in(page)
    page.goto("/teams/alpha/users")
    before = page.locator("#user-rows").inner_text()
    page.route("**/users/rows*", lambda route: route.abort())
    page.get_by_label("Find a user").press_sequentially("car", delay=30)
    status = page.locator("#q-status")
    expect(status).to_contain_text("The search for \u201ccar\u201d could not be made")
    assert page.locator("#user-rows").inner_text() == before
    page.unroute("**/users/rows*")
    page.route("**/users/rows*", lambda route: route.fulfill(status=502, body="Bad gateway"))
    page.get_by_label("Find a user").press_sequentially("l", delay=30)
    expect(status).to_contain_text("The search for \u201ccarl\u201d could not be made")
    page.unroute("**/users/rows*")
    page.get_by_label("Find a user").press("Backspace")
    expect(page.locator("#user-rows")).to_contain_text("carl@example.com")
    expect(page.locator("#user-rows")).not_to_contain_text("ada@example.com")
    expect(status).to_have_text("")
    assert thrown == []


def test_portal_assign_boxes_suggest_a_member_as_a_name_is_typed_and_pick_them(
    page: Any, world: World
) -> None:
    """The guide's "begin typing in their name. Select the existing user from the list":
    on By Product, part of Carl's name shows him in the labelled listbox; Down and Enter
    pick him (his "Full Name <email>" written on the line), and Assign users gives him the
    product, read back over GetMember. On By User, a click picks on the box's second line."""
    sign_in(page)
    page.goto("/teams/alpha/products?product=VIEWER")
    box = page.get_by_label("One user a line")
    box.press_sequentially("Car", delay=30)
    found = page.get_by_role("listbox", name="Members of this team matching the line being typed")
    expect(found).to_be_visible()
    carl = found.get_by_role("option", name="Carl carl@example.com")
    expect(carl).to_have_count(1)
    expect(page.locator("#users-found")).to_have_text(
        "1 member matches: Down and Up to choose, Enter to pick, Escape to close."
    )
    assert box.get_attribute("aria-controls") == "users-suggestions"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "by-product-suggestions-1280.png"), full_page=True)
    box.press("ArrowDown")
    expect(carl).to_have_attribute("aria-selected", "true")
    assert box.get_attribute("aria-activedescendant") == carl.get_attribute("id")
    box.press("Enter")
    expect(box).to_have_value("Carl <carl@example.com>")
    expect(found).to_be_hidden()
    page.get_by_role("button", name="Assign users").click()
    assert flash(page) == "Viewer added to the products of Carl (carl@example.com)."
    assert "/teams/alpha/products?product=VIEWER" in page.url
    member = world.a("GetMember", {"team_id": "alpha", "user_id": "carl@example.com"})["member"]
    assert sorted(member["product_ids"]) == ["REVIT", "VIEWER"]

    page.goto("/teams/alpha/users")
    box = page.get_by_label("One user a line")
    box.fill("Dora Explorer <dora@example.com>\n")
    box.press("End")
    box.press_sequentially("bui", delay=30)
    page.get_by_role("option", name="Bob Builder").click()
    expect(box).to_have_value("Dora Explorer <dora@example.com>\nBob Builder <bob@example.com>")
    expect(box).to_be_focused()


#: Every visible form control without a label (its own <label> or an aria-label).
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(el => el.type !== 'hidden' && !el.labels.length && !el.getAttribute('aria-label'))
  .map(el => el.name || el.id)"""

PAGES = [
    ("signin", "/signin"),
    ("teams", "/teams"),
    ("admin-keys", "/admin-keys"),
    ("rate-sheet", "/products"),
    ("change-product", "/products?edit=ACAD"),
    ("overview", "/teams/alpha"),
    ("usage", "/teams/alpha/usage?from=2026-01-01&to=2026-01-03"),
    ("users", "/teams/alpha/users"),
    ("user-search", "/teams/alpha/users?q=ad"),
    ("member", "/teams/alpha/member?user=ada@example.com"),
    ("issue-user-key", "/teams/alpha/member/key?user=ada@example.com"),
    ("by-product", "/teams/alpha/products?product=ACAD"),
    ("invitations", "/teams/alpha/invitations"),
    ("defaults", "/teams/alpha/defaults"),
    ("sessions", "/teams/alpha/sessions"),
    ("end-session", "/teams/alpha/sessions/end?session={session}"),
    ("ledger", "/teams/alpha/ledger"),
    ("audit", "/teams/alpha/audit"),
    ("not-found", "/teams/nobody"),
]


@pytest.mark.timeout(240)
def test_every_page_photographed_wide_and_on_a_phone(page: Any, world: World) -> None:
    """Screenshots for a person to look at; each page also has its heading, no script
    error and no element wider than the window."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    world.a("UpdateTeamSettings", {"team_id": "alpha", "low_balance_threshold": 9_999})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: _console(errors, m))
    sign_in(page)
    for size_name, size in (("1280", WIDE), ("phone", PHONE)):
        page.set_viewport_size(size)
        for name, path in PAGES:
            page.goto(path.format(session=world.session_id))
            assert page.locator("h1").count() == 1, name
            page.screenshot(path=str(SHOTS / f"{name}-{size_name}.png"), full_page=True)
            unlabelled = page.evaluate(UNLABELLED)
            assert unlabelled == [], f"{name}: controls without a label: {unlabelled}"
            wide = page.evaluate("() => document.documentElement.scrollWidth")
            if wide > size["width"]:
                errors.append(f"{name} is {wide} px wide at {size_name}")
        if size_name == "1280":
            page.goto("/signin")  # signed in: the page still renders
    assert errors == []


@pytest.mark.timeout(240)
def test_every_page_keeps_within_the_window_with_the_longest_names(page: Any, world: World) -> None:
    """docs/portal.md: the pages read at 1280 px and at a phone's width, only tables
    scrolling in their frame. A product's and a team's display name of 200 characters,
    a device id of 200 and a user's name of 256, none with a space (a name in a script
    without them, or a pasted id), made eight pages up to twice the window's width."""
    longest = {"team": "T" * 200, "product": "AutoCAD" + "\u00e9" * 193, "user": "\u00d6" * 256}
    world.a("UpdateTeamSettings", {"team_id": "alpha", "display_name": longest["team"]})
    acad = next(p for p in world.a("ListProducts")["products"] if p["product_id"] == "ACAD")
    world.a("UpsertProduct", {"product": {**acad, "display_name": longest["product"]}})
    user = f"{longest['user']} <ada@example.com>"
    world.a("ImportUsers", {"team_id": "alpha", "users": [user], "all_products": True})
    device = world.desk.entitle("carl@example.com", "REVIT", device_id="host-" + "x" * 195)
    pages = [
        *PAGES,
        ("end-on-long-device", f"/teams/alpha/sessions/end?session={device['session_id']}"),
    ]
    sign_in(page)
    wider: list[str] = []
    for size_name, size in (("1280", WIDE), ("phone", PHONE)):
        page.set_viewport_size(size)
        for name, path in pages:
            page.goto(path.format(session=world.session_id))
            wide = page.evaluate("() => document.documentElement.scrollWidth")
            if wide > size["width"]:
                wider.append(f"{name} is {wide} px wide at {size_name}")
    assert wider == []


def _console(errors: list[str], message: Any) -> None:
    """A script's error or a CSP refusal; the 4xx that error pages answer with are meant."""
    if message.type == "error" and "status of 4" not in message.text:
        errors.append(message.text)


def test_r1_download_csv_after_the_key_was_revoked_goes_to_sign_in(page: Any, world: World) -> None:
    """docs/portal.md: a credential the server no longer takes sends any page, form,
    search or CSV to sign in. The link's ``download`` attribute made Chromium save the
    sign-in page as the CSV file instead, and stay on the usage page."""
    made = world.a("CreateAdminKey", {"display_name": "Dana", "team_ids": ["alpha"]})
    sign_in(page, made["admin_key"])
    page.goto("/teams/alpha/usage?from=2026-01-01&to=2026-01-03")
    world.a("RevokeAdminKey", {"admin_key_id": made["key"]["admin_key_id"]})
    downloads: list[Any] = []
    page.on("download", lambda download: downloads.append(download))
    page.get_by_role("link", name="Download CSV").click()
    page.wait_for_url("**/signin")
    assert downloads == []


def test_r1_the_usage_page_fits_a_phone_beside_a_member_of_an_ordinary_long_name(
    browser: Any, world: World
) -> None:
    """The User filter's option "Name (email)" of "Christopher Johnson" made the page 499
    px wide in a 390 px window: the select could not shrink inside its row."""
    world.a(
        "ImportUsers",
        {
            "team_id": "alpha",
            "users": ["Christopher Johnson <christopher.johnson@example.com>"],
            "all_products": True,
        },
    )
    context = browser.new_context(viewport=PHONE, base_url=world.portal)
    try:
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        sign_in(tab)
        tab.goto("/teams/alpha/usage?from=2026-01-01&to=2026-01-03")
        wide, window = tab.evaluate(
            "() => [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert wide <= window, f"the page is {wide} px wide in a {window} px window"
    finally:
        context.close()


def test_portal_suggestions_wait_for_two_characters_not_two_utf16_units(
    page: Any, world: World
) -> None:
    """The users box asks for suggestions once its line has two characters. It counted
    UTF-16 units, so one emoji (two of them) asked the portal for the members matching
    it. The box's wait is the page's clock, moved by the test, not slept through."""
    asked: list[str] = []
    page.on(
        "request",
        lambda request: (
            asked.append(unquote(request.url.split("q=", 1)[1]))
            if "/users/suggest" in request.url
            else None
        ),
    )
    page.clock.install()
    sign_in(page)
    page.goto("/teams/alpha/users")
    box = page.get_by_label("One user a line")
    box.fill("\N{SLIGHTLY SMILING FACE}")
    page.clock.run_for(1_000)
    box.fill("ca")  # two characters: asked, and answered
    page.clock.run_for(1_000)
    expect(page.locator("#users-suggestions")).to_contain_text("carl@example.com")
    assert asked == ["ca"]


@pytest.mark.parametrize("failure", ["offline", "not JSON"])
def test_portal_suggestions_not_answered_close_the_list_and_say_so(
    page: Any, world: World, failure: str
) -> None:
    """The users box's suggestions when the portal does not answer (offline) or answers
    what is not its JSON (a proxy's 502 page labelled application/json): the previous
    line's list stayed open under a line it does not match, Enter wrote its suggestion
    over the line typed, and the page threw. Now the list closes, the status line says
    that suggestions are unavailable and to type the line in full, and Enter keeps the
    line as typed (it starts the next one); nothing is thrown."""
    thrown: list[str] = []
    page.on("pageerror", lambda error: thrown.append(str(error)))
    sign_in(page)
    page.goto("/teams/alpha/users")
    box = page.get_by_label("One user a line")
    box.press_sequentially("ca", delay=30)
    found = page.locator("#users-suggestions")
    expect(found).to_contain_text("carl@example.com")
    if failure == "offline":
        page.route("**/users/suggest*", lambda route: route.abort())
    else:
        page.route(
            "**/users/suggest*",
            lambda route: route.fulfill(
                status=502, content_type="application/json", body="<html>Bad gateway</html>"
            ),
        )
    box.press_sequentially("x", delay=30)  # "cax": nobody's
    expect(page.locator("#users-found")).to_have_text(
        "Suggestions are unavailable (the portal did not answer): type the line in full, "
        "as Full Name <email>."
    )
    expect(found).to_be_hidden()
    box.press("ArrowDown")
    box.press("Enter")
    assert box.input_value() == "cax\n"
    assert thrown == []


def test_portal_search_as_you_type_says_it_is_searching_until_the_answer_is_in(
    page: Any, world: World
) -> None:
    """A search the portal is slow to answer (over 60 s when the server hangs) left the
    whole list in the table with nothing saying it was not the search's yet. Now the
    status line says "Searching for “car”…" and the rows are aria-busy until the answer
    is in, which clears both."""
    sign_in(page)
    page.goto("/teams/alpha/users")
    held: list[Any] = []
    page.route("**/users/rows*", lambda route: held.append(route))
    rows = page.locator("#user-rows")
    status = page.locator("#q-status")
    with page.expect_request("**/users/rows*"):
        # One input event: keys typed one by one on a loaded host came more than the
        # 150 ms wait apart, and each asked its own search.
        page.get_by_label("Find a user").fill("car")
    expect(status).to_have_text("Searching for \u201ccar\u201d\u2026")
    expect(rows).to_have_attribute("aria-busy", "true")
    assert "ada@example.com" in rows.inner_text()  # the list before, dimmed, said so
    assert len(held) == 1
    held[0].continue_()
    expect(rows).not_to_contain_text("ada@example.com")
    expect(status).to_have_text("")
    expect(rows).not_to_have_attribute("aria-busy", "true")
    assert rows.locator("tr").all_inner_texts() == ["Carl\tcarl@example.com\tRevit\tactive"]


def test_a4_a_long_product_list_narrows_as_its_filter_is_typed_and_keeps_the_ticks_it_hides(
    page: Any, world: World
) -> None:
    """A member's products are a box per product of the rate sheet, with nothing to find
    one by in a long one. Past 10, a filter above the boxes shows those whose name or id
    holds what is typed (case and accents aside); it hides boxes and never unticks one,
    says how many ticked ones it hides, and Enter in it sends nothing: a save sends
    the hidden ticks as they are."""
    sign_in(page)
    page.goto("/teams/alpha/member?user=carl@example.com")
    short = page.locator("input[name=product_ids]").count()
    assert short <= 10
    assert page.get_by_label("Filter products").count() == 0  # a short list has none
    acad = next(p for p in world.a("ListProducts")["products"] if p["product_id"] == "ACAD")
    for n in range(12):
        plant = {**acad, "product_id": f"PLANT{n:02d}", "display_name": f"Plant Design {n:02d}"}
        world.a("UpsertProduct", {"product": plant})
    sheet = len(world.a("ListProducts", {"page_size": 1000})["products"])
    assert sheet == short + 12
    page.reload()
    boxes = page.locator("input[name=product_ids]")
    assert boxes.count() == sheet > 10
    status = page.locator("#product-filter-1-status")
    page.get_by_label("Filter products").fill("PLÁNT design 0")
    expect(status).to_have_text(
        f"10 of {sheet} products shown; 1 ticked, hidden by the filter, stay ticked"
    )
    assert page.locator("input[name=product_ids]:visible").count() == 10
    revit = page.locator("input[name=product_ids][value=REVIT]")
    assert revit.is_hidden() and revit.is_checked()
    page.get_by_role("checkbox", name="Plant Design 03 (").check()
    page.get_by_label("Filter products").press("Enter")
    expect(page.locator("main > p.flash")).to_have_count(0)  # nothing sent
    page.get_by_label("Filter products").fill("plant12")
    expect(status).to_have_text(
        f"0 of {sheet} products shown; 2 ticked, hidden by the filter, stay ticked"
    )
    page.get_by_label("Filter products").fill("")
    expect(status).to_have_text("")
    assert page.locator("input[name=product_ids]:visible").count() == sheet
    page.get_by_label("Filter products").fill("plant11")
    expect(status).to_have_text(
        f"1 of {sheet} products shown; 2 ticked, hidden by the filter, stay ticked"
    )
    page.get_by_role("button", name="Save products").click()
    assert "Products of carl@example.com changed." in flash(page)
    carl = world.a("GetMember", {"team_id": "alpha", "user_id": "carl@example.com"})["member"]
    assert sorted(carl["product_ids"]) == ["PLANT03", "REVIT"]


def test_portal_a_session_ended_mid_form_says_so_and_signs_in_back_to_the_form(
    page: Any, world: World
) -> None:
    """A form sent once the session ended (unused for 8 hours) went to a sign-in page
    that said nothing of it, then to /teams. Now sign-in says that the session ended
    and the form was not sent, and comes back to the form's page."""
    sign_in(page)
    page.goto("/teams/alpha/users")
    page.get_by_label("One user a line").fill("Dora Explorer <dora@example.com>")
    assert world.server.server.portal is not None
    sessions = world.server.server.portal.app.state.sessions
    for session in sessions._by_id.values():
        session.last_seen -= IDLE_SECONDS + 1  # unused for over 8 hours
    page.get_by_role("button", name="Add users").click()
    page.wait_for_url("**/signin?**")
    expect(page.locator("#session-ended")).to_have_text(
        "Your session ended (unused for 8 hours): sign in again; the form was not sent."
    )
    page.get_by_label("Admin key or operator token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/teams/alpha/users")
    expect(page.get_by_role("heading", name="Users of Alpha")).to_be_visible()
    members = world.a("ListMembers", {"team_id": "alpha"})["members"]
    assert "dora@example.com" not in {m["user_id"] for m in members}
