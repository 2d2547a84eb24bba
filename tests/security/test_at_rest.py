"""At rest (issue 12, points 1, 2 and 9; RULES H4).

1. Every file the server makes is owner-only, and no invitation token can be
   read or redeemed from the database: it is derived from the secret key file
   when the outbox is read, never stored.
2. ``verify`` sees a row deleted, added or changed in packs and ledger, the end
   of the chain included (the checkpoint beside the database), and the server
   refuses to start on a ledger cut short.
9. A backup restores into the same deployment: admin token, signing keys,
   secret key, and a checkpoint of its own.
H4. A second server on the same database refuses to start and says why; so does a
    server on a database file with a second name (a hard link).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from client_sdk.leases import keys_from_response, verify_lease_signature
from server.domain.ledger import entry_digest
from server.store import checkpoint
from server.store import lock as lock_module
from server.store.checkpoint import LedgerHead, LedgerMismatch
from server.store.lock import DatabaseHardLinked, DatabaseInUse
from tessera_api.tessera.v1 import licensing_service_pb2 as lic
from tessera_api.tessera.v1 import licensing_service_pb2_grpc as lic_grpc
from tests.grpcurl import Grpcurl
from tests.security.test_signed_leases import _entitle, _provision
from tests.security.test_tamper_and_backup import _cli, _history
from tests.support import ADMIN_TOKEN, REPO, T0, ServerProcess, ServerThread, running
from tests.test_startup import start_server

A = "tessera.v1.AdminService/"


@contextmanager
def _admin(target: str, token: str = ADMIN_TOKEN) -> Iterator[Grpcurl]:
    client = Grpcurl(target, token)
    try:
        yield client
    finally:
        client.close()


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    """A permissive umask, as on many machines (child processes inherit it)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _invite(admin: Grpcurl, email: str = "bob@example.com") -> str:
    """Invite a new user to acme; the token the outbox shows for them."""
    admin(A + "AssignUsers", {"team_id": "acme", "users": [f"Bob <{email}>"], "all_products": True})
    return _outbox_token(admin, email)


def _outbox_token(admin: Grpcurl, email: str) -> str:
    notes = admin(A + "ListNotifications", {"team_id": "acme", "user_id": email})
    tokens = [n.get("invitation_token", "") for n in notes.get("notifications", [])]
    return tokens[-1] if tokens else ""


