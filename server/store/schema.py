"""The database schema, as numbered migrations applied in order at start.

``PRAGMA user_version`` records how far a database has come; a migration is
never edited once released: change the schema by appending a new one. One that
adds a column to a table an older release may still write gets its back-fill in
``BACKFILLS`` (below) too.
Instants are stored as integer microseconds since the Unix epoch (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from server.domain.meta import SESSIONS_FROM_KEY, SESSIONS_RECENT_FROM_KEY
from server.domain.terms import LEASE

LEASE_US = LEASE // timedelta(microseconds=1)
#: Activity spans longer than this (a day) are also in ``activity_team_long``
#: (migration 14): a report finds a period's spans from this long before it on
#: (``reads.SPANS_SQL``). Written into that migration's index: never changed.
LONG_SPAN_US = 86_400_000_000

# Indexes made by the same statements on both stores (SQLite's migrations 13 and 14,
# PostgreSQL's 9 and 10): one text each, so that the two cannot drift apart.
LEDGER_TEAM_INDEXES = """
    CREATE INDEX ledger_team_captures ON ledger (team_id, time) WHERE kind = 'CAPTURE';
    CREATE INDEX ledger_team_moves ON ledger (kind, team_id, pack_id)
        WHERE kind IN ('MOVE_IN', 'MOVE_OUT');
    """
ACTIVITY_TEAM_LONG_INDEX = f"""
    CREATE INDEX activity_team_long ON activity (team_id, end_time)
        WHERE end_time - start_time > {LONG_SPAN_US};
    """
# An audit page's events are read back with their more teams by seq
# (``reads.AUDIT_TEAMS_RANGE_SQL``); ``audit_teams``' key leads with the team, so
# each page read the whole table (500,000 rows: about 30 ms a page on either store).
AUDIT_TEAMS_SEQ_INDEX = """
    CREATE INDEX audit_teams_seq ON audit_teams (seq);
    """

MIGRATIONS: list[str] = [
    # 1: token accounts and the rate sheet (RULES T1-T6, P1)
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE teams (
        team_id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        plan TEXT NOT NULL,
        guest_default_assignments INTEGER NOT NULL,
        default_product_ids TEXT NOT NULL,
        create_time INTEGER NOT NULL
    );
    CREATE TABLE packs (
        pack_id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        purchase_time INTEGER NOT NULL,
        expire_time INTEGER NOT NULL,
        request_id TEXT NOT NULL,
        remaining INTEGER NOT NULL,
        held INTEGER NOT NULL,
        consumed INTEGER NOT NULL,
        expired_tokens INTEGER NOT NULL,
        expired INTEGER NOT NULL
    );
    CREATE TABLE ledger (
        seq INTEGER PRIMARY KEY,
        time INTEGER NOT NULL,
        kind TEXT NOT NULL,
        team_id TEXT NOT NULL,
        pack_id TEXT NOT NULL,
        amount INTEGER NOT NULL,
        remaining_delta INTEGER NOT NULL,
        held_delta INTEGER NOT NULL,
        session_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        product_id TEXT NOT NULL
    );
    CREATE INDEX ledger_team ON ledger (team_id, seq);
    CREATE INDEX ledger_pack ON ledger (pack_id, seq);
    CREATE TABLE holds (
        hold_id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        amount INTEGER NOT NULL,
        parts TEXT NOT NULL,
        session_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        time INTEGER NOT NULL
    );
    CREATE TABLE products (
        product_id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        daily_rate INTEGER NOT NULL,
        kind TEXT NOT NULL,
        host_product_id TEXT NOT NULL,
        idle_aware INTEGER NOT NULL,
        platforms TEXT NOT NULL,
        min_linux_version INTEGER NOT NULL
    );
    """,
    # 2: users, memberships, invitations, the outbox, subscriptions (RULES A1-A8, C1-C2)
    """
    CREATE TABLE users (
        user_id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        email TEXT NOT NULL,
        key_hash BLOB
    );
    CREATE UNIQUE INDEX users_key ON users (key_hash) WHERE key_hash IS NOT NULL;
    CREATE TABLE members (
        team_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        state TEXT NOT NULL,
        guest INTEGER NOT NULL,
        all_products INTEGER NOT NULL,
        product_ids TEXT NOT NULL,
        invitation_id TEXT,
        join_time INTEGER NOT NULL,
        PRIMARY KEY (team_id, user_id)
    );
    CREATE TABLE invitations (
        invitation_id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        token_hash BLOB NOT NULL,
        send_time INTEGER NOT NULL,
        expire_time INTEGER NOT NULL,
        state TEXT NOT NULL
    );
    CREATE TABLE notifications (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        notification_id TEXT NOT NULL UNIQUE,
        team_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        email TEXT NOT NULL,
        kind TEXT NOT NULL,
        create_time INTEGER NOT NULL,
        invitation_token TEXT NOT NULL
    );
    CREATE TABLE subscriptions (
        subscription_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        start_time INTEGER NOT NULL,
        end_time INTEGER NOT NULL
    );
    """,
    # 3: sessions, meters, devices and active time (RULES §4-§6, R1, R2)
    """
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        team_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        product_version TEXT NOT NULL,
        platform TEXT NOT NULL,
        device_id TEXT NOT NULL,
        parent_session_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        coverage TEXT NOT NULL,
        plan TEXT NOT NULL,
        daily_rate INTEGER NOT NULL,
        start_time INTEGER NOT NULL,
        lease_end INTEGER NOT NULL,
        last_activity INTEGER NOT NULL,
        state_since INTEGER NOT NULL,
        coverage_since INTEGER NOT NULL,
        state TEXT NOT NULL,
        end_reason TEXT,
        end_time INTEGER
    );
    CREATE INDEX sessions_end ON sessions (end_time);
    CREATE INDEX sessions_team_start ON sessions (team_id, start_time);
    CREATE TABLE meters (
        team_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        state TEXT NOT NULL,
        grace_start INTEGER,
        grace_end INTEGER,
        window_start INTEGER,
        window_end INTEGER,
        hold_id TEXT NOT NULL,
        PRIMARY KEY (team_id, user_id, product_id)
    );
    CREATE TABLE devices (
        user_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        register_time INTEGER NOT NULL,
        last_seen_time INTEGER NOT NULL,
        PRIMARY KEY (user_id, product_id, device_id)
    );
    CREATE TABLE activity (
        session_id TEXT NOT NULL,
        team_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        start_time INTEGER NOT NULL,
        end_time INTEGER NOT NULL
    );
    CREATE INDEX activity_team_start ON activity (team_id, start_time);
    """,
    # 4: the ledger's hash chain (tamper evidence; see server/domain/ledger.py)
    """
    ALTER TABLE ledger ADD COLUMN hash TEXT NOT NULL DEFAULT '';
    """,
    # 5: invitation tokens are no longer stored (issue 12, point 1): they are derived
    # from the server's secret key when the outbox is read (server/credentials.py).
    # Tokens stored by earlier releases are blanked; their invitations stay
    # redeemable by the token already sent (its hash is kept), and ResendInvitation
    # makes a new one for an email that never went out.
    """
    UPDATE notifications SET invitation_token = '' WHERE invitation_token <> '';
    """,
    # 6: a team's low-balance threshold (RULES L1; 0 is off)
    """
    ALTER TABLE teams ADD COLUMN low_balance_threshold INTEGER NOT NULL DEFAULT 0;
    """,
    # 7: team administrators' keys, the audit trail, and what team alerts are about
    # (RULES AD1, AD2, L1-L3)
    """
    CREATE TABLE admin_keys (
        admin_key_id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        team_ids TEXT NOT NULL,
        key_hash BLOB NOT NULL,
        create_time INTEGER NOT NULL,
        revoke_time INTEGER
    );
    CREATE UNIQUE INDEX admin_keys_hash ON admin_keys (key_hash);
    CREATE TABLE audit_events (
        seq INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        time INTEGER NOT NULL,
        actor TEXT NOT NULL,
        actor_name TEXT NOT NULL,
        method TEXT NOT NULL,
        team_id TEXT NOT NULL,
        other_team_id TEXT NOT NULL,
        target TEXT NOT NULL,
        request_id TEXT NOT NULL,
        request TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_team ON audit_events (team_id, seq);
    CREATE INDEX audit_other_team ON audit_events (other_team_id, seq);
    ALTER TABLE notifications ADD COLUMN pack_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE notifications ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE notifications ADD COLUMN expire_time INTEGER;
    ALTER TABLE notifications ADD COLUMN product_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE teams ADD COLUMN low_balance_alerted INTEGER NOT NULL DEFAULT 0;
    """,
    # 8: ended sessions only in ``sessions_end`` (issue 17). Live sessions' NULLs
    # filled it in the order they started, so ending one rewrote a page somewhere in
    # the middle of them, in every commit; its one reader (the start's load, for the
    # latest end) asks for ended sessions only.
    """
    DROP INDEX sessions_end;
    CREATE INDEX sessions_end ON sessions (end_time) WHERE end_time IS NOT NULL;
    """,
    # 9: a session keeps when its lease began (M7: the latest Entitle or Heartbeat)
    # and derives its end, 24 hours later: one instant fewer in memory a live
    # session. ``lease_end`` is still written, for the readers of the table.
    """
    ALTER TABLE sessions ADD COLUMN lease_start INTEGER NOT NULL DEFAULT 0;
    UPDATE sessions SET lease_start = lease_end - 86400000000;
    """,
    # 10: holds, meters and devices keep their rows in their primary key's B-tree
    # (WITHOUT ROWID), not in a rowid table beside an index of that key: a hold or
    # meter taken or let go (every Entitle and Release that pays in tokens) writes
    # one B-tree instead of two (issue 17: 12 % fewer pages a commit in the
    # Entitle+Release cycle, docs/performance-log.md). Rows are copied once, at the
    # start that applies it (8.8 s for a million of each). Sessions stay as they
    # are: their rows are wide and two more indexes would carry the key.
    """
    CREATE TABLE holds_new (
        hold_id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        amount INTEGER NOT NULL,
        parts TEXT NOT NULL,
        session_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        time INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO holds_new SELECT hold_id, team_id, amount, parts, session_id, user_id, product_id, time FROM holds;
    DROP TABLE holds;
    ALTER TABLE holds_new RENAME TO holds;
    CREATE TABLE meters_new (
        team_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        state TEXT NOT NULL,
        grace_start INTEGER,
        grace_end INTEGER,
        window_start INTEGER,
        window_end INTEGER,
        hold_id TEXT NOT NULL,
        PRIMARY KEY (team_id, user_id, product_id)
    ) WITHOUT ROWID;
    INSERT INTO meters_new SELECT team_id, user_id, product_id, state, grace_start, grace_end, window_start, window_end, hold_id FROM meters;
    DROP TABLE meters;
    ALTER TABLE meters_new RENAME TO meters;
    CREATE TABLE devices_new (
        user_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        register_time INTEGER NOT NULL,
        last_seen_time INTEGER NOT NULL,
        PRIMARY KEY (user_id, product_id, device_id)
    ) WITHOUT ROWID;
    INSERT INTO devices_new SELECT user_id, product_id, device_id, register_time, last_seen_time FROM devices;
    DROP TABLE devices;
    ALTER TABLE devices_new RENAME TO devices;
    """,
    # 11: the team that bought each pack (T1: a retry of a purchase is its buyer's
    # wherever the pack has moved, T5), from the pack's PURCHASE entry
    """
    ALTER TABLE packs ADD COLUMN bought_by TEXT NOT NULL DEFAULT '';
    UPDATE packs SET bought_by = COALESCE(
        (SELECT l.team_id FROM ledger l WHERE l.pack_id = packs.pack_id AND l.kind = 'PURCHASE'),
        team_id
    );
    """,
    # 12: the teams of an audit event past its first two (RULES AD2: a host's
    # plugins in two other teams ended with it), one row each, appended with the
    # event; a team's trail reads its events by this key too.
    """
    CREATE TABLE audit_teams (
        team_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (team_id, seq)
    ) WITHOUT ROWID;
    """,
    # 13: a report's captures and the forecast's (RULES R1, L2) read the days they
    # ask for, and a report's moved packs (T5) the team's moves: ``ledger_team``
    # alone made each read every entry the team ever had (a year of a team of 1,000
    # users: 0.1-0.3 s a read, whatever the days). Partial: a Release's entries
    # (HOLD, HOLD_RELEASE: the Entitle+Release cycle's) are in neither.
    LEDGER_TEAM_INDEXES,
    # 14: a report's spans (R1) are read from a day before its start
    # (``activity_team_start``), and the few longer than a day that began earlier
    # by this index, which holds those alone (``reads.SPANS_SQL``): from the team's
    # first span, a day of a year's history read every span of the year before it.
    ACTIVITY_TEAM_LONG_INDEX,
    # 15: an audit event's more teams by its seq (an audit page's, RULES AD2)
    AUDIT_TEAMS_SEQ_INDEX,
    # 16: the sessions a start loads from below its recent bound (M11, M12:
    # ``SESSIONS_RECENT_FROM_KEY``): one session live for a month made every start
    # read a month of sessions, from the release before's bound on.
    """
    CREATE TABLE sessions_older_loaded (session_id TEXT PRIMARY KEY) WITHOUT ROWID;
    """,
]


