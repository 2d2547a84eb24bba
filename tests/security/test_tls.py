"""Transport security (issue 6): --tls-cert/--tls-key serve TLS, --tls-client-ca
demands client certificates (mTLS). Certificates are made here with the
``cryptography`` package, as the README makes them with openssl."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.testclient import TestClient

from portal import __main__ as portal_main
from portal.app import create_app
from server.clock import SystemClock
from tests.portal.conftest import csrf_of
from tests.support import ADMIN_TOKEN, running


@dataclass
class Pem:
    cert: bytes
    key: bytes


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    cn: str,
    issuer: Pem | None,
    *,
    ca: bool = False,
    server: bool = False,
    valid: tuple[dt.timedelta, dt.timedelta] = (dt.timedelta(minutes=-5), dt.timedelta(days=1)),
) -> Pem:
    """A certificate and its key, valid from ``valid[0]`` to ``valid[1]`` from now."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = SystemClock().now()  # certificates are checked against the real time
    issuer_cert = x509.load_pem_x509_certificate(issuer.cert) if issuer else None
    issuer_key = serialization.load_pem_private_key(issuer.key, password=None) if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_cert.subject if issuer_cert else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + valid[0])
        .not_valid_after(now + valid[1])
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    cert = builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
    return Pem(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path | Pem]:
    ca = _issue("Tessera test CA", None, ca=True)
    srv = _issue("localhost", ca, server=True)
    client = _issue("operator", ca)
    files: dict[str, Path | Pem] = {"ca": ca, "client": client}
    for name, data in {
        "ca.pem": ca.cert,
        "server.pem": srv.cert,
        "server-key.pem": srv.key,
    }.items():
        (tmp_path / name).write_bytes(data)
        files[name] = tmp_path / name
    return files


def _health(target: str, credentials: grpc.ChannelCredentials | None) -> int:
    channel = (
        grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    )
    with channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return int(reply.status)


def test_tls_server_answers_over_tls_and_refuses_plaintext(tmp_path: Path, pki: dict) -> None:  # type: ignore[type-arg]
    with running(
        tmp_path / "t.db", tls_cert=pki["server.pem"], tls_key=pki["server-key.pem"]
    ) as srv:
        creds = grpc.ssl_channel_credentials(root_certificates=pki["ca"].cert)
        assert _health(srv.target, creds) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            _health(srv.target, None)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("front_process", [False, True], ids=["one-process", "front-process"])
def test_mtls_demands_a_client_certificate_from_the_ca(
    tmp_path: Path,
    pki: dict,  # type: ignore[type-arg]
    front_process: bool,
) -> None:
    with running(
        tmp_path / "t.db",
        tls_cert=pki["server.pem"],
        tls_key=pki["server-key.pem"],
        tls_client_ca=pki["ca.pem"],
        front_process=front_process,  # then the front holds the port, TLS and all
    ) as srv:
        client: Pem = pki["client"]
        good = grpc.ssl_channel_credentials(
            root_certificates=pki["ca"].cert, private_key=client.key, certificate_chain=client.cert
        )
        assert _health(srv.target, good) == health_pb2.HealthCheckResponse.SERVING
        anonymous = grpc.ssl_channel_credentials(root_certificates=pki["ca"].cert)
        with pytest.raises(grpc.RpcError) as info:
            _health(srv.target, anonymous)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        stranger = _issue("stranger", _issue("Other CA", None, ca=True))
        foreign = grpc.ssl_channel_credentials(
            root_certificates=pki["ca"].cert,
            private_key=stranger.key,
            certificate_chain=stranger.cert,
        )
        with pytest.raises(grpc.RpcError):
            _health(srv.target, foreign)


def test_mtls_the_portal_on_its_own_signs_in_with_its_client_certificate(
    tmp_path: Path,
    pki: dict,  # type: ignore[type-arg]
) -> None:
    """docs/portal.md: ``python -m portal`` runs against any Tessera; one that demands
    client certificates (--tls-client-ca) is reached with the portal's own
    (--tls-cert, --tls-key), and without one every sign-in met "cannot be reached"."""
    client: Pem = pki["client"]
    (tmp_path / "portal.pem").write_bytes(client.cert)
    (tmp_path / "portal-key.pem").write_bytes(client.key)
    with running(
        tmp_path / "t.db",
        tls_cert=pki["server.pem"],
        tls_key=pki["server-key.pem"],
        tls_client_ca=pki["ca.pem"],
    ) as srv:
        flags = ["--server", srv.target, "--tls-ca", str(pki["ca.pem"])]
        mine = [
            "--tls-cert",
            str(tmp_path / "portal.pem"),
            "--tls-key",
            str(tmp_path / "portal-key.pem"),
        ]
        for given, where in ((mine, "/teams"), ([], None)):
            tls = portal_main.tls_of(portal_main.parse([*flags, *given]))
            with TestClient(create_app(srv.target, tls=tls), base_url="http://127.0.0.1") as web:
                page = web.get("/signin")
                answer = web.post(
                    "/signin",
                    data={"csrf": csrf_of(page.text), "credential": ADMIN_TOKEN},
                    follow_redirects=False,
                )
            assert answer.headers.get("location") == where, answer.status_code


@pytest.mark.parametrize(
    ("files", "line"),
    [
        ({"--tls-ca": "{dir}"}, "--tls-ca {dir}: is a directory"),
        ({"--tls-ca": "{missing}"}, "--tls-ca {missing}: no such file or directory"),
        ({"--tls-ca": "{garbage}"}, "--tls-ca {garbage} holds no PEM certificate"),
        (
            {"--tls-ca": "{ca}", "--tls-cert": "{garbage}", "--tls-key": "{garbage}"},
            "--tls-cert {garbage} holds no PEM certificate",
        ),
    ],
)
async def test_mtls_the_portal_on_its_own_refuses_a_tls_file_naming_its_flag(
    tmp_path: Path,
    pki: dict,  # type: ignore[type-arg]
    capsys: pytest.CaptureFixture[str],
    files: dict[str, str],
    line: str,
) -> None:
    """A file ``python -m portal`` cannot use is refused at its start, exit 2, in one
    line naming the flag it came from, where it named the SDK's parameter
    (``root_ca holds no PEM certificate``) or no flag at all (``[Errno 21] ...``)."""
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    paths = {
        "dir": str(tmp_path),
        "missing": str(tmp_path / "missing.pem"),
        "garbage": str(tmp_path / "garbage.pem"),
        "ca": str(pki["ca.pem"]),
    }
    flags = [x for flag, path in files.items() for x in (flag, path.format(**paths))]
    args = portal_main.parse(["--listen", "127.0.0.1:0", "--server", "127.0.0.1:1", *flags])
    assert await portal_main.run(args) == 2
    assert capsys.readouterr().err == f"python -m portal: {line.format(**paths)}\n"
