"""How each durable domain object becomes a row and comes back.

One ``Table`` per persisted type. ``to_row`` runs at once when a change is
handed to the store (so later changes in memory cannot leak into it);
``from_row`` runs when the state loads at start.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import Enum
from functools import lru_cache
from typing import Any, TypeVar

from server.domain.coverage import Subscription, SubscriptionKind
from server.domain.directory import (
    Invitation,
    InvitationState,
    Member,
    MemberState,
    Notification,
    NotificationKind,
    User,
)
from server.domain.ledger import Cause, EntryKind, Hold, LedgerEntry, TokenPack
from server.domain.meta import MetaValue
from server.domain.products import Platform, Product, ProductKind
from server.domain.sessions import (
    ActivitySpan,
    ChargeState,
    Coverage,
    Device,
    EndReason,
    Meter,
    Session,
    SessionState,
)
from server.domain.teams import Plan, Team

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
Row = tuple[Any, ...]
_E = TypeVar("_E", bound=Enum)


def t2i(t: datetime) -> int:
    return (t - EPOCH) // _US


def i2t(us: int) -> datetime:
    return EPOCH + _US * us  # exact, and 3x faster than timedelta(microseconds=us)


def opt_t2i(t: datetime | None) -> int | None:
    return None if t is None else t2i(t)


def opt_i2t(us: int | None) -> datetime | None:
    return None if us is None else i2t(us)


def ids2s(ids: frozenset[str]) -> str:
    return ",".join(sorted(ids))


@lru_cache(maxsize=4096)
def s2ids(s: str) -> frozenset[str]:
    """Equal sets come back as one object (they are immutable): a million
    members assigned the same products hold one frozenset, not a million."""
    return frozenset(x for x in s.split(",") if x)


def _by_value(kind: type[_E]) -> dict[Any, _E]:
    """``kind(value)`` as a dictionary read: an Enum call costs ~1 µs, and a
    million sessions make several each."""
    return {member.value: member for member in kind}


# -- sharing while the state loads ------------------------------------------------
#
# Every row read back makes new objects, even for values that many objects
# share in memory: a session's start is also its device's registration and
# its meter's window start; a user id is in the users, members, sessions,
# meters and devices tables. While ``sharing()`` is on, ``_t`` and ``_s`` (and
# the decoders of the big tables, which read ``_instants`` and ``_share``
# themselves, one look at the flag per row) make equal instants and ids one
# object (datetimes and strings are immutable), so that a restarted server
# holds no more than the one that wrote the rows. The tables are dropped when
# the load ends.


class _Instants(dict[int, datetime]):
    """Instants by microseconds; a missing one is made (and kept)."""

    def __missing__(self, us: int) -> datetime:
        t = self[us] = EPOCH + _US * us
        return t


class _FreshInstants(dict[int, datetime]):
    """The same reads, outside ``sharing()``: a new instant each time, none kept."""

    def __missing__(self, us: int) -> datetime:
        return EPOCH + _US * us


def _keep(s: str, _: str) -> str:
    return s


_instants = _Instants()
_fresh = _FreshInstants()
_strings: dict[str, str] = {}
_share = _strings.setdefault  # _share(s, s): the string equal to s that came first
_sharing = 0


@contextmanager
def sharing() -> Iterator[None]:
    global _sharing
    _sharing += 1
    try:
        yield
    finally:
        _sharing -= 1
        if not _sharing:
            _instants.clear()
            _strings.clear()


def _t(us: int) -> datetime:
    return _instants[us] if _sharing else EPOCH + _US * us


def _opt_t(us: int | None) -> datetime | None:
    return None if us is None else _t(us)


def _s(s: str) -> str:
    return _share(s, s) if _sharing else s


_PLAN = _by_value(Plan)
_PRODUCT_KIND = _by_value(ProductKind)
_PLATFORM = _by_value(Platform)
_ENTRY_KIND = _by_value(EntryKind)
_MEMBER_STATE = _by_value(MemberState)
_INVITATION_STATE = _by_value(InvitationState)
_NOTIFICATION_KIND = _by_value(NotificationKind)
_SUBSCRIPTION_KIND = _by_value(SubscriptionKind)
_COVERAGE = _by_value(Coverage)
_SESSION_STATE = _by_value(SessionState)
_END_REASON = _by_value(EndReason)
_CHARGE_STATE = _by_value(ChargeState)


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    to_row: Callable[[Any], Row]
    from_row: Callable[[Row], Any]
    append_only: bool = False
    order_by: str = ""
    load_where: str = ""  # which rows come back into memory at start (all by default)
    # Made once from the fields above (the writer uses them for every row):
    upsert_sql: str = field(init=False, repr=False, compare=False)
    delete_sql: str = field(init=False, repr=False, compare=False)
    select_sql: str = field(init=False, repr=False, compare=False)
    key_positions: tuple[int, ...] = field(init=False, repr=False, compare=False)
    key_prefix: int = field(init=False, repr=False, compare=False)  # 0: not the first columns

    def __post_init__(self) -> None:
        cols = ", ".join(self.columns)
        marks = ", ".join("?" for _ in self.columns)
        where = " AND ".join(f"{k} = ?" for k in self.key)
        upsert = f"INSERT INTO {self.name} ({cols}) VALUES ({marks})"
        if not self.append_only:
            # An upsert changes the row in place, touching only the indexes of the
            # columns that changed (a heartbeat: none); INSERT OR REPLACE would
            # delete the row and insert it anew, every index with it (a quarter
            # more time for a million sessions).
            sets = ", ".join(f"{c} = excluded.{c}" for c in self.columns if c not in self.key)
            action = f"DO UPDATE SET {sets}" if sets else "DO NOTHING"
            upsert += f" ON CONFLICT ({', '.join(self.key)}) {action}"
        init = object.__setattr__  # frozen: set once, here
        init(self, "upsert_sql", upsert)
        init(self, "delete_sql", f"DELETE FROM {self.name} WHERE {where}")
        init(self, "select_sql", f"SELECT {cols} FROM {self.name}")
        init(self, "key_positions", tuple(self.columns.index(k) for k in self.key))
        n = len(self.key)
        init(self, "key_prefix", n if self.columns[:n] == self.key else 0)

    def key_of(self, row: Row) -> Row:
        """The primary key's values of a full row."""
        if self.key_prefix:
            return row[: self.key_prefix]
        return tuple(row[i] for i in self.key_positions)


