"""Who may run what: users, team members, invitations and the outbox (A1-A7).

The ``Directory`` holds every user, membership and invitation in memory, with
the indexes the hot path needs (a user's teams, a key hash's user). Each
mutating method validates everything first, then applies the change and
records every object it created or changed in ``changes`` (``upsert``) or
removed (``delete``), parents before children, for the store to write.

Decisions where the rules are silent:

- An invitation is valid for ``INVITATION_VALIDITY`` from ``send_time``:
  accepting at ``expire_time - 1 s`` works, at ``expire_time`` it is expired.
  The validity is the one in force (``--terms``): ``restore`` gives a pending
  invitation the expiry ``send_time`` plus it, so a pending one's moves with a
  changed validity (docs/rules.md, "The numbers"); one recorded expired, or
  accepted, keeps what was stored.
- A membership has at most one invitation. Resending reuses its id with a new
  token, ``send_time`` and ``expire_time``; the old token's hash is forgotten,
  so the old token is unknown (``UnknownInvitation``). An accepted token stays
  known and answers ``AlreadyExists`` (it cannot be spent twice).
- An existing user is one the server already vouches for: they hold a key
  or are an active member somewhere. They join at once. A user known only
  through pending invitations is still new: another team invites them too.
  ``Full Name <email>`` for a known address keeps the name on file.
- Assigning (or importing) someone who is already a member only adds: the
  products given join their individual set (``all_products`` sets all
  products) and nothing is taken from it; SetUserProducts replaces. Their
  guest flag is set as given, as it always was (making a member a guest may
  still take the team's default set away, A5/A6). An invited member whose
  invitation has expired is sent a new one. Importing an invited member activates them
  and withdraws the invitation.
- ACCESS_CHANGED is queued when an individual assignment (not an import)
  adds a member or changes their guest flag or individual products, unless an
  invitation went out in the same call; a change that changes nothing
  queues nothing.
- ``all_products`` makes the explicit set irrelevant, so it is stored empty;
  a request naming both (AssignUsers, ImportUsers, SetUserProducts) is refused
  naming ``product_ids`` rather than letting ``all_products`` win unsaid.
- An invited member can run nothing: their effective products are empty;
  ``granted_products`` says what they will get once they accept.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from collections.abc import Callable, Collection, Iterable, KeysView, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import NamedTuple

from server.domain.changes import Changes
from server.domain.errors import (
    AlreadyExists,
    InvalidArgument,
    InvitationExpired,
    InvitationPending,
    NotAssigned,
    UnknownInvitation,
    UnknownUser,
)
from server.domain.few import add_few, drop_few, few
from server.domain.instants import rfc3339
from server.domain.search import Query, UserIndex
from server.domain.teams import Team
from server.domain.terms import DEFAULT_TERMS
from server.domain.text import quoted
from server.domain.userentries import (
    ExistingRef,
    NewUser,
    UserEntry,
    check_user_entries,
    entry_violations,
)

INVITATION_VALIDITY = DEFAULT_TERMS.invitation_validity
#: An assignment naming more users than this sorts the team's members (and the user
#: ids) again at the next read, instead of putting each in its place: each insertion
#: moves the list's tail (at 300,000 members, 0.1 ms), a sort is a few times 100 ms.
KEEP_SORTED_UP_TO = 100


def by_user_id(member: Member) -> str:
    """A member's place in a team's members (``members_of``), and in their pages."""
    return member.user_id


class MemberState(Enum):
    INVITED = "INVITED"
    ACTIVE = "ACTIVE"


class InvitationState(Enum):
    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    EXPIRED = "EXPIRED"


class NotificationKind(Enum):
    INVITATION = "INVITATION"
    ACCESS_CHANGED = "ACCESS_CHANGED"
    # Addressed to the team (empty email): RULES L1-L3.
    LOW_BALANCE = "LOW_BALANCE"
    PACK_EXPIRING = "PACK_EXPIRING"
    TOKENS_EXHAUSTED = "TOKENS_EXHAUSTED"


class AccessVia(Enum):
    """Through which assignment a member may run a product (AD4), in the order
    asked: named individually, then all products, then the team's default set."""

    INDIVIDUAL = "INDIVIDUAL"
    ALL_PRODUCTS = "ALL_PRODUCTS"
    DEFAULT_SET = "DEFAULT_SET"


ACCESS_CHANGED = NotificationKind.ACCESS_CHANGED
#: Makes the token of one sending of an invitation from the invitation's id and
#: the id of the notification that carries it (the engine derives it from the
#: server's secret key: ``server/credentials.py``); the same ids, the same token.
TokenMaker = Callable[[str, str], str]


def secret_hash(secret: str) -> bytes:
    """The only form in which invitation tokens (and user keys) are kept."""
    return hashlib.sha256(secret.encode()).digest()


@dataclass(slots=True)
class User:
    user_id: str  # the email address in lower case
    display_name: str
    email: str
    key_hash: bytes | None = None


