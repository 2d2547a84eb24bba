"""Token accounts, the rate sheet, the clock and the edge, against a real server.

Everything goes through the grpcurl stand-in (reflection + JSON), with bodies
exactly as an operator would type them for grpcurl: snake_case or
lowerCamelCase keys, enum names as strings, Durations as ``"3600s"`` and
Timestamps as RFC 3339. The server starts with its test clock at
2026-01-01T00:00:00Z (``tests/support.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from server.domain.changes import Changes
from server.domain.ledger import Cause, Hold
from tessera_api.tessera.v1 import admin_service_pb2 as adm
from tessera_api.tessera.v1 import admin_service_pb2_grpc as adm_grpc
from tests.grpcurl import Grpcurl, GrpcurlError
from tests.support import ADMIN_TOKEN, ServerThread, running

A = "tessera.v1.AdminService/"
L = "tessera.v1.LicensingService/"
T0 = "2026-01-01T00:00:00Z"
ONE_YEAR_LATER = "2027-01-01T00:00:00Z"


# -- helpers ------------------------------------------------------------------


def refused(
    client: Grpcurl,
    method: str,
    body: dict[str, Any],
    code: grpc.StatusCode,
    reason: str | None = None,
) -> GrpcurlError:
    """Call ``method`` expecting a refusal with ``code`` (and ErrorInfo ``reason``)."""
    with pytest.raises(GrpcurlError) as info:
        client(method, body)
    err = info.value
    assert err.code is code, f"expected {code.name}, got {err}"
    if reason is not None:
        assert err.reason == reason, f"expected reason {reason}, got {err}"
    return err


def create_team(admin: Grpcurl, team_id: str, plan: str = "PLAN_STANDARD") -> dict[str, Any]:
    return admin(
        A + "CreateTeam", {"team_id": team_id, "displayName": team_id.title(), "plan": plan}
    )["team"]


def purchase(admin: Grpcurl, team_id: str, tokens: int, request_id: str = "") -> dict[str, Any]:
    """PurchaseTokens; a fresh request id unless told (one is required)."""
    body = {"teamId": team_id, "tokens": tokens, "requestId": request_id or f"po-{uuid4()}"}
    return admin(A + "PurchaseTokens", body)["token_pack"]


def packs(admin: Grpcurl, team_id: str) -> list[dict[str, Any]]:
    return admin(A + "ListTokenPacks", {"team_id": team_id}).get("packs", [])


def team(admin: Grpcurl, team_id: str) -> dict[str, Any]:
    return admin(A + "GetTeam", {"team_id": team_id})["team"]


def ledger(admin: Grpcurl, team_id: str) -> list[dict[str, Any]]:
    """Every entry of the team, following next_page_token."""
    out: list[dict[str, Any]] = []
    token = ""
    while True:
        page = admin(A + "ListLedgerEntries", {"team_id": team_id, "page_token": token})
        out.extend(page.get("entries", []))
        token = page.get("next_page_token", "")
        if not token:
            return out


def now(admin: Grpcurl) -> str:
    return admin(A + "GetServerInfo", {})["now"]


def tokens_of(obj: dict[str, Any], field: str) -> int:
    """An int64 from JSON (a string; absent when 0)."""
    return int(obj.get(field, "0"))


def add_product(admin: Grpcurl, product: dict[str, Any]) -> dict[str, Any]:
    return admin(A + "UpsertProduct", {"product": product})["product"]


ACAD = {
    "product_id": "ACAD",
    "display_name": "AutoCAD",
    "daily_rate": 10,
    "kind": "PRODUCT_KIND_PRODUCT",
    "platforms": ["PLATFORM_WINDOWS", "PLATFORM_MACOS"],
}


HELD: dict[str, Hold] = {}  # the holds hold_tokens took, until capture_tokens takes them


def hold_tokens(server: ServerThread, team_id: str, amount: int, hold_id: str = "h1") -> None:
    """Hold tokens the way a session in grace will (M2), straight on the engine,
    committed like a use case (sessions arrive in a later issue)."""

    async def go() -> None:
        engine = server.server.engine
        assert engine is not None
        changes = Changes()
        hold = engine.ledger.hold(
            team_id, amount, Cause("s1", "ann@example.com", "ACAD"), engine.now(), hold_id, changes
        )
        HELD[hold.hold_id] = hold
        await engine.commit(changes)

    server.call(go())


def capture_tokens(server: ServerThread, hold_id: str = "h1") -> None:
    async def go() -> None:
        engine = server.server.engine
        assert engine is not None
        changes = Changes()
        engine.ledger.capture(HELD.pop(hold_id), engine.now(), changes)
        await engine.commit(changes)

    server.call(go())


# -- the edge: credentials, reflection, health, UNIMPLEMENTED -------------------


def test_api_missing_admin_token_is_unauthenticated(server: ServerThread) -> None:
    anonymous = Grpcurl(server.target)
    try:
        refused(anonymous, A + "GetServerInfo", {}, grpc.StatusCode.UNAUTHENTICATED)
        refused(anonymous, A + "CreateTeam", {"team_id": "acme"}, grpc.StatusCode.UNAUTHENTICATED)
    finally:
        anonymous.close()


def test_api_wrong_admin_token_is_unauthenticated(server: ServerThread, admin: Grpcurl) -> None:
    intruder = Grpcurl(server.target, "tsa_not-the-admin-token")
    try:
        refused(intruder, A + "CreateTeam", {"team_id": "acme"}, grpc.StatusCode.UNAUTHENTICATED)
        refused(intruder, A + "ListTeams", {}, grpc.StatusCode.UNAUTHENTICATED)
    finally:
        intruder.close()
    # A prefix of the right token is still wrong.
    prefix = Grpcurl(server.target, ADMIN_TOKEN[:-1])
    try:
        refused(prefix, A + "ListTeams", {}, grpc.StatusCode.UNAUTHENTICATED)
    finally:
        prefix.close()
    # The refused CreateTeam changed nothing.
    assert admin(A + "ListTeams", {}).get("teams", []) == []


def test_api_reflection_lists_both_services_and_health(server: ServerThread) -> None:
    anonymous = Grpcurl(server.target)  # reflection needs no credential
    try:
        services = set(anonymous.services())
        assert {
            "tessera.v1.AdminService",
            "tessera.v1.LicensingService",
            "grpc.health.v1.Health",
        } <= services
        # The schema is complete enough for grpcurl to build requests by name.
        admin_service = anonymous.pool.FindServiceByName("tessera.v1.AdminService")
        purchase_tokens = admin_service.methods_by_name["PurchaseTokens"]
        assert purchase_tokens.input_type.full_name == "tessera.v1.PurchaseTokensRequest"
        licensing = anonymous.pool.FindServiceByName("tessera.v1.LicensingService")
        assert {"Entitle", "Heartbeat", "Idle", "Release"} <= set(licensing.methods_by_name)
    finally:
        anonymous.close()


def _reflection_v1(target: str, *requests: reflection_pb2.ServerReflectionRequest) -> list[Any]:
    """grpc.reflection.v1 by hand: its messages are wire-identical to v1alpha's."""
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        return list(call(iter(requests), timeout=10))


