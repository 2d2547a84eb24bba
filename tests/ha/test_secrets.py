"""Every server of one database uses the same secrets directory (RULES H1, H3;
``server/ha/secrets.py``): one on another directory is refused before it makes
a file, and ``adopt-secrets`` makes another directory the database's."""

from __future__ import annotations

import errno
import os
import re
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from server import leases
from server.credentials import (
    SECRET_KEY_BYTES,
    load_or_create_admin_token,
    load_or_create_secret_key,
)
from tests.ha.test_failover import Cluster, cluster, info
from tests.security.test_tamper_and_backup import _cli
from tests.support import SERVING, wait_for
from tests.test_startup import start_server

pytestmark = pytest.mark.slow
__all__ = ["cluster"]  # the fixture, shared
ADVICE = (
    ". Every server of one database uses the same secrets directory (shared, or a copy: "
    "its admin token, signing keys and secret key); copy it from one of them and start "
    "again. Only if that key is lost for good: python -m server adopt-secrets --db URL "
    "--secrets-dir DIR"
)
SIGNED_AT = datetime(2026, 1, 1, tzinfo=UTC)
RECORDED = r"the one node 'a' recorded at \d{4}-\d\d-\d\d \d\d:\d\d UTC"


def _refusal(problem: str) -> str:
    """The pattern of the one line a refused start prints: ``problem``, the record it
    is measured against, the advice."""
    return re.escape(f"tessera-server: {problem}") + RECORDED + re.escape(ADVICE)


def _start(cluster: Cluster, secrets: Path, node_id: str) -> tuple[int, list[str]]:
    done = start_server(*("--db", cluster.url, "--secrets-dir", str(secrets), "--node-id", node_id))
    return done.returncode, done.stderr.splitlines()


@pytest.fixture
def active(cluster: Cluster) -> Cluster:
    """``a`` active on ``cluster.secrets``, which the database now records."""
    wait_for(cluster.start("a").target, SERVING)
    return cluster


def test_h1_a_server_on_an_empty_secrets_directory_is_refused_before_it_makes_a_file(
    active: Cluster, tmp_path: Path
) -> None:
    """It would make an admin token, a secret key and signing keys of its own, and,
    once elected, refuse the operators' token and sign leases with unknown keys."""
    other = tmp_path / "other-secrets"
    code, lines = _start(active, other, "b")
    assert code == 1 and len(lines) == 1
    problem = (
        f"{other} holds no secret key (tessera.secret-key), while this database's servers use "
    )
    assert re.fullmatch(_refusal(problem), lines[0]), lines[0]
    assert not other.exists()
    assert info(active.servers[0].target)["role"] == "NODE_ROLE_ACTIVE"


def test_h1_a_server_with_another_secret_key_is_refused_and_a_copy_is_a_standby(
    active: Cluster, tmp_path: Path
) -> None:
    other = tmp_path / "other-secrets"
    other.mkdir()
    (other / "tessera.secret-key").write_text("ab" * SECRET_KEY_BYTES + "\n")
    code, lines = _start(active, other, "b")
    assert code == 1 and len(lines) == 1
    problem = (
        f"the secret key in {other / 'tessera.secret-key'} is not this database's: its servers use "
    )
    assert re.fullmatch(_refusal(problem), lines[0]), lines[0]
    copy = tmp_path / "copy"
    shutil.copytree(active.secrets, copy)
    active.secrets = copy
    b = active.start("b")
    assert info(b.target)["role"] == "NODE_ROLE_STANDBY"


def test_h1_adopt_secrets_makes_another_directory_the_databases(
    active: Cluster, tmp_path: Path
) -> None:
    """For the day the database's key is lost for good: the adopted directory's
    servers start, and those still on the old one are refused."""
    new = tmp_path / "new-secrets"
    adopted = _cli("adopt-secrets", "--db", active.url, "--secrets-dir", str(new))
    assert adopted.returncode == 0, adopted.stderr
    assert "is now the secrets directory of" in adopted.stdout
    assert (new / "tessera.secret-key").exists()
    old = active.secrets
    active.secrets = new
    assert info(active.start("b").target)["role"] == "NODE_ROLE_STANDBY"
    code, lines = _start(active, old, "c")
    assert code == 1
    assert "is not this database's: its servers use the one node 'adopt-secrets'" in lines[0]


