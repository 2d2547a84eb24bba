"""Rows an older release writes on this release's schema (rev5-upgrade, point 1).

In a rolling upgrade on PostgreSQL a standby of the new release migrates the
database at its start while the older active serves on (docs/postgres.md,
"Upgrading"); on SQLite a release from before the refusal of newer schemas can be
run again on a migrated file. The older release's INSERTs leave out the columns
it does not know, which take their defaults (a session's ``lease_start`` 0: a lease
that ended in 1970; a pack's ``bought_by`` ''), and its upserts leave them as they
were (a lease it renewed keeps the start before). Each test writes rows that way
into a database this release made, with the server stopped, then starts this
release on it: the state it loads must be the one the older release served
(``schema.BACKFILLS``, run at every open to serve, before the load).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from server.config import parse_instant
from server.domain.sessions import Session
from server.store.codec import PACKS, SESSIONS, t2i
from server.store.port import NotLeader
from server.store.postgres import PostgresStore, numbered
from tests.licensing_desk import Desk, at, ended
from tests.pg import run_sync
from tests.store.builders import a_session
from tests.support import running

DAY_US = 86_400_000_000


def _sql(db: Path | str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """``sql`` (``?`` marks) on the stopped server's database, committed; its rows."""
    if isinstance(db, Path):
        conn = sqlite3.connect(db)
        try:
            with conn:
                return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(db)
        try:
            return [tuple(r) for r in await conn.fetch(numbered(sql), *params)]
        finally:
            await conn.close()

    return run_sync(run)


def _inserted_by_an_older_release(
    db: Path | str, columns: tuple[str, ...], table: str, key: str, value: str, new_column: str
) -> None:
    """The row of ``table`` whose ``key`` is ``value``, written again as a release
    without ``new_column`` writes it: an INSERT of every other column."""
    kept = [c for c in columns if c != new_column]
    names = ", ".join(kept)
    (row,) = _sql(db, f"SELECT {names} FROM {table} WHERE {key} = ?", (value,))  # noqa: S608
    _sql(db, f"DELETE FROM {table} WHERE {key} = ?", (value,))  # noqa: S608
    marks = ", ".join("?" for _ in kept)
    _sql(db, f"INSERT INTO {table} ({names}) VALUES ({marks})", row)  # noqa: S608


def _us(when: str) -> int:
    return t2i(parse_instant(when))


def _leases(db: Path | str) -> dict[str, tuple[int, int]]:
    rows = _sql(db, "SELECT session_id, lease_start, lease_end FROM sessions")
    return {sid: (start, end) for sid, start, end in rows}


def test_m7_h3_sessions_an_older_release_wrote_on_this_schema_keep_their_leases(
    database: Path | str,
) -> None:
    """M7 and H3: ann's session, opened by the older release (an INSERT without
    ``lease_start``), keeps its 24 h lease and its heartbeats; bob's, whose lease
    the older release renewed at 00:30 (``lease_end`` moved, ``lease_start`` left
    as it was), keeps the lease to 00:30 the next day. Before the back-fills ann's
    was ended LEASE_EXPIRED at the start (a lease that ended in 1970) and bob's at
    24:00, half an hour early."""
    with running(database) as srv:
        desk = Desk(srv.target)
        desk.sheet().team("alpha", 100)
        ann, bob = desk.user("alpha", "ann"), desk.user("alpha", "bob")
        anns = desk.entitle(ann, "REVIT")["session_id"]  # not idle-aware: ACTIVE throughout
        bobs = desk.entitle(bob, "REVIT")["session_id"]
        desk.to(at(m=30))
        keys = dict(desk.keys)
        desk.close()
    _inserted_by_an_older_release(
        database, SESSIONS.columns, "sessions", "session_id", anns, "lease_start"
    )
    _sql(
        database,
        "UPDATE sessions SET lease_end = ?, last_activity = ? WHERE session_id = ?",
        (_us(at(d=1, m=30)), _us(at(m=30)), bobs),
    )
    assert _leases(database) == {
        anns: (0, _us(at(d=1))),
        bobs: (_us(at()), _us(at(d=1, m=30))),
    }

    with running(database) as srv:
        desk = Desk(srv.target)
        desk.keys.update(keys)
        try:
            listed = {
                s["session_id"]: (s["state"], s.get("end_reason"), s.get("lease_expire_time"))
                for s in desk.sessions(include_ended=True)
            }
            assert listed == {
                anns: ("SESSION_STATE_ACTIVE", None, at(d=1)),
                bobs: ("SESSION_STATE_ACTIVE", None, at(d=1, m=30)),
            }
            assert desk.heartbeat(ann, anns)["lease_expire_time"] == at(d=1, m=30)
            desk.to(at(d=1, m=20))  # no heartbeat since: bob's lease runs to 00:30
            (bob_now,) = [s for s in desk.sessions(include_ended=True) if s["session_id"] == bobs]
            assert bob_now["state"] == "SESSION_STATE_ACTIVE"
            desk.to(at(d=1, m=40))
            (bob_now,) = [s for s in desk.sessions(include_ended=True) if s["session_id"] == bobs]
            ended(bob_now, "LEASE_EXPIRED", at(d=1, m=30))
        finally:
            desk.close()
    # The database was mended too, for its other readers.
    leases = _leases(database)
    assert leases[bobs] == (_us(at(m=30)), _us(at(d=1, m=30)))
    assert all(end - start == DAY_US for start, end in leases.values())


