"""The PostgreSQL schema, as numbered migrations applied in order at start.

The same tables and columns as SQLite's (``schema.py``; the rows are codec's
``Table`` specs, shared by both adapters), written for PostgreSQL: instants
are BIGINT microseconds since the Unix epoch (UTC) as in SQLite, flags
SMALLINT 0/1, blobs BYTEA. The first migration is SQLite's five as they stand
(PostgreSQL has no databases from before them); the second adds the leader row
that elects one active server and fences the others (RULES H1,
``server/ha/``).

``schema_version`` records every migration applied. A migration is never
edited once released: change the schema by appending a new one (and the same
change to SQLite's). A migration that adds a column to a table an older release
still writes gets its back-fill in ``schema.BACKFILLS`` too (the same statements
on both stores), run again whenever a store opens to serve: an older active
serves on while a standby of the new release migrates (docs/postgres.md,
"Upgrading").
"""

from __future__ import annotations

from server.store.schema import (
    ACTIVITY_TEAM_LONG_INDEX,
    AUDIT_TEAMS_SEQ_INDEX,
    LEDGER_TEAM_INDEXES,
)

# pg_advisory_xact_lock key held while migrating: two servers starting together
# on a new database take turns instead of both creating the tables.
MIGRATION_LOCK = 0x7E55E7A_0001

SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""

