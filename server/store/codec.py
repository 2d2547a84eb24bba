"""How each durable domain object becomes a row and comes back.

One ``Table`` per persisted type. ``to_row`` runs at once when a change is
handed to the store (so later changes in memory cannot leak into it);
``from_row`` runs when the state loads at start.

Where a type's fields and its table's columns match one to one (most of them:
sessions, devices, members...), ``mapped`` derives the columns and
both conversions from ``dataclasses.fields``, converting each column by its
field's type (``_column``): adding a field to such a type is one change here
(none) besides the migration that adds its column. Fields whose metadata is
``DERIVED`` (``server/domain/changes.py``) are indexes rebuilt on restore,
never stored. Only the tables whose rows differ from their objects (the
ledger and holds spread a ``Cause`` over three columns, a meter keeps in one
pair of instants what its table keeps in two, a notification never stores its
token) are written out by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import Field, dataclass, field, fields
from datetime import datetime
from enum import Enum
from functools import lru_cache
from types import NoneType, UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import orjson

from server.domain.admins import AdminKey, AuditEvent, AuditTeam
from server.domain.coverage import Subscription
from server.domain.directory import (
    Invitation,
    Member,
    Notification,
    NotificationKind,
    User,
)
from server.domain.instants import MICROSECOND, instant, micros
from server.domain.ledger import Cause, EntryKind, Hold, LedgerEntry, TokenPack, shared_parts
from server.domain.meta import MetaValue, OlderLoaded
from server.domain.products import Product
from server.domain.sessions import (
    ENDED_KEPT,
    ActivitySpan,
    ChargeState,
    Device,
    Meter,
    Session,
)
from server.domain.teams import Team
from server.store.schema import RECENT_BOUND_SQL, SESSIONS_BOUND_SQL

Row = tuple[Any, ...]
_E = TypeVar("_E", bound=Enum)


t2i = micros  # an instant as the store keeps it
i2t = instant  # and back


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
        t = self[us] = instant(us)
        return t


class _FreshInstants(dict[int, datetime]):
    """The same reads, outside ``sharing()``: a new instant each time, none kept."""

    def __missing__(self, us: int) -> datetime:
        return instant(us)


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
    return _instants[us] if _sharing else instant(us)


def _opt_t(us: int | None) -> datetime | None:
    return None if us is None else _t(us)


def _s(s: str) -> str:
    return _share(s, s) if _sharing else s


_ENTRY_KIND = _by_value(EntryKind)
_NOTIFICATION_KIND = _by_value(NotificationKind)


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
    # More of them, by a second WHERE (with UNION ALL: each part read by its index).
    load_also: str = ""
    # How many leading columns ``from_row`` reads (all by default): the columns
    # after them are written for readers of the table and derived in memory.
    read: int = 0
    # Columns set when the row is inserted and never changed after, which an upsert
    # leaves alone. SQLite rewrites the index entries of every column an upsert
    # sets, changed or not: a session's heartbeat wrote a page of its
    # ``sessions_team_start`` index besides its own. (That the engine never
    # changes them is checked over random histories:
    # tests/domain/test_licensing_properties.py.)
    fixed: tuple[str, ...] = ()
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
            # columns it sets (not ``fixed`` ones); INSERT OR REPLACE would delete
            # the row and insert it anew, every index with it (a quarter more time
            # for a million sessions).
            kept = [c for c in self.columns if c not in self.key and c not in self.fixed]
            sets = ", ".join(f"{c} = excluded.{c}" for c in kept)
            action = f"DO UPDATE SET {sets}" if sets else "DO NOTHING"
            upsert += f" ON CONFLICT ({', '.join(self.key)}) {action}"
        init = object.__setattr__  # frozen: set once, here
        init(self, "upsert_sql", upsert)
        init(self, "delete_sql", f"DELETE FROM {self.name} WHERE {where}")
        read = ", ".join(self.columns[: self.read or len(self.columns)])
        init(self, "select_sql", f"SELECT {read} FROM {self.name}")
        init(self, "key_positions", tuple(self.columns.index(k) for k in self.key))
        n = len(self.key)
        init(self, "key_prefix", n if self.columns[:n] == self.key else 0)

    def load_sql(self, order_by: str) -> str:
        """The statement that reads the rows a start loads, in ``order_by``'s order."""
        also = f" UNION ALL {self.select_sql} {self.load_also}" if self.load_also else ""
        return f"{self.select_sql} {self.load_where}{also} {order_by}"

    def key_of(self, row: Row) -> Row:
        """The primary key's values of a full row."""
        if self.key_prefix:
            return row[: self.key_prefix]
        return tuple(row[i] for i in self.key_positions)