def test_api_reflection_v1_answers_list_services(server: ServerThread) -> None:
    (listed, described) = _reflection_v1(
        server.target,
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="tessera.v1.AdminService"),
    )
    names = {s.name for s in listed.list_services_response.service}
    assert {
        "tessera.v1.AdminService",
        "tessera.v1.LicensingService",
        "grpc.health.v1.Health",
    } <= names
    assert described.WhichOneof("message_response") == "file_descriptor_response"
    assert described.file_descriptor_response.file_descriptor_proto


def test_api_reflection_lists_v1_reflection_service(server: ServerThread) -> None:
    """API.md: both reflection versions are services on the port, so `grpcurl list`
    shows both (as it does for grpc-go's reflection)."""
    (listed,) = _reflection_v1(
        server.target, reflection_pb2.ServerReflectionRequest(list_services="")
    )
    names = {s.name for s in listed.list_services_response.service}
    assert "grpc.reflection.v1alpha.ServerReflection" in names
    assert "grpc.reflection.v1.ServerReflection" in names


@pytest.mark.parametrize("service", ["", "tessera.v1.AdminService", "tessera.v1.LicensingService"])
def test_api_health_serving(server: ServerThread, service: str) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_api_list_sessions_of_an_unknown_team_is_not_found(admin: Grpcurl) -> None:
    """R2: ListSessions names the team it cannot find."""
    refused(
        admin,
        A + "ListSessions",
        {"team_id": "acme", "includeEnded": True},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_TEAM",
    )


def test_api_licensing_without_user_key_is_unauthenticated(server: ServerThread) -> None:
    anonymous = Grpcurl(server.target)
    try:
        refused(
            anonymous,
            L + "Entitle",
            {"product_id": "ACAD", "platform": "PLATFORM_WINDOWS"},
            grpc.StatusCode.UNAUTHENTICATED,
        )
    finally:
        anonymous.close()


# -- errors: every reason of this issue with its code ---------------------------


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("GetTeam", {"team_id": "nobody"}),
        ("UpdateTeamSettings", {"teamId": "nobody", "plan": "PLAN_PREMIUM"}),
        ("PurchaseTokens", {"team_id": "nobody", "tokens": 100}),
        ("ListTokenPacks", {"teamId": "nobody"}),
        ("ListLedgerEntries", {"team_id": "nobody", "pageSize": 10}),
    ],
)
def test_api_unknown_team_is_not_found(admin: Grpcurl, method: str, body: dict[str, Any]) -> None:
    err = refused(admin, A + method, body, grpc.StatusCode.NOT_FOUND, "UNKNOWN_TEAM")
    assert err.metadata.get("team_id") == "nobody"


def test_t5_move_to_unknown_team_is_unknown_team(admin: Grpcurl) -> None:
    create_team(admin, "acme")
    pack = purchase(admin, "acme", 100)
    err = refused(
        admin,
        A + "MoveTokenPack",
        {"pack_id": pack["pack_id"], "toTeamId": "nobody"},
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_TEAM",
    )
    assert err.metadata.get("team_id") == "nobody"
    assert [p["pack_id"] for p in packs(admin, "acme")] == [pack["pack_id"]]


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("MoveTokenPack", {"packId": "pk_missing", "to_team_id": "acme"}),  # T5
        ("ListLedgerEntries", {"team_id": "acme", "pack_id": "pk_missing"}),  # T6
    ],
)
def test_t5_t6_an_unknown_pack_is_unknown_pack(
    admin: Grpcurl, method: str, body: dict[str, Any]
) -> None:
    create_team(admin, "acme")
    purchase(admin, "acme", 10)
    err = refused(admin, A + method, body, grpc.StatusCode.NOT_FOUND, "UNKNOWN_PACK")
    assert err.metadata.get("pack_id") == "pk_missing"


def test_api_create_team_twice_is_already_exists(admin: Grpcurl) -> None:
    create_team(admin, "acme", "PLAN_PREMIUM")
    err = refused(
        admin,
        A + "CreateTeam",
        {"team_id": "acme", "plan": "PLAN_STANDARD"},
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
    )
    assert err.metadata.get("team_id") == "acme"
    # The first team is untouched.
    assert team(admin, "acme")["plan"] == "PLAN_PREMIUM"


def test_t1_request_id_reused_for_other_tokens_is_already_exists(admin: Grpcurl) -> None:
    create_team(admin, "acme")
    purchase(admin, "acme", 100, "po-1")
    refused(
        admin,
        A + "PurchaseTokens",
        {"team_id": "acme", "tokens": 50, "request_id": "po-1"},
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
    )
    assert len(packs(admin, "acme")) == 1
    assert tokens_of(team(admin, "acme"), "available_tokens") == 100