def _refused_process(db: Path) -> subprocess.CompletedProcess[str]:
    """``python -m server`` on ``db``, a start expected to be refused: its exit and output."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "server", "--db", str(db), "--listen", "127.0.0.1:0"),
            *("--test-clock", T0, "--admin-token", ADMIN_TOKEN),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _refused_start(db: Path, error: type[BaseException], match: str) -> str:
    """Start a server in this process on ``db``, expecting ``error``; its message."""
    srv = ServerThread(db)
    try:
        with pytest.raises(error, match=match) as refused:
            srv.start()
    finally:
        srv.stop()
    return str(refused.value)


def _modes(root: Path) -> dict[str, int]:
    """Every file and directory under ``root`` (itself excluded): its permission bits."""
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}


# -- 1. secrets at rest --------------------------------------------------------------------


def _process(db: Path) -> ServerProcess:
    """``python -m server`` on ``db`` with no ``--admin-token``: it keeps its token beside
    the database (put there first, so that the helpers' ADMIN_TOKEN works)."""
    token_file = db.parent / (db.name + ".admin-token")
    if not token_file.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(ADMIN_TOKEN + "\n")
    return ServerProcess(db, admin_token=None)


def test_issue12_every_file_the_server_and_backup_create_is_owner_only(tmp_path: Path) -> None:
    deployment = tmp_path / "var" / "tessera"
    db = deployment / "tessera.db"
    with _umask(0o022):  # files would be 0644 and directories 0755 if left to it
        srv = ServerProcess(db, admin_token=None).start()
        try:
            token = (deployment / "tessera.db.admin-token").read_text().strip()
            with _admin(srv.target, token) as admin:
                admin(A + "CreateTeam", {"team_id": "acme"})
                admin(A + "PurchaseTokens", {"team_id": "acme", "tokens": 5, "request_id": "r"})
                assert _invite(admin).startswith("tsi_")
            running_modes = _modes(deployment)
            backup = _cli("backup", "--db", str(db), "--to", str(tmp_path / "bk" / "x.db"))
            assert backup.returncode == 0, backup.stderr
        finally:
            srv.terminate()
    stopped_modes = _modes(deployment)
    assert {"tessera.db-wal", "tessera.db-shm", "tessera.db.lock"} <= running_modes.keys()
    assert {
        "tessera.db",
        "tessera.db.admin-token",
        "tessera.db.signing-keys",
        "tessera.db.secret-key",
        "tessera.db.ledger-head",
    } <= stopped_modes.keys()
    assert {"x.db", "x.db.admin-token", "x.db.signing-keys", "x.db.secret-key"} <= (
        _modes(tmp_path / "bk").keys()
    )
    for modes in (running_modes, stopped_modes, _modes(tmp_path / "bk")):
        assert {name: oct(m) for name, m in modes.items() if m & 0o077} == {}
    assert stat.S_IMODE((tmp_path / "var").stat().st_mode) == 0o700  # made by the server
    assert stat.S_IMODE((tmp_path / "bk").stat().st_mode) == 0o700  # made by backup


def test_issue12_files_an_older_release_left_readable_are_tightened_at_start(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv, _admin(srv.target) as admin:
        admin(A + "CreateTeam", {"team_id": "acme"})
    for path in tmp_path.iterdir():
        path.chmod(0o644)
    with running(db):
        modes = _modes(tmp_path)
    assert modes["tessera.db"] == 0o600
    assert {name: oct(m) for name, m in modes.items() if m & 0o077} == {}


def test_issue12_no_invitation_token_in_the_database_and_a_copy_of_it_redeems_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "live" / "tessera.db"
    with running(db) as srv, _admin(srv.target) as admin:
        admin(A + "CreateTeam", {"team_id": "acme"})
        token = _invite(admin)
        assert token.startswith("tsi_")
        stored = b"".join(p.read_bytes() for p in db.parent.glob("tessera.db*"))
        assert token.encode() not in stored  # database, -wal, -shm, every side file
        assert token[4:].encode() not in stored
    # A thief with the database alone (no secret key file) gets no token that works.
    stolen = tmp_path / "stolen" / "tessera.db"
    stolen.parent.mkdir()
    shutil.copy(db, stolen)
    with running(stolen) as srv, _admin(srv.target) as admin:
        notes = admin(A + "ListNotifications", {"team_id": "acme"})["notifications"]
        assert [n["kind"] for n in notes] == ["NOTIFICATION_KIND_INVITATION"]
        assert [n.get("invitation_token", "") for n in notes] == [""]


def test_issue12_the_outbox_token_survives_a_restart_and_only_while_it_can_be_used(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv, _admin(srv.target) as admin:
        admin(A + "CreateTeam", {"team_id": "acme"})
        first = _invite(admin)
        admin(A + "ResendInvitation", {"team_id": "acme", "user_id": "bob@example.com"})
        token = _outbox_token(admin, "bob@example.com")
        assert token.startswith("tsi_") and token != first
    with running(db) as srv, _admin(srv.target) as admin:  # remade from the key file
        notes = admin(A + "ListNotifications", {"team_id": "acme"})["notifications"]
        assert [n.get("invitation_token", "") for n in notes] == ["", token]
        accepted = admin(A + "AcceptInvitation", {"invitation_token": token}, token="")
        assert accepted["user_id"] == "bob@example.com"
        assert _outbox_token(admin, "bob@example.com") == ""  # spent: no longer shown


def test_issue12_an_expired_invitation_shows_no_token(tmp_path: Path) -> None:
    with running(tmp_path / "tessera.db") as srv, _admin(srv.target) as admin:
        admin(A + "CreateTeam", {"team_id": "acme"})
        assert _invite(admin).startswith("tsi_")
        admin(A + "AdvanceClock", {"by": f"{7 * 86400}s"})  # A2: valid for 7 days
        assert _outbox_token(admin, "bob@example.com") == ""


def test_issue12_a_damaged_secret_key_stops_the_start_with_a_clear_message(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tessera.db"
    with running(db):
        pass
    (tmp_path / "tessera.db.secret-key").write_text("not a key\n")
    _refused_start(db, OSError, r"tessera\.db\.secret-key does not hold a 32-byte key")


def test_issue12_an_admin_token_file_that_is_not_utf8_stops_the_start_in_one_line(
    tmp_path: Path,
) -> None:
    """A token file a bad sector or an editor saving Latin-1 left undecodable gave a
    traceback (UnicodeDecodeError); it is refused in one line saying what to do, as
    a damaged key file is, and left as it was (it may be restored from)."""
    db = tmp_path / "tessera.db"
    token_file = tmp_path / "tessera.db.admin-token"
    token_file.write_bytes(b"tsa_caf\xe9\n")
    started = start_server("--db", str(db), "--test-clock", T0)  # no --admin-token: the file's
    assert started.returncode == 1
    assert started.stderr.splitlines() == [
        f"tessera-server: {token_file} is damaged (not UTF-8 text): restore it from a backup "
        "or from another server's copy, or remove it: the next start makes a new admin "
        "token, which the operators then use"
    ]
    assert token_file.read_bytes() == b"tsa_caf\xe9\n"


def test_issue12_the_upgrade_blanks_stored_tokens_and_the_emailed_one_still_works(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv, _admin(srv.target) as admin:
        admin(A + "CreateTeam", {"team_id": "acme"})
        _invite(admin)
    # As an earlier release left it: schema 4, a random token stored in the outbox.
    emailed = "tsi_" + "emailed-by-an-older-release-0123456789abcdefg"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE notifications SET invitation_token = ?", (emailed,))
        conn.execute(
            "UPDATE invitations SET token_hash = ?",
            (hashlib.sha256(emailed.encode()).digest(),),
        )
        conn.execute("ALTER TABLE teams DROP COLUMN low_balance_threshold")  # came in 6
        # ... and what 7 made (admin keys, the audit trail, what alerts are about)
        conn.execute("DROP TABLE admin_keys")
        conn.execute("DROP TABLE audit_events")
        for column in ("pack_id", "tokens", "expire_time", "product_id"):
            conn.execute(f"ALTER TABLE notifications DROP COLUMN {column}")
        conn.execute("ALTER TABLE teams DROP COLUMN low_balance_alerted")
        conn.execute("ALTER TABLE sessions DROP COLUMN lease_start")  # came in 9
        conn.execute("ALTER TABLE packs DROP COLUMN bought_by")  # came in 11
        conn.execute("DROP TABLE audit_teams")  # came in 12
        conn.execute("DROP INDEX ledger_team_captures")  # migration 13's
        conn.execute("DROP INDEX ledger_team_moves")
        conn.execute("DROP INDEX activity_team_long")  # migration 14's
        conn.execute("DROP TABLE sessions_older_loaded")  # migration 16's
        conn.execute("PRAGMA user_version = 4")
    conn.close()
    # That release's checkpoint knew no audit trail.
    anchor = checkpoint.checkpoint_path(db)
    head = checkpoint.read(anchor)
    assert head is not None
    checkpoint.write(anchor, dataclasses.replace(head, audit_seq=0, audit_hash=""))
    with running(db) as srv, _admin(srv.target) as admin:
        assert _outbox_token(admin, "bob@example.com") == ""
        accepted = admin(A + "AcceptInvitation", {"invitation_token": emailed}, token="")
        assert accepted["user_id"] == "bob@example.com"
    assert emailed[4:].encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir())


# -- 2. verify sees every row deleted, added or changed ---------------------------------------


def _verify(db: Path) -> str:
    result = _cli("verify", "--db", str(db))
    assert result.returncode == (0 if result.stdout.startswith("ok:") else 1), result
    return result.stdout


def _edit(db: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            for sql, params in statements:
                conn.execute(sql, params)
    finally:
        conn.close()


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, list[str]]:
    """A stopped server's database: 3 purchases, a move, 3 expiries (8 entries)."""
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        packs = _history(srv)
    assert _verify(db).startswith("ok: 8 ledger entries chained, 3 packs add up")
    return db, packs


def test_issue12_verify_finds_a_deleted_pack_row(history: tuple[Path, list[str]]) -> None:
    db, packs = history
    _edit(db, ("DELETE FROM packs WHERE pack_id = ?", (packs[0],)))
    out = _verify(db)
    assert f"BAD: pack {packs[0]} has ledger entries but no pack row" in out


def test_issue12_verify_finds_the_newest_entries_deleted_with_their_pack(
    history: tuple[Path, list[str]],
) -> None:
    db, _packs = history
    with running(db) as srv, _admin(srv.target) as admin:
        newest = admin(A + "PurchaseTokens", {"team_id": "acme", "tokens": 7, "request_id": "n"})
    pack_id = newest["token_pack"]["pack_id"]
    _edit(
        db,
        ("DELETE FROM ledger WHERE pack_id = ?", (pack_id,)),
        ("DELETE FROM packs WHERE pack_id = ?", (pack_id,)),
    )
    out = _verify(db)
    assert "BAD: the ledger ends at entry 000000000008 but its checkpoint says 000000000009" in out


def test_issue12_a_server_refuses_to_start_on_a_ledger_cut_short(
    history: tuple[Path, list[str]],
) -> None:
    db, _packs = history
    _edit(db, ("DELETE FROM ledger WHERE seq >= 7", ()))  # the last two expiries
    message = _refused_start(db, LedgerMismatch, "refusing to start")
    assert "entry 000000000006 but its checkpoint says 000000000008" in message
    assert f"python -m server verify --db {db}" in message
    assert f"remove {db}.ledger-head" in message
    result = _refused_process(db)  # as an operator meets it: one line, exit 1, no traceback
    assert result.returncode == 1
    assert "refusing to start" in result.stderr and "Traceback" not in result.stderr


def test_issue12_verify_finds_a_pack_row_added_by_hand(history: tuple[Path, list[str]]) -> None:
    db, _packs = history
    _edit(
        db,
        (
            # Empty, so that no sum gives it away: only its missing entries do.
            "INSERT INTO packs SELECT 'pk_forged', team_id, 0, purchase_time, expire_time, "
            "'forged', 0, 0, 0, 0, 0, team_id FROM packs LIMIT 1",
            (),
        ),
    )
    assert "BAD: pack pk_forged has no ledger entries" in _verify(db)


def test_issue12_verify_finds_entries_appended_while_no_server_ran(
    history: tuple[Path, list[str]],
) -> None:
    """A purchase forged at the end with a valid chain hash and a matching pack."""
    db, _packs = history
    conn = sqlite3.connect(db)
    seq, prev = conn.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
    time_us = conn.execute("SELECT MAX(time) FROM ledger").fetchone()[0]
    conn.close()
    fields = (seq + 1, time_us, "PURCHASE", "acme", "pk_forged", 500, 500, 0, "", "", "")
    digest = entry_digest(prev, *fields)
    _edit(
        db,
        ("INSERT INTO ledger VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", (*fields, digest)),
        (
            "INSERT INTO packs VALUES ('pk_forged','acme',500,?,?,'f',500,0,0,0,0,'acme')",
            (time_us, time_us + 365 * 86_400_000_000),
        ),
    )
    out = _verify(db)
    assert "BAD: the ledger goes on to entry 000000000009 but its server stopped at" in out


@pytest.mark.parametrize(
    ("column", "value", "complaint"),
    [
        ("team_id", "'beta'", "is in team 'beta' but its ledger puts it in 'acme'"),
        ("purchase_time", "purchase_time + 1", "is not its purchase entry's"),
        ("expire_time", "expire_time + 86400000000", "is not one year after its purchase"),
        ("expired", "0", "marked not expired with 0 tokens remaining and 1 expiry entries"),
    ],
)
def test_issue12_verify_finds_a_pack_column_changed(
    history: tuple[Path, list[str]], column: str, value: str, complaint: str
) -> None:
    db, packs = history
    _edit(db, (f"UPDATE packs SET {column} = {value} WHERE pack_id = ?", (packs[0],)))  # noqa: S608
    out = _verify(db)
    assert out.startswith(f"BAD: pack {packs[0]}")
    assert complaint in out


def test_issue12_a_checkpoint_behind_the_database_is_a_crash_not_tampering(
    history: tuple[Path, list[str]],
) -> None:
    """A crash between a commit and its checkpoint: verify and a restart accept it."""
    db, _packs = history
    anchor = db.parent / (db.name + ".ledger-head")
    conn = sqlite3.connect(db)
    (older,) = conn.execute("SELECT hash FROM ledger WHERE seq = 6").fetchone()
    (newest,) = conn.execute("SELECT hash FROM ledger WHERE seq = 8").fetchone()
    conn.close()
    checkpoint.write(anchor, LedgerHead(6, older))
    assert _verify(db).startswith("ok: 8 ledger entries chained")
    with running(db):
        pass
    head = checkpoint.read(anchor)  # (which also carries the audit trail's head)
    assert head is not None and (head.seq, head.hash, head.stopped) == (8, newest, True)


def test_issue12_the_checkpoint_follows_each_commit_while_verify_reads_beside_the_server(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tessera.db"
    anchor = tmp_path / "tessera.db.ledger-head"
    with running(db) as srv, _admin(srv.target) as admin:
        admin(A + "CreateTeam", {"team_id": "acme"})
        for n in range(3):
            admin(A + "PurchaseTokens", {"team_id": "acme", "tokens": 5, "request_id": f"r{n}"})
        srv.call(srv.server.store.barrier())  # the checkpoint follows the answer
        running_head = checkpoint.read(anchor)
        assert _verify(db).startswith("ok: 3 ledger entries chained, 3 packs add up")
    assert running_head is not None and (running_head.seq, running_head.stopped) == (3, False)
    assert checkpoint.read(anchor) == dataclasses.replace(running_head, stopped=True)


# -- 9. backups keep the secrets -----------------------------------------------------------


def test_issue12_a_backup_restores_the_admin_token_signing_keys_invitations_and_ledger(
    tmp_path: Path,
) -> None:
    db = tmp_path / "var" / "tessera.db"
    copy = tmp_path / "backups" / "tessera-copy.db"
    srv = _process(db).start()
    try:
        with _admin(srv.target) as admin, grpc.insecure_channel(srv.target) as channel:
            stub = lic_grpc.LicensingServiceStub(channel)
            lease = _entitle(stub, _provision(srv)).lease
            keys = {k.key_id for k in stub.GetSigningKeys(lic.GetSigningKeysRequest()).keys}
            token = _invite(admin)
            assert _cli("verify", "--db", str(db)).returncode == 0  # beside the running server
            result = _cli("backup", "--db", str(db), "--to", str(copy))
            assert result.returncode == 0, result.stderr
            admin(A + "CreateTeam", {"team_id": "after-the-backup"})  # not in the copy
    finally:
        srv.terminate()
    assert f"--db {copy}" in result.stdout
    assert _verify(copy).startswith("ok: 2 ledger entries chained, 1 packs add up")
    (db.parent / "tessera.db.admin-token").unlink()  # the copy carries its own
    restored = _process(copy).start()
    try:
        with _admin(restored.target) as admin, grpc.insecure_channel(restored.target) as ch:
            stub = lic_grpc.LicensingServiceStub(ch)
            published = stub.GetSigningKeys(lic.GetSigningKeysRequest())
            assert {k.key_id for k in published.keys} == keys
            checked = verify_lease_signature(lease, keys_from_response(published))
            assert checked.user_id == "ann@example.com"
            accepted = admin(A + "AcceptInvitation", {"invitation_token": token}, token="")
            assert accepted["user_id"] == "bob@example.com"
            teams = admin(A + "ListTeams", {}).get("teams", [])
            assert [t["team_id"] for t in teams] == ["acme"]
    finally:
        restored.terminate()
    assert (copy.parent / "tessera-copy.db.admin-token").read_text().strip() == ADMIN_TOKEN


def test_issue12_a_backup_of_a_ledger_cut_short_is_refused(
    history: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """A backup must not give a tampered ledger a clean checkpoint."""
    db, _packs = history
    _edit(db, ("DELETE FROM ledger WHERE seq = 8", ()))
    copy = tmp_path / "copy" / "x.db"
    result = _cli("backup", "--db", str(db), "--to", str(copy))
    assert result.returncode == 2
    assert "not backing up" in result.stderr
    assert not copy.parent.exists()  # no file of it, nor the folder made for it


# -- H4. one server per database --------------------------------------------------------------


def test_h4_a_second_server_on_the_same_database_refuses_to_start(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    first = ServerProcess(db).start()
    try:
        before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.suffix != ".lock"}
        second = _refused_process(db)
        after = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.suffix != ".lock"}
        with _admin(first.target) as admin:  # the first one serves on
            admin(A + "CreateTeam", {"team_id": "acme"})
    finally:
        assert first.terminate() == 0
    assert second.returncode == 1
    assert first.proc is not None
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"database {db} is in use by server pid {first.proc.pid}" in lines[0]
    assert before == after  # it touched nothing


def test_h4_a_lock_file_that_cannot_be_written_names_itself_and_is_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk at the first write of a start (the pid into the lock file): the
    refusal names the file, and the lock is not kept by the failed start."""
    db = tmp_path / "tessera.db"

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patched:
        patched.setattr(lock_module.os, "pwrite", full)
        with pytest.raises(OSError) as refused:
            lock_module.DatabaseLock.acquire(db)
    assert str(refused.value) == (
        f"cannot lock the database: its lock file {db}.lock cannot be written (no space left "
        "on device); if its disk is full or read-only, mend that and start again"
    )
    lock_module.DatabaseLock.acquire(db).release()  # free: the failed start let it go


def test_h4_a_second_name_for_the_database_meets_the_same_lock(tmp_path: Path) -> None:
    """A symbolic link to the database, or to its directory, is the same file to
    SQLite: a second server through it would write beside the first (the probe's
    alias.db reached a UNIQUE failure on audit_events.seq; a write that did not
    collide would have gone through)."""
    home = tmp_path / "data"
    home.mkdir()
    db = home / "tessera.db"
    (tmp_path / "alias.db").symlink_to(db)
    (tmp_path / "elsewhere").symlink_to(home)
    held = lock_module.DatabaseLock.acquire(db)
    try:
        for alias in (tmp_path / "alias.db", tmp_path / "elsewhere" / "tessera.db"):
            with pytest.raises(DatabaseInUse) as refused:
                lock_module.DatabaseLock.acquire(alias)
            assert f"in use by server pid {os.getpid()} (lock {db}.lock)" in str(refused.value)
    finally:
        held.release()
    assert sorted(p.name for p in home.iterdir()) == ["tessera.db.lock"]


def _linked(tmp_path: Path) -> tuple[Path, Path]:
    """A real database, made by a server that ran and stopped, and a second name for
    it (a hard link) in another directory."""
    db = tmp_path / "tessera.db"
    with running(db):
        pass
    for made in tmp_path.iterdir():  # a server gives none of its files a second name
        assert made.stat().st_nlink == 1, made
    (tmp_path / "other").mkdir()
    other = tmp_path / "other" / "copy.db"
    os.link(db, other)
    return db, other


def _files_but_locks(root: Path) -> dict[str, int]:
    """Every file under ``root`` but the lock files: its modification time."""
    files = (p for p in root.rglob("*") if p.is_file() and p.suffix != ".lock")
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in files}


def test_h4_a_database_with_a_second_hard_link_is_refused_naming_it(tmp_path: Path) -> None:
    """Each name of a hard-linked file takes its own lock, and SQLite keeps a -wal and
    -shm beside each: two servers would corrupt it. So neither name is served; the
    refusal names the file and its number of names, and lets the lock go."""
    db, other = _linked(tmp_path)
    (tmp_path / "alias.db").symlink_to(other)  # a symbolic link to one of the names
    for name in (db, other, tmp_path / "alias.db"):
        with pytest.raises(DatabaseHardLinked) as refused:
            lock_module.DatabaseLock.acquire(name)
        message = str(refused.value)
        real = os.path.realpath(name)
        shown = name if str(name) == real else f"{name} (file {real})"
        assert message.startswith(f"database {shown} has 2 names (hard links): refusing it")
        assert "two servers on two names would each keep its own and corrupt" in message
        assert f"find / -samefile {real}" in message
        assert "a copy made with python -m server backup" in message
        with open(f"{real}.lock", "rb") as lock_file:  # let go: free to take at once
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.link(db, tmp_path / "third.db")
    with pytest.raises(DatabaseHardLinked, match=f"database {db} has 3 names"):
        lock_module.DatabaseLock.acquire(db)
    (tmp_path / "third.db").unlink()
    other.unlink()
    lock_module.DatabaseLock.acquire(db).release()  # one name again: served
    with running(db):
        pass
    assert not (tmp_path / "other" / "copy.db-wal").exists()  # SQLite never opened it


def test_h4_a_server_on_a_hard_linked_database_refuses_to_start_in_one_line(
    tmp_path: Path,
) -> None:
    _db, other = _linked(tmp_path)
    before = _files_but_locks(tmp_path)
    refused = _refused_process(other)
    after = _files_but_locks(tmp_path)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr  # no traceback
    assert lines[0].startswith(f"tessera-server: database {other} has 2 names (hard links): ")
    assert "corrupt the database" in lines[0]
    assert before == after  # it touched nothing: no -wal, -shm or secret beside either name


def test_h4_a_lock_file_removed_by_hand_lets_no_second_server_in(tmp_path: Path) -> None:
    """A clean-up of the database's folder while its server runs removes PATH.lock: a
    second server made a new one, took it, and opened the database beside the first.
    The first holds the database file itself too, so the second is refused, naming
    the first's pid; once the first stops, a server starts and makes the lock again."""
    db = tmp_path / "tessera.db"
    with running(db) as first:
        (tmp_path / "tessera.db.lock").unlink()
        message = _refused_start(db, DatabaseInUse, "which holds the file itself")
        assert message == (
            f"database {db} is in use by server pid {os.getpid()}, which holds the file "
            f"itself: its lock file {db}.lock was removed or replaced while it ran; stop "
            "that server first (its next start makes the lock file again), or give this "
            "server another --db"
        )
        with _admin(first.target) as admin:  # the first one serves on
            admin(A + "CreateTeam", {"team_id": "acme"})
    with running(db) as again, _admin(again.target) as admin:  # the file goes with the server
        assert [t["team_id"] for t in admin(A + "ListTeams", {})["teams"]] == ["acme"]
    assert (tmp_path / "tessera.db.lock").exists()


def test_h4_two_servers_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db):
        _refused_start(db, DatabaseInUse, f"in use by server pid {os.getpid()}")
    with running(db):  # the lock goes with the server
        pass
