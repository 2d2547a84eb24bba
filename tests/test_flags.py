"""Flags whose values parse but would break the server (issue 12): each is refused
before anything is opened, in one line naming the flag, never with a traceback.

Numbers that gRPC cannot take, or that leave the server useless (no request
accepted, empty pages, no bulk call, a flush that never comes, a RetryInfo
that cannot be said, a lease PostgreSQL cannot time) are usage errors (exit
2, like every value ``--help`` describes). TLS files are checked when the
server starts, as ``--db`` is: a missing or unreadable file, one that holds
no PEM, a key that is not the certificate's, a client CA without a
certificate, each is one line naming the flag and the file (exit 1), in one
process as with the front process, before the port is bound and the database
made. A listen address without a host is 127.0.0.1, as the help says, when
binding as everywhere else; an advertised one, which others dial, needs a
host and a port.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from google.rpc import error_details_pb2, status_pb2

from server.api.errors import ResourceExhausted, to_status
from server.api.limits import RateLimits
from server.config import (
    MAX_MESSAGE_LIMIT,
    MIN_MESSAGE_LIMIT,
    MIN_RATE,
    OPTIONS,
    Config,
    parse_args,
    split_listen,
)
from server.listen import StartRefused, grpc_address, grpc_server, tls_credentials
from tests.security.test_tls import _issue
from tests.support import ADMIN_TOKEN, T0, ServerProcess, until_serving
from tests.test_startup import start_server

MODES = pytest.mark.parametrize(
    "mode", ["--no-front-process", "--front-process"], ids=["one-process", "front"]
)


@pytest.fixture(autouse=True)
def no_tessera_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in OPTIONS:
        monkeypatch.delenv(option.env, raising=False)


def start(
    db: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m server`` for a start that is expected to be refused (the variables
    of the environment are gone: ``no_tessera_variables``)."""
    return start_server(
        "--db", str(db), "--admin-token", ADMIN_TOKEN, "--test-clock", T0, *args, env=env
    )


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """``parse_args(argv)`` must exit 2; its last stderr line."""
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


# -- numbers: refused at parse time, naming the flag ------------------------------


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["--max-message-bytes", "99999999999"],
            "--max-message-bytes: '99999999999' is over 2147483647: gRPC's limit, a 32-bit integer",
        ),
        (
            ["--max-message-bytes", "0"],
            "--max-message-bytes: '0' is under 1: gRPC would refuse every request",
        ),
        (
            ["--max-page-size", "0"],
            "--max-page-size: '0' is under 1: every List call would answer an empty page "
            "with no next page token",
        ),
        (
            ["--max-users-per-request", "0"],
            "--max-users-per-request: '0' is under 1: every AssignUsers and ImportUsers "
            "would be refused",
        ),
    ],
    ids=["message-over-int32", "message-0", "page-0", "users-0"],
)
def test_issue12_a_limit_that_grpc_cannot_take_or_that_serves_nothing_is_a_usage_error_naming_it(
    argv: list[str], line: str, tmp_path: Path
) -> None:
    """As the operator meets it: exit 2, the flag named on the last line, no
    traceback (the OverflowError of gRPC's int32 channel arguments was one),
    and no database made."""
    db = tmp_path / "fresh" / "tessera.db"
    result = start(db, *argv)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(f"tessera-server: error: {line}")
    assert "Traceback" not in result.stderr
    assert not db.parent.exists()


def test_issue12_max_message_bytes_from_the_environment_is_bounded_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TESSERA_MAX_MESSAGE_BYTES", "2147483648")
    assert usage_error([], capsys).startswith(
        "tessera-server: error: TESSERA_MAX_MESSAGE_BYTES: '2147483648' is over 2147483647"
    )


def test_issue12_max_message_bytes_takes_its_bounds_themselves() -> None:
    assert parse_args(["--max-message-bytes", "1"]).max_message_bytes == MIN_MESSAGE_LIMIT
    assert parse_args(["--max-message-bytes", str(MAX_MESSAGE_LIMIT)]).max_message_bytes == (
        2**31 - 1
    )
    assert parse_args(["--max-page-size", "1"]).max_page_size == 1
    assert parse_args(["--max-users-per-request", "1"]).max_users_per_request == 1


