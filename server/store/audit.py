"""``python -m server verify``: is the ledger whole, do the packs agree with it, and
is the audit trail whole?

Checked, reading one consistent snapshot (the server may be running):

- the chain: entries numbered 1..N without a gap, each hash recomputed from its
  predecessor's and its own fields (``server.domain.ledger.entry_digest``): an
  entry changed, inserted or removed in the middle breaks it;
- the end of the chain: it reaches the checkpoint beside the database
  (``checkpoint.py``) with the checkpoint's hash: the newest entries removed
  (with their packs or not) or the database swapped for an older copy show here;
- packs against entries, both ways: every pack has entries and every entry's pack
  has a row; a pack's tokens, remaining, held, consumed and expired tokens are
  what its entries add up to (RULES T6); its team is the one its purchase and
  moves put it in, its purchase time its purchase entry's, its expiry one
  calendar year on (T1, the domain's ``add_one_year``); an expired pack has
  nothing remaining, and only an expired pack has expiry entries (T4);
- the audit trail (RULES AD2), as the ledger's chain: events numbered 1..N
  without a gap, each hash recomputed from its predecessor's and its own fields
  (``server.domain.audit.event_digest``), and its end reaching the checkpoint's
  audit head (the same checkpoint line, ``checkpoint.py``): an event altered,
  removed or inserted, the newest events removed, or an event appended while no
  server ran are each reported. An event's more teams (``audit_teams``, past
  its first two) are part of its hash: one of them removed, altered or added
  breaks it, and a row naming no stored event is reported.

What it cannot see: a pack's ``request_id`` is in no entry; and whoever can
rewrite both the database and its checkpoint can forge a consistent history
(docs/security.md).

The checks (``Audit``) are fed rows by whichever store holds them: SQLite here,
PostgreSQL in ``server/store/postgres.py`` (``verify_postgres``), which keeps no
checkpoint file (docs/postgres.md says what verify guarantees there).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.domain.audit import event_digest
from server.domain.ledger import GENESIS_HASH, EntryKind, add_one_year, entry_digest
from server.store import checkpoint
from server.store.codec import i2t, t2i
from server.store.files import not_a_database, not_tessera
from server.store.port import StoreFailed, newer_schema
from server.store.schema import MIGRATIONS

LEDGER_SQL = (
    "SELECT seq, time, kind, team_id, pack_id, amount, remaining_delta, held_delta, "
    "session_id, user_id, product_id, hash FROM ledger ORDER BY seq"
)
AUDIT_SQL = (
    "SELECT seq, event_id, time, actor, actor_name, method, team_id, other_team_id, "
    "target, request_id, request, hash FROM audit_events ORDER BY seq"
)
# Every event's more teams (``AuditEvent.more_team_ids``), fed to ``Audit.more_teams``.
AUDIT_TEAMS_SQL = "SELECT seq, team_id FROM audit_teams"
PACKS_SQL = (
    "SELECT pack_id, team_id, tokens, remaining, held, consumed, expired_tokens, "
    "purchase_time, expire_time, expired FROM packs ORDER BY pack_id"
)
_PURCHASE, _MOVE_IN, _MOVE_OUT = (
    k.value for k in (EntryKind.PURCHASE, EntryKind.MOVE_IN, EntryKind.MOVE_OUT)
)
_CAPTURE, _EXPIRY = EntryKind.CAPTURE.value, EntryKind.EXPIRY.value


@dataclass
class Verdict:
    entries: int = 0
    packs: int = 0
    events: int = 0  # audit events chained
    problems: list[str] = field(default_factory=list)
    anchored: int | None = None  # the checkpoint's seq; None: no checkpoint file
    postgres: bool = False  # PostgreSQL keeps no checkpoint file (docs/postgres.md)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        text = f"ok: {self.entries} ledger entries chained, {self.packs} packs add up"
        text += f"; {self.events} audit events chained"
        if self.postgres:
            end = "; its end rests on PostgreSQL's durability (no checkpoint file)"
        elif self.anchored is None:
            end = "; no checkpoint beside the database, so the end is not anchored"
        else:
            end = f"; the chain reaches its checkpoint (entry {self.anchored:012d})"
        return text + end


@dataclass
class _Pack:
    """What a pack's entries say about it."""

    remaining: int = 0
    held: int = 0
    consumed: int = 0
    expired: int = 0
    purchased: int = 0
    purchase_time: int | None = None
    expiry_entries: int = 0
    team_id: str = ""