# -- tables derived from their dataclass ----------------------------------------------
#
# ``mapped`` writes the two conversions of a type as Python source, one
# expression per column, and compiles them once at import (as ``dataclasses``
# writes ``__init__``): a generic loop over the columns would be twice as slow,
# and a million sessions are loaded, and two million rows written per heartbeat
# flush. The source is what the hand-written codecs were: the constructor
# called with positional arguments (a third faster than by keyword); an
# instant a row holds more than once (a session's start is its state's and its
# coverage's start until they move) converted once; an Enum's value read as
# ``_value_`` (``.value`` is a property, three times slower); and, while
# ``sharing()``, the instants and the ids in ``SHARED`` made one object each.

# Ids that many rows repeat (a user's id is in the users, members, sessions,
# meters and devices tables): one string each while the state loads. Per-row
# ids (session, device, request ids) are not looked up.
SHARED = frozenset(
    {"user_id", "team_id", "product_id", "product_version", "email", "host_product_id"}
)


@dataclass(frozen=True, slots=True)
class _Column:
    """How one field becomes a column: two expressions over ``{}`` (the value)."""

    encode: str
    decode: str
    instant: bool = False  # a datetime (reuses the row's first instant when it is that one)


def _column(name: str, hint: Any, names: dict[str, Any]) -> _Column:
    """The conversion of a field of type ``hint``; constants the expressions
    need go into ``names``. A type with no conversion here fails at import:
    give its table explicit converters."""
    args = get_args(hint)
    if get_origin(hint) in (UnionType, Union) and len(args) == 2 and NoneType in args:
        inner = _column(name, next(a for a in args if a is not NoneType), names)
        if inner.encode == inner.decode == "{}":
            return inner  # None is stored as itself
        return _Column(
            f"None if (x := {{}}) is None else {inner.encode.format('x')}",
            f"None if (x := {{}}) is None else {inner.decode.format('x')}",
            inner.instant,
        )
    if hint is str:
        return _Column("{}", "share({0}, {0})" if name in SHARED else "{}")
    if hint is int or hint is float:
        return _Column("{}", "{}")
    if hint is bool:
        return _Column("int({})", "bool({})")
    if hint is bytes:
        return _Column("{}", "bytes({})")
    if hint is datetime:
        return _Column("t2i({})", "t[{}]", instant=True)
    if isinstance(hint, type) and issubclass(hint, Enum):
        names[f"_{hint.__name__}"] = _by_value(hint)
        return _Column("{}._value_", f"_{hint.__name__}[{{}}]")
    if get_origin(hint) is frozenset and args == (str,):
        return _Column("ids2s({})", "s2ids({})")
    if get_origin(hint) is frozenset and isinstance(args[0], type) and issubclass(args[0], Enum):
        kind = args[0].__name__
        names[f"_{kind}"] = _by_value(args[0])
        return _Column(
            "','.join(sorted([v._value_ for v in {}]))",
            f"frozenset([_{kind}[v] for v in {{}}.split(',') if v])",
        )
    raise TypeError(f"no column conversion for {name}: {hint!r}; write its table out by hand")


def _stored(kind: type) -> list[Field[Any]]:
    """The fields that are columns: all but the ``DERIVED`` ones."""
    return [f for f in fields(kind) if not f.metadata.get("derived")]


def _codecs(
    kind: type, computed: dict[str, Any] | None = None
) -> tuple[Callable[[Any], Row], Callable[[Row], Any]]:
    """``to_row`` and ``from_row`` of ``kind``, compiled from its fields, then
    the ``computed`` columns (name: type): properties written with the row,
    never read back (the object derives them from its fields)."""
    hints = get_type_hints(kind)
    stored = _stored(kind)
    init = [f.name for f in fields(kind) if f.init]
    names: dict[str, Any] = {"K": kind}
    written = [f.name for f in stored] + list(computed or {})
    columns = [_column(f.name, hints[f.name], names) for f in stored] + [
        _column(name, hint, names) for name, hint in (computed or {}).items()
    ]
    first = next((i for i, c in enumerate(columns) if c.encode == "t2i({})"), None)
    encode: list[str] = []
    decode: list[str] = []
    for i, (name, c) in enumerate(zip(written, columns, strict=True)):
        value = f"o.{name}"
        if c.instant and first is not None and i > first:
            reuse = "i0 if x is v0 else t2i(x)"
            expr = f"(i0 if (x := {value}) is v0 else t2i(x))"
            if c.encode.startswith("None"):
                expr = f"(None if (x := {value}) is None else {reuse})"
        elif i == first:
            expr = "i0"
        else:
            expr = c.encode.format(value)
            expr = f"({expr})" if c.encode.startswith("None") else expr
        encode.append(expr)
        if i >= len(stored):
            continue  # computed: not an argument of the constructor
        arg = c.decode.format(f"r[{i}]")
        arg = f"({arg})" if c.decode.startswith("None") else arg
        positional = i < len(init) and init[i] == name and len(decode) == i
        decode.append(arg if positional else f"{name}={arg}")
    prologue = f"v0 = o.{written[first]}; i0 = t2i(v0)\n        " if first is not None else ""
    lines = ",\n            ".join
    source = f"""
def make({", ".join(names)}):
    def to_row(o):
        {prologue}return (
            {lines(encode)},
        )

    def from_row(r):
        t, share = (_instants, _share) if _sharing else (_fresh, _keep)
        return K(
            {lines(decode)},
        )

    return to_row, from_row
"""
    made: dict[str, Any] = {}
    exec(compile(source, f"<codec of {kind.__name__}>", "exec"), globals(), made)  # noqa: S102
    to_row, from_row = made["make"](**names)
    return to_row, from_row


