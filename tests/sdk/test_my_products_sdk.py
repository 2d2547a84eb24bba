"""RULES AD5 through the SDK: ``list_my_products()`` on the async and the sync client,
typed answers and typed errors, against the fake and against a real server."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

import client_sdk as sdk
from client_sdk import AsyncClient, Client, Coverage, ManualClock, MyProduct, ProductKind
from tessera_api.tessera.v1 import admin_service_pb2 as a
from tessera_api.tessera.v1 import common_pb2 as c
from tessera_api.tessera.v1 import licensing_service_pb2 as pb
from tests.sdk.conftest import FAKE_KEY, QUICK_RETRY
from tests.sdk.fakes import FakeLicensing, FakeThread
from tests.sdk.world import ALICE, CAROL, NIA, Admin, World, _ts
from tests.support import ServerThread

ACAD = pb.MyProduct(
    product_id="ACAD",
    display_name="AutoCAD",
    kind=c.PRODUCT_KIND_PRODUCT,
    daily_rate=10,
    team_ids=["acme", "beta"],
    coverage=c.COVERAGE_TRIAL,
)
ARNOLD = pb.MyProduct(
    product_id="ARNOLD",
    display_name="Arnold",
    kind=c.PRODUCT_KIND_PLUGIN,
    host_product_id="ACAD",
    daily_rate=3,
    team_ids=["acme"],
    coverage=c.COVERAGE_TOKENS,
)


async def test_ad5_list_my_products_answers_typed_products(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    fake.my_products = [ACAD, ARNOLD]
    products = await client.list_my_products()
    assert products == [
        MyProduct(
            "ACAD", "AutoCAD", ProductKind.PRODUCT, "", 10, ("acme", "beta"), Coverage.TRIAL, ACAD
        ),
        MyProduct(
            "ARNOLD", "Arnold", ProductKind.PLUGIN, "ACAD", 3, ("acme",), Coverage.TOKENS, ARNOLD
        ),
    ]
    assert products[1].plugin and not products[0].plugin
    assert products[0].raw == ACAD
    (call,) = fake.called("ListMyProducts")
    assert call.metadata["authorization"] == f"Bearer {FAKE_KEY}"


async def test_ad5_list_my_products_reads_an_unknown_coverage_as_unspecified(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    newer = pb.MyProduct()
    newer.CopyFrom(ACAD)
    newer.coverage = 99  # type: ignore[assignment]  # a value of a newer server
    fake.my_products = [newer]
    (product,) = await client.list_my_products()
    assert product.coverage is Coverage.UNSPECIFIED


async def test_ad5_list_my_products_raises_typed_errors_and_retries_what_is_transient(
    client: AsyncClient, fake: FakeLicensing
) -> None:
    fake.refuse(grpc.StatusCode.UNAUTHENTICATED, "", method="ListMyProducts")
    with pytest.raises(sdk.Unauthenticated):
        await client.list_my_products()
    fake.my_products = [ACAD]
    fake.refuse(grpc.StatusCode.UNAVAILABLE, "", method="ListMyProducts")
    assert [p.product_id for p in await client.list_my_products()] == ["ACAD"]
    assert len(fake.called("ListMyProducts")) == 3


def test_ad5_the_sync_client_lists_my_products_too() -> None:
    clock = ManualClock()
    with FakeThread(clock) as fake:
        fake.my_products = [ARNOLD]
        with Client(fake.target, FAKE_KEY, clock=clock, retry=QUICK_RETRY) as client:
            (product,) = client.list_my_products()
    assert (product.product_id, product.host_product_id, product.coverage) == (
        "ARNOLD",
        "ACAD",
        Coverage.TOKENS,
    )


# -- a real server ---------------------------------------------------------------------------


async def test_ad5_list_my_products_on_a_real_server(server: ServerThread) -> None:
    world = await World(server.target, Admin(server.target)).provision()
    try:
        await _on_a_real_server(world)
    finally:
        await world.close()


async def _on_a_real_server(world: World) -> None:
    alice = world.client(ALICE)
    products = await alice.list_my_products()
    assert [(p.product_id, p.kind, p.daily_rate, p.team_ids, p.coverage) for p in products] == [
        ("ACAD", ProductKind.PRODUCT, 10, ("acme",), Coverage.TOKENS),
        ("ARNOLD", ProductKind.PLUGIN, 3, ("acme",), Coverage.TOKENS),
        ("REVIT", ProductKind.PRODUCT, 10, ("acme",), Coverage.TOKENS),
    ]
    assert products[1].host_product_id == "ACAD"
    end = _ts(world.clock.now() + timedelta(days=30))
    await world.admin(
        "StartTrial", a.StartTrialRequest(user_id=ALICE, product_id="ACAD", end_time=end)
    )
    (acad, *_) = await alice.list_my_products()
    assert acad.coverage is Coverage.TRIAL
    async with alice.session("ACAD", "2026") as s:
        assert s.session.coverage is acad.coverage  # what Entitle then gives
    assert [p.product_id for p in await world.client(CAROL).list_my_products()] == ["REVIT"]
    assert await world.client(NIA).list_my_products() == []  # invited: nothing yet
    with pytest.raises(sdk.Unauthenticated):
        await world.client(ALICE, key="tsu_not-a-key").list_my_products()