def test_t5_pack_with_held_tokens_cannot_move(server: ServerThread, admin: Grpcurl) -> None:
    create_team(admin, "acme")
    create_team(admin, "beta")
    pack = purchase(admin, "acme", 100)
    hold_tokens(server, "acme", 10)
    held = packs(admin, "acme")[0]
    assert tokens_of(held, "held_tokens") == 10
    assert tokens_of(held, "remaining_tokens") == 90
    err = refused(
        admin,
        A + "MoveTokenPack",
        {"pack_id": pack["pack_id"], "to_team_id": "beta"},
        grpc.StatusCode.FAILED_PRECONDITION,
        "PACK_HAS_HOLDS",
    )
    assert err.metadata.get("pack_id") == pack["pack_id"]
    assert err.metadata.get("held_tokens") == "10"
    # Nothing moved.
    assert [p["pack_id"] for p in packs(admin, "acme")] == [pack["pack_id"]]
    assert packs(admin, "beta") == []
    assert tokens_of(team(admin, "beta"), "available_tokens") == 0
    assert tokens_of(team(admin, "acme"), "held_tokens") == 10
    assert [e["kind"] for e in ledger(admin, "acme")] == [
        "LEDGER_ENTRY_KIND_PURCHASE",
        "LEDGER_ENTRY_KIND_HOLD",
    ]


def test_api_advance_clock_outside_test_clock_mode_is_test_clock_disabled(
    database: Path | str,
) -> None:
    with running(database, test_clock=None) as srv:
        client = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            info = client(A + "GetServerInfo", {})
            assert info.get("test_clock", False) is False
            before = info["now"]
            refused(
                client,
                A + "AdvanceClock",
                {"by": "3600s"},
                grpc.StatusCode.FAILED_PRECONDITION,
                "TEST_CLOCK_DISABLED",
            )
            refused(
                client,
                A + "AdvanceClock",
                {"toTime": "2099-01-01T00:00:00Z"},
                grpc.StatusCode.FAILED_PRECONDITION,
                "TEST_CLOCK_DISABLED",
            )
            # The system clock did not jump: still before the refused targets.
            assert client(A + "GetServerInfo", {})["now"] < "2099"
            assert before != T0  # the system clock, not a test clock's start
        finally:
            client.close()


@pytest.fixture
def rate_sheet(admin: Grpcurl) -> Grpcurl:
    """A team ``acme``, a product ACAD and its plugin ACADX."""
    create_team(admin, "acme")
    add_product(admin, ACAD)
    add_product(
        admin,
        {
            "productId": "ACADX",
            "dailyRate": "2",
            "kind": "PRODUCT_KIND_PLUGIN",
            "hostProductId": "ACAD",
            "platforms": ["PLATFORM_WINDOWS"],
        },
    )
    return admin


def _product(**fields: Any) -> dict[str, Any]:
    return {"product": {**ACAD, "product_id": "NEW", **fields}}


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        ("CreateTeam", {"team_id": "Acme Corp", "plan": "PLAN_STANDARD"}, "team_id"),
        ("CreateTeam", {"teamId": "acme_corp"}, "team_id"),
        ("CreateTeam", {"teamId": "-acme"}, "team_id"),
        ("CreateTeam", {"teamId": "acme\n"}, "team_id"),  # not a second "acme"
        ("CreateTeam", {"display_name": "No id"}, "team_id"),
        ("GetTeam", {}, "team_id"),
        ("PurchaseTokens", {"team_id": "acme", "tokens": 0, "request_id": "r"}, "tokens"),
        ("PurchaseTokens", {"teamId": "acme", "tokens": "-5", "requestId": "r"}, "tokens"),
        ("UpsertProduct", _product(product_id="acad"), "product.product_id"),
        ("UpsertProduct", _product(productId="AC-AD"), "product.product_id"),
        ("UpsertProduct", _product(product_id=""), "product.product_id"),
        ("UpsertProduct", _product(daily_rate=-1), "product.daily_rate"),
        ("UpsertProduct", _product(platforms=[]), "product.platforms"),
        (
            "UpsertProduct",
            _product(kind="PRODUCT_KIND_PLUGIN", host_product_id="NOPE"),
            "product.host_product_id",
        ),
        (
            "UpsertProduct",
            _product(kind="PRODUCT_KIND_PLUGIN", hostProductId="ACADX"),
            "product.host_product_id",
        ),
        ("UpsertProduct", _product(kind="PRODUCT_KIND_PLUGIN"), "product.host_product_id"),
        ("UpsertProduct", {}, "product"),
        ("AdvanceClock", {"to_time": "2025-12-31T23:59:59Z"}, "to_time"),
        ("AdvanceClock", {"by": "-1s"}, "by"),
        ("ListLedgerEntries", {"team_id": "acme", "page_token": "bm90LWEtdG9rZW4"}, "page_token"),
        ("ListLedgerEntries", {"team_id": "acme", "pageToken": "%%%"}, "page_token"),
        ("ListLedgerEntries", {"team_id": "acme", "page_size": -1}, "page_size"),
        ("ListLedgerEntries", {"team_id": "acme", "order_by": "amount"}, "order_by"),
    ],
)
def test_api_bad_field_is_invalid_argument_naming_it(
    rate_sheet: Grpcurl, method: str, body: dict[str, Any], field: str
) -> None:
    err = refused(rate_sheet, A + method, body, grpc.StatusCode.INVALID_ARGUMENT)
    assert set(err.field_violations) == {field}, err
    # Words a person understands, not a code.
    assert len(err.field_violations[field].split()) >= 2, err.field_violations