@dataclass(slots=True)
class Member:
    team_id: str
    user_id: str
    state: MemberState
    guest: bool
    all_products: bool
    product_ids: frozenset[str]  # the individual explicit set (A3)
    invitation_id: str | None
    join_time: datetime  # when they were added to the team


@dataclass(slots=True)
class Invitation:
    invitation_id: str
    team_id: str
    user_id: str
    token_hash: bytes
    send_time: datetime
    expire_time: datetime
    state: InvitationState  # as stored; ``state_at`` also derives EXPIRED

    def state_at(self, now: datetime) -> InvitationState:
        if self.state is InvitationState.PENDING and now >= self.expire_time:
            return InvitationState.EXPIRED
        return self.state


@dataclass(slots=True)
class Notification:
    notification_id: str
    team_id: str
    user_id: str
    email: str
    kind: NotificationKind
    create_time: datetime
    # The secret an invitation email carries: never kept here nor stored; filled in
    # when the outbox is read (``invitation_token`` below, server/engine/access.py).
    invitation_token: str = ""
    # What a team alert is about (RULES L1-L3): PACK_EXPIRING's pack and expiry;
    # the tokens (LOW_BALANCE: the balance that fell below the threshold;
    # PACK_EXPIRING: the pack's remaining tokens); TOKENS_EXHAUSTED's product
    # (``user_id`` is the refused user).
    pack_id: str = ""
    tokens: int = 0
    expire_time: datetime | None = None
    product_id: str = ""


def _defaults_apply(member: Member, team: Team) -> bool:
    """A4/A5: the default set applies to members, to guests only if the team says so."""
    return bool(team.default_product_ids) and (not member.guest or team.guest_default_assignments)


def _what_grants(member: Member, team: Team) -> tuple[object, ...]:
    """What decides ``granted_products``: the individual assignment, and what the default
    set adds to it (A7: a guest flag alone may not change that: not in a team without a
    default set, nor for a member whose own products hold it already)."""
    if member.all_products or not _defaults_apply(member, team):
        added: frozenset[str] = frozenset()
    else:
        added = team.default_product_ids - member.product_ids
    return member.all_products, member.product_ids, added


def granted_products(
    member: Member, team: Team, all_product_ids: Collection[str]
) -> frozenset[str]:
    """What the member's assignment grants, whether or not they have accepted."""
    individual = frozenset(all_product_ids) if member.all_products else member.product_ids
    if _defaults_apply(member, team):
        return individual | team.default_product_ids
    return individual


def effective_products(
    member: Member, team: Team, all_product_ids: Collection[str]
) -> frozenset[str]:
    """A3-A5: what the member may run now; nothing until they accept (A1)."""
    if member.state is not MemberState.ACTIVE:
        return frozenset()
    return granted_products(member, team, all_product_ids)


def grants(member: Member, team: Team, product_id: str, all_product_ids: Collection[str]) -> bool:
    """``product_id in granted_products(...)`` without building the set."""
    return (
        (member.all_products and product_id in all_product_ids)
        or product_id in member.product_ids
        or (product_id in team.default_product_ids and _defaults_apply(member, team))
    )


def access_via(
    member: Member, team: Team, product_id: str, all_product_ids: Collection[str]
) -> AccessVia | None:
    """AD4: the assignment through which ``member`` is granted ``product_id``
    (whether or not they have accepted), or None when none grants it."""
    if product_id in member.product_ids:
        return AccessVia.INDIVIDUAL
    if member.all_products and product_id in all_product_ids:
        return AccessVia.ALL_PRODUCTS
    if product_id in team.default_product_ids and _defaults_apply(member, team):
        return AccessVia.DEFAULT_SET
    return None


def check_product_ids(
    product_ids: Sequence[str], known_products: Collection[str], field: str = "product_ids"
) -> frozenset[str]:
    """Every id must be on the rate sheet; raise InvalidArgument naming each one that is not."""
    problems = _product_problems(product_ids, known_products, field)
    if problems:
        raise InvalidArgument(problems)
    return frozenset(product_ids)


def _choice_problems(product_ids: Sequence[str], all_products: bool) -> dict[str, str]:
    """A3: a member runs all products or a list, never both: a request naming both
    (``product_ids or all_products``) is refused, not settled by one of them silently."""
    if all_products and product_ids:
        return {
            "product_ids": "must be empty when all_products is set (all_products already "
            "grants every product): give one or the other"
        }
    return {}


def _product_problems(
    product_ids: Sequence[str], known_products: Collection[str], field: str
) -> dict[str, str]:
    problems: dict[str, str] = {}
    for i, product_id in enumerate(product_ids):
        if not product_id:
            problems[f"{field}[{i}]"] = "is empty; name a product id such as ACAD"
        elif product_id not in known_products:
            problems[f"{field}[{i}]"] = (
                f"names {quoted(product_id)}, which is not on the rate sheet"
            )
    return problems


