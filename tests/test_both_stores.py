"""The suite's store dimension (issue 13, point 7): the wire tests run on SQLite
and on PostgreSQL, and CI cannot pass without the PostgreSQL ones
(``tests/conftest.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, ServerThread

FORGOTTEN = "tests/store/test_forgotten_sessions.py"
FORGOTTEN_TEST = f"{FORGOTTEN}::test_m12_a_long_ended_session_is_still_answered_as_ended"


def pytest_run(*args: str, ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_point7_every_api_test_runs_on_both_stores() -> None:
    result = pytest_run("--collect-only", "-q", "tests/api", ci=False)
    assert result.returncode == 0, result.stdout + result.stderr
    ids = [line for line in result.stdout.splitlines() if line.startswith("tests/api/")]
    on = {
        store: {i.replace(f"[{store}-", "[").replace(f"[{store}]", "") for i in ids if store in i}
        for store in ("sqlite", "postgres")
    }
    assert len(on["postgres"]) > 200
    assert on["postgres"] == on["sqlite"]  # none runs on one store only


# In one process, and as `make test` runs it: in xdist's workers, judged by its controller.
IN = pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["one process", "xdist workers"])


@IN
def test_point7_under_ci_a_run_whose_postgresql_tests_did_not_run_fails(
    workers: tuple[str, ...],
) -> None:
    deselected = (*workers, "--deselect", f"{FORGOTTEN_TEST}[postgres]", FORGOTTEN)
    result = pytest_run(*deselected, ci=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "PostgreSQL: 0 tests passed of 1 collected" in result.stdout
    assert "error: under CI, no PostgreSQL test ran" in result.stdout
    # The same run outside CI passes: a developer may choose what to run.
    assert pytest_run(*deselected, ci=False).returncode == 0


@IN
def test_point7_under_ci_a_run_whose_postgresql_tests_passed_passes_and_counts_them(
    workers: tuple[str, ...],
) -> None:
    result = pytest_run(*workers, FORGOTTEN, ci=True)
    assert result.returncode == pytest.ExitCode.OK, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert "PostgreSQL: 1 tests passed of 1 collected" in result.stdout


@pytest.mark.sqlite_only("guards the marker itself")
def test_point7_sqlite_only_runs_on_sqlite_alone(backend: str, server: ServerThread) -> None:
    assert backend == "sqlite"
    assert isinstance(server.config.db, Path)


def test_point7_the_server_fixture_runs_on_the_backend_named_in_the_id(
    request: pytest.FixtureRequest, backend: str, server: ServerThread
) -> None:
    assert request.node.name.endswith(f"[{backend}]")
    assert server.config.postgres == (backend == "postgres")
    assert server.server.engine is not None  # answering as the active server already
