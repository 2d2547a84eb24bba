"""TLS channels (server-only and mutual), the device id, and the manual clock."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import client_sdk as sdk
from client_sdk import TLS, AsyncAdminClient, AsyncClient, ManualClock, device
from client_sdk.clock import suspend_aware_seconds
from client_sdk.device import default_device_id, device_id_for, machine_identity
from client_sdk.transport import read_pem
from tests.sdk.conftest import FAKE_KEY, QUICK_RETRY
from tests.sdk.fakes import FakeLicensing, FakeTime
from tests.security.test_tls import _issue as issue_pem

# -- a throwaway PKI -------------------------------------------------------------------


@dataclass
class Pem:
    cert: bytes
    key: bytes


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    cn: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, *, ca: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime(2026, 1, 1, tzinfo=UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer[0].subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=3650))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    return cert, key


def _pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pem:
    return Pem(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


@dataclass
class Pki:
    ca: Pem
    server: Pem
    client: Pem
    other_ca: Pem


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = _issue("Tessera test CA", None, ca=True)
    other = _issue("Somebody else's CA", None, ca=True)
    return Pki(
        ca=_pem(*ca),
        server=_pem(*_issue("localhost", ca, ca=False)),
        client=_pem(*_issue("product", ca, ca=False)),
        other_ca=_pem(*other),
    )


@pytest.fixture
async def tls_fake(pki: Pki) -> AsyncIterator[FakeLicensing]:
    creds = grpc.ssl_server_credentials([(pki.server.key, pki.server.cert)])
    fake = await FakeLicensing(ManualClock()).start(creds)
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def mtls_fake(pki: Pki) -> AsyncIterator[FakeLicensing]:
    creds = grpc.ssl_server_credentials(
        [(pki.server.key, pki.server.cert)], root_certificates=pki.ca.cert, require_client_auth=True
    )
    fake = await FakeLicensing(ManualClock()).start(creds)
    try:
        yield fake
    finally:
        await fake.stop()


async def _entitle(fake: FakeLicensing, tls: TLS) -> sdk.Session:
    # On the fake's clock: a lease already over on the client's is refused (RULES M7).
    async with AsyncClient(
        fake.target, FAKE_KEY, tls=tls, retry=QUICK_RETRY, clock=fake.clock
    ) as client:
        return await client.entitle("ACAD", "2026")


async def test_tls_with_root_ca_as_bytes_or_path(
    tls_fake: FakeLicensing, pki: Pki, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(pki.ca.cert)
    assert (await _entitle(tls_fake, TLS(root_ca=pki.ca.cert))).session_id
    assert (await _entitle(tls_fake, TLS(root_ca=ca_file))).session_id
    assert (await _entitle(tls_fake, TLS(root_ca=str(ca_file)))).session_id
    assert tls_fake.called("Entitle")[0].metadata["authorization"] == f"Bearer {FAKE_KEY}"


async def test_tls_refuses_a_server_signed_by_another_ca(tls_fake: FakeLicensing, pki: Pki) -> None:
    with pytest.raises(sdk.Unavailable):
        await _entitle(tls_fake, TLS(root_ca=pki.other_ca.cert))
    assert tls_fake.calls == []


async def test_tls_mutual_with_client_cert_and_key(
    mtls_fake: FakeLicensing, pki: Pki, tmp_path: Path
) -> None:
    (tmp_path / "client.pem").write_bytes(pki.client.cert)
    (tmp_path / "client.key").write_bytes(pki.client.key)
    tls = TLS(
        root_ca=pki.ca.cert.decode(),  # PEM text works as well
        client_cert=tmp_path / "client.pem",
        client_key=tmp_path / "client.key",
    )
    assert (await _entitle(mtls_fake, tls)).session_id
    with pytest.raises(sdk.Unavailable):
        await _entitle(mtls_fake, TLS(root_ca=pki.ca.cert))  # no client certificate
    with pytest.raises(ValueError):
        TLS(client_cert=pki.client.cert).credentials()  # a certificate without its key


@pytest.mark.parametrize(
    ("make", "words"),
    [
        ("expired", "client_cert expired at "),
        ("not yet valid", "client_cert is valid only from "),
        ("another key", "client_key is not the key of client_cert"),
        ("garbage CA", "root_ca holds no PEM certificate"),
    ],
)
def test_tls_files_it_cannot_use_are_refused_at_once_naming_them(
    pki: Pki, make: str, words: str
) -> None:
    """gRPC takes them, and every handshake then fails as a server that is down does
    ("Socket closed"), retried for the call's 20 s: refused where the client is made."""
    day = timedelta(days=1)
    if make in ("expired", "not yet valid"):
        made = issue_pem(
            "product", None, valid=(-2 * day, -day) if make == "expired" else (day, 2 * day)
        )
        tls = TLS(root_ca=pki.ca.cert, client_cert=made.cert, client_key=made.key)
    elif make == "another key":
        tls = TLS(root_ca=pki.ca.cert, client_cert=pki.client.cert, client_key=pki.server.key)
    else:
        tls = TLS(root_ca=b"not a certificate\n")
    for client in (AsyncClient, AsyncAdminClient):
        with pytest.raises(ValueError) as refused:
            client("127.0.0.1:1", FAKE_KEY, tls=tls)
        assert str(refused.value).startswith(words)


