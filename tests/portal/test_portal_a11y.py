"""The portal for an administrator at the keyboard or with a screen reader, in a real
browser (``test_portal_browser.py``'s Playwright page): each page's title says which page
it is, or the error; the focus starts where a form's answer is (the first refused
control, by ``autofocus``, so without script too; else by the page's script the refusal
above the form, or what was done); a group of boxes is described by its refusal; the focus ring stands out (3:1); action links in a
table name their row; a table's scrolling frame is a named region."""

from __future__ import annotations

from typing import Any

import pytest

from tests.portal import test_portal_browser
from tests.portal.conftest import World
from tests.portal.test_portal_browser import sign_in

page = test_portal_browser.page  # the fixture: a tab of Chromium at 1280 px, on the portal

pytestmark = pytest.mark.sqlite_only(
    "the browser drives the portal, a client of AdminService; the pages are the same on both stores"
)

#: What has the focus: an element's id, else its class, else its tag ("BODY": nothing).
FOCUSED = """() => { const e = document.activeElement;
  return e === document.body ? 'BODY' : e.id || e.className || e.tagName; }"""


def focused(page: Any) -> str:
    found: str = page.evaluate(FOCUSED)
    return found


def buy(page: Any, tokens: str, answered: str, *, click: bool = False) -> None:
    """Overview's Buy tokens form sent with ``tokens`` typed, by Enter (or the button),
    once its answer (``answered``, a selector) is on the page."""
    page.goto("/teams/alpha")
    box = page.get_by_label("Tokens", exact=True)
    box.fill(tokens)
    if click:
        page.get_by_role("button", name="Buy tokens").click()
    else:
        box.press("Enter")
    page.wait_for_selector(answered)


def test_portal_a11y_each_page_title_names_its_tab(page: Any, world: World) -> None:
    sign_in(page)
    tabs = [
        ("Overview", "/teams/alpha"),
        ("Usage", "/teams/alpha/usage?from=2026-01-01&to=2026-01-03"),
        ("By User", "/teams/alpha/users"),
        ("By Product", "/teams/alpha/products?product=ACAD"),
        ("Invitations", "/teams/alpha/invitations"),
        ("Team settings", "/teams/alpha/defaults"),
        ("Sessions & devices", "/teams/alpha/sessions"),
        ("Ledger", "/teams/alpha/ledger"),
        ("Audit", "/teams/alpha/audit"),
    ]
    for tab, path in tabs:
        page.goto(path)
        assert page.title() == f"{tab} · Alpha · Tessera portal", path
        assert page.locator("nav.tabs [aria-current=page]").inner_text() == tab, path
    page.goto("/teams/alpha/member?user=carl@example.com")
    assert page.title() == "Carl · Alpha · Tessera portal"
    page.goto(f"/teams/alpha/sessions/end?session={world.session_id}&user=ada@example.com")
    assert page.title() == (
        "End the AutoCAD session of Ada (ada@example.com) on device dev-1? · Alpha · Tessera portal"
    )


def test_portal_a11y_an_error_page_title_says_the_error(page: Any, world: World) -> None:
    sign_in(page)
    page.goto("/teams/nobody")
    assert page.title() == "Error: Not found · nobody · Tessera portal"
    assert page.locator("h1").inner_text() == "nobody"
    assert page.locator("main p.error").inner_text() == "There is no such team."
    page.goto("/teams/alpha/member?user=nobody@example.com")
    assert page.title() == "Error: Not found · Alpha · Tessera portal"
    # A refused form's page, and a page refusing what it was asked (the usage's days).
    buy(page, "abc", "#tokens-error", click=True)
    assert page.title() == "Error: Overview · Alpha · Tessera portal"
    page.goto("/teams/alpha/usage?from=2026-01-03&to=2026-01-01")
    assert page.title() == "Error: Usage · Alpha · Tessera portal"
    # A team the key does not manage.
    sign_in(
        page, world.a("CreateAdminKey", {"display_name": "A", "team_ids": ["alpha"]})["admin_key"]
    )
    page.goto("/teams/beta")
    assert page.title() == "Error: Refused · beta · Tessera portal"
    assert page.locator("main p.error").inner_text() == "You do not manage this team."