MIGRATIONS: list[str] = [
    # 1: everything SQLite's migrations 1-5 make (RULES T1-T6, P1, A1-A8, C1-C2, §4-§6, R1, R2)
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE teams (
        team_id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        plan TEXT NOT NULL,
        guest_default_assignments SMALLINT NOT NULL,
        default_product_ids TEXT NOT NULL,
        create_time BIGINT NOT NULL
    );
    CREATE TABLE packs (
        pack_id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        tokens BIGINT NOT NULL,
        purchase_time BIGINT NOT NULL,
        expire_time BIGINT NOT NULL,
        request_id TEXT NOT NULL,
        remaining BIGINT NOT NULL,
        held BIGINT NOT NULL,
        consumed BIGINT NOT NULL,
        expired_tokens BIGINT NOT NULL,
        expired SMALLINT NOT NULL
    );
    CREATE TABLE ledger (
        seq BIGINT PRIMARY KEY,
        time BIGINT NOT NULL,
        kind TEXT NOT NULL,
        team_id TEXT NOT NULL,
        pack_id TEXT NOT NULL,
        amount BIGINT NOT NULL,
        remaining_delta BIGINT NOT NULL,
        held_delta BIGINT NOT NULL,
        session_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        hash TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX ledger_team ON ledger (team_id, seq);
    CREATE INDEX ledger_pack ON ledger (pack_id, seq);
    CREATE TABLE holds (
        hold_id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        amount BIGINT NOT NULL,
        parts TEXT NOT NULL,
        session_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        time BIGINT NOT NULL
    );
    CREATE TABLE products (
        product_id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        daily_rate BIGINT NOT NULL,
        kind TEXT NOT NULL,
        host_product_id TEXT NOT NULL,
        idle_aware SMALLINT NOT NULL,
        platforms TEXT NOT NULL,
        min_linux_version BIGINT NOT NULL
    );
    CREATE TABLE users (
        user_id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        email TEXT NOT NULL,
        key_hash BYTEA
    );
    CREATE UNIQUE INDEX users_key ON users (key_hash) WHERE key_hash IS NOT NULL;
    CREATE TABLE members (
        team_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        state TEXT NOT NULL,
        guest SMALLINT NOT NULL,
        all_products SMALLINT NOT NULL,
        product_ids TEXT NOT NULL,
        invitation_id TEXT,
        join_time BIGINT NOT NULL,
        PRIMARY KEY (team_id, user_id)
    );
    CREATE TABLE invitations (
        invitation_id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        token_hash BYTEA NOT NULL,
        send_time BIGINT NOT NULL,
        expire_time BIGINT NOT NULL,
        state TEXT NOT NULL
    );
    CREATE TABLE notifications (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        notification_id TEXT NOT NULL UNIQUE,
        team_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        email TEXT NOT NULL,
        kind TEXT NOT NULL,
        create_time BIGINT NOT NULL,
        invitation_token TEXT NOT NULL
    );
    CREATE TABLE subscriptions (
        subscription_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        start_time BIGINT NOT NULL,
        end_time BIGINT NOT NULL
    );
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
        daily_rate BIGINT NOT NULL,
        start_time BIGINT NOT NULL,
        lease_end BIGINT NOT NULL,
        last_activity BIGINT NOT NULL,
        state_since BIGINT NOT NULL,
        coverage_since BIGINT NOT NULL,
        state TEXT NOT NULL,
        end_reason TEXT,
        end_time BIGINT
    );
    CREATE INDEX sessions_end ON sessions (end_time);
    CREATE INDEX sessions_team_start ON sessions (team_id, start_time);
    CREATE TABLE meters (
        team_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        state TEXT NOT NULL,
        grace_start BIGINT,
        grace_end BIGINT,
        window_start BIGINT,
        window_end BIGINT,
        hold_id TEXT NOT NULL,
        PRIMARY KEY (team_id, user_id, product_id)
    );
    CREATE TABLE devices (
        user_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        register_time BIGINT NOT NULL,
        last_seen_time BIGINT NOT NULL,
        PRIMARY KEY (user_id, product_id, device_id)
    );
    CREATE TABLE activity (
        session_id TEXT NOT NULL,
        team_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        product_id TEXT NOT NULL,
        start_time BIGINT NOT NULL,
        end_time BIGINT NOT NULL
    );
    CREATE INDEX activity_team_start ON activity (team_id, start_time);
    """,
    # 2: the leader row: one active server, fenced by its epoch (RULES H1, server/ha/).
    # Its times are the database's now(), never a server's clock.
    """
    CREATE TABLE tessera_leader (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        node_id TEXT NOT NULL,
        address TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        lease_until TIMESTAMPTZ NOT NULL
    );
    """,
    # 3: a team's low-balance threshold (RULES L1; 0 is off), as SQLite's migration 6
    """
    ALTER TABLE teams ADD COLUMN low_balance_threshold BIGINT NOT NULL DEFAULT 0;
    """,
    # 4: team administrators' keys, the audit trail, and what team alerts are about
    # (RULES AD1, AD2, L1-L3), as SQLite's migration 7
    """
    CREATE TABLE admin_keys (
        admin_key_id TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        team_ids TEXT NOT NULL,
        key_hash BYTEA NOT NULL,
        create_time BIGINT NOT NULL,
        revoke_time BIGINT
    );
    CREATE UNIQUE INDEX admin_keys_hash ON admin_keys (key_hash);
    CREATE TABLE audit_events (
        seq BIGINT PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        time BIGINT NOT NULL,
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
    ALTER TABLE notifications ADD COLUMN tokens BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE notifications ADD COLUMN expire_time BIGINT;
    ALTER TABLE notifications ADD COLUMN product_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE teams ADD COLUMN low_balance_alerted SMALLINT NOT NULL DEFAULT 0;
    """,
    # 5: when a session's lease began (M7), as SQLite's migration 9
    """
    ALTER TABLE sessions ADD COLUMN lease_start BIGINT NOT NULL DEFAULT 0;
    UPDATE sessions SET lease_start = lease_end - 86400000000;
    """,
    # 6: which secrets directory the servers use: a digest of its secret key, never
    # the key (server/ha/secrets.py). PostgreSQL's own, as the leader row.
    """
    CREATE TABLE tessera_secrets (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        digest BYTEA NOT NULL,
        node_id TEXT NOT NULL,
        recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    """,
    # 7: the team that bought each pack, as SQLite's migration 11
    """
    ALTER TABLE packs ADD COLUMN bought_by TEXT NOT NULL DEFAULT '';
    UPDATE packs SET bought_by = COALESCE(
        (SELECT l.team_id FROM ledger l WHERE l.pack_id = packs.pack_id AND l.kind = 'PURCHASE'),
        team_id
    );
    """,
    # 8: the teams of an audit event past its first two (RULES AD2), as SQLite's
    # migration 12
    """
    CREATE TABLE audit_teams (
        team_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (team_id, seq)
    );
    """,
    # 9: the ledger's captures and moves by team, as SQLite's migration 13
    LEDGER_TEAM_INDEXES,
    # 10: the spans longer than a day, by team and end, as SQLite's migration 14
    ACTIVITY_TEAM_LONG_INDEX,
    # 11: an audit event's more teams by its seq, as SQLite's migration 15
    AUDIT_TEAMS_SEQ_INDEX,
    # 12: the sessions a start loads from below its recent bound, as SQLite's
    # migration 16
    """
    CREATE TABLE sessions_older_loaded (session_id TEXT PRIMARY KEY);
    """,
]
