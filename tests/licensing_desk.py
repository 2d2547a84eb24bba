"""An operator and a few users on one real server, for the licensing tests.

``Desk`` wraps the grpcurl stand-in: the admin token for AdminService, each
user's key (ImportUsers, then IssueUserKey) for LicensingService. Every value
is read back as grpcurl prints it: JSON with int64 as strings and fields at
their default value left out, hence ``num``.

The rate sheet (``SHEET``) is the same everywhere:

    ACAD     product, 10 tokens a day, idle-aware, Windows/macOS/Linux (Linux >= 2022)
    REVIT    product, 10 tokens a day, not idle-aware, Windows only
    ACADEL   plugin of ACAD, 3 tokens a day, Windows/macOS
    VIEWER   product, rate 0, Windows
    FREEPLUG plugin of ACAD, rate 0, Windows

The test clock starts at 2026-01-01T00:00:00Z; ``at`` writes instants after it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import grpc
import pytest

from tests.grpcurl import Grpcurl, GrpcurlError
from tests.support import ADMIN_TOKEN

A = "tessera.v1.AdminService/"
L = "tessera.v1.LicensingService/"
T0 = datetime(2026, 1, 1, tzinfo=UTC)

SHEET: list[dict[str, Any]] = [
    {
        "product_id": "ACAD",
        "display_name": "AutoCAD",
        "daily_rate": 10,
        "kind": "PRODUCT_KIND_PRODUCT",
        "idle_aware": True,
        "platforms": ["PLATFORM_WINDOWS", "PLATFORM_MACOS", "PLATFORM_LINUX"],
        "min_linux_version": 2022,
    },
    {
        "product_id": "REVIT",
        "display_name": "Revit",
        "daily_rate": 10,
        "kind": "PRODUCT_KIND_PRODUCT",
        "platforms": ["PLATFORM_WINDOWS"],
    },
    {
        "product_id": "ACADEL",
        "display_name": "AutoCAD Electrical",
        "daily_rate": 3,
        "kind": "PRODUCT_KIND_PLUGIN",
        "host_product_id": "ACAD",
        "platforms": ["PLATFORM_WINDOWS", "PLATFORM_MACOS"],
    },
    {
        "product_id": "VIEWER",
        "display_name": "Viewer",
        "daily_rate": 0,
        "kind": "PRODUCT_KIND_PRODUCT",
        "platforms": ["PLATFORM_WINDOWS"],
    },
    {
        "product_id": "FREEPLUG",
        "display_name": "Free plugin",
        "daily_rate": 0,
        "kind": "PRODUCT_KIND_PLUGIN",
        "host_product_id": "ACAD",
        "platforms": ["PLATFORM_WINDOWS"],
    },
]


def at(*, d: int = 0, h: int = 0, m: int = 0, s: int = 0) -> str:
    """The instant T0 + d days h hours m minutes s seconds, as grpcurl prints it."""
    t = T0 + timedelta(days=d, hours=h, minutes=m, seconds=s)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def num(obj: dict[str, Any], field: str) -> int:
    """An integer field of grpcurl's JSON (int64 is a string; 0 is left out)."""
    return int(obj.get(field, 0))