# The stored load bound of the sessions ('' before one is stored), the release
# before's (``SESSIONS_FROM_KEY``), kept as ever: a start reads from it when there
# is no recent bound.
SESSIONS_BOUND_SQL = (
    f"SELECT COALESCE((SELECT value FROM meta WHERE key = '{SESSIONS_FROM_KEY}'), '')"  # noqa: S608
)
# This release's (``SESSIONS_RECENT_FROM_KEY``, with ``sessions_older_loaded``): the
# release before's until one is stored, then '' (every session) before that.
RECENT_BOUND_SQL = (
    f"SELECT COALESCE((SELECT value FROM meta WHERE key = '{SESSIONS_RECENT_FROM_KEY}'), "  # noqa: S608
    f"(SELECT value FROM meta WHERE key = '{SESSIONS_FROM_KEY}'), '')"
)


@dataclass(frozen=True)
class Backfill:
    """A column an older release leaves out, filled in from what it does write."""

    table: str
    set: str  # the column = its value
    where: str  # the rows that lack it
    # What gives the value of the one ``?`` mark in ``where``, read first ("": none). A
    # value of its own, not a subquery: PostgreSQL plans a subquery's value as if it
    # kept a third of the table, and reads the whole table rather than the index.
    mark_sql: str = ""

    @property
    def find_sql(self) -> str:
        """Whether any row lacks it: one pass over the rows it looks at when none does."""
        return f"SELECT EXISTS (SELECT 1 FROM {self.table} WHERE {self.where})"  # noqa: S608

    @property
    def sql(self) -> str:
        return f"UPDATE {self.table} SET {self.set} WHERE {self.where}"  # noqa: S608


