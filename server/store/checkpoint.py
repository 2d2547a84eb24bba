"""The ledger's head, anchored outside the database (issue 12, point 2).

The hash chain (``server/domain/ledger.py``) shows an entry altered or removed
in the middle, but not the newest entries removed together with their packs:
what is left is still a valid chain. So after every commit that wrote ledger
entries the store writes ``PATH.ledger-head``: ``{"seq": N, "hash": H}``, the
last entry's sequence number and chain hash. Sequence numbers run 1..N without
a gap (``verify`` checks it), so ``seq`` is also the number of entries.

The audit trail (RULES AD2, ``server/domain/audit.py``) is a second hash chain
with the same weakness, so the same line carries its head too: ``aseq``,
``ahash``, the last audit event's number and hash. One line for both chains
rather than a second file: they are moved by the same commits, so one write
after a commit keeps them together (two files could be torn apart by a crash
between their writes), a backup writes one checkpoint as before, and a line of
a database with no audit event is the same bytes as before the audit trail
existed (its keys are left out while there is no event), so existing
checkpoints stay valid. Both fit the fixed-size line: a line with both is written without spaces
(212 bytes and the digits of three numbers: 255 leave room for a generation and
two sequence numbers of 14 digits each).

The checkpoint is written after the commit, never before, so it may be behind
the database (a crash between the two: harmless, the next commit catches up)
but never ahead of it. When the store closes it writes ``"stopped": true``: the
database is then exactly at the checkpoint, so entries past it were added by
someone else while no server ran. The flag goes back to false as soon as a
server opens the database again.

A database whose chain stops short of the checkpoint, passes through its
``seq`` with another hash, or goes past a stopped checkpoint lost, rewrote or
gained entries: the server refuses to start on it and ``verify`` says BAD.
Entries appended while a server runs, or after a crash, cannot be told from
the last commit before it. Someone who can rewrite both the database and this
file can forge a history; keep backups (and a copy of the checkpoint) elsewhere.

The file stays open and is written in place: two fixed-size JSON lines, used in
turn, each with a generation number and a checksum. A write torn by a power
loss spoils only the line being written; the reader takes the valid line of
the highest generation. The writes after commits are not flushed to disk
(``fdatasync`` would add 0.12 ms to each commit that carries ledger entries):
a power loss can only lose the newest lines, leaving the checkpoint behind the
database, which is allowed. The line a store writes when it opens (no longer
stopped) and the one it writes when it closes (stopped) are flushed, so a
power loss never brings back a "stopped" that a later start had cleared.
(Replacing the file by rename instead costs 0.8 ms a write on ext4, which
flushes on rename.)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from server.store.files import LEDGER_HEAD_SUFFIX, OWNER_ONLY, private_dir, side_path


class CheckpointUnreadable(OSError):
    pass


class LedgerMismatch(OSError):
    """The database's ledger does not reach its checkpoint: the server must not start."""


@dataclass(frozen=True, slots=True)
class LedgerHead:
    seq: int  # 0: no entry yet
    hash: str
    stopped: bool = False  # written by a store that closed: nothing can follow
    audit_seq: int = 0  # the audit trail's head, as ``seq`` and ``hash`` the ledger's
    audit_hash: str = ""


EMPTY = LedgerHead(0, "")
LAST_ENTRY_SQL = "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1"
SLOT = 256  # bytes per line; one line is far shorter, and both fit in one disk page


def checkpoint_path(db: Path) -> Path:
    return side_path(db, LEDGER_HEAD_SUFFIX)


def _sum(gen: int, head: LedgerHead) -> str:
    text = f"{gen}:{head.seq}:{head.hash}:{head.stopped}"
    if head.audit_seq:
        text += f":{head.audit_seq}:{head.audit_hash}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _line(gen: int, head: LedgerHead) -> bytes:
    data: dict[str, object] = {
        "gen": gen,
        "seq": head.seq,
        "hash": head.hash,
        "stopped": head.stopped,
    }
    if not head.audit_seq:
        data["sum"] = _sum(gen, head)
        return json.dumps(data).encode().ljust(SLOT - 1) + b"\n"
    data["aseq"], data["ahash"] = head.audit_seq, head.audit_hash
    data["sum"] = _sum(gen, head)
    return json.dumps(data, separators=(",", ":")).encode().ljust(SLOT - 1) + b"\n"


