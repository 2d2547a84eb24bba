"""Use cases for team administrators' keys (RULES AD1).

A key is made with the teams it manages, its secret shown once and only its
SHA-256 kept (``server/credentials.py``, as users' keys). The live keys are
indexed by that hash in memory, so the edge resolves a key without touching the
store; revoking a key takes it out of the index at once, so its next call is
refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from copy import copy

from server.clock import Clock
from server.credentials import ADMIN_PREFIX, hash_secret, new_secret
from server.domain import text
from server.domain.admins import AdminKey
from server.domain.changes import Changes
from server.domain.errors import InvalidArgument, Problems, UnknownAdminKey
from server.engine.commits import Commits
from server.engine.state import State
from server.ids import IdFactory

MAX_KEY_ID = 200  # longer is no id this server made (it is not echoed whole)


class AdminKeys:
    def __init__(
        self,
        state: State,
        keys: Iterable[AdminKey],
        *,
        clock: Clock,
        commits: Commits,
        ids: IdFactory,
    ) -> None:
        self.state = state
        self._clock = clock
        self._commits = commits
        self._ids = ids
        # Every key by id, oldest first (ids grow with time), and the live ones by hash.
        self._keys: dict[str, AdminKey] = {
            k.admin_key_id: k for k in sorted(keys, key=lambda k: (k.create_time, k.admin_key_id))
        }
        self._live: dict[bytes, AdminKey] = {
            k.key_hash: k for k in self._keys.values() if k.revoke_time is None
        }

    def resolve(self, secret: str) -> AdminKey | None:
        """The live key a secret is (in memory), or None."""
        return self._live.get(hash_secret(secret))

    async def create(self, display_name: str, team_ids: Iterable[str]) -> tuple[AdminKey, str]:
        """A new key for ``team_ids`` (at least one, each existing) and its secret,
        which is not kept."""
        bad = Problems()
        name = bad.check(lambda: text.display_name(display_name, "display_name")) or ""
        if not name:
            bad.setdefault("display_name", "is required")
        teams = list(team_ids)
        for i, team_id in enumerate(teams):
            if not team_id:
                bad[f"team_ids[{i}]"] = "must not be empty"
        if not teams:
            bad["team_ids"] = "name at least one team the key manages"
        bad.raise_any()
        for team_id in teams:
            if team_id not in self.state.teams:
                self.state.team(team_id)  # UNKNOWN_TEAM naming it
        secret = new_secret(ADMIN_PREFIX)
        key = AdminKey(
            self._ids.new("ak"),
            name,
            frozenset(teams),
            hash_secret(secret),
            create_time=self._clock.now(),
        )
        self._keys[key.admin_key_id] = key
        self._live[key.key_hash] = key
        changes = Changes()
        changes.upsert(key)
        answer = copy(key)  # as this call left it: a revocation may come while it is stored
        await self._commits.commit(changes)
        return answer, secret

    def list(self) -> list[AdminKey]:
        """Every key, revoked ones too, oldest first."""
        return list(self._keys.values())

    async def revoke(self, admin_key_id: str) -> AdminKey:
        """Revoke a key now; a revoked key is returned unchanged."""
        if not admin_key_id:
            raise InvalidArgument.field("admin_key_id", "is required")
        key = self._keys.get(admin_key_id)
        if key is None:
            raise UnknownAdminKey(
                f"there is no admin key {admin_key_id[:MAX_KEY_ID]!r}",
                admin_key_id=admin_key_id,
            )
        if key.revoke_time is not None:
            return key
        key.revoke_time = self._clock.now()
        self._live.pop(key.key_hash, None)
        changes = Changes()
        changes.upsert(key)
        answer = copy(key)
        await self._commits.commit(changes)
        return answer
