"""The loopback guard and the options of ``python -m client_sdk.load``."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import grpc
import pytest

from client_sdk.load import LoadConfig, RemoteTargetError, check_target, is_loopback
from client_sdk.load.__main__ import main
from client_sdk.load.config import (
    FAILOVER_ATTEMPTS,
    check_writable_file,
    parse,
    provision_tokens,
    target_host,
)
from client_sdk.load.provision import packs, provision
from tessera_api.tessera.v1 import admin_service_pb2 as admin_pb
from tessera_api.tessera.v1 import admin_service_pb2_grpc as admin_grpc
from tests.support import ADMIN_TOKEN, ServerThread


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1:50051",
        "127.1.2.3:1",
        "localhost:50051",
        "LOCALHOST:1",
        "[::1]:50051",
        "::1",
        "ipv4:127.0.0.1:50051",
        "dns:///localhost:50051",
        "unix:/tmp/tessera.sock",
    ],
)
def test_loopback_targets_are_allowed(target: str) -> None:
    assert is_loopback(target)
    check_target(target, allow_remote=False)


@pytest.mark.parametrize(
    "target",
    [
        "10.0.0.5:50051",
        "192.168.1.10:50051",
        "0.0.0.0:50051",
        "[2001:db8::1]:50051",
        "licenses.example.com:443",
        "dns:///licenses.example.com:443",
        "localhost.example.com:50051",
        "127.0.0.1.example.com:50051",
    ],
)
def test_other_targets_are_refused_unless_allowed(target: str) -> None:
    assert not is_loopback(target)
    with pytest.raises(RemoteTargetError, match="--allow-remote"):
        check_target(target, allow_remote=False)
    check_target(target, allow_remote=True)


def test_target_host_parsing() -> None:
    assert target_host("[::1]:5") == "::1"
    assert target_host("ipv4:10.1.2.3:5") == "10.1.2.3"
    assert target_host("example.com:5") == "example.com"


def test_the_command_refuses_a_remote_target_before_doing_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["--target", "203.0.113.7:50051", "--fake-users", "-n", "10", "--no-progress"])
    assert code == 2
    assert "not a loopback address" in capsys.readouterr().err


def test_a_remote_target_passes_validation_with_allow_remote() -> None:
    cfg, _ = parse(["--target", "203.0.113.7:50051", "--allow-remote", "--fake-users"])
    cfg.validate()  # no exception: the guard is lifted, nothing is contacted here


def test_users_must_come_from_somewhere() -> None:
    with pytest.raises(ValueError, match="where users come from"):
        LoadConfig(admin_token=None).validate()
    with pytest.raises(ValueError, match="exclude each other"):
        LoadConfig(fake_users=True, users_file=Path("u.json")).validate()


@pytest.mark.parametrize(
    ("field", "value"),
    [("users", 0), ("workers", 0), ("concurrency", 0), ("idle_fraction", 1.5), ("max_calls", 0)],
)
def test_bad_numbers_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError):
        LoadConfig(fake_users=True, **{field: value}).validate()  # type: ignore[arg-type]


def test_h3_load_takes_several_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, _ = parse(["--target", "127.0.0.1:1, 127.0.0.1:2", "--target", "[::1]:3", "--fake-users"])
    assert cfg.targets == ("127.0.0.1:1", "127.0.0.1:2", "[::1]:3")
    cfg.validate()
    assert cfg.retry().max_attempts == FAILOVER_ATTEMPTS  # calls follow the active
    assert cfg.retry().call_timeout == cfg.timeout
    one, _ = parse(["--target", "127.0.0.1:1", "--fake-users"])
    assert one.targets == ("127.0.0.1:1",) and one.retry().max_attempts == 1  # as measured
    chosen, _ = parse(["--target", "127.0.0.1:1,127.0.0.1:2", "--attempts", "3", "--fake-users"])
    assert chosen.retry().max_attempts == 3
    monkeypatch.setenv("TESSERA_TARGET", "127.0.0.1:7,127.0.0.1:8")
    assert parse(["--fake-users"])[0].targets == ("127.0.0.1:7", "127.0.0.1:8")


def test_a_bad_tessera_target_is_named_as_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused address names where it came from: TESSERA_TARGET when the environment gave
    it (an operator looks for a flag they never typed otherwise), --target when the flag did."""
    monkeypatch.setenv("TESSERA_TARGET", "127.0.0.1:115536")
    with pytest.raises(ValueError, match=r"^TESSERA_TARGET '127\.0\.0\.1:115536': its port"):
        parse(["--fake-users"])[0].validate()
    with pytest.raises(ValueError, match=r"^--target 'nonsense': must be host:port"):
        parse(["--target", "nonsense", "--fake-users"])[0].validate()
    monkeypatch.setenv("TESSERA_TARGET", ",")
    with pytest.raises(ValueError, match=r"^TESSERA_TARGET: at least one"):
        parse(["--fake-users"])[0].validate()