def mapped(
    name: str,
    kind: type,
    key: tuple[str, ...],
    *,
    rename: dict[str, str] | None = None,
    computed: dict[str, Any] | None = None,
    append_only: bool = False,
    order_by: str = "",
    load_where: str = "",
    load_also: str = "",
    fixed: tuple[str, ...] = (),
) -> Table:
    """The table of ``kind``: a column per stored field, named as the field
    (or as ``rename`` says), then one per ``computed`` property."""
    rename = rename or {}
    to_row, from_row = _codecs(kind, computed)
    stored = tuple(rename.get(f.name, f.name) for f in _stored(kind))
    return Table(
        name,
        stored + tuple(computed or {}),
        key,
        to_row,
        from_row,
        append_only=append_only,
        order_by=order_by,
        load_where=load_where,
        load_also=load_also,
        read=len(stored),
        fixed=fixed,
    )


TEAMS = mapped("teams", Team, ("team_id",))
PACKS = mapped("packs", TokenPack, ("pack_id",))
PRODUCTS = mapped("products", Product, ("product_id",))
USERS = mapped("users", User, ("user_id",))
MEMBERS = mapped("members", Member, ("team_id", "user_id"))
INVITATIONS = mapped("invitations", Invitation, ("invitation_id",))
SUBSCRIPTIONS = mapped("subscriptions", Subscription, ("subscription_id",))
# Ended sessions loaded at start: those memory keeps (a week was loaded, of which the
# engine's first pass let go all but these 2 days ten minutes later).
ENDED_LOADED_US = ENDED_KEPT // MICROSECOND
# Live sessions, and ended ones of the last days (M11 and M12 answer them). The span
# is a literal computed here: PostgreSQL would compute `2 * 86400 * 1000000` in 32
# bits and overflow. (``IS NOT NULL`` lets SQLite take MAX from its partial index
# ``sessions_end``, which holds ended sessions only: schema.py, 8.)
SESSIONS_LOADED = (
    f"(end_time IS NULL OR end_time >= (SELECT COALESCE(MAX(end_time), 0) FROM sessions "
    f"WHERE end_time IS NOT NULL) - {ENDED_LOADED_US})"
)
# Those of them at or after the release before's stored bound (all of them before one
# is stored: ``SESSIONS_FROM_KEY``), by the key's index: what that release loads.
SESSIONS_LOADED_FROM = f"WHERE session_id >= ({SESSIONS_BOUND_SQL}) AND {SESSIONS_LOADED}"
SESSIONS = mapped(
    "sessions",
    Session,
    ("session_id",),
    # When it ended is when its state (ENDED) began, and its lease ends LEASE
    # after it began (M7): columns for the readers of the table, derived in memory.
    computed={"end_time": datetime | None, "lease_end": datetime},
    # This release's: those at or after its recent bound, by the key's index, and
    # the few below it named in ``sessions_older_loaded`` (``SESSIONS_RECENT_FROM_KEY``):
    # not every session stored since the oldest live one opened (one live for a
    # month: a month of a busy server's), nor every one ever stored.
    load_where=f"WHERE session_id >= ({RECENT_BOUND_SQL}) AND {SESSIONS_LOADED}",
    load_also=(
        "WHERE session_id IN (SELECT session_id FROM sessions_older_loaded "
        f"WHERE session_id < ({RECENT_BOUND_SQL})) AND {SESSIONS_LOADED}"
    ),
    order_by="ORDER BY session_id",
    # ``sessions_team_start``'s columns: a session's team and start are decided
    # at Entitle. (``end_time``, in ``sessions_end``, is set, but that index holds
    # ended sessions only, so a live session's NULL end writes none of it.)
    fixed=("team_id", "start_time"),
)
DEVICES = mapped("devices", Device, ("user_id", "product_id", "device_id"))
ACTIVITY = mapped(
    "activity",
    ActivitySpan,
    ("session_id", "start_time"),
    rename={"start": "start_time", "end": "end_time"},
    append_only=True,
)
META = mapped("meta", MetaValue, ("key",))
OLDER_LOADED = mapped("sessions_older_loaded", OlderLoaded, ("session_id",))
ADMIN_KEYS = mapped("admin_keys", AdminKey, ("admin_key_id",))
AUDIT_EVENTS = mapped("audit_events", AuditEvent, ("seq",), append_only=True)
# An event's teams past its first two (``AuditEvent.more_team_ids``), one row each.
AUDIT_TEAMS = mapped("audit_teams", AuditTeam, ("team_id", "seq"), append_only=True)