def test_api_refused_requests_change_nothing(rate_sheet: Grpcurl) -> None:
    admin = rate_sheet
    for body in ({"team_id": "acme", "tokens": 0}, {"team_id": "acme", "tokens": -100}):
        refused(admin, A + "PurchaseTokens", body, grpc.StatusCode.INVALID_ARGUMENT)
    refused(
        admin,
        A + "AdvanceClock",
        {"toTime": "2025-06-01T00:00:00Z"},
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    refused(admin, A + "UpsertProduct", _product(daily_rate=-5), grpc.StatusCode.INVALID_ARGUMENT)
    assert packs(admin, "acme") == []
    assert ledger(admin, "acme") == []
    assert now(admin) == T0
    ids = [p["product_id"] for p in admin(A + "ListProducts", {})["products"]]
    assert ids == ["ACAD", "ACADX"]


def test_t5_move_to_its_own_team_is_invalid_argument(admin: Grpcurl) -> None:
    create_team(admin, "acme")
    pack = purchase(admin, "acme", 100)
    err = refused(
        admin,
        A + "MoveTokenPack",
        {"pack_id": pack["pack_id"], "to_team_id": "acme"},
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(err.field_violations) == {"to_team_id"}
    assert [e["kind"] for e in ledger(admin, "acme")] == ["LEDGER_ENTRY_KIND_PURCHASE"]


# -- teams (A8) ------------------------------------------------------------------


def test_a8_create_get_and_list_teams(admin: Grpcurl) -> None:
    created = admin(
        A + "CreateTeam", {"team_id": "acme", "display_name": "Acme Corp", "plan": "PLAN_PREMIUM"}
    )["team"]
    assert created["team_id"] == "acme"
    assert created["display_name"] == "Acme Corp"
    assert created["plan"] == "PLAN_PREMIUM"
    assert created["create_time"] == T0
    assert tokens_of(created, "available_tokens") == 0
    assert tokens_of(created, "held_tokens") == 0
    assert created.get("guest_default_assignments", False) is False
    assert created.get("default_product_ids", []) == []

    admin(A + "AdvanceClock", {"by": "60s"})
    # No plan given: PLAN_STANDARD.
    beta = admin(A + "CreateTeam", {"teamId": "beta-2", "displayName": "Beta"})["team"]
    assert beta["plan"] == "PLAN_STANDARD"
    assert beta["create_time"] == "2026-01-01T00:01:00Z"

    assert team(admin, "acme") == created
    listed = admin(A + "ListTeams", {})["teams"]
    assert [t["team_id"] for t in listed] == ["acme", "beta-2"]
    assert listed[0] == created


def test_a8_update_team_settings_plan_and_guest_default_assignments(admin: Grpcurl) -> None:
    create_team(admin, "acme", "PLAN_PREMIUM")
    changed = admin(
        A + "UpdateTeamSettings",
        {"team_id": "acme", "plan": "PLAN_STANDARD", "guest_default_assignments": True},
    )["team"]
    assert changed["plan"] == "PLAN_STANDARD"
    assert changed["guest_default_assignments"] is True

    # guest_default_assignments absent: unchanged.
    changed = admin(A + "UpdateTeamSettings", {"teamId": "acme", "plan": "PLAN_PREMIUM"})["team"]
    assert changed["plan"] == "PLAN_PREMIUM"
    assert changed["guest_default_assignments"] is True

    # Present and false: turned off (plan unspecified: unchanged).
    changed = admin(A + "UpdateTeamSettings", {"teamId": "acme", "guestDefaultAssignments": False})[
        "team"
    ]
    assert changed["plan"] == "PLAN_PREMIUM"
    assert changed.get("guest_default_assignments", False) is False
    assert team(admin, "acme") == changed


# -- tokens (T1-T6) ----------------------------------------------------------------


def test_t1_purchase_creates_a_pack_for_one_calendar_year(admin: Grpcurl) -> None:
    create_team(admin, "acme", "PLAN_PREMIUM")
    pack = purchase(admin, "acme", 100, "po-2026-001")
    assert pack["pack_id"]
    assert pack["team_id"] == "acme"
    assert pack["tokens"] == "100"
    assert pack["remaining_tokens"] == "100"
    assert tokens_of(pack, "held_tokens") == 0
    assert tokens_of(pack, "consumed_tokens") == 0
    assert tokens_of(pack, "expired_tokens") == 0
    assert pack["purchase_time"] == T0
    assert pack["expire_time"] == ONE_YEAR_LATER
    assert pack["state"] == "PACK_STATE_ACTIVE"
    # T1: the tokens join the balance at once.
    assert tokens_of(team(admin, "acme"), "available_tokens") == 100
    assert packs(admin, "acme") == [pack]


def test_t1_purchase_on_29_february_expires_28_february(admin: Grpcurl) -> None:
    create_team(admin, "acme")
    admin(A + "AdvanceClock", {"to_time": "2028-02-29T12:30:00Z"})
    pack = purchase(admin, "acme", 7)
    assert pack["purchase_time"] == "2028-02-29T12:30:00Z"
    assert pack["expire_time"] == "2029-02-28T12:30:00Z"


def test_t1_purchase_is_idempotent_by_request_id(admin: Grpcurl) -> None:
    create_team(admin, "acme")
    first = purchase(admin, "acme", 100, "po-1")
    admin(A + "AdvanceClock", {"by": "60s"})
    again = purchase(admin, "acme", 100, "po-1")
    assert again == first  # same pack, same purchase time
    assert len(packs(admin, "acme")) == 1
    entries = ledger(admin, "acme")
    assert [(e["kind"], e["amount"]) for e in entries] == [("LEDGER_ENTRY_KIND_PURCHASE", "100")]
    assert tokens_of(team(admin, "acme"), "available_tokens") == 100
    # A new request_id is a new purchase.
    other = purchase(admin, "acme", 100, "po-2")
    assert other["pack_id"] != first["pack_id"]
    assert tokens_of(team(admin, "acme"), "available_tokens") == 200


def test_t1_t5_a_retried_purchase_of_a_moved_pack_returns_it_and_buys_nothing(
    admin: Grpcurl,
) -> None:
    """T1 with T5: acme's purchase po-1 moved to beta since; acme retrying po-1 (its
    answer lost, say) gets the same pack, now beta's, and no second purchase;
    beta sending po-1 is another purchase's id (ALREADY_EXISTS), never that pack."""
    create_team(admin, "acme")
    create_team(admin, "beta")
    first = purchase(admin, "acme", 100, "po-1")
    admin(A + "MoveTokenPack", {"pack_id": first["pack_id"], "toTeamId": "beta"})
    again = purchase(admin, "acme", 100, "po-1")
    assert (again["pack_id"], again["team_id"]) == (first["pack_id"], "beta")
    refused(
        admin,
        A + "PurchaseTokens",
        {"teamId": "beta", "tokens": 100, "requestId": "po-1"},
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert tokens_of(team(admin, "acme"), "available_tokens") == 0
    assert tokens_of(team(admin, "beta"), "available_tokens") == 100
    assert [e["kind"] for e in ledger(admin, "acme")].count("LEDGER_ENTRY_KIND_PURCHASE") == 1


def test_t2_list_packs_and_balance_per_team(admin: Grpcurl) -> None:
    create_team(admin, "acme")
    create_team(admin, "beta")
    a1 = purchase(admin, "acme", 100)
    admin(A + "AdvanceClock", {"by": "3600s"})
    a2 = purchase(admin, "acme", 250)
    b1 = purchase(admin, "beta", 40)
    assert [p["pack_id"] for p in packs(admin, "acme")] == [a1["pack_id"], a2["pack_id"]]
    assert [p["pack_id"] for p in packs(admin, "beta")] == [b1["pack_id"]]
    assert a2["purchase_time"] == "2026-01-01T01:00:00Z"
    assert a2["expire_time"] == "2027-01-01T01:00:00Z"
    assert tokens_of(team(admin, "acme"), "available_tokens") == 350
    assert tokens_of(team(admin, "beta"), "available_tokens") == 40


def test_t5_move_pack_moves_remaining_tokens_and_writes_move_entries(admin: Grpcurl) -> None:
    create_team(admin, "acme")
    create_team(admin, "beta")
    keep = purchase(admin, "acme", 30)
    pack = purchase(admin, "acme", 100)
    admin(A + "AdvanceClock", {"by": "3600s"})
    moved = admin(A + "MoveTokenPack", {"pack_id": pack["pack_id"], "toTeamId": "beta"})[
        "token_pack"
    ]
    assert moved["pack_id"] == pack["pack_id"]
    assert moved["team_id"] == "beta"
    assert moved["remaining_tokens"] == "100"
    assert moved["expire_time"] == pack["expire_time"] == ONE_YEAR_LATER
    assert moved["purchase_time"] == T0
    assert moved["state"] == "PACK_STATE_ACTIVE"

    assert tokens_of(team(admin, "acme"), "available_tokens") == 30
    assert tokens_of(team(admin, "beta"), "available_tokens") == 100
    assert [p["pack_id"] for p in packs(admin, "acme")] == [keep["pack_id"]]
    assert packs(admin, "beta") == [moved]

    acme = [(e["kind"], e["pack_id"], e["amount"], e["time"]) for e in ledger(admin, "acme")]
    assert acme == [
        ("LEDGER_ENTRY_KIND_PURCHASE", keep["pack_id"], "30", T0),
        ("LEDGER_ENTRY_KIND_PURCHASE", pack["pack_id"], "100", T0),
        ("LEDGER_ENTRY_KIND_MOVE_OUT", pack["pack_id"], "100", "2026-01-01T01:00:00Z"),
    ]
    beta = [(e["kind"], e["pack_id"], e["amount"], e["time"]) for e in ledger(admin, "beta")]
    assert beta == [("LEDGER_ENTRY_KIND_MOVE_IN", pack["pack_id"], "100", "2026-01-01T01:00:00Z")]


def test_t5_move_after_capture_keeps_what_was_paid_in_first_team(
    server: ServerThread, admin: Grpcurl
) -> None:
    create_team(admin, "acme")
    create_team(admin, "beta")
    pack = purchase(admin, "acme", 100)
    hold_tokens(server, "acme", 10)
    capture_tokens(server)
    moved = admin(A + "MoveTokenPack", {"pack_id": pack["pack_id"], "to_team_id": "beta"})[
        "token_pack"
    ]
    assert moved["remaining_tokens"] == "90"
    assert moved["consumed_tokens"] == "10"
    assert tokens_of(team(admin, "acme"), "available_tokens") == 0
    assert tokens_of(team(admin, "beta"), "available_tokens") == 90

    acme = ledger(admin, "acme")
    assert [(e["kind"], e["amount"]) for e in acme] == [
        ("LEDGER_ENTRY_KIND_PURCHASE", "100"),
        ("LEDGER_ENTRY_KIND_HOLD", "10"),
        ("LEDGER_ENTRY_KIND_CAPTURE", "10"),
        ("LEDGER_ENTRY_KIND_MOVE_OUT", "90"),
    ]
    # T6: the cause of the charge stays in acme's history.
    assert acme[2]["session_id"] == "s1"
    assert acme[2]["user_id"] == "ann@example.com"
    assert acme[2]["product_id"] == "ACAD"
    beta = ledger(admin, "beta")
    assert [(e["kind"], e["amount"]) for e in beta] == [("LEDGER_ENTRY_KIND_MOVE_IN", "90")]
    # T6: summing the pack's entries over both teams gives its state.
    entries = acme + beta
    assert sum(tokens_of(e, "remaining_delta") for e in entries) == 90
    assert sum(tokens_of(e, "held_delta") for e in entries) == 0


def test_t6_ledger_pages_of_two_over_five_entries(admin: Grpcurl) -> None:
    create_team(admin, "acme")
    bought = []
    for n in range(1, 6):
        bought.append(purchase(admin, "acme", n * 10)["pack_id"])
        admin(A + "AdvanceClock", {"by": "60s"})

    pages: list[list[dict[str, Any]]] = []
    tokens: list[str] = []
    token = ""
    for _ in range(10):  # a bound, so a token that never ends fails instead of hanging
        body: dict[str, Any] = {"team_id": "acme", "page_size": 2}
        if token:
            body["pageToken"] = token
        page = admin(A + "ListLedgerEntries", body)
        pages.append(page.get("entries", []))
        token = page.get("next_page_token", "")
        tokens.append(token)
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert tokens[0] and tokens[1] and tokens[2] == ""
    entries = [e for p in pages for e in p]
    ids = [e["entry_id"] for e in entries]
    assert len(set(ids)) == 5
    assert ids == sorted(ids)
    assert [e["pack_id"] for e in entries] == bought
    assert [e["amount"] for e in entries] == ["10", "20", "30", "40", "50"]
    assert [e["time"] for e in entries] == [f"2026-01-01T00:0{n}:00Z" for n in range(5)]
    assert all(e["kind"] == "LEDGER_ENTRY_KIND_PURCHASE" for e in entries)
    assert all(e["team_id"] == "acme" for e in entries)
    # Page size 0 means the default (100): everything on one page.
    whole = admin(A + "ListLedgerEntries", {"team_id": "acme"})
    assert [e["entry_id"] for e in whole["entries"]] == ids
    assert whole.get("next_page_token", "") == ""


def test_t6_ledger_pages_of_two_over_four_entries_end_without_an_empty_page(
    admin: Grpcurl,
) -> None:
    create_team(admin, "acme")
    for _ in range(4):
        purchase(admin, "acme", 5)
    first = admin(A + "ListLedgerEntries", {"team_id": "acme", "pageSize": 2})
    second = admin(
        A + "ListLedgerEntries",
        {"team_id": "acme", "pageSize": 2, "page_token": first["next_page_token"]},
    )
    assert len(second["entries"]) == 2
    assert second.get("next_page_token", "") == ""


def test_t6_ledger_newest_first_pages_back_through_every_entry_once(admin: Grpcurl) -> None:
    # order_by "time desc" (AIP-132): the recent entries on the first page, for a
    # reader of a long history (the portal's ledger); its tokens page back in time.
    create_team(admin, "acme")
    for n in range(1, 6):
        purchase(admin, "acme", n * 10)
        admin(A + "AdvanceClock", {"by": "60s"})
    pages: list[list[str]] = []
    token = ""
    for _ in range(10):  # a bound, so a token that never ends fails instead of hanging
        body: dict[str, Any] = {"team_id": "acme", "page_size": 2, "order_by": "time desc"}
        if token:
            body["page_token"] = token
        page = admin(A + "ListLedgerEntries", body)
        pages.append([e["amount"] for e in page.get("entries", [])])
        token = page.get("next_page_token", "")
        if not token:
            break
    assert pages == [["50", "40"], ["30", "20"], ["10"]]
    # An entry made between two pages does not shift a walk back in time.
    first = admin(
        A + "ListLedgerEntries", {"team_id": "acme", "page_size": 2, "order_by": "time desc"}
    )
    purchase(admin, "acme", 60)
    second = admin(
        A + "ListLedgerEntries",
        {
            "team_id": "acme",
            "page_size": 2,
            "order_by": "time desc",
            "page_token": first["next_page_token"],
        },
    )
    assert [e["amount"] for e in second["entries"]] == ["30", "20"]
    # "time" is the default order; a token of one order is refused by the other.
    oldest = admin(A + "ListLedgerEntries", {"team_id": "acme", "order_by": "time"})
    assert [e["amount"] for e in oldest["entries"]] == ["10", "20", "30", "40", "50", "60"]
    err = refused(
        admin,
        A + "ListLedgerEntries",
        {"team_id": "acme", "page_token": first["next_page_token"]},
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(err.field_violations) == {"page_token"}


def test_t6_ledger_is_per_team(admin: Grpcurl) -> None:
    create_team(admin, "acme")
    create_team(admin, "beta")
    purchase(admin, "acme", 10)
    purchase(admin, "beta", 20)
    purchase(admin, "acme", 30)
    assert [e["amount"] for e in ledger(admin, "acme")] == ["10", "30"]
    assert [e["amount"] for e in ledger(admin, "beta")] == ["20"]


# -- the rate sheet (P1) ------------------------------------------------------------


def test_p1_upsert_and_list_products(admin: Grpcurl) -> None:
    acad = add_product(
        admin,
        {
            "product_id": "ACAD",
            "display_name": "AutoCAD",
            "daily_rate": "10",
            "kind": "PRODUCT_KIND_PRODUCT",
            "idle_aware": True,
            "platforms": ["PLATFORM_WINDOWS", "PLATFORM_LINUX"],
        },
    )
    assert acad == {
        "product_id": "ACAD",
        "display_name": "AutoCAD",
        "daily_rate": "10",
        "kind": "PRODUCT_KIND_PRODUCT",
        "idle_aware": True,
        "platforms": ["PLATFORM_WINDOWS", "PLATFORM_LINUX"],
        "min_linux_version": 2020,
    }
    plugin = add_product(
        admin,
        {
            "productId": "ACADEL",
            "displayName": "Electrical",
            "dailyRate": 3,
            "kind": "PRODUCT_KIND_PLUGIN",
            "hostProductId": "ACAD",
            "platforms": ["PLATFORM_WINDOWS"],
            "minLinuxVersion": 2023,
        },
    )
    assert plugin["kind"] == "PRODUCT_KIND_PLUGIN"
    assert plugin["host_product_id"] == "ACAD"
    assert plugin["min_linux_version"] == 2023
    free = add_product(
        admin, {"product_id": "VIEWER", "daily_rate": 0, "platforms": ["PLATFORM_MACOS"]}
    )
    assert tokens_of(free, "daily_rate") == 0  # P1: 0 is allowed
    assert free["kind"] == "PRODUCT_KIND_PRODUCT"

    listed = admin(A + "ListProducts", {})["products"]
    assert [p["product_id"] for p in listed] == ["ACAD", "ACADEL", "VIEWER"]
    assert listed[0] == acad
    assert listed[1] == plugin

    # Upsert again: the rate changes, nothing is added.
    changed = add_product(admin, {**ACAD, "daily_rate": 12})
    assert changed["daily_rate"] == "12"
    listed = admin(A + "ListProducts", {})["products"]
    assert [p["product_id"] for p in listed] == ["ACAD", "ACADEL", "VIEWER"]
    assert listed[0]["daily_rate"] == "12"


# -- the clock (RULES §7) and expiry (T4) ---------------------------------------------


def test_s7_advance_clock_by_duration_and_to_time_moves_server_info(admin: Grpcurl) -> None:
    info = admin(A + "GetServerInfo", {})
    assert info["now"] == T0
    assert info["test_clock"] is True
    assert info["version"]
    assert admin(A + "AdvanceClock", {"by": "3600s"})["now"] == "2026-01-01T01:00:00Z"
    assert now(admin) == "2026-01-01T01:00:00Z"
    assert admin(A + "AdvanceClock", {"by": "1.5s"})["now"] == "2026-01-01T01:00:01.500Z"
    assert admin(A + "AdvanceClock", {"toTime": "2026-03-01T00:00:00Z"})["now"] == (
        "2026-03-01T00:00:00Z"
    )
    # to_time equal to now is allowed and moves nothing.
    assert admin(A + "AdvanceClock", {"to_time": "2026-03-01T00:00:00Z"})["now"] == (
        "2026-03-01T00:00:00Z"
    )
    # An offset is the same instant.
    assert admin(A + "AdvanceClock", {"to_time": "2026-03-01T02:00:00+01:00"})["now"] == (
        "2026-03-01T01:00:00Z"
    )
    assert now(admin) == "2026-03-01T01:00:00Z"


def test_t4_pack_expires_exactly_at_expire_time(admin: Grpcurl) -> None:
    create_team(admin, "acme")
    first = purchase(admin, "acme", 100)
    admin(A + "AdvanceClock", {"by": "3600s"})
    second = purchase(admin, "acme", 50)
    assert second["expire_time"] == "2027-01-01T01:00:00Z"

    # One second before: still active.
    admin(A + "AdvanceClock", {"to_time": "2026-12-31T23:59:59Z"})
    assert [p["state"] for p in packs(admin, "acme")] == ["PACK_STATE_ACTIVE"] * 2
    assert tokens_of(team(admin, "acme"), "available_tokens") == 150

    # At the instant: the first pack has expired, the second not yet.
    admin(A + "AdvanceClock", {"by": "1s"})
    p1, p2 = packs(admin, "acme")
    assert p1["pack_id"] == first["pack_id"]
    assert p1["state"] == "PACK_STATE_EXPIRED"
    assert p1["expired_tokens"] == "100"
    assert tokens_of(p1, "remaining_tokens") == 0
    assert p2["state"] == "PACK_STATE_ACTIVE"
    assert tokens_of(team(admin, "acme"), "available_tokens") == 50
    expiry = ledger(admin, "acme")[-1]
    assert expiry["kind"] == "LEDGER_ENTRY_KIND_EXPIRY"
    assert expiry["pack_id"] == first["pack_id"]
    assert expiry["amount"] == "100"
    assert expiry["time"] == ONE_YEAR_LATER
    assert tokens_of(expiry, "remaining_delta") == -100

    # Jumping a day past the second pack's expiry fires it at its own instant.
    admin(A + "AdvanceClock", {"to_time": "2027-01-02T00:00:00Z"})
    assert now(admin) == "2027-01-02T00:00:00Z"
    p2 = packs(admin, "acme")[1]
    assert p2["state"] == "PACK_STATE_EXPIRED"
    assert p2["expired_tokens"] == "50"
    last = ledger(admin, "acme")[-1]
    assert (last["kind"], last["pack_id"], last["time"]) == (
        "LEDGER_ENTRY_KIND_EXPIRY",
        second["pack_id"],
        "2027-01-01T01:00:00Z",
    )
    # T4: a team whose packs have all expired has a balance of zero.
    assert tokens_of(team(admin, "acme"), "available_tokens") == 0
    # Expiry fires once.
    admin(A + "AdvanceClock", {"by": "31536000s"})
    kinds = [e["kind"] for e in ledger(admin, "acme")]
    assert kinds.count("LEDGER_ENTRY_KIND_EXPIRY") == 2


def test_t4_expiry_keeps_held_tokens_and_expires_the_rest(
    server: ServerThread, admin: Grpcurl
) -> None:
    create_team(admin, "acme")
    purchase(admin, "acme", 100)
    hold_tokens(server, "acme", 10)
    capture_tokens(server)
    admin(A + "AdvanceClock", {"to_time": ONE_YEAR_LATER})
    (pack,) = packs(admin, "acme")
    assert pack["state"] == "PACK_STATE_EXPIRED"
    assert pack["consumed_tokens"] == "10"
    assert pack["expired_tokens"] == "90"
    assert tokens_of(pack, "remaining_tokens") == 0


@pytest.fixture
def two_clients(server: ServerThread) -> Iterator[tuple[Grpcurl, Grpcurl]]:
    a, b = Grpcurl(server.target, ADMIN_TOKEN), Grpcurl(server.target, ADMIN_TOKEN)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_s7_clock_is_shared_by_every_caller(two_clients: tuple[Grpcurl, Grpcurl]) -> None:
    a, b = two_clients
    a(A + "AdvanceClock", {"by": "86400s"})
    assert now(b) == "2026-01-02T00:00:00Z"


def test_api_successful_heartbeats_are_not_logged_by_default() -> None:
    """Measured trade-off (README, flags): a line per successful Heartbeat cost ~15 %
    of heartbeat throughput; failures and every other call are still logged."""
    from server.config import parse_args

    assert parse_args([]).log_heartbeats is False
    assert parse_args(["--log-heartbeats"]).log_heartbeats is True


# -- issue 12: names, Durations, request ids ----------------------------------------------

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "Acme\u202eevil" reads "Acmelive"


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        ("CreateTeam", {"team_id": "acme", "display_name": f"Acme{RLO}gpj.exe"}, "display_name"),
        ("CreateTeam", {"team_id": "acme", "display_name": "Acme\nCorp"}, "display_name"),
        ("CreateTeam", {"team_id": "acme", "display_name": "Acme\u2066Corp"}, "display_name"),
        ("CreateTeam", {"team_id": "acme", "display_name": "Acme\u200bCorp"}, "display_name"),
        ("CreateTeam", {"team_id": "acme", "display_name": "Acme\u0085Corp"}, "display_name"),
        (
            "UpsertProduct",
            {"product": {"product_id": "NEW", "display_name": f"Auto{RLO}CAD", "daily_rate": 1}},
            "product.display_name",
        ),
        (
            "UpsertProduct",
            {"product": {"product_id": "NEW", "display_name": "Auto\u200fCAD", "daily_rate": 1}},
            "product.display_name",
        ),
    ],
)
def test_issue12_h2_8_display_names_refuse_control_and_bidi_characters(
    admin: Grpcurl, method: str, body: dict[str, Any], field: str
) -> None:
    """Issue 12, point 8: display names took control characters and U+202E."""
    err = refused(admin, A + method, body, grpc.StatusCode.INVALID_ARGUMENT)
    assert list(err.field_violations) == [field]
    assert "control or format character" in err.field_violations[field]
    assert admin(A + "ListTeams", {}).get("teams", []) == []
    assert admin(A + "ListProducts", {}).get("products", []) == []


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        ("CreateTeam", {"team_id": "blank", "display_name": "   "}, "display_name"),
        ("UpdateTeamSettings", {"team_id": "acme", "display_name": "   "}, "display_name"),
        (
            "UpsertProduct",
            {
                "product": {
                    "product_id": "BL1",
                    "display_name": "  ",
                    "daily_rate": "1",
                    "platforms": ["PLATFORM_WINDOWS"],
                }
            },
            "product.display_name",
        ),
    ],
)
def test_issue12_h2_8_a_display_name_of_spaces_alone_is_refused_not_taken_as_absent(
    admin: Grpcurl, method: str, body: dict[str, Any], field: str
) -> None:
    """A name of spaces was given and shows nothing, as one of other blank
    characters: refused, where an absent one keeps the name or takes the default."""
    create_team(admin, "acme")
    err = refused(admin, A + method, body, grpc.StatusCode.INVALID_ARGUMENT)
    assert list(err.field_violations) == [field]
    assert "visible character" in err.field_violations[field]
    assert [t["team_id"] for t in admin(A + "ListTeams", {})["teams"]] == ["acme"]
    assert team(admin, "acme")["display_name"] == "Acme"
    assert admin(A + "ListProducts", {}).get("products", []) == []