# -- the decoders of the big tables ---------------------------------------------------
#
# A million users bring a million rows each to users, members, sessions, meters
# and devices: these decoders call the constructors with positional arguments
# (a third faster than by keyword), so each first checks, once, that the
# fields are still in the order the columns are.


def _fields_are(kind: type, names: tuple[str, ...]) -> None:
    found = tuple(f.name for f in fields(kind) if f.init)[: len(names)]
    if found != names:
        raise TypeError(
            f"{kind.__name__}'s fields are now {found}: update its decoder in {__name__}"
        )


_fields_are(User, ("user_id", "display_name", "email", "key_hash"))
_fields_are(
    Member,
    (
        "team_id",
        "user_id",
        "state",
        "guest",
        "all_products",
        "product_ids",
        "invitation_id",
        "join_time",
    ),
)


def _user(r: Row) -> User:
    share = _share if _sharing else _keep
    key_hash = r[3]
    return User(
        share(r[0], r[0]),
        r[1],
        share(r[2], r[2]),  # the same string as the user id, as a fresh user's
        None if key_hash is None else bytes(key_hash),
    )


def _member(r: Row) -> Member:
    t, share = (_instants, _share) if _sharing else (_fresh, _keep)
    return Member(
        share(r[0], r[0]),
        share(r[1], r[1]),
        _MEMBER_STATE[r[2]],
        bool(r[3]),
        bool(r[4]),
        s2ids(r[5]),
        r[6],
        t[r[7]],
    )


TEAMS = Table(
    "teams",
    (
        "team_id",
        "display_name",
        "plan",
        "guest_default_assignments",
        "default_product_ids",
        "create_time",
    ),
    ("team_id",),
    lambda t: (
        t.team_id,
        t.display_name,
        t.plan.value,
        int(t.guest_default_assignments),
        ids2s(t.default_product_ids),
        t2i(t.create_time),
    ),
    lambda r: Team(
        team_id=_s(r[0]),
        display_name=r[1],
        plan=_PLAN[r[2]],
        guest_default_assignments=bool(r[3]),
        default_product_ids=s2ids(r[4]),
        create_time=_t(r[5]),
    ),
)