class Desk:
    """The operator (admin token) and the users (their keys) of one server."""

    def __init__(self, target: str) -> None:
        self.admin = Grpcurl(target, ADMIN_TOKEN)
        self.keys: dict[str, str] = {}

    def close(self) -> None:
        self.admin.close()

    # -- the operator -------------------------------------------------------------

    def a(self, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.admin(A + method, body or {})

    def sheet(self) -> Desk:
        for product in SHEET:
            self.a("UpsertProduct", {"product": product})
        return self

    def team(self, team_id: str, tokens: int = 0) -> str:
        self.a("CreateTeam", {"team_id": team_id, "display_name": team_id.title()})
        if tokens:
            self.buy(team_id, tokens)
        return team_id

    def buy(self, team_id: str, tokens: int) -> dict[str, Any]:
        body = {"team_id": team_id, "tokens": tokens, "request_id": f"po-{uuid4()}"}
        pack: dict[str, Any] = self.a("PurchaseTokens", body)["token_pack"]
        return pack

    def user(self, team_id: str, name: str, products: list[str] | None = None, **kw: Any) -> str:
        """Import ``name``@example.com into the team (all products unless told) and
        give them a key; returns the user id."""
        user_id = f"{name}@example.com"
        body: dict[str, Any] = {"team_id": team_id, "users": [f"{name.title()} <{user_id}>"], **kw}
        if products is None:
            body["all_products"] = True
        else:
            body["product_ids"] = products
        self.a("ImportUsers", body)
        if user_id not in self.keys:
            self.keys[user_id] = self.a("IssueUserKey", {"user_id": user_id})["user_key"]
        return user_id

    def now(self) -> str:
        now: str = self.a("GetServerInfo")["now"]
        return now

    def advance(self, seconds: int) -> str:
        now: str = self.a("AdvanceClock", {"by": f"{seconds}s"})["now"]
        return now

    def to(self, when: str) -> None:
        assert self.a("AdvanceClock", {"to_time": when})["now"] == when

    def balance(self, team_id: str) -> tuple[int, int]:
        """(available, held) as GetTeam shows them."""
        team = self.a("GetTeam", {"team_id": team_id})["team"]
        return num(team, "available_tokens"), num(team, "held_tokens")

    def packs(self, team_id: str) -> list[dict[str, Any]]:
        packs: list[dict[str, Any]] = self.a("ListTokenPacks", {"team_id": team_id}).get(
            "packs", []
        )
        return packs

    def ledger(self, team_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            page = self.a("ListLedgerEntries", {"team_id": team_id, "page_token": token})
            out.extend(page.get("entries", []))
            token = page.get("next_page_token", "")
            if not token:
                return out

    def moves(self, team_id: str) -> list[tuple[str, int, str]]:
        """The ledger as (kind without its prefix, amount, time)."""
        return [
            (e["kind"].removeprefix("LEDGER_ENTRY_KIND_"), num(e, "amount"), e["time"])
            for e in self.ledger(team_id)
        ]

    def token_moves(self, team_id: str) -> list[tuple[str, int, str]]:
        """The ledger without its purchases."""
        return [m for m in self.moves(team_id) if m[0] != "PURCHASE"]

    def assert_ledger_adds_up(self, team_id: str) -> None:
        """T6: each pack's entries sum to its remaining and held tokens, its
        captures to its consumed tokens, its expiries to its expired tokens."""
        remaining: dict[str, int] = defaultdict(int)
        held: dict[str, int] = defaultdict(int)
        consumed: dict[str, int] = defaultdict(int)
        expired: dict[str, int] = defaultdict(int)
        for e in self.ledger(team_id):
            pack = e["pack_id"]
            remaining[pack] += num(e, "remaining_delta")
            held[pack] += num(e, "held_delta")
            if e["kind"] == "LEDGER_ENTRY_KIND_CAPTURE":
                consumed[pack] += num(e, "amount")
            if e["kind"] == "LEDGER_ENTRY_KIND_EXPIRY":
                expired[pack] += num(e, "amount")
        available = held_total = 0
        for p in self.packs(team_id):
            pid = p["pack_id"]
            assert num(p, "remaining_tokens") == remaining[pid], p
            assert num(p, "held_tokens") == held[pid], p
            assert num(p, "consumed_tokens") == consumed[pid], p
            assert num(p, "expired_tokens") == expired[pid], p
            assert num(p, "remaining_tokens") >= 0 and num(p, "held_tokens") >= 0
            if p["state"] != "PACK_STATE_EXPIRED":
                available += num(p, "remaining_tokens")
            held_total += num(p, "held_tokens")
        assert self.balance(team_id) == (available, held_total)

    def sessions(self, team_id: str = "", *, include_ended: bool = False) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            page = self.a(
                "ListSessions",
                {"team_id": team_id, "include_ended": include_ended, "page_token": token},
            )
            out.extend(page.get("sessions", []))
            token = page.get("next_page_token", "")
            if not token:
                return out

    def devices(self, user_id: str, product_id: str = "ACAD") -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.a(
            "ListDevices", {"user_id": user_id, "product_id": product_id}
        ).get("devices", [])
        return found

    # -- the users ----------------------------------------------------------------

    def lic(self, user_id: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
        session: dict[str, Any] = self.admin(L + method, body, token=self.keys[user_id])["session"]
        return session

    def entitle(self, user_id: str, product_id: str = "ACAD", **kw: Any) -> dict[str, Any]:
        """Entitle on Windows, version 2026, device dev-1 unless told otherwise."""
        body = {
            "product_id": product_id,
            "product_version": "2026",
            "platform": "PLATFORM_WINDOWS",
            "device_id": "dev-1",
            **kw,
        }
        return self.lic(user_id, "Entitle", body)

    def heartbeat(self, user_id: str, session_id: str, seconds: int = 0) -> dict[str, Any]:
        body = {"session_id": session_id, "seconds_since_activity": seconds}
        return self.lic(user_id, "Heartbeat", body)

    def idle(self, user_id: str, session_id: str) -> dict[str, Any]:
        return self.lic(user_id, "Idle", {"session_id": session_id})

    def release(self, user_id: str, session_id: str) -> dict[str, Any]:
        return self.lic(user_id, "Release", {"session_id": session_id})

    def refused(
        self,
        user_id: str | None,
        method: str,
        body: dict[str, Any],
        code: grpc.StatusCode,
        reason: str | None = None,
    ) -> GrpcurlError:
        """Call ``method`` (a LicensingService method for a user, else an
        AdminService method) expecting ``code`` and ErrorInfo ``reason``."""
        with pytest.raises(GrpcurlError) as info:
            if user_id is None:
                self.a(method, body)
            else:
                self.admin(L + method, body, token=self.keys[user_id])
        err = info.value
        assert err.code is code, f"expected {code.name}, got {err}"
        if reason is not None:
            assert err.reason == reason, f"expected {reason}, got {err}"
        return err

    def refused_entitle(
        self, user_id: str, code: grpc.StatusCode, reason: str, **kw: Any
    ) -> GrpcurlError:
        body = {
            "product_id": "ACAD",
            "product_version": "2026",
            "platform": "PLATFORM_WINDOWS",
            "device_id": "dev-1",
            **kw,
        }
        return self.refused(user_id, "Entitle", body, code, reason)


def ended(session: dict[str, Any], reason: str, when: str) -> None:
    """The session has ended, for ``reason`` (without its prefix), at ``when``."""
    assert session["state"] == "SESSION_STATE_ENDED", session
    assert session["end_reason"] == f"END_REASON_{reason}", session
    assert session["end_time"] == when, session
    assert "lease_expire_time" not in session
