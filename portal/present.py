"""How the portal shows what AdminService answers: numbers, times, enum words, the usage
chart's series and the CSV. Pure functions of the messages, tested without a browser."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from markupsafe import Markup, escape

from tessera_api.tessera.v1 import common_pb2

CSV_HEADER = (
    "date",
    "user_id",
    "user_name",
    "product_id",
    "product_name",
    "tokens_charged",
    "sessions",
    "active_seconds",
)


def number(value: int | float) -> str:
    """``1234567`` as ``1,234,567``; a fraction keeps one decimal (``2.5``), and one
    under a tenth two significant digits (``0.033``: a token a month is no ``0.0``)."""
    if isinstance(value, float) and not value.is_integer():
        if abs(value) < 0.1:
            return f"{value:.2g}"
        return f"{value:,.1f}"
    return f"{int(value):,}"


def when(ts: Timestamp | datetime | None) -> Markup:
    """A ``<time>`` in UTC, which the page's script shows in the reader's own zone, with
    the UTC instant on hover; a dash for an unset time."""
    if ts is None or (isinstance(ts, Timestamp) and not ts.seconds and not ts.nanos):
        return Markup("&mdash;")
    t = ts if isinstance(ts, datetime) else ts.ToDatetime(tzinfo=UTC)
    t = t.astimezone(UTC).replace(microsecond=0)
    shown = t.strftime("%Y-%m-%d %H:%M UTC")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        t.isoformat().replace("+00:00", "Z"), shown, shown
    )


def word(enum_value_name: str, prefix: str) -> str:
    """``PACK_STATE_ACTIVE`` with prefix ``PACK_STATE_`` as ``active``."""
    return enum_value_name.removeprefix(prefix).replace("_", " ").lower()


def enum_word(enum: object, value: int, prefix: str) -> str:
    name = enum.Name(value)  # type: ignore[attr-defined]
    return word(str(name), prefix)


def products_text(ids: Iterable[str], names: Mapping[str, str]) -> str:
    shown = [names.get(i, i) for i in ids]
    return ", ".join(shown) if shown else "none"


#: The whole numbers the server takes, as (lowest, highest): a purchase (RULES T1), an int64
#: field that must not be negative (a rate, a threshold), an int32 one (a Linux release).
TOKENS = (1, 1_000_000_000)
INT64 = (0, 2**63 - 1)
INT32 = (0, 2**31 - 1)
#: ASCII digits only ('²'.isdigit() is True), bare or with a comma between each three
#: (``1,500``): a comma anywhere else (``1,5``, ``2,50``, ``,7``, ``1,,0``) is a decimal
#: mark or a slip, never a number with the comma left out.
WHOLE = re.compile(r"-?(?:[0-9]{1,30}|[0-9]{1,3}(?:,[0-9]{3}){1,9})")

#: The days the usage page takes (a day after the last must still be a date).
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9998, 12, 31)
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def whole(text: str, limits: tuple[int, int], empty: int | None = None) -> int:
    """A whole number typed in a form (``1,500`` too: commas only between thousands)
    within ``limits``; ``empty`` when nothing was typed and that is allowed. ``ValueError``
    says, for the person, what to type instead."""
    typed = text.strip()
    if not typed and empty is not None:
        return empty
    low, high = limits
    value = int(typed.replace(",", "")) if WHOLE.fullmatch(typed) else None
    if value is not None and low <= value <= high:
        return value
    raise ValueError(f"Enter a whole number from {number(low)} to {number(high)}.")


def parse_day(text: str | None, default: date) -> date:
    """A ``YYYY-MM-DD`` from a form, from 1970 to 9998; ``default`` when empty.
    ``ValueError`` says what to type instead."""
    if not text:
        return default
    try:
        day = date.fromisoformat(text) if DAY.fullmatch(text) else None
    except ValueError:
        day = None
    if day is None or not FIRST_DAY <= day <= LAST_DAY:
        raise ValueError(
            f"enter each date as YYYY-MM-DD, from {FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()}"
        )
    return day


def day_start(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def days(start: date, end: date) -> list[str]:
    """Every day from ``start`` to ``end`` inclusive, as ``YYYY-MM-DD``."""
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


@dataclass
class Usage:
    """The usage page: the chart's stacked series and the per user and product table."""

    labels: list[str]
    datasets: list[dict[str, object]]
    table: list[dict[str, object]] = field(default_factory=list)

    def chart(self) -> dict[str, object]:
        return {"labels": self.labels, "datasets": self.datasets}


