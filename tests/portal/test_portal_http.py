"""The portal's HTTP layer without a browser (Starlette's TestClient), on every store:
sign-in and its cookie, CSRF, sign-out, errors in words next to their field, the CSV
against GetUsageReport, a team administrator's teams, and ``--http-listen`` itself."""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import grpc
import httpx2
import pytest
from starlette.testclient import TestClient

from client_sdk import RetryPolicy
from client_sdk.admin import AsyncAdminClient
from client_sdk.errors import ServerError, Unavailable
from portal import operator_pages, pages, present, serve, team_pages
from portal import web as portal_web
from portal.app import create_app
from portal.pages import NOT_OFFERED, in_words
from portal.team_pages import SEARCH_PAGE
from portal.web import IDLE_SECONDS, Sessions
from server.app import TesseraServer
from server.config import Config
from server.listen import StartRefused
from tests.grpcurl import GrpcurlError
from tests.licensing_desk import Desk, L, at, num
from tests.portal.conftest import World, csrf_of
from tests.portal.test_sessions import Clock
from tests.support import ADMIN_TOKEN, ServerProcess, ServerThread, running


@pytest.fixture
def web(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.target), base_url="http://127.0.0.1") as client:
        yield client


def sign_in(
    client: TestClient, credential: str = ADMIN_TOKEN, next_page: str | None = None
) -> httpx2.Response:
    """Sign in with ``credential`` (``next_page``: the form's ``next``, the page to go
    back to); the answer, not followed."""
    page = client.get("/signin")
    data = {"csrf": csrf_of(page.text), "credential": credential}
    if next_page is not None:
        data["next"] = next_page
    return client.post("/signin", data=data, follow_redirects=False)


def sign_in_as_alphas_admin(web: TestClient, world: World) -> dict[str, Any]:
    """Sign out, then in again with a new admin key for alpha alone; the key."""
    key: dict[str, Any] = world.a("CreateAdminKey", {"display_name": "A", "team_ids": ["alpha"]})
    web.cookies.clear()
    sign_in(web, key["admin_key"])
    return key


def field_error(html: str, name: str) -> str:
    """The words shown next to the field ``name`` (``_macros.html``'s ``field_error``)."""
    found = re.search(rf'<p class="field-error" id="{name}-error" role="alert">([^<]*)</p>', html)
    assert found, f"no error next to {name}"
    return found.group(1).replace("&#39;", "'")


def test_signin_sets_an_httponly_strict_cookie_under_a_strict_csp(web: TestClient) -> None:
    page = web.get("/signin")
    assert {k: page.headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    answer = sign_in(web)
    assert (answer.status_code, answer.headers["location"]) == (303, "/teams")
    cookie = answer.headers["set-cookie"].lower()
    assert "tessera_portal=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert ADMIN_TOKEN not in answer.headers["set-cookie"]  # the key stays on the portal
    teams = web.get("/teams")
    assert "Operator" in teams.text
    assert 'href="/teams/alpha"' in teams.text and 'href="/teams/beta"' in teams.text
    assert re.search(r"<td class=\"num\">9,9\d\d</td>", teams.text)  # numbers formatted


def test_a_wrong_key_is_refused_in_words(web: TestClient) -> None:
    answer = sign_in(web, "tsa_not-a-key")
    assert answer.status_code == 401
    assert "This key is not known to the server" in answer.text
    assert 'id="credential-error"' in answer.text
    assert web.get("/teams", follow_redirects=False).headers["location"] == "/signin"


def test_a_form_without_its_csrf_token_is_refused(web: TestClient, world: World) -> None:
    sign_in(web)
    for data in ({"product_ids": "ACAD"}, {"product_ids": "ACAD", "csrf": "forged"}):
        refused = web.post("/teams/alpha/defaults", data=data)
        assert refused.status_code == 403
        assert "did not carry the portal&#39;s security token" in refused.text
    assert "default_product_ids" not in world.a("GetTeam", {"team_id": "alpha"})["team"]
    page = web.get("/teams/alpha/defaults")
    done = web.post(
        "/teams/alpha/defaults", data={"product_ids": "ACAD", "csrf": csrf_of(page.text)}
    )
    assert "Default assignments saved." in done.text
    assert world.a("GetTeam", {"team_id": "alpha"})["team"]["default_product_ids"] == ["ACAD"]


def test_a_signed_out_cookie_no_longer_works(web: TestClient, world: World) -> None:
    sign_in(web)
    cookie = web.cookies.get("tessera_portal")
    assert cookie
    page = web.get("/teams")
    out = web.post("/signout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert (out.status_code, out.headers["location"]) == (303, "/signin")
    with TestClient(web.app, base_url="http://127.0.0.1") as thief:
        thief.cookies.set("tessera_portal", cookie)
        assert thief.get("/teams", follow_redirects=False).headers["location"] == "/signin"


def test_a_sign_in_over_a_live_session_ends_that_session(web: TestClient, world: World) -> None:
    sign_in(web)
    operators = web.cookies.get("tessera_portal")
    assert operators
    key = world.a("CreateAdminKey", {"display_name": "A", "team_ids": ["alpha"]})
    assert sign_in(web, key["admin_key"]).headers["location"] == "/teams"  # the same browser
    assert "Team administrator" in web.get("/teams").text
    assert len(web.app.state.sessions) == 1
    with TestClient(web.app, base_url="http://127.0.0.1") as thief:
        thief.cookies.set("tessera_portal", operators)
        assert thief.get("/teams", follow_redirects=False).headers["location"] == "/signin"


def test_a_refused_field_is_shown_next_to_it_in_words(web: TestClient, world: World) -> None:
    sign_in(web)
    page = web.get("/teams/alpha/users")
    answer = web.post(
        "/teams/alpha/users",
        data={"csrf": csrf_of(page.text), "users": "Zed <not an email>", "all_products": "on"},
    )
    assert answer.status_code == 400
    assert 'id="users-error"' in answer.text
    assert "Zed &lt;not an email&gt;" in answer.text  # what was typed stays in the box
    note = answer.text.split('id="users-error"', 1)[1].split("</p>", 1)[0]
    assert "email" in note.lower()


def test_a5_a_member_is_made_a_guest_and_back_on_their_page_and_adding_keeps_it(
    web: TestClient, world: World
) -> None:
    """A5: the member page marks Carl a guest and back (AssignUsers of his id with
    ``guest`` set); adding him again from the users page with the guest box unticked
    adds his product and leaves him a guest."""
    carl = "carl@example.com"

    def guest() -> bool:
        found: bool = world.a("GetMember", {"team_id": "alpha", "user_id": carl})["member"].get(
            "guest", False
        )
        return found

    sign_in(web)
    page = web.get("/teams/alpha/member", params={"user": carl})
    url = "/teams/alpha/member/guest?user=carl@example.com"
    assert f'action="{url}"' in page.text
    made = web.post(url, data={"csrf": csrf_of(page.text), "guest": "on"})
    assert "carl@example.com is now a guest." in made.text and guest()
    users = web.get("/teams/alpha/users")
    added = web.post(
        "/teams/alpha/users",
        data={"csrf": csrf_of(users.text), "users": carl, "product_ids": "ACAD"},
    )
    assert "1 user assigned" in added.text
    assert guest()
    member = world.a("GetMember", {"team_id": "alpha", "user_id": carl})["member"]
    assert member["product_ids"] == ["ACAD", "REVIT"]
    back = web.post(url, data={"csrf": csrf_of(made.text)})
    assert "carl@example.com is no longer a guest." in back.text and not guest()


def test_a5_saving_guest_on_an_expired_invitee_says_a_new_invitation_was_sent(
    web: TestClient, world: World
) -> None:
    """AssignUsers, the only call that sets guest, invites again a member whose
    invitation expired (a new one for 7 days, and its email): the member page's
    confirmation says so, until when; a pending invitee's says nothing of it."""

    def bobs() -> dict[str, Any]:
        found: dict[str, Any] = world.a(
            "GetMember", {"team_id": "alpha", "user_id": "bob@example.com"}
        )["member"]["invitation"]
        return found

    url = "/teams/alpha/member/guest?user=bob@example.com"
    sign_in(web)
    assert bobs()["state"] == "INVITATION_STATE_PENDING"
    page = web.get("/teams/alpha/member", params={"user": "bob@example.com"})
    pending = web.post(url, data={"csrf": csrf_of(page.text), "guest": "on"})
    assert "bob@example.com is now a guest." in pending.text
    assert "invitation had expired" not in pending.text
    world.desk.to("2026-01-20T00:00:00Z")
    assert bobs()["state"] == "INVITATION_STATE_EXPIRED"
    page = web.get("/teams/alpha/member", params={"user": "bob@example.com"})
    done = web.post(url, data={"csrf": csrf_of(page.text)})
    sent = bobs()
    assert (sent["state"], sent["expire_time"]) == (
        "INVITATION_STATE_PENDING",
        "2026-01-27T00:00:00Z",
    )
    assert (
        "bob@example.com is no longer a guest. Their invitation had expired, so a new one"
        ' was sent, good until <time datetime="2026-01-27T00:00:00Z"'
    ) in done.text


def test_a8_a5_the_operator_sets_a_teams_plan_and_guests_defaults_on_team_settings(
    web: TestClient, world: World
) -> None:
    """A8 and A5 leave a team's plan and whether guests get the default assignments to
    the operator ("contact support"): the operator's Team settings page changes both;
    a team administrator's says them and whom to ask, and a form sent anyway is
    refused (OPERATOR_ONLY) and changes nothing."""

    def settings() -> tuple[str, bool]:
        team = world.a("GetTeam", {"team_id": "alpha"})["team"]
        return team["plan"], team.get("guest_default_assignments", False)

    assert settings() == ("PLAN_STANDARD", False)
    key = world.a("CreateAdminKey", {"display_name": "Alpha's admin", "team_ids": ["alpha"]})
    sign_in(web, key["admin_key"])
    page = web.get("/teams/alpha/defaults")
    assert "Plan: <strong>standard</strong>" in page.text and "contact support" in page.text
    assert 'action="/teams/alpha/settings"' not in page.text
    form = {"csrf": csrf_of(page.text), "plan": "premium", "guest_defaults": "on"}
    refused = web.post("/teams/alpha/settings", data=form)
    assert refused.status_code == 403 and "Only the operator can do this" in refused.text
    assert settings() == ("PLAN_STANDARD", False)

    sign_in(web)
    page = web.get("/teams/alpha/defaults")
    assert 'action="/teams/alpha/settings"' in page.text
    saved = web.post("/teams/alpha/settings", data={**form, "csrf": csrf_of(page.text)})
    assert "Plan and guests&#39; default assignments saved." in saved.text
    assert settings() == ("PLAN_PREMIUM", True)
    back = web.post("/teams/alpha/settings", data={"csrf": csrf_of(saved.text), "plan": "standard"})
    assert back.status_code == 200 and settings() == ("PLAN_STANDARD", False)


def test_the_operator_issues_a_members_user_key_on_their_page_shown_once(
    web: TestClient, world: World
) -> None:
    """A member imported has no user key, so can run nothing, until the operator issues
    one (IssueUserKey): the operator's member page does, and shows the key on that
    answer only; it works at once. A team administrator gets no such form, and one
    sent anyway is refused (OPERATOR_ONLY) and issues nothing."""
    world.a(
        "ImportUsers",
        {"team_id": "alpha", "users": ["Ida Import <ida@example.com>"], "all_products": True},
    )
    url = "/teams/alpha/member/key?user=ida@example.com"
    key = world.a("CreateAdminKey", {"display_name": "Alpha's admin", "team_ids": ["alpha"]})
    sign_in(web, key["admin_key"])
    page = web.get("/teams/alpha/member", params={"user": "ida@example.com"})
    assert url not in page.text
    refused = web.post(url, data={"csrf": csrf_of(page.text)})
    assert refused.status_code == 403 and "Only the operator can do this" in refused.text
    assert 'id="new-user-key"' not in refused.text

    sign_in(web)
    page = web.get("/teams/alpha/member", params={"user": "ida@example.com"})
    assert f'href="{url}"' in page.text and 'id="new-user-key"' not in page.text
    confirm = web.get(url)  # asked first (see test_portal_issuing_a_user_key_asks_first)
    assert f'action="{url}"' in confirm.text
    issued = web.post(url, data={"csrf": csrf_of(confirm.text)})
    assert issued.status_code == 200
    found = re.search(r'id="user-secret" readonly value="(tsk_[^"]+)"', issued.text)
    assert found, "the key is shown"
    mine = world.desk.admin(L + "ListMyProducts", {}, token=found.group(1))  # it signs in
    assert "ACAD" in [p["product_id"] for p in mine["products"]]
    again = web.get("/teams/alpha/member", params={"user": "ida@example.com"})
    assert found.group(1) not in again.text  # shown once


def test_the_usage_csv_has_get_usage_reports_figures(web: TestClient, world: World) -> None:
    sign_in(web)
    answer = web.get("/teams/alpha/usage.csv?from=2026-01-01&to=2026-01-03")
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))
    report = world.a(
        "GetUsageReport", {"team_id": "alpha", "start_time": at(), "end_time": at(d=3)}
    )
    expected = [
        (r["date"], r["user_id"], r["product_id"], num(r, "tokens_charged"), num(r, "sessions"))
        for r in report["rows"]
    ]
    got = [
        (r["date"], r["user_id"], r["product_id"], int(r["tokens_charged"]), int(r["sessions"]))
        for r in rows
    ]
    assert got == expected
    assert sum(t for *_, t, _ in got) == num(report, "total_tokens_charged") == 30


def test_a_team_administrator_sees_only_their_teams(web: TestClient, world: World) -> None:
    key = world.a("CreateAdminKey", {"display_name": "Alpha's admin", "team_ids": ["alpha"]})
    assert sign_in(web, key["admin_key"]).status_code == 303
    teams = web.get("/teams").text
    assert "Team administrator" in teams
    assert 'href="/teams/alpha"' in teams and 'href="/teams/beta"' not in teams
    refused = web.get("/teams/beta")
    assert refused.status_code == 403
    assert "You do not manage this team." in refused.text
    # A page whose whole content is refused answers under the refusal's status too.
    keys = web.get("/admin-keys")
    assert keys.status_code == 403 and "Only the operator can do this" in keys.text


def test_an_rpc_the_server_does_not_offer_is_said_in_words() -> None:
    error = ServerError("Method not found!", code=__import__("grpc").StatusCode.UNIMPLEMENTED)
    assert in_words(error) == NOT_OFFERED


def test_http_listen_serves_the_portal(world: World) -> None:
    answer = httpx2.get(world.portal + "/signin")
    assert answer.status_code == 200
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert httpx2.get(world.portal + "/static/vendor/chart.umd.min.js").status_code == 200