def test_h3_every_target_passes_the_loopback_guard() -> None:
    cfg, _ = parse(["--target", "127.0.0.1:1,203.0.113.7:50051", "--fake-users"])
    with pytest.raises(RemoteTargetError, match=r"203\.0\.113\.7"):
        cfg.validate()
    with pytest.raises(ValueError, match="at least one"):
        parse(["--target", ",", "--fake-users"])[0].validate()
    with pytest.raises(ValueError, match="--attempts"):
        LoadConfig(fake_users=True, attempts=-1).validate()


@pytest.mark.parametrize(
    ("argv", "flag", "problem"),
    [
        (["--timeout", "0"], "--timeout", "must be greater than 0"),
        (["--timeout", "-1"], "--timeout", "must be greater than 0"),
        (["--max-duration", "nan"], "--max-duration", "must be a finite number"),
        (["--max-duration", "inf"], "--max-duration", "must be a finite number"),
        (["--max-duration", "0"], "--max-duration", "must be greater than 0"),
        (["--steady", "-1"], "--steady", "must be at least 0"),
        (["--warmup", "-0.5"], "--warmup", "must be at least 0"),
        (["--cycle", "nan"], "--cycle", "must be a finite number"),
        (["--ramp-rate", "-5"], "--ramp-rate", "must be at least 0"),
        (["--heartbeat-rate", "-5"], "--heartbeat-rate", "must be at least 0"),
        (["--heartbeat-rate", "inf"], "--heartbeat-rate", "must be a finite number"),
        (["--idle-fraction", "nan"], "--idle-fraction", "must be a finite number"),
        (["--plugin-fraction", "1.5"], "--plugin-fraction", "must be within 0..1"),
        (["-n", "0"], "--users", "must be at least 1"),
        (["-n", "abc"], "--users", "'abc' is not an integer"),
        (["-P", "0"], "--workers", "must be at least 1"),
        (["--max-calls", "0"], "--max-calls", "must be at least 1"),
        (["--daily-rate", "-1"], "--daily-rate", "must be at least 0"),
        (["--attempts", "-1"], "--attempts", "must be at least 0"),
    ],
)
def test_every_numeric_flag_is_checked_at_parse_time(
    argv: list[str], flag: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A usage error (exit 2) before anything is contacted: there is no server at port 1.
    with pytest.raises(SystemExit) as stop:
        main(["--target", "127.0.0.1:1", "--fake-users", "--no-progress", *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and flag in err and problem in err, err


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timeout", 0.0, "--timeout must be greater than 0"),
        ("max_duration", float("nan"), "--max-duration must be a finite number"),
        ("steady", -1.0, "--steady must be at least 0"),
        ("ramp_rate", -1.0, "--ramp-rate must be at least 0"),
        ("heartbeat_rate", float("inf"), "--heartbeat-rate must be a finite number"),
    ],
)
def test_a_config_made_in_code_is_held_to_the_same_bounds(
    field: str, value: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LoadConfig(fake_users=True, **{field: value}).validate()  # type: ignore[arg-type]


def _file_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the command on ``argv``; it must stop with exit 2 and one line, before work
    (nothing listens at port 1: a run that went on would fail another way)."""
    code = main(["--target", "127.0.0.1:1", "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_file_paths_are_checked_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.json"
    assert "--users-file" in _file_error(capsys, ["--users-file", str(missing)])
    assert "no such file" in _file_error(capsys, ["--users-file", str(missing)])
    assert "not a file" in _file_error(capsys, ["--users-file", str(tmp_path)])
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    under_a_file = str(blocker / "out.json")  # unwritable even for root
    err = _file_error(capsys, ["--admin-token", "t", "--save-users", under_a_file])
    assert err.startswith(f"client_sdk.load: --save-users {under_a_file}: cannot be written")
    err = _file_error(capsys, ["--fake-users", "--json", under_a_file])
    assert err.startswith(f"client_sdk.load: --json {under_a_file}: cannot be written")
    assert "is a directory" in _file_error(capsys, ["--fake-users", "--json", str(tmp_path)])
    # A users file that is JSON of the wrong shape is named, in one line.
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"users": []}')
    assert f"users file {wrong}: not a saved users file" in _file_error(
        capsys, ["--users-file", str(wrong)]
    )
    wrong.write_text("{")
    assert f"users file {wrong}: not JSON" in _file_error(capsys, ["--users-file", str(wrong)])


def test_checking_a_writable_path_leaves_nothing_behind(tmp_path: Path) -> None:
    new = tmp_path / "sub" / "out.json"
    check_writable_file(new, "--json")
    assert not new.exists() and new.parent.is_dir()
    kept = tmp_path / "kept.json"
    kept.write_text("old")
    check_writable_file(kept, "--json")
    assert kept.read_text() == "old"


# -- targets that gRPC would take for another (rev16) ------------------------------------


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("127.0.0.1:115536", "its port must be a number from 1 to 65535"),  # gRPC: 50000
        ("127.0.0.1", "must be host:port"),  # gRPC: 443
        ("127.0.0.1:", "its port must be a number"),
        ("127.0.0.1:1,localhost", "must be host:port"),  # every one of a list
        ("::1", "an IPv6 address goes in brackets"),
        ("dns:///localhost", "must be host:port"),
    ],
)
def test_load_a_target_that_is_not_host_port_is_a_usage_error(
    target: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--target 127.0.0.1:<port+65536>`` loaded the server at ``port`` (gRPC takes the
    port modulo 65536), and ``--target 127.0.0.1`` dialled port 443."""
    cfg, _ = parse(["--target", target, "--fake-users"])
    bad = target.split(",")[-1]
    with pytest.raises(ValueError, match=rf"^--target '{re.escape(bad)}': {problem}"):
        cfg.validate()
    code = main(["--target", target, "--fake-users", "--no-progress", "-n", "1", "-P", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"client_sdk.load: --target '{bad}'"), err


@pytest.mark.parametrize(
    "target",
    ["127.0.0.1:65535", "[::1]:1", "ipv4:127.0.0.1:5", "dns:///localhost:5", "unix:/tmp/t.sock"],
)
def test_load_targets_of_every_form_it_documents_pass_the_target_check(target: str) -> None:
    parse(["--target", target, "--fake-users"])[0].validate()


# -- numbers past what gRPC or the server can take (rev16) ---------------------------------


@pytest.mark.parametrize(
    ("flag", "most", "past"),
    [
        ("--timeout", "1e6", "1e10"),  # every call failed DEADLINE_EXCEEDED at once
        ("--max-duration", "1e6", "1e7"),
        ("--warmup", "1e6", "1e7"),
        ("--steady", "1e6", "1e7"),
        ("--cycle", "1e6", "1e7"),
        ("--daily-rate", "1000000000", "99999999999999999999"),
        ("--plugin-rate", "1000000000", "1000000001"),
        ("--daily-rate", "1000000000", "9" * 400),  # no float: was an OverflowError
    ],
)
def test_load_a_number_past_its_upper_bound_is_a_usage_error_naming_the_flag(
    flag: str, most: str, past: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parse(["--target", "127.0.0.1:1", "--fake-users", flag, most])[0].validate()  # taken
    with pytest.raises(SystemExit) as stop:
        main(["--target", "127.0.0.1:1", "--fake-users", "--no-progress", flag, past])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    shown = f"{float(most):,.0f}"
    assert f"argument {flag}: {past}: must be within 0..{shown}" in err, err


def test_load_a_timeout_made_in_code_past_its_bound_is_refused() -> None:
    with pytest.raises(ValueError, match=r"--timeout must be within 0\.\.1,000,000"):
        LoadConfig(fake_users=True, timeout=1e10).validate()


def test_load_rates_too_dear_to_provision_for_the_users_are_refused_naming_the_flags() -> None:
    cfg = LoadConfig(admin_token="t", users=1000, daily_rate=1_000_000_000)
    with pytest.raises(ValueError, match=r"^--daily-rate 1,000,000,000 and --plugin-rate 1 for"):
        cfg.validate()
    LoadConfig(fake_users=True, users=1000, daily_rate=1_000_000_000).validate()  # buys none
    LoadConfig(admin_token="t", users=2, daily_rate=1_000_000_000).validate()  # 9 packs


def test_load_provisioning_buys_tokens_in_packs_the_server_sells() -> None:
    assert packs(1_000_000_000) == [1_000_000_000]
    assert packs(1_600_001_000) == [1_000_000_000, 600_001_000]
    assert packs(1) == [1]
    assert provision_tokens(2, 200_000_000, 1) == 1_600_001_008


@pytest.mark.slow
def test_load_a_daily_rate_past_one_pack_provisions(tmp_path: Path) -> None:
    """``--daily-rate 200000000 -n 2`` needs 1,600,001,008 tokens: one PurchaseTokens of
    them was refused (``tokens: must be a whole number from 1 to 1,000,000,000``)."""
    srv = ServerThread(tmp_path / "t.db").start()
    try:
        cfg = LoadConfig(
            target=srv.target, admin_token=ADMIN_TOKEN, users=2, daily_rate=200_000_000
        )
        cfg.validate()
        users = asyncio.run(
            provision(cfg.new_targets(), cfg.retry(), ADMIN_TOKEN, 2, daily_rate=200_000_000)
        )
        with grpc.insecure_channel(srv.target) as channel:
            team = admin_grpc.AdminServiceStub(channel).GetTeam(
                admin_pb.GetTeamRequest(team_id=users.team_id),
                metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),),
                timeout=10,
            )
    finally:
        srv.stop()
    assert len(users.users) == 2
    assert team.team.available_tokens == provision_tokens(2, 200_000_000, 1) == 1_600_001_008
