"""``python -m client_sdk.demo`` against a real server (on the real clock: the demo's idle
threshold is a fraction of a second, and a test clock would stand still)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from client_sdk import RetryPolicy, demo
from client_sdk.demo import main
from tests.support import ADMIN_TOKEN, ServerThread

FAST = ["--work", "0.2", "--idle-after", "0.2"]


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[ServerThread]:
    srv = ServerThread(tmp_path / "tessera.db", test_clock=None).start()
    try:
        yield srv
    finally:
        srv.stop()


def test_demo_provisions_and_plays_a_product(
    live_server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--target", live_server.target, "--admin-token", ADMIN_TOKEN, *FAST]) == 0
    out = capsys.readouterr().out
    for expected in (
        "provisioned team 'demo'",
        "entitled DEMOCAD 2026",
        "DEMOCAD is now idle (was active)",
        "DEMOCAD is now active (was idle)",
        "opened plugin DEMOPLUG",
        "DEMOPLUG ended: released",
        "DEMOCAD ended: released",
    ):
        assert expected in out, out
    # Run again: provisioning is idempotent. A product id the server rejects stops it.
    assert main(["--target", live_server.target, "--admin-token", ADMIN_TOKEN, *FAST]) == 0
    capsys.readouterr()
    code = main(
        ["--target", live_server.target, "--admin-token", ADMIN_TOKEN, "--product", "no pe", *FAST]
    )
    assert code == 1
    assert "provisioning failed: INVALID_ARGUMENT" in capsys.readouterr().err


def test_demo_with_a_user_key_and_refusals(
    live_server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--target", live_server.target, "--user-key", "tsu_wrong", *FAST])
    assert code == 2
    assert "refused: Unauthenticated" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--target", live_server.target])  # neither a token nor a key


def _pack(out: str) -> str:
    """The pack id the provisioning line names."""
    return out.split("; pack ", 1)[1].split(")", 1)[0]


def test_demo_rerun_with_other_tokens_buys_them(
    live_server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--target", live_server.target, "--admin-token", ADMIN_TOKEN, *FAST]
    assert main([*base, "--tokens", "100"]) == 0
    first = _pack(capsys.readouterr().out)
    # Another amount is a purchase of its own (its request_id was refused as reused before).
    assert main([*base, "--tokens", "7"]) == 0
    out = capsys.readouterr().out
    assert "provisioned team 'demo'" in out and "DEMOCAD ended: released" in out, out
    second = _pack(out)
    assert second != first
    # The same amount again is the same purchase: nothing more is bought.
    assert main([*base, "--tokens", "7"]) == 0
    assert _pack(capsys.readouterr().out) == second


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--idle-after", "-1"], "--idle-after"),
        (["--idle-after", "0"], "--idle-after"),
        (["--idle-after", "nan"], "--idle-after"),
        (["--work", "-1"], "--work"),
        (["--work", "inf"], "--work"),
        (["--tokens", "0"], "--tokens"),
    ],
)
def test_demo_refuses_bad_numbers_as_usage_errors(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:  # before any call: nothing listens at port 1
        main(["--target", "127.0.0.1:1", "--admin-token", "t", *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {argv[1]}: must be a number" in err, err


@pytest.mark.parametrize(
    ("flag", "most", "past"),
    [
        ("--idle-after", "1e9", "1e300"),  # was an OverflowError out of timedelta
        ("--work", "1e9", "1e300"),
        ("--tokens", "1000000000", "1000000001"),  # the most one PurchaseTokens buys
        ("--tokens", "1000000000", str(2**63)),  # was a ValueError out of protobuf
    ],
)
def test_demo_refuses_numbers_past_what_it_can_use_as_usage_errors(
    flag: str, most: str, past: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--target", "127.0.0.1:1", "--admin-token", "t"]
    demo.parse_args([*base, flag, most])  # the bound itself is taken
    with pytest.raises(SystemExit) as stop:  # before any call: nothing listens at port 1
        main([*base, flag, past])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {past}: must be a number" in err, err
    assert "at most 1,000,000,000" in err, err


@pytest.mark.parametrize("flag", ["--admin-token", "--user-key"])
def test_demo_refuses_a_secret_that_cannot_go_in_a_header_as_a_usage_error(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A line break pasted in: grpc's ExecuteBatchError (the token), a ValueError out of
    # AsyncClient (the key), each a traceback, before.
    with pytest.raises(SystemExit) as stop:
        main(["--target", "127.0.0.1:1", flag, "s3cr\net"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {flag} holds '\\n', which cannot be sent in a header" in err, err
    assert "s3cr" not in err  # the secret is never shown


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--root-ca", "{missing}"], "--root-ca {missing}: No such file or directory"),
        (["--root-ca", "{tmp}"], "--root-ca {tmp}: Is a directory"),
        (
            ["--client-cert", "{cert}", "--client-key", "{missing}"],
            "--client-key {missing}: No such file or directory",
        ),
        (["--client-cert", "{cert}"], "--client-cert and --client-key go together"),
    ],
)
def test_demo_refuses_pem_files_it_cannot_use_as_usage_errors(
    argv: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each was a traceback (FileNotFoundError, ValueError) when the channel was made.
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    names = {"missing": tmp_path / "missing.pem", "tmp": tmp_path, "cert": cert}
    with pytest.raises(SystemExit) as stop:
        main(["--target", "127.0.0.1:1", "--user-key", "k", *(a.format(**names) for a in argv)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {said.format(**names)}" in err, err


def test_demo_says_when_a_release_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = ServerThread(tmp_path / "tessera.db", test_clock=None).start()
    works: list[float] = []

    async def work_then_die(clock: object, handle: object, seconds: float) -> None:
        works.append(seconds)
        if len(works) == 2:  # the plugin's work: the server goes away under it
            srv.stop()

    monkeypatch.setattr(demo, "_work", work_then_die)
    # Each Release to the server that went away is retried for the policy's time: the
    # default's 20 s, twice, is real time spent for nothing here.
    brief = RetryPolicy(max_attempts=2, initial_backoff=0.0, call_timeout=2.0)
    monkeypatch.setattr(demo, "AsyncClient", functools.partial(demo.AsyncClient, retry=brief))
    code = main(["--target", srv.target, "--admin-token", ADMIN_TOKEN, *FAST])
    out = capsys.readouterr().out
    assert code == 2, out
    assert "opened plugin DEMOPLUG" in out
    assert "DEMOPLUG: Release failed (Unavailable" in out
    assert "DEMOCAD: Release failed (Unavailable" in out
    assert "ended: released" not in out and "released DEMOCAD" not in out
