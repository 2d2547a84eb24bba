"""Operators' offline tools: ``verify`` the ledger, ``backup`` a live database.

``python -m server verify --db PATH`` walks the ledger in order, recomputing
each entry's chain hash (``server.domain.ledger.entry_digest``), then checks
that every pack's entries add up to its stored state (RULES T6). It exits 0
when all is well, else 1 naming the first bad entry or pack.

``python -m server backup --db PATH --to FILE`` copies the database with
SQLite's online backup API: a consistent snapshot even while the server is
writing (WAL readers do not block the writer). Restoring is starting the
server on the copy.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from server.domain.ledger import GENESIS_HASH, EntryKind, entry_digest

LEDGER_SQL = (
    "SELECT seq, time, kind, team_id, pack_id, amount, remaining_delta, held_delta, "
    "session_id, user_id, product_id, hash FROM ledger ORDER BY seq"
)
PACKS_SQL = "SELECT pack_id, team_id, tokens, remaining, held, consumed, expired_tokens FROM packs"


@dataclass
class Verdict:
    entries: int = 0
    packs: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Sums:
    remaining: int = 0
    held: int = 0
    consumed: int = 0
    expired: int = 0
    purchased: int = 0


def _connect_read_only(db: Path) -> sqlite3.Connection:
    if not db.exists():
        raise FileNotFoundError(f"no database at {db}")
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def verify(db: Path) -> Verdict:
    """Check the chain, then the sums; the first broken link is reported and
    the walk stops there (everything after it is suspect)."""
    verdict = Verdict()
    sums: dict[str, _Sums] = defaultdict(_Sums)
    with _connect_read_only(db) as conn:
        prev = GENESIS_HASH
        expected_seq = 1
        for row in conn.execute(LEDGER_SQL):
            seq, time_us, kind, team_id, pack_id, amount, rd, hd, sid, uid, pid, stored = row
            verdict.entries += 1
            if seq != expected_seq:
                verdict.problems.append(
                    f"ledger entry {expected_seq:012d} is missing (next stored is {seq:012d})"
                )
                return verdict
            digest = entry_digest(
                prev, seq, time_us, kind, team_id, pack_id, amount, rd, hd, sid, uid, pid
            )
            if digest != stored:
                verdict.problems.append(
                    f"ledger entry {seq:012d} ({kind} of {amount} on pack {pack_id}) does not "
                    "match its hash: it or an entry before it was altered"
                )
                return verdict
            prev = stored
            expected_seq += 1
            s = sums[pack_id]
            s.remaining += rd
            s.held += hd
            if kind == EntryKind.CAPTURE.value:
                s.consumed += amount
            elif kind == EntryKind.EXPIRY.value:
                s.expired += amount
            elif kind == EntryKind.PURCHASE.value:
                s.purchased += amount
        for pack_id, _team, tokens, remaining, held, consumed, expired in conn.execute(PACKS_SQL):
            verdict.packs += 1
            s = sums.get(pack_id, _Sums())
            stored_state = (tokens, remaining, held, consumed, expired)
            summed = (s.purchased, s.remaining, s.held, s.consumed, s.expired)
            if stored_state != summed:
                verdict.problems.append(
                    f"pack {pack_id}: stored tokens/remaining/held/consumed/expired "
                    f"{stored_state} but its ledger entries add up to {summed}"
                )
    return verdict


def backup(db: Path, to: Path) -> int:
    """Copy ``db`` to ``to`` consistently while the server may be writing;
    returns the number of pages copied."""
    if to.exists():
        raise FileExistsError(f"{to} exists; choose a new file")
    to.parent.mkdir(parents=True, exist_ok=True)
    with _connect_read_only(db) as src, sqlite3.connect(to) as dst:
        src.backup(dst, pages=4096)
        pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
    return pages


# Each tool's one line of help, also listed by the server's --help (server/__main__.py).
COMMANDS = {
    "verify": "check the ledger's hash chain and every pack's sums",
    "backup": "copy a (running) server's database consistently",
    "rotate-signing-key": "add a new lease-signing key (used after the next start); old ones "
    "stay published",
}


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m server", description="Tessera operator tools")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help=COMMANDS["verify"])
    v.add_argument("--db", type=Path, default=Path("var/tessera.db"))
    b = sub.add_parser("backup", help=COMMANDS["backup"])
    b.add_argument("--db", type=Path, default=Path("var/tessera.db"))
    b.add_argument("--to", type=Path, required=True)
    r = sub.add_parser("rotate-signing-key", help=COMMANDS["rotate-signing-key"])
    r.add_argument("--db", type=Path, default=Path("var/tessera.db"))
    a = p.parse_args(argv)
    try:
        if a.command == "verify":
            verdict = verify(a.db)
            if verdict.ok:
                print(f"ok: {verdict.entries} ledger entries chained, {verdict.packs} packs add up")
                return 0
            for problem in verdict.problems:
                print(f"BAD: {problem}")
            return 1
        if a.command == "rotate-signing-key":
            from server import leases
            from server.clock import SystemClock

            key = leases.rotate(leases.key_path(a.db), SystemClock().now())
            print(f"new signing key {key.key_id}; restart the server to sign with it")
            return 0
        pages = backup(a.db, a.to)
        print(f"backed up {a.db} to {a.to} ({pages} pages); start the server on it to restore")
        return 0
    except (OSError, sqlite3.Error) as exc:
        print(f"python -m server {a.command}: {exc}", file=sys.stderr)
        return 2