def test_t1_a_pack_an_older_release_sold_on_this_schema_is_its_buyers_to_retry_after_a_move(
    database: Path | str,
) -> None:
    """T1 and T5: alpha buys 70 tokens (request po-2) and the pack moves to beta,
    on the older release (its INSERT leaves ``bought_by`` ''). On this release
    alpha's retry of po-2 still returns that pack, now beta's, and beta's is
    ALREADY_EXISTS; before the back-fills it was the other way round (the buyer
    was taken to be the pack's team). A pack it sold that has not moved (po-3)
    keeps '' and is its holder's, its buyer's, as ever."""
    with running(database) as srv:
        desk = Desk(srv.target)
        desk.team("alpha")
        desk.team("beta")
        body = {"team_id": "alpha", "tokens": 70, "request_id": "po-2"}
        pack = desk.a("PurchaseTokens", body)["token_pack"]["pack_id"]
        desk.a("MoveTokenPack", {"pack_id": pack, "to_team_id": "beta"})
        kept_body = {"team_id": "alpha", "tokens": 30, "request_id": "po-3"}
        kept = desk.a("PurchaseTokens", kept_body)["token_pack"]["pack_id"]
        desk.close()
    for sold in (pack, kept):
        _inserted_by_an_older_release(
            database, PACKS.columns, "packs", "pack_id", sold, "bought_by"
        )
    sql = "SELECT pack_id, team_id, bought_by FROM packs ORDER BY tokens"
    assert _sql(database, sql) == [(kept, "alpha", ""), (pack, "beta", "")]

    with running(database) as srv:
        desk = Desk(srv.target)
        try:
            again = desk.a("PurchaseTokens", body)["token_pack"]
            assert (again["pack_id"], again["team_id"], again["tokens"]) == (pack, "beta", "70")
            err = desk.refused(
                None, "PurchaseTokens", {**body, "team_id": "beta"}, grpc.StatusCode.ALREADY_EXISTS
            )
            assert "po-2" in err.message and "another purchase" in err.message
            # One that has not moved is the team's that holds it, its buyer.
            assert desk.a("PurchaseTokens", kept_body)["token_pack"]["pack_id"] == kept
            assert [p["pack_id"] for p in desk.packs("alpha")] == [kept]
            assert [p["pack_id"] for p in desk.packs("beta")] == [pack]
        finally:
            desk.close()
    assert _sql(database, sql) == [(kept, "alpha", ""), (pack, "beta", "alpha")]


async def test_h1_pg_a_server_that_lost_its_place_before_its_store_opened_fills_in_nothing(
    pg_url: str,
) -> None:
    """The back-fills are a write like any other: fenced first (RULES H1). A server
    elected, then replaced before its store opened, changes no row of the active's."""
    started = parse_instant(at())
    store = await PostgresStore.open(pg_url)
    try:
        await store.commit([a_session("ses_1", started)])
    finally:
        await store.close()
    await _pg(pg_url, "UPDATE sessions SET lease_start = 0")  # as an older release inserts it

    async def lost(conn: asyncpg.Connection) -> None:
        raise NotLeader("this server's term of epoch 1 has ended")

    try:
        opened = await PostgresStore.open(pg_url, fence=lost)
    except NotLeader:
        pass
    else:
        await opened.close()
        pytest.fail("a store opened for an epoch that has ended")
    assert await _pg(pg_url, "SELECT lease_start FROM sessions") == [(0,)]
    store = await PostgresStore.open(pg_url)  # the active's: filled in
    try:
        (loaded,) = (await store.load()).of(Session)
    finally:
        await store.close()
    assert loaded.lease_start == started
    assert await _pg(pg_url, "SELECT lease_start FROM sessions") == [(t2i(started),)]


async def _pg(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()