def connect_read_only(db: Path) -> sqlite3.Connection:
    if not db.exists():
        raise FileNotFoundError(f"no database at {db}")
    if (problem := not_a_database(db)) is not None:
        raise sqlite3.DatabaseError(problem)
    # Read-only SQLite still makes the WAL's index (``-shm``) beside the file, which a
    # backup on read-only media has no room for. There no server can be writing, so
    # without a log to read (none, or empty: the backup's) the file is all there is.
    wal = db.with_name(db.name + "-wal")
    settled = not wal.exists() or wal.stat().st_size == 0
    mode = "ro&immutable=1" if settled and not os.access(db.parent, os.W_OK) else "ro"
    uri = f"{db.absolute().as_uri()}?mode={mode}"  # (a name with "#", "?" or "%" quoted)
    return sqlite3.connect(uri, uri=True, isolation_level=None)


def not_tessera_here(db: Path) -> str | None:
    """Why the SQLite file ``db`` is no Tessera database, in the words verify, backup
    and rotate-signing-key all say it in, or None (a missing file too: the open that
    follows says so). Not a SQLite file, another application's (``files.not_tessera``),
    or empty: a file of no bytes, or a database with no table at all."""
    if not db.exists():
        return None
    if (problem := not_a_database(db) or not_tessera(db)) is not None:
        return problem
    if not db.stat().st_size:
        return f"no Tessera database at {db} (empty)"
    with contextlib.closing(connect_read_only(db)) as conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'ledger'").fetchone() is None:
            return f"no Tessera database at {db} (empty)"
    return None


def chained_ledger(conn: sqlite3.Connection) -> bool:
    """Whether the ledger has its hash chain's column: schema 4 on (an older
    database gets it, and its entries their hashes, at a server's start)."""
    sql = "SELECT 1 FROM pragma_table_info('ledger') WHERE name = 'hash'"
    return conn.execute(sql).fetchone() is not None


def predates_the_chain(db: Path, version: int) -> str:
    """What verify says of a database older than the ledger's hash chain."""
    return (
        f"{db} is of schema version {version}, older than the ledger's hash chain, so there "
        "is no chain to verify: start this release on it once (the server upgrades it and "
        "chains its ledger), then verify"
    )


def verify(db: Path) -> Verdict:
    """Check the chain, its end, then the packs; the first broken link is reported
    and the walk stops there (everything after it is suspect)."""
    # Read before the snapshot: the checkpoint trails the commits, so the snapshot
    # taken after it holds at least the entries it names.
    anchor = checkpoint.read(checkpoint.checkpoint_path(db))
    audit = Audit(anchor)
    if (problem := not_tessera_here(db)) is not None:
        raise sqlite3.DatabaseError(problem)  # not "no such table: ledger"
    with connect_read_only(db) as conn:
        conn.execute("BEGIN")  # one snapshot for every query below
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if (problem := newer_schema(version, len(MIGRATIONS))) is not None:
                raise StoreFailed(problem)
            if not chained_ledger(conn):  # not "no such column: hash"
                raise StoreFailed(predates_the_chain(db, version))
            if all(audit.entry(row) for row in conn.execute(LEDGER_SQL)):
                audit.chain_end()
            if audit.verdict.ok:
                for row in conn.execute(PACKS_SQL):
                    audit.pack(row)
                audit.packs_end()
            if audit.verdict.ok:
                sql = "SELECT 1 FROM sqlite_master WHERE name = 'audit_events'"
                events = conn.execute(AUDIT_SQL) if conn.execute(sql).fetchone() else ()
                sql = "SELECT 1 FROM sqlite_master WHERE name = 'audit_teams'"
                if conn.execute(sql).fetchone():  # schema 12 on
                    audit.more_teams(conn.execute(AUDIT_TEAMS_SQL))
                if all(audit.event(row) for row in events):
                    audit.events_end()
        finally:
            if conn.in_transaction:  # a failed read (a full disk) may have ended it
                conn.execute("COMMIT")
    return audit.verdict


