"""A real server, provisioned, with the SDK's clock and the server's test clock moving together.

The rate sheet:

    ACAD     product, 10 tokens a day, idle-aware, Windows/macOS/Linux (Linux >= 2022)
    REVIT    product, 10 tokens a day, not idle-aware, Windows only
    ARNOLD   plugin of ACAD, 3 tokens a day, Windows/macOS

Teams and users:

    acme   100 tokens   alice (all products), carol (REVIT only), nia (invited, not accepted)
    poor     5 tokens   dave (all products)

``World.advance`` moves the server's test clock (AdminService.AdvanceClock), then the
SDK's ``ManualClock`` to the same instant, stopping at each of the SDK's deadlines on the
way, and after each stop waits until every session task is asleep again.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2

from client_sdk import AsyncClient, ManualClock, Platform, SessionOptions
from tessera_api.tessera.v1 import admin_service_pb2 as a
from tessera_api.tessera.v1 import admin_service_pb2_grpc as a_grpc
from tessera_api.tessera.v1 import common_pb2 as c
from tests.sdk.conftest import QUICK_RETRY
from tests.support import ADMIN_TOKEN

ALICE = "alice@example.com"
CAROL = "carol@example.com"
DAVE = "dave@example.com"
NIA = "nia@example.com"

PRODUCTS = [
    c.Product(
        product_id="ACAD",
        display_name="AutoCAD",
        daily_rate=10,
        kind=c.PRODUCT_KIND_PRODUCT,
        idle_aware=True,
        platforms=[c.PLATFORM_WINDOWS, c.PLATFORM_MACOS, c.PLATFORM_LINUX],
        min_linux_version=2022,
    ),
    c.Product(
        product_id="REVIT",
        display_name="Revit",
        daily_rate=10,
        kind=c.PRODUCT_KIND_PRODUCT,
        platforms=[c.PLATFORM_WINDOWS],
    ),
    c.Product(
        product_id="ARNOLD",
        display_name="Arnold",
        daily_rate=3,
        kind=c.PRODUCT_KIND_PLUGIN,
        host_product_id="ACAD",
        platforms=[c.PLATFORM_WINDOWS, c.PLATFORM_MACOS],
    ),
]


class Admin:
    """AdminService through the generated async stub, with the admin token."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.stub: Any = a_grpc.AdminServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {ADMIN_TOKEN}"),)

    async def __call__(self, method: str, request: Any) -> Any:
        return await getattr(self.stub, method)(request, metadata=self.metadata, timeout=30)

    async def close(self) -> None:
        await self.channel.close()

    async def advance_to(self, instant: datetime) -> None:
        await self("AdvanceClock", a.AdvanceClockRequest(to_time=_ts(instant)))

    async def advance_by(self, span: timedelta) -> None:
        by = duration_pb2.Duration()
        by.FromTimedelta(span)
        await self("AdvanceClock", a.AdvanceClockRequest(by=by))

    async def ledger(self, team_id: str) -> list[c.LedgerEntry]:
        entries: list[c.LedgerEntry] = []
        token = ""
        while True:
            page = await self(
                "ListLedgerEntries",
                a.ListLedgerEntriesRequest(team_id=team_id, page_size=1000, page_token=token),
            )
            entries.extend(page.entries)
            token = page.next_page_token
            if not token:
                return entries

    async def sessions(self, user_id: str, *, include_ended: bool = True) -> list[c.Session]:
        page = await self(
            "ListSessions",
            a.ListSessionsRequest(user_id=user_id, include_ended=include_ended, page_size=1000),
        )
        return list(page.sessions)

    async def team(self, team_id: str) -> c.Team:
        return (await self("GetTeam", a.GetTeamRequest(team_id=team_id))).team


def _ts(instant: datetime) -> Any:
    from google.protobuf import timestamp_pb2

    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(instant)
    return ts


@dataclass
class World:
    target: str
    admin: Admin
    clock: ManualClock = field(default_factory=ManualClock)
    keys: dict[str, str] = field(default_factory=dict)
    clients: list[AsyncClient] = field(default_factory=list)

    async def provision(self) -> World:
        for team_id, tokens in (("acme", 100), ("poor", 5)):
            await self.admin(
                "CreateTeam", a.CreateTeamRequest(team_id=team_id, display_name=team_id)
            )
            await self.admin(
                "PurchaseTokens",
                a.PurchaseTokensRequest(team_id=team_id, tokens=tokens, request_id=f"po-{team_id}"),
            )
        for product in PRODUCTS:
            await self.admin("UpsertProduct", a.UpsertProductRequest(product=product))
        await self.admin(
            "ImportUsers",
            a.ImportUsersRequest(
                team_id="acme", users=["Alice <alice@example.com>"], all_products=True
            ),
        )
        await self.admin(
            "ImportUsers",
            a.ImportUsersRequest(
                team_id="acme", users=["Carol <carol@example.com>"], product_ids=["REVIT"]
            ),
        )
        await self.admin(
            "AssignUsers",
            a.AssignUsersRequest(
                team_id="acme", users=["Nia <nia@example.com>"], all_products=True
            ),
        )
        await self.admin(
            "ImportUsers",
            a.ImportUsersRequest(
                team_id="poor", users=["Dave <dave@example.com>"], all_products=True
            ),
        )
        for user in (ALICE, CAROL, DAVE, NIA):
            issued = await self.admin("IssueUserKey", a.IssueUserKeyRequest(user_id=user))
            self.keys[user] = issued.user_key
        return self

    def client(
        self,
        user: str = ALICE,
        *,
        device_id: str = "dev-1",
        platform: Platform = Platform.WINDOWS,
        target: str | None = None,
        options: SessionOptions | None = None,
        key: str | None = None,
    ) -> AsyncClient:
        client = AsyncClient(
            target or self.target,
            key or self.keys[user],
            clock=self.clock,
            retry=QUICK_RETRY,
            device_id=device_id,
            platform=platform,
            session_options=options,
            rng=random.Random(11),
            channel_options=[
                ("grpc.initial_reconnect_backoff_ms", 10),
                ("grpc.min_reconnect_backoff_ms", 10),
                ("grpc.max_reconnect_backoff_ms", 50),
            ],
        )
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        await self.admin.close()

    def _busy(self) -> bool:
        live = [
            handle
            for client in self.clients
            for handle in client._handles
            if handle._task is not None and not handle._task.done()
        ]
        # A task is busy until it sleeps on the clock again, and a woken one (touch) until
        # it has planned anew.
        return self.clock.sleepers < len(live) or any(h._wake.is_set() for h in live)

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until every session task sleeps on the clock (nothing left to do now)."""
        deadline = time.monotonic() + timeout
        while self._busy():
            if time.monotonic() > deadline:
                raise AssertionError("the SDK never settled")
            await asyncio.sleep(0.001)

    async def advance(self, span: timedelta, *, coarse: timedelta | None = None) -> None:
        """Move both clocks ``span`` forward, stopping at every SDK deadline on the way (or at
        steps of ``coarse``: faster, the SDK acting late)."""
        await self.settle()
        end = self.clock.now() + span
        while self.clock.now() < end:
            if coarse is not None:
                target = min(end, self.clock.now() + coarse)
            else:
                deadline = self.clock.next_deadline()
                target = end if deadline is None else max(self.clock.now(), min(end, deadline))
            if target > self.clock.now():
                await self.admin.advance_to(target)
            self.clock.set(target)
            await self.settle()
