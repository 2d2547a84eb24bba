"""Configuration from flags and environment (API.md "Starting the server")."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class Config:
    listen: str = "127.0.0.1:50051"
    db: Path = Path("var/tessera.db")
    admin_token: str | None = None
    test_clock: datetime | None = None
    log_format: str = "auto"  # auto: console on a terminal, JSON otherwise
    log_level: str = "info"
    sync: str = "FULL"
    shutdown_grace: float = 10.0
    max_message_bytes: int = 4 * 1024 * 1024
    heartbeat_flush: float = 2.0  # seconds between writes of heartbeat history
    log_heartbeats: bool = False  # a line per successful Heartbeat too (failures always)
    user_rate_limit: float = 200.0  # calls per second per user key (0: off)
    user_burst: int = 1000
    admin_rate_limit: float = 0.0  # calls per second with the admin token (0: off)
    admin_burst: int = 0
    max_users_per_request: int = 10_000  # AssignUsers / ImportUsers entries
    max_page_size: int = 1000
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # demand client certificates signed by it (mTLS)

    @property
    def admin_token_path(self) -> Path:
        return self.db.parent / (self.db.name + ".admin-token")


def parse_instant(text: str) -> datetime:
    """An RFC 3339 instant; one without an offset is taken as UTC."""
    t = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC)


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def parse_args(argv: Sequence[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="tessera-server", description="Tessera license server (gRPC)")
    p.add_argument(
        "--listen",
        default=_env("TESSERA_LISTEN", Config.listen),
        help="host:port to serve on (TESSERA_LISTEN; default %(default)s)",
    )
    p.add_argument(
        "--db",
        default=_env("TESSERA_DB", str(Config.db)),
        help="SQLite file (TESSERA_DB; default %(default)s)",
    )
    p.add_argument(
        "--admin-token",
        default=_env("TESSERA_ADMIN_TOKEN"),
        help="operators' bearer token (TESSERA_ADMIN_TOKEN; default: generated "
        "once and kept beside the database)",
    )
    p.add_argument(
        "--test-clock",
        default=_env("TESSERA_TEST_CLOCK"),
        metavar="RFC3339",
        help="start in test-clock mode at this instant (TESSERA_TEST_CLOCK)",
    )
    p.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=_env("TESSERA_LOG_FORMAT", "auto"),
    )
    p.add_argument("--log-level", default=_env("TESSERA_LOG_LEVEL", "info"))
    p.add_argument(
        "--sync",
        choices=["FULL", "NORMAL"],
        default=_env("TESSERA_SYNC", "FULL"),
        help="SQLite synchronous mode (default FULL: a commit survives power loss)",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=10.0,
        help="seconds to let calls under way finish on SIGTERM",
    )
    p.add_argument(
        "--heartbeat-flush",
        type=float,
        default=float(_env("TESSERA_HEARTBEAT_FLUSH", "2.0") or 2.0),
        metavar="SECONDS",
        help="how often heartbeat history is written (TESSERA_HEARTBEAT_FLUSH; default "
        "%(default)s): a crash loses at most this much of it, never a charge",
    )
    p.add_argument(
        "--user-rate-limit",
        type=float,
        default=float(_env("TESSERA_USER_RATE_LIMIT", "200") or 200),
        metavar="PER_SECOND",
        help="calls per second per user key before RESOURCE_EXHAUSTED (0: off; default "
        "%(default)s)",
    )
    p.add_argument(
        "--user-burst",
        type=int,
        default=int(_env("TESSERA_USER_BURST", "1000") or 1000),
        help="calls a user key may make at once (default %(default)s)",
    )
    p.add_argument(
        "--admin-rate-limit",
        type=float,
        default=float(_env("TESSERA_ADMIN_RATE_LIMIT", "0") or 0),
        metavar="PER_SECOND",
        help="calls per second with the admin token (0: off, the default)",
    )
    p.add_argument("--admin-burst", type=int, default=int(_env("TESSERA_ADMIN_BURST", "0") or 0))
    p.add_argument(
        "--max-message-bytes",
        type=int,
        default=int(_env("TESSERA_MAX_MESSAGE_BYTES", str(4 * 1024 * 1024)) or 0),
        help="largest request accepted (default %(default)s)",
    )
    p.add_argument(
        "--max-users-per-request",
        type=int,
        default=int(_env("TESSERA_MAX_USERS_PER_REQUEST", "10000") or 10000),
        help="most entries in one AssignUsers or ImportUsers (default %(default)s)",
    )
    p.add_argument(
        "--max-page-size",
        type=int,
        default=int(_env("TESSERA_MAX_PAGE_SIZE", "1000") or 1000),
        help="most items in one page of a List call (default %(default)s)",
    )
    p.add_argument(
        "--tls-cert",
        default=_env("TESSERA_TLS_CERT"),
        metavar="PEM",
        help="serve TLS with this certificate chain (TESSERA_TLS_CERT; needs --tls-key)",
    )
    p.add_argument(
        "--tls-key",
        default=_env("TESSERA_TLS_KEY"),
        metavar="PEM",
        help="the certificate's private key (TESSERA_TLS_KEY)",
    )
    p.add_argument(
        "--tls-client-ca",
        default=_env("TESSERA_TLS_CLIENT_CA"),
        metavar="PEM",
        help="also demand client certificates signed by this CA: mutual TLS "
        "(TESSERA_TLS_CLIENT_CA)",
    )
    p.add_argument(
        "--log-heartbeats",
        action=argparse.BooleanOptionalAction,
        default=(_env("TESSERA_LOG_HEARTBEATS", "0") or "0").lower() in ("1", "true", "yes"),
        help="also log a line for every successful Heartbeat (TESSERA_LOG_HEARTBEATS; "
        "default off: failed heartbeats and every other call are always logged)",
    )
    a = p.parse_args(argv)
    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if a.tls_client_ca and not a.tls_cert:
        p.error("--tls-client-ca needs --tls-cert and --tls-key")
    test_clock = None
    if a.test_clock:
        try:
            test_clock = parse_instant(a.test_clock)
        except ValueError:
            p.error(f"--test-clock: {a.test_clock!r} is not an RFC 3339 instant")
    return Config(
        listen=a.listen,
        db=Path(a.db),
        admin_token=a.admin_token,
        test_clock=test_clock,
        log_format=a.log_format,
        log_level=a.log_level,
        sync=a.sync,
        shutdown_grace=a.shutdown_grace,
        heartbeat_flush=a.heartbeat_flush,
        log_heartbeats=a.log_heartbeats,
        user_rate_limit=a.user_rate_limit,
        user_burst=a.user_burst,
        admin_rate_limit=a.admin_rate_limit,
        admin_burst=a.admin_burst,
        max_message_bytes=a.max_message_bytes,
        max_users_per_request=a.max_users_per_request,
        max_page_size=a.max_page_size,
        tls_cert=Path(a.tls_cert) if a.tls_cert else None,
        tls_key=Path(a.tls_key) if a.tls_key else None,
        tls_client_ca=Path(a.tls_client_ca) if a.tls_client_ca else None,
    )