class Audit:
    """The checks, fed the rows of ``LEDGER_SQL`` then of ``PACKS_SQL`` by whichever
    store reads them (SQLite above; PostgreSQL in ``server/store/postgres.py``).

    Feed ``entry`` every ledger row in order while it returns True (False: a broken
    link, reported; stop there), then ``chain_end``; then, if the verdict is still
    ok, ``pack`` every pack row and ``packs_end``; then, if still ok, the rows of
    ``AUDIT_TEAMS_SQL`` to ``more_teams`` (where the table is), ``event`` every
    row of ``AUDIT_SQL`` while it returns True, then ``events_end``.
    """

    def __init__(self, anchor: checkpoint.LedgerHead | None) -> None:
        self.verdict = Verdict(anchored=anchor.seq if anchor is not None else None)
        self._anchor = anchor
        self._packs: dict[str, _Pack] = defaultdict(_Pack)
        self._prev = GENESIS_HASH
        self._hash_at_anchor: str | None = None
        self._seen: set[str] = set()
        self._prev_event = GENESIS_HASH
        self._event_at_anchor: str | None = None
        self._more: dict[int, list[str]] = defaultdict(list)  # an event's more teams
        self._stray: list[str] = []  # rows of audit_teams whose seq is no number

    def more_teams(self, rows: Iterable[Sequence[Any]]) -> None:
        """Rows of ``AUDIT_TEAMS_SQL`` (any order): the more teams of each event."""
        for seq, team_id in rows:
            if isinstance(seq, int):  # else one no event has: reported by events_end
                self._more[seq].append(str(team_id))
            else:
                self._stray.append(f"audit_teams names an audit event {seq!r}")

    def entry(self, row: Sequence[Any]) -> bool:
        verdict = self.verdict
        seq, time_us, kind, team_id, pack_id, amount, rd, hd, sid, uid, pid, stored = row
        verdict.entries += 1
        if seq != verdict.entries:
            verdict.problems.append(
                f"ledger entry {verdict.entries:012d} is missing (next stored is {seq:012d})"
            )
            return False
        # A field of another type than the store writes (a BLOB, a REAL put in by
        # hand) is an altered entry: never a hash of it, nor a sum.
        typed = _typed(row, _ENTRY_TYPES)
        digest = typed and entry_digest(
            self._prev, seq, time_us, kind, team_id, pack_id, amount, rd, hd, sid, uid, pid
        )
        if not typed or digest != stored:
            verdict.problems.append(
                f"ledger entry {seq:012d} ({kind} of {amount} on pack {pack_id}) does not "
                "match its hash: it or an entry before it was altered"
            )
            return False
        self._prev = stored
        if self._anchor is not None and seq == self._anchor.seq:
            self._hash_at_anchor = stored
        problem = _follow(self._packs[pack_id], seq, time_us, kind, team_id, amount, rd, hd)
        if problem:
            verdict.problems.append(f"ledger entry {seq:012d} on pack {pack_id}: {problem}")
            return False
        return True

    def chain_end(self) -> None:
        """The whole chain was walked: does it reach the checkpoint?"""
        if self._anchor is not None:
            short = checkpoint.problem(self._anchor, self.verdict.entries, self._hash_at_anchor)
            if short:
                self.verdict.problems.append(short)

    def event(self, row: Sequence[Any]) -> bool:
        """One audit event (a row of ``AUDIT_SQL``), in order: False at a broken link."""
        verdict = self.verdict
        seq, stored = row[0], row[-1]
        verdict.events += 1
        if seq != verdict.events:
            verdict.problems.append(
                f"audit event {verdict.events:012d} is missing (next stored is {seq:012d})"
            )
            return False
        more = self._more.pop(seq, ())
        typed = _typed(row, _EVENT_TYPES)  # as an entry's: another type is an alteration
        if not typed or event_digest(self._prev_event, *row[:-1], more_team_ids=more) != stored:
            verdict.problems.append(
                f"audit event {seq:012d} ({row[5]} by {row[3]}) does not match its hash: "
                "it or an event before it was altered"
            )
            return False
        self._prev_event = stored
        if self._anchor is not None and seq == self._anchor.audit_seq:
            self._event_at_anchor = stored
        return True

    def events_end(self) -> None:
        """The whole audit trail was walked: does it reach the checkpoint? Is every
        row of ``audit_teams`` some event's?"""
        for seq in sorted(self._more):
            self.verdict.problems.append(
                f"audit_teams names audit event {seq:012d}, which is not stored "
                f"(teams {', '.join(sorted(self._more[seq]))}): it was added by hand, "
                "or its event removed"
            )
        for stray in self._stray:
            self.verdict.problems.append(f"{stray}, which is not stored: it was added by hand")
        if self._anchor is not None:
            short = checkpoint.audit_problem(
                self._anchor, self.verdict.events, self._event_at_anchor
            )
            if short:
                self.verdict.problems.append(short)

    def pack(self, row: Sequence[Any]) -> None:
        _check_pack(self.verdict, self._packs, row)
        self._seen.add(row[0])

    def packs_end(self) -> None:
        for pack_id in sorted(self._packs.keys() - self._seen):
            self.verdict.problems.append(
                f"pack {pack_id} has ledger entries but no pack row: it was deleted"
            )


