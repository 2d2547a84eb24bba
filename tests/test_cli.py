"""The command line from one source (issue 12, point 13): every option of
``server/config.py`` with its variable and default in ``--help`` and in the
README's table, the operator tools in the main help, and ``make help``."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys

import pytest

from server.config import OPTIONS, Config, flags_table, help_line, parse_args
from server.tools import COMMANDS
from tests.support import REPO, T0

BEGIN, END = "<!-- flags:begin -->", "<!-- flags:end -->"


def words(text: str) -> str:
    return " ".join(text.split())


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(autouse=True)
def no_tessera_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)


def test_issue12_h4_13_every_config_field_is_an_option_with_help() -> None:
    assert [o.field for o in OPTIONS] == [f.name for f in dataclasses.fields(Config)]
    for o in OPTIONS:
        assert o.env == "TESSERA_" + o.flag[2:].replace("-", "_").upper()
        assert len(o.help) > 20, o.flag


def test_issue12_h4_13_help_shows_every_flag_with_its_variable_and_default() -> None:
    result = run("--help")
    assert result.returncode == 0
    out = words(result.stdout)
    for o in OPTIONS:
        assert f"{o.flag} " in out
        assert words(help_line(o).replace("%%", "%")) in out, o.flag
    assert "[TESSERA_LISTEN; default: 127.0.0.1:50051]" in out
    assert "[TESSERA_SHUTDOWN_GRACE; default: 10.0]" in out
    assert "[TESSERA_LOG_HEARTBEATS; default: off]" in out


def test_issue12_h4_13_help_lists_the_operator_tools_one_line_each() -> None:
    lines = run("--help").stdout.splitlines()
    for name in COMMANDS:
        (line,) = (line for line in lines if line.startswith(f"  {name} "))
        assert line.split(None, 1) == [name, COMMANDS[name]]


@pytest.mark.parametrize("tool", list(COMMANDS))
def test_issue12_h4_13_each_tool_has_its_own_help(tool: str) -> None:
    result = run(tool, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: python -m server {tool} ")
    # The server's own --db option, with its variable and default.
    text = " ".join(result.stdout.split())
    assert "--db PATH|URL the SQLite database file, or a PostgreSQL URL" in text
    assert "[TESSERA_DB; default: var/tessera.db]" in text


def test_issue12_h4_13_every_variable_is_read_and_a_flag_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    samples = {
        "listen": "127.0.0.1:6000",
        "http_listen": "127.0.0.1:8081",
        "metrics_listen": "127.0.0.1:9464",
        "db": "var/x.db",
        "admin_token": "tsa_x",
        "test_clock": T0,
        "end_test_clock": "no",
        "log_format": "console",
        "log_level": "debug",
        "event_loop": "asyncio",
        "front_process": "yes",
        "sync": "NORMAL",
        "log_heartbeats": "yes",
        "tls_cert": "c.pem",
        "tls_key": "k.pem",
        "tls_client_ca": "ca.pem",
        "advertise": "127.0.0.1:6001",
        "secrets_dir": "var/secrets",
        "lease_batch_window": "0.007",
        "terms": str(REPO / "docs" / "terms.example.toml"),
    }
    expected = {}
    for o in OPTIONS:
        text = samples.get(o.field, "7")
        monkeypatch.setenv(o.env, text)
        value = o.read(text)
        expected[o.field] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    assert dataclasses.asdict(parse_args([])) == expected
    assert expected["user_burst"] == 7 and expected["log_heartbeats"] is True
    assert parse_args(["--listen", "127.0.0.1:7000"]).listen == "127.0.0.1:7000"
    assert parse_args(["--no-log-heartbeats"]).log_heartbeats is False


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TESSERA_USER_BURST", "many", "TESSERA_USER_BURST: 'many' is not a number"),
        ("TESSERA_HEARTBEAT_FLUSH", "-1", "TESSERA_HEARTBEAT_FLUSH: '-1' is negative"),
        ("TESSERA_SYNC", "OFF", "TESSERA_SYNC: 'OFF' is not one of FULL, NORMAL"),
        (
            "TESSERA_EVENT_LOOP",
            "trio",
            "TESSERA_EVENT_LOOP: 'trio' is not one of uvloop, asyncio",
        ),
        ("TESSERA_LOG_HEARTBEATS", "maybe", "TESSERA_LOG_HEARTBEATS: 'maybe' is not a boolean"),
        ("TESSERA_SHUTDOWN_GRACE", "nan", "TESSERA_SHUTDOWN_GRACE: 'nan' is not a finite number"),
        ("TESSERA_LISTEN", "50051", "TESSERA_LISTEN: '50051' is not host:port"),
        (
            "TESSERA_LEASE_BATCH_WINDOW",
            "0.5",
            "TESSERA_LEASE_BATCH_WINDOW: '0.5' is over 0.1 seconds",
        ),
    ],
)
def test_issue12_h4_13_a_bad_variable_is_a_usage_error_naming_it(
    variable: str,
    value: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exit_:
        parse_args([])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_issue12_h4_13_readme_flags_table_is_the_one_the_options_make() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme.count(BEGIN) == 1 and readme.count(END) == 1
    table = readme.split(BEGIN)[1].split(END)[0].lstrip("\n")
    assert table == flags_table(), (
        "README.md's flags table is not what server/config.py says: run `make docs` "
        "(python scripts/flags_table.py --write)"
    )
    for o in OPTIONS:
        assert f"| `{o.flag}`" in table and f"`{o.env}`" in table


def test_issue12_h4_13_flags_table_script_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/flags_table.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == flags_table()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_issue12_h4_13_make_help_lists_every_target_with_one_line() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = re.findall(r"^([a-z][a-z-]*):(?!=)", makefile, re.M)
    result = subprocess.run(
        ["make", "--no-print-directory", "-s", "help"],  # noqa: S607 - make from PATH
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listed = {}
    for line in result.stdout.splitlines()[1:]:
        name, _, summary = line.strip().partition(" ")
        listed[name] = summary.strip()
    assert sorted(listed) == sorted(targets)
    assert all(len(summary) > 10 for summary in listed.values()), listed