def usage(rows: Sequence[common_pb2.UsageRow], start: date, end: date) -> Usage:
    """Tokens charged per day (``start`` to ``end`` inclusive) stacked by product, and the
    figures per user and product over the range, from GetUsageReport's rows."""
    labels = days(start, end)
    index = {d: n for n, d in enumerate(labels)}
    series: dict[str, dict[str, object]] = {}
    totals: dict[tuple[str, str], dict[str, object]] = {}
    for row in rows:
        entry = series.setdefault(
            row.product_id,
            {
                "label": row.product_display_name or row.product_id,
                "product_id": row.product_id,
                "data": [0] * len(labels),
            },
        )
        data = entry["data"]
        if row.date in index and isinstance(data, list):
            data[index[row.date]] += row.tokens_charged
        total = totals.setdefault(
            (row.user_id, row.product_id),
            {
                "user_id": row.user_id,
                "user_name": row.user_display_name or row.user_id,
                "product_id": row.product_id,
                "product_name": row.product_display_name or row.product_id,
                "tokens_charged": 0,
                "sessions": 0,
                "active_seconds": 0,
            },
        )
        for key in ("tokens_charged", "sessions", "active_seconds"):
            total[key] = int(str(total[key])) + getattr(row, key)
    ordered = sorted(series.values(), key=lambda s: str(s["label"]).lower())
    table = sorted(totals.values(), key=lambda t: (str(t["user_name"]).lower(), t["product_name"]))
    return Usage(labels, ordered, table)


