"""The loopback guard and the options of ``python -m client_sdk.load``."""

from __future__ import annotations

import pytest

from client_sdk.load import LoadConfig, RemoteTargetError, check_target, is_loopback
from client_sdk.load.__main__ import main
from client_sdk.load.config import parse, target_host


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
