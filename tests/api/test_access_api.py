"""Users, invitations, keys and product access (RULES §3, C1-C2), against a real server.

Everything goes through the grpcurl stand-in (reflection + JSON) with bodies as
an operator would type them for grpcurl. The server's test clock starts at
2026-01-01T00:00:00Z (``tests/support.py``), so an invitation sent at the
start expires at 2026-01-08T00:00:00Z (A2: 7 days).

JSON as grpcurl prints it leaves out fields at their default value: an empty
list or a false flag is simply absent, hence the ``.get(field, [])``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from tests.grpcurl import Grpcurl, GrpcurlError
from tests.support import ADMIN_TOKEN, ServerProcess, ServerThread

A = "tessera.v1.AdminService/"
L = "tessera.v1.LicensingService/"
T0 = "2026-01-01T00:00:00Z"
T0_PLUS_7D = "2026-01-08T00:00:00Z"
T0_PLUS_7D_MINUS_1S = "2026-01-07T23:59:59Z"

ACAD = {
    "product_id": "ACAD",
    "display_name": "AutoCAD",
    "daily_rate": 10,
    "kind": "PRODUCT_KIND_PRODUCT",
    "platforms": ["PLATFORM_WINDOWS", "PLATFORM_MACOS"],
}
REVIT = {
    "product_id": "REVIT",
    "display_name": "Revit",
    "daily_rate": 10,
    "kind": "PRODUCT_KIND_PRODUCT",
    "platforms": ["PLATFORM_WINDOWS"],
}
MAYA = {
    "product_id": "MAYA",
    "display_name": "Maya",
    "daily_rate": 6,
    "kind": "PRODUCT_KIND_PRODUCT",
    "platforms": ["PLATFORM_WINDOWS", "PLATFORM_MACOS", "PLATFORM_LINUX"],
}

ENTITLE = {
    "product_id": "ACAD",
    "product_version": "2026",
    "platform": "PLATFORM_WINDOWS",
    "device_id": "dev-1",
}


# -- helpers ------------------------------------------------------------------


def refused(
    client: Grpcurl,
    method: str,
    body: dict[str, Any],
    code: grpc.StatusCode,
    reason: str | None = None,
    *,
    token: str | None = None,
) -> GrpcurlError:
    """Call ``method`` expecting a refusal with ``code`` (and ErrorInfo ``reason``)."""
    with pytest.raises(GrpcurlError) as info:
        client(method, body, token=token)
    err = info.value
    assert err.code is code, f"expected {code.name}, got {err}"
    if reason is not None:
        assert err.reason == reason, f"expected reason {reason}, got {err}"
    return err


def create_team(admin: Grpcurl, team_id: str, plan: str = "PLAN_STANDARD") -> dict[str, Any]:
    return admin(
        A + "CreateTeam", {"team_id": team_id, "display_name": team_id.title(), "plan": plan}
    )["team"]


def add_product(admin: Grpcurl, product: dict[str, Any]) -> dict[str, Any]:
    return admin(A + "UpsertProduct", {"product": product})["product"]


def assign(admin: Grpcurl, team_id: str, users: list[str], **kw: Any) -> list[dict[str, Any]]:
    return admin(A + "AssignUsers", {"team_id": team_id, "users": users, **kw}).get("members", [])


def import_(admin: Grpcurl, team_id: str, users: list[str], **kw: Any) -> list[dict[str, Any]]:
    return admin(A + "ImportUsers", {"team_id": team_id, "users": users, **kw}).get("members", [])


def member(admin: Grpcurl, team_id: str, user_id: str) -> dict[str, Any]:
    return admin(A + "GetMember", {"team_id": team_id, "user_id": user_id})["member"]


def members(admin: Grpcurl, team_id: str) -> list[dict[str, Any]]:
    return admin.every(A + "ListMembers", {"team_id": team_id}, "members")


def effective(admin: Grpcurl, team_id: str, user_id: str) -> list[str]:
    return member(admin, team_id, user_id).get("effective_product_ids", [])


def notes(admin: Grpcurl, team_id: str = "", user_id: str = "") -> list[dict[str, Any]]:
    body = {"team_id": team_id, "user_id": user_id}
    return admin.every(A + "ListNotifications", body, "notifications")


def invitation_token(admin: Grpcurl, team_id: str, user_id: str) -> str:
    """The token of the user's latest invitation to the team, read from the outbox."""
    found = [
        n for n in notes(admin, team_id, user_id) if n["kind"] == "NOTIFICATION_KIND_INVITATION"
    ]
    assert found, f"no invitation for {user_id} in {team_id}"
    token: str = found[-1]["invitation_token"]
    assert token
    return token


def accept(admin: Grpcurl, token: str) -> dict[str, Any]:
    """AcceptInvitation with no credential at all: the token is the credential."""
    return admin(A + "AcceptInvitation", {"invitation_token": token}, token="")


def advance_to(admin: Grpcurl, when: str) -> None:
    assert admin(A + "AdvanceClock", {"to_time": when})["now"] == when


def entitle_code(client: Grpcurl, key: str) -> grpc.StatusCode:
    """The status code of an Entitle with this key (OK when it succeeds)."""
    try:
        client(L + "Entitle", ENTITLE, token=key)
    except GrpcurlError as err:
        return err.code
    return grpc.StatusCode.OK


def active_user_with_key(admin: Grpcurl, team_id: str, entry: str, user_id: str) -> str:
    """Invite ``entry`` to the team, accept, and return the user's key."""
    assign(admin, team_id, [entry], product_ids=["ACAD"])
    accepted = accept(admin, invitation_token(admin, team_id, user_id))
    assert accepted["user_id"] == user_id
    key: str = accepted["user_key"]
    return key


@pytest.fixture
def sheet(admin: Grpcurl) -> Grpcurl:
    """A server with ACAD and REVIT on the rate sheet and team ``alpha``."""
    add_product(admin, ACAD)
    add_product(admin, REVIT)
    create_team(admin, "alpha")
    return admin


@pytest.fixture
def anonymous(server: ServerThread, sheet: Grpcurl) -> Iterator[Grpcurl]:
    """A second client on the same server that sends no credential unless told."""
    client = Grpcurl(server.target, None)
    try:
        yield client
    finally:
        client.close()


# -- A1 assigning users -----------------------------------------------------------


def test_a1_new_users_are_invited_and_existing_users_join_at_once(sheet: Grpcurl) -> None:
    create_team(sheet, "beta")
    import_(sheet, "beta", ["Ann Lee <ann@example.com>"])  # known through import
    active_user_with_key(sheet, "beta", "Bob Ray <bob@example.com>", "bob@example.com")

    got = assign(
        sheet,
        "alpha",
        [" ANN@Example.com ", "Nia New <nia@example.com>", "bob@example.com"],
        product_ids=["ACAD"],
    )

    assert [m["user_id"] for m in got] == ["ann@example.com", "nia@example.com", "bob@example.com"]
    ann, nia, bob = got
    assert ann["state"] == "MEMBER_STATE_ACTIVE"
    assert ann["display_name"] == "Ann Lee"
    assert ann["effective_product_ids"] == ["ACAD"]
    assert "invitation" not in ann
    assert bob["state"] == "MEMBER_STATE_ACTIVE"
    assert bob["effective_product_ids"] == ["ACAD"]
    assert nia["state"] == "MEMBER_STATE_INVITED"
    assert nia["display_name"] == "Nia New"
    assert nia["email"] == "nia@example.com"
    assert nia["product_ids"] == ["ACAD"]
    assert nia.get("effective_product_ids", []) == []  # nothing until accepted
    invitation = nia["invitation"]
    assert invitation["state"] == "INVITATION_STATE_PENDING"
    assert invitation["team_id"] == "alpha"
    assert invitation["user_id"] == "nia@example.com"
    assert invitation["send_time"] == T0
    assert invitation["expire_time"] == T0_PLUS_7D
    assert member(sheet, "alpha", "nia@example.com") == nia