PACKS = Table(
    "packs",
    (
        "pack_id",
        "team_id",
        "tokens",
        "purchase_time",
        "expire_time",
        "request_id",
        "remaining",
        "held",
        "consumed",
        "expired_tokens",
        "expired",
    ),
    ("pack_id",),
    lambda p: (
        p.pack_id,
        p.team_id,
        p.tokens,
        t2i(p.purchase_time),
        t2i(p.expire_time),
        p.request_id,
        p.remaining,
        p.held,
        p.consumed,
        p.expired_tokens,
        int(p.expired),
    ),
    lambda r: TokenPack(
        pack_id=r[0],
        team_id=_s(r[1]),
        tokens=r[2],
        purchase_time=_t(r[3]),
        expire_time=_t(r[4]),
        request_id=r[5],
        remaining=r[6],
        held=r[7],
        consumed=r[8],
        expired_tokens=r[9],
        expired=bool(r[10]),
    ),
)

LEDGER = Table(
    "ledger",
    (
        "seq",
        "time",
        "kind",
        "team_id",
        "pack_id",
        "amount",
        "remaining_delta",
        "held_delta",
        "session_id",
        "user_id",
        "product_id",
        "hash",
    ),
    ("seq",),
    lambda e: (
        e.seq,
        t2i(e.time),
        e.kind.value,
        e.team_id,
        e.pack_id,
        e.amount,
        e.remaining_delta,
        e.held_delta,
        e.cause.session_id,
        e.cause.user_id,
        e.cause.product_id,
        e.hash,
    ),
    lambda r: LedgerEntry(
        seq=r[0],
        time=_t(r[1]),
        kind=_ENTRY_KIND[r[2]],
        team_id=_s(r[3]),
        pack_id=r[4],
        amount=r[5],
        remaining_delta=r[6],
        held_delta=r[7],
        cause=Cause(r[8], r[9], r[10]),
        hash=r[11],
    ),
    append_only=True,
)

HOLDS = Table(
    "holds",
    ("hold_id", "team_id", "amount", "parts", "session_id", "user_id", "product_id", "time"),
    ("hold_id",),
    lambda h: (
        h.hold_id,
        h.team_id,
        h.amount,
        json.dumps(h.parts),
        h.cause.session_id,
        h.cause.user_id,
        h.cause.product_id,
        t2i(h.time),
    ),
    lambda r: Hold(
        hold_id=r[0],
        team_id=_s(r[1]),
        amount=r[2],
        parts=tuple((p, n) for p, n in json.loads(r[3])),
        cause=Cause(r[4], _s(r[5]), _s(r[6])),
        time=_t(r[7]),
    ),
)

PRODUCTS = Table(
    "products",
    (
        "product_id",
        "display_name",
        "daily_rate",
        "kind",
        "host_product_id",
        "idle_aware",
        "platforms",
        "min_linux_version",
    ),
    ("product_id",),
    lambda p: (
        p.product_id,
        p.display_name,
        p.daily_rate,
        p.kind.value,
        p.host_product_id,
        int(p.idle_aware),
        ",".join(sorted(x.value for x in p.platforms)),
        p.min_linux_version,
    ),
    lambda r: Product(
        product_id=_s(r[0]),
        display_name=r[1],
        daily_rate=r[2],
        kind=_PRODUCT_KIND[r[3]],
        host_product_id=_s(r[4]),
        idle_aware=bool(r[5]),
        platforms=frozenset(_PLATFORM[x] for x in r[6].split(",") if x),
        min_linux_version=r[7],
    ),
)

USERS = Table(
    "users",
    ("user_id", "display_name", "email", "key_hash"),
    ("user_id",),
    lambda u: (u.user_id, u.display_name, u.email, u.key_hash),
    _user,
)

MEMBERS = Table(
    "members",
    (
        "team_id",
        "user_id",
        "state",
        "guest",
        "all_products",
        "product_ids",
        "invitation_id",
        "join_time",
    ),
    ("team_id", "user_id"),
    lambda m: (
        m.team_id,
        m.user_id,
        m.state.value,
        int(m.guest),
        int(m.all_products),
        ids2s(m.product_ids),
        m.invitation_id,
        t2i(m.join_time),
    ),
    _member,
)