def test_issue12_the_largest_max_message_bytes_is_exactly_what_grpc_takes() -> None:
    """The bound is gRPC's own: its largest value makes a server, one more
    raises the OverflowError the probe saw as a traceback."""

    async def make(limit: int) -> None:
        server = grpc_server(Config(max_message_bytes=limit))
        await server.stop(None)

    asyncio.run(make(MAX_MESSAGE_LIMIT))
    with pytest.raises(OverflowError):
        asyncio.run(make(MAX_MESSAGE_LIMIT + 1))


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["--heartbeat-flush", "0"],
            "--heartbeat-flush: '0' is under 0.01: 0 never writes it until the server stops",
        ),
        (["--heartbeat-flush", "86400"], "--heartbeat-flush: '86400' is over 3600"),
        (
            ["--user-rate-limit", "1e-300"],
            "--user-rate-limit: '1e-300' is neither 0 (off) nor from 0.001 to 1000000",
        ),
        (
            ["--admin-rate-limit", "1e308"],
            "--admin-rate-limit: '1e308' is neither 0 (off) nor from 0.001 to 1000000",
        ),
        (["--user-burst", "1e400"], "--user-burst: '1e400' is not a number"),
        (["--admin-burst", "10" + "0" * 400], "--admin-burst: '1000"),
        (["--leader-lease", "1e300"], "--leader-lease: '1e300' is over 86400 seconds"),
    ],
    ids=[
        "flush-0",
        "flush-a-day",
        "rate-tiny",
        "rate-huge",
        "burst-not-int",
        "burst-huge",
        "lease-huge",
    ],
)
def test_issue12_a_flush_rate_burst_or_lease_that_would_break_the_server_is_a_usage_error(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flush of 0 never wrote the heartbeat history (and never forgot ended
    sessions); a tiny rate made every refusal's RetryInfo overflow (INTERNAL), a
    huge one (burst 0: twice the rate) or burst overflowed a float at start; a
    lease past PostgreSQL's idle timeout (a 32-bit count of ms) failed every write."""
    assert usage_error(argv, capsys).startswith(f"tessera-server: error: {line}")


def test_issue12_a_burst_of_0_is_twice_the_rate_and_a_rate_of_0_is_off() -> None:
    cfg = parse_args(["--user-rate-limit", "0", "--admin-rate-limit", "5", "--admin-burst", "0"])
    assert (cfg.user_rate_limit, cfg.admin_rate_limit, cfg.admin_burst) == (0.0, 5.0, 0)
    assert RateLimits(cfg.admin_rate_limit, cfg.admin_burst).burst == 10
    assert not RateLimits(cfg.user_rate_limit, cfg.user_burst).enabled


def test_issue12_the_slowest_rate_allowed_still_refuses_with_a_retry_info() -> None:
    """At the slowest rate taken, a refusal becomes a status whose RetryInfo
    says the interval (a slower one overflowed there: every call INTERNAL)."""
    assert parse_args(["--user-rate-limit", str(MIN_RATE)]).user_rate_limit == MIN_RATE
    limits = RateLimits(MIN_RATE, 1)
    limits.take("user")
    with pytest.raises(ResourceExhausted) as refusal:
        limits.take("user")
    metadata = to_status(refusal.value).trailing_metadata
    (raw,) = (value for key, value in metadata if key == "grpc-status-details-bin")
    details = status_pb2.Status.FromString(raw).details
    (retry,) = (d for d in details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR))
    info = error_details_pb2.RetryInfo()
    retry.Unpack(info)
    assert info.retry_delay.seconds == 1000


# -- addresses -----------------------------------------------------------------


