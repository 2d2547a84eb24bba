"""Flags whose values parse but would break the server (H4): each is refused
before anything is opened, in one line naming the flag, never with a traceback.

TLS files are checked when the server starts, as ``--db`` is: a missing or
unreadable file, one that holds no PEM, a key that is not the certificate's,
a client CA without a certificate, each is one line naming the flag and the
file (exit 1), in one process as with the front process, before the port is
bound and the database made. A listen address without a host is 127.0.0.1,
as the help says, when binding as everywhere else; an advertised one, which
others dial, needs a host and a port.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.config import (
    OPTIONS,
    Config,
    parse_args,
)
from server.listen import StartRefused, grpc_address, tls_credentials
from tests.support import ADMIN_TOKEN, REPO, T0, ServerProcess, until_serving

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
    """``python -m server`` for a start that is expected to be refused."""
    variables = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--db",
            str(db),
            "--admin-token",
            ADMIN_TOKEN,
            "--test-clock",
            T0,
            *args,
        ],
        cwd=REPO,
        env={**variables, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """``parse_args(argv)`` must exit 2; its last stderr line."""
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


# -- addresses -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (":50051", "--advertise: ':50051' has no host: others could not dial it"),
        ("127.0.0.1:0", "--advertise: '127.0.0.1:0' has port 0, which no one can dial"),
    ],
)
def test_h4_an_advertised_address_without_a_host_or_port_is_a_usage_error(
    value: str, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Others dial it as given (NOT_LEADER names it): no host and port 0 are
    nowhere, unlike --listen's, which this server binds."""
    assert usage_error(["--advertise", value], capsys).startswith(f"tessera-server: error: {line}")


def test_h4_a_listen_address_without_a_host_binds_127_0_0_1_as_its_help_says() -> None:
    assert "no host, as in :50051: 127.0.0.1" in next(
        o.help for o in OPTIONS if o.field == "listen"
    )
    assert grpc_address(":50051") == "127.0.0.1:50051"
    assert grpc_address("[::1]:50051") == "[::1]:50051"
    assert grpc_address("localhost:0") == "localhost:0"


@MODES
def test_h4_listen_without_a_host_serves_on_127_0_0_1_in_either_process_model(
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


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(folder: Path, name: str, password: bytes | None = None) -> Pem:
    """A self-signed certificate for 127.0.0.1 and its key, as two PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime(2026, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=3650))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    pem = Pem(folder / f"{name}.pem", folder / f"{name}-key.pem")
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
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
def test_h4_a_tls_file_that_cannot_be_read_is_refused_naming_its_flag_and_file(
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
def test_h4_a_tls_key_that_does_not_match_its_certificate_is_refused_naming_both_flags(
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
def test_h4_a_tls_file_that_is_not_what_its_flag_needs_is_refused_before_binding(
    mode: str, flags: tuple[str, ...], line: str, pki: dict[str, Path], tmp_path: Path
) -> None:
    db = tmp_path / "fresh" / "tessera.db"
    result = start(db, mode, *(str(pki.get(f, f)) for f in flags))
    expected = line
    for name, path in pki.items():
        expected = expected.replace("{" + name + "}", str(path))
    refused_in_one_line(result, expected, db)


def test_h4_a_tls_file_too_large_to_be_pem_is_refused_without_reading_it_all(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    big = tmp_path / "big.pem"
    big.write_bytes(b"x" * (2 * 1024 * 1024))
    cfg = Config(tls_cert=big, tls_key=pki["key"])
    with pytest.raises(StartRefused) as refusal:
        tls_credentials(cfg)
    assert str(refusal.value) == f"--tls-cert {big} is over 1 MiB: not a PEM file"


def test_h4_matching_tls_files_with_a_client_ca_make_credentials(pki: dict[str, Path]) -> None:
    """The checks refuse only what is wrong: a chain and its key, and a CA."""
    cfg = Config(tls_cert=pki["cert"], tls_key=pki["key"], tls_client_ca=pki["ca"])
    assert tls_credentials(cfg) is not None
    assert tls_credentials(Config()) is None
