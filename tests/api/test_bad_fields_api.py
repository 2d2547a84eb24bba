"""API.md: bad fields are INVALID_ARGUMENT with a ``google.rpc.BadRequest`` naming
each field, not the first one a call happens to check, and a refusal changes
nothing. Each request below has several bad fields; the answer names them all."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tests.licensing_desk import Desk

IA = grpc.StatusCode.INVALID_ARGUMENT

CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    (
        "CreateTeam",
        {"team_id": "Bad!", "display_name": "a\x00b", "plan": 7},
        {"team_id", "display_name", "plan"},
    ),
    (
        "UpdateTeamSettings",
        {"team_id": "alpha", "plan": 9, "display_name": "a\x00b", "low_balance_threshold": -1},
        {"plan", "display_name", "low_balance_threshold"},
    ),
    ("UpdateTeamSettings", {"plan": 9}, {"team_id", "plan"}),
    (
        "PurchaseTokens",
        {"team_id": "alpha", "tokens": 0, "request_id": ""},
        {"tokens", "request_id"},
    ),
    ("MoveTokenPack", {}, {"pack_id", "to_team_id"}),
    ("GetMember", {}, {"team_id", "user_id"}),
    ("RemoveDevice", {}, {"user_id", "product_id", "device_id"}),
    ("CreateAdminKey", {}, {"display_name", "team_ids"}),
    (
        "CreateAdminKey",
        {"display_name": "a\x00b", "team_ids": ["alpha", ""]},
        {"display_name", "team_ids[1]"},
    ),
]


@pytest.mark.parametrize(
    ("method", "body", "fields"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_api_each_bad_field_is_named_in_one_refusal(
    desk: Desk, method: str, body: dict[str, Any], fields: set[str]
) -> None:
    before = desk.a("GetTeam", {"team_id": "alpha"}), desk.packs("alpha")
    err = desk.refused(None, method, body, IA, "INVALID_ARGUMENT")
    assert set(err.field_violations) == fields, err
    assert (desk.a("GetTeam", {"team_id": "alpha"}), desk.packs("alpha")) == before


def test_m1_an_entitle_with_nothing_names_each_field_it_needs(desk: Desk) -> None:
    ann = desk.user("alpha", "ann")
    err = desk.refused(ann, "Entitle", {}, IA, "INVALID_ARGUMENT")
    assert set(err.field_violations) == {"product_id", "product_version", "platform", "device_id"}
    body = {"product_id": "ACAD", "platform": 1, "device_id": "d", "product_version": "v2"}
    err = desk.refused(ann, "Entitle", {**body, "request_id": "\t"}, IA, "INVALID_ARGUMENT")
    assert set(err.field_violations) == {"product_version", "request_id"}