def usage_csv(rows: Sequence[common_pb2.UsageRow]) -> str:
    """GetUsageReport's rows as CSV, one line per day, user and product."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for r in rows:
        text = (r.date, r.user_id, r.user_display_name, r.product_id, r.product_display_name)
        writer.writerow((*(_cell(t) for t in text), r.tokens_charged, r.sessions, r.active_seconds))
    return out.getvalue()


def packs_bought_before(
    packs: Sequence[common_pb2.PackUsage], bought: Mapping[str, datetime], end: datetime
) -> list[common_pb2.PackUsage]:
    """The usage report's packs (each as it stands now, whatever the days asked) bought
    before ``end``, the end of the days shown: one bought later had nothing to do with
    them. ``bought`` holds the purchase times ListTokenPacks gives, of the packs the team
    holds now; one moved to another team since is not listed there, so its purchase is
    read from its expiry, a calendar year after it (RULES T1): the earliest it can have
    been (a purchase on 29 February expires on 28 February), so no pack of the days is
    ever left out."""
    return [p for p in packs if bought.get(p.pack_id, _earliest_purchase(p)) < end]


def _earliest_purchase(pack: common_pb2.PackUsage) -> datetime:
    expires = pack.expire_time.ToDatetime(tzinfo=UTC)
    try:
        return expires.replace(year=expires.year - 1)
    except ValueError:  # 29 February, which no expiry is (T1); a year before has none
        return expires.replace(year=expires.year - 1, day=28)


#: What a download's file name keeps of an id: anything else is an underscore.
FILE_PART = re.compile(r"[^A-Za-z0-9@._-]")


def file_part(text: str) -> str:
    """``text`` as a part of a download's file name (``usage-alpha-...-a_b@example.com``):
    ASCII letters, digits and ``@._-`` kept, anything else (a quote, a slash, a space, a
    letter outside ASCII, none of which a ``Content-Disposition`` header may carry as
    is) an underscore."""
    return FILE_PART.sub("_", text)


def _cell(text: str) -> str:
    """A text cell that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``: a
    name, but also a user id such as ``=1+2@example.com``) is quoted with a leading
    apostrophe (OWASP's CSV injection advice)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def duration(seconds: int) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours:,} h {rest // 60:02d} min" if hours else f"{rest // 60} min"


def escape_text(text: str) -> Markup:
    return escape(text)


def field_word(message: object, name: str) -> str:
    """The enum ``name`` of ``message`` in words: a pack's ``state`` ``PACK_STATE_ACTIVE``
    is ``active`` (the prefix is the enum's name in upper snake case)."""
    field = message.DESCRIPTOR.fields_by_name[name]  # type: ignore[attr-defined]
    enum = field.enum_type
    value = enum.values_by_number.get(getattr(message, name))
    if value is None or value.number == 0:
        return ""
    prefix = "".join("_" + c if c.isupper() else c.upper() for c in enum.name).lstrip("_") + "_"
    return word(value.name, prefix)


#: The ledger's kinds in an administrator's words, each with what it means (RULES T6; a
#: hold, its charge and its return are M2 and M3's).
LEDGER_KINDS = {
    "LEDGER_ENTRY_KIND_PURCHASE": ("bought", "tokens bought: a new pack"),
    "LEDGER_ENTRY_KIND_HOLD": (
        "held",
        "a day's rate set aside when a product starts being used: charged after 5 minutes "
        "of use, else given back",
    ),
    "LEDGER_ENTRY_KIND_CAPTURE": (
        "charged",
        "tokens set aside, now charged: the product was used for 5 minutes, which pays "
        "for 24 hours of it",
    ),
    "LEDGER_ENTRY_KIND_HOLD_RELEASE": (
        "hold returned",
        "tokens set aside, given back uncharged: for example, the product stopped or went "
        "idle before 5 minutes of use",
    ),
    "LEDGER_ENTRY_KIND_EXPIRY": ("expired", "tokens unused when their pack expired"),
    "LEDGER_ENTRY_KIND_MOVE_OUT": ("moved out", "the pack moved to another team"),
    "LEDGER_ENTRY_KIND_MOVE_IN": ("moved in", "the pack moved here from another team"),
}


def ledger_kind(entry: common_pb2.LedgerEntry) -> tuple[str, str]:
    """A ledger entry's kind in words, and what it means (for its hover and legend)."""
    known = common_pb2.LedgerEntryKind.DESCRIPTOR.values_by_number.get(entry.kind)
    if known is None:  # a kind of a newer server than this portal knows: no 500 for it
        return f"kind {entry.kind}", ""
    name = known.name if entry.kind else ""
    return LEDGER_KINDS.get(name, (word(name, "LEDGER_ENTRY_KIND_"), ""))


#: What an audit event's AdminService method did, in an administrator's words.
AUDIT_ACTIONS = {
    "AdvanceClock": "Moved the test clock",
    "CreateTeam": "Created the team",
    "UpdateTeamSettings": "Changed team settings",
    "PurchaseTokens": "Bought tokens",
    "MoveTokenPack": "Moved a token pack",
    "UpsertProduct": "Added or changed a product",
    "AssignUsers": "Assigned users",
    "ImportUsers": "Imported users",
    "UnassignUser": "Removed a member from the team",
    "SetUserProducts": "Changed a member's products",
    "SetDefaultAssignments": "Changed the default assignments",
    "ResendInvitation": "Sent an invitation again",
    "AcceptInvitation": "Accepted an invitation",
    "IssueUserKey": "Issued a user key",
    "GrantSubscription": "Granted a subscription",
    "StartTrial": "Started a trial",
    "EndSubscription": "Ended a subscription",
    "RemoveDevice": "Removed a device",
    "EndSession": "Ended a session",
    "CreateAdminKey": "Made an admin key",
    "RevokeAdminKey": "Revoked an admin key",
}


def audit_action(method: str) -> str:
    """``method`` in words (``AUDIT_ACTIONS``); one the portal does not know yet in
    words of its name (``PauseTeam``: "Pause team")."""
    if method in AUDIT_ACTIONS:
        return AUDIT_ACTIONS[method]
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", method).strip().lower()
    return spaced[:1].upper() + spaced[1:] if spaced else "Made a change"


Request = Mapping[str, object]


def audit_details(method: str, request: Request, names: Mapping[str, str]) -> str:
    """What an audit event's request changed, short and in words (``low-balance alert:
    1,000 tokens``), from the request the event carries as JSON (proto field names, an
    int64 as a string); empty when there is nothing to add to what and whom."""
    describe = _DETAILS.get(method)
    if describe is None or not request:
        return ""
    try:
        return "; ".join(part for part in describe(request, names) if part)
    except (TypeError, ValueError):  # a request of another shape (another version)
        return ""


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(value)
    return int(value) if not isinstance(value, str) else int(value.strip())


def _ids(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def names_of(product_id: object, names: Mapping[str, str]) -> str:
    """A product's display name (its id when the rate sheet has none)."""
    text = str(product_id or "")
    return names.get(text, text)


def _products(request: Request, names: Mapping[str, str]) -> str:
    if request.get("all_products"):
        return "all products"
    return "products: " + products_text(_ids(request.get("product_ids")), names)


def _team_settings(request: Request, names: Mapping[str, str]) -> list[str]:
    parts = []
    if "low_balance_threshold" in request:
        tokens = _count(request["low_balance_threshold"])
        parts.append(
            f"low-balance alert: {number(tokens)} tokens" if tokens else "low-balance alert: off"
        )
    if request.get("plan"):
        parts.append(f"plan: {word(str(request['plan']), 'PLAN_')}")
    if "guest_default_assignments" in request:
        given = "yes" if request["guest_default_assignments"] else "no"
        parts.append(f"guests get the default assignments: {given}")
    if request.get("display_name"):
        parts.append(f"name: {request['display_name']}")
    return parts


def _users(request: Request, names: Mapping[str, str]) -> list[str]:
    count = len(_ids(request.get("users")))
    guest = request.get("guest")
    # AssignUsers adds products and never takes one away: with none named it added none.
    named = request.get("all_products") or _ids(request.get("product_ids"))
    return [
        f"{count} user{'' if count == 1 else 's'}",
        _products(request, names) if named else "",
        "" if guest is None else ("as guests" if guest else "not as guests"),
    ]


def _product(request: Request, names: Mapping[str, str]) -> list[str]:
    product = request.get("product")
    if not isinstance(product, Mapping):
        return []
    rate = _count(product.get("daily_rate", 0))
    return [str(product.get("display_name", "")), f"{number(rate)} tokens a day"]


def _coverage(request: Request, names: Mapping[str, str]) -> list[str]:
    until = str(request.get("end_time", ""))[:10]
    return [names_of(request.get("product_id"), names), f"until {until}" if until else ""]


_DETAILS: dict[str, Callable[[Request, Mapping[str, str]], list[str]]] = {
    "CreateTeam": lambda r, n: [f"name: {r['display_name']}" if r.get("display_name") else ""],
    "UpdateTeamSettings": _team_settings,
    "PurchaseTokens": lambda r, n: [f"{number(_count(r.get('tokens', 0)))} tokens"],
    "MoveTokenPack": lambda r, n: [f"to team {r['to_team_id']}" if r.get("to_team_id") else ""],
    "UpsertProduct": _product,
    "AssignUsers": _users,
    "ImportUsers": _users,
    "SetUserProducts": lambda r, n: [_products(r, n)],
    "SetDefaultAssignments": lambda r, n: [
        _products(r, n) if _ids(r.get("product_ids")) else "default assignments off"
    ],
    "GrantSubscription": _coverage,
    "StartTrial": _coverage,
    "RemoveDevice": lambda r, n: [
        names_of(r.get("product_id"), n),
        f"of {r['user_id']}" if r.get("user_id") else "",
    ],
    "CreateAdminKey": lambda r, n: [f"teams: {', '.join(_ids(r.get('team_ids'))) or 'none'}"],
}
