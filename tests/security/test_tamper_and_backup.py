"""Tamper-evident ledger and online backups (issue 6: verify, backup).

The ledger's hash chain and the packs' sums are checked by
``python -m server verify``; an edit made by hand with sqlite3 is found and
named. ``python -m server backup`` copies a database while the server runs.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.grpcurl import Grpcurl
from tests.support import ADMIN_TOKEN, REPO, ServerThread, running

A = "tessera.v1.AdminService/"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _history(srv: ServerThread) -> list[str]:
    """Purchases, a move and an expiry: every kind of entry but holds."""
    admin = Grpcurl(srv.target, ADMIN_TOKEN)
    try:
        admin(A + "CreateTeam", {"team_id": "acme"})
        admin(A + "CreateTeam", {"team_id": "beta"})
        packs = [
            admin(A + "PurchaseTokens", {"team_id": "acme", "tokens": n, "request_id": f"r{n}"})[
                "token_pack"
            ]["pack_id"]
            for n in (100, 250, 40)
        ]
        admin(A + "MoveTokenPack", {"pack_id": packs[1], "to_team_id": "beta"})
        admin(A + "AdvanceClock", {"by": f"{367 * 86400}s"})  # T4: every pack expires
    finally:
        admin.close()
    return packs


def test_t6_verify_accepts_an_untouched_ledger(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        _history(srv)
    result = _cli("verify", "--db", str(db))
    assert result.returncode == 0, result.stdout + result.stderr
    # 3 purchases + MOVE_OUT + MOVE_IN + 3 expiries
    assert "ok: 8 ledger entries chained, 3 packs add up" in result.stdout


def test_t6_verify_names_the_first_entry_edited_by_hand(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        _history(srv)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE ledger SET amount = 1000 WHERE seq = 2")
    result = _cli("verify", "--db", str(db))
    assert result.returncode == 1
    assert "ledger entry 000000000002" in result.stdout
    assert "does not match its hash" in result.stdout


def test_t6_verify_finds_a_deleted_entry(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        _history(srv)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM ledger WHERE seq = 4")
    result = _cli("verify", "--db", str(db))
    assert result.returncode == 1
    assert "ledger entry 000000000004 is missing" in result.stdout


def test_t6_verify_finds_a_pack_whose_state_disagrees_with_its_entries(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        packs = _history(srv)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE packs SET consumed = consumed + 5 WHERE pack_id = ?", (packs[0],))
    result = _cli("verify", "--db", str(db))
    assert result.returncode == 1
    assert f"pack {packs[0]}" in result.stdout


def test_backup_while_running_is_consistent_and_restores(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    copy = tmp_path / "backup" / "copy.db"
    with running(db) as srv:
        _history(srv)
        result = _cli("backup", "--db", str(db), "--to", str(copy))  # server still running
        assert result.returncode == 0, result.stderr
    assert _cli("verify", "--db", str(copy)).returncode == 0
    with running(copy) as srv:  # restoring is starting the server on the copy
        admin = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            packs = admin(A + "ListTokenPacks", {"team_id": "acme"})["packs"]
        finally:
            admin.close()
    assert sorted(int(p["tokens"]) for p in packs) == [40, 100]
    assert {p["state"] for p in packs} == {"PACK_STATE_EXPIRED"}


def test_backup_refuses_to_overwrite(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        _history(srv)
    target = tmp_path / "exists.db"
    target.write_bytes(b"keep me")
    result = _cli("backup", "--db", str(db), "--to", str(target))
    assert result.returncode == 2
    assert target.read_bytes() == b"keep me"


def test_t6_the_chain_continues_across_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv:
        _history(srv)
    with running(db) as srv:  # the next entry chains to the last stored one
        admin = Grpcurl(srv.target, ADMIN_TOKEN)
        try:
            admin(A + "PurchaseTokens", {"team_id": "acme", "tokens": 5, "request_id": "after"})
        finally:
            admin.close()
    result = _cli("verify", "--db", str(db))
    assert result.returncode == 0, result.stdout
    assert "ok: 9 ledger entries chained, 4 packs add up" in result.stdout
