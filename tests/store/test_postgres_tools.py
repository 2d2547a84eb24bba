"""``verify`` and ``backup`` on PostgreSQL (issue 13, point 2): verify runs
SQLite's checks on PostgreSQL's rows, and a backup (pg_dump and the secrets)
restores with pg_restore into a new database that a server then serves with
the same state and the same admin token."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from server import leases, tools
from server.app import shown_db
from server.credentials import load_or_create_secret_key
from server.domain.changes import Changes
from server.domain.ledger import Cause, Ledger
from server.domain.teams import Plan, Team
from server.ha import secrets
from server.store.audit import Verdict, verify
from server.store.backup import DUMP_NAME, PassphraseRefused, backup_postgres, pg_tool
from server.store.files import SECRET_SUFFIXES, side_path
from server.store.pg_schema import MIGRATIONS
from server.store.port import StorePort
from server.store.postgres import PostgresStore, secrets_base, verify_postgres
from tests.grpcurl import Grpcurl
from tests.pg import PgServer, run_sync
from tests.store.test_postgres import _both, _sql, rows
from tests.store.test_restart import A, state
from tests.support import REPO, ServerProcess

BACKUP = [sys.executable, "-m", "server", "backup"]
T = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
H = timedelta(hours=1)


def a_history() -> list[object]:
    """Two teams' packs and a chained ledger, made by the domain as the engine
    makes them: purchases, a hold captured, a hold released, a move."""
    ledger = Ledger()
    changes = Changes()
    ids = iter(f"pk_{i}" for i in range(10))
    for team in ("acme", "beta"):
        ledger.add_team(team)
        changes.upsert(Team(team, team.title(), Plan.STANDARD, T))
    ledger.purchase("acme", 100, "po-1", T, lambda: next(ids), changes)
    ledger.purchase("acme", 50, "po-2", T + H, lambda: next(ids), changes)
    ledger.purchase("beta", 30, "po-3", T + H, lambda: next(ids), changes)
    hold = ledger.hold("acme", 120, Cause("ses_1", "ann", "ACAD"), T + 2 * H, "h1", changes)
    ledger.capture(hold, T + 3 * H, changes)
    hold = ledger.hold("acme", 5, Cause("ses_2", "bob", "ACAD"), T + 3 * H, "h2", changes)
    ledger.release(hold, T + 4 * H, changes)
    ledger.move("pk_2", "acme", T + 5 * H, changes)
    return changes.items


async def _verify(store: StorePort, tmp_path: Path, pg_url: str) -> Verdict:
    if isinstance(store, PostgresStore):
        return await verify_postgres(pg_url)
    return verify(tmp_path / "s.db")


TAMPERING: list[tuple[str, str]] = [
    ("nothing", ""),
    ("a pack's sums", "UPDATE packs SET remaining = remaining + 1 WHERE pack_id = 'pk_1'"),
    ("an entry's amount", "UPDATE ledger SET amount = amount + 1 WHERE seq = 4"),
    ("an entry removed", "DELETE FROM ledger WHERE seq = 2"),
    ("a pack removed", "DELETE FROM packs WHERE pack_id = 'pk_0'"),
    ("a pack's team", "UPDATE packs SET team_id = 'beta' WHERE pack_id = 'pk_0'"),
]


@pytest.mark.parametrize(("what", "sql"), TAMPERING, ids=[t[0] for t in TAMPERING])
async def test_pg_verify_finds_what_sqlites_verify_finds(
    pg_url: str, tmp_path: Path, what: str, sql: str
) -> None:
    history = a_history()

    async def write(store: StorePort) -> None:
        await store.commit(Changes(list(history)))

    async def tamper_and_verify(store: StorePort) -> Verdict:
        if sql:
            if isinstance(store, PostgresStore):
                conn = await asyncpg.connect(pg_url)
                try:
                    await conn.execute(sql)
                finally:
                    await conn.close()
            else:
                await store.query(sql)  # type: ignore[attr-defined]  # autocommit
        return await _verify(store, tmp_path, pg_url)

    await _both(pg_url, tmp_path, write)
    lite, pg = await _both(pg_url, tmp_path, tamper_and_verify)
    assert pg.problems == lite.problems
    assert (pg.entries, pg.packs) == (lite.entries, lite.packs)
    if what == "nothing":
        assert pg.ok and (pg.entries, pg.packs) == (11, 3)
        assert pg.summary().endswith(
            "its end rests on PostgreSQL's durability (no checkpoint file)"
        )
    else:
        assert not pg.ok, what


def fill_with_a_history(url: str) -> Callable[[], Awaitable[None]]:
    """``a_history`` committed to a new store at ``url`` (for ``run_sync``)."""

    async def fill() -> None:
        store = await PostgresStore.open(url)
        try:
            await store.commit(Changes(a_history()))
        finally:
            await store.close()

    return fill


def test_pg_verify_from_the_command_line(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_sync(fill_with_a_history(pg_url))
    capsys.readouterr()
    assert tools.main(["verify", "--db", pg_url]) == 0
    assert capsys.readouterr().out.startswith("ok: 11 ledger entries chained, 3 packs add up;")
    run_sync(lambda: _execute(pg_url, "UPDATE packs SET held = 1 WHERE pack_id = 'pk_2'"))
    assert tools.main(["verify", "--db", pg_url]) == 1
    assert "BAD: pack pk_2: stored tokens/remaining/held" in capsys.readouterr().out


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def test_pg_verify_of_a_database_without_tessera_says_so(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_sync(lambda: _execute(pg_url, "CREATE TABLE notes (x text)"))  # another app's
    assert tools.main(["verify", "--db", pg_url]) == 2
    assert capsys.readouterr().err == (
        "python -m server verify: no Tessera database there (no schema_version table)\n"
    )


@pytest.mark.parametrize("command", ["backup", "rotate-signing-key"])
def test_pg_backup_and_rotation_on_another_applications_database_say_it_is_not_tessera(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """In verify's words, not 'relation "ledger" does not exist' (backup) or
    'relation "meta" does not exist' (rotate-signing-key); nothing written."""
    run_sync(lambda: _execute(pg_url, "CREATE TABLE notes (x text)"))
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    to = ["--to", str(tmp_path / "backup")] if command == "backup" else []
    assert tools.main([command, "--db", pg_url, "--secrets-dir", str(secrets_dir), *to]) == 2
    assert capsys.readouterr().err == (
        f"python -m server {command}: no Tessera database there (no schema_version table)\n"
    )
    assert sorted(tmp_path.iterdir()) == [secrets_dir]
    assert not list(secrets_dir.iterdir())


@pytest.mark.parametrize("command", ["verify", "backup", "rotate-signing-key"])
def test_pg_tools_on_an_empty_database_say_there_is_no_tessera_database(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    secrets_args = [] if command == "verify" else ["--secrets-dir", str(secrets_dir)]
    to = ["--to", str(tmp_path / "backup")] if command == "backup" else []
    assert tools.main([command, "--db", pg_url, *secrets_args, *to]) == 2
    assert capsys.readouterr().err == (
        f"python -m server {command}: no Tessera database at {shown_db(pg_url)} (empty)\n"
    )
    assert sorted(tmp_path.iterdir()) == [secrets_dir]
    assert not list(secrets_dir.iterdir())


def test_pg_verify_of_a_database_of_a_newer_release_says_so(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its checks are this release's: a database a newer release migrated is not
    passed as sound (the server refuses it too: test_postgres)."""
    run_sync(fill_with_a_history(pg_url))
    assert tools.main(["verify", "--db", pg_url]) == 0
    newer = len(MIGRATIONS) + 1
    run_sync(lambda: _sql(pg_url, "INSERT INTO schema_version (version) VALUES ($1)", newer))
    capsys.readouterr()
    assert tools.main(["verify", "--db", pg_url]) == 2
    assert capsys.readouterr().err == (
        f"python -m server verify: the database is at schema version {newer}, newer than "
        f"this release's {len(MIGRATIONS)}: run the newer release\n"
    )