def test_read_pem_sources(tmp_path: Path) -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    (tmp_path / "x.pem").write_bytes(pem)
    assert read_pem(pem) == pem
    assert read_pem(pem.decode()) == pem
    assert read_pem(tmp_path / "x.pem") == pem
    assert read_pem(str(tmp_path / "x.pem")) == pem
    assert read_pem(None) is None


# -- device id ------------------------------------------------------------------------


def test_sdk_device_id_is_stable_and_opaque() -> None:
    first, second = default_device_id(), default_device_id()
    assert first == second
    assert first.startswith("dev-") and len(first) == 4 + 32
    identity = machine_identity()
    assert identity not in first
    assert device_id_for("machine-a") != device_id_for("machine-b")
    assert device_id_for("machine-a") == device_id_for("machine-a")


IOREG = """+-o J314sAP  <class IOPlatformExpertDevice, id 0x100000213, registered, matched>
    {
      "IOPlatformSerialNumber" = "C02XK0AAJG5H"
      "IOPlatformUUID" = "6F1E3C2A-9B7D-4E52-8A1C-0D3B5F7E9A11"
      "model" = <"MacBookPro18,3">
    }
"""


class FakeRun:
    """``subprocess.run`` as the device module calls it: ``ioreg``'s answer, or a failure."""

    def __init__(
        self, stdout: str = IOREG, *, returncode: int = 0, raises: Exception | None = None
    ) -> None:
        self.stdout, self.returncode, self.raises = stdout, returncode, raises
        self.calls: list[tuple[Sequence[str], float | None]] = []

    def __call__(
        self, args: Sequence[str], *, timeout: float | None = None, **_: object
    ) -> subprocess.CompletedProcess[str]:
        self.calls.append((args, timeout))
        if self.raises is not None:
            raise self.raises
        return subprocess.CompletedProcess(args, self.returncode, self.stdout, "")


def _a_mac(monkeypatch: pytest.MonkeyPatch, run: FakeRun) -> list[str]:
    """Make this machine a Mac with ``run`` as its ``ioreg``; returns its host name, to
    change at will."""
    host = ["Li-MacBook.local"]
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(socket, "gethostname", lambda: host[0])
    monkeypatch.setattr(device, "_linux_machine_id", lambda: None)  # no /etc/machine-id
    return host


def test_m8_device_id_on_a_mac_is_its_hardware_uuid_whatever_its_host_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # macOS has no /etc/machine-id, and renames the host by itself (a name given by DHCP,
    # "-2" added after a clash on the network): a device id hashed from the host name made
    # one Mac several devices, and the user DEVICE_LIMIT after three renames (RULES M8).
    run = FakeRun()
    host = _a_mac(monkeypatch, run)
    monday = default_device_id()
    host[0] = "Li-MacBook-2.local"
    assert default_device_id() == monday == device_id_for("6F1E3C2A-9B7D-4E52-8A1C-0D3B5F7E9A11")
    args, timeout = run.calls[0]
    assert list(args[-3:]) == ["-rd1", "-c", "IOPlatformExpertDevice"]
    assert args[0].endswith("ioreg") and timeout is not None and timeout <= 5