INVITATIONS = Table(
    "invitations",
    ("invitation_id", "team_id", "user_id", "token_hash", "send_time", "expire_time", "state"),
    ("invitation_id",),
    lambda i: (
        i.invitation_id,
        i.team_id,
        i.user_id,
        i.token_hash,
        t2i(i.send_time),
        t2i(i.expire_time),
        i.state.value,
    ),
    lambda r: Invitation(
        invitation_id=r[0],
        team_id=_s(r[1]),
        user_id=_s(r[2]),
        token_hash=bytes(r[3]),
        send_time=_t(r[4]),
        expire_time=_t(r[5]),
        state=_INVITATION_STATE[r[6]],
    ),
)

NOTIFICATIONS = Table(
    "notifications",
    ("notification_id", "team_id", "user_id", "email", "kind", "create_time", "invitation_token"),
    ("notification_id",),
    lambda n: (
        n.notification_id,
        n.team_id,
        n.user_id,
        n.email,
        n.kind.value,
        t2i(n.create_time),
        "",  # never stored: derived when the outbox is read (server/engine/access.py)
    ),
    lambda r: Notification(
        notification_id=r[0],
        team_id=_s(r[1]),
        user_id=_s(r[2]),
        email=_s(r[3]),
        kind=_NOTIFICATION_KIND[r[4]],
        create_time=_t(r[5]),
    ),
    append_only=True,
    order_by="ORDER BY seq",
)

SUBSCRIPTIONS = Table(
    "subscriptions",
    ("subscription_id", "user_id", "product_id", "kind", "start_time", "end_time"),
    ("subscription_id",),
    lambda s: (
        s.subscription_id,
        s.user_id,
        s.product_id,
        s.kind.value,
        t2i(s.start_time),
        t2i(s.end_time),
    ),
    lambda r: Subscription(
        subscription_id=r[0],
        user_id=_s(r[1]),
        product_id=_s(r[2]),
        kind=_SUBSCRIPTION_KIND[r[3]],
        start_time=_t(r[4]),
        end_time=_t(r[5]),
    ),
)

_fields_are(
    Session,
    (
        "session_id",
        "user_id",
        "team_id",
        "product_id",
        "product_version",
        "platform",
        "device_id",
        "parent_session_id",
        "request_id",
        "coverage",
        "plan",
        "daily_rate",
        "start_time",
        "lease_end",
        "last_activity",
        "state_since",
        "coverage_since",
        "state",
        "end_reason",
        "end_time",
    ),
)
_fields_are(
    Meter,
    (
        "team_id",
        "user_id",
        "product_id",
        "state",
        "grace_start",
        "grace_end",
        "window_start",
        "window_end",
        "hold_id",
    ),
)
_fields_are(Device, ("user_id", "product_id", "device_id", "register_time", "last_seen_time"))


def _session(r: Row) -> Session:
    t, share = (_instants, _share) if _sharing else (_fresh, _keep)
    end_reason, end_time = r[18], r[19]
    return Session(
        r[0],
        share(r[1], r[1]),
        share(r[2], r[2]),
        share(r[3], r[3]),
        share(r[4], r[4]),
        _PLATFORM[r[5]],
        r[6],
        r[7],
        r[8],
        _COVERAGE[r[9]],
        _PLAN[r[10]],
        r[11],
        t[r[12]],
        t[r[13]],
        t[r[14]],
        t[r[15]],
        t[r[16]],
        _SESSION_STATE[r[17]],
        None if end_reason is None else _END_REASON[end_reason],
        None if end_time is None else t[end_time],
    )


def _meter(r: Row) -> Meter:
    t, share = (_instants, _share) if _sharing else (_fresh, _keep)
    grace_start, grace_end, window_start, window_end = r[4], r[5], r[6], r[7]
    return Meter(
        share(r[0], r[0]),
        share(r[1], r[1]),
        share(r[2], r[2]),
        _CHARGE_STATE[r[3]],
        None if grace_start is None else t[grace_start],
        None if grace_end is None else t[grace_end],
        None if window_start is None else t[window_start],
        None if window_end is None else t[window_end],
        r[8],
    )


def _device(r: Row) -> Device:
    t, share = (_instants, _share) if _sharing else (_fresh, _keep)
    return Device(share(r[0], r[0]), share(r[1], r[1]), r[2], t[r[3]], t[r[4]])


# Their encoders run for every change handed to the store (a heartbeat flush of
# a million sessions: two million rows): an instant a row holds more than once
# (a session's start is its state's and its coverage's start until they move)
# is converted once, and an Enum's value is read as ``_value_`` (``.value`` is
# a property, three times slower).