# -- backup and restore ------------------------------------------------------------------


@pytest.fixture
def databases(pg: PgServer) -> Iterator[Callable[[], str]]:
    """Makes fresh databases on the run's server; drops them all after the test."""
    made: list[str] = []

    def make() -> str:
        made.append(pg.create())
        return made[-1]

    yield make
    for url in made:
        pg.drop(url)


def _serve(processes: list[ServerProcess], url: str, secrets: Path) -> ServerProcess:
    """A lone server on ``url`` (elected at once), its secrets in ``secrets``; no
    --admin-token, so it uses (or makes) the one in ``secrets``."""
    server = ServerProcess(
        db=url,  # type: ignore[arg-type]  # the process is given its text
        extra=["--secrets-dir", str(secrets)],
        admin_token=None,
    )
    processes.append(server)
    return server.start()


def _admin_state(target: str, token: str) -> dict[str, object]:
    client = Grpcurl(target, token)
    try:
        return state(client)
    finally:
        client.close()


@pytest.mark.slow
def test_pg_backup_restores_into_a_new_database_with_the_same_state_and_secrets(
    pg_url: str,
    databases: Callable[[], str],
    tmp_path: Path,
    processes: list[ServerProcess],
) -> None:
    secrets, copy = tmp_path / "secrets", tmp_path / "backup"
    server = _serve(processes, pg_url, secrets)
    token = side_path(secrets_base(secrets), ".admin-token").read_text().strip()
    client = Grpcurl(server.target, token)
    try:
        client(A + "CreateTeam", {"team_id": "acme", "display_name": "Acme"})
        client(A + "CreateTeam", {"team_id": "beta"})
        for i, team in enumerate(("acme", "acme", "beta")):
            client(A + "PurchaseTokens", {"team_id": team, "tokens": 10 + i, "request_id": f"{i}"})
    finally:
        client.close()
    before = _admin_state(server.target, token)

    # Backed up while the server runs, as an operator would.
    done = subprocess.run(
        [*BACKUP, "--db", pg_url, "--secrets-dir", str(secrets), "--to", str(copy)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "(3 ledger entries)" in done.stdout and f"--secrets-dir {copy}" in done.stdout
    server.terminate()
    dump = copy / DUMP_NAME
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert stat.S_IMODE(copy.stat().st_mode) == 0o700
    for suffix in SECRET_SUFFIXES:  # every secret the server made, copied as it was
        original, copied = (
            side_path(secrets_base(secrets), suffix),
            side_path(copy / "tessera", suffix),
        )
        assert copied.read_bytes() == original.read_bytes(), suffix
        assert stat.S_IMODE(copied.stat().st_mode) == 0o600

    # Restored as docs/postgres.md says: pg_restore into a new database...
    restored = databases()
    subprocess.run(
        [
            str(pg_tool("pg_restore", _server_major(pg_url))),
            "--no-owner",
            "--dbname",
            restored,
            str(dump),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    # ...which loads as the original, verifies, and serves the same state with the
    # same admin token from the backup's directory.
    snapshots = [run_sync(lambda url=url: _load_rows(url)) for url in (pg_url, restored)]
    assert snapshots[0] == snapshots[1] and snapshots[0]["packs"]
    verdict = run_sync(lambda: verify_postgres(restored))
    assert verdict.ok and (verdict.entries, verdict.packs) == (3, 3), verdict.problems
    leader = run_sync(lambda: _fetch(restored, "SELECT count(*) FROM tessera_leader"))
    assert leader == [(0,)]  # no active carried over: the first to start is elected
    again = _serve(processes, restored, copy)
    assert _admin_state(again.target, token) == before


def _server_major(url: str) -> int:
    rows = run_sync(lambda: _fetch(url, "SELECT current_setting('server_version_num')::int"))
    return int(rows[0][0]) // 10000


async def _fetch(url: str, sql: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


async def _load_rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    store = await PostgresStore.open(url)
    try:
        loaded = rows(await store.load())
        loaded["ledger"] = [
            tuple(r) for r in await store.query("SELECT * FROM ledger ORDER BY seq")
        ]
        return loaded
    finally:
        await store.close()


FAKE_PG_DUMP = """#!{python}
import json, os, stat, sys
if sys.argv[1:] == ["--version"]:
    print("pg_dump (PostgreSQL) 99")
    sys.exit(0)
service = os.environ.get("PGSERVICEFILE")
seen = {{"argv": sys.argv[1:], "service": None, "mode": None, "path": service}}
if service:
    seen["service"] = open(service).read()
    seen["mode"] = stat.S_IMODE(os.stat(service).st_mode)
json.dump(seen, open({seen!r}, "w"))
sys.exit(3)
"""


def _fake_pg_dump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pg_dump (in ``TESSERA_PG_BIN``) that writes down what it was given, then
    fails; the file it writes to."""
    tools_dir, seen = tmp_path / "bin", tmp_path / "seen.json"
    tools_dir.mkdir()
    fake = tools_dir / "pg_dump"
    fake.write_text(FAKE_PG_DUMP.format(python=sys.executable, seen=str(seen)))
    fake.chmod(0o700)
    monkeypatch.setenv("TESSERA_PG_BIN", str(tools_dir))
    return seen


def test_pg_backup_gives_pg_dump_the_key_passphrase_off_its_command_line(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client key's passphrase (the URL's ``sslpassword``) reaches pg_dump in a
    connection service file only this user may read, removed after: on its command
    line any user of the machine could read it (``ps``)."""
    run_sync(fill_with_a_history(pg_url))
    seen = _fake_pg_dump(tmp_path, monkeypatch)
    url = pg_url + ("&" if "?" in pg_url else "?") + "sslpassword=k3y%20phrase"
    with pytest.raises(OSError, match="pg_dump failed"):
        backup_postgres(url, tmp_path / "there", tmp_path)
    got = json.loads(seen.read_text())
    assert not [a for a in got["argv"] if "k3y" in a]
    assert next(a for a in got["argv"] if a.startswith("--dbname=")).endswith(
        "service=tessera-backup"
    )
    assert got["service"] == "[tessera-backup]\nsslpassword=k3y phrase\n"
    assert got["mode"] == 0o600
    assert not Path(got["path"]).exists()
    assert not (tmp_path / "there").exists()  # no half backup


def test_pg_backup_refuses_a_key_passphrase_it_cannot_hand_over_privately(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_sync(fill_with_a_history(pg_url))
    seen = _fake_pg_dump(tmp_path, monkeypatch)
    url = pg_url + ("&" if "?" in pg_url else "?") + "sslpassword=ends%20in%20a%20space%20"
    with pytest.raises(PassphraseRefused, match="sslpassword starts or ends with a space"):
        backup_postgres(url, tmp_path / "there", tmp_path)
    assert not seen.exists()  # pg_dump never ran


def test_pg_backup_command_says_why_it_refuses_a_key_passphrase_with_a_space(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In its own words, exit 2: not "the URL cannot be read", which the command says
    of a ValueError (asyncpg's, on a URL it cannot parse)."""
    run_sync(fill_with_a_history(pg_url))
    url = pg_url + ("&" if "?" in pg_url else "?") + "sslpassword=ends%20in%20a%20space%20"
    to = tmp_path / "backup"
    assert tools.main(["backup", "--db", url, "--secrets-dir", str(tmp_path), "--to", str(to)]) == 2
    assert capsys.readouterr().err == (
        "python -m server backup: the URL's sslpassword starts or ends with a space or "
        "holds a line break, which pg_dump cannot be given privately: back up with a "
        "client key whose passphrase has none\n"
    )
    assert not to.exists()


def test_pg_backup_refuses_an_existing_directory(pg_url: str, tmp_path: Path) -> None:
    (tmp_path / "there").mkdir()
    with pytest.raises(FileExistsError):
        backup_postgres(pg_url, tmp_path / "there", tmp_path)


# -- a --secrets-dir that is not the database's ----------------------------------------


def _a_deployment(url: str, secrets_dir: Path) -> None:
    """``a_history`` at ``url``, whose servers use ``secrets_dir``: recorded as the
    first server's start records it (``secrets.check``), without a server."""
    run_sync(fill_with_a_history(url))
    run_sync(lambda: _with_conn(url, lambda conn: secrets.check(conn, secrets_dir, "tessera-a")))


async def _with_conn(url: str, work: Callable[[asyncpg.Connection], Awaitable[None]]) -> None:
    conn = await asyncpg.connect(url)
    try:
        await work(conn)
    finally:
        await conn.close()


def _not_the_databases(kind: str, tmp_path: Path) -> Path:
    """A secrets directory the database's servers do not use: a typo (or the default
    var/ of a forgotten --secrets-dir), or another deployment's."""
    if kind == "a typo":
        return tmp_path / "typo"
    other = tmp_path / "other"
    load_or_create_secret_key(secrets.key_path(other))
    return other


def _server_words(url: str, secrets_dir: Path) -> str:
    """What a server's start on ``secrets_dir`` is refused with."""
    with pytest.raises(secrets.SecretsMismatch) as refused:
        run_sync(lambda: _with_conn(url, lambda conn: secrets.check(conn, secrets_dir, "b")))
    return str(refused.value)


WRONG_DIRS = ["a typo", "another deployment's"]


@pytest.mark.parametrize("kind", WRONG_DIRS)
def test_pg_backup_refuses_a_secrets_dir_not_the_databases_in_the_servers_words(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """It exited 0 with a dump and none of the secrets (or another deployment's), and
    printed restore steps whose server is then refused: a backup that restores into
    nothing. Refused in one line, as a server on that directory is; nothing is left
    at --to, nor the folders made for it, nor in the directory."""
    _a_deployment(pg_url, tmp_path / "secrets")
    wrong = _not_the_databases(kind, tmp_path)
    before = sorted(wrong.rglob("*")) if wrong.exists() else None
    copy = tmp_path / "backups" / "today"
    capsys.readouterr()
    done = tools.main(["backup", "--db", pg_url, "--secrets-dir", str(wrong), "--to", str(copy)])
    assert done == 2
    said = _server_words(pg_url, wrong)
    assert str(wrong) in said
    assert capsys.readouterr().err == f"python -m server backup: {said}\n"
    assert not (tmp_path / "backups").exists()
    assert (sorted(wrong.rglob("*")) if wrong.exists() else None) == before


@pytest.mark.parametrize("kind", WRONG_DIRS)
def test_pg_rotate_signing_key_refuses_a_secrets_dir_not_the_databases(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """It made a signing-keys file holding only the new key there, which no server
    reads, and which, copied to the servers as docs/postgres.md says, would take their
    current key away. Refused in one line, as a server on that directory is (as SQLite's
    refuses a --db with no database at it); the database's own directory still rotates."""
    secrets_dir = tmp_path / "secrets"
    _a_deployment(pg_url, secrets_dir)
    wrong = _not_the_databases(kind, tmp_path)
    before = sorted(wrong.rglob("*")) if wrong.exists() else None
    capsys.readouterr()
    assert tools.main(["rotate-signing-key", "--db", pg_url, "--secrets-dir", str(wrong)]) == 2
    said = _server_words(pg_url, wrong)
    assert capsys.readouterr().err == f"python -m server rotate-signing-key: {said}\n"
    assert (sorted(wrong.rglob("*")) if wrong.exists() else None) == before

    assert (
        tools.main(["rotate-signing-key", "--db", pg_url, "--secrets-dir", str(secrets_dir)]) == 0
    )
    assert leases.key_path(secrets_base(secrets_dir)).exists()


SLOW_PG_DUMP = """#!{python}
# pg_dump of a big database: it has written part of the dump when the backup is
# stopped (SIGTERM: cron's `timeout`, systemd's stop), and would go on for long.
import os, signal, sys, time
if sys.argv[1:] == ["--version"]:
    print("pg_dump (PostgreSQL) 99")
    sys.exit(0)
dump = next(a for a in sys.argv if a.startswith("--file="))[len("--file="):]
with open(dump, "w") as out:
    out.write("PGDMP partial")
with open({pid!r}, "w") as out:
    out.write(str(os.getpid()))
# More than the pipe and asyncio's reader take unread: written once the backup reads
# it, so the SIGTERM finds it waiting for pg_dump.
sys.stderr.write("." * (1 << 20))
sys.stderr.flush()
os.kill(os.getppid(), signal.SIGTERM)
time.sleep(60)
"""


def test_pg_backup_stopped_by_sigterm_leaves_no_half_backup_and_no_pg_dump(
    pg_url: str, tmp_path: Path
) -> None:
    """SIGTERM killed the tool where it stood: a directory holding part of a dump (which
    could be taken for a backup) and pg_dump still writing into it. As SQLite's backup,
    it unwinds: pg_dump is stopped and waited for, and the directory removed."""
    secrets_dir, copy = tmp_path / "secrets", tmp_path / "backup"
    _a_deployment(pg_url, secrets_dir)
    tools_dir, pid_file = tmp_path / "bin", tmp_path / "pg_dump.pid"
    tools_dir.mkdir()
    fake = tools_dir / "pg_dump"
    fake.write_text(SLOW_PG_DUMP.format(python=sys.executable, pid=str(pid_file)))
    fake.chmod(0o700)
    done = subprocess.run(
        [*BACKUP, "--db", pg_url, "--secrets-dir", str(secrets_dir), "--to", str(copy)],
        cwd=REPO,
        env={**os.environ, "TESSERA_PG_BIN": str(tools_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGKILL)  # (a pg_dump left running: ended here)
        left_running = True
    except ProcessLookupError:
        left_running = False
    assert not left_running, "pg_dump went on after the backup stopped"
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert not copy.exists()


@pytest.mark.parametrize("command", ["verify", "backup", "rotate-signing-key"])
def test_pg_a_postgresql_that_never_answers_is_named_with_the_wait(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    """A PostgreSQL that takes the connection and never answers (hung, or a port held by
    something else): each tool gives up after its wait and says so, where it printed an
    empty reason (a TimeoutError has no words)."""
    monkeypatch.setattr(tools, "PG_WAIT", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgresql://u:s3cret-pw@127.0.0.1:{silent.getsockname()[1]}/db?sslmode=disable"
        extra = ["--to", str(tmp_path / "copy")] if command == "backup" else []
        secrets_dir = [] if command == "verify" else ["--secrets-dir", str(tmp_path)]
        code = tools.main([command, "--db", url, *secrets_dir, *extra])
    assert code == 2
    assert capsys.readouterr().err == (
        f"python -m server {command}: no answer from {shown_db(url)} within 0.5 s\n"
    )
