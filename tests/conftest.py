"""Fixtures shared by the whole suite, and its store dimension (issue 13, point 7).

The wire tests run on both stores: ``backend`` is "sqlite" or "postgres", and
``database`` the test's database on it (a SQLite file in ``tmp_path``, or a
database of the run's PostgreSQL, migrated and empty, ``tests/pg.py``); ``server`` starts on
it. A test that uses any of the three runs once per store, its id saying which
(``test_x[postgres]``). A test about SQLite itself (the file's modes, its lock
file, its checkpoint, its backup, bytes grepped from the file) says so with
``@pytest.mark.sqlite_only("why")`` and runs on SQLite alone; so does every
test that names a file as its database instead of taking ``database``.

Under CI a run that ran no PostgreSQL test fails (``PostgresCount``): CI must
never pass by not running them.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from server.config import Config
from server.loops import loop_factory
from tests.grpcurl import Grpcurl
from tests.support import (
    ADMIN_TOKEN,
    BACKENDS,
    ServerProcess,
    ServerThread,
    forget_secrets,
    running,
)

# PostgreSQL for the tests: the fixtures `pg` (the run's server), `pg_url` (a fresh, empty
# database) and `pg_migrated_url` (every table, no row: `database`'s).
pytest_plugins = ["tests.pg"]

# Hypothesis fails an example that takes over 200 ms by default: a timed assertion,
# which a loaded runner (two xdist workers a core) can trip on a test that holds its
# rule. No test here asserts a duration; speed is measured in benchmarks/.
settings.register_profile("tessera", deadline=None)
settings.load_profile("tessera")


#: Seconds past a test's own timeout after which the backstop ends the run (below).
TIMEOUT_BACKSTOP = float(os.environ.get("TESSERA_TIMEOUT_BACKSTOP", "60"))
_stderr_fd: int | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _stderr_fd
    _stderr_fd = os.dup(2)  # the terminal's: capture has not taken fd 2 over yet
    config.addinivalue_line(
        "markers",
        "sqlite_only(why): about SQLite itself, so not run on PostgreSQL (say why)",
    )
    config.pluginmanager.register(PostgresCount(), "tessera-postgres-count")


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """pytest-timeout's SIGALRM fails a test only once Python code runs again, and a
    test blocked in uvloop's C wait never gets there: the run would hang until CI's
    limit. So each timeout also arms a backstop in faulthandler's own thread, which
    prints every thread's stack and ends the run if the test is still there
    ``TIMEOUT_BACKSTOP`` seconds after its timeout. Returning None lets
    pytest-timeout arm its own timer as usual."""
    if _stderr_fd is not None:
        faulthandler.dump_traceback_later(
            settings.timeout + TIMEOUT_BACKSTOP, exit=True, file=_stderr_fd
        )


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    faulthandler.cancel_dump_traceback_later()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("sqlite_only")
    if marker is not None and not marker.args:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: sqlite_only needs its reason")
    metafunc.parametrize("backend", ["sqlite"] if marker else BACKENDS, indirect=True)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs on the loop the server runs on (server/loops.py)."""
    return {Config.event_loop: loop_factory(Config.event_loop)}


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The store this test runs on (see the module docstring)."""
    name: str = request.param
    return name


@pytest.fixture
def database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """The test's database on ``backend``: a SQLite file's path (none yet), or a PostgreSQL
    URL (every table, no row: as a server's first start leaves it, ``tests/pg.py``)."""
    if backend == "sqlite":
        yield tmp_path / "tessera.db"
        return
    url: str = request.getfixturevalue("pg_migrated_url")
    try:
        yield url
    finally:
        forget_secrets(url)


@pytest.fixture
def server(database: Path | str) -> Iterator[ServerThread]:
    """A real server on 127.0.0.1:0, test clock at 2026-01-01T00:00:00Z."""
    with running(database) as srv:
        yield srv


@pytest.fixture
def admin(server: ServerThread) -> Iterator[Grpcurl]:
    """grpcurl-style client with the admin token: ``admin("tessera.v1.AdminService/X", {...})``."""
    client = Grpcurl(server.target, ADMIN_TOKEN)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    """Every child server (``python -m server``) a test starts and appends here;
    any still running at the end is killed."""
    started: list[ServerProcess] = []
    yield started
    for proc in started:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.kill()
    # ServerProcess reads each child's stdout in a thread until EOF; let those
    # threads finish, then close the pipes (warnings are errors here).
    for thread in threading.enumerate():
        if thread.name.endswith("(_drain)"):
            thread.join(10)
    for proc in started:
        if proc.proc is not None and proc.proc.stdout is not None:
            proc.proc.stdout.close()


# -- CI ran the PostgreSQL tests ----------------------------------------------------


def _on_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)  # `backend`, or a wider fixture's own param
    if callspec is not None and "postgres" in callspec.params.values():
        return True
    return "pg" in getattr(item, "fixturenames", ())


class PostgresCount:
    """Counts the PostgreSQL tests collected and passed; under CI a run of the
    whole suite, or of a selection holding PostgreSQL tests, fails when none
    passed: skipped, deselected or never collected, CI must not pass without
    them (``tests/pg.py`` already fails each one it cannot give a database).

    Under pytest-xdist (``make test`` runs ``-n``) the workers collect and the
    controller judges: each worker hands the ids it collected back in
    ``workeroutput`` (xdist's channel for what a worker found), and the
    controller counts the passes every worker reports to it."""

    KEY = "tessera_postgres_collected"

    def __init__(self) -> None:
        self.collected: set[str] = set()
        self.passed: set[str] = set()

    # First, before -k, -m or --deselect take any away: a test deselected is not run.
    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        self.collected = {item.nodeid for item in items if _on_postgres(item)}
        workeroutput = getattr(config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller judges
            workeroutput[self.KEY] = sorted(self.collected)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """An xdist worker ended (on the controller): take the ids it collected."""
        self.collected.update(getattr(node, "workeroutput", {}).get(self.KEY, ()))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and report.passed:
            self.passed.add(report.nodeid)

    def _judges(self, config: pytest.Config) -> bool:
        return not hasattr(config, "workerinput") and not config.option.collectonly

    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter, config: pytest.Config
    ) -> None:
        if self.collected and self._judges(config):
            passed = len(self.passed & self.collected)
            terminalreporter.write_line(
                f"PostgreSQL: {passed} tests passed of {len(self.collected)} collected"
            )

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        config = session.config
        whole = config.args_source == pytest.Config.ArgsSource.TESTPATHS
        if not self._judges(config) or not os.environ.get("CI") or not (whole or self.collected):
            return
        if not self.passed & self.collected and exitstatus == pytest.ExitCode.OK:
            reporter = config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line("error: under CI, no PostgreSQL test ran (issue 13, point 7)")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