def test_http_listen_on_a_port_in_use_refuses_the_start(database: object) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = ServerThread(database, http_listen=f"127.0.0.1:{port}")  # type: ignore[arg-type]
        srv._thread.start()
        try:
            with pytest.raises(StartRefused, match=f"cannot serve the portal on 127.0.0.1:{port}"):
                srv.call(srv.server.start())
        finally:
            srv.stop()


def test_http_listen_is_off_unless_asked() -> None:
    assert Config().http_listen is None
    assert TesseraServer(Config()).portal is None


def test_python_m_portal_serves_on_its_own(world: World) -> None:
    """``python -m portal --server HOST:PORT``: the same pages, in a process of their own."""
    portal = subprocess.Popen(
        [sys.executable, "-m", "portal", "--server", world.target, "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert portal.stderr is not None
        line = portal.stderr.readline()
        assert line.startswith("Tessera portal on http://127.0.0.1:"), line
        url = line.split()[3]
        with httpx2.Client(base_url=url, follow_redirects=True) as client:
            page = client.get("/signin")
            signed = client.post(
                "/signin", data={"csrf": csrf_of(page.text), "credential": ADMIN_TOKEN}
            )
            assert 'href="/teams/alpha"' in signed.text
    finally:
        portal.terminate()
        assert portal.wait(30) == 0
        if portal.stderr is not None:
            portal.stderr.close()


def test_the_operator_makes_and_revokes_an_admin_key(web: TestClient, world: World) -> None:
    sign_in(web)
    page = web.get("/admin-keys")
    made = web.post(
        "/admin-keys",
        data={"csrf": csrf_of(page.text), "display_name": "Dana", "team_ids": ["alpha"]},
    )
    secret = re.search(r'id="secret" readonly value="([^"]+)"', made.text)
    assert secret, "the new key is shown once"
    (key,) = world.a("ListAdminKeys")["keys"]
    assert (key["display_name"], key["team_ids"]) == ("Dana", ["alpha"])
    assert secret.group(1) not in web.get("/admin-keys").text  # never again
    with TestClient(web.app, base_url="http://127.0.0.1") as dana:
        assert sign_in(dana, secret.group(1)).status_code == 303
        revoke = f"/admin-keys/revoke?key={key['admin_key_id']}"
        assert f'href="{revoke}"' in web.get("/admin-keys").text
        confirm = web.get(revoke)
        web.post(revoke, data={"csrf": csrf_of(confirm.text)})
        assert "revoke_time" in world.a("ListAdminKeys")["keys"][0]
        gone = dana.get("/teams", follow_redirects=False)  # revoked at once: signed out
        assert (gone.status_code, gone.headers["location"]) == (303, "/signin")
        nothing = web.get("/admin-keys/revoke?key=ak_nope")  # an edited link: not asked
        assert nothing.status_code == 404
        assert "There is no such admin key." in nothing.text
        assert "Revoke key" not in nothing.text


def test_the_operator_creates_a_team_and_buys_tokens_once(web: TestClient, world: World) -> None:
    sign_in(web)
    page = web.get("/teams")
    refused = web.post("/teams", data={"csrf": csrf_of(page.text), "team_id": "Not Valid"})
    assert refused.status_code == 400 and 'id="team_id-error"' in refused.text
    web.post("/teams", data={"csrf": csrf_of(page.text), "team_id": "gamma", "display_name": "G"})
    assert world.a("GetTeam", {"team_id": "gamma"})["team"]["display_name"] == "G"
    overview = web.get("/teams/gamma").text
    request_id = re.search(r'name="request_id" value="([^"]+)"', overview)
    assert request_id
    form = {"csrf": csrf_of(overview), "tokens": "1,500", "request_id": request_id.group(1)}
    assert "Bought 1,500 tokens." in web.post("/teams/gamma/buy", data=form).text
    assert "Already bought" in web.post("/teams/gamma/buy", data=form).text  # once
    packs = world.a("ListTokenPacks", {"team_id": "gamma"})["packs"]
    assert [num(p, "tokens") for p in packs] == [1500]


def test_a_number_is_read_with_commas_only_between_thousands(web: TestClient, world: World) -> None:
    """A comma is read only between thousands: "1,5" (one and a half where a comma is
    the decimal mark), "2,50", ",7" and "1,,0" are refused next to the box with 400 and
    buy nothing, not 15, 250, 7 and 10 tokens; "10,000" and "10000" buy 10,000."""
    sign_in(web)
    for typed in ("1,5", "2,50", ",7", "1,,0"):
        page = web.get("/teams/alpha")
        form = {"csrf": csrf_of(page.text), "tokens": typed, "request_id": "r-" + typed}
        answer = web.post("/teams/alpha/buy", data=form)
        assert (answer.status_code, field_error(answer.text, "tokens")) == (
            400,
            "Enter a whole number from 1 to 1,000,000,000.",
        ), typed
    packs = world.a("ListTokenPacks", {"team_id": "alpha"})["packs"]
    assert [num(p, "tokens") for p in packs] == [10_000]  # nothing bought
    for typed in ("10,000", "10000"):
        page = web.get("/teams/alpha")
        form = {"csrf": csrf_of(page.text), "tokens": typed, "request_id": "r-" + typed}
        assert "Bought 10,000 tokens." in web.post("/teams/alpha/buy", data=form).text
    packs = world.a("ListTokenPacks", {"team_id": "alpha"})["packs"]
    assert [num(p, "tokens") for p in packs] == [10_000] * 3


def test_a_team_administrator_cannot_list_admin_keys(web: TestClient, world: World) -> None:
    key = world.a("CreateAdminKey", {"display_name": "A", "team_ids": ["alpha"]})
    sign_in(web, key["admin_key"])
    page = web.get("/admin-keys").text
    assert "Only the operator can do this: contact support." in page
    assert 'href="/admin-keys"' not in page  # no link to it in the header


def test_an_unforeseen_failure_is_a_sentence_with_the_security_headers(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(session: object) -> list[object]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(team_pages, "rate_sheet", broken)
    app = create_app(world.target)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as web:
        sign_in(web)
        answer = web.get("/teams/alpha/defaults")
    assert answer.status_code == 500
    assert "The portal could not show this page." in answer.text
    assert "a bug" not in answer.text and "Traceback" not in answer.text
    assert {k: answer.headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS


#: What every page answers with, a failed one included.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-store",
}


def test_the_operator_adds_a_product_to_the_rate_sheet(web: TestClient, world: World) -> None:
    sign_in(web)
    page = web.get("/products")
    assert "AutoCAD Electrical" in page.text
    product = {
        "csrf": csrf_of(page.text),
        "product_id": "CAM",
        "display_name": "Fusion CAM",
        "daily_rate": "-3",
        "kind": "plugin",
        "host_product_id": "ACAD",
        "platforms": ["PLATFORM_WINDOWS", "PLATFORM_LINUX"],
        "min_linux_version": "2024",
    }
    refused = web.post("/products", data=product)
    assert refused.status_code == 400
    assert field_error(refused.text, "daily_rate") == (
        "Enter a whole number from 0 to 9,223,372,036,854,775,807."
    )
    assert 'value="Fusion CAM"' in refused.text  # what was typed stays
    refused = web.post(
        "/products", data={**product, "daily_rate": "7", "min_linux_version": "12000"}
    )
    assert refused.status_code == 400  # the server's own refusal, next to its field too
    assert field_error(refused.text, "min_linux_version") == "must be a year such as 2020"
    saved = web.post("/products", data={**product, "daily_rate": "7"})
    assert "Product CAM saved." in saved.text
    (cam,) = [p for p in world.a("ListProducts")["products"] if p["product_id"] == "CAM"]
    assert (cam["display_name"], num(cam, "daily_rate"), cam["kind"], cam["host_product_id"]) == (
        "Fusion CAM",
        7,
        "PRODUCT_KIND_PLUGIN",
        "ACAD",
    )
    assert cam["platforms"] == ["PLATFORM_WINDOWS", "PLATFORM_LINUX"]
    assert cam.get("min_linux_version") == 2024


def test_a_team_administrator_reads_the_rate_sheet_only(web: TestClient, world: World) -> None:
    key = world.a("CreateAdminKey", {"display_name": "A", "team_ids": ["alpha"]})
    sign_in(web, key["admin_key"])
    page = web.get("/products").text
    assert "AutoCAD" in page and "Save product" not in page


def test_a_malformed_or_out_of_range_number_is_refused_next_to_its_field(
    web: TestClient, world: World
) -> None:
    sign_in(web)
    csrf = csrf_of(web.get("/teams/alpha").text)
    tokens = "Enter a whole number from 1 to 1,000,000,000."
    int64 = "Enter a whole number from 0 to 9,223,372,036,854,775,807."
    int32 = "Enter a whole number from 0 to 2,147,483,647."
    cases = [
        ("/teams/alpha/buy", {"tokens": "\u00b2", "request_id": "r-sq"}, "tokens", tokens),
        ("/teams/alpha/buy", {"tokens": "9" * 23, "request_id": "r-big"}, "tokens", tokens),
        (
            "/teams/alpha/threshold",
            {"low_balance_threshold": "9" * 23},
            "low_balance_threshold",
            int64,
        ),
        ("/products", {"product_id": "ZZZ", "daily_rate": "--5"}, "daily_rate", int64),
        ("/products", {"product_id": "ZZZ", "daily_rate": "\u00b2"}, "daily_rate", int64),
        ("/products", {"product_id": "ZZZ", "daily_rate": "9" * 23}, "daily_rate", int64),
        (
            "/products",
            {"product_id": "ZZZ", "min_linux_version": "99999999999"},
            "min_linux_version",
            int32,
        ),
    ]
    for url, data, name, words in cases:
        answer = web.post(url, data={"csrf": csrf, **data})
        assert (answer.status_code, field_error(answer.text, name)) == (400, words), data
    assert [num(p, "tokens") for p in world.a("ListTokenPacks", {"team_id": "alpha"})["packs"]] == [
        10_000
    ]
    assert "ZZZ" not in {p["product_id"] for p in world.a("ListProducts")["products"]}


def test_the_usage_csv_starts_with_a_byte_order_mark_so_a_spreadsheet_reads_its_accents(
    web: TestClient, world: World
) -> None:
    """Excel reads a CSV without a UTF-8 byte-order mark in the ANSI code page (Zoë as
    ZoÃ«, 山田 as mojibake); with one, as UTF-8, like every other spreadsheet."""
    desk = world.desk
    for line, user_id in (
        ("Zo\u00eb O'Brien <zoe@example.com>", "zoe@example.com"),
        ("\u5c71\u7530 \u592a\u90ce <yamada@example.jp>", "yamada@example.jp"),
    ):
        desk.a("ImportUsers", {"team_id": "alpha", "users": [line], "all_products": True})
        desk.keys[user_id] = desk.a("IssueUserKey", {"user_id": user_id})["user_key"]
    desk.to(at(d=2, h=9, m=1))
    zoe = desk.entitle("zoe@example.com", "REVIT")
    yamada = desk.entitle("yamada@example.jp", "REVIT")
    desk.to(at(d=2, h=9, m=20))
    desk.release("zoe@example.com", zoe["session_id"])
    desk.release("yamada@example.jp", yamada["session_id"])
    sign_in(web)
    answer = web.get("/teams/alpha/usage.csv", params={"from": "2026-01-03", "to": "2026-01-03"})
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.content.startswith(b"\xef\xbb\xbf" + ",".join(present.CSV_HEADER).encode())
    names = {
        r["user_name"] for r in csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig")))
    }
    assert {"Zo\u00eb O'Brien", "\u5c71\u7530 \u592a\u90ce"} <= names


def test_usage_dates_outside_1970_to_9998_are_refused_in_words(
    web: TestClient, world: World
) -> None:
    sign_in(web)
    words = "Dates: enter each date as YYYY-MM-DD, from 1970-01-01 to 9998-12-31."
    for query in ("from=9999-12-01&to=9999-12-31", "from=0001-01-01&to=0001-01-02"):
        page = web.get(f"/teams/alpha/usage?{query}")
        assert page.status_code == 400
        assert f'<p class="field-error" id="range-error" role="alert">{words}</p>' in page.text
        assert 'aria-describedby="range-error days-in-utc"' in page.text
        csv_answer = web.get(f"/teams/alpha/usage.csv?{query}")
        assert (csv_answer.status_code, csv_answer.text) == (400, words + "\n")
    last = web.get("/teams/alpha/usage.csv?from=9998-12-01&to=9998-12-31")
    assert (last.status_code, last.text) == (200, "\ufeff" + ",".join(present.CSV_HEADER) + "\r\n")


def test_a_csrf_token_that_is_not_ascii_is_refused_with_403(web: TestClient, world: World) -> None:
    signin_page = web.get("/signin")
    assert "csrf" in signin_page.text
    refused = web.post("/signin", data={"csrf": "\u00e9", "credential": ADMIN_TOKEN})
    assert (refused.status_code, "tessera_portal" in web.cookies) == (403, False)
    assert "The sign-in form expired: try again." in refused.text
    sign_in(web)
    answer = web.post("/teams/alpha/buy", data={"csrf": "\u00e9", "tokens": "5"})
    assert answer.status_code == 403
    assert "did not carry the portal&#39;s security token" in answer.text
    assert len(world.a("ListTokenPacks", {"team_id": "alpha"})["packs"]) == 1


def test_a_cookie_that_is_not_ascii_sends_the_browser_to_sign_in(web: TestClient) -> None:
    answer = web.get(
        "/teams", headers={b"cookie": b"tessera_portal=a.\xc3\xa9"}, follow_redirects=False
    )
    assert (answer.status_code, answer.headers["location"]) == (303, "/signin")


def test_a_credential_that_cannot_be_a_key_is_refused_without_a_call(
    web: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []

    def client(target: str, credential: str, **kw: object) -> object:
        made.append(credential)
        raise AssertionError("the portal called the server with it")

    monkeypatch.setattr(pages, "AsyncAdminClient", client)
    for credential in ("\u00e9", "a\nb", "tsa_" + "x" * 100_000):
        answer = sign_in(web, credential)
        assert answer.status_code == 401
        assert field_error(answer.text, "credential") == pages.UNKNOWN_KEY
    assert made == []


#: A device id chosen by a product: with ids as path segments, the "Remove…" link of team
#: alpha's Sessions page folded (``..``) into beta's device-removal confirmation page.
EVIL_DEVICE = "../../../../beta/devices/bea@example.com/ACAD/bobdev?x=1#y%2F"


def links(html: str, base: str, attribute: str = "href|action") -> list[str]:
    """Every ``href`` and form ``action`` of the page, resolved as a browser resolves them."""
    found = re.findall(rf'(?:{attribute})="([^"]*)"', html)
    return [urljoin(base, unescape(link)) for link in found]


def test_any_id_round_trips_and_cannot_change_the_team_a_link_reaches(
    web: TestClient, world: World
) -> None:
    slash = world.desk.user("alpha", "a/b")
    assert slash == "a/b@example.com"
    world.desk.entitle("bea@example.com", device_id="bobdev")
    world.desk.entitle(slash, device_id=EVIL_DEVICE)
    sign_in(web)
    base = "http://127.0.0.1/teams/alpha/sessions"
    removals = [u for u in links(web.get(base).text, base) if "/devices/" in u]
    assert len(removals) == 2  # the devices of the live sessions: ada's and a/b's
    (evil,) = [u for u in removals if "bobdev" in u]
    assert urlsplit(evil).path == "/teams/alpha/devices/remove"
    assert parse_qs(urlsplit(evil).query) == {
        "user": [slash],
        "product": ["ACAD"],
        "device": [EVIL_DEVICE],
    }
    confirm = web.get(evil)
    assert confirm.status_code == 200
    assert f"<h1>Remove device {EVIL_DEVICE} of {slash} for ACAD?</h1>" in confirm.text
    (action,) = [u for u in links(confirm.text, evil, "action") if "/devices/" in u]
    assert action == evil
    web.post(action, data={"csrf": csrf_of(confirm.text)})
    assert world.desk.devices(slash) == []
    assert [d["device_id"] for d in world.desk.devices("bea@example.com")] == ["bobdev"]

    users = "http://127.0.0.1/teams/alpha/users"
    (member,) = [u for u in links(web.get(users).text, users) if "a%2Fb" in u]
    assert member == "http://127.0.0.1/teams/alpha/member?user=a%2Fb@example.com"
    page = web.get(member)
    assert (page.status_code, "<h1>A/B</h1>" in page.text) == (200, True)
    (save,) = [
        u for u in links(page.text, member) if u.endswith("/member/products?user=a%2Fb@example.com")
    ]
    web.post(save, data={"csrf": csrf_of(page.text), "product_ids": "REVIT"})
    got = world.a("GetMember", {"team_id": "alpha", "user_id": slash})["member"]
    assert (got["product_ids"], got.get("all_products", False)) == (["REVIT"], False)


def test_a_refusal_of_a_field_the_page_has_no_control_for_is_said_above_the_form(
    web: TestClient, world: World
) -> None:
    """A device already removed (a second tab, a form sent twice): the server refuses
    its device_id, which the Sessions page has no control to show it by; the words go
    above the form, not a 400 with nothing said."""
    world.desk.entitle("bea@example.com", device_id="bobdev")
    sign_in(web)
    url = (
        "http://127.0.0.1/teams/alpha/devices/remove?user=bea@example.com&product=ACAD&device=gone"
    )
    confirm = web.get(url)
    answer = web.post(url, data={"csrf": csrf_of(confirm.text)})
    assert answer.status_code == 400
    assert "&#39;gone&#39; is not registered for bea@example.com and ACAD" in answer.text
    assert answer.text.count('class="error" role="alert"') == 1


def test_a_form_with_an_upload_is_refused_before_it_is_read(web: TestClient, world: World) -> None:
    upload = {"credential": ("key.txt", b"x" * 100_000, "text/plain")}
    signin = web.post("/signin", data={"csrf": "x"}, files=upload)
    assert signin.status_code == 415
    assert portal_web.FORM_KIND.replace("'", "&#39;") in signin.text
    sign_in(web)
    page = web.get("/teams/alpha/defaults")
    refused = web.post(
        "/teams/alpha/defaults",
        data={"csrf": csrf_of(page.text), "product_ids": "ACAD"},
        files={"product_ids": ("ids.txt", b"REVIT", "text/plain")},
    )
    assert refused.status_code == 415
    assert "UploadFile" not in refused.text
    assert "default_product_ids" not in world.a("GetTeam", {"team_id": "alpha"})["team"]


def test_a_form_over_a_megabyte_is_refused_with_413(web: TestClient) -> None:
    csrf = csrf_of(web.get("/signin").text)
    big = "tsa_" + "x" * portal_web.MAX_FORM_BYTES
    said = web.post("/signin", data={"csrf": csrf, "credential": big})
    assert (said.status_code, portal_web.FORM_SIZE in said.text) == (413, True)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield f"csrf={csrf}&credential=".encode()
        for _ in range(20):
            yield b"x" * 65_536

    streamed = web.post(
        "/signin",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert (streamed.status_code, portal_web.FORM_SIZE in streamed.text) == (413, True)


def test_a_revoked_key_is_signed_out_of_every_page_and_form(web: TestClient, world: World) -> None:
    sign_in(web)
    operator = web.cookies["tessera_portal"]  # this session stays
    asks = {
        "a team's page": lambda csrf: web.get("/teams/alpha/ledger", follow_redirects=False),
        "the teams": lambda csrf: web.get("/teams", follow_redirects=False),
        "search as you type": lambda csrf: web.get(
            "/teams/alpha/users/rows?q=ad", follow_redirects=False
        ),
        "the usage CSV": lambda csrf: web.get("/teams/alpha/usage.csv", follow_redirects=False),
        "suggestions as a name is typed": lambda csrf: web.get(
            "/teams/alpha/users/suggest?q=car", follow_redirects=False
        ),
        "a form": lambda csrf: web.post(
            "/teams/alpha/buy",
            data={"csrf": csrf, "tokens": "5", "request_id": "r-revoked"},
            follow_redirects=False,
        ),
    }
    for what, ask in asks.items():
        key = world.a("CreateAdminKey", {"display_name": what, "team_ids": ["alpha"]})
        web.cookies.clear()
        sign_in(web, key["admin_key"])
        csrf = csrf_of(web.get("/teams/alpha").text)
        assert len(web.app.state.sessions) == 2
        world.a("RevokeAdminKey", {"admin_key_id": key["key"]["admin_key_id"]})
        answer = ask(csrf)
        assert (answer.status_code, answer.headers["location"]) == (303, "/signin"), what
        assert 'tessera_portal=""' in answer.headers["set-cookie"], what
        assert len(web.app.state.sessions) == 1, what  # the session is gone here too
    assert len(world.a("ListTokenPacks", {"team_id": "alpha"})["packs"]) == 1
    web.cookies.clear()
    web.cookies.set("tessera_portal", operator)
    assert web.get("/teams").status_code == 200


def test_a_refusal_has_the_status_of_its_code_and_is_said_once(
    web: TestClient, world: World
) -> None:
    key = world.a("CreateAdminKey", {"display_name": "A", "team_ids": ["alpha"]})
    sign_in(web, key["admin_key"])
    csrf = csrf_of(web.get("/teams/alpha").text)
    refused = web.post(
        "/teams/beta/buy", data={"csrf": csrf, "tokens": "5", "request_id": "r-beta"}
    )
    assert refused.status_code == 403  # NOT_TEAM_ADMIN, not 409
    assert refused.text.count("You do not manage this team.") == 1
    assert [num(p, "tokens") for p in world.a("ListTokenPacks", {"team_id": "beta"})["packs"]] == [
        200
    ]
    web.cookies.clear()
    sign_in(web)
    csrf = csrf_of(web.get("/admin-keys").text)
    unknown = web.post("/admin-keys/revoke?key=no-such-key", data={"csrf": csrf})
    assert unknown.status_code == 404
    assert '<p class="error" role="alert">There is no such admin key.</p>' in unknown.text


def test_a_page_token_the_server_refuses_is_the_same_400_on_every_list(
    web: TestClient, world: World
) -> None:
    sign_in(web)
    for url in ("/teams", "/teams/alpha/ledger", "/teams/alpha/sessions", "/teams/alpha/users"):
        for token in ("nonsense", "\u00e9%2F.."):
            page = web.get(f"{url}?page={token}")
            assert page.status_code == 400, url
            assert pages.PAGE_GONE in page.text, url
            assert "page_token" not in page.text, url
    page = web.get("/teams/alpha/audit?page=nonsense")
    assert (page.status_code, pages.PAGE_GONE in page.text) == (400, True)


def test_a_server_message_without_a_known_reason_is_a_sentence() -> None:
    said = ServerError("there is no widget 'x'", code=__import__("grpc").StatusCode.INTERNAL)
    assert in_words(said) == "There is no widget 'x'."


def test_a_session_unused_for_8_hours_sends_the_browser_to_sign_in(world: World) -> None:
    clock = Clock()
    app = create_app(world.target, sessions=Sessions(clock=clock))
    with TestClient(app, base_url="http://127.0.0.1") as web:
        sign_in(web)
        clock.now += IDLE_SECONDS
        assert web.get("/teams").status_code == 200
        clock.now += IDLE_SECONDS + 1
        gone = web.get("/teams", follow_redirects=False)
        # Sign-in says so (``?ended=1``), and goes to /teams afterwards anyway: no next.
        assert (gone.status_code, gone.headers["location"]) == (303, "/signin?ended=1")
        assert len(app.state.sessions) == 0


def test_removing_a_member_needs_the_box_ticked_on_the_server_too(
    web: TestClient, world: World
) -> None:
    """The box is ``required`` in the browser; a form sent without it (another client,
    a replayed request with the page's CSRF token) removes no one and says why."""
    sign_in(web)
    url = "http://127.0.0.1/teams/alpha/member?user=carl@example.com"
    page = web.get(url)
    remove = "http://127.0.0.1/teams/alpha/member/remove?user=carl@example.com"
    answer = web.post(remove, data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert answer.status_code == 400
    assert "Tick the box to confirm the removal." in answer.text
    members = world.a("ListMembers", {"team_id": "alpha"})["members"]
    assert "carl@example.com" in [m["user_id"] for m in members]
    done = web.post(
        remove, data={"csrf": csrf_of(page.text), "confirm": "on"}, follow_redirects=False
    )
    assert (done.status_code, done.headers["location"]) == (303, "/teams/alpha/users")
    members = world.a("ListMembers", {"team_id": "alpha"})["members"]
    assert "carl@example.com" not in [m["user_id"] for m in members]


def test_search_as_you_type_says_when_more_users_are_found_than_shown(
    web: TestClient, world: World
) -> None:
    """The rows the page swaps in as one types are one page of the server's answer: past
    it, the last row says there are more and links the next page of the same search."""
    users = [f"Zed {n:03} <zed{n:03}@example.com>" for n in range(SEARCH_PAGE + 5)]
    world.a("ImportUsers", {"team_id": "alpha", "users": users, "all_products": True})
    sign_in(web)
    rows = web.get("http://127.0.0.1/teams/alpha/users/rows?q=zed")
    assert rows.text.count("@example.com</td>") == SEARCH_PAGE == 25
    assert "More users found than shown" in rows.text
    (link,) = re.findall(r'href="(/teams/alpha/users\?q=zed&amp;page=[^"]+)"', rows.text)
    rest = web.get("http://127.0.0.1" + link.replace("&amp;", "&"))
    assert rest.text.count("@example.com</td>") == 5
    assert "More users found than shown" not in rest.text


def test_a4_team_settings_say_the_defaults_reach_every_member_not_only_new_ones(
    web: TestClient, world: World
) -> None:
    sign_in(web)
    page = web.get("/teams/alpha/defaults")
    assert page.status_code == 200
    text = " ".join(unescape(page.text).split())
    assert "Every member of this team, those here now and those who join later" in text
    assert "Users who join this team" not in text


def test_a_refused_line_of_a_bulk_add_is_quoted_next_to_the_box(
    web: TestClient, world: World
) -> None:
    """Among many pasted lines the refusal names the one to mend (the server's
    ``users[1]``), not only what is wrong with some line."""
    sign_in(web)
    page = web.get("/teams/alpha/users")
    lines = "Ok Person <ok@example.com>\n\nEve <b>x</b> <eve@example.com>"
    answer = web.post(
        "/teams/alpha/users",
        data={"csrf": csrf_of(page.text), "users": lines, "all_products": "on"},
    )
    assert answer.status_code == 400
    note = unescape(field_error(answer.text, "users"))
    assert note.startswith("\u201cEve <b>x</b> <eve@example.com>\u201d ")
    assert "Ok Person" not in note


def test_search_as_you_type_in_a_team_not_managed_is_refused_with_its_status(
    web: TestClient, world: World
) -> None:
    key = world.a("CreateAdminKey", {"display_name": "Alpha's admin", "team_ids": ["alpha"]})
    sign_in(web, key["admin_key"])
    rows = web.get("/teams/beta/users/rows")
    assert rows.status_code == 403
    assert "You do not manage this team." in rows.text
    assert "No users in this team yet" not in rows.text
    assert rows.headers[team_pages.ROWS_HEADER] == "1"  # the page's script shows it
    assert web.get("/teams/alpha/users/rows?q=ad").headers[team_pages.ROWS_HEADER] == "1"


def test_a_device_running_for_another_team_is_said_and_offered_no_remove(
    web: TestClient, world: World
) -> None:
    """A user's devices are theirs: the alpha page lists Ada's Revit device running a
    session of beta's, which beta ends (RemoveDevice would be refused here)."""
    ada = world.desk.user("beta", "ada")
    world.desk.entitle(ada, "REVIT", device_id="beta-pc", team_id="beta")
    sign_in(web)
    page = web.get("/teams/alpha/member", params={"user": ada})
    assert page.status_code == 200
    rows = {
        row.split("</td>", 2)[1].removeprefix("<td>"): row
        for row in (r.split("</tr>", 1)[0] for r in page.text.split("<tr><td>")[1:])
        if "dev-1" in row or "beta-pc" in row
    }
    assert set(rows) == {"dev-1", "beta-pc"}
    assert "yes, for another team" in rows["beta-pc"] and "Remove" not in rows["beta-pc"]
    assert "/devices/remove" in rows["dev-1"] and "for another team" not in rows["dev-1"]


def test_m9_a_device_running_this_and_another_teams_session_is_said_and_offered_no_remove(
    web: TestClient, world: World
) -> None:
    """M9 lets one device run sessions of two teams: Ada's Viewer (rate 0, so no
    meter binds her to one team: C3 honours the team each Entitle names) runs on
    dev-1 for alpha and for beta. Removing the device would end beta's session too,
    which alpha's administrator may not (RemoveDevice refuses), so alpha's pages say
    so and offer no Remove, and the confirmation is refused; once beta's session
    ends, Remove is back."""
    ada = "ada@example.com"
    world.a("AssignUsers", {"team_id": "beta", "users": [ada], "all_products": True})
    world.desk.entitle(ada, "VIEWER", team_id="alpha")  # both on dev-1
    beta_session = world.desk.entitle(ada, "VIEWER", team_id="beta")
    assert beta_session["team_id"] == "beta"
    (dev1,) = world.a("ListDevices", {"user_id": ada, "product_id": "VIEWER"})["devices"]
    assert (dev1["device_id"], dev1["running"], dev1["running_session_count"]) == (
        "dev-1",
        True,
        2,
    )
    key = world.a("CreateAdminKey", {"display_name": "Alpha's admin", "team_ids": ["alpha"]})
    sign_in(web, key["admin_key"])

    def dev1_rows() -> list[str]:
        """dev-1's Viewer row in the devices table of Ada's page and of the sessions page."""
        rows = []
        for url, params, table, product in (
            ("/teams/alpha/member", {"user": ada}, "<h2>Devices</h2>", "<td>Viewer</td>"),
            ("/teams/alpha/sessions", {}, '<table id="devices">', "<td>Viewer</td>"),
        ):
            page = web.get(url, params=params)
            assert page.status_code == 200, url
            devices = page.text.split(table, 1)[1].split("</table>", 1)[0]
            (row,) = [r for r in devices.split("<tr>") if f"{product}<td>dev-1</td>" in r]
            rows.append(row)
        return rows

    for row in dev1_rows():
        assert "yes, also for another team" in row and "/devices/remove" not in row
    url = f"/teams/alpha/devices/remove?user={ada}&product=VIEWER&device=dev-1"
    confirm = web.get(url)
    assert confirm.status_code == 403 and "<h1>Remove device" not in confirm.text
    world.desk.release(ada, beta_session["session_id"])
    for row in dev1_rows():
        assert "another team" not in row and "/devices/remove" in row
    assert web.get(url).status_code == 200


def test_t1_a_buy_form_refused_for_a_used_request_id_can_be_sent_again(
    web: TestClient, world: World
) -> None:
    """The same form sent again with another amount (edited while the first send was
    under way) is refused, its id being another purchase's (T1); the form shown again
    carries a new id, so sending it buys, once."""
    sign_in(web)
    overview = web.get("/teams/beta").text
    request_id = re.search(r'name="request_id" value="([^"]+)"', overview)
    assert request_id
    form = {"csrf": csrf_of(overview), "tokens": "100", "request_id": request_id.group(1)}
    assert "Bought 100 tokens." in web.post("/teams/beta/buy", data=form).text
    refused = web.post("/teams/beta/buy", data={**form, "tokens": "300"})
    assert refused.status_code == 409
    again = re.search(r'name="request_id" value="([^"]+)"', refused.text)
    assert again and again.group(1) != request_id.group(1)
    retry = {"csrf": csrf_of(refused.text), "tokens": "300", "request_id": again.group(1)}
    assert "Bought 300 tokens." in web.post("/teams/beta/buy", data=retry).text
    assert "Already bought" in web.post("/teams/beta/buy", data=retry).text  # and once
    packs = world.a("ListTokenPacks", {"team_id": "beta"})["packs"]
    assert sorted(num(p, "tokens") for p in packs) == [100, 200, 300]


def test_t1_a_buy_form_sent_twice_says_it_bought_once(web: TestClient, world: World) -> None:
    """The same form sent again (a double click, a resend) is answered the first
    purchase's pack (T1): the second answer says it was already bought, and when."""
    sign_in(web)
    overview = web.get("/teams/beta").text
    request_id = re.search(r'name="request_id" value="([^"]+)"', overview)
    assert request_id
    form = {"csrf": csrf_of(overview), "tokens": "100", "request_id": request_id.group(1)}
    first = web.post("/teams/beta/buy", data=form).text
    assert "Bought 100 tokens." in first and "Already bought" not in first
    second = web.post("/teams/beta/buy", data=form).text
    assert "Bought 100 tokens." not in second
    assert "Already bought: this purchase of 100 tokens was made at <time" in second
    assert "2026-01-03 09:00 UTC</time> (the form was sent twice)." in second
    packs = world.a("ListTokenPacks", {"team_id": "beta"})["packs"]
    assert sorted(num(p, "tokens") for p in packs) == [100, 200]


def test_the_confirmation_to_end_another_teams_session_is_refused_as_its_form_is(
    web: TestClient, world: World
) -> None:
    """Alpha's administrator, on alpha's pages, names a session of beta's: EndSession
    refuses it (403, alpha's sessions page saying why), and so does its confirmation,
    which never asks about it."""
    bea = world.desk.user("beta", "bee")
    beta_session = world.desk.entitle(bea, "ACAD", team_id="beta")["session_id"]
    key = world.a("CreateAdminKey", {"display_name": "Alpha's admin", "team_ids": ["alpha"]})
    sign_in(web, key["admin_key"])
    url = f"/teams/alpha/sessions/end?session={beta_session}"
    refused = web.post(url, data={"csrf": csrf_of(web.get("/teams/alpha").text)})
    confirm = web.get(url)
    assert (confirm.status_code, refused.status_code) == (403, 403)
    for page in (confirm.text, refused.text):
        assert "<h1>Live sessions</h1>" in page and 'role="alert">' in page
        assert "End session" not in page.split("<h1>", 1)[1].split("</h1>", 1)[0]
    assert 'class="danger">End session</button>' not in confirm.text
    own = web.get(f"/teams/alpha/sessions/end?session={world.session_id}")
    assert own.status_code == 200 and 'class="danger">End session</button>' in own.text


def test_r2_the_confirmation_to_remove_a_device_not_this_teams_is_refused_as_its_form_is(
    web: TestClient, world: World
) -> None:
    """Alpha's administrator, on alpha's pages, names a device of a user only in beta,
    or one of Ada's running beta's session: RemoveDevice refuses both (403), and so
    does its confirmation, which never asks about them. Ada's own device, running
    alpha's session, is asked about."""
    bee = world.desk.user("beta", "bee")
    world.desk.entitle(bee, "ACAD", team_id="beta", device_id="bee-pc")
    ada = "ada@example.com"
    world.a("AssignUsers", {"team_id": "beta", "users": [ada], "all_products": True})
    world.desk.entitle(ada, "REVIT", team_id="beta", device_id="ada-beta")
    key = world.a("CreateAdminKey", {"display_name": "Alpha's admin", "team_ids": ["alpha"]})
    sign_in(web, key["admin_key"])
    csrf = csrf_of(web.get("/teams/alpha").text)
    for user, product, device in ((bee, "ACAD", "bee-pc"), (ada, "REVIT", "ada-beta")):
        url = f"/teams/alpha/devices/remove?user={user}&product={product}&device={device}"
        refused = web.post(url, data={"csrf": csrf})
        confirm = web.get(url)
        assert (confirm.status_code, refused.status_code) == (403, 403), url
        assert 'role="alert">' in confirm.text and "Remove device" not in confirm.text
    own = world.a("ListSessions", {"team_id": "alpha", "user_id": ada})["sessions"][0]
    url = f"/teams/alpha/devices/remove?user={ada}&product=ACAD&device={own['device_id']}"
    page = web.get(url)
    assert page.status_code == 200 and "<h1>Remove device" in page.text
    # A key of beta's on alpha's page, for bee's running device (ListDevices lets it
    # see bee's, ListSessions refuses alpha): alpha's refusal, not a server error.
    beta_key = world.a("CreateAdminKey", {"display_name": "Beta's", "team_ids": ["beta"]})
    sign_in(web, beta_key["admin_key"])
    page = web.get(f"/teams/alpha/devices/remove?user={bee}&product=ACAD&device=bee-pc")
    assert page.status_code == 403 and "<h1>Remove device" not in page.text


def test_a_refused_team_shows_none_of_its_tabs(web: TestClient, world: World) -> None:
    key = world.a("CreateAdminKey", {"display_name": "Alpha's admin", "team_ids": ["alpha"]})
    sign_in(web, key["admin_key"])
    for url in ("/teams/beta", "/teams/beta/ledger", "/teams/no-such-team/sessions"):
        page = web.get(url)
        assert page.status_code in (403, 404), url
        assert 'aria-label="Team pages"' not in page.text, url
        assert "/teams/beta/" not in page.text and "/teams/no-such-team" not in page.text, url
    refused = web.post("/teams/beta/buy", data={"csrf": csrf_of(page.text), "tokens": "5"})
    assert refused.status_code == 403 and 'aria-label="Team pages"' not in refused.text
    shown = web.get("/teams/alpha/member?user=nobody@example.com")  # alpha's, shown
    assert shown.status_code == 404 and 'aria-label="Team pages"' in shown.text


def test_the_ledger_shows_the_newest_entries_first(web: TestClient, world: World) -> None:
    """A long history's recent entries are on the ledger's first page, and its Older
    link goes back, to the first purchase, one page of 100 at a time."""
    for tokens in range(1, 131):
        world.a("PurchaseTokens", {"team_id": "beta", "tokens": tokens, "request_id": f"r{tokens}"})
    sign_in(web)
    page = web.get("/teams/beta/ledger")
    amounts = [int(a) for a in re.findall(r'<tr><td>.*?<td class="num">(\d+)</td>', page.text)]
    assert amounts == list(range(130, 30, -1))
    older = re.search(r'href="([^"]+)">Older entries</a>', page.text)
    assert older
    page = web.get("/teams/beta/ledger" + unescape(older.group(1)))
    amounts = [int(a) for a in re.findall(r'<tr><td>.*?<td class="num">(\d+)</td>', page.text)]
    assert amounts == [*range(30, 0, -1), 200]
    assert "Older entries" not in page.text


def test_a3_a_member_switched_to_all_products_keeps_no_list_beside_it(
    web: TestClient, world: World
) -> None:
    """The member page ticks Carl's own product (REVIT); ticking "All products" too
    sends both, which SetUserProducts refuses (A3: one or the other). The form's
    "All products" wins, as the administrator meant."""
    sign_in(web)
    member = "http://127.0.0.1/teams/alpha/member?user=carl@example.com"
    page = web.get(member)
    assert 'value="REVIT" checked' in page.text
    (save,) = [
        u for u in links(page.text, member) if u.endswith("/member/products?user=carl@example.com")
    ]
    sent = web.post(
        save,
        data={"csrf": csrf_of(page.text), "product_ids": "REVIT", "all_products": "on"},
    )
    assert sent.status_code == 200, sent.text
    got = world.a("GetMember", {"team_id": "alpha", "user_id": "carl@example.com"})["member"]
    assert (got.get("product_ids", []), got.get("all_products", False)) == ([], True)


def test_a_user_on_two_lines_of_a_bulk_add_is_counted_once(web: TestClient, world: World) -> None:
    sign_in(web)
    page = web.get("/teams/alpha/users")
    lines = "Dup One <dup@example.com>\nDup One <dup@example.com>"
    answer = web.post(
        "/teams/alpha/users",
        data={"csrf": csrf_of(page.text), "users": lines, "mode": "import", "all_products": "on"},
    )
    assert answer.status_code == 200
    assert "1 user imported." in answer.text and "2 users" not in answer.text
    members = world.a("ListMembers", {"team_id": "alpha"})["members"]
    assert [m["user_id"] for m in members].count("dup@example.com") == 1


def test_the_usage_page_says_its_days_are_utc_days(web: TestClient, world: World) -> None:
    """Every other time is shown in the reader's zone; the report's days are UTC's, and
    the page says so beside the dates it asks for."""
    sign_in(web)
    page = web.get("/teams/alpha/usage?from=2026-01-01&to=2026-01-03")
    assert page.status_code == 200
    assert 'id="days-in-utc">Days are UTC days' in page.text
    assert page.text.count('aria-describedby="days-in-utc"') == 2  # From and To
    refused = web.get("/teams/alpha/usage?from=2026-01-03&to=2026-01-01")
    assert refused.text.count('aria-describedby="range-error days-in-utc"') == 2


def _table(html: str, table_id: str) -> str:
    """The body of the table ``table_id`` of a page."""
    assert f'<table id="{table_id}">' in html, f"no table {table_id}"
    return html.split(f'<table id="{table_id}">', 1)[1].split("</table>", 1)[0]


def test_r1_the_usage_page_and_its_csv_narrow_to_one_user_or_one_product(
    web: TestClient, world: World
) -> None:
    """R1: the report narrowed to one user (a choice among the team's members) or one
    product (among the rate sheet), its totals GetUsageReport's for that filter, and the
    CSV link keeping the filter."""
    sign_in(web)
    days = {"from": "2026-01-01", "to": "2026-01-03"}
    base = "http://127.0.0.1/teams/alpha/usage"
    span = {"team_id": "alpha", "start_time": at(), "end_time": at(d=3)}
    for name, value, field, shown, hidden in (
        ("user", "carl@example.com", "user_id", "carl@example.com", "ada@example.com"),
        ("product", "REVIT", "product_id", "<td>Revit</td>", "<td>AutoCAD</td>"),
    ):
        page = web.get(base, params={**days, name: value})
        assert page.status_code == 200, name
        assert f'<select name="{name}"' in page.text
        assert f'<option value="{value}" selected>' in page.text
        table = _table(page.text, "usage-table")
        assert shown in table and hidden not in table, name
        report = world.a("GetUsageReport", {**span, field: value})
        total = present.number(num(report, "total_tokens_charged"))
        assert f'id="total-tokens">{total}</span>' in page.text
        (csv_link,) = [u for u in links(page.text, base) if "/usage.csv" in u]
        assert parse_qs(urlsplit(csv_link).query)[name] == [value]
        answer = web.get(csv_link)
        assert answer.status_code == 200
        assert f"-{value}.csv" in answer.headers["content-disposition"]
        rows = [
            (r["date"], r["user_id"], r["product_id"])
            for r in csv.DictReader(answer.content.decode("utf-8-sig").splitlines())
        ]
        assert rows == [(r["date"], r["user_id"], r["product_id"]) for r in report["rows"]]
        assert rows and all(value in row for row in rows)
    page = web.get(base, params=days)
    for member in ("ada@example.com", "bob@example.com", "carl@example.com"):
        assert f'<option value="{member}">' in page.text  # every member offered
    assert '<option value="" selected>' not in page.text  # "every user" unasked


def test_r1_a_large_team_types_the_user_instead_of_choosing_one(
    web: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``USER_CHOICES`` members the user is typed, not a list of the whole team."""
    monkeypatch.setattr(team_pages, "USER_CHOICES", 2, raising=False)
    sign_in(web)
    page = web.get("/teams/alpha/usage", params={"user": "carl@example.com"})
    assert page.status_code == 200
    assert '<select name="user"' not in page.text
    assert '<input name="user" value="carl@example.com"' in page.text
    assert "ada@example.com" not in _table(page.text, "usage-table")


def test_r1_an_unknown_user_or_product_is_refused_next_to_its_control(
    web: TestClient, world: World
) -> None:
    """An edited link or a typed user the server does not know: its refusal in words
    next to the control, under its code's status (UNKNOWN_USER, UNKNOWN_PRODUCT: 404),
    the form keeping what was asked; the CSV says the same."""
    sign_in(web)
    for name, value, field, words in (
        ("user", "nobody@example.com", "user_id", "There is no such user in this team."),
        ("product", "NOPE", "product_id", "There is no such product."),
    ):
        query = {"from": "2026-01-01", "to": "2026-01-03", name: value}
        page = web.get("/teams/alpha/usage", params=query)
        assert page.status_code == 404, name
        assert field_error(page.text, field) == words
        assert f'aria-invalid="true" aria-describedby="{field}-error"' in page.text
        assert f'<option value="{value}" selected>' in page.text
        assert page.text.count(words) == 1 and 'id="usage-table"' not in page.text
        answer = web.get("/teams/alpha/usage.csv", params=query)
        assert (answer.status_code, answer.text) == (404, words + "\n")


def test_r1_the_usage_page_shows_the_state_of_every_pack(web: TestClient, world: World) -> None:
    """R1: every pack's purchased, consumed, held, expired, moved, remaining and expiry,
    as GetUsageReport says them (alpha's pack holds Ada's session in grace)."""
    sign_in(web)
    page = web.get("/teams/alpha/usage", params={"from": "2026-01-01", "to": "2026-01-03"})
    assert "<h2>Token packs now</h2>" in page.text
    report = world.a(
        "GetUsageReport", {"team_id": "alpha", "start_time": at(), "end_time": at(d=3)}
    )
    (pack,) = report["packs"]
    assert num(pack, "held_tokens") > 0
    figures = [
        "purchased_tokens",
        "consumed_tokens",
        "held_tokens",
        "expired_tokens",
        "moved_in_tokens",
        "moved_out_tokens",
        "remaining_tokens",
    ]
    cells = "".join(f'<td class="num">{present.number(num(pack, f))}</td>' for f in figures)
    row = f"<tr><td>{pack['pack_id']}</td><td>alpha</td>{cells}"
    assert row in _table(page.text, "usage-packs")
    assert '<td><span class="state">active</span></td>' in _table(page.text, "usage-packs")


def test_r1_the_usage_pages_packs_are_as_they_stand_now_and_none_bought_after_the_days(
    web: TestClient, world: World
) -> None:
    """GetUsageReport answers every pack as it stands now, whatever the days: the page
    names them so and says it beside them, and leaves out a pack bought after the days
    (alpha's first on 2026-01-01; a second on 2026-01-03 09:00, moved to beta since, so
    not in alpha's ListTokenPacks: its purchase read from its expiry, RULES T1)."""
    late = world.desk.buy("alpha", 500)["pack_id"]
    world.a("MoveTokenPack", {"pack_id": late, "to_team_id": "beta"})
    sign_in(web)
    note = "As each pack stands now, not as it stood in these days"
    before = web.get("/teams/alpha/usage", params={"from": "2025-12-01", "to": "2025-12-31"})
    assert before.status_code == 200
    assert "<h2>Token packs now</h2>" in before.text and note in before.text
    assert 'id="usage-packs"' not in before.text
    assert "No token packs bought by the end of these days." in before.text
    (first,) = [p["pack_id"] for p in world.a("ListTokenPacks", {"team_id": "alpha"})["packs"]]
    ending_before_late = {"from": "2026-01-01", "to": "2026-01-02"}
    table = _table(web.get("/teams/alpha/usage", params=ending_before_late).text, "usage-packs")
    assert f"<tr><td>{first}</td><td>alpha</td>" in table and late not in table
    page = web.get("/teams/alpha/usage", params={"from": "2026-01-01", "to": "2026-01-03"})
    assert "<h2>Token packs now</h2>" in page.text and note in page.text
    table = _table(page.text, "usage-packs")
    assert f"<tr><td>{first}</td><td>alpha</td>" in table
    assert f"<tr><td>{late}</td><td>beta</td>" in table


def test_r2_a_members_page_lists_their_live_sessions_with_an_end_link(
    web: TestClient, world: World
) -> None:
    """R2: Ada's page lists her live session of alpha's (product, device, state, paid by,
    started), its End… link the sessions page's, which asks before ending it."""
    sign_in(web)
    base = "http://127.0.0.1/teams/alpha/member?user=ada@example.com"
    page = web.get(base)
    assert "<h2>Live sessions</h2>" in page.text
    table = _table(page.text, "member-sessions")
    (s,) = world.a("ListSessions", {"team_id": "alpha", "user_id": "ada@example.com"})["sessions"]
    assert f"<tr><td>AutoCAD</td><td>{s['device_id']}</td>" in table
    end = f"/teams/alpha/sessions/end?session={s['session_id']}&amp;user=ada@example.com"
    assert f'href="{end}"' in table
    (link,) = [u for u in links(table, base) if "/sessions/end" in u]
    confirm = web.get(link)
    assert confirm.status_code == 200 and 'class="danger">End session</button>' in confirm.text
    carl = web.get("http://127.0.0.1/teams/alpha/member?user=carl@example.com")
    assert "No live sessions in this team." in carl.text


def test_r2_a_members_page_lists_devices_of_a_product_they_no_longer_have(
    web: TestClient, world: World
) -> None:
    """M8: a device registered for a product a user lost still counts toward their 3
    devices; their page lists it (and offers its removal), not only those of the
    products they may run now."""
    carl = "carl@example.com"
    (device,) = world.desk.devices(carl, "REVIT")
    world.a("SetUserProducts", {"team_id": "alpha", "user_id": carl, "product_ids": ["ACAD"]})
    sign_in(web)
    page = web.get("/teams/alpha/member", params={"user": carl})
    assert page.status_code == 200
    devices = page.text.split("<h2>Devices</h2>", 1)[1].split("</table>", 1)[0]
    assert f"<td>Revit</td><td>{device['device_id']}</td>" in devices  # its name, not its id
    remove = f"/devices/remove?user={carl}&amp;product=REVIT&amp;device={device['device_id']}"
    assert remove in devices


def _move_link(web: TestClient, team_id: str, pack_id: str) -> str:
    base = f"http://127.0.0.1/teams/{team_id}"
    overview = web.get(base).text
    (link,) = [u for u in links(overview, base) if "/packs/move" in u and pack_id in u]
    return link


def test_t5_an_administrator_moves_a_pack_to_another_team_from_the_overview(
    web: TestClient, world: World
) -> None:
    """T5: beta's pack, from beta's overview, to alpha: its Move… link asks which of the
    other teams, and the move is said back on the overview."""
    (pack,) = world.a("ListTokenPacks", {"team_id": "beta"})["packs"]
    sign_in(web)
    link = _move_link(web, "beta", pack["pack_id"])
    assert parse_qs(urlsplit(link).query) == {"pack": [pack["pack_id"]]}
    choice = web.get(link)
    assert choice.status_code == 200
    assert f"<h1>Move pack {pack['pack_id']} to another team?</h1>" in choice.text
    offered = re.findall(r'<option value="([^"]+)"', choice.text)
    assert offered == ["alpha"]  # every other team; not beta itself
    (action,) = [u for u in links(choice.text, link, "action") if "/packs/move" in u]
    done = web.post(action, data={"csrf": csrf_of(choice.text), "to_team_id": "alpha"})
    assert done.url.path == "/teams/beta"
    assert f"Pack {pack['pack_id']} moved to alpha." in done.text
    assert pack["pack_id"] in [
        p["pack_id"] for p in world.a("ListTokenPacks", {"team_id": "alpha"})["packs"]
    ]
    assert world.a("ListTokenPacks", {"team_id": "beta"}).get("packs", []) == []


def test_t5_a_pack_with_tokens_on_hold_is_refused_in_words(web: TestClient, world: World) -> None:
    """T5: alpha's pack holds Ada's session in grace (M3): PACK_HAS_HOLDS, said once in
    words on the move page under 409, and the pack stays."""
    (pack,) = world.a("ListTokenPacks", {"team_id": "alpha"})["packs"]
    held = num(pack, "held_tokens")
    assert held > 0
    sign_in(web)
    link = _move_link(web, "alpha", pack["pack_id"])
    choice = web.get(link)
    refused = web.post(link, data={"csrf": csrf_of(choice.text), "to_team_id": "beta"})
    assert refused.status_code == 409
    words = team_pages.HAS_HOLDS.format(held=f"{present.number(held)} of its tokens")
    assert f'<p class="error" role="alert">{words}</p>' in unescape(refused.text)
    assert refused.text.count("on hold") == 1
    assert "PACK_HAS_HOLDS" not in refused.text and "captured" not in refused.text
    assert '<option value="beta" selected>' in refused.text  # the form kept the choice
    assert [p["pack_id"] for p in world.a("ListTokenPacks", {"team_id": "alpha"})["packs"]] == [
        pack["pack_id"]
    ]


def test_t5_ad1_a_team_administrator_moves_a_pack_only_between_teams_they_manage(
    web: TestClient, world: World
) -> None:
    """AD1: alpha's administrator alone manages no other team: the page says so and
    offers no form, and a form sent anyway is refused (403); a key of alpha and beta is
    offered beta. Another team's pack is not this team's page's to move (404)."""
    (beta_pack,) = world.a("ListTokenPacks", {"team_id": "beta"})["packs"]
    pack = world.desk.buy("alpha", 50)  # no holds: the first pack pays (T3)
    alone = world.a("CreateAdminKey", {"display_name": "Alpha's", "team_ids": ["alpha"]})
    sign_in(web, alone["admin_key"])
    link = _move_link(web, "alpha", pack["pack_id"])
    page = web.get(link)
    assert page.status_code == 200
    assert 'id="no-other-team"' in page.text and "/packs/move" not in page.text.split("<h1>")[1]
    assert "<select" not in page.text
    forged = web.post(link, data={"csrf": csrf_of(page.text), "to_team_id": "beta"})
    assert forged.status_code == 403
    words = "You do not manage team beta: a pack moves only to a team you manage."
    assert forged.text.count(words) == 1 and "You do not manage this team." not in forged.text
    other = web.get(f"/teams/alpha/packs/move?pack={beta_pack['pack_id']}")
    assert other.status_code == 404 and "There is no such token pack." in other.text
    sent = web.post(
        f"/teams/alpha/packs/move?pack={beta_pack['pack_id']}",
        data={"csrf": csrf_of(page.text), "to_team_id": "alpha"},
    )
    assert sent.status_code == 404
    both = world.a("CreateAdminKey", {"display_name": "Both", "team_ids": ["alpha", "beta"]})
    web.cookies.clear()
    sign_in(web, both["admin_key"])
    page = web.get(link)
    assert re.findall(r'<option value="([^"]+)"', page.text) == ["beta"]
    done = web.post(link, data={"csrf": csrf_of(page.text), "to_team_id": "beta"})
    assert f"Pack {pack['pack_id']} moved to beta." in done.text
    moved = {p["pack_id"] for p in world.a("ListTokenPacks", {"team_id": "beta"})["packs"]}
    assert moved == {beta_pack["pack_id"], pack["pack_id"]}


# -- what a review of the pages for administrators found ----------------------------------------


class _Form(HTMLParser):
    """The fields a browser would send of the page's form whose action is ``action``:
    its inputs' values, the ticked boxes and chosen radios only."""

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action, self.inside, self.fields = action, False, []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.inside = a.get("action") == self.action
        elif tag == "input" and self.inside and a.get("name"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            box = a.get("type") in ("checkbox", "radio")
            self.fields.append((str(a["name"]), a.get("value") or ("on" if box else "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False


def form_fields(html: str, action: str) -> list[tuple[str, str]]:
    parser = _Form(action)
    parser.feed(html)
    return parser.fields


def ticked(html: str, name: str) -> list[str]:
    """The values of the page's ticked boxes named ``name``."""
    return re.findall(rf'name="{name}" value="([^"]+)"[^>]*\bchecked', html)


def _cells(table: str) -> list[list[str]]:
    """The text of each cell of each row of a table's body (``_table``)."""
    body = table.split("<tbody>", 1)[1]
    return [
        [unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        for row in body.split("<tr>")[1:]
    ]


def _product(world: World, product_id: str) -> dict[str, object]:
    (found,) = [p for p in world.a("ListProducts")["products"] if p["product_id"] == product_id]
    return found


def test_portal_a_blank_rate_is_refused_as_required_keeping_what_was_typed(
    web: TestClient, world: World
) -> None:
    """A blank "Tokens a day" once saved the product at 0 tokens a day (free): it is
    refused next to the field, the form keeping what was typed, nothing saved."""
    sign_in(web)
    page = web.get("/products")
    for product_id, name in (("CAM", "Fusion CAM"), ("ACAD", "AutoCAD")):
        form = {"csrf": csrf_of(page.text), "product_id": product_id, "display_name": name}
        refused = web.post("/products", data={**form, "daily_rate": "  "})
        assert refused.status_code == 400
        assert field_error(refused.text, "daily_rate") == operator_pages.RATE_REQUIRED
        assert f'value="{name}"' in refused.text and f'value="{product_id}"' in refused.text
    assert "CAM" not in {p["product_id"] for p in world.a("ListProducts")["products"]}
    assert num(_product(world, "ACAD"), "daily_rate") == 10
    assert 'name="daily_rate" inputmode="numeric" value="" required' in page.text


def test_portal_change_opens_the_product_form_filled_so_a_change_keeps_the_rest(
    web: TestClient, world: World
) -> None:
    """Each row's Change link opens the form with the product as it is (name, rate,
    kind and host, platforms, Linux release, idle-aware): changing the rate alone keeps
    everything else, as UpsertProduct replaces the whole product."""
    sign_in(web)
    sheet = web.get("/products").text
    assert 'href="/products?edit=ACAD#product-form"' in sheet
    page = web.get("/products?edit=ACAD")
    assert page.status_code == 200 and '<h2 id="product-form">Change AutoCAD</h2>' in page.text
    fields = form_fields(page.text, "/products")
    # (the product as drawn travels too, in shown_* fields: tests/portal/
    # test_portal_concurrent_admins.py)
    assert {k: v for k, v in fields if not k.startswith("shown")} | {"csrf": ""} == {
        "csrf": "",
        "product_id": "ACAD",
        "display_name": "AutoCAD",
        "daily_rate": "10",
        "kind": "product",
        "host_product_id": "",
        "platforms": "PLATFORM_LINUX",
        "min_linux_version": "2022",
        "idle_aware": "on",
    }
    assert [v for k, v in fields if k == "platforms"] == [
        "PLATFORM_WINDOWS",
        "PLATFORM_MACOS",
        "PLATFORM_LINUX",
    ]
    before = _product(world, "ACAD")
    sent: dict[str, list[str]] = {}
    for name, value in fields:
        sent.setdefault(name, []).append("12" if name == "daily_rate" else value)
    saved = web.post("/products", data=sent)
    assert "Product ACAD saved." in saved.text
    assert _product(world, "ACAD") == {**before, "daily_rate": "12"}
    plugin = form_fields(web.get("/products?edit=ACADEL").text, "/products")
    assert ("kind", "plugin") in plugin and ("host_product_id", "ACAD") in plugin
    unknown = web.get("/products?edit=NOPE")
    assert unknown.status_code == 404 and "There is no such product." in unknown.text
    sign_in_as_alphas_admin(web, world)
    assert "?edit=" not in web.get("/products").text  # the operator's alone


def test_portal_audit_says_what_was_done_in_words_and_what_changed(
    web: TestClient, world: World
) -> None:
    """The audit's Did column says the change in words, not the RPC's name, and what
    the request changed in a short summary."""
    world.a("UpdateTeamSettings", {"team_id": "alpha", "low_balance_threshold": 1000})
    world.a(
        "SetUserProducts",
        {"team_id": "alpha", "user_id": "carl@example.com", "product_ids": ["ACAD"]},
    )
    world.a("PurchaseTokens", {"team_id": "alpha", "tokens": 2500, "request_id": "audit-1"})
    sign_in(web)
    page = web.get("/teams/alpha/audit")
    rows = [cells[2:] for cells in _cells(_table(page.text, "audit"))]
    bought = rows.pop(0)
    assert (bought[0], bought[1].startswith("pk_"), bought[2]) == (
        "Bought tokens",
        True,  # the new pack
        "2,500 tokens",
    )
    assert rows[:2] == [
        ["Changed a member's products", "carl@example.com", "products: AutoCAD"],
        ["Changed team settings", "alpha", "low-balance alert: 1,000 tokens"],
    ]
    assert ["Imported users", "Carl <carl@example.com>", "1 user; products: Revit"] in rows
    assert ["Assigned users", "Bob Builder <bob@example.com>", "1 user; products: AutoCAD"] in rows
    for method in ("UpdateTeamSettings", "SetUserProducts", "ImportUsers", "PurchaseTokens"):
        assert f">{method}<" not in page.text
    assert 'title="PurchaseTokens">Bought tokens</td>' in page.text  # the name on hover


def test_portal_issuing_a_user_key_asks_first_and_says_running_products_stop(
    web: TestClient, world: World
) -> None:
    """A new user key stops the earlier one, and the products running on it: the
    operator is asked first, in those words; the question issues nothing. A team
    administrator is refused it as the form is."""
    ada = "ada@example.com"
    url = f"/teams/alpha/member/key?user={ada}"
    sign_in(web)
    member = web.get("/teams/alpha/member", params={"user": ada})
    assert f'href="{url}"' in member.text and f'action="{url}"' not in member.text
    confirm = web.get(url)
    assert confirm.status_code == 200
    assert "<h1>Issue a new user key for Ada (ada@example.com)?</h1>" in confirm.text
    assert "the products they are running stop at their next heartbeat" in confirm.text
    assert f'action="{url}"' in confirm.text and ">Issue user key</button>" in confirm.text
    mine = world.desk.admin(L + "ListMyProducts", {}, token=world.desk.keys[ada])
    assert mine["products"]  # the question changed nothing: her key still works
    sign_in_as_alphas_admin(web, world)
    refused = web.get(url)
    assert refused.status_code == 403
    assert "Only the operator can do this: contact support." in refused.text
    assert "Issue user key" not in refused.text


def test_portal_add_users_keeps_the_chosen_mode_and_quotes_a_refused_line_once(
    web: TestClient, world: World
) -> None:
    sign_in(web)
    page = web.get("/teams/alpha/users")
    answer = web.post(
        "/teams/alpha/users",
        data={
            "csrf": csrf_of(page.text),
            "users": "bogus line",
            "mode": "import",
            "product_choices": "1",  # as the page's form sends it
            "product_ids": "REVIT",
        },
    )
    assert answer.status_code == 400
    assert ticked(answer.text, "mode") == ["import"]
    assert ticked(answer.text, "product_ids") == ["REVIT"]
    note = unescape(field_error(answer.text, "users"))
    assert note.startswith("\u201cbogus line\u201d is neither a user id")
    assert note.count("bogus line") == 1
    assigned = web.post(
        "/teams/alpha/users", data={"csrf": csrf_of(page.text), "users": "bogus line"}
    )
    assert ticked(assigned.text, "mode") == ["assign"]


def test_portal_a_usage_date_range_refused_keeps_the_dates_typed(
    web: TestClient, world: World
) -> None:
    sign_in(web)
    page = web.get("/teams/alpha/usage?from=2026-01-03&to=2025-12-01")
    assert page.status_code == 400
    assert "Dates: the end comes before the start." in page.text
    assert re.findall(r'name="(?:from|to)" value="([^"]*)"', page.text) == [
        "2026-01-03",
        "2025-12-01",
    ]
    empty = web.get("/teams/alpha/usage?to=2025-12-01")  # From empty: the day it stands for
    assert re.findall(r'name="(?:from|to)" value="([^"]*)"', empty.text) == [
        "2025-12-05",
        "2025-12-01",
    ]


def test_portal_search_rows_have_the_columns_of_the_users_table(
    web: TestClient, world: World
) -> None:
    """The rows search as you type swaps in are the table's: name, email, products,
    state (the member's, not the teams they are in), from the same partial as the
    page's own rows."""
    sign_in(web)
    page = web.get("/teams/alpha/users?q=car")
    head = page.text.split("<thead>", 1)[1].split("</thead>", 1)[0]
    assert re.findall(r'<th scope="col">([^<]+)</th>', head) == [
        "Name",
        "Email",
        "Products",
        "State",
    ]
    rows = web.get("/teams/alpha/users/rows?q=car")
    cells = re.findall(r"<td>(.*?)</td>", rows.text)
    assert [re.sub(r"<[^>]+>", "", c) for c in cells] == [
        "Carl",
        "carl@example.com",
        "Revit",
        "active",
    ]
    body = page.text.split('<tbody id="user-rows" aria-live="polite">', 1)[1].split("</tbody>")[0]
    assert body.strip() == rows.text.strip()
    bob = web.get("/teams/alpha/users/rows?q=bob").text
    assert "<td>AutoCAD</td><td>invited</td>" in bob
    assert "Nobody's name or email starts with" in web.get("/teams/alpha/users/rows?q=zz").text


def test_portal_admin_keys_form_keeps_the_ticked_teams_after_a_refusal(
    web: TestClient, world: World
) -> None:
    sign_in(web)
    page = web.get("/admin-keys")
    refused = web.post(
        "/admin-keys", data={"csrf": csrf_of(page.text), "display_name": "", "team_ids": ["beta"]}
    )
    assert refused.status_code == 400 and field_error(refused.text, "display_name") == "is required"
    assert ticked(refused.text, "team_ids") == ["beta"]
    assert ticked(page.text, "team_ids") == []


def test_portal_ending_a_session_asks_about_whose_product_on_which_device(
    web: TestClient, world: World
) -> None:
    sign_in(web)
    confirm = web.get(
        "/teams/alpha/sessions/end",
        params={"session": world.session_id, "user": "ada@example.com"},
    )
    assert confirm.status_code == 200
    assert "<h1>End the AutoCAD session of Ada (ada@example.com) on device dev-1?</h1>" in (
        confirm.text
    )
    assert f"(Session {world.session_id}.)" in confirm.text
    bare = web.get("/teams/alpha/sessions/end", params={"session": world.session_id})
    assert "<h1>End the AutoCAD session of Ada (ada@example.com)" in bare.text


def test_portal_a_message_starting_with_an_email_keeps_its_case(
    web: TestClient, world: World
) -> None:
    said = ServerError(
        "zoe@example.com is already here", code=__import__("grpc").StatusCode.INTERNAL
    )
    assert in_words(said) == "zoe@example.com is already here."
    for message in ("ACAD is a plugin", "'gone' is not registered", "alpha-2 is full"):
        said = ServerError(message, code=__import__("grpc").StatusCode.INTERNAL)
        assert in_words(said) == message + "."
    sign_in(web)
    page = web.get("/teams/alpha/member", params={"user": "ada@example.com"})
    refused = web.post(
        "/teams/alpha/member/resend?user=ada@example.com", data={"csrf": csrf_of(page.text)}
    )
    assert refused.status_code == 409
    assert "ada@example.com is already an active member" in refused.text
    assert "Ada@example.com" not in refused.text


def test_portal_product_names_not_ids_and_ledger_kinds_in_words(
    web: TestClient, world: World
) -> None:
    """A product's display name where a product is shown (a member's devices, the
    ledger, the tokens-exhausted alert), its id on hover; the ledger's kinds in words
    with their meaning, not "capture" or "hold release"."""
    bea = "bea@example.com"
    started = world.desk.entitle(bea, "ACAD", team_id="beta")
    world.desk.release(bea, started["session_id"])  # within grace: the hold goes back
    world.desk.team("gamma")
    gus = world.desk.user("gamma", "gus")
    world.desk.refused_entitle(
        gus, __import__("grpc").StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_TOKENS"
    )
    sign_in(web)
    ledger = web.get("/teams/beta/ledger").text
    rows = _cells(ledger.split("<table>", 1)[1].split("</table>", 1)[0])
    assert [(cells[1], cells[5]) for cells in rows] == [
        ("hold returned", "AutoCAD"),
        ("held", "AutoCAD"),
        ("bought", ""),
    ]
    assert '<span title="ACAD">AutoCAD</span>' in ledger
    assert 'title="tokens set aside, given back uncharged' in ledger
    assert "capture" not in ledger and "hold release" not in ledger
    alpha = web.get("/teams/alpha/ledger").text
    assert '<td title="tokens set aside, now charged' in alpha and ">charged</td>" in alpha
    alert = web.get("/teams/gamma").text
    assert 'Tokens ran out: gus@example.com was refused <span title="ACAD">AutoCAD</span>.' in alert
    member = web.get("/teams/alpha/member", params={"user": "ada@example.com"}).text
    devices = member.split("<h2>Devices</h2>", 1)[1].split("</table>", 1)[0]
    assert "<td>AutoCAD</td><td>dev-1</td>" in devices and "<td>ACAD</td>" not in devices


def test_portal_the_operators_pages_refuse_a_team_administrator_with_403(
    web: TestClient, world: World
) -> None:
    """The revocation's confirmation is the operator's: a team administrator is told so
    (403), never asked; search as you type in a team not managed answers 403 too."""
    sign_in(web)
    made = world.a("CreateAdminKey", {"display_name": "Spare", "team_ids": ["beta"]})
    url = f"/admin-keys/revoke?key={made['key']['admin_key_id']}"
    assert web.get(url).status_code == 200
    sign_in_as_alphas_admin(web, world)
    refused = web.get(url)
    assert refused.status_code == 403
    assert "Only the operator can do this: contact support." in refused.text
    assert "Revoke key" not in refused.text
    rows = web.get("/teams/beta/users/rows?q=be")
    assert rows.status_code == 403 and "You do not manage this team." in rows.text
    assert rows.headers[team_pages.ROWS_HEADER] == "1"
    page = web.get("/teams/alpha/users?q=ad")
    assert page.status_code == 200 and "Ada" in page.text


def test_portal_an_expired_invitation_says_when_it_expired(web: TestClient, world: World) -> None:
    sign_in(web)
    pending = web.get("/teams/alpha/member", params={"user": "bob@example.com"}).text
    assert re.search(r'<dd id="invitation">pending, sent <time.*?</time>, expires <time', pending)
    world.desk.to("2026-01-20T00:00:00Z")
    expired = web.get("/teams/alpha/member", params={"user": "bob@example.com"}).text
    said = re.search(r'<dd id="invitation">(.*?)</dd>', expired)
    assert said and said.group(1).startswith("expired on <time")
    assert "expires" not in said.group(1)


def test_portal_invitations_come_in_pages_each_invitee_once(web: TestClient, world: World) -> None:
    """A team that invited hundreds at once gets its invitations a page at a time (at
    least ``INVITATIONS_PAGE`` a page, members read a list page at a time until that many
    are found), not one table of every invitee; the pages together hold each once."""
    lines = [f"Invitee {n} <invitee{n:03}@example.com>" for n in range(250)]
    world.a("AssignUsers", {"team_id": "alpha", "users": lines, "product_ids": ["ACAD"]})
    sign_in(web)
    seen: list[str] = []
    url = "/teams/alpha/invitations"
    pages_read = 0
    while url:
        page = web.get(url)
        assert page.status_code == 200
        shown = re.findall(r"Resend the invitation to ([^\"]+)\"", page.text)
        assert len(shown) >= team_pages.INVITATIONS_PAGE or "Next page" not in page.text
        seen += shown
        pages_read += 1
        more = re.search(r'<a class="button" href="([^"]+)">Next page</a>', page.text)
        url = urljoin(str(page.url), unescape(more.group(1))) if more else ""
    assert pages_read >= 2
    expected = {"bob@example.com"} | {f"invitee{n:03}@example.com" for n in range(250)}
    assert sorted(seen) == sorted(expected)


def test_portal_an_empty_low_balance_threshold_turns_the_alert_off_as_the_page_says(
    web: TestClient, world: World
) -> None:
    world.a("UpdateTeamSettings", {"team_id": "alpha", "low_balance_threshold": 500})
    sign_in(web)
    page = web.get("/teams/alpha")
    assert 'id="threshold-off">Leave it empty or enter 0 to turn the alert off.</p>' in page.text
    assert 'aria-describedby="threshold-off"' in page.text
    done = web.post(
        "/teams/alpha/threshold", data={"csrf": csrf_of(page.text), "low_balance_threshold": ""}
    )
    assert "Low-balance alert turned off." in done.text
    assert "low_balance_threshold" not in world.a("GetTeam", {"team_id": "alpha"})["team"]


def test_portal_product_forms_keep_the_ticks_just_sent_after_a_refusal(
    web: TestClient, world: World
) -> None:
    """A refused save of a member's products or of the default assignments shows the
    ticks just sent, not the stored ones; another form of the page refused (the
    operator's user key, for a team administrator) leaves the stored ticks."""
    carl = "carl@example.com"
    sign_in(web)
    page = web.get("/teams/alpha/member", params={"user": carl})
    assert ticked(page.text, "product_ids") == ["REVIT"]
    refused = web.post(
        f"/teams/alpha/member/products?user={carl}",
        data={"csrf": csrf_of(page.text), "product_choices": "1", "product_ids": ["ACAD", "NOPE"]},
    )
    assert refused.status_code in (400, 404)
    assert ticked(refused.text, "product_ids") == ["ACAD"]
    assert world.a("GetMember", {"team_id": "alpha", "user_id": carl})["member"]["product_ids"] == [
        "REVIT"
    ]
    defaults = web.get("/teams/alpha/defaults")
    refused = web.post(
        "/teams/alpha/defaults",
        data={
            "csrf": csrf_of(defaults.text),
            "product_choices": "1",
            "product_ids": ["VIEWER", "NOPE"],
        },
    )
    assert refused.status_code in (400, 404)
    assert ticked(refused.text, "product_ids") == ["VIEWER"]
    sign_in_as_alphas_admin(web, world)
    other = web.post(
        f"/teams/alpha/member/key?user={carl}",
        data={"csrf": csrf_of(web.get("/teams/alpha").text)},
    )
    assert other.status_code == 403 and ticked(other.text, "product_ids") == ["REVIT"]


# -- By Product's Assign users, and the users boxes' suggestions --------------------------------


def _assign(web: TestClient, product_id: str, users: str, **data: str) -> httpx2.Response:
    """By Product's Assign users form for ``product_id``, sent as its page's form is."""
    page = web.get("/teams/alpha/products", params={"product": product_id})
    sent = {"csrf": csrf_of(page.text), "users": users, **data}
    return web.post(f"/teams/alpha/products?product={product_id}", data=sent)


def _flash(html: str) -> list[str]:
    return [unescape(f) for f in re.findall(r'<p class="flash" role="status">([^<]*)</p>', html)]


def _member(world: World, user_id: str, team_id: str = "alpha") -> dict[str, Any]:
    found: dict[str, Any] = world.a("GetMember", {"team_id": team_id, "user_id": user_id})["member"]
    return found


def _box(html: str) -> str:
    """What the users box holds."""
    found = re.search(r'<textarea id="users" name="users"[^>]*>([^<]*)</textarea>', html)
    assert found, "no users box"
    return unescape(found.group(1))


def test_portal_by_product_assign_adds_the_product_to_an_existing_member(
    web: TestClient, world: World
) -> None:
    """Carl (Revit) picked on AutoCAD's page keeps Revit and gets AutoCAD; the form goes
    back to AutoCAD's page saying so, where Carl is now listed."""
    sign_in(web)
    page = web.get("/teams/alpha/products", params={"product": "ACAD"})
    answer = web.post(
        "/teams/alpha/products?product=ACAD",
        data={"csrf": csrf_of(page.text), "users": "Carl <carl@example.com>"},
        follow_redirects=False,
    )
    assert (answer.status_code, answer.headers["location"]) == (
        303,
        "/teams/alpha/products?product=ACAD",
    )
    back = web.get(answer.headers["location"])
    assert _flash(back.text) == ["AutoCAD added to the products of Carl (carl@example.com)."]
    carl = _member(world, "carl@example.com")
    assert (sorted(carl["product_ids"]), carl["state"]) == (
        ["ACAD", "REVIT"],
        "MEMBER_STATE_ACTIVE",
    )
    assert ["Carl", "carl@example.com", "individual"] in _cells(
        _table(back.text, "product-members")
    )


def test_portal_by_product_assign_finds_a_member_by_any_spelling_and_keeps_their_name(
    web: TestClient, world: World
) -> None:
    """A member is found by their address however it is typed (a bare id too); the name
    beside it changes nothing (A1 keeps the one on file), and a member named twice is
    changed once."""
    sign_in(web)
    answer = _assign(web, "VIEWER", "Charles <Carl@Example.COM>\ncarl@example.com")
    assert answer.status_code == 200
    assert _flash(answer.text) == ["Viewer added to the products of Carl (carl@example.com)."]
    carl = _member(world, "carl@example.com")
    assert (sorted(carl["product_ids"]), carl["display_name"]) == (["REVIT", "VIEWER"], "Carl")


def test_portal_by_product_assign_invites_a_new_user_with_this_product(
    web: TestClient, world: World
) -> None:
    sign_in(web)
    answer = _assign(web, "REVIT", "Dora Explorer <dora@example.com>")
    assert answer.status_code == 200
    assert _flash(answer.text) == ["1 user assigned Revit; invitations sent to new users."]
    dora = _member(world, "dora@example.com")
    assert (dora["state"], dora["product_ids"], dora["display_name"]) == (
        "MEMBER_STATE_INVITED",
        ["REVIT"],
        "Dora Explorer",
    )
    notes = world.a("ListNotifications", {"user_id": "dora@example.com"})["notifications"]
    assert [n["kind"] for n in notes] == ["NOTIFICATION_KIND_INVITATION"]


def test_portal_by_product_assign_leaves_a_member_who_has_it_already_and_says_so(
    web: TestClient, world: World
) -> None:
    """Ada has all products, Bob has AutoCAD: neither is changed (no call changes them,
    so their members read back the same), and the page says why."""
    sign_in(web)
    users = ("ada@example.com", "bob@example.com")
    before = {u: _member(world, u) for u in users}
    audit_before = len(world.a("ListAuditEvents", {"team_id": "alpha"}).get("events", []))
    answer = _assign(web, "ACAD", "Ada <ada@example.com>\nBob Builder <bob@example.com>")
    assert answer.status_code == 200
    assert _flash(answer.text) == [
        "Ada (ada@example.com) already has all products: left as is. "
        "Bob Builder (bob@example.com) already has AutoCAD: left as is."
    ]
    assert {u: _member(world, u) for u in users} == before
    events = world.a("ListAuditEvents", {"team_id": "alpha"}).get("events", [])
    assert len(events) == audit_before  # nothing was changed, so nothing audited


def test_portal_by_product_assign_takes_members_and_new_users_in_one_form(
    web: TestClient, world: World
) -> None:
    sign_in(web)
    lines = "Carl <carl@example.com>\nDora Explorer <dora@example.com>\nAda <ada@example.com>"
    answer = _assign(web, "VIEWER", lines)
    assert answer.status_code == 200
    assert _flash(answer.text) == [
        "1 user assigned Viewer; invitations sent to new users. "
        "Viewer added to the products of Carl (carl@example.com). "
        "Ada (ada@example.com) already has all products: left as is."
    ]
    assert sorted(_member(world, "carl@example.com")["product_ids"]) == ["REVIT", "VIEWER"]
    dora = _member(world, "dora@example.com")
    assert (dora["state"], dora["product_ids"]) == ("MEMBER_STATE_INVITED", ["VIEWER"])
    assert _member(world, "ada@example.com")["all_products"] is True


def test_portal_by_product_assign_refuses_a_bad_line_in_words_and_changes_no_one(
    web: TestClient, world: World
) -> None:
    """As By User's add form: the refused line quoted once next to the box, which keeps
    what was typed, under 400; the member on the line before it is not changed either."""
    sign_in(web)
    typed = "Carl <carl@example.com>\nbogus line"
    answer = _assign(web, "VIEWER", typed)
    assert answer.status_code == 400
    note = unescape(field_error(answer.text, "users"))
    assert note.startswith("\u201cbogus line\u201d is neither a user id")
    assert answer.text.count("is neither a user id") == 1  # said once, next to the box
    assert _box(answer.text) == typed
    assert 'aria-invalid="true" aria-describedby="users-error"' in answer.text
    assert _member(world, "carl@example.com")["product_ids"] == ["REVIT"]
    empty = _assign(web, "VIEWER", " \n ")
    assert empty.status_code == 400
    assert unescape(field_error(empty.text, "users")) == team_pages.NO_USERS


def test_portal_by_product_assign_without_its_csrf_token_is_refused_and_changes_nothing(
    web: TestClient, world: World
) -> None:
    sign_in(web)
    users = "Carl <carl@example.com>\nDora Explorer <dora@example.com>"
    for data in ({"users": users}, {"users": users, "csrf": "forged"}):
        refused = web.post("/teams/alpha/products?product=VIEWER", data=data)
        assert refused.status_code == 403
        assert "did not carry the portal&#39;s security token" in refused.text
    assert _member(world, "carl@example.com")["product_ids"] == ["REVIT"]
    members = world.a("ListMembers", {"team_id": "alpha"})["members"]
    assert "dora@example.com" not in {m["user_id"] for m in members}


def test_portal_by_product_assign_refuses_another_team_or_an_unknown_product(
    web: TestClient, world: World
) -> None:
    """Alpha's administrator cannot assign in beta (403, said once); an unknown product is
    404 before any change. Nobody is added either way."""
    sign_in_as_alphas_admin(web, world)
    csrf = csrf_of(web.get("/teams/alpha/products").text)
    users = "Bea <bea@example.com>\nNu New <nu@example.com>"
    refused = web.post("/teams/beta/products?product=ACAD", data={"csrf": csrf, "users": users})
    assert refused.status_code == 403
    assert refused.text.count("You do not manage this team.") == 1
    assert {m["user_id"] for m in world.a("ListMembers", {"team_id": "beta"})["members"]} == {
        "bea@example.com"
    }
    unknown = web.post(
        "/teams/alpha/products?product=NOPE",
        data={"csrf": csrf, "users": "Nu New <nu@example.com>\nCarl <carl@example.com>"},
    )
    assert unknown.status_code == 404
    assert unknown.text.count("There is no such product.") == 1
    assert 'id="assign-users"' not in unknown.text  # no form for a product there is not
    assert "nu@example.com" not in {
        m["user_id"] for m in world.a("ListMembers", {"team_id": "alpha"})["members"]
    }
    assert _member(world, "carl@example.com")["product_ids"] == ["REVIT"]


def test_portal_user_suggestions_are_this_teams_members_with_the_line_naming_them(
    web: TestClient, world: World
) -> None:
    """What the users boxes suggest as a name is typed: the team's members found by
    SearchUsers (not beta's Bea), each with the ``Full Name <email>`` line a pick writes;
    both boxes (By User, By Product) ask for it and own a labelled listbox."""
    sign_in(web)
    carl = web.get("/teams/alpha/users/suggest", params={"q": "car"})
    assert carl.status_code == 200
    assert carl.headers["content-type"].startswith("application/json")
    assert carl.headers["cache-control"] == "no-store"
    assert carl.json() == {
        "users": [
            {
                "user_id": "carl@example.com",
                "name": "Carl",
                "email": "carl@example.com",
                "line": "Carl <carl@example.com>",
            }
        ]
    }
    bob = web.get("/teams/alpha/users/suggest", params={"q": "bui"}).json()
    assert [u["line"] for u in bob["users"]] == ["Bob Builder <bob@example.com>"]
    assert web.get("/teams/alpha/users/suggest", params={"q": "bea"}).json() == {"users": []}
    assert web.get("/teams/alpha/users/suggest").json() == {"users": []}
    for path in ("/teams/alpha/users", "/teams/alpha/products?product=ACAD"):
        page = web.get(path).text
        assert 'data-suggest="/teams/alpha/users/suggest"' in page, path
        assert (
            '<ul id="users-suggestions" class="suggestions" role="listbox" '
            'aria-label="Members of this team matching the line being typed" hidden></ul>'
        ) in page, path


def test_portal_user_suggestions_in_a_team_not_managed_are_refused_with_403(
    web: TestClient, world: World
) -> None:
    sign_in_as_alphas_admin(web, world)
    refused = web.get("/teams/beta/users/suggest", params={"q": "be"})
    assert (refused.status_code, refused.json()) == (
        403,
        {"users": [], "error": "You do not manage this team."},
    )


def test_portal_by_product_assign_keeps_a_change_made_meanwhile_by_someone_else(
    web: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The product is added by the server (AssignUsers adds, never takes away), not
    written over what the page read: another administrator's change to Carl between
    the page's GetMember and its assignment is kept. What the page read only words
    what was done."""
    read = AsyncAdminClient.get_member

    async def read_then_changed(self: AsyncAdminClient, team_id: str, user_id: str) -> Any:
        member = await read(self, team_id, user_id)
        world.a(
            "SetUserProducts",
            {"team_id": team_id, "user_id": user_id, "product_ids": ["REVIT", "ACAD"]},
        )
        return member

    sign_in(web)
    page = web.get("/teams/alpha/products", params={"product": "VIEWER"})
    monkeypatch.setattr(AsyncAdminClient, "get_member", read_then_changed)
    answer = web.post(
        "/teams/alpha/products?product=VIEWER",
        data={"csrf": csrf_of(page.text), "users": "Carl <carl@example.com>"},
    )
    assert answer.status_code == 200
    assert _flash(answer.text) == ["Viewer added to the products of Carl (carl@example.com)."]
    assert sorted(_member(world, "carl@example.com")["product_ids"]) == ["ACAD", "REVIT", "VIEWER"]


def test_ad2_marking_a_member_a_guest_is_not_audited_as_taking_their_products(
    web: TestClient, world: World
) -> None:
    """The member page's "Save guest" is AssignUsers of their id with no product, which
    adds none and takes none away: the audit row said "products: none", as if Carl's
    Revit had been taken."""
    sign_in(web)
    page = web.get("/teams/alpha/member?user=carl@example.com")
    web.post(
        "/teams/alpha/member/guest?user=carl@example.com",
        data={"csrf": csrf_of(page.text), "guest": "on"},
    )
    carl = world.a("GetMember", {"team_id": "alpha", "user_id": "carl@example.com"})["member"]
    assert carl["guest"] and carl["product_ids"] == ["REVIT"]
    audit = re.sub(
        r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", web.get("/teams/alpha/audit").text))
    )
    row = audit[audit.index("What changed") :][:400]
    assert "Assigned users" in row and "as guests" in row
    assert "products" not in row.split("as guests")[0], row


def test_r1_the_portal_takes_an_answer_as_large_as_the_server_sends() -> None:
    """GetUsageReport is not paged: a year of a large team's usage is past gRPC's default
    4 MiB, which the portal's client kept, so its usage page and CSV failed with
    "Received message larger than max"."""
    client = AsyncAdminClient("127.0.0.1:1", "x", **create_app("127.0.0.1:1").state.client)
    options = dict(client._channel_options)  # what the SDK test sees received past 4 MiB
    assert options["grpc.max_receive_message_length"] >= 64 * 1024 * 1024


# -- forms about a member who is no longer one (another administrator's change) ---------------


def _key_works(world: World, key: str) -> bool:
    try:
        world.desk.admin(L + "ListMyProducts", {}, token=key)
    except GrpcurlError:
        return False
    return True


def test_a1_a_user_key_for_a_member_removed_since_the_confirmation_is_not_issued(
    web: TestClient, world: World
) -> None:
    """The operator confirms a user key for Ada while another administrator removes
    her from alpha: nothing is issued (the key she has still works), where her key was
    replaced everywhere and the new one never shown (the member page was a 404)."""
    sign_in(web)
    old = world.desk.keys["ada@example.com"]
    page = web.get("/teams/alpha/member/key", params={"user": "ada@example.com"})
    world.a("UnassignUser", {"team_id": "alpha", "user_id": "ada@example.com"})
    answer = web.post(
        "/teams/alpha/member/key",
        params={"user": "ada@example.com"},
        data={"csrf": csrf_of(page.text)},
    )
    assert answer.status_code == 404
    assert "There is no such user in this team." in answer.text
    assert _key_works(world, old)


@pytest.mark.parametrize("who", ["carl@example.com", "bea@example.com"])
def test_a5_the_guest_form_of_someone_not_a_member_adds_nobody(
    web: TestClient, world: World, who: str
) -> None:
    """The guest form of a member page sent after Carl was removed (a stale page), or
    crafted naming beta's Bea: refused as no member of this team, and nobody is added
    (it is AssignUsers underneath, which adds any known user at once)."""
    sign_in_as_alphas_admin(web, world)
    page = web.get("/teams/alpha/users")
    world.a("UnassignUser", {"team_id": "alpha", "user_id": "carl@example.com"})
    answer = web.post(
        "/teams/alpha/member/guest",
        params={"user": who},
        data={"csrf": csrf_of(page.text), "guest": "on"},
        follow_redirects=False,
    )
    assert answer.status_code == 404
    members = {m["user_id"] for m in world.a("ListMembers", {"team_id": "alpha"})["members"]}
    assert who not in members


def test_ad1_a_team_administrators_admin_key_forms_are_refused_once(
    web: TestClient, world: World
) -> None:
    sign_in_as_alphas_admin(web, world)
    csrf = csrf_of(web.get("/teams").text)
    for path, data in (
        ("/admin-keys", {"display_name": "Mine", "team_ids": "alpha"}),
        ("/admin-keys/revoke?key=ak_x", {}),
    ):
        answer = web.post(path, data={"csrf": csrf, **data})
        assert answer.status_code == 403
        assert answer.text.count("Only the operator can do this") == 1, path


def test_a3_by_product_of_a_product_not_on_the_rate_sheet_is_404(web: TestClient) -> None:
    sign_in(web)
    page = web.get("/teams/alpha/products", params={"product": "NOPE"})
    assert page.status_code == 404
    assert 'id="assign-users"' not in page.text
    assert page.text.count("There is no such product.") == 1


def _members_of(world: World, product_id: str) -> list[str]:
    """Every member of alpha who may run ``product_id``, read over gRPC page after page."""
    found: list[str] = []
    token = ""
    while True:
        body = {"team_id": "alpha", "product_id": product_id, "page_token": token}
        page = world.a("ListMembers", body)
        found += [m["user_id"] for m in page.get("members", [])]
        token = page.get("next_page_token", "")
        if not token:
            return found


def test_portal_by_product_comes_a_page_at_a_time_with_a_next_link_keeping_the_product(
    web: TestClient, world: World
) -> None:
    """By Product listed every member who may run the product in one table (1,201 rows
    for a team of 1,200 imported at once): now a page of ``BY_PRODUCT_PAGE`` at a time
    (ListMembers with ``product_id``), whose Next page link keeps ``product=``; the
    pages together hold each member once, and an edited page link is the lists' 400."""
    lines = [f"User {n} <u{n:04}@example.com>" for n in range(250)]
    world.a("ImportUsers", {"team_id": "alpha", "users": lines, "product_ids": ["ACAD"]})
    sign_in(web)
    seen: list[str] = []
    url = "/teams/alpha/products?product=ACAD"
    links: list[str] = []
    while url:
        page = web.get(url)
        assert page.status_code == 200
        rows = re.findall(r'<tr><td><a href="/teams/alpha/member\?user=([^"]+)">', page.text)
        assert 0 < len(rows) <= 100  # team_pages.BY_PRODUCT_PAGE
        seen += [unescape(r) for r in rows]
        more = re.search(r'<a class="button" href="([^"]+)">Next page</a>', page.text)
        if more:
            links.append(unescape(more.group(1)))
        url = urljoin(str(page.url), links[-1]) if more else ""
    assert len(links) == 2  # 251 members: 100, 100, 51
    assert all(parse_qs(urlsplit(link).query)["product"] == ["ACAD"] for link in links)
    assert sorted(seen) == sorted(_members_of(world, "ACAD"))
    assert len(seen) == 251  # Ada (all products) and the 250 (Bob, invited, may not yet)
    gone = web.get("/teams/alpha/products?product=ACAD&page=nonsense")
    assert (gone.status_code, pages.PAGE_GONE in gone.text) == (400, True)


def test_portal_in_words_a_server_that_did_not_answer_names_no_address_nor_grpc() -> None:
    """client_sdk's DeadlineExceeded (an Unavailable, its message gRPC's with the
    addresses tried) is said in words: on a page, try again; for a form, that the change
    may or may not have been made. So is a change without a request id that got no
    answer (OutcomeUnknown), and an Unavailable of a reason the portal does not know."""
    import grpc

    from client_sdk.errors import DeadlineExceeded, OutcomeUnknown, Unavailable

    late = DeadlineExceeded(
        "Deadline Exceeded (tried 127.0.0.1:50051)", code=grpc.StatusCode.DEADLINE_EXCEEDED
    )
    assert in_words(late) == "The Tessera server did not answer in time; try again in a moment."
    assert in_words(late, form=True) == (
        "The Tessera server did not answer in time: the change may or may not have been "
        "made. Check what happened before sending the form again."
    )
    unknown = OutcomeUnknown("127.0.0.1:50051 did not say whether it made the change", cause=late)
    assert in_words(unknown) == pages.NOT_SAID
    odd = Unavailable("draining (tried 127.0.0.1:50051)", reason="DRAINING")
    assert in_words(odd) == pages.REASONS["UNAVAILABLE"]
    for words in (in_words(late), in_words(late, form=True), pages.NOT_SAID, in_words(odd)):
        assert "127.0.0.1" not in words and "Deadline" not in words


@pytest.mark.sqlite_only("a server process paused with SIGSTOP; the words are the portal's")
@pytest.mark.timeout(120)
def test_portal_a_server_that_does_not_answer_in_time_is_said_in_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that hangs (SIGSTOP: a paused VM, a black-holed route): the page, the
    search's rows and a form said gRPC's "Deadline Exceeded (tried 127.0.0.1:PORT)."; now
    words, without the address, under 504; the rows of a search not answered make no
    further call (product_names), which would keep the browser waiting as long again."""
    srv = ServerProcess(tmp_path / "t.db").start()
    desk = Desk(srv.target).sheet()
    named: list[str] = []

    async def product_names(session: Any) -> dict[str, str]:
        named.append("called")
        return {}

    monkeypatch.setattr(team_pages, "product_names", product_names)
    try:
        desk.team("alpha", 1000)
        app = create_app(srv.target)
        app.state.client["retry"] = RetryPolicy(max_attempts=1, call_timeout=1.0)
        with TestClient(app, base_url="http://127.0.0.1") as web:
            sign_in(web)
            csrf = csrf_of(web.get("/teams/alpha").text)
            assert srv.proc is not None
            os.kill(srv.proc.pid, signal.SIGSTOP)
            try:
                page = web.get("/teams/alpha/users")
                rows = web.get("/teams/alpha/users/rows?q=car")
                sent = web.post(
                    "/teams/alpha/threshold", data={"csrf": csrf, "low_balance_threshold": "7"}
                )
            finally:
                os.kill(srv.proc.pid, signal.SIGCONT)
        for answer in (page, rows, sent):
            assert answer.status_code == 504
            assert "Deadline" not in answer.text and "tried" not in answer.text
            assert "127.0.0.1" not in answer.text
        assert pages.NO_ANSWER in page.text and pages.NO_ANSWER in rows.text
        assert "the change may or may not have been made" in sent.text
        assert named == []
    finally:
        desk.close()
        srv.kill()


def test_portal_a_session_ended_mid_form_says_so_and_signs_in_back_to_the_form_page(
    world: World,
) -> None:
    """A form sent after the session ended (unused for 8 hours) went to a sign-in page
    that said nothing, and then to /teams. Now sign-in says the session ended and the
    form was not sent, and comes back to the form's page: its action when that is a
    page (By User), else the page above it (a member's products: the member's page); a
    GET comes back to itself (the search's rows: to their page); 12 hours after the
    sign-in, it says so. Nothing the form asked was done."""
    clock = Clock()
    app = create_app(world.target, sessions=Sessions(clock=clock))
    with TestClient(app, base_url="http://127.0.0.1") as web:
        sign_in(web)
        csrf = csrf_of(web.get("/teams/alpha/users").text)
        clock.now += IDLE_SECONDS + 1
        sent = web.post(
            "/teams/alpha/users",
            data={"csrf": csrf, "users": "Dora Explorer <dora@example.com>", "mode": "assign"},
            follow_redirects=False,
        )
        assert sent.status_code == 303
        location = sent.headers["location"]
        assert location == "/signin?ended=1&form=1&next=%2Fteams%2Falpha%2Fusers"
        page = web.get(location)
        words = "Your session ended (unused for 8 hours): sign in again; the form was not sent."
        assert f'<p class="notice" id="session-ended" role="status">{words}</p>' in page.text
        assert '<input type="hidden" name="next" value="/teams/alpha/users">' in page.text
        back = sign_in(web, next_page="/teams/alpha/users")
        assert (back.status_code, back.headers["location"]) == (303, "/teams/alpha/users")
        members = world.a("ListMembers", {"team_id": "alpha"})["members"]
        assert "dora@example.com" not in {m["user_id"] for m in members}

        csrf = csrf_of(web.get("/teams/alpha/member?user=carl@example.com").text)
        clock.now += IDLE_SECONDS + 1
        sent = web.post(
            "/teams/alpha/member/products?user=carl%40example.com",
            data={"csrf": csrf, "product_ids": "ACAD"},
            follow_redirects=False,
        )
        query = parse_qs(urlsplit(sent.headers["location"]).query)
        assert query == {
            "ended": ["1"],
            "form": ["1"],
            "next": ["/teams/alpha/member?user=carl%40example.com"],
        }
        sign_in(web)
        clock.now += IDLE_SECONDS + 1
        rows = web.get("/teams/alpha/users/rows?q=car", follow_redirects=False)
        query = parse_qs(urlsplit(rows.headers["location"]).query)
        assert query == {"ended": ["1"], "next": ["/teams/alpha/users?q=car"]}
        said = web.get(rows.headers["location"]).text
        assert "Your session ended (unused for 8 hours): sign in again.</p>" in said
        sign_in(web)
        for _ in range(12):
            clock.now += 3600
            web.get("/teams")
        clock.now += 1
        usage = web.get("/teams/alpha/usage?from=2026-01-01", follow_redirects=False)
        query = parse_qs(urlsplit(usage.headers["location"]).query)
        assert query == {"ended": ["2"], "next": ["/teams/alpha/usage?from=2026-01-01"]}
        said = web.get(usage.headers["location"]).text
        assert "Your session ended (12 hours after its sign-in): sign in again.</p>" in said


@pytest.mark.parametrize(
    "elsewhere",
    [
        "//evil.example/teams",
        "/\\evil.example/teams",
        "/\\/evil.example",
        "https://evil.example/teams",
        "http:/evil.example",
        "javascript:alert(1)",
        "evil.example/teams",
        "/\t/evil.example",
        " /teams",
        "",
    ],
)
def test_portal_sign_in_goes_to_next_only_on_this_portal(
    web: TestClient, world: World, elsewhere: str
) -> None:
    """The sign-in form's ``next`` (a page the session ended on) is followed only when it
    is a path of this portal: anything a browser could read as another site (``//host``,
    ``/\\host``, a scheme, a control character) is an open redirect, and goes to /teams."""
    page = web.get("/signin", params={"next": elsewhere})
    assert 'name="next"' not in page.text
    answer = sign_in(web, next_page=elsewhere)
    assert (answer.status_code, answer.headers["location"]) == (303, "/teams")
    web.cookies.clear()
    page = web.get("/signin", params={"next": "/teams/alpha/users?q=car"})
    assert 'name="next" value="/teams/alpha/users?q=car"' in page.text
    answer = sign_in(web, next_page="/teams/alpha/users?q=car")
    assert answer.headers["location"] == "/teams/alpha/users?q=car"


def test_portal_a_connection_that_sends_no_whole_request_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection that sends nothing, or part of a request's head, is closed once
    ``REQUEST_SECONDS`` pass (here a fifth of a second), as ``/metrics`` closes
    one: uvicorn's timer starts only after a first answer, so they were kept for
    good, one of the server's file descriptors each (120 idle connections, 120
    descriptors, never given back). A whole request is answered."""
    monkeypatch.setattr(serve, "REQUEST_SECONDS", 0.2, raising=False)
    with running(tmp_path / "t.db", http_listen="127.0.0.1:0") as srv:
        assert srv.server.portal is not None
        address = ("127.0.0.1", srv.server.portal.port)
        silent, partial, whole = (socket.create_connection(address, timeout=10) for _ in range(3))
        with silent, partial, whole:
            partial.sendall(b"GET /signin HTTP/1.1\r\nHost: x\r\n")
            whole.sendall(b"GET /signin HTTP/1.1\r\nHost: x\r\n\r\n")
            assert whole.recv(12) == b"HTTP/1.1 200"
            assert silent.recv(1) == b""  # closed by the server
            assert partial.recv(1) == b""


@pytest.mark.parametrize("form", ["member", "defaults"])
def test_portal_a_products_form_whose_rate_sheet_read_fails_is_refused_in_words(
    web: TestClient, world: World, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    """A member's products and the default assignments read the rate sheet to say what
    changed; a server that fails that read (a takeover under way) got the 500 page
    "Something went wrong". The form is refused in words instead, nothing changed."""
    sign_in(web)
    page, action = {
        "member": (
            "/teams/alpha/member?user=carl@example.com",
            "/teams/alpha/member/products?user=carl@example.com",
        ),
        "defaults": ("/teams/alpha/defaults", "/teams/alpha/defaults"),
    }[form]
    drawn = web.get(page).text

    async def unavailable(session: Any) -> dict[str, str]:
        raise Unavailable("no server could be reached", code=grpc.StatusCode.UNAVAILABLE)

    monkeypatch.setattr(team_pages, "product_names", unavailable)
    answer = web.post(action, data={"csrf": csrf_of(drawn), "product_ids": ["VIEWER"]})
    assert answer.status_code == 503 and "Something went wrong" not in answer.text
    carl = world.a("GetMember", {"team_id": "alpha", "user_id": "carl@example.com"})["member"]
    assert carl["product_ids"] == ["REVIT"]
    assert world.a("GetTeam", {"team_id": "alpha"})["team"].get("default_product_ids", []) == []