def test_a1_import_makes_active_members_without_invitation_or_notification(
    sheet: Grpcurl,
) -> None:
    got = import_(
        sheet,
        "alpha",
        ["Ann Lee <ann@example.com>", "Bo Chen <bo@example.com>"],
        product_ids=["ACAD", "REVIT"],
    )

    assert [(m["user_id"], m["state"]) for m in got] == [
        ("ann@example.com", "MEMBER_STATE_ACTIVE"),
        ("bo@example.com", "MEMBER_STATE_ACTIVE"),
    ]
    for m in members(sheet, "alpha"):
        assert m["state"] == "MEMBER_STATE_ACTIVE"
        assert "invitation" not in m
        assert m["effective_product_ids"] == ["ACAD", "REVIT"]
    assert notes(sheet, "alpha") == []
    assert notes(sheet) == []


def test_a1_import_of_an_invited_member_activates_them(sheet: Grpcurl) -> None:
    assign(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
    token = invitation_token(sheet, "alpha", "ann@example.com")

    got = import_(sheet, "alpha", ["ann@example.com"], product_ids=["ACAD"])

    assert got[0]["state"] == "MEMBER_STATE_ACTIVE"
    assert effective(sheet, "alpha", "ann@example.com") == ["ACAD"]
    refused(
        sheet,
        A + "AcceptInvitation",
        {"invitation_token": token},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_INVITATION",
        token="",
    )


@pytest.mark.parametrize(
    ("entry", "user_id", "display_name"),
    [
        ("Zoë O'Brien <Zoe@Example.COM>", "zoe@example.com", "Zoë O'Brien"),
        (
            '"Dr. Jane Q. Public" <jane.public@example.com>',
            "jane.public@example.com",
            "Dr. Jane Q. Public",
        ),
        ("山田 太郎 <taro@example.jp>", "taro@example.jp", "山田 太郎"),
        ("   Ann   Lee   <  ann@example.com  >   ", "ann@example.com", "Ann   Lee"),
        ("BOB SMITH <BOB.SMITH@EXAMPLE.COM>", "bob.smith@example.com", "BOB SMITH"),
        ("José-María Núñez Jr. <jm@example.es>", "jm@example.es", "José-María Núñez Jr."),
    ],
)
def test_a1_parses_names_as_written_and_lowercases_emails(
    sheet: Grpcurl, entry: str, user_id: str, display_name: str
) -> None:
    (got,) = assign(sheet, "alpha", [entry], product_ids=["ACAD"])

    assert got["user_id"] == user_id
    assert got["email"] == user_id
    assert got["display_name"] == display_name
    assert got["state"] == "MEMBER_STATE_INVITED"
    assert member(sheet, "alpha", user_id)["display_name"] == display_name
    (note,) = notes(sheet, "alpha", user_id)
    assert note["email"] == user_id


ZOE = "zo\u00eb@example.com"  # as AssignUsers keeps it: NFC, lower case


@pytest.mark.parametrize(
    "spelt",
    [
        "ZO\u00cb@Example.COM",
        "  zo\u00eb@example.com  ",
        "zoe\u0308@example.com",  # e and a combining diaeresis (NFD), as macOS types it
    ],
)
def test_a1_a_user_is_found_by_every_spelling_that_assigned_them(
    sheet: Grpcurl, spelt: str
) -> None:
    """A1: the spellings ``AssignUsers`` takes as one user (case, spaces, Unicode
    form) name that user in every call that names a user, not just the first."""
    (got,) = import_(sheet, "alpha", [f"Zo\u00eb <{spelt}>"], product_ids=["ACAD"])
    assert got["user_id"] == ZOE

    assert member(sheet, "alpha", spelt)["user_id"] == ZOE
    key = sheet(A + "IssueUserKey", {"user_id": spelt})
    assert key["user_id"] == ZOE
    assert entitle_code(sheet, key["user_key"]) is not grpc.StatusCode.UNAUTHENTICATED
    changed = sheet(
        A + "SetUserProducts", {"team_id": "alpha", "user_id": spelt, "product_ids": ["REVIT"]}
    )["member"]
    assert (changed["user_id"], changed["product_ids"]) == (ZOE, ["REVIT"])
    sheet(A + "UnassignUser", {"team_id": "alpha", "user_id": spelt})
    assert members(sheet, "alpha") == []


def test_a3_set_user_products_without_a_user_is_invalid_argument(sheet: Grpcurl) -> None:
    err = refused(
        sheet,
        A + "SetUserProducts",
        {"team_id": "alpha", "user_id": "", "product_ids": ["ACAD"]},
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(err.field_violations) == ["user_id"]


@pytest.mark.parametrize(
    "bad",
    [
        "Ann Lee ann@example.com",  # missing brackets
        "Ann Lee <ann@example.com",  # missing closing bracket
        "Ann Lee ann@example.com>",  # missing opening bracket
        "Ann Lee <ann@>",  # no domain
        "Ann Lee <ann>",  # no @ and no domain
        "Ann Lee",  # no address at all
        "",  # empty entry
        "Ann <ann@example.com> <bob@example.com>",  # two addresses
        "ghost@example.com",  # a user id nobody knows
    ],
)
def test_a1_malformed_entry_is_invalid_argument_naming_it(sheet: Grpcurl, bad: str) -> None:
    err = refused(
        sheet,
        A + "AssignUsers",
        {"team_id": "alpha", "users": ["Cy Good <cy@example.com>", bad], "product_ids": ["ACAD"]},
        grpc.StatusCode.INVALID_ARGUMENT,
    )

    assert list(err.field_violations) == ["users[1]"]
    assert err.field_violations["users[1]"]  # says what is wrong
    assert members(sheet, "alpha") == []
    assert notes(sheet) == []


@pytest.mark.parametrize(
    ("method", "body", "field", "words"),
    [
        (
            "AssignUsers",
            {"team_id": "alpha", "users": ["Long Name <" + "x" * 600 + "@example.com>"]},
            "users[0]",
            "too long",
        ),
        ("AssignUsers", {"team_id": "alpha", "users": ["y" * 600]}, "users[0]", "nor Full Name"),
        # 45 Chinese characters are 135 bytes, 41 emoji 164: a value is cut by its bytes
        (
            "AssignUsers",
            {"team_id": "alpha", "users": ["销售部北京办公室华北区大客户经理王小明" * 3]},
            "users[0]",
            "nor Full Name <email>",
        ),
        ("AssignUsers", {"team_id": "alpha", "users": ["🎉" * 41]}, "users[0]", "nor Full Name"),
        # a control character is shown as 4 bytes (\x01)
        ("AssignUsers", {"team_id": "alpha", "users": ["\x01" * 40]}, "users[0]", "nor Full Name"),
        (
            "SetDefaultAssignments",
            {"team_id": "alpha", "product_ids": ["\x02" * 200]},
            "product_ids[0]",
            "not on the rate sheet",
        ),
        (
            "AssignUsers",
            {"team_id": "alpha", "users": ["z" * 600 + "@example.com"]},
            "users[0]",
            "too long",
        ),
        (
            "SetDefaultAssignments",
            {"team_id": "alpha", "product_ids": ["P" * 600]},
            "product_ids[0]",
            "not on the rate sheet",
        ),
    ],
)
def test_a1_a_long_bad_value_is_refused_with_what_is_wrong_with_it(
    sheet: Grpcurl, method: str, body: dict[str, Any], field: str, words: str
) -> None:
    """A refusal repeats a caller's value cut short, so that what is wrong with it,
    said after it, survives the clip of each description to 160 bytes."""
    err = refused(sheet, A + method, body, grpc.StatusCode.INVALID_ARGUMENT)
    assert list(err.field_violations) == [field]
    assert words in err.field_violations[field]
    assert words in err.message


def test_a1_malformed_entry_rejects_the_whole_request(sheet: Grpcurl) -> None:
    create_team(sheet, "beta")
    import_(sheet, "beta", ["Old Timer <old@example.com>"])
    before_beta = members(sheet, "beta")

    err = refused(
        sheet,
        A + "AssignUsers",
        {
            "team_id": "alpha",
            "users": [
                "Ann Lee <ann@example.com>",
                "old@example.com",
                "Bo Chen <bo@example.com>",
                "Cy Bad <cy@nowhere>",
                "Di Fine <di@example.com>",
            ],
            "product_ids": ["ACAD"],
        },
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(err.field_violations) == ["users[3]"]
    assert "cy@nowhere" in err.field_violations["users[3]"]

    err = refused(
        sheet,
        A + "ImportUsers",
        {
            "team_id": "alpha",
            "users": [
                "Ann Lee <ann@example.com>",
                "Bo Chen <bo@example.com>",
                "Cy Bad <cy@example.com",
                "Di <di@>",
            ],
        },
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(err.field_violations) == {"users[2]", "users[3]"}

    assert members(sheet, "alpha") == []
    assert members(sheet, "beta") == before_beta
    assert notes(sheet) == []
    refused(
        sheet,
        A + "GetMember",
        {"team_id": "alpha", "user_id": "ann@example.com"},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_USER",
    )


def test_a1_unknown_product_rejects_the_whole_request(sheet: Grpcurl) -> None:
    err = refused(
        sheet,
        A + "AssignUsers",
        {
            "team_id": "alpha",
            "users": ["Ann Lee <ann@example.com>"],
            "product_ids": ["ACAD", "NOPE"],
        },
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(err.field_violations) == ["product_ids[1]"]
    assert members(sheet, "alpha") == []


def test_a1_duplicates_count_once(sheet: Grpcurl) -> None:
    got = assign(
        sheet,
        "alpha",
        [
            "Ann Lee <ann@example.com>",
            "ann@example.com",
            "ANN LEE <ANN@EXAMPLE.COM>",
            " Ann Lee <Ann@Example.com> ",
            "Bo Chen <bo@example.com>",
        ],
        product_ids=["ACAD"],
    )

    assert [m["user_id"] for m in got] == ["ann@example.com", "bo@example.com"]
    assert [m["user_id"] for m in members(sheet, "alpha")] == ["ann@example.com", "bo@example.com"]
    assert member(sheet, "alpha", "ann@example.com")["display_name"] == "Ann Lee"
    assert len(notes(sheet, "alpha", "ann@example.com")) == 1


def test_a1_empty_list_is_invalid_argument_on_users(sheet: Grpcurl) -> None:
    for method in ("AssignUsers", "ImportUsers"):
        err = refused(
            sheet, A + method, {"team_id": "alpha", "users": []}, grpc.StatusCode.INVALID_ARGUMENT
        )
        assert "users" in err.field_violations
    assert members(sheet, "alpha") == []


def test_a1_one_thousand_entries_in_one_request(sheet: Grpcurl) -> None:
    users = [f"User {n} <user{n}@example.com>" for n in range(1000)]

    got = assign(sheet, "alpha", users, product_ids=["ACAD"])

    assert len(got) == 1000
    listed = members(sheet, "alpha")
    assert len(listed) == 1000
    assert {m["user_id"] for m in listed} == {f"user{n}@example.com" for n in range(1000)}
    assert all(m["state"] == "MEMBER_STATE_INVITED" for m in listed)
    assert len(notes(sheet, "alpha")) == 1000


# -- A2 invitations ------------------------------------------------------------------


def test_a2_accept_one_second_before_seven_days_works(sheet: Grpcurl) -> None:
    assign(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
    token = invitation_token(sheet, "alpha", "ann@example.com")
    advance_to(sheet, T0_PLUS_7D_MINUS_1S)
    assert member(sheet, "alpha", "ann@example.com")["invitation"]["state"] == (
        "INVITATION_STATE_PENDING"
    )

    got = accept(sheet, token)

    assert got["user_id"] == "ann@example.com"
    assert got["user_key"]
    m = member(sheet, "alpha", "ann@example.com")
    assert m["state"] == "MEMBER_STATE_ACTIVE"
    assert m["invitation"]["state"] == "INVITATION_STATE_ACCEPTED"
    assert m["effective_product_ids"] == ["ACAD"]


def test_a2_invitation_expires_at_seven_days_exactly(sheet: Grpcurl) -> None:
    assign(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
    token = invitation_token(sheet, "alpha", "ann@example.com")
    advance_to(sheet, T0_PLUS_7D)

    err = refused(
        sheet,
        A + "AcceptInvitation",
        {"invitation_token": token},
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVITATION_EXPIRED",
        token="",
    )

    assert err.metadata.get("team_id") == "alpha"
    m = member(sheet, "alpha", "ann@example.com")
    assert m["state"] == "MEMBER_STATE_INVITED"
    assert m["invitation"]["state"] == "INVITATION_STATE_EXPIRED"
    assert m["invitation"]["expire_time"] == T0_PLUS_7D
    assert m.get("effective_product_ids", []) == []


def test_a2_resend_starts_new_seven_days_and_old_token_is_worthless(sheet: Grpcurl) -> None:
    assign(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
    old = invitation_token(sheet, "alpha", "ann@example.com")
    advance_to(sheet, "2026-01-04T00:00:00Z")

    invitation = sheet(A + "ResendInvitation", {"team_id": "alpha", "user_id": "ann@example.com"})[
        "invitation"
    ]

    assert invitation["send_time"] == "2026-01-04T00:00:00Z"
    assert invitation["expire_time"] == "2026-01-11T00:00:00Z"
    assert invitation["state"] == "INVITATION_STATE_PENDING"
    new = invitation_token(sheet, "alpha", "ann@example.com")
    assert new != old
    refused(
        sheet,
        A + "AcceptInvitation",
        {"invitation_token": old},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_INVITATION",
        token="",
    )
    advance_to(sheet, "2026-01-10T23:59:59Z")  # past the first 7 days, within the new ones
    assert accept(sheet, new)["user_id"] == "ann@example.com"
    refused(
        sheet,
        A + "AcceptInvitation",
        {"invitation_token": old},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_INVITATION",
        token="",
    )


def test_a2_resend_after_expiry_can_be_accepted(sheet: Grpcurl) -> None:
    assign(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
    advance_to(sheet, "2026-01-09T00:00:00Z")
    assert member(sheet, "alpha", "ann@example.com")["invitation"]["state"] == (
        "INVITATION_STATE_EXPIRED"
    )

    invitation = sheet(A + "ResendInvitation", {"team_id": "alpha", "user_id": "ann@example.com"})[
        "invitation"
    ]

    assert invitation["expire_time"] == "2026-01-16T00:00:00Z"
    assert invitation["state"] == "INVITATION_STATE_PENDING"
    advance_to(sheet, "2026-01-15T23:59:59Z")
    accept(sheet, invitation_token(sheet, "alpha", "ann@example.com"))
    assert member(sheet, "alpha", "ann@example.com")["state"] == "MEMBER_STATE_ACTIVE"


def test_a2_assigning_again_after_expiry_sends_a_new_invitation(sheet: Grpcurl) -> None:
    assign(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
    old = invitation_token(sheet, "alpha", "ann@example.com")
    advance_to(sheet, "2026-01-10T00:00:00Z")

    (got,) = assign(sheet, "alpha", ["ann@example.com"], product_ids=["ACAD"])

    assert got["state"] == "MEMBER_STATE_INVITED"
    assert got["invitation"]["state"] == "INVITATION_STATE_PENDING"
    assert got["invitation"]["expire_time"] == "2026-01-17T00:00:00Z"
    new = invitation_token(sheet, "alpha", "ann@example.com")
    assert new != old
    assert accept(sheet, new)["user_id"] == "ann@example.com"


@pytest.mark.parametrize("expired", [True, False], ids=["expired", "pending"])
def test_a1_a2_an_invited_user_who_joined_another_team_since_joins_at_once_when_assigned_again(
    sheet: Grpcurl, expired: bool
) -> None:
    """Ann, invited to alpha and to beta, accepts beta's: she is an existing user now
    (a key, an active member). Assigned to alpha again (her invitation there lapsed,
    or still pending), she joins at once, as an existing user does (A1), and her
    invitation to alpha is withdrawn: its token is worth nothing."""
    create_team(sheet, "beta")
    assign(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
    alphas = invitation_token(sheet, "alpha", "ann@example.com")
    assign(sheet, "beta", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
    accept(sheet, invitation_token(sheet, "beta", "ann@example.com"))
    if expired:
        advance_to(sheet, "2026-01-10T00:00:00Z")

    (got,) = assign(sheet, "alpha", ["ann@example.com"], product_ids=["ACAD"])

    assert got["state"] == "MEMBER_STATE_ACTIVE"
    assert "invitation" not in got
    assert member(sheet, "alpha", "ann@example.com")["state"] == "MEMBER_STATE_ACTIVE"
    kinds = [n["kind"] for n in notes(sheet, "alpha", "ann@example.com")]
    assert kinds == ["NOTIFICATION_KIND_INVITATION", "NOTIFICATION_KIND_ACCESS_CHANGED"]
    refused(
        sheet,
        A + "AcceptInvitation",
        {"invitation_token": alphas},
        grpc.StatusCode.NOT_FOUND,
        token="",
    )


def test_a2_a_spent_or_needless_invitation_is_already_exists(sheet: Grpcurl) -> None:
    assign(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
    token = invitation_token(sheet, "alpha", "ann@example.com")
    accept(sheet, token)

    refused(
        sheet,
        A + "AcceptInvitation",
        {"invitation_token": token},
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
        token="",
    )
    refused(
        sheet,
        A + "ResendInvitation",
        {"team_id": "alpha", "user_id": "ann@example.com"},
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
    )
    refused(
        sheet,
        A + "ResendInvitation",
        {"team_id": "alpha", "user_id": "ghost@example.com"},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_USER",
    )


def test_a2_unknown_token_is_unknown_invitation(sheet: Grpcurl) -> None:
    refused(
        sheet,
        A + "AcceptInvitation",
        {"invitation_token": "tsi_no-such-token"},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_INVITATION",
        token="",
    )


def test_a2_accept_needs_no_credential_and_returns_user_id_and_key(
    sheet: Grpcurl, anonymous: Grpcurl
) -> None:
    assign(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
    token = invitation_token(sheet, "alpha", "ann@example.com")

    got = anonymous(A + "AcceptInvitation", {"invitation_token": token})

    assert set(got) == {"user_id", "user_key"}
    assert got["user_id"] == "ann@example.com"
    assert len(got["user_key"]) >= 32
    # The other admin RPCs still want the admin token.
    refused(anonymous, A + "ListMembers", {"team_id": "alpha"}, grpc.StatusCode.UNAUTHENTICATED)


def test_a2_accepting_a_second_teams_invitation_keeps_the_users_key(sheet: Grpcurl) -> None:
    """A2: accepting gives the user their key, once. Zed, invited to alpha and to beta
    while new, accepts alpha's and runs ACAD on its key; accepting beta's then makes
    him beta's member too and answers no key: the one his product runs on stays."""
    create_team(sheet, "beta")
    sheet(A + "PurchaseTokens", {"team_id": "alpha", "tokens": 100, "request_id": "po-1"})
    zed = "zed@example.com"
    for team in ("alpha", "beta"):
        assign(sheet, team, [f"Zed Zee <{zed}>"], product_ids=["ACAD"])
    first = accept(sheet, invitation_token(sheet, "alpha", zed))
    key = first["user_key"]
    assert key.startswith("tsk_")
    session = sheet(L + "Entitle", ENTITLE, token=key)["session"]["session_id"]
    second = accept(sheet, invitation_token(sheet, "beta", zed))
    assert second == {"user_id": zed}  # an empty user_key: JSON leaves it out
    assert member(sheet, "beta", zed)["state"] == "MEMBER_STATE_ACTIVE"
    beat = sheet(L + "Heartbeat", {"session_id": session}, token=key)["session"]
    assert beat["state"] == "SESSION_STATE_ACTIVE"
    assert entitle_code(sheet, key) is grpc.StatusCode.OK


# -- user keys ---------------------------------------------------------------------


def test_keys_user_key_authenticates_on_licensing_service(sheet: Grpcurl) -> None:
    key = active_user_with_key(sheet, "alpha", "Ann Lee <ann@example.com>", "ann@example.com")

    assert entitle_code(sheet, key) is not grpc.StatusCode.UNAUTHENTICATED
    assert entitle_code(sheet, key + "x") is grpc.StatusCode.UNAUTHENTICATED
    assert entitle_code(sheet, "tsk_not-a-key") is grpc.StatusCode.UNAUTHENTICATED
    assert entitle_code(sheet, ADMIN_TOKEN) is grpc.StatusCode.UNAUTHENTICATED
    refused(sheet, L + "Entitle", ENTITLE, grpc.StatusCode.UNAUTHENTICATED, token="")


def test_keys_user_key_on_admin_service_is_permission_denied(sheet: Grpcurl) -> None:
    key = active_user_with_key(sheet, "alpha", "Ann Lee <ann@example.com>", "ann@example.com")

    refused(sheet, A + "GetServerInfo", {}, grpc.StatusCode.PERMISSION_DENIED, token=key)
    refused(
        sheet,
        A + "IssueUserKey",
        {"user_id": "ann@example.com"},
        grpc.StatusCode.PERMISSION_DENIED,
        token=key,
    )


def test_keys_issue_user_key_replaces_the_old_key(sheet: Grpcurl) -> None:
    old = active_user_with_key(sheet, "alpha", "Ann Lee <ann@example.com>", "ann@example.com")

    got = sheet(A + "IssueUserKey", {"user_id": "ann@example.com"})

    new = got["user_key"]
    assert got["user_id"] == "ann@example.com"
    assert new and new != old
    assert entitle_code(sheet, old) is grpc.StatusCode.UNAUTHENTICATED
    assert entitle_code(sheet, new) is not grpc.StatusCode.UNAUTHENTICATED
    refused(
        sheet,
        A + "IssueUserKey",
        {"user_id": "ghost@example.com"},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_USER",
    )


def test_keys_imported_user_gets_a_key_from_issue_user_key(sheet: Grpcurl) -> None:
    import_(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])

    key = sheet(A + "IssueUserKey", {"user_id": "ann@example.com"})["user_key"]

    assert entitle_code(sheet, key) is not grpc.StatusCode.UNAUTHENTICATED


def test_keys_and_tokens_never_appear_in_logs(sheet: Grpcurl) -> None:
    secrets = [ADMIN_TOKEN]
    with capture_logs() as logs:
        assign(
            sheet,
            "alpha",
            ["Ann Lee <ann@example.com>", "Bo Chen <bo@example.com>"],
            product_ids=["ACAD"],
        )
        ann_token = invitation_token(sheet, "alpha", "ann@example.com")
        bo_old = invitation_token(sheet, "alpha", "bo@example.com")
        sheet(A + "ResendInvitation", {"team_id": "alpha", "user_id": "bo@example.com"})
        bo_new = invitation_token(sheet, "alpha", "bo@example.com")
        secrets += [ann_token, bo_old, bo_new]
        ann_key = accept(sheet, ann_token)["user_key"]
        secrets.append(ann_key)
        with pytest.raises(GrpcurlError):
            accept(sheet, ann_token)  # spent: refused, and logged as such
        with pytest.raises(GrpcurlError):
            accept(sheet, bo_old)  # replaced
        bo_key = accept(sheet, bo_new)["user_key"]
        secrets.append(bo_key)
        entitle_code(sheet, ann_key)
        entitle_code(sheet, ann_key + "x")
        new_key = sheet(A + "IssueUserKey", {"user_id": "ann@example.com"})["user_key"]
        secrets.append(new_key)
        entitle_code(sheet, new_key)
        entitle_code(sheet, ann_key)  # now revoked
        with pytest.raises(GrpcurlError):
            sheet(A + "ListMembers", {"team_id": "alpha"}, token=bo_key)
        with pytest.raises(GrpcurlError):
            sheet(A + "ListMembers", {"team_id": "alpha"}, token="tsa_wrong")

    rpc_lines = [e for e in logs if e.get("event") == "rpc"]
    assert len(rpc_lines) >= 10, logs  # the capture saw the server's request lines
    assert {e.get("method") for e in rpc_lines} >= {
        "AcceptInvitation",
        "IssueUserKey",
        "ResendInvitation",
    }
    for entry in logs:
        text = repr(entry)
        for secret in secrets:
            assert secret not in text, f"a secret leaked into the log line {entry['event']!r}"


# -- A3 individual access -------------------------------------------------------------


def test_a3_all_products_grows_with_the_rate_sheet_and_explicit_set_does_not(
    sheet: Grpcurl,
) -> None:
    import_(sheet, "alpha", ["Ann Lee <ann@example.com>"], all_products=True)
    import_(sheet, "alpha", ["Bo Chen <bo@example.com>"], product_ids=["ACAD"])
    ann = member(sheet, "alpha", "ann@example.com")
    assert ann["all_products"] is True
    assert ann["effective_product_ids"] == ["ACAD", "REVIT"]

    add_product(sheet, MAYA)

    assert effective(sheet, "alpha", "ann@example.com") == ["ACAD", "MAYA", "REVIT"]
    bo = member(sheet, "alpha", "bo@example.com")
    assert bo["product_ids"] == ["ACAD"]
    assert bo["effective_product_ids"] == ["ACAD"]


def test_a3_set_user_products_replaces_the_individual_set(sheet: Grpcurl) -> None:
    import_(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])

    got = sheet(
        A + "SetUserProducts",
        {"team_id": "alpha", "user_id": "ann@example.com", "product_ids": ["REVIT"]},
    )["member"]
    assert got["product_ids"] == ["REVIT"]
    assert got["effective_product_ids"] == ["REVIT"]

    got = sheet(
        A + "SetUserProducts",
        {"team_id": "alpha", "user_id": "ann@example.com", "all_products": True},
    )["member"]
    assert got["all_products"] is True
    add_product(sheet, MAYA)
    assert effective(sheet, "alpha", "ann@example.com") == ["ACAD", "MAYA", "REVIT"]


def test_a3_set_user_products_with_unknown_product_names_it(sheet: Grpcurl) -> None:
    import_(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])

    err = refused(
        sheet,
        A + "SetUserProducts",
        {"team_id": "alpha", "user_id": "ann@example.com", "product_ids": ["NOPE"]},
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(err.field_violations) == ["product_ids[0]"]
    err = refused(
        sheet,
        A + "SetUserProducts",
        {"team_id": "alpha", "user_id": "ann@example.com", "product_ids": ["REVIT", "NOPE"]},
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(err.field_violations) == ["product_ids[1]"]

    assert member(sheet, "alpha", "ann@example.com")["product_ids"] == ["ACAD"]
    refused(
        sheet,
        A + "SetUserProducts",
        {"team_id": "alpha", "user_id": "ghost@example.com", "product_ids": ["ACAD"]},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_USER",
    )


@pytest.mark.parametrize("method", ["AssignUsers", "ImportUsers", "SetUserProducts"])
def test_a3_product_ids_and_all_products_together_are_invalid_argument(
    sheet: Grpcurl, method: str
) -> None:
    """A member runs all products or a list (``product_ids`` or ``all_products``):
    a request naming both is refused naming ``product_ids`` and changes nothing,
    rather than ``all_products`` winning without a word."""
    import_(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
    before = notes(sheet, "alpha")
    body: dict[str, Any] = {"team_id": "alpha", "product_ids": ["REVIT"], "all_products": True}
    if method == "SetUserProducts":
        body["user_id"] = "ann@example.com"
    else:
        body["users"] = ["ann@example.com", "Bo Wu <bo@example.com>"]
    err = refused(sheet, A + method, body, grpc.StatusCode.INVALID_ARGUMENT)
    assert list(err.field_violations) == ["product_ids"]
    assert "all_products" in err.field_violations["product_ids"]
    ann = member(sheet, "alpha", "ann@example.com")
    assert (ann.get("all_products", False), ann["product_ids"]) == (False, ["ACAD"])
    assert [m["user_id"] for m in members(sheet, "alpha")] == ["ann@example.com"]
    assert notes(sheet, "alpha") == before


# -- A4 default assignments -------------------------------------------------------------


def test_a4_default_set_applies_to_every_member_and_does_not_grow(sheet: Grpcurl) -> None:
    import_(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])

    got = sheet(A + "SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["REVIT"]})
    assert got["team"]["default_product_ids"] == ["REVIT"]
    assert sheet(A + "GetTeam", {"team_id": "alpha"})["team"]["default_product_ids"] == ["REVIT"]

    assert effective(sheet, "alpha", "ann@example.com") == ["ACAD", "REVIT"]
    assert member(sheet, "alpha", "ann@example.com")["product_ids"] == ["ACAD"]
    import_(sheet, "alpha", ["Cy Doe <cy@example.com>"])  # new, no individual products
    assert effective(sheet, "alpha", "cy@example.com") == ["REVIT"]

    add_product(sheet, MAYA)
    assert effective(sheet, "alpha", "cy@example.com") == ["REVIT"]
    assert sheet(A + "GetTeam", {"team_id": "alpha"})["team"]["default_product_ids"] == ["REVIT"]

    got = sheet(A + "SetDefaultAssignments", {"team_id": "alpha", "product_ids": []})
    assert got["team"].get("default_product_ids", []) == []
    assert effective(sheet, "alpha", "ann@example.com") == ["ACAD"]
    assert effective(sheet, "alpha", "cy@example.com") == []


def test_a4_default_set_with_unknown_product_is_invalid_argument(sheet: Grpcurl) -> None:
    err = refused(
        sheet,
        A + "SetDefaultAssignments",
        {"team_id": "alpha", "product_ids": ["NOPE"]},
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(err.field_violations) == ["product_ids[0]"]
    assert sheet(A + "GetTeam", {"team_id": "alpha"})["team"].get("default_product_ids", []) == []


def test_a4_invited_member_runs_no_default_product_until_accepting(sheet: Grpcurl) -> None:
    sheet(A + "SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["REVIT"]})
    assign(sheet, "alpha", ["Ann Lee <ann@example.com>"])
    assert effective(sheet, "alpha", "ann@example.com") == []

    accept(sheet, invitation_token(sheet, "alpha", "ann@example.com"))

    assert effective(sheet, "alpha", "ann@example.com") == ["REVIT"]


# -- A5 guests -------------------------------------------------------------------------


def test_a5_guests_get_defaults_only_when_the_team_says_so(sheet: Grpcurl) -> None:
    sheet(A + "SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["REVIT"]})
    (gus,) = import_(
        sheet, "alpha", ["Gus Guest <gus@example.com>"], product_ids=["ACAD"], guest=True
    )
    import_(sheet, "alpha", ["Mo Member <mo@example.com>"])
    assert gus["guest"] is True
    assert gus["effective_product_ids"] == ["ACAD"]
    assert (
        sheet(A + "GetTeam", {"team_id": "alpha"})["team"].get("guest_default_assignments", False)
        is False
    )

    team = sheet(A + "UpdateTeamSettings", {"team_id": "alpha", "guest_default_assignments": True})[
        "team"
    ]
    assert team["guest_default_assignments"] is True
    assert effective(sheet, "alpha", "gus@example.com") == ["ACAD", "REVIT"]

    team = sheet(
        A + "UpdateTeamSettings", {"team_id": "alpha", "guest_default_assignments": False}
    )["team"]
    assert team.get("guest_default_assignments", False) is False
    assert effective(sheet, "alpha", "gus@example.com") == ["ACAD"]
    assert effective(sheet, "alpha", "mo@example.com") == ["REVIT"]


def test_a5_assigning_a_member_again_keeps_their_guest_mark_unless_it_is_given(
    sheet: Grpcurl,
) -> None:
    """A5 with A1: an assignment adds to a member's products and says nothing about
    what they are unless ``guest`` is set. Gus, a guest with ACAD, assigned MAYA
    stays a guest (the team's default REVIT stays out of his reach); told
    ``guest: false`` he is a member and gets it; ``guest: true`` makes him a guest
    again. A new user named without it is no guest."""
    add_product(sheet, MAYA)
    sheet(A + "SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["REVIT"]})
    gus = "gus@example.com"
    import_(sheet, "alpha", [f"Gus Guest <{gus}>"], product_ids=["ACAD"], guest=True)
    (again,) = assign(sheet, "alpha", [gus], product_ids=["MAYA"])
    assert again["guest"] is True
    assert again["effective_product_ids"] == ["ACAD", "MAYA"]
    (member_now,) = assign(sheet, "alpha", [gus], guest=False)
    assert member_now.get("guest", False) is False
    assert member_now["effective_product_ids"] == ["ACAD", "MAYA", "REVIT"]
    (guest_again,) = import_(sheet, "alpha", [gus], guest=True)
    assert guest_again["guest"] is True
    assert guest_again["effective_product_ids"] == ["ACAD", "MAYA"]
    (new,) = import_(sheet, "alpha", ["Nia New <nia@example.com>"])
    assert new.get("guest", False) is False


def test_a5_a_guest_mark_for_members_only_adds_no_one_removed_meanwhile(sheet: Grpcurl) -> None:
    """A page makes Gus a guest (AssignUsers, ``guest``) after another administrator
    removed him: without ``members_only`` he was added back, as a guest, by a call
    meant to change a member. With it he is refused (UNKNOWN_USER) and stays out;
    a member named with it is changed as before."""
    gus, nia = "gus@example.com", "nia@example.com"
    import_(sheet, "alpha", [f"Gus Guest <{gus}>", f"Nia New <{nia}>"], product_ids=["ACAD"])
    sheet(A + "UnassignUser", {"team_id": "alpha", "user_id": gus})
    err = refused(
        sheet,
        A + "AssignUsers",
        {"team_id": "alpha", "users": [nia, gus], "guest": True, "members_only": True},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_USER",
    )
    assert err.metadata["user_id"] == gus
    assert [m["user_id"] for m in members(sheet, "alpha")] == [nia]
    assert member(sheet, "alpha", nia).get("guest", False) is False  # nothing changed
    (nia_now,) = assign(sheet, "alpha", [nia], guest=True, members_only=True)
    assert nia_now["guest"] is True


# -- A6 removing access -------------------------------------------------------------------


def test_a6_unassign_removes_the_member(sheet: Grpcurl) -> None:
    import_(
        sheet,
        "alpha",
        ["Ann Lee <ann@example.com>", "Bo Chen <bo@example.com>"],
        product_ids=["ACAD"],
    )

    assert sheet(A + "UnassignUser", {"team_id": "alpha", "user_id": "ann@example.com"}) == {}

    refused(
        sheet,
        A + "GetMember",
        {"team_id": "alpha", "user_id": "ann@example.com"},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_USER",
    )
    assert [m["user_id"] for m in members(sheet, "alpha")] == ["bo@example.com"]
    refused(
        sheet,
        A + "UnassignUser",
        {"team_id": "alpha", "user_id": "ann@example.com"},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_USER",
    )


def test_a6_unassign_an_invited_member_makes_their_token_worthless(sheet: Grpcurl) -> None:
    assign(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
    token = invitation_token(sheet, "alpha", "ann@example.com")

    sheet(A + "UnassignUser", {"team_id": "alpha", "user_id": "ann@example.com"})

    refused(
        sheet,
        A + "AcceptInvitation",
        {"invitation_token": token},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_INVITATION",
        token="",
    )


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("AssignUsers", {"users": ["Ann Lee <ann@example.com>"]}),
        ("ImportUsers", {"users": ["Ann Lee <ann@example.com>"]}),
        ("UnassignUser", {"user_id": "ann@example.com"}),
        ("SetUserProducts", {"user_id": "ann@example.com", "product_ids": ["ACAD"]}),
        ("GetMember", {"user_id": "ann@example.com"}),
        ("ListMembers", {}),
        ("SetDefaultAssignments", {"product_ids": ["ACAD"]}),
        ("ResendInvitation", {"user_id": "ann@example.com"}),
        ("ListNotifications", {}),
        ("UpdateTeamSettings", {"plan": "PLAN_PREMIUM"}),
    ],
)
def test_a1_unknown_team_is_unknown_team(sheet: Grpcurl, method: str, body: dict[str, Any]) -> None:
    refused(
        sheet, A + method, {"team_id": "nope", **body}, grpc.StatusCode.NOT_FOUND, "UNKNOWN_TEAM"
    )


# -- A7 notifications ---------------------------------------------------------------------


def test_a7_notifications_for_invitations_and_individual_changes_only(sheet: Grpcurl) -> None:
    create_team(sheet, "beta")
    import_(sheet, "beta", ["Bo Chen <bo@example.com>"])  # import: no notification
    assert notes(sheet) == []

    assign(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
    advance_to(sheet, "2026-01-01T01:00:00Z")
    assign(sheet, "alpha", ["bo@example.com"], product_ids=["ACAD"])  # existing: joins
    advance_to(sheet, "2026-01-01T02:00:00Z")
    sheet(
        A + "SetUserProducts",
        {"team_id": "alpha", "user_id": "bo@example.com", "product_ids": ["ACAD", "REVIT"]},
    )
    sheet(A + "SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["REVIT"]})
    sheet(A + "SetDefaultAssignments", {"team_id": "beta", "product_ids": ["ACAD"]})
    sheet(A + "SetDefaultAssignments", {"team_id": "alpha", "product_ids": []})
    import_(sheet, "alpha", ["Cy Doe <cy@example.com>"], product_ids=["ACAD"])

    alpha = notes(sheet, "alpha")
    assert [(n["user_id"], n["kind"], n["create_time"]) for n in alpha] == [
        ("ann@example.com", "NOTIFICATION_KIND_INVITATION", T0),
        ("bo@example.com", "NOTIFICATION_KIND_ACCESS_CHANGED", "2026-01-01T01:00:00Z"),
        ("bo@example.com", "NOTIFICATION_KIND_ACCESS_CHANGED", "2026-01-01T02:00:00Z"),
    ]
    invitation, changed, _ = alpha
    assert invitation["team_id"] == "alpha"
    assert invitation["email"] == "ann@example.com"
    assert invitation["invitation_token"]
    assert invitation["notification_id"]
    assert "invitation_token" not in changed
    assert changed["email"] == "bo@example.com"
    assert len({n["notification_id"] for n in alpha}) == 3

    assert notes(sheet, "beta") == []
    assert notes(sheet, "", "bo@example.com") == alpha[1:]
    assert notes(sheet, "alpha", "ann@example.com") == alpha[:1]
    assert notes(sheet, "beta", "bo@example.com") == []
    assert notes(sheet, "", "cy@example.com") == []
    assert notes(sheet) == alpha
    # The token in the outbox is the one that works.
    assert accept(sheet, invitation["invitation_token"])["user_id"] == "ann@example.com"


def test_a7_a_guest_flag_that_changes_nothing_they_may_run_sends_no_email(
    sheet: Grpcurl,
) -> None:
    """A7 emails an assignment, a change of individual products, an invitation. A
    member made a guest in a team without default assignments may run what they ran:
    no email; with a default set that guests do not get, they lose it: an email."""
    import_(sheet, "alpha", ["Bo Chen <bo@example.com>"], product_ids=["ACAD"])
    [bo] = assign(sheet, "alpha", ["bo@example.com"], guest=True)
    assert (bo["guest"], bo["effective_product_ids"]) == (True, ["ACAD"])
    assert notes(sheet, "alpha") == []
    sheet(A + "SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["REVIT"]})
    [bo] = assign(sheet, "alpha", ["bo@example.com"], guest=False)
    assert bo["effective_product_ids"] == ["ACAD", "REVIT"]
    assert [n["kind"] for n in notes(sheet, "alpha")] == ["NOTIFICATION_KIND_ACCESS_CHANGED"]


@pytest.mark.parametrize("own", [{"all_products": True}, {"product_ids": ["REVIT"]}])
def test_a7_a_guest_flag_is_no_email_for_a_member_whose_own_products_hold_the_defaults(
    sheet: Grpcurl, own: dict[str, Any]
) -> None:
    """The default set (REVIT) adds nothing to what cy runs by her own assignment (every
    product, or REVIT): made a guest, and back, she may run the same, and no email is
    queued (each flip queued one)."""
    sheet(A + "SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["REVIT"]})
    [cy] = import_(sheet, "alpha", ["Cy Ng <cy@example.com>"], **own)
    runs = cy["effective_product_ids"]
    for guest in (True, False):
        [cy] = assign(sheet, "alpha", ["cy@example.com"], guest=guest)
        assert (cy.get("guest", False), cy["effective_product_ids"]) == (guest, runs)
    assert notes(sheet, "alpha") == []


def test_issue12_h2_14_assign_adds_to_a_member_and_notifies_only_when_it_changed(
    sheet: Grpcurl,
) -> None:
    """Issue 12, point 14: AssignUsers on a member replaced their products."""
    import_(sheet, "alpha", ["Bo Chen <bo@example.com>"], product_ids=["ACAD"])
    [bo] = assign(sheet, "alpha", ["bo@example.com"], product_ids=["REVIT"])
    assert bo["product_ids"] == ["ACAD", "REVIT"]
    assert bo["effective_product_ids"] == ["ACAD", "REVIT"]
    assert [n["kind"] for n in notes(sheet, "alpha")] == ["NOTIFICATION_KIND_ACCESS_CHANGED"]
    [bo] = assign(sheet, "alpha", ["bo@example.com"], product_ids=["ACAD"])  # nothing new
    assert bo["product_ids"] == ["ACAD", "REVIT"]
    assert len(notes(sheet, "alpha")) == 1
    [bo] = import_(sheet, "alpha", ["bo@example.com"], product_ids=[])  # imports add too
    assert bo["product_ids"] == ["ACAD", "REVIT"]
    [bo] = assign(sheet, "alpha", ["bo@example.com"], all_products=True, guest=True)
    assert (bo["all_products"], bo["guest"], bo.get("product_ids", [])) == (True, True, [])
    assert len(notes(sheet, "alpha")) == 2
    [bo] = assign(sheet, "alpha", ["bo@example.com"], product_ids=["ACAD"])  # guest unsaid
    assert (bo["all_products"], bo["guest"]) == (True, True)
    [bo] = assign(sheet, "alpha", ["bo@example.com"], guest=False)  # guest as given
    assert (bo["all_products"], bo.get("guest", False)) == (True, False)
    sheet(  # SetUserProducts is the way to replace
        A + "SetUserProducts",
        {"team_id": "alpha", "user_id": "bo@example.com", "product_ids": ["REVIT"]},
    )
    assert member(sheet, "alpha", "bo@example.com")["product_ids"] == ["REVIT"]


def test_a7_resend_queues_a_new_invitation_with_the_new_token(sheet: Grpcurl) -> None:
    assign(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
    sheet(A + "ResendInvitation", {"team_id": "alpha", "user_id": "ann@example.com"})

    sent = notes(sheet, "alpha", "ann@example.com")

    assert [n["kind"] for n in sent] == ["NOTIFICATION_KIND_INVITATION"] * 2
    # Only the current token is shown (issue 12: derived, never stored); the first
    # one is worthless since the resend.
    assert "invitation_token" not in sent[0]
    assert accept(sheet, sent[1]["invitation_token"])["user_id"] == "ann@example.com"


# -- A8 plan -------------------------------------------------------------------------------


def test_a8_update_team_settings_plan_shows_in_get_team(sheet: Grpcurl) -> None:
    assert sheet(A + "GetTeam", {"team_id": "alpha"})["team"]["plan"] == "PLAN_STANDARD"

    got = sheet(A + "UpdateTeamSettings", {"team_id": "alpha", "plan": "PLAN_PREMIUM"})

    assert got["team"]["plan"] == "PLAN_PREMIUM"
    assert sheet(A + "GetTeam", {"team_id": "alpha"})["team"]["plan"] == "PLAN_PREMIUM"
    # A settings call without a plan leaves the plan alone.
    sheet(A + "UpdateTeamSettings", {"team_id": "alpha", "guest_default_assignments": True})
    assert sheet(A + "GetTeam", {"team_id": "alpha"})["team"]["plan"] == "PLAN_PREMIUM"


# -- C1, C2 subscriptions and trials ----------------------------------------------------------


def test_c1_grant_subscription_is_validated_and_stored(sheet: Grpcurl) -> None:
    import_(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
    good = {
        "user_id": "ann@example.com",
        "product_id": "ACAD",
        "start_time": "2026-01-02T00:00:00Z",
        "end_time": "2026-02-02T00:00:00Z",
    }

    refused(
        sheet,
        A + "GrantSubscription",
        {**good, "user_id": "ghost@example.com"},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_USER",
    )
    refused(
        sheet,
        A + "GrantSubscription",
        {**good, "product_id": "NOPE"},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_PRODUCT",
    )
    for end in ("2026-01-02T00:00:00Z", "2026-01-01T12:00:00Z"):
        err = refused(
            sheet,
            A + "GrantSubscription",
            {**good, "end_time": end},
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert "end_time" in err.field_violations

    sub = sheet(A + "GrantSubscription", good)["subscription"]

    assert sub["subscription_id"]
    assert sub["user_id"] == "ann@example.com"
    assert sub["product_id"] == "ACAD"
    assert sub["kind"] == "SUBSCRIPTION_KIND_SUBSCRIPTION"
    assert sub["start_time"] == "2026-01-02T00:00:00Z"
    assert sub["end_time"] == "2026-02-02T00:00:00Z"


def test_c2_start_trial_is_validated_and_starts_now(sheet: Grpcurl) -> None:
    import_(sheet, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
    advance_to(sheet, "2026-01-05T00:00:00Z")
    good = {"user_id": "ann@example.com", "product_id": "REVIT", "end_time": "2026-01-19T00:00:00Z"}

    refused(
        sheet,
        A + "StartTrial",
        {**good, "user_id": "ghost@example.com"},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_USER",
    )
    refused(
        sheet,
        A + "StartTrial",
        {**good, "product_id": "NOPE"},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_PRODUCT",
    )
    for end in ("2026-01-05T00:00:00Z", "2026-01-04T00:00:00Z"):
        err = refused(
            sheet, A + "StartTrial", {**good, "end_time": end}, grpc.StatusCode.INVALID_ARGUMENT
        )
        assert "end_time" in err.field_violations

    sub = sheet(A + "StartTrial", good)["subscription"]

    assert sub["subscription_id"]
    assert sub["user_id"] == "ann@example.com"
    assert sub["product_id"] == "REVIT"
    assert sub["kind"] == "SUBSCRIPTION_KIND_TRIAL"
    assert sub["start_time"] == "2026-01-05T00:00:00Z"
    assert sub["end_time"] == "2026-01-19T00:00:00Z"


# -- restart -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a1_a2_a7_everything_survives_a_restart(
    database: Path | str, processes: list[ServerProcess]
) -> None:
    db = database
    first = ServerProcess(db).start()
    processes.append(first)
    try:
        c = Grpcurl(first.target, ADMIN_TOKEN)
        add_product(c, ACAD)
        create_team(c, "alpha")
        import_(c, "alpha", ["Ann Lee <ann@example.com>"], product_ids=["ACAD"])
        key = active_user_with_key(c, "alpha", "Bo Chen <bo@example.com>", "bo@example.com")
        advance_to(c, "2026-01-02T00:00:00Z")
        assign(
            c, "alpha", ["Cy Doe <cy@example.com>", "Di Roe <di@example.com>"], product_ids=["ACAD"]
        )
        cy_token = invitation_token(c, "alpha", "cy@example.com")
        di_token = invitation_token(c, "alpha", "di@example.com")
        c(A + "SetDefaultAssignments", {"team_id": "alpha", "product_ids": ["ACAD"]})
        c(
            A + "GrantSubscription",
            {
                "user_id": "ann@example.com",
                "product_id": "ACAD",
                "start_time": T0,
                "end_time": "2026-03-01T00:00:00Z",
            },
        )
        before_members = members(c, "alpha")
        before_notes = notes(c)
        before_team = c(A + "GetTeam", {"team_id": "alpha"})["team"]
        c.close()
    finally:
        assert first.terminate() == 0

    second = ServerProcess(db).start()
    processes.append(second)
    try:
        c = Grpcurl(second.target, ADMIN_TOKEN)
        assert c(A + "GetServerInfo", {})["now"] == "2026-01-02T00:00:00Z"
        assert members(c, "alpha") == before_members
        assert notes(c) == before_notes
        assert c(A + "GetTeam", {"team_id": "alpha"})["team"] == before_team
        assert entitle_code(c, key) is not grpc.StatusCode.UNAUTHENTICATED
        refused(c, A + "GetServerInfo", {}, grpc.StatusCode.PERMISSION_DENIED, token=key)
        # Pending invitations still work, and still expire 7 days after sending.
        assert accept(c, cy_token)["user_id"] == "cy@example.com"
        advance_to(c, "2026-01-09T00:00:00Z")
        assert member(c, "alpha", "di@example.com")["invitation"]["state"] == (
            "INVITATION_STATE_EXPIRED"
        )
        refused(
            c,
            A + "AcceptInvitation",
            {"invitation_token": di_token},
            grpc.StatusCode.FAILED_PRECONDITION,
            "INVITATION_EXPIRED",
            token="",
        )
        c.close()
    finally:
        assert second.terminate() == 0
