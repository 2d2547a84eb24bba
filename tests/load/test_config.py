"""The loopback guard and the options of ``python -m client_sdk.load``."""

from __future__ import annotations

import pytest

from client_sdk.load import LoadConfig, RemoteTargetError, check_target, is_loopback
from client_sdk.load.__main__ import main
from client_sdk.load.config import FAILOVER_ATTEMPTS, parse, target_host


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
        LoadConfig(fake_users=True, users_file=__import__("pathlib").Path("u.json")).validate()


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


def test_h3_every_target_passes_the_loopback_guard() -> None:
    cfg, _ = parse(["--target", "127.0.0.1:1,203.0.113.7:50051", "--fake-users"])
    with pytest.raises(RemoteTargetError, match=r"203\.0\.113\.7"):
        cfg.validate()
    with pytest.raises(ValueError, match="at least one"):
        parse(["--target", ",", "--fake-users"])[0].validate()
    with pytest.raises(ValueError, match="--attempts"):
        LoadConfig(fake_users=True, attempts=-1).validate()