def test_portal_a11y_a_refused_form_puts_the_focus_on_the_first_refused_control(
    page: Any, world: World
) -> None:
    """``autofocus`` (no script needed) on the first refused control, and on that one
    alone: a page has one element with it."""
    sign_in(page)
    buy(page, "abc", "#tokens-error")
    assert focused(page) == "tokens"

    # Two refused: the first in the page's order has the focus, and only it autofocus.
    page.goto("/products")
    page.get_by_label("Product id").fill("NEWP")
    page.get_by_label("Tokens a day").fill("lots")
    page.get_by_label("Oldest Linux release").fill("soon")
    page.get_by_role("button", name="Save product").click()
    page.wait_for_selector("#min_linux_version-error")
    assert page.locator("#daily_rate-error").is_visible()
    assert focused(page) == "daily_rate"
    assert page.locator("[autofocus]").count() == 1

    # A group of boxes refused: its first box.
    page.goto("/admin-keys")
    page.get_by_label("Who holds it").fill("Dana")
    page.get_by_role("button", name="Make the key").click()
    page.wait_for_selector("#team_ids-error")
    assert page.evaluate("() => document.activeElement.name") == "team_ids"
    assert page.evaluate("() => document.activeElement.value") == "alpha"

    # By User's users box, sent empty.
    page.goto("/teams/alpha/users")
    page.get_by_role("button", name="Add users").click()
    page.wait_for_selector("#users-error")
    assert focused(page) == "users"

    # The usage's days: the From box.
    page.goto("/teams/alpha/usage?from=2026-01-03&to=2026-01-01")
    assert page.evaluate("() => document.activeElement.name") == "from"


def test_portal_a11y_a_refused_control_has_the_focus_without_script(
    browser: Any, world: World
) -> None:
    tab = browser.new_context(base_url=world.portal, java_script_enabled=False).new_page()
    try:
        tab.set_default_timeout(15_000)
        sign_in(tab)
        buy(tab, "abc", "#tokens-error", click=True)
        assert focused(tab) == "tokens"
    finally:
        tab.context.close()


def test_portal_a11y_a_refusal_above_the_form_has_the_focus(page: Any, world: World) -> None:
    """A refusal with no control to show it by (here: a session not one of the team's) is
    said above the form, and the focus starts there; so does a page's refusal."""
    sign_in(page)
    page.goto("/teams/alpha/sessions/end?session=no-such-session")
    alert = page.locator("main > p.error[role=alert]")
    assert alert.inner_text() == (
        "This session is not one of this team's live sessions: it cannot be ended here."
    )
    assert page.evaluate("() => document.activeElement.matches('main > p.error')")
    assert page.evaluate("() => document.activeElement.tabIndex") == -1
    page.goto("/teams/nobody")
    assert page.evaluate("() => document.activeElement.textContent") == "There is no such team."


def test_portal_a11y_a_done_form_puts_the_focus_on_what_it_says(page: Any, world: World) -> None:
    sign_in(page)
    buy(page, "10", ".flash")
    assert focused(page) == "flash"
    assert page.evaluate("() => document.activeElement.textContent") == "Bought 10 tokens."
    # A new key's secret, shown once: the focus on the card that says so.
    page.goto("/admin-keys")
    page.get_by_label("Who holds it").fill("Dana")
    page.locator("fieldset").get_by_role("checkbox", name="Beta").check()
    page.get_by_role("button", name="Make the key").click()
    page.wait_for_selector("#new-key")
    assert focused(page) == "new-key"
    assert page.evaluate("() => document.activeElement.textContent").count("Admin key for Dana")


DESCRIBED = """(sel) => { const f = document.querySelector(sel);
  return [f.tagName, f.getAttribute('aria-invalid'), f.getAttribute('aria-describedby')]; }"""


def test_portal_a11y_a_group_of_boxes_is_described_by_its_refusal(page: Any, world: World) -> None:
    sign_in(page)
    page.goto("/admin-keys")
    page.get_by_label("Who holds it").fill("Dana")
    page.get_by_role("button", name="Make the key").click()
    page.wait_for_selector("#team_ids-error")
    group = "fieldset:has(#team_ids-error)"
    assert page.evaluate(DESCRIBED, group) == ["FIELDSET", "true", "team_ids-error"]

    page.goto("/products")
    page.get_by_label("Product id").fill("NEWP")
    page.get_by_label("Tokens a day").fill("5")
    page.get_by_role("button", name="Save product").click()
    page.wait_for_selector("#platforms-error")
    group = "fieldset:has(#platforms-error)"
    assert page.evaluate(DESCRIBED, group) == ["FIELDSET", "true", "platforms-error"]
    assert page.evaluate("() => document.activeElement.name") == "platforms"

    # product_choices: a product no longer on the rate sheet (the page is older).
    page.goto("/teams/alpha/users")
    page.get_by_label("One user a line").fill("Zed Zero <zed@example.com>")
    ticked = page.locator("form.card").get_by_role("checkbox", name="AutoCAD (")
    ticked.check()
    ticked.evaluate("box => { box.value = 'GONE'; }")
    page.get_by_role("button", name="Add users").click()
    page.wait_for_selector("#product_ids-error")
    group = "fieldset:has(#product_ids-error)"
    assert page.evaluate(DESCRIBED, group) == ["FIELDSET", "true", "product_ids-error"]
    assert page.evaluate("() => document.activeElement.name") == "all_products"