def test_h1_adopt_secrets_is_for_postgresql_only(tmp_path: Path) -> None:
    done = _cli("adopt-secrets", "--db", str(tmp_path / "t.db"), "--secrets-dir", str(tmp_path))
    assert done.returncode == 2
    assert "for a PostgreSQL --db only" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_h1_a_standby_whose_secret_key_changed_since_its_start_is_refused_when_elected(
    active: Cluster, tmp_path: Path
) -> None:
    """Checked again at the takeover, before it serves (its files are read then):
    it ends with an error rather than serve on other secrets."""
    copy = tmp_path / "copy"
    shutil.copytree(active.secrets, copy)
    a = active.servers[0]
    active.secrets = copy
    b = active.start("b")
    (copy / "tessera.secret-key").write_text("cd" * SECRET_KEY_BYTES + "\n")
    a.kill()
    assert b.wait(timeout=30) == 1
    events = [line.get("event") for line in b.lines]
    assert "elected" in events
    assert "serving" not in events and "took over" not in events


LOADERS = {
    "secret key": lambda path: load_or_create_secret_key(path).hex(),
    "admin token": load_or_create_admin_token,
    "signing keys": lambda path: [k.key_id for k in leases.load_or_create(path, SIGNED_AT)],
}


@pytest.mark.parametrize("links", [True, False], ids=["hard links", "no hard links"])
@pytest.mark.parametrize("what", list(LOADERS))
def test_h1_servers_starting_together_on_one_secrets_directory_make_one_file(
    tmp_path: Path, what: str, links: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers started at the same instant on a new secrets directory each made a
    key: they shared one temporary name (one server's start failed renaming it), and
    the digest recorded was of a key that ended in no file (both refused). The first
    to make a file wins; every one reads the file. So also on a file system without
    hard links (SMB, some FUSE mounts), where the name is taken with O_EXCL."""
    if not links:

        def no_link(src: object, dst: object) -> None:
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", no_link)
    for round_ in range(20):
        path = tmp_path / f"{round_}" / "tessera.x"
        gate = threading.Barrier(6)
        got: list[object] = []

        def load(
            path: Path = path, gate: threading.Barrier = gate, got: list[object] = got
        ) -> None:
            gate.wait()
            got.append(LOADERS[what](path))

        threads = [threading.Thread(target=load) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert len(got) == 6 and all(g == got[0] for g in got), got
        assert got[0] == LOADERS[what](path)
        assert [p.name for p in path.parent.iterdir()] == ["tessera.x"]  # no .tmp left


def test_h1_a_damaged_secret_key_is_refused_as_itself_not_as_the_database(
    active: Cluster, tmp_path: Path
) -> None:
    """A key file that is no key was reported as 'cannot open postgresql://...', and
    found so when elected, the server took the lead, gave it up and took it again
    every lease, with no server serving. It is refused as what it is, at start."""
    other = tmp_path / "copy"
    shutil.copytree(active.secrets, other)
    (other / "tessera.secret-key").write_text("garbage\n")
    code, lines = _start(active, other, "b")
    assert code == 1
    assert lines == [
        f"tessera-server: {other / 'tessera.secret-key'} does not hold a 32-byte key in hex: "
        "restore it from a backup (removing it makes a new key; pending invitations then keep "
        "working with the tokens already sent, but the outbox no longer shows them)"
    ]


def test_h1_a_secret_file_whose_write_fails_leaves_no_copy_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each writer writes a file of its own before it takes the name: one whose write
    failed (a full disk, an I/O error) left it, with the key in it, every time."""

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    for _ in range(3):
        with pytest.raises(OSError, match="Input/output error"):
            load_or_create_secret_key(tmp_path / "tessera.secret-key")
    assert list(tmp_path.iterdir()) == []


def test_h2_a_server_on_another_clock_than_the_databases_is_refused_before_it_stands_by(
    active: Cluster,
) -> None:
    """The active runs on a test clock. A second server started on the real clock (a
    forgotten --test-clock) stood by looking healthy and, elected when the active
    died, refused to serve: no active at all. It is refused at its start, as a lone
    server on that database is; one on the database's clock stands by."""
    done = start_server(
        *("--db", active.url, "--secrets-dir", str(active.secrets), "--node-id", "b")
    )
    assert done.returncode == 1, done.stderr
    assert "is a test-clock database" in done.stderr
    assert info(active.servers[0].target)["role"] == "NODE_ROLE_ACTIVE"
    b = active.start("b")  # on the test clock, as ServerProcess starts it
    assert info(b.target)["role"] == "NODE_ROLE_STANDBY"