#: The types of a row of ``LEDGER_SQL`` and of ``AUDIT_SQL``, as both stores return them.
_ENTRY_TYPES = (int, int, str, str, str, int, int, int, str, str, str, str)
_EVENT_TYPES = (int, str, int, str, str, str, str, str, str, str, str, str)


def _typed(row: Sequence[Any], types: Sequence[type]) -> bool:
    """Whether every field of ``row`` is of its type (a bool is no int here)."""
    return len(row) == len(types) and all(
        isinstance(value, kind) and not isinstance(value, bool)
        for value, kind in zip(row, types, strict=False)
    )


def _follow(
    p: _Pack, seq: int, time_us: int, kind: str, team_id: str, amount: int, rd: int, hd: int
) -> str:
    """Apply one entry to what is known of its pack; a complaint, or ""."""
    if kind == _PURCHASE:
        if p.purchase_time is not None:
            return "a second purchase of the same pack"
        p.purchase_time, p.purchased = time_us, amount
    elif p.purchase_time is None:
        return f"a {kind} before the pack's purchase"
    elif kind == _MOVE_IN:
        if team_id == p.team_id:
            return "moved into the team it was already in"
    elif team_id != p.team_id:
        return f"names team {team_id!r} but the pack is in {p.team_id!r}"
    if kind != _MOVE_OUT:
        p.team_id = team_id
    p.remaining += rd
    p.held += hd
    if kind == _CAPTURE:
        p.consumed += amount
    elif kind == _EXPIRY:
        p.expired += amount
        p.expiry_entries += 1
    return ""


def _check_pack(verdict: Verdict, packs: dict[str, _Pack], row: Sequence[Any]) -> None:
    """One pack's row against what its entries add up to."""
    pack_id, team_id, tokens, remaining, held, consumed, expired_tokens = row[:7]
    purchase_time, expire_time, expired = row[7:]
    verdict.packs += 1
    s = packs.get(pack_id)
    if s is None:
        verdict.problems.append(f"pack {pack_id} has no ledger entries: it was added by hand")
        return
    stored_state = (tokens, remaining, held, consumed, expired_tokens)
    summed = (s.purchased, s.remaining, s.held, s.consumed, s.expired)
    if stored_state != summed:
        verdict.problems.append(
            f"pack {pack_id}: stored tokens/remaining/held/consumed/expired "
            f"{stored_state} but its ledger entries add up to {summed}"
        )
    if team_id != s.team_id:
        verdict.problems.append(
            f"pack {pack_id} is in team {team_id!r} but its ledger puts it in {s.team_id!r}"
        )
    if purchase_time != s.purchase_time:
        verdict.problems.append(
            f"pack {pack_id}: purchase time {purchase_time} is not its purchase "
            f"entry's ({s.purchase_time})"
        )
    elif expire_time != t2i(add_one_year(i2t(purchase_time))):
        verdict.problems.append(
            f"pack {pack_id}: expire time {expire_time} is not one year after its purchase"
        )
    # T4: an expired pack keeps nothing remaining; only an expired one has expiry entries.
    if remaining if expired else s.expiry_entries:
        verdict.problems.append(
            f"pack {pack_id}: marked {'expired' if expired else 'not expired'} with "
            f"{remaining} tokens remaining and {s.expiry_entries} expiry entries"
        )
