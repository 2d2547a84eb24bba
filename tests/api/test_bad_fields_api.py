"""API.md: bad fields are INVALID_ARGUMENT with a ``google.rpc.BadRequest`` naming
each field, not the first one a call happens to check, and a refusal changes
nothing. Each request below has several bad fields; the answer names them all."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tessera_api.tessera.v1 import admin_service_pb2 as api
from tessera_api.tessera.v1 import common_pb2
from tests.licensing_desk import Desk
from tests.support import ADMIN_TOKEN, ServerThread

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
        "GrantSubscription",
        {"user_id": "", "product_id": "", "end_time": "1960-01-01T00:00:00Z"},
        {"user_id", "product_id", "start_time", "end_time"},
    ),
    (  # a start out of range, found at the edge, and no end: both named
        "GrantSubscription",
        {"user_id": "", "product_id": "", "start_time": "1960-01-01T00:00:00Z"},
        {"user_id", "product_id", "start_time", "end_time"},
    ),
    ("StartTrial", {"end_time": "1960-01-01T00:00:00Z"}, {"user_id", "product_id", "end_time"}),
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


def _string(number: int, raw: bytes) -> bytes:
    """A length-delimited field on the wire (what a client that skips UTF-8 checks sends)."""
    return bytes([number << 3 | 2, len(raw)]) + raw


def _number(message: Any, path: str) -> int:
    return int(message.DESCRIPTOR.fields_by_name[path].number)


def test_api_a_string_that_is_not_utf8_is_named_as_the_field_it_is_in(
    server: ServerThread,
) -> None:
    """Protobuf refuses the whole body; the refusal names the field whose bytes
    are not UTF-8, within a message (``product.display_name``) and a list
    (``users[1]``), as a bad field is named everywhere else."""
    buy, assign, upsert = (
        api.PurchaseTokensRequest,
        api.AssignUsersRequest,
        api.UpsertProductRequest,
    )
    product = _string(_number(common_pb2.Product, "product_id"), b"ACAD") + _string(
        _number(common_pb2.Product, "display_name"), b"Auto\xffCAD"
    )
    bodies = {
        "PurchaseTokens": (
            _string(_number(buy, "team_id"), b"alpha")
            + _string(_number(buy, "request_id"), b"\xff\xfe"),
            "request_id",
        ),
        "AssignUsers": (
            _string(_number(assign, "users"), b"ann@example.com")
            + _string(_number(assign, "users"), b"b\xc0\xafb@example.com"),
            "users[1]",
        ),
        "UpsertProduct": (_string(_number(upsert, "product"), product), "product.display_name"),
    }
    with grpc.insecure_channel(server.target) as channel:
        for method, (body, field) in bodies.items():
            call = channel.unary_unary(
                f"/tessera.v1.AdminService/{method}",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            with pytest.raises(grpc.RpcError) as info:
                call(body, metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),), timeout=10)
            assert info.value.code() is IA, method
            status = rpc_status.from_call(info.value)
            assert status is not None
            (detail,) = [d for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            assert [(v.field, v.description) for v in bad.field_violations] == [
                (field, "must be UTF-8 text")
            ], method
