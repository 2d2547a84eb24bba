"""Use cases for users, invitations, keys, access and coverage (RULES A1-A8, C1-C2),
and what the directory answers (AD3-AD5: subscriptions listed and ended, users
found, members by product, what a user may run)."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from bisect import bisect_right
from collections.abc import Callable, Collection, Mapping, Sequence
from copy import copy
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import islice

from server.clock import Clock
from server.credentials import USER_KEY_PREFIX, hash_secret, invitation_token, new_secret
from server.domain.changes import Changes
from server.domain.coverage import Subscription, SubscriptionKind
from server.domain.directory import (
    AccessVia,
    Invitation,
    Member,
    MemberState,
    Notification,
    NotificationKind,
    User,
    access_via,
    by_user_id,
    effective_products,
    in_id_order,
)
from server.domain.errors import InvalidArgument, Problems
from server.domain.policies import coverage_of
from server.domain.products import Product
from server.domain.search import parse
from server.domain.sessions import Coverage
from server.domain.timers import TimerKind
from server.domain.userentries import (
    MAX_EMAIL_CHARS,
    MAX_NAME_LENGTH,
    CheckedEntries,
    check_user_entries,
)
from server.engine.audit import commit_call, store_fired
from server.engine.commits import Commits
from server.engine.scheduler import Scheduler
from server.engine.state import State
from server.ids import IdFactory

# The sessions' side of access and coverage (``Sessions.revoke_access`` and
# ``Sessions.coverage_changed``), the two calls this use case makes into another.
# A6: end a user's live sessions in a team for what they lost (None: everything):
# (team_id, user_id, product_ids, now, changes).
RevokeAccess = Callable[[str, Mapping[str, Collection[str] | None], datetime, Changes], None]
# C1/C2: a subscription or trial was granted; running sessions follow it.
CoverageChanged = Callable[[Subscription, datetime, Changes], None]

#: AssignUsers/ImportUsers: the entries as the edge read them, on a thread, before it
#: checked whom the call may touch (AD1: a guest's sessions in other teams), and what it
#: read: the call uses that reading, with no wait between the check and the change in
#: which a session could open unchecked (``Access.assign``).
entries_read: contextvars.ContextVar[tuple[list[str], CheckedEntries] | None] = (
    contextvars.ContextVar("entries_read", default=None)
)


async def read_entries(users: Sequence[str]) -> CheckedEntries:
    """``check_user_entries(users)`` on a thread (the addresses' checks are 90 µs each:
    10,000 of them held the event loop for a second), kept for this call's
    ``Access.assign``."""
    entries = list(users)
    checked = await asyncio.to_thread(check_user_entries, entries)
    entries_read.set((entries, checked))
    return checked


#: SearchUsers: the longest query that can begin a name or an email address (AD4).
MAX_QUERY_CHARS = max(MAX_NAME_LENGTH, MAX_EMAIL_CHARS)


@dataclass(frozen=True)
class MyProduct:
    """AD5: a product the user may run now, the teams that let them, what would pay."""

    product: Product
    team_ids: list[str]
    coverage: Coverage


class Access:
    def __init__(
        self,
        state: State,
        *,
        scheduler: Scheduler,
        clock: Clock,
        commits: Commits,
        ids: IdFactory,
        secret_key: bytes,
        max_users_per_request: int,
        revoke_access: RevokeAccess,
        coverage_changed: CoverageChanged,
    ) -> None:
        self.state = state
        self._scheduler = scheduler
        self._clock = clock
        self._commits = commits
        self._ids = ids
        self._max_users = max_users_per_request  # a limit on one request (server/config.py)
        self._revoke_access = revoke_access
        self._coverage_changed = coverage_changed
        # Invitation tokens are derived from the server's secret key, never stored.
        self._new_token = partial(invitation_token, secret_key)
        scheduler.on(TimerKind.INVITATION_EXPIRY, self._on_invitation_expiry)

    def schedule_all(self) -> None:
        for invitation in self.state.directory.pending_invitations():
            self._scheduler.schedule(
                invitation.expire_time, TimerKind.INVITATION_EXPIRY, invitation.invitation_id
            )

    def _on_invitation_expiry(self, invitation_id: str, due: datetime, changes: Changes) -> None:
        self.state.directory.expire_invitation(invitation_id, due, changes)

    def _schedule_invitation(self, team_id: str, user_id: str) -> None:
        member = self.state.directory.member(team_id, user_id)
        invitation = self.state.directory.invitation(member.invitation_id)
        if invitation is not None:
            self._scheduler.schedule(
                invitation.expire_time, TimerKind.INVITATION_EXPIRY, invitation.invitation_id
            )

    def effective(self, member: Member) -> frozenset[str]:
        team = self.state.team(member.team_id)
        return effective_products(member, team, self.state.products.keys())

    def _revoke_losses(
        self,
        team_id: str,
        losses: Mapping[str, Collection[str]],
        now: datetime,
        changes: Changes,
    ) -> None:
        """A6: end the live sessions of what each user lost in this team. The calls
        that may revoke first fire the deadlines already due (``Scheduler.caught_up``),
        before they change anything: a session whose lease lapsed ended then
        (LEASE_EXPIRED), a window that closed in use was renewed (M5)."""
        self._revoke_access(team_id, losses, now, changes)

    # -- assigning -----------------------------------------------------------

    async def assign(
        self,
        team_id: str,
        users: Sequence[str],
        product_ids: Sequence[str],
        all_products: bool,
        guest: bool | None,
        *,
        import_: bool,
        members_only: bool = False,
    ) -> list[Member]:
        """A1, A3, A5: add users to the team, or change members' products; with
        ``members_only``, every user named must be a member already (UNKNOWN_USER,
        nothing changed), checked where the change is made, with nothing between."""
        team = self.state.team(team_id)
        if len(users) > self._max_users:
            raise InvalidArgument.field(
                "users", f"must name at most {self._max_users:,} users per request"
            )
        # The entries read on a thread (``read_entries``): by the edge already, before its
        # check of whom the call touches, or else here; nothing of the state.
        read = entries_read.get()
        if not users:
            checked = None
        elif read is not None and read[0] == list(users):
            checked = read[1]
        else:
            checked = await read_entries(users)
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        fired = len(changes)
        # What each member named may run before (for what a guest loses): theirs
        # alone, not every member's (a team of 50,000 cost a second a call).
        before: dict[str, frozenset[str]] = {}

        def seen(member: Member) -> None:
            before.setdefault(member.user_id, self.effective(member))

        try:
            if members_only and checked is not None:
                for entry in checked[0]:
                    self.state.directory.member(team_id, entry.user_id)  # or UNKNOWN_USER
            assigned = self.state.directory.assign(
                team,
                users,
                product_ids,
                all_products,
                guest,
                now,
                self._new_token,
                lambda: self._ids.new("ntf"),
                changes,
                import_=import_,
                known_products=self.state.products.keys(),
                before_change=seen,
                checked=checked,
            )
        except Exception:
            await store_fired(self._commits, changes)
            raise
        losses: dict[str, frozenset[str]] = {}
        for member, token in assigned:
            if token is not None:
                self._schedule_invitation(team_id, member.user_id)
            if member.user_id in before:
                losses[member.user_id] = before[member.user_id] - self.effective(member)
        self._revoke_losses(team_id, losses, now, changes)
        # The members as this call left them: others may change them while it is stored.
        answer = [copy(m) for m, _ in assigned]
        await commit_call(self._commits, changes, fired)
        return answer

    async def unassign(self, team_id: str, user_id: str) -> None:
        self.state.team(team_id)
        if not user_id:
            raise InvalidArgument.field("user_id", "is required")
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        try:
            self.state.directory.unassign(team_id, user_id, changes)
        except Exception:
            await store_fired(self._commits, changes)
            raise
        self._revoke_access(team_id, {user_id: None}, now, changes)
        await self._commits.commit(changes)

    async def set_user_products(
        self, team_id: str, user_id: str, product_ids: Sequence[str], all_products: bool
    ) -> Member:
        team = self.state.team(team_id)
        if not user_id:
            raise InvalidArgument.field("user_id", "is required")
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        fired = len(changes)
        try:
            member, lost = self.state.directory.set_user_products(
                team,
                user_id,
                product_ids,
                all_products,
                now,
                lambda: self._ids.new("ntf"),
                changes,
                self.state.products.keys(),
            )
        except Exception:
            await store_fired(self._commits, changes)
            raise
        self._revoke_losses(team_id, {user_id: lost}, now, changes)
        answer = copy(member)
        await commit_call(self._commits, changes, fired)
        return answer

    async def set_default_assignments(self, team_id: str, product_ids: Sequence[str]) -> None:
        team = self.state.team(team_id)
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        fired = len(changes)
        try:
            losses = self.state.directory.set_default_assignments(
                team, product_ids, changes, self.state.products.keys()
            )
        except Exception:
            await store_fired(self._commits, changes)
            raise
        self._revoke_losses(team_id, losses, now, changes)
        await commit_call(self._commits, changes, fired)

    def set_guest_defaults(
        self, team_id: str, enabled: bool, now: datetime, changes: Changes
    ) -> None:
        """A5 via UpdateTeamSettings: guests may lose the default set (A6); ``now``
        after the deadlines already due have fired into ``changes``."""
        team = self.state.team(team_id)
        losses = self.state.directory.set_guest_default_assignments(
            team, enabled, changes, self.state.products.keys()
        )
        self._revoke_losses(team_id, losses, now, changes)

    def member(self, team_id: str, user_id: str) -> Member:
        bad = Problems()
        for name, value in (("team_id", team_id), ("user_id", user_id)):
            if not value:
                bad[name] = "is required"
        bad.raise_any()
        self.state.team(team_id)
        return self.state.directory.member(team_id, user_id)

    def members(self, team_id: str) -> Sequence[Member]:
        self.state.team(team_id)
        return self.state.directory.members_of(team_id)

    # -- invitations and keys ------------------------------------------------

    async def resend_invitation(self, team_id: str, user_id: str) -> tuple[Invitation, str]:
        """A2: a new token and 7 days from now, once the deadlines already due have
        fired (``Scheduler.caught_up``): an invitation whose expiry fell due is
        resent as the expired one it is, and what else fell due before now (a
        charge, a pack's expiry) is stored before the resend, or alone if it is
        refused (``store_fired``)."""
        self.state.team(team_id)
        if not user_id:
            raise InvalidArgument.field("user_id", "is required")
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        fired = len(changes)
        try:
            invitation, token = self.state.directory.resend_invitation(
                team_id,
                user_id,
                now,
                self._new_token,
                lambda: self._ids.new("ntf"),
                changes,
            )
        except Exception:
            await store_fired(self._commits, changes)
            raise
        self._schedule_invitation(team_id, user_id)
        answer = copy(invitation)
        await commit_call(self._commits, changes, fired)
        return answer, token

    async def accept_invitation(self, token: str) -> tuple[str, str]:
        """A2: activate the membership and issue the key, once the deadlines already
        due have fired (``Scheduler.caught_up``): an invitation whose expiry fell
        due is refused as expired (``Invitation.state_at`` says so even unfired)
        and its expiry stored with the refusal (``store_fired``), as is whatever
        else fell due before now. A user who already has a key (an earlier
        invitation accepted, or ``IssueUserKey``) keeps it, and the key answered is
        "": a new one would stop the old one in products running on it, and
        whoever holds a second team's invitation token could take the user's
        key away. A lost key is the operator's to replace (``IssueUserKey``)."""
        if not token:
            raise InvalidArgument.field("invitation_token", "is required")
        if len(token) > 512:
            raise InvalidArgument.field("invitation_token", "is too long to be a token")
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        fired = len(changes)
        try:
            user = self.state.directory.accept_invitation(token, now, changes)
        except Exception:
            await store_fired(self._commits, changes)
            raise
        key = ""
        if user.key_hash is None:
            key = new_secret(USER_KEY_PREFIX)
            self.state.directory.set_user_key(user.user_id, hash_secret(key), changes)
        await commit_call(self._commits, changes, fired)
        return user.user_id, key

    async def issue_user_key(self, user_id: str) -> str:
        if not user_id:
            raise InvalidArgument.field("user_id", "is required")
        changes = Changes()
        key = new_secret(USER_KEY_PREFIX)
        self.state.directory.set_user_key(user_id, hash_secret(key), changes)
        await self._commits.commit(changes)
        return key

    def notifications(
        self, team_id: str, user_id: str, visible: frozenset[str] | None = None
    ) -> Sequence[Notification]:
        """The outbox (of a team, a user); only ``visible`` teams' for a team
        administrator who names none (RULES AD1). To be read, not changed: it may be
        the outbox's own index (``Directory.list_notifications``)."""
        return in_id_order(self.notification_lists(team_id, user_id, visible, ()))

    def notification_lists(
        self,
        team_id: str,
        user_id: str,
        visible: frozenset[str] | None,
        kinds: Collection[NotificationKind],
    ) -> list[Sequence[Notification]]:
        """``notifications``, of ``kinds`` when any is given, as lists in id order to
        merge (``Directory.notification_lists``, ``paging.merged_page``)."""
        if team_id:
            self.state.team(team_id)
        return self.state.directory.notification_lists(team_id, user_id, visible, kinds)

    def with_tokens(self, notes: list[Notification]) -> list[Notification]:
        """Notifications as the mailer reads them: each pending invitation's current
        notification carries its token, remade from the secret key (only for those
        shown: a page, not the whole outbox)."""
        now = self._clock.now()
        token_of = self.state.directory.invitation_token
        out = []
        for n in notes:
            token = token_of(n, now, self._new_token)
            out.append(dataclasses.replace(n, invitation_token=token) if token else n)
        return out

    # -- subscriptions and trials (C1, C2) -------------------------------------

    async def grant(
        self,
        user_id: str,
        product_id: str,
        start: datetime | None,
        end: datetime | None,
        kind: SubscriptionKind,
        bad: Problems | None = None,
    ) -> Subscription:
        """C1/C2: record it; the user's running sessions follow it from now, once the
        deadlines already due have fired (``Scheduler.caught_up``): a grace that
        ended before now was charged (its window stays paid, not given back), a
        window that closed in use was renewed, a lease that lapsed ended then."""
        changes = Changes()
        now = self._scheduler.caught_up(changes)
        new_id = lambda: self._ids.new("sub")  # noqa: E731
        known_users = self.state.directory.user_ids()
        known_products = self.state.products.keys()
        try:
            if kind is SubscriptionKind.TRIAL:
                sub = self.state.coverages.start_trial(
                    user_id, product_id, end, now, new_id, changes, known_users, known_products, bad
                )
            else:
                sub = self.state.coverages.grant(
                    user_id,
                    product_id,
                    start,
                    end,
                    kind,
                    new_id,
                    changes,
                    known_users,
                    known_products,
                    bad,
                )
        except Exception:
            await store_fired(self._commits, changes)
            raise
        self._coverage_changed(sub, now, changes)
        answer = copy(sub)
        await self._commits.commit(changes)
        return answer

    def list_subscriptions(
        self,
        user_id: str,
        product_id: str,
        include_ended: bool,
        *,
        after: str | None = None,
        limit: int = 0,
    ) -> list[Subscription]:
        """AD3: by user, by product or both (each named one must exist), by start
        time then id: from the first after ``after`` (a ``by_start`` key), at most
        ``limit`` (0: all)."""
        if user_id:
            self.state.directory.user(user_id)
        if product_id:
            self.state.product(product_id)
        now = self._clock.now()
        return self.state.coverages.listing(
            user_id, product_id, include_ended, now, after=after, limit=limit
        )

    async def end_subscription(self, subscription_id: str) -> Subscription:
        """AD3: end it now; its running sessions go on under tokens from this instant
        (C2), exactly as when its end comes on the clock (``coverage_changed``)."""
        changes = Changes()
        now = self._scheduler.caught_up(changes)  # what fell due before this instant first
        fired = len(changes)
        try:
            sub = self.state.coverages.end(subscription_id, now, changes)
        except Exception:
            await store_fired(self._commits, changes)
            raise
        self._coverage_changed(sub, now, changes)
        # One already over (its end fired above, or long ago) changes nothing: no event (AD2).
        answer = copy(sub)
        await commit_call(self._commits, changes, fired)
        return answer

    # -- the directory (AD4, AD5) ------------------------------------------------------

    def search_users(
        self, query: str, team_id: str, visible: frozenset[str] | None, after: str, limit: int
    ) -> tuple[list[User], bool]:
        """AD4: users whose name or email begins with ``query`` among the members of
        ``team_id`` (when given) or of the ``visible`` teams (None: everyone), by user
        id after ``after``; and whether more follow."""
        if len(query) > MAX_QUERY_CHARS:  # before folding it, whose cost grows with it
            raise InvalidArgument.field(
                "query",
                f"is {len(query):,} characters long; a name or an email address it may "
                f"begin has at most {MAX_QUERY_CHARS}",
            )
        teams: Collection[str] | None = visible
        if team_id:
            self.state.team(team_id)
            teams = frozenset({team_id})
        return self.state.directory.search(parse(query), teams, after, limit)

    def user_teams(self, user_id: str, visible: frozenset[str] | None) -> list[str]:
        """The teams of a user (invited or active) that a caller seeing ``visible``
        may see (None: all)."""
        return [
            m.team_id
            for m in self.state.directory.teams_of(user_id)
            if visible is None or m.team_id in visible
        ]

    def members_with(
        self, team_id: str, product_id: str, *, after: str | None = None, limit: int = 0
    ) -> list[tuple[Member, AccessVia]]:
        """AD4 ("By Product"): the team's members who may run the product, by user
        id, each with the assignment that grants it: from the first after ``after``,
        at most ``limit`` (0: all). Invited members are not among them: they can run
        nothing until they accept (A1); ListMembers without a product shows them
        with what they were assigned."""
        team = self.state.team(team_id)
        self.state.product(product_id)
        known = self.state.products.keys()
        members = self.state.directory.members_of(team_id)
        start = 0 if after is None else bisect_right(members, after, key=by_user_id)
        out = []
        for member in islice(members, start, None):
            if member.state is not MemberState.ACTIVE:
                continue
            via = access_via(member, team, product_id, known)
            if via is not None:
                out.append((member, via))
                if len(out) == limit:
                    break
        return out

    def my_products(self, user_id: str) -> list[MyProduct]:
        """AD5: every product the user may run now (their active memberships), by
        product id, with those teams and what would pay an Entitle now: the same
        choice Entitle makes (``coverage_of`` over the covering subscription or trial).
        A plugin only with its host, granted in any team: a plugin session needs a
        live session of its host (P4), so without it the plugin can never run."""
        now = self._clock.now()
        teams_of: dict[str, list[str]] = {}
        for member in self.state.directory.teams_of(user_id):  # by team id
            for product_id in self.effective(member):  # nothing while invited (A1)
                teams_of.setdefault(product_id, []).append(member.team_id)
        covering = self.state.coverages.covering
        out = []
        for product_id in sorted(teams_of):
            product = self.state.products[product_id]
            if product.host_product_id and product.host_product_id not in teams_of:
                continue
            cov = coverage_of(covering(user_id, product_id, now), product.daily_rate)
            out.append(MyProduct(product, teams_of[product_id], cov))
        return out