# -- tables written out by hand (their rows are not their fields) ------------------------

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
        orjson.dumps(h.parts).decode(),  # json.dumps: 2.4 % of an Entitle's loop
        h.session_id,
        h.user_id,
        h.product_id,
        t2i(h.time),
    ),
    lambda r: Hold(
        hold_id=r[0],
        team_id=_s(r[1]),
        amount=r[2],
        parts=shared_parts(tuple((p, n) for p, n in orjson.loads(r[3]))),
        # A meter's hold is named after its session (one string for both)
        session_id=r[0] if r[4] == r[0] else r[4],
        user_id=_s(r[5]),
        product_id=_s(r[6]),
        time=_t(r[7]),
    ),
)

# A meter keeps one pair of instants for its grace or its window (whichever its
# state says); the table keeps the four columns it always had, so that a row
# says what it is without its state, and the hold id (its hold is found by the
# meter's key on load: ``server/domain/meters.py``, ``holds_by_meter``).
_CHARGE_STATE = _by_value(ChargeState)


def _meter_row(m: Meter) -> Row:
    return (
        m.team_id,
        m.user_id,
        m.product_id,
        m.state._value_,
        opt_t2i(m.grace_start),  # the meter's own properties say which pair it is
        opt_t2i(m.grace_end),
        opt_t2i(m.window_start),
        opt_t2i(m.window_end),
        m.hold_id,
    )


def _meter(r: Row) -> Meter:
    # As the compiled decoders (``_codecs``): the sharing flag read once a row,
    # not once a value through ``_s`` and ``_opt_t`` (a million meters at a restart).
    t, share = (_instants, _share) if _sharing else (_fresh, _keep)
    start, end = (r[4], r[5]) if r[4] is not None else (r[6], r[7])
    return Meter(
        share(r[0], r[0]),
        share(r[1], r[1]),
        share(r[2], r[2]),
        _CHARGE_STATE[r[3]],
        None if start is None else t[start],
        None if end is None else t[end],
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
    read=8,  # not hold_id: a meter's hold is found by the meter's key
)

NOTIFICATIONS = Table(
    "notifications",
    (
        "notification_id",
        "team_id",
        "user_id",
        "email",
        "kind",
        "create_time",
        "invitation_token",
        "pack_id",
        "tokens",
        "expire_time",
        "product_id",
    ),
    ("notification_id",),
    lambda n: (
        n.notification_id,
        n.team_id,
        n.user_id,
        n.email,
        n.kind.value,
        t2i(n.create_time),
        "",  # never stored: derived when the outbox is read (server/engine/access.py)
        n.pack_id,
        n.tokens,
        opt_t2i(n.expire_time),
        n.product_id,
    ),
    lambda r: Notification(
        notification_id=r[0],
        team_id=_s(r[1]),
        user_id=_s(r[2]),
        email=_s(r[3]),
        kind=_NOTIFICATION_KIND[r[4]],
        create_time=_t(r[5]),
        pack_id=r[7],
        tokens=r[8],
        expire_time=_opt_t(r[9]),
        product_id=_s(r[10]),
    ),
    append_only=True,
    order_by="ORDER BY seq",
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
    MetaValue: META,
    OlderLoaded: OLDER_LOADED,
    AdminKey: ADMIN_KEYS,
    AuditEvent: AUDIT_EVENTS,
    AuditTeam: AUDIT_TEAMS,
}

# History that stays on disk: read on demand, not loaded into memory at start.
NOT_LOADED: frozenset[str] = frozenset({"ledger", "activity", "audit_events", "audit_teams"})