@pytest.mark.parametrize(
    "run",
    [
        FakeRun(raises=subprocess.TimeoutExpired("ioreg", 2.0)),  # no answer in time
        FakeRun(raises=FileNotFoundError("ioreg")),  # not there (a stripped-down system)
        FakeRun(returncode=1),  # ioreg failed
        FakeRun(stdout='    "model" = <"VirtualMac2,1">\n'),  # no UUID in its answer
    ],
    ids=["timeout", "missing", "failed", "no uuid"],
)
def test_m8_device_id_on_a_mac_without_its_uuid_falls_back_to_host_name_and_mac(
    monkeypatch: pytest.MonkeyPatch, run: FakeRun
) -> None:
    _a_mac(monkeypatch, run)
    assert machine_identity() == f"Li-MacBook.local|{uuid.getnode():012x}"
    assert run.calls  # ioreg was asked first


async def test_sdk_sends_the_machine_device_id_unless_given(
    fake: FakeLicensing, clock: ManualClock
) -> None:
    async with AsyncClient(fake.target, FAKE_KEY, clock=clock, retry=QUICK_RETRY) as client:
        await client.entitle("ACAD", "2026")
        await client.entitle("ACAD", "2026", device_id="dev-given")
        async with client.session("ACAD", "2026", device_id="dev-session"):
            pass
    assert [c.request.device_id for c in fake.called("Entitle")] == [
        default_device_id(),
        "dev-given",
        "dev-session",
    ]
    assert sdk.Platform.parse("linux") is sdk.Platform.LINUX
    assert sdk.Platform.parse("PLATFORM_WINDOWS") is sdk.Platform.WINDOWS
    with pytest.raises(ValueError):
        sdk.Platform.parse("beos")


# -- the manual clock -----------------------------------------------------------------


async def test_manual_clock_wakes_sleepers_in_order() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [asyncio.ensure_future(sleeper(n, s)) for n, s in (("b", 20), ("a", 10), ("c", 30))]
    await clock.until_sleeping(3)
    assert clock.next_deadline() == datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
    clock.advance(25)
    await asyncio.sleep(0.01)
    assert woke == ["a", "b"] and clock.sleepers == 1
    tasks[2].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert clock.sleepers == 0 and clock.next_deadline() is None
    await clock.sleep(0)  # returns at once
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        ManualClock(datetime(2026, 1, 1))  # naive


async def test_system_clock_is_utc_and_sleeps() -> None:
    clock = sdk.SystemClock()
    before = clock.now()
    await clock.sleep(0.01)
    assert clock.now() - before >= timedelta(seconds=0.009)
    assert before.tzinfo is not None and before.utcoffset() == timedelta(0)
    assert isinstance(clock, sdk.Clock)


HOUR = 3600.0


def test_m7_system_clock_counts_time_suspended_and_never_goes_back() -> None:
    t = FakeTime()
    clock = sdk.SystemClock(**t.sources())
    start = clock.now()
    assert start == datetime(2026, 1, 1, tzinfo=UTC)

    def gone() -> timedelta:
        return clock.now() - start

    t.run(60)
    assert gone() == timedelta(seconds=60)
    # Suspended 30 h: CLOCK_BOOTTIME counts it (Linux)...
    t.suspend(30 * HOUR)
    assert gone() == timedelta(hours=30, seconds=60)
    # ...and where the steady clock stops meanwhile (time.monotonic), the wall clock does.
    t.suspend(30 * HOUR, steady_counts=False)
    assert gone() == timedelta(hours=60, seconds=60)
    # The wall clock set back two days lengthens nothing: time goes on at the steady
    # clock's pace, and never goes back.
    t.wall -= 48 * HOUR
    assert gone() == timedelta(hours=60, seconds=60)
    t.run(10)
    assert gone() == timedelta(hours=60, seconds=70)
    # Set forward, it counts as time gone by: a lease ends sooner, never later.
    t.wall += HOUR
    assert gone() == timedelta(hours=61, seconds=70)
    t.steady -= 5  # (a steady clock that went back, which it must not) moves nothing back
    assert gone() == timedelta(hours=61, seconds=70)


@pytest.mark.skipif(sys.platform != "linux", reason="CLOCK_BOOTTIME is Linux's")
def test_m7_system_clock_reads_clock_boottime_on_linux() -> None:
    # CLOCK_MONOTONIC (time.monotonic) stops while the machine is suspended; BOOTTIME not.
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    read = suspend_aware_seconds()
    assert before <= read <= time.clock_gettime(time.CLOCK_BOOTTIME)