def _session_row(s: Session) -> Row:
    start = s.start_time
    start_us = t2i(start)
    since, covered, end_reason, end_time = s.state_since, s.coverage_since, s.end_reason, s.end_time
    return (
        s.session_id,
        s.user_id,
        s.team_id,
        s.product_id,
        s.product_version,
        s.platform._value_,
        s.device_id,
        s.parent_session_id,
        s.request_id,
        s.coverage._value_,
        s.plan._value_,
        s.daily_rate,
        start_us,
        t2i(s.lease_end),
        start_us if s.last_activity is start else t2i(s.last_activity),
        start_us if since is start else t2i(since),
        start_us if covered is start else t2i(covered),
        s.state._value_,
        None if end_reason is None else end_reason._value_,
        None if end_time is None else t2i(end_time),
    )


def _meter_row(m: Meter) -> Row:
    grace_start, grace_end, window_start, window_end = (
        m.grace_start,
        m.grace_end,
        m.window_start,
        m.window_end,
    )
    return (
        m.team_id,
        m.user_id,
        m.product_id,
        m.state._value_,
        None if grace_start is None else t2i(grace_start),
        None if grace_end is None else t2i(grace_end),
        None if window_start is None else t2i(window_start),
        None if window_end is None else t2i(window_end),
        m.hold_id,
    )


def _device_row(d: Device) -> Row:
    seen = d.last_seen_time
    registered = t2i(d.register_time)
    return (
        d.user_id,
        d.product_id,
        d.device_id,
        registered,
        registered if seen is d.register_time else t2i(seen),
    )


SESSIONS = Table(
    "sessions",
    (
        "session_id",
        "user_id",
        "team_id",
        "product_id",
        "product_version",
        "platform",
        "device_id",
        "parent_session_id",
        "request_id",
        "coverage",
        "plan",
        "daily_rate",
        "start_time",
        "lease_end",
        "last_activity",
        "state_since",
        "coverage_since",
        "state",
        "end_reason",
        "end_time",
    ),
    ("session_id",),
    _session_row,
    _session,
    # Live sessions, and ended ones of the last days (M11 and M12 answer them).
    load_where=(
        "WHERE end_time IS NULL OR end_time >= "
        "(SELECT COALESCE(MAX(end_time), 0) FROM sessions) - 7 * 86400 * 1000000"
    ),
    order_by="ORDER BY session_id",
)

METERS = Table(
    "meters",
    (
        "team_id",
        "user_id",
        "product_id",
        "state",
        "grace_start",
        "grace_end",
        "window_start",
        "window_end",
        "hold_id",
    ),
    ("team_id", "user_id", "product_id"),
    _meter_row,
    _meter,
)

DEVICES = Table(
    "devices",
    ("user_id", "product_id", "device_id", "register_time", "last_seen_time"),
    ("user_id", "product_id", "device_id"),
    _device_row,
    _device,
)

ACTIVITY = Table(
    "activity",
    ("session_id", "team_id", "user_id", "product_id", "start_time", "end_time"),
    ("session_id", "start_time"),
    lambda a: (a.session_id, a.team_id, a.user_id, a.product_id, t2i(a.start), t2i(a.end)),
    lambda r: ActivitySpan(
        session_id=r[0],
        team_id=_s(r[1]),
        user_id=_s(r[2]),
        product_id=_s(r[3]),
        start=_t(r[4]),
        end=_t(r[5]),
    ),
    append_only=True,
)

# Which table each durable type is written to. Loaded at start in this order.
TABLES: dict[type, Table] = {
    Team: TEAMS,
    Product: PRODUCTS,
    TokenPack: PACKS,
    Hold: HOLDS,
    LedgerEntry: LEDGER,
    User: USERS,
    Member: MEMBERS,
    Invitation: INVITATIONS,
    Notification: NOTIFICATIONS,
    Subscription: SUBSCRIPTIONS,
    Session: SESSIONS,
    Meter: METERS,
    Device: DEVICES,
    ActivitySpan: ACTIVITY,
}

# History that stays on disk: read on demand, not loaded into memory at start.
NOT_LOADED: frozenset[str] = frozenset({"ledger", "activity"})


META = Table(
    "meta",
    ("key", "value"),
    ("key",),
    lambda m: (m.key, m.value),
    lambda r: MetaValue(r[0], r[1]),
)
TABLES[MetaValue] = META