def test_issue12_h2_8_team_rename_and_user_names_follow_the_same_rule(admin: Grpcurl) -> None:
    create_team(admin, "acme")
    err = refused(
        admin,
        A + "UpdateTeamSettings",
        {"team_id": "acme", "display_name": f"Acme{RLO}"},
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(err.field_violations) == ["display_name"]
    assert team(admin, "acme")["display_name"] == "Acme"
    err = refused(
        admin,
        A + "AssignUsers",
        {"team_id": "acme", "users": [f"Ann{RLO}nimda <ann@example.com>"]},
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(err.field_violations) == ["users[0]"]
    assert "U+202E" in err.field_violations["users[0]"]
    # Every script stays welcome, joiners included (Persian spells names with ZWNJ).
    renamed = admin(
        A + "UpdateTeamSettings", {"team_id": "acme", "display_name": "Mehr\u200cnaz شركة"}
    )
    assert renamed["team"]["display_name"] == "Mehr\u200cnaz شركة"


@pytest.mark.parametrize(
    ("seconds", "nanos", "words"),
    [
        (1, -500_000_000, "same sign"),
        (-1, 500_000_000, "same sign"),
        (0, 1_000_000_000, "999,999,999"),
        (10**12, 0, "10,000 years"),
    ],
)
def test_issue12_h2_8_duration_with_disagreeing_signs_is_refused(
    server: ServerThread, seconds: int, nanos: int, words: str
) -> None:
    """Issue 12, point 8: AdvanceClock took ``by`` {seconds: 1, nanos: -500000000}."""
    with grpc.insecure_channel(server.target) as channel:
        stub = adm_grpc.AdminServiceStub(channel)
        auth = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
        by = duration_pb2.Duration(seconds=seconds, nanos=nanos)
        with pytest.raises(grpc.RpcError) as info:
            stub.AdvanceClock(adm.AdvanceClockRequest(by=by), metadata=auth)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("by: ")
        assert words in info.value.details()
        now = stub.GetServerInfo(adm.GetServerInfoRequest(), metadata=auth).now
        assert now.ToJsonString() == T0
        ok = duration_pb2.Duration(seconds=1, nanos=500_000_000)
        moved = stub.AdvanceClock(adm.AdvanceClockRequest(by=ok), metadata=auth).now
        assert moved.ToJsonString() == "2026-01-01T00:00:01.500Z"


@pytest.mark.parametrize(
    ("request_id", "words"),
    [
        ("", "is required"),
        ("po\x001", "U+0000"),
        ("po-1\r\n", "U+000D"),
        (f"po{RLO}1", "U+202E"),
        ("   ", "blank"),
        ("p" * 201, "at most 200 characters"),
    ],
)
def test_issue12_h2_14_purchase_needs_a_request_id_by_entitles_rule(
    admin: Grpcurl, request_id: str, words: str
) -> None:
    """Issue 12, points 6 and 14: PurchaseTokens took a NUL in request_id (Entitle
    refused it), and one without request_id bought twice when retried."""
    create_team(admin, "acme")
    body = {"team_id": "acme", "tokens": 100, "request_id": request_id}
    err = refused(admin, A + "PurchaseTokens", body, grpc.StatusCode.INVALID_ARGUMENT)
    assert list(err.field_violations) == ["request_id"]
    assert words in err.field_violations["request_id"]
    assert packs(admin, "acme") == []


def test_issue12_h2_14_purchase_retry_returns_the_first_pack_and_other_teams_are_refused(
    admin: Grpcurl,
) -> None:
    create_team(admin, "acme")
    create_team(admin, "beta")
    first = purchase(admin, "acme", 100, "po-7")
    assert purchase(admin, "acme", 100, "po-7") == first
    err = refused(
        admin,
        A + "PurchaseTokens",
        {"team_id": "beta", "tokens": 100, "request_id": "po-7"},
        grpc.StatusCode.ALREADY_EXISTS,
        "ALREADY_EXISTS",
    )
    assert err.metadata == {"request_id": "po-7"}  # acme's pack is none of beta's (AD1)
    assert packs(admin, "beta") == []
    assert [p["pack_id"] for p in packs(admin, "acme")] == [first["pack_id"]]


def test_t5_a_move_from_a_team_the_pack_has_left_moves_nothing(admin: Grpcurl) -> None:
    """Two administrators move acme's pack: one to beta, then the other, from a
    page that still shows it in acme, to gamma. Naming the team it moves from
    (``from_team_id``), the second is refused (PACK_MOVED, naming where the pack
    is) and nothing moves: without it, the pack was taken out of beta, and the
    first move silently undone."""
    for team in ("acme", "beta", "gamma"):
        create_team(admin, team)
    pack = purchase(admin, "acme", 100)["pack_id"]
    moved = admin(
        A + "MoveTokenPack", {"pack_id": pack, "to_team_id": "beta", "from_team_id": "acme"}
    )
    assert moved["token_pack"]["team_id"] == "beta"
    err = refused(
        admin,
        A + "MoveTokenPack",
        {"pack_id": pack, "to_team_id": "gamma", "from_team_id": "acme"},
        grpc.StatusCode.FAILED_PRECONDITION,
        "PACK_MOVED",
    )
    assert (err.metadata["from_team_id"], err.metadata["team_id"]) == ("acme", "beta")
    assert [p["pack_id"] for p in packs(admin, "beta")] == [pack]
    assert packs(admin, "gamma") == []
    assert [e["kind"] for e in ledger(admin, "gamma")] == []