@pytest.mark.parametrize("listen", ["0.0.0.0:50051", "[::]:50051"])
def test_h1_listening_on_every_address_with_postgresql_needs_an_advertised_one(
    listen: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The advertised address defaults to the listen address, and a standby names the
    active's in NOT_LEADER for clients to follow (H3): a wildcard would send a client
    to its own machine. SQLite's one server advertises nothing: it may listen so."""
    pg = ["--db", "postgresql://tessera@127.0.0.1:5432/tessera", "--listen", listen]
    assert usage_error(pg, capsys).startswith(
        f"tessera-server: error: --listen {listen} is every address of this machine, "
        "which no other can dial: with a PostgreSQL database give --advertise"
    )
    assert parse_args([*pg, "--advertise", "tessera-a.internal:50051"]).listen == listen
    assert parse_args(["--listen", listen]).advertise is None


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (":50051", "--advertise: ':50051' has no host: others could not dial it"),
        ("127.0.0.1:0", "--advertise: '127.0.0.1:0' has port 0, which no one can dial"),
        ("0.0.0.0:50051", "--advertise: '0.0.0.0:50051' is every address of a machine"),
        ("[::]:50051", "--advertise: '[::]:50051' is every address of a machine"),
    ],
)
def test_issue12_an_advertised_address_without_a_host_or_port_is_a_usage_error(
    value: str, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Others dial it as given (NOT_LEADER names it): no host and port 0 are
    nowhere, unlike --listen's, which this server binds."""
    assert usage_error(["--advertise", value], capsys).startswith(f"tessera-server: error: {line}")


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("::1", "--listen: '::1': an IPv6 address goes in brackets, before its port"),
        ("[::1", "--listen: '[::1': an IPv6 address goes in brackets"),
        ("[::1:50051", "--listen: '[::1:50051': an IPv6 address goes in brackets"),
        ("::1]:50051", "--listen: '::1]:50051': an IPv6 address goes in brackets"),
        ("localhost:\u00b2", "--listen: 'localhost:\u00b2' is not host:port"),
        ("localhost:\uff11\uff12", "--listen: 'localhost:\uff11\uff12' is not host:port"),
    ],
)
def test_issue12_a_listen_address_gRPC_would_misread_is_a_usage_error(
    value: str, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``::1`` was read as host ``:`` and port 1 (then "name or service not known", exit
    1), and a superscript or full-width digit passed as a port's: each is refused at
    start naming the flag, as any address that is not host:port."""
    assert usage_error(["--listen", value], capsys).startswith(f"tessera-server: error: {line}")
    assert parse_args(["--listen", "[::1]:0"]).listen == "[::1]:0"


def test_issue12_a_listen_address_without_a_host_binds_127_0_0_1_as_its_help_says() -> None:
    assert "no host, as in :50051: 127.0.0.1" in next(
        o.help for o in OPTIONS if o.field == "listen"
    )
    assert grpc_address(":50051") == "127.0.0.1:50051"
    assert grpc_address("[::1]:50051") == "[::1]:50051"
    assert grpc_address("localhost:0") == "localhost:0"


@MODES
def test_issue12_listen_without_a_host_serves_on_127_0_0_1_in_either_process_model(
    mode: str, tmp_path: Path
) -> None:
    """gRPC refused an empty host ("cannot listen on :N: address not
    available") although the flag's check, the banner and the advertised
    address all took it as 127.0.0.1."""
    server = ServerProcess(tmp_path / "tessera.db", extra=[mode, "--listen", ":0"]).start()
    try:
        asyncio.run(until_serving(f"127.0.0.1:{server.port}"))
    finally:
        assert server.terminate() == 0


# -- TLS files: checked before the port is bound -----------------------------------


@dataclass
class Pem:
    cert: Path
    key: Path


def _write(folder: Path, name: str, password: bytes | None = None) -> Pem:
    """A self-signed certificate for 127.0.0.1 and its key (``tests/security/test_tls``'s
    ``_issue``), as two PEM files; the key encrypted with ``password`` if given."""
    made = _issue(name, None, ca=True, server=True)
    key = made.key
    if password:
        loaded = serialization.load_pem_private_key(key, password=None)
        key = loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
    pem = Pem(folder / f"{name}.pem", folder / f"{name}-key.pem")
    pem.cert.write_bytes(made.cert)
    pem.key.write_bytes(key)
    return pem


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[dict[str, Path]]:
    folder = tmp_path / "pki"
    folder.mkdir()
    server, other, client_ca = (_write(folder, n) for n in ("server", "other", "client-ca"))
    locked = _write(folder, "locked", password=b"correct horse")
    garbage = folder / "garbage.pem"
    garbage.write_bytes(b"not a certificate\n")
    yield {
        "cert": server.cert,
        "key": server.key,
        "other-key": other.key,
        "ca": client_ca.cert,
        "locked-cert": locked.cert,
        "locked-key": locked.key,
        "garbage": garbage,
        "dir": folder,
    }


def refused_in_one_line(result: subprocess.CompletedProcess[str], line: str, db: Path) -> None:
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"tessera-server: {line}"]
    assert "Traceback" not in result.stdout
    assert not db.parent.exists()


@MODES
@pytest.mark.parametrize(
    ("cert", "key", "line"),
    [
        (
            "/nonexist.pem",
            "/nonexist.key",
            "cannot read --tls-cert /nonexist.pem: no such file or directory",
        ),
        ("cert", "/nonexist.key", "cannot read --tls-key /nonexist.key: no such file or directory"),
        ("dir", "dir", "cannot read --tls-cert {dir}: is a directory"),
        ("cert", "dir", "cannot read --tls-key {dir}: is a directory"),
    ],
    ids=["no-cert", "no-key", "cert-a-directory", "key-a-directory"],
)
def test_issue12_a_tls_file_that_cannot_be_read_is_refused_naming_its_flag_and_file(
    mode: str, cert: str, key: str, line: str, pki: dict[str, Path], tmp_path: Path
) -> None:
    """With the front process this was 25 lines of the front's traceback and
    "the front process ended at its start"; alone, an errno without the flag."""
    db = tmp_path / "fresh" / "tessera.db"
    result = start(
        db, mode, "--tls-cert", str(pki.get(cert, cert)), "--tls-key", str(pki.get(key, key))
    )
    refused_in_one_line(result, line.replace("{dir}", str(pki["dir"])), db)


@MODES
def test_issue12_a_tls_key_that_does_not_match_its_certificate_is_refused_naming_both_flags(
    mode: str, pki: dict[str, Path], tmp_path: Path
) -> None:
    """Not gRPC's "Invalid private key" log and "cannot listen ...: address not
    available": the port was never the matter."""
    db = tmp_path / "fresh" / "tessera.db"
    cert, key = pki["cert"], pki["other-key"]
    result = start(db, mode, "--tls-cert", str(cert), "--tls-key", str(key))
    refused_in_one_line(
        result,
        f"--tls-key {key} does not match --tls-cert {cert} (the chain's first certificate "
        "is for another key)",
        db,
    )


@MODES
@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (
            ("--tls-cert", "garbage", "--tls-key", "key"),
            "--tls-cert {garbage} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ),
        (
            ("--tls-cert", "cert", "--tls-key", "garbage"),
            "--tls-key {garbage} holds no PEM private key that can be read",
        ),
        (
            ("--tls-cert", "cert", "--tls-key", "key", "--tls-client-ca", "garbage"),
            "--tls-client-ca {garbage} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ),
        (
            ("--tls-cert", "cert", "--tls-key", "key", "--tls-client-ca", "key"),
            "--tls-client-ca {key} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ),
        (
            ("--tls-cert", "locked-cert", "--tls-key", "locked-key"),
            "--tls-key {locked-key} is encrypted: the server cannot ask for its passphrase; "
            "give it unencrypted, readable by its owner only",
        ),
    ],
    ids=["garbage-cert", "garbage-key", "garbage-client-ca", "client-ca-a-key", "encrypted-key"],
)
def test_issue12_a_tls_file_that_is_not_what_its_flag_needs_is_refused_before_binding(
    mode: str, flags: tuple[str, ...], line: str, pki: dict[str, Path], tmp_path: Path
) -> None:
    db = tmp_path / "fresh" / "tessera.db"
    result = start(db, mode, *(str(pki.get(f, f)) for f in flags))
    expected = line
    for name, path in pki.items():
        expected = expected.replace("{" + name + "}", str(path))
    refused_in_one_line(result, expected, db)


def test_issue12_a_tls_file_too_large_to_be_pem_is_refused_without_reading_it_all(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    big = tmp_path / "big.pem"
    big.write_bytes(b"x" * (2 * 1024 * 1024))
    cfg = Config(tls_cert=big, tls_key=pki["key"])
    with pytest.raises(StartRefused) as refusal:
        tls_credentials(cfg)
    assert str(refusal.value) == f"--tls-cert {big} is over 1 MiB: not a PEM file"


@pytest.mark.parametrize(
    ("valid", "words"),
    [
        ((-2, -1), "expired at"),
        ((1, 2), "is valid only from"),
    ],
    ids=["expired", "not-yet-valid"],
)
def test_issue12_a_tls_certificate_outside_its_dates_is_refused_naming_them(
    valid: tuple[int, int], words: str, tmp_path: Path
) -> None:
    """Every client would refuse it (grpcurl: "x509: certificate has expired or is
    not yet valid") while the server said it was serving: the start is refused."""
    made = _issue(
        "localhost",
        None,
        ca=True,
        server=True,
        valid=(timedelta(days=valid[0]), timedelta(days=valid[1])),
    )
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(made.cert)
    key.write_bytes(made.key)
    with pytest.raises(StartRefused) as refusal:
        tls_credentials(Config(tls_cert=cert, tls_key=key))
    assert str(refusal.value).startswith(f"--tls-cert {cert} {words} ")
    assert "UTC" in str(refusal.value)


def test_issue12_matching_tls_files_with_a_client_ca_make_credentials(pki: dict[str, Path]) -> None:
    """The checks refuse only what is wrong: a chain and its key, and a CA."""
    cfg = Config(tls_cert=pki["cert"], tls_key=pki["key"], tls_client_ca=pki["ca"])
    assert tls_credentials(cfg) is not None
    assert tls_credentials(Config()) is None


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["--admin-token", ""],
            "--admin-token: is empty: leave it out to have one made at the first start",
        ),
        (
            ["--admin-token", "   "],
            "--admin-token: is empty: leave it out to have one made at the first start",
        ),
        (
            ["--admin-token", "tsa_x\nsecret"],
            "--admin-token: must be printable ASCII (it travels in the authorization header)",
        ),
        (
            ["--test-clock", "0001-01-01T00:00:00+05:00"],
            "--test-clock: '0001-01-01T00:00:00+05:00' is outside the test clock's range",
        ),
        (
            ["--test-clock", "9999-12-31T23:00:00-05:00"],
            "--test-clock: '9999-12-31T23:00:00-05:00' is outside the test clock's range",
        ),
    ],
    ids=["token-empty", "token-blank", "token-newline", "clock-year-1", "clock-year-9999"],
)
def test_issue12_an_admin_token_no_call_could_send_or_a_clock_past_the_calendar_is_a_usage_error(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty token served with no operator at all (no empty bearer can be sent);
    an offset past the first or last hours of the calendar was a traceback."""
    last = usage_error(argv, capsys)
    assert last.startswith(f"tessera-server: error: {line}")
    assert "secret" not in last  # the token's text is never repeated


def test_issue12_an_admin_token_is_read_without_the_spaces_around_it() -> None:
    assert parse_args(["--admin-token", " tsa_abc \n"]).admin_token == "tsa_abc"


@pytest.mark.parametrize(
    "value", ["::1", "[::1", "[::1:8080", "::1]:8080", "h:\u00b2", "[::1]:0", ":8080", "h:1"]
)
def test_issue12_the_portal_reads_a_listen_address_as_the_server_does(value: str) -> None:
    """``python -m portal --listen`` (and ``--http-listen``'s portal) takes and refuses
    the same addresses as the server's ``--listen``, for the same reason."""
    from portal.serve import split

    def read(parse: Any) -> tuple[str, int] | str:
        try:
            return parse(value)  # type: ignore[no-any-return]
        except ValueError as exc:
            return str(exc).split(" (e.g.")[0].split(", before its port")[0]

    assert read(split) == read(split_listen)