# The team of a pack's PURCHASE entry (in an UPDATE of ``packs``), or NULL.
_BUYER = (
    "(SELECT l.team_id FROM ledger l WHERE l.pack_id = packs.pack_id AND l.kind = 'PURCHASE' "
    "ORDER BY l.seq LIMIT 1)"
)

# The back-fills of the columns that migrations added to tables an older release
# still writes (SQLite's 9 and 11, PostgreSQL's 5 and 7), run again each time a
# store opens to serve (SQLite at every start; PostgreSQL when a server is elected,
# fenced), before the state loads; the same statements on both stores. An older
# release writes rows without them: on PostgreSQL the active one goes on serving
# while a standby of the new release migrates the database at its start (a rolling
# upgrade, docs/postgres.md), and on SQLite a release from before the refusal of
# newer schemas can be run again on a migrated file. Its INSERTs leave the columns
# at their defaults, and its upserts leave them as they were, so each back-fill
# takes what every release writes. Each is looked for first and written only when
# found: a database of this release's rows alone is only read (about 20 ms for
# 100,000 sessions on either store, docs/postgres.md).
BACKFILLS: tuple[Backfill, ...] = (
    # M7: a lease begins LEASE before its end, the column every release writes (its
    # end is what the product was told), for a session an older release inserted
    # (``lease_start`` 0: its lease would have ended in 1970) or renewed (its
    # ``lease_start`` still the one before). This release writes both, LEASE apart,
    # so its own rows never match. Only where this release's start loads from: an
    # older release writes the sessions it opens or renews, those opened after the
    # recent bound (``SESSIONS_RECENT_FROM_KEY``; the release before's, before
    # there is one) or live before it, named in ``sessions_older_loaded``; the
    # look need not read every session ever stored, nor every one since the
    # oldest live one opened. Two looks, each by an index.
    Backfill(
        "sessions",
        f"lease_start = lease_end - {LEASE_US}",
        f"session_id >= ? AND lease_start <> lease_end - {LEASE_US}",
        RECENT_BOUND_SQL,
    ),
    Backfill(
        "sessions",
        f"lease_start = lease_end - {LEASE_US}",
        "session_id IN (SELECT session_id FROM sessions_older_loaded) "  # noqa: S608
        f"AND lease_start <> lease_end - {LEASE_US}",
    ),
    # T1: the team that bought a pack an older release sold (``bought_by`` ''), from
    # its PURCHASE entry, where the pack has moved since (T5) to a team that is not
    # its buyer. One that has not moved keeps '': the team holding it is its buyer,
    # as the engine takes it (``TokenPack.bought_by``), and records when it moves it
    # (``Ledger.move``). Only the packs with '' look at the ledger (``ledger_pack``).
    Backfill(
        "packs",
        f"bought_by = {_BUYER}",
        f"bought_by = '' AND team_id <> COALESCE({_BUYER}, team_id)",
    ),
)