def _parse(line: bytes) -> tuple[int, LedgerHead] | None:
    try:
        data = json.loads(line)
        gen = int(data["gen"])
        head = LedgerHead(
            int(data["seq"]),
            str(data["hash"]),
            data["stopped"] is True,
            # (``audit_seq``/``audit_hash``: as the releases before fc69ae6 wrote them)
            int(data.get("aseq", data.get("audit_seq", 0))),
            str(data.get("ahash", data.get("audit_hash", ""))),
        )
        good = data["sum"] == _sum(gen, head) and head.seq >= 0 and head.audit_seq >= 0
    except (ValueError, KeyError, TypeError):
        return None
    return (gen, head) if good else None


def _newest(raw: bytes) -> tuple[int, LedgerHead] | None:
    lines = [_parse(raw[i : i + SLOT]) for i in range(0, min(len(raw), 2 * SLOT), SLOT)]
    valid = [found for found in lines if found is not None]
    return max(valid, key=lambda found: found[0]) if valid else None


def read(path: Path) -> LedgerHead | None:
    """The anchored head, or None when there is no checkpoint (or an empty file)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if not raw:
        return None
    newest = _newest(raw)
    if newest is None:
        raise CheckpointUnreadable(
            f"ledger checkpoint {path} is unreadable (neither of its two lines is whole): "
            "restore it with its database from a backup, or remove it: the next start then "
            "records the ledger's end anew, and what came before is checked by the chain "
            "alone (python -m server verify)"
        )
    return newest[1]


class Anchor:
    """The checkpoint file, held open by the store that writes it."""

    def __init__(self, path: Path, *, exclusive: bool = False) -> None:
        private_dir(path.parent)
        flags = os.O_RDWR | os.O_CREAT | (os.O_EXCL if exclusive else 0)
        self.path = path
        self._fd = os.open(path, flags, OWNER_ONLY)
        newest = _newest(os.pread(self._fd, 2 * SLOT, 0))
        self._gen = newest[0] if newest else 0

    def write(self, head: LedgerHead, *, sync: bool = True) -> None:
        """Over the older of the two lines; ``sync``: on disk before returning."""
        self._gen += 1
        os.pwrite(self._fd, _line(self._gen, head), (self._gen % 2) * SLOT)
        if sync:
            os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def write(path: Path, head: LedgerHead) -> None:
    """Write one checkpoint (a backup's, a test's) and close the file."""
    anchor = Anchor(path)
    try:
        anchor.write(head)
    finally:
        anchor.close()


def problem(anchor: LedgerHead, last_seq: int, hash_at_anchor: str | None) -> str | None:
    """What is wrong with a ledger whose last entry is ``last_seq`` and whose entry
    at the anchor's seq has ``hash_at_anchor`` (None: no such entry); None if it
    reaches the anchor with the anchor's hash."""
    return _short(_LEDGER, anchor.seq, anchor.hash, anchor.stopped, last_seq, hash_at_anchor)


def audit_problem(anchor: LedgerHead, last_seq: int, hash_at_anchor: str | None) -> str | None:
    """``problem`` for the audit trail: its last event is ``last_seq``, the event at
    the anchor's ``audit_seq`` has ``hash_at_anchor``."""
    return _short(
        _AUDIT, anchor.audit_seq, anchor.audit_hash, anchor.stopped, last_seq, hash_at_anchor
    )


@dataclass(frozen=True)
class _Chain:
    name: str
    one: str
    many: str


_LEDGER = _Chain("ledger", "entry", "entries")
_AUDIT = _Chain("audit trail", "event", "events")


def _short(
    c: _Chain, seq: int, digest: str, stopped: bool, last_seq: int, hash_at_anchor: str | None
) -> str | None:
    if stopped and last_seq > seq:
        return (
            f"the {c.name} goes on to {c.one} {last_seq:012d} but its server stopped at "
            f"{seq:012d}: {c.many} were added while no server ran"
        )
    if seq == 0:
        return None
    if last_seq < seq:
        return (
            f"the {c.name} ends at {c.one} {last_seq:012d} but its checkpoint says "
            f"{seq:012d}: the newest {c.many} were deleted, or the database was "
            "replaced by an older copy"
        )
    if hash_at_anchor != digest:
        return (
            f"{c.name} {c.one} {seq:012d} does not have the hash its checkpoint "
            f"recorded: the {c.name} was rewritten"
        )
    return None
