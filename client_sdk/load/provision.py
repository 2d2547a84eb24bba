"""Users and keys for a load run: provisioned through AdminService, read from a
file, or made up (for servers that check no key, like the benchmark's echo).

Provisioning creates a team of its own, buys enough tokens, upserts a product
and a plugin of its own, imports the users in bulk (``ImportUsers``, 1,000
entries per call: imported users are active at once, with no invitation) and
issues each user a key (``IssueUserKey``, one call per user, many in flight).
With several targets its calls go to the active one, as the SDK's do
(``client_sdk.failover``).
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from client_sdk._retry import RetryPolicy
from client_sdk.clock import SystemClock
from client_sdk.failover import Failover, Targets
from client_sdk.load.config import MAX_PACK_TOKENS, provision_tokens
from tessera_api.tessera.v1 import admin_service_pb2 as adm
from tessera_api.tessera.v1 import admin_service_pb2_grpc, common_pb2

if TYPE_CHECKING:
    from tessera_api.tessera.v1.admin_service_pb2_grpc import AdminServiceAsyncStub

IMPORT_CHUNK = 1000  # entries per ImportUsers call
KEY_CONCURRENCY = 128  # IssueUserKey calls in flight
MIB = 1024 * 1024

ProgressFn = Callable[[str, int, int], None]  # label, done, total


@dataclass(frozen=True)
class Users:
    """Who the load run plays: a team, a product, its plugin, users and their keys."""

    team_id: str
    product_id: str
    plugin_id: str
    users: Sequence[tuple[str, str]]  # (user_id, user_key)

    def to_json(self) -> dict[str, object]:
        return {
            "team_id": self.team_id,
            "product_id": self.product_id,
            "plugin_id": self.plugin_id,
            "users": [list(u) for u in self.users],
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Users:
        raw = data.get("users")
        if not isinstance(raw, list):
            raise ValueError("users file: 'users' must be a list of [user_id, user_key]")
        users = []
        for entry in raw:
            if isinstance(entry, dict):
                users.append((str(entry["user_id"]), str(entry["user_key"])))
            else:
                user_id, key = entry
                users.append((str(user_id), str(key)))
        return cls(
            team_id=str(data.get("team_id", "")),
            product_id=str(data["product_id"]),
            plugin_id=str(data.get("plugin_id", "")),
            users=users,
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json()), encoding="utf-8")
        path.chmod(0o600)  # the keys are secrets

    @classmethod
    def load(cls, path: Path) -> Users:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"users file {path}: not JSON: {exc}") from None
        try:
            return cls.from_json(data)
        except (KeyError, TypeError, AttributeError) as exc:  # valid JSON, wrong shape
            raise ValueError(f"users file {path}: not a saved users file ({exc!r})") from None

    def first(self, n: int) -> Users:
        if n > len(self.users):
            raise ValueError(f"asked for {n:,} users; only {len(self.users):,} are known")
        return Users(self.team_id, self.product_id, self.plugin_id, self.users[:n])


def fake_users(n: int, run_id: str = "fake") -> Users:
    """Made-up users and keys shaped like real ones (same lengths on the wire)."""
    users = [
        (f"load-user-{i:06d}@{run_id}.example.com", "tsk_" + secrets.token_urlsafe(32))
        for i in range(n)
    ]
    return Users(f"load-{run_id}", "LOAD" + run_id.upper(), "LOAD" + run_id.upper() + "P", users)


def admin_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.max_receive_message_length", 64 * MIB),
            ("grpc.max_send_message_length", 64 * MIB),
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )


def admin_calls(targets: Targets, retry: RetryPolicy) -> Failover[AdminServiceAsyncStub]:
    """AdminService on whichever of ``targets`` is active (its own connection to each)."""
    return Failover(
        targets,
        admin_channel,
        admin_service_pb2_grpc.AdminServiceStub,
        retry=retry,
        clock=SystemClock(),
        rng=random.Random(),  # noqa: S311 - backoff jitter, not a secret
    )


def packs(tokens: int) -> list[int]:
    """``tokens`` as the packs that buy them, each of ``MAX_PACK_TOKENS`` at most."""
    full, rest = divmod(tokens, MAX_PACK_TOKENS)
    return [MAX_PACK_TOKENS] * full + ([rest] if rest else [])


async def provision(
    targets: Targets,
    retry: RetryPolicy,
    admin_token: str,
    n: int,
    *,
    daily_rate: int = 1,
    plugin_rate: int = 1,
    progress: ProgressFn | None = None,
) -> Users:
    """A new team with ``n`` active users who may run a new product and its plugin (each
    call tried as ``retry`` says, across ``targets``)."""
    run_id = secrets.token_hex(5)
    team_id = f"load-{run_id}"
    product_id = "LOAD" + run_id.upper()
    plugin_id = product_id + "P"
    md = (("authorization", f"Bearer {admin_token}"),)
    report = progress or (lambda label, done, total: None)

    connections = [admin_calls(targets, retry) for _ in range(2)]
    try:
        admin = connections[0]
        await admin.call(
            lambda s: s.CreateTeam,
            adm.CreateTeamRequest(
                team_id=team_id, display_name=f"Load test {run_id}", plan=common_pb2.PLAN_STANDARD
            ),
            md,
        )
        # In as many packs as it takes: the server sells at most MAX_PACK_TOKENS in one.
        for i, tokens in enumerate(packs(provision_tokens(n, daily_rate, plugin_rate)), 1):
            await admin.call(
                lambda s: s.PurchaseTokens,
                adm.PurchaseTokensRequest(
                    team_id=team_id, tokens=tokens, request_id=f"{team_id}-{i}"
                ),
                md,
            )
        platforms = [
            common_pb2.PLATFORM_WINDOWS,
            common_pb2.PLATFORM_MACOS,
            common_pb2.PLATFORM_LINUX,
        ]
        await admin.call(
            lambda s: s.UpsertProduct,
            adm.UpsertProductRequest(
                product=common_pb2.Product(
                    product_id=product_id,
                    display_name=f"Load product {run_id}",
                    daily_rate=daily_rate,
                    kind=common_pb2.PRODUCT_KIND_PRODUCT,
                    idle_aware=True,
                    platforms=platforms,
                )
            ),
            md,
        )
        await admin.call(
            lambda s: s.UpsertProduct,
            adm.UpsertProductRequest(
                product=common_pb2.Product(
                    product_id=plugin_id,
                    display_name=f"Load plugin {run_id}",
                    daily_rate=plugin_rate,
                    kind=common_pb2.PRODUCT_KIND_PLUGIN,
                    host_product_id=product_id,
                    idle_aware=True,
                    platforms=platforms,
                )
            ),
            md,
        )

        entries = [f"Load User {i} <load-user-{i:06d}@{run_id}.example.com>" for i in range(n)]
        user_ids: list[str] = [""] * n
        imported = 0

        async def import_chunk(start: int) -> None:
            nonlocal imported
            chunk = entries[start : start + IMPORT_CHUNK]
            resp = await connections[(start // IMPORT_CHUNK) % len(connections)].call(
                lambda s: s.ImportUsers,
                adm.ImportUsersRequest(
                    team_id=team_id, users=chunk, product_ids=[product_id, plugin_id]
                ),
                md,
            )
            if len(resp.members) != len(chunk):
                raise RuntimeError(
                    f"ImportUsers returned {len(resp.members)} members for {len(chunk)} entries"
                )
            for i, member in enumerate(resp.members):
                user_ids[start + i] = member.user_id
            imported += len(chunk)
            report("import users", imported, n)

        report("import users", 0, n)
        await _bounded(
            (import_chunk(s) for s in range(0, n, IMPORT_CHUNK)), limit=2
        )  # the server writes each chunk in one transaction; two keep it busy

        keys: list[str] = [""] * n
        issued = 0

        async def issue(i: int) -> None:
            nonlocal issued
            resp = await connections[i % len(connections)].call(
                lambda s: s.IssueUserKey, adm.IssueUserKeyRequest(user_id=user_ids[i]), md
            )
            keys[i] = resp.user_key
            issued += 1
            if issued % 500 == 0 or issued == n:
                report("issue keys", issued, n)

        report("issue keys", 0, n)
        await _bounded((issue(i) for i in range(n)), limit=KEY_CONCURRENCY)
        return Users(team_id, product_id, plugin_id, list(zip(user_ids, keys, strict=True)))
    finally:
        for c in connections:
            await c.close()


async def _bounded(coros: Iterable[Coroutine[Any, Any, None]], limit: int) -> None:
    """Run coroutines from an iterable, at most ``limit`` at a time; stop at the first error."""
    it = iter(coros)

    async def lane() -> None:
        for coro in it:
            await coro

    lanes = [asyncio.ensure_future(lane()) for _ in range(limit)]
    try:
        await asyncio.gather(*lanes)
    finally:
        for task in lanes:
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        for coro in it:  # never started: close them so that none is left un-awaited
            coro.close()


async def count_live_sessions(
    targets: Targets, retry: RetryPolicy, admin_token: str, team_id: str
) -> int:
    """Live sessions the server lists for the team (``ListSessions``, 1,000 a page)."""
    md = (("authorization", f"Bearer {admin_token}"),)
    admin = admin_calls(targets, retry)
    try:
        total, token = 0, ""
        while True:
            resp = await admin.call(
                lambda s: s.ListSessions,
                adm.ListSessionsRequest(team_id=team_id, page_size=1000, page_token=token),
                md,
            )
            total += sum(s.state != common_pb2.SESSION_STATE_ENDED for s in resp.sessions)
            token = resp.next_page_token
            if not token:
                return total
    finally:
        await admin.close()
