"""The codec (issue 13, point 1): where a type's fields and its table's columns
match one to one, the columns and both conversions come from
``dataclasses.fields``, so that adding a field to Session is one change (and a
migration), not six."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path

import pytest

from server.domain.changes import DERIVED
from server.domain.products import Platform
from server.domain.sessions import EndReason, Session
from server.store import codec
from server.store.schema import MIGRATIONS
from tests.store.builders import a_session

T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)
# The tables whose rows are not their fields, written out by hand.
BY_HAND = {"ledger", "holds", "meters", "notifications"}


def _schema_columns(tmp_path: Path) -> dict[str, list[str]]:
    db = sqlite3.connect(tmp_path / "schema.db")
    try:
        for script in MIGRATIONS:
            db.executescript(script)
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: [r[1] for r in db.execute(f"PRAGMA table_info({n})")] for n in names}
    finally:
        db.close()


def test_codec_session_columns_are_its_stored_fields() -> None:
    stored = [f.name for f in fields(Session) if not f.metadata.get("derived")]
    # then end_time and lease_end, computed: when the ENDED state began (M10) and
    # LEASE after the lease began (M7), one slot and one datetime fewer in memory
    assert codec.SESSIONS.columns == (*stored, "end_time", "lease_end")
    assert len(stored) == 19
    assert {"meter", "device", "due"}.isdisjoint(codec.SESSIONS.columns)
    # written, not read back at start: a session's end is its ENDED state's start,
    # its lease's end LEASE after its start
    read = codec.SESSIONS.select_sql.removeprefix("SELECT ").removesuffix(" FROM sessions")
    assert read.split(", ") == stored


def test_codec_every_mapped_table_is_its_types_fields_and_exists_in_the_schema(
    tmp_path: Path,
) -> None:
    schema = _schema_columns(tmp_path)
    mapped = 0
    for kind, table in codec.TABLES.items():
        assert set(table.columns) <= set(schema[table.name]), table.name
        if table.name in BY_HAND:
            continue
        names = [f.name for f in fields(kind) if not f.metadata.get("derived")]
        names += ["end_time", "lease_end"] if table.name == "sessions" else []
        renamed = {"start": "start_time", "end": "end_time"} if table.name == "activity" else {}
        assert table.columns == tuple(renamed.get(n, n) for n in names), table.name
        mapped += 1
    assert mapped == 15


def test_m3_m5_a_meter_row_keeps_its_grace_and_its_window_in_their_own_columns() -> None:
    """A meter holds one pair of instants, the grace's or the window's as its
    state says; its row keeps the four columns apart, and reads back the same."""
    from server.domain.sessions import ChargeState, Meter

    us = codec.t2i(T0)
    five, day = 300_000_000, 86_400_000_000
    cases = [
        (Meter("acme", "ann", "ACAD"), (None, None, None, None)),
        (Meter("acme", "ann", "ACAD", ChargeState.GRACE, T0, T0 + timedelta(minutes=5)),
         (us, us + five, None, None)),
        (Meter("acme", "ann", "ACAD", ChargeState.CHARGED, T0, T0 + timedelta(days=1)),
         (None, None, us, us + day)),
    ]  # fmt: skip
    for meter, instants in cases:
        row = codec.METERS.to_row(meter)
        assert row == ("acme", "ann", "ACAD", meter.state.value, *instants, "")
        assert "hold_id" not in codec.METERS.select_sql  # found by the meter's key
        back = codec.METERS.from_row(row)
        assert (back.state, back.start, back.end) == (meter.state, meter.start, meter.end)
        assert (back.grace_start, back.grace_end, back.window_start, back.window_end) == (
            meter.grace_start, meter.grace_end, meter.window_start, meter.window_end,
        )  # fmt: skip


class Shade(Enum):
    DARK = "DARK"
    LIGHT = "LIGHT"


@dataclass(slots=True, eq=False)
class Swatch:
    """A type the codec has never seen, with a field of every kind it converts."""

    swatch_id: str
    team_id: str  # shared while loading
    count: int
    ratio: float
    glossy: bool
    blob: bytes
    made: datetime
    seen: datetime
    shade: Shade
    tags: frozenset[str]
    platforms: frozenset[Platform]
    note: str | None = None
    faded: datetime | None = None
    tint: Shade | None = None
    digest: bytes | None = None
    index: object = field(default=None, repr=False, metadata=DERIVED)


def _values(obj: object) -> tuple[object, ...]:
    return tuple(getattr(obj, f.name) for f in fields(obj) if not f.metadata.get("derived"))  # type: ignore[arg-type]


def test_codec_a_new_type_needs_no_converter_of_its_own() -> None:
    """Adding a field of a known kind (here a whole new type) changes nothing
    in the codec: its column and conversions follow from its type."""
    table = codec.mapped("swatches", Swatch, ("swatch_id",))
    assert table.columns[:3] == ("swatch_id", "team_id", "count")
    assert "index" not in table.columns and len(table.columns) == 15
    full = Swatch(
        "sw1", "acme", 3, 0.5, True, b"\x00\x01", T0, T0, Shade.DARK,
        frozenset({"b", "a"}), frozenset({Platform.LINUX, Platform.WINDOWS}),
        "n", T0 + timedelta(hours=1), Shade.LIGHT, b"d",
    )  # fmt: skip
    bare = Swatch(
        "sw2", "acme", 0, 0.0, False, b"", T0, T0 + timedelta(seconds=1), Shade.LIGHT,
        frozenset(), frozenset(),
    )  # fmt: skip
    row = table.to_row(full)
    us = codec.t2i(T0)
    assert row == (
        "sw1", "acme", 3, 0.5, 1, b"\x00\x01", us, us, "DARK", "a,b", "LINUX,WINDOWS",
        "n", us + 3_600_000_000, "LIGHT", b"d",
    )  # fmt: skip
    assert table.to_row(bare)[-4:] == (None, None, None, None)
    for obj in (full, bare):
        back = table.from_row(table.to_row(obj))
        assert type(back) is Swatch and _values(back) == _values(obj)
        assert type(back.glossy) is bool and back.index is None


def test_codec_a_type_it_cannot_convert_fails_at_import() -> None:
    @dataclass
    class Odd:
        odd_id: str
        parts: list[int]

    with pytest.raises(TypeError, match="parts"):
        codec.mapped("odd", Odd, ("odd_id",))


def _session(i: int, start: datetime) -> Session:
    return a_session(
        f"ses_{i}",
        start,
        ended=start + timedelta(hours=1),
        device_id=f"d{i}",
        request_id=f"r{i}",
        lease_start=start + timedelta(minutes=15),
    )


def test_codec_loading_shares_repeated_ids_and_instants_not_per_row_ids() -> None:
    """While the state loads, equal ids in ``SHARED`` and equal instants come
    back as one object each (a million sessions' memory), per-row ids as read."""
    table = codec.SESSIONS
    # as a database hands them back: every string a new object
    rows = [
        tuple(v.encode().decode() if isinstance(v, str) else v for v in table.to_row(s))
        for s in (_session(1, T0), _session(2, T0))
    ]
    assert rows[0][1] is not rows[1][1]
    with codec.sharing():
        a, b = (table.from_row(r) for r in rows)
    assert a.user_id is b.user_id and a.team_id is b.team_id and a.product_id is b.product_id
    assert a.start_time is b.start_time and a.start_time is a.coverage_since
    assert a.session_id == "ses_1" and b.session_id == "ses_2"
    assert a.end_reason is EndReason.RELEASED and a.end_time == T0 + timedelta(hours=1)
    # outside ``sharing()`` nothing is kept
    c, d = (table.from_row(r) for r in rows)
    assert c.start_time == d.start_time and c.start_time is not d.start_time
    assert c.user_id == d.user_id and c.user_id is not d.user_id