class Directory:
    """Users, memberships, invitations and the outbox, with their indexes."""

    def __init__(self, invitation_validity: timedelta = INVITATION_VALIDITY) -> None:
        self.invitation_validity = invitation_validity
        self._users: dict[str, User] = {}
        self._search = UserIndex()  # AD4: users by name and email prefix
        self._sorted_ids: list[str] | None = None  # every user id, sorted, until one is added
        # user_id -> the user's memberships, in the order they were made (most
        # users are in one team: the member itself, no dict or key of its own)
        self._teams_of: dict[str, Member | tuple[Member, ...]] = {}
        self._members_of: dict[str, dict[str, Member]] = {}  # team_id -> user_id -> member
        self._sorted_members: dict[str, list[Member]] = {}  # members_of's answer, until a change
        self._invitations: dict[str, Invitation] = {}
        self._invitation_by_token: dict[bytes, str] = {}
        self._user_by_key: dict[bytes, str] = {}
        self._outbox: list[Notification] = []
        self._outbox_of_team: dict[str, list[Notification]] = {}
        self._outbox_of_user: dict[str, list[Notification]] = {}
        # By kind, whole and per team: a page of a team's alerts (L1-L3) is read
        # from those lists, not through every invitation the team ever sent.
        self._outbox_of_kind: dict[NotificationKind, list[Notification]] = {}
        self._outbox_of_team_kind: dict[tuple[str, NotificationKind], list[Notification]] = {}

    @classmethod
    def restore(
        cls,
        users: Iterable[User],
        members: Iterable[Member],
        invitations: Iterable[Invitation],
        notifications: Iterable[Notification],
        invitation_validity: timedelta = INVITATION_VALIDITY,
    ) -> Directory:
        """Rebuild from what the store loaded.

        Give notifications in the order they were created (by rowid, say); the
        outbox is sorted by ``create_time``, keeping that order among equals.
        A pending invitation expires ``invitation_validity`` after it was sent,
        whatever the validity was then (the engine's expiry timers, set from
        ``pending_invitations``, follow).
        """
        directory = cls(invitation_validity)
        for user in users:
            directory._users[user.user_id] = user
            if user.key_hash is not None:
                directory._user_by_key[user.key_hash] = user.user_id
        # Keyed after the server starts, between calls (``build_search_index``).
        directory._search = UserIndex.later(list(directory._users.values()))
        for member in members:
            directory._add_member(member)
        for invitation in invitations:
            if invitation.state is InvitationState.PENDING:
                expire_time = invitation.send_time + invitation_validity
                if invitation.expire_time != expire_time:  # sent under another validity
                    invitation = replace(invitation, expire_time=expire_time)
            directory._invitations[invitation.invitation_id] = invitation
            directory._invitation_by_token[invitation.token_hash] = invitation.invitation_id
        for notification in sorted(notifications, key=lambda n: n.create_time):
            directory._file(notification)
        return directory

    def build_search_index(self, n: int) -> bool:
        """Key up to ``n`` more of the users loaded at start for search (AD4);
        True while some are left (``server/domain/search.py``)."""
        return self._search.build_some(n)

    # Reading.

    def user_ids(self) -> KeysView[str]:
        return self._users.keys()

    def find_user(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    def user(self, user_id: str) -> User:
        user = self._users.get(user_id)
        if user is None:
            raise UnknownUser(f"there is no user {user_id!r}", user_id=user_id)
        return user

    def member(self, team_id: str, user_id: str) -> Member:
        member = self._member(team_id, user_id)
        if member is None:
            raise UnknownUser(
                f"{user_id!r} is not a member of team {team_id!r}",
                team_id=team_id,
                user_id=user_id,
            )
        return member

    def is_member(self, team_id: str, user_id: str) -> bool:
        return self._member(team_id, user_id) is not None

    def members_of(self, team_id: str) -> Sequence[Member]:
        """A team's members, by user id: sorted once, then kept in order as members
        come and go (ListMembers pages through 300,000 members a page at a time;
        sorting them again after each change held the loop 89 ms, and copying them
        for each page 7.6 ms). Read-only: the directory's own list."""
        found = self._sorted_members.get(team_id)
        if found is None:
            members = self._members_of.get(team_id, {}).values()
            found = self._sorted_members[team_id] = sorted(members, key=by_user_id)
        return found

    def teams_of(self, user_id: str) -> list[Member]:
        """A user's memberships, by team id."""
        return sorted(few(self._teams_of.get(user_id)), key=lambda m: m.team_id)

    def search(
        self, query: Query, teams: Collection[str] | None, after: str, limit: int
    ) -> tuple[list[User], bool]:
        """AD4: up to ``limit`` users that ``query`` matches (``server/domain/search.py``),
        by user id after ``after``, and whether more follow. ``teams``: only members
        (invited or active) of these teams; None: every user, those in no team too."""
        if query.everyone:
            ids = self._all_ids() if teams is None else self._member_ids(teams)
            start = bisect.bisect_right(ids, after)
            page = ids[start : start + limit + 1]
        else:
            found: Iterable[str] = self._search.find(query)
            if teams is not None:
                wanted = frozenset(teams)
                found = (
                    u for u in found if any(m.team_id in wanted for m in few(self._teams_of.get(u)))
                )
            page = heapq.nsmallest(limit + 1, (u for u in found if u > after))
        return [self._users[u] for u in page[:limit]], len(page) > limit

    def _all_ids(self) -> Sequence[str]:
        if self._sorted_ids is None:
            self._sorted_ids = sorted(self._users)
        return self._sorted_ids

    def _member_ids(self, teams: Collection[str]) -> list[str]:
        if len(teams) == 1:
            return [m.user_id for m in self.members_of(next(iter(teams)))]
        return sorted({u for t in teams for u in self._members_of.get(t, ())})

    def invitation(self, invitation_id: str | None) -> Invitation | None:
        return self._invitations.get(invitation_id) if invitation_id else None

    def pending_invitations(self) -> list[Invitation]:
        """Invitations stored PENDING: the engine sets their expiry timers at start."""
        return [i for i in self._invitations.values() if i.state is InvitationState.PENDING]

    def user_for_key_hash(self, key_hash: bytes) -> str | None:
        return self._user_by_key.get(key_hash)

    def invitation_for_token(self, token: str) -> Invitation | None:
        """The invitation a token redeems (its current token), if any."""
        invitation_id = self._invitation_by_token.get(secret_hash(token))
        return self._invitations.get(invitation_id) if invitation_id else None

    def list_notifications(
        self, team_id: str = "", user_id: str = "", teams: Collection[str] | None = None
    ) -> Sequence[Notification]:
        """The outbox in creation order (by id: ids grow with time): for a team, a
        user, both, or (neither) all; only ``teams``' when given. To be read, not
        changed: a team's, or the whole outbox, is the index itself, not a copy."""
        return in_id_order(self.notification_lists(team_id, user_id, teams))

    def notification_lists(
        self,
        team_id: str = "",
        user_id: str = "",
        teams: Collection[str] | None = None,
        kinds: Collection[NotificationKind] = (),
    ) -> list[Sequence[Notification]]:
        """``list_notifications``, of ``kinds`` only when any is given, as lists each
        in id order whose merge it is (``paging.merged_page`` reads a page of them from
        its start): a team's alerts are its lists of those kinds, not its whole outbox
        filtered; several teams' are their own lists, not the whole outbox filtered.
        To be read, not changed. A user's (a few) are filtered into one."""
        if user_id:
            found = self._outbox_of_user.get(user_id, [])
            if not team_id and teams is None and not kinds:
                return [found]
            return [
                [
                    n
                    for n in found
                    if (not team_id or n.team_id == team_id)
                    and (teams is None or n.team_id in teams)
                    and (not kinds or n.kind in kinds)
                ]
            ]
        if team_id:
            if teams is not None and team_id not in teams:
                return []
            if not kinds:
                return [self._outbox_of_team.get(team_id, [])]
            by_team = self._outbox_of_team_kind
            return [box for k in kinds if (box := by_team.get((team_id, k)))]
        if teams is None:
            if not kinds:
                return [self._outbox]
            return [box for k in kinds if (box := self._outbox_of_kind.get(k))]
        if not kinds:
            return [box for t in teams if (box := self._outbox_of_team.get(t))]
        by_team = self._outbox_of_team_kind
        return [box for t in teams for k in kinds if (box := by_team.get((t, k)))]

    def teams_for(
        self,
        user_id: str,
        product_id: str,
        now: datetime,
        teams: Mapping[str, Team],
        all_product_ids: Collection[str],
    ) -> list[str]:
        """M1: the ids (sorted) of the teams where the user may run the product now.

        When there are none, say why: a pending invitation to a team that would
        grant it (``InvitationPending``), else an expired one
        (``InvitationExpired``), else ``NotAssigned``.
        """
        allowed: list[str] = []
        pending: Invitation | None = None
        expired: Invitation | None = None
        for member in few(self._teams_of.get(user_id)):
            team_id = member.team_id
            team = teams.get(team_id)
            if team is None or not grants(member, team, product_id, all_product_ids):
                continue
            if member.state is MemberState.ACTIVE:
                allowed.append(team_id)
                continue
            invitation = self.invitation(member.invitation_id)
            if invitation is None:
                continue
            if invitation.state_at(now) is InvitationState.PENDING:
                pending = _first_team(pending, invitation)
            else:
                expired = _first_team(expired, invitation)
        if allowed:
            return sorted(allowed)
        if pending is not None:
            raise InvitationPending(
                f"{user_id} has not yet accepted the invitation to team "
                f"{pending.team_id!r}, which would let them run {product_id}",
                team_id=pending.team_id,
                user_id=user_id,
                product_id=product_id,
            )
        if expired is not None:
            raise InvitationExpired(
                f"the invitation of {user_id} to team {expired.team_id!r} expired at "
                f"{rfc3339(expired.expire_time)}; an administrator must resend it",
                team_id=expired.team_id,
                user_id=user_id,
                product_id=product_id,
                expire_time=rfc3339(expired.expire_time),
            )
        raise NotAssigned(
            f"{user_id} is not assigned {product_id} in any team",
            user_id=user_id,
            product_id=product_id,
        )

    # Assigning and inviting (A1, A2, A7).

    def assign(
        self,
        team: Team,
        entries: Sequence[str],
        product_ids: Sequence[str],
        all_products: bool,
        guest: bool | None,
        now: datetime,
        new_token: TokenMaker,
        new_id: Callable[[], str],
        changes: Changes,
        *,
        import_: bool = False,
        known_products: Collection[str],
        before_change: Callable[[Member], object] = lambda member: None,
        checked: tuple[list[UserEntry], dict[int, str]] | None = None,
    ) -> list[tuple[Member, str | None]]:
        """A1: assign (``import_``: import) users to a team, all or nothing.

        Checks every entry and product id before changing anything, then
        returns each member named, in request order (a duplicate once), with
        the plaintext invitation token when this call sent one. ``guest`` None
        (not given): a new member is not a guest, an existing one stays what
        they are (A5); an assignment adds products, never takes them away.
        ``before_change`` sees each member named who was one already, as they
        were (what they may run now: the caller's, for what a guest loses).
        ``checked``: ``check_user_entries(entries)`` already (off the event loop:
        ten thousand addresses are most of a second to read).
        """
        if not entries:
            raise InvalidArgument.field("users", "must name at least one user")
        parsed, errors = checked if checked is not None else check_user_entries(entries)
        for entry in parsed:
            if isinstance(entry, ExistingRef) and entry.user_id not in self._users:
                errors[entry.index] = (
                    f"{quoted(entry.user_id)} is not a known user id; "
                    "to invite a new user write Full Name <email>"
                )
        problems = entry_violations("users", errors)
        problems.update(_product_problems(product_ids, known_products, "product_ids"))
        problems.update(_choice_problems(product_ids, all_products))
        if problems:
            raise InvalidArgument(problems)
        call = _Call(now, new_token, new_id, changes)
        if len(parsed) > KEEP_SORTED_UP_TO:  # sorted again once, not put in place each
            self._sorted_members.pop(team.team_id, None)
            self._sorted_ids = None
        wanted = _Wanted(
            guest, all_products, frozenset() if all_products else frozenset(product_ids)
        )
        return [
            self._assign_one(call, team, entry, wanted, import_, before_change) for entry in parsed
        ]

    def _assign_one(
        self,
        call: _Call,
        team: Team,
        entry: UserEntry,
        wanted: _Wanted,
        import_: bool,
        before_change: Callable[[Member], object],
    ) -> tuple[Member, str | None]:
        user = self._users.get(entry.user_id)
        if user is None:  # assign has rejected bare ids of unknown users
            name = entry.display_name if isinstance(entry, NewUser) else entry.user_id
            user = User(entry.user_id, name, entry.user_id)
            self._users[user.user_id] = user
            self._search.add(user.user_id, user.display_name, user.email)
            if self._sorted_ids is not None:
                bisect.insort(self._sorted_ids, user.user_id)
            call.changes.upsert(user)
        member = self._member(team.team_id, user.user_id)
        if member is None:
            invite = not import_ and not self._vouched_for(user)
            state = MemberState.INVITED if invite else MemberState.ACTIVE
            member = Member(
                team.team_id,
                user.user_id,
                state,
                bool(wanted.guest),
                wanted.all_products,
                wanted.product_ids,
                None,
                call.now,
            )
            self._add_member(member)
            if invite:
                return member, self._send_invitation(call, member, user)
            call.changes.upsert(member)
            if not import_:
                self._notify(call, user, team.team_id, ACCESS_CHANGED)
            return member, None
        before_change(member)
        merged = _merged(member, wanted)
        changed = (member.guest, member.all_products, member.product_ids) != merged
        granted = _what_grants(member, team)
        member.guest, member.all_products, member.product_ids = merged
        invitation = self.invitation(member.invitation_id)
        if member.state is MemberState.INVITED and (import_ or self._vouched_for(user)):
            # Imported, or an existing user by now (they accepted another team's
            # invitation since, A1): they join at once, as if assigned afresh.
            member.state = MemberState.ACTIVE
            member.invitation_id = None
            call.changes.upsert(member)
            if invitation is not None:
                self._drop_invitation(invitation, call.changes)
            if not import_:
                self._notify(call, user, team.team_id, ACCESS_CHANGED)
        elif member.state is MemberState.INVITED and (
            invitation is None or invitation.state_at(call.now) is not InvitationState.PENDING
        ):
            return member, self._send_invitation(call, member, user)
        elif changed:
            call.changes.upsert(member)
            # A7: an email for a change of what they may run, not for a guest flag
            # that changes nothing (a team without default assignments, say).
            if not import_ and _what_grants(member, team) != granted:
                self._notify(call, user, team.team_id, ACCESS_CHANGED)
        return member, None

    def resend_invitation(
        self,
        team_id: str,
        user_id: str,
        now: datetime,
        new_token: TokenMaker,
        new_id: Callable[[], str],
        changes: Changes,
    ) -> tuple[Invitation, str]:
        """A2: a new token and 7 days from now; the old token becomes unknown.

        The caller checks that the team exists. Not a member: ``UnknownUser``;
        already active: ``AlreadyExists``.
        """
        member = self.member(team_id, user_id)
        if member.state is MemberState.ACTIVE:
            raise AlreadyExists(
                f"{user_id} is already an active member of team {team_id!r}; "
                "there is no invitation to resend",
                team_id=team_id,
                user_id=user_id,
            )
        call = _Call(now, new_token, new_id, changes)
        token = self._send_invitation(call, member, self._users[user_id])
        return self._invitations[str(member.invitation_id)], token

    def accept_invitation(self, token: str, now: datetime, changes: Changes) -> User:
        """A2: activate the membership the token invites to; the caller issues the key."""
        invitation_id = self._invitation_by_token.get(secret_hash(token))
        if invitation_id is None:
            raise UnknownInvitation(
                "this invitation token is not known: it is mistyped, "
                "or a newer invitation has replaced it"
            )
        invitation = self._invitations[invitation_id]
        state = invitation.state_at(now)
        ids = {"team_id": invitation.team_id, "user_id": invitation.user_id}
        if state is InvitationState.ACCEPTED:
            raise AlreadyExists(
                f"this invitation to team {invitation.team_id!r} was already accepted; "
                "an administrator can issue a new user key",
                **ids,
            )
        if state is InvitationState.EXPIRED:
            raise InvitationExpired(
                f"this invitation to team {invitation.team_id!r} expired at "
                f"{rfc3339(invitation.expire_time)}; ask an administrator to resend it",
                expire_time=rfc3339(invitation.expire_time),
                **ids,
            )
        member = self.member(invitation.team_id, invitation.user_id)
        member.state = MemberState.ACTIVE
        invitation.state = InvitationState.ACCEPTED
        changes.upsert(member)
        changes.upsert(invitation)
        return self._users[invitation.user_id]

    def expire_invitation(
        self, invitation_id: str, now: datetime, changes: Changes
    ) -> Invitation | None:
        """A2, for the engine's timer: record the expiry if due and still pending."""
        invitation = self._invitations.get(invitation_id)
        if invitation is None or invitation.state is not InvitationState.PENDING:
            return None
        if now < invitation.expire_time:
            return None  # resent since the timer was set
        invitation.state = InvitationState.EXPIRED
        changes.upsert(invitation)
        return invitation

    def set_user_key(self, user_id: str, key_hash: bytes, changes: Changes) -> User:
        """Replace the user's key hash; the old key stops working at once."""
        user = self.user(user_id)
        if user.key_hash is not None:
            self._user_by_key.pop(user.key_hash, None)
        user.key_hash = key_hash
        self._user_by_key[key_hash] = user_id
        changes.upsert(user)
        return user

    # Access (A3-A6).

    def set_user_products(
        self,
        team: Team,
        user_id: str,
        product_ids: Sequence[str],
        all_products: bool,
        now: datetime,
        new_id: Callable[[], str],
        changes: Changes,
        known_products: Collection[str],
    ) -> tuple[Member, frozenset[str]]:
        """A3: replace a member's individual products (A7: notify).

        Returns the member and the products they could run before and cannot
        now, whose sessions the engine revokes (A6).
        """
        member = self.member(team.team_id, user_id)
        if problems := _choice_problems(product_ids, all_products):
            raise InvalidArgument(problems)
        chosen = check_product_ids(product_ids, known_products)
        individual: frozenset[str] = frozenset() if all_products else chosen
        if (member.all_products, member.product_ids) == (all_products, individual):
            return member, frozenset()
        lost = self.losses_if_set(team, user_id, individual, all_products, known_products)
        member.all_products, member.product_ids = all_products, individual
        changes.upsert(member)
        call = _Call(now, _no_token, new_id, changes)
        self._notify(call, self._users[user_id], team.team_id, ACCESS_CHANGED)
        return member, lost

    def losses_if_set(
        self,
        team: Team,
        user_id: str,
        product_ids: Collection[str],
        all_products: bool,
        known_products: Collection[str],
    ) -> frozenset[str]:
        """What ``set_user_products`` would take from the member (A6), changing
        nothing: the edge's check of the sessions it would end (AD1)."""
        member = self._member(team.team_id, user_id)
        if member is None:
            return frozenset()
        chosen = frozenset(p for p in product_ids if p in known_products)
        after = replace(
            member, all_products=all_products, product_ids=frozenset() if all_products else chosen
        )
        return _taken(member, after, team, known_products)

    def losses_if_made_guests(
        self,
        team: Team,
        user_ids: Iterable[str],
        product_ids: Collection[str],
        all_products: bool,
        known_products: Collection[str],
    ) -> dict[str, frozenset[str]]:
        """What ``assign`` with ``guest`` set would take from each member it makes a
        guest (A5, A6: the defaults they had only as a member), changing nothing: the
        edge's check of the sessions it would end (AD1)."""
        wanted = _Wanted(
            True, all_products, frozenset(p for p in product_ids if p in known_products)
        )
        losses: dict[str, frozenset[str]] = {}
        for user_id in user_ids:
            member = self._member(team.team_id, user_id)
            if member is None or member.guest:
                continue
            guest, every, products = _merged(member, wanted)
            after = replace(member, guest=guest, all_products=every, product_ids=products)
            if lost := _taken(member, after, team, known_products):
                losses[user_id] = lost
        return losses

    def losses_if_defaults(
        self, team: Team, product_ids: Collection[str], known_products: Collection[str]
    ) -> dict[str, frozenset[str]]:
        """What ``set_default_assignments`` would take from each member (A6),
        changing nothing: the edge's check of the sessions it would end (AD1)."""
        chosen = frozenset(p for p in product_ids if p in known_products)
        return self._losses(team, team.default_product_ids - chosen, known_products)

    def losses_if_guest_defaults(
        self, team: Team, enabled: bool, known_products: Collection[str]
    ) -> dict[str, frozenset[str]]:
        """What ``set_guest_default_assignments`` would take from each guest (A5, A6),
        changing nothing: the edge's check of the sessions it would end (AD1)."""
        if not (team.guest_default_assignments and not enabled):
            return {}
        return self._losses(team, team.default_product_ids, known_products, guests_only=True)

    def unassign(self, team_id: str, user_id: str, changes: Changes) -> Member:
        """A6: remove a membership and its invitation; the engine revokes the sessions."""
        member = self.member(team_id, user_id)
        invitation = self.invitation(member.invitation_id)
        if invitation is not None:
            self._drop_invitation(invitation, changes)
        drop_few(self._teams_of, user_id, member)
        del self._members_of[team_id][user_id]
        if (members := self._sorted_members.get(team_id)) is not None:
            del members[bisect.bisect_left(members, user_id, key=by_user_id)]
        changes.delete(member)
        return member

    def set_default_assignments(
        self,
        team: Team,
        product_ids: Sequence[str],
        changes: Changes,
        known_products: Collection[str],
    ) -> dict[str, frozenset[str]]:
        """A4: set the team's default set (empty turns it off); no notifications (A7).

        Returns, by user id, what each member can no longer run (A6).
        """
        chosen = check_product_ids(product_ids, known_products)
        losses = self.losses_if_defaults(team, chosen, known_products)
        if chosen != team.default_product_ids:
            team.default_product_ids = chosen
            changes.upsert(team)
        return losses

    def set_guest_default_assignments(
        self, team: Team, enabled: bool, changes: Changes, known_products: Collection[str]
    ) -> dict[str, frozenset[str]]:
        """A5: whether defaults apply to guests; returns what guests lost (A6)."""
        losses = self.losses_if_guest_defaults(team, enabled, known_products)
        if team.guest_default_assignments != enabled:
            team.guest_default_assignments = enabled
            changes.upsert(team)
        return losses

    def _losses(
        self,
        team: Team,
        removed: frozenset[str],
        known_products: Collection[str],
        guests_only: bool = False,
    ) -> dict[str, frozenset[str]]:
        """What each active member loses when the defaults ``removed`` stop applying."""
        losses: dict[str, frozenset[str]] = {}
        if not removed:
            return losses
        # What a member loses depends on their own products alone: worked out once
        # for each set of them (a team of 300,000 has a few), not once a member.
        all_lose = frozenset(p for p in removed if p not in known_products)
        lose_by_own: dict[frozenset[str], frozenset[str]] = {}
        for member in self._members_of.get(team.team_id, {}).values():
            if member.state is not MemberState.ACTIVE or not _defaults_apply(member, team):
                continue
            if guests_only and not member.guest:
                continue
            if member.all_products:
                lost = all_lose
            else:
                own = member.product_ids
                found = lose_by_own.get(own)
                if found is None:
                    found = lose_by_own[own] = removed - own
                lost = found
            if lost:
                losses[member.user_id] = lost
        return losses

    # Internals.

    def _vouched_for(self, user: User) -> bool:
        """An existing user (A1): holds a key or is an active member of some team."""
        return user.key_hash is not None or any(
            m.state is MemberState.ACTIVE for m in few(self._teams_of.get(user.user_id))
        )

    def _member(self, team_id: str, user_id: str) -> Member | None:
        """The user's membership of the team, by the team's members' index: not among
        the user's memberships, which a user invited to 500 teams made a walk of 500
        for each (each notification of a page of theirs, each call naming them)."""
        members = self._members_of.get(team_id)
        return None if members is None else members.get(user_id)

    def _add_member(self, member: Member) -> None:
        """Index a new membership (the user is not yet a member of that team)."""
        add_few(self._teams_of, member.user_id, member)
        self._members_of.setdefault(member.team_id, {})[member.user_id] = member
        if (members := self._sorted_members.get(member.team_id)) is not None:
            bisect.insort(members, member, key=by_user_id)

    def _send_invitation(self, call: _Call, member: Member, user: User) -> str:
        """Send, or resend reusing its id, the member's invitation; return the token
        (made from the invitation's id and its notification's: ``_Call.new_token``)."""
        expire_time = call.now + self.invitation_validity
        invitation = self.invitation(member.invitation_id)
        if invitation is None:
            invitation = Invitation(
                call.new_id(),
                member.team_id,
                member.user_id,
                b"",
                call.now,
                expire_time,
                InvitationState.PENDING,
            )
            self._invitations[invitation.invitation_id] = invitation
            member.invitation_id = invitation.invitation_id
        else:
            self._invitation_by_token.pop(invitation.token_hash, None)
            invitation.send_time, invitation.expire_time = call.now, expire_time
            invitation.state = InvitationState.PENDING
        notification_id = call.new_id()
        token = call.new_token(invitation.invitation_id, notification_id)
        invitation.token_hash = secret_hash(token)
        self._invitation_by_token[invitation.token_hash] = invitation.invitation_id
        call.changes.upsert(member)
        call.changes.upsert(invitation)
        self._notify(call, user, member.team_id, NotificationKind.INVITATION, notification_id)
        return token

    def invitation_token(
        self, notification: Notification, now: datetime, new_token: TokenMaker
    ) -> str:
        """The token an INVITATION notification carries, remade with ``new_token``
        while it is its invitation's current token and the invitation is pending;
        else "" (a resend made an older notification's token worthless; an accepted
        or expired one is spent)."""
        if notification.kind is not NotificationKind.INVITATION:
            return ""
        member = self._member(notification.team_id, notification.user_id)
        invitation = self.invitation(member.invitation_id if member else None)
        if invitation is None or invitation.state_at(now) is not InvitationState.PENDING:
            return ""
        token = new_token(invitation.invitation_id, notification.notification_id)
        return token if secret_hash(token) == invitation.token_hash else ""

    def _drop_invitation(self, invitation: Invitation, changes: Changes) -> None:
        del self._invitations[invitation.invitation_id]
        self._invitation_by_token.pop(invitation.token_hash, None)
        changes.delete(invitation)

    def _notify(
        self,
        call: _Call,
        user: User,
        team_id: str,
        kind: NotificationKind,
        notification_id: str = "",
    ) -> None:
        notification = Notification(
            notification_id or call.new_id(), team_id, user.user_id, user.email, kind, call.now
        )
        self._file(notification)
        call.changes.upsert(notification)

    def queue(self, notification: Notification, changes: Changes) -> None:
        """Queue a notification made elsewhere (a team alert, RULES L1-L3)."""
        self._file(notification)
        changes.upsert(notification)

    def _file(self, notification: Notification) -> None:
        """Into the outbox and its indexes, each kept in id order (ListNotifications
        pages by id; one made before a wall-clock step back still finds its place).
        A team alert naming no user (L1, L2) is in no user's index: no list is asked
        for by an empty user id."""
        team_id, kind = notification.team_id, notification.kind
        boxes = [
            self._outbox,
            self._outbox_of_team.setdefault(team_id, []),
            self._outbox_of_kind.setdefault(kind, []),
            self._outbox_of_team_kind.setdefault((team_id, kind), []),
        ]
        if notification.user_id:
            boxes.append(self._outbox_of_user.setdefault(notification.user_id, []))
        for box in boxes:
            if box and box[-1].notification_id > notification.notification_id:
                bisect.insort(box, notification, key=lambda n: n.notification_id)
            else:
                box.append(notification)


class _Wanted(NamedTuple):
    """An individual assignment, in Member's field order (``guest`` None: unchanged)."""

    guest: bool | None
    all_products: bool
    product_ids: frozenset[str]


def _merged(member: Member, wanted: _Wanted) -> tuple[bool, bool, frozenset[str]]:
    """A member's (guest, all_products, product_ids) once assigned ``wanted``: an
    assignment adds products, never takes one (A3)."""
    every = member.all_products or wanted.all_products
    return (
        member.guest if wanted.guest is None else wanted.guest,
        every,
        frozenset() if every else member.product_ids | wanted.product_ids,
    )


def _taken(
    member: Member, after: Member, team: Team, known_products: Collection[str]
) -> frozenset[str]:
    """What ``member`` could run and, changed to ``after``, cannot (A6)."""
    before = effective_products(member, team, known_products)
    return before - effective_products(after, team, known_products)


@dataclass(slots=True, frozen=True)
class _Call:
    """What one use case brings: the time, makers of secrets and ids, the change set."""

    now: datetime
    new_token: TokenMaker
    new_id: Callable[[], str]
    changes: Changes


def _first_team(kept: Invitation | None, other: Invitation) -> Invitation:
    """Of two invitations, the one to the team whose id sorts first (a stable answer)."""
    return other if kept is None or other.team_id < kept.team_id else kept


def _notification_id(n: Notification) -> str:
    return n.notification_id


def in_id_order(lists: Sequence[Sequence[Notification]]) -> Sequence[Notification]:
    """The merge of lists of notifications each in id order: the one list itself
    when there is one (not a copy)."""
    if len(lists) == 1:
        return lists[0]
    return list(heapq.merge(*lists, key=_notification_id))


def _no_token(invitation_id: str, notification_id: str) -> str:
    raise AssertionError("this use case sends no invitation")