def _luminance(rgb: str) -> float:
    r, g, b = (int(x) / 255 for x in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3])
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _contrast(one: str, other: str) -> float:
    a, b = sorted((_luminance(one), _luminance(other)), reverse=True)
    return (a + 0.05) / (b + 0.05)


RING = """(around) => { const e = document.activeElement;
  return [getComputedStyle(e).outlineStyle, getComputedStyle(e).outlineColor,
          getComputedStyle(e.closest(around)).backgroundColor]; }"""


def test_portal_a11y_the_focus_ring_stands_out_3_to_1(page: Any, world: World) -> None:
    """WCAG 1.4.11: the keyboard's focus ring against what is around it, on a white card,
    on the page's grey, and on the dark top bar."""
    sign_in(page)
    page.goto("/teams/alpha")
    page.get_by_label("Tokens", exact=True).focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")  # from the keyboard: :focus-visible
    style, ring, card = page.evaluate(RING, ".card")
    assert (style, ring, card) == ("solid", "rgb(36, 87, 197)", "rgb(255, 255, 255)")
    assert _contrast(ring, card) >= 3
    assert _contrast(ring, page.evaluate("getComputedStyle(document.body).backgroundColor")) >= 3
    page.locator("nav.tabs a").first.focus()
    page.keyboard.press("Shift+Tab")  # the top bar's Sign out
    style, ring, bar = page.evaluate(RING, ".top")
    assert (style, page.evaluate("document.activeElement.textContent")) == ("solid", "Sign out")
    assert _contrast(ring, bar) >= 3, (ring, bar)


NAMES = "els => els.map(e => e.getAttribute('aria-label') || e.textContent.trim())"


def test_portal_a11y_action_links_in_a_table_name_their_row(page: Any, world: World) -> None:
    sign_in(page)
    key = world.a("CreateAdminKey", {"display_name": "Dana", "team_ids": ["beta"]})
    page.goto("/teams/alpha/sessions")
    assert page.locator("#sessions a:text('End…')").evaluate_all(NAMES) == [
        "End session of ada@example.com AutoCAD on dev-1"
    ]
    assert page.locator("#devices a").evaluate_all(NAMES) == [
        "Remove the device dev-1 of ada@example.com (AutoCAD)"
    ]
    page.goto("/admin-keys")
    assert page.locator("#keys a").evaluate_all(NAMES) == [
        f"Revoke admin key Dana ({key['key']['admin_key_id']})"
    ]


def test_portal_a11y_sign_in_after_the_session_ended_describes_the_focused_box(
    page: Any, world: World
) -> None:
    """The box has the focus at load, so a screen reader starts there: why the session
    ended (and that the form was not sent) is read with it, and a refusal too."""
    page.goto("/signin?ended=1&form=1")
    assert focused(page) == "credential"
    box = page.locator("#credential")
    assert box.get_attribute("aria-describedby") == "session-ended"
    assert "the form was not sent" in page.locator("#session-ended").inner_text()
    box.fill("not-a-key")
    box.press("Enter")
    page.wait_for_selector("#credential-error")
    assert focused(page) == "credential"
    assert box.get_attribute("aria-describedby") == "credential-error"
    assert page.locator("[autofocus]").count() == 1
    assert page.title() == "Error: Sign in · Tessera portal"


REGIONS = """() => [...document.querySelectorAll('.scroll')].map(f =>
  [f.getAttribute('role'), f.getAttribute('aria-label'), f.tabIndex])"""


def test_portal_a11y_a_table_scrolling_frame_is_a_named_region(page: Any, world: World) -> None:
    """A frame that scrolls sideways is a tab stop (to scroll it by keyboard): named by
    its table's heading, not an unnamed stop."""
    sign_in(page)
    page.goto("/teams/alpha/sessions")
    assert page.evaluate(REGIONS) == [
        ["region", "Live sessions", 0],
        ["region", "Devices of these users", 0],
    ]
    page.goto("/teams/alpha")
    assert page.evaluate(REGIONS) == [["region", "Token packs", 0]]
    page.goto("/teams/alpha/products?product=ACAD")
    assert page.evaluate(REGIONS) == [["region", "Who may run AutoCAD", 0]]
    page.goto("/teams")
    assert page.evaluate(REGIONS) == [["region", "Teams you manage", 0]]
