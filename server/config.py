"""Configuration from flags and environment (API.md "Starting the server").

Every option is declared once, in ``OPTIONS``: its ``Config`` field, its help
and how its text is read. The flag (``--max-page-size``), the environment
variable (``TESSERA_MAX_PAGE_SIZE``) and the default (``Config``'s) follow from
the field's name, so ``--help`` and the README's flags table
(``scripts/flags_table.py``, checked by ``tests/test_cli.py``) cannot drift
apart. A flag wins over its variable, which wins over the default.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import socket
import sys
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server.api.convert import MIN_TIME
from server.domain.instants import rfc3339
from server.domain.terms import DEFAULT_TERMS, Terms
from server.engine.core import LATEST_TEST_CLOCK
from server.loops import EVENT_LOOPS


def front_pays() -> bool:
    """``--front-process``'s default: on where it works and pays. It needs Unix
    sockets (not Windows), and a core for each process: with one core the two
    take turns and answer fewer calls than one process alone
    (docs/performance.md, "A second process by default")."""
    if sys.platform == "win32" or not hasattr(socket, "AF_UNIX"):
        return False
    affinity = getattr(os, "sched_getaffinity", None)  # the cores this process may use
    cores = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    return cores >= 2


@dataclass(frozen=True)
class Config:
    """The settings, in the order of OPTIONS (--help and the README's table)."""

    listen: str = "127.0.0.1:50051"
    http_listen: str | None = None  # the administrators' web portal (issue 15); None: off
    metrics_listen: str | None = None  # Prometheus's /metrics (issue 16); None: off
    db: Path | str = Path("var/tessera.db")  # a str: a PostgreSQL URL
    admin_token: str | None = None
    test_clock: datetime | None = None
    end_test_clock: bool = False  # a test-clock database moves to the real clock
    log_format: str = "auto"  # auto: console on a terminal, JSON otherwise
    log_level: str = "info"
    event_loop: str = "uvloop"  # server/loops.py
    front_process: bool = front_pays()  # gRPC's work in a second process (server/front.py)
    sync: str = "FULL"
    shutdown_grace: float = 10.0
    drain_delay: float = 0.0  # seconds health says NOT_SERVING before the port closes
    heartbeat_flush: float = 2.0  # seconds between writes of heartbeat history
    log_heartbeats: bool = False  # a line per successful Heartbeat too (failures always)
    lease_batch_window: float = 0.002  # seconds a lease may wait to share a signature (0: none)
    user_rate_limit: float = 200.0  # calls per second per user key (0: off)
    user_burst: int = 1000
    admin_rate_limit: float = 0.0  # calls per second with the admin token (0: off)
    admin_burst: int = 0
    max_calls_in_flight: int = 2000  # calls under way at once; more: OVERLOADED (0: no limit)
    max_connection_age: float = 1800.0  # seconds a client's connection lasts (server/listen.py)
    max_message_bytes: int = 4 * 1024 * 1024
    max_users_per_request: int = 10_000  # AssignUsers / ImportUsers entries
    max_page_size: int = 1000
    terms: Terms = DEFAULT_TERMS  # RULES' numbers: --terms FILE changes some
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # demand client certificates signed by it (mutual TLS)
    # Several servers on one PostgreSQL database (RULES H1, H2):
    advertise: str | None = None  # None: the listen address, with the bound port
    node_id: str | None = None  # None: the advertised address
    secrets_dir: Path = Path("var")
    leader_lease: float = 5.0

    @property
    def postgres(self) -> bool:
        return isinstance(self.db, str)

    @property
    def secrets_base(self) -> Path:
        """What the secret side files are named after (``store/files.side_path``):
        the SQLite file, or with PostgreSQL ``<secrets dir>/tessera`` (never the
        database: issue 12, no secret recoverable from the database alone)."""
        if isinstance(self.db, str):
            return self.secrets_dir / "tessera"
        return self.db

    @property
    def admin_token_path(self) -> Path:
        return self.secrets_base.parent / (self.secrets_base.name + ".admin-token")


def parse_instant(text: str) -> datetime:
    """An RFC 3339 instant; one without an offset is taken as UTC."""
    t = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC)


# The test clock's range is AdvanceClock's: a target between 1970 (the API's
# earliest instant) and LATEST_TEST_CLOCK (a year short of the last Timestamp, so
# every instant the rules derive from the clock stays representable).
TEST_CLOCK_RANGE = f"{rfc3339(MIN_TIME)} to {rfc3339(LATEST_TEST_CLOCK)}"


def parse_test_clock(text: str) -> datetime:
    try:
        t = parse_instant(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 instant") from None
    except OverflowError:  # a year's first or last hours, with an offset past them
        t = None
    if t is None or not MIN_TIME <= t <= LATEST_TEST_CLOCK:
        raise ValueError(
            f"{text!r} is outside the test clock's range, {TEST_CLOCK_RANGE}: "
            "AdvanceClock could not reach it either"
        )
    return t


def _admin_token(text: str) -> str:
    """The operators' token as a client sends it: the spaces around it are not part of
    it (``Bearer <token>`` is read without them); it must be there, and be what an
    HTTP/2 header can carry (printable ASCII), or no call could ever present it."""
    token = text.strip()
    if not token:
        raise ValueError("is empty: leave it out to have one made at the first start")
    if not all(" " <= ch <= "~" for ch in token):
        raise ValueError(
            "must be printable ASCII (it travels in the authorization header), "
            "without line breaks or other control characters"
        )
    return token


def split_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) as (host, port)."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r} is not host:port (e.g. 127.0.0.1:50051, [::1]:50051)")
    bare = host[1:-1] if host[:1] == "[" and host[-1:] == "]" else host
    if "[" in bare or "]" in bare or (":" in bare and bare == host):
        raise ValueError(
            f"{text!r}: an IPv6 address goes in brackets, before its port ([::1]:50051)"
        )
    return bare or "127.0.0.1", int(port)


def _listen(text: str) -> str:
    split_listen(text)
    return text


def _advertised(text: str) -> str:
    """An address others dial: a host (none would be theirs, not this server's) and
    the port itself (0 is no port to dial)."""
    host, port = split_listen(text)
    if not text.rpartition(":")[0]:
        raise ValueError(f"{text!r} has no host: others could not dial it (e.g. 10.0.0.5:{port})")
    if every_address(host):
        raise ValueError(
            f"{text!r} is every address of a machine, not one others can dial "
            f"(e.g. 10.0.0.5:{port})"
        )
    if port == 0:
        raise ValueError(f"{text!r} has port 0, which no one can dial: give the port bound")
    return text


def every_address(host: str) -> bool:
    """Whether ``host`` is 0.0.0.0 or ::, which a server binds as all its addresses."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a name
        return False


def _database(text: str) -> Path | str:
    """A SQLite file, or a PostgreSQL URL (kept as text: a Path would fold its //)."""
    if text.startswith(("postgresql://", "postgres://")):
        return text
    return Path(text)


def node_id(text: str) -> str:
    """Printable ASCII, at most 40 characters: it names the server's election
    session in PostgreSQL (application_name, which keeps 63 bytes of ASCII and
    rewrites any other byte, so that no session would be found by its name)."""
    if not 0 < len(text) <= 40 or not all(" " < c <= "~" for c in text):
        raise ValueError(f"{text!r} is not 1 to 40 printable ASCII characters without spaces")
    return text


def _lease(text: str) -> float:
    value: float = _number(float)(text)
    if value < 0.5:
        raise ValueError(f"{text!r} is under 0.5 seconds")
    if value > MAX_LEADER_LEASE:
        # The fence sets PostgreSQL's idle_in_transaction_session_timeout to the lease,
        # in milliseconds, a 32-bit integer (24.8 days): past it every write fails.
        raise ValueError(
            f"{text!r} is over {_shown(MAX_LEADER_LEASE)} seconds (a standby would wait that long "
            "for an active that is gone)"
        )
    return value


def _batch_window(text: str) -> float:
    value: float = _number(float)(text)
    if value > 0.1:
        raise ValueError(
            f"{text!r} is over 0.1 seconds (every answer under load would wait that long)"
        )
    return value


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (1/0, true/false, yes/no, on/off)")


def _number(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        # Only a float can be infinite: an int is finite, and may be too large for a float.
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{text!r} is not a finite number")
        if value < 0:
            raise ValueError(f"{text!r} is negative")
        return value

    parse.__name__ = kind.__name__
    return parse


def _shown(value: float) -> str:
    """A bound as an operator would type it: 65536, 0.001, 1000000."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _within(
    kind: Callable[[str], Any], low: float, high: float, why_low: str, why_high: str
) -> Callable[[str], Any]:
    """A number from ``low`` to ``high``; outside, refused saying why (``why_*``)."""
    number = _number(kind)

    def parse(text: str) -> Any:
        value = number(text)
        if value < low:
            raise ValueError(f"{text!r} is under {_shown(low)}: {why_low}")
        if value > high:
            raise ValueError(f"{text!r} is over {_shown(high)}: {why_high}")
        return value

    parse.__name__ = kind.__name__
    return parse


def oserror_words(exc: OSError) -> str:
    """An OSError as a refusal says it: "no such file or directory", "address
    already in use" (its message without the errno)."""
    return (exc.strerror or str(exc)).lower()


def _terms(text: str) -> Terms:
    """A TOML file of RULES' numbers (``Terms.from_mapping``): those it names in
    place of the defaults."""
    path = Path(text)
    try:
        with path.open("rb") as file:
            values = tomllib.load(file)
    except OSError as exc:
        raise ValueError(f"cannot read {text}: {oserror_words(exc)}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{text} is not TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # (tomllib's, not a TOMLDecodeError)
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"{text} is not UTF-8 text (a byte at line {line} is not): save it as UTF-8"
        ) from None
    try:
        return Terms.from_mapping(values)
    except ValueError as exc:
        raise ValueError(f"{text}: {exc}") from None


def _rate(text: str) -> float:
    """0 (off), or a rate whose interval a RetryInfo can carry and that is a limit."""
    value: float = _number(float)(text)
    if value != 0 and not MIN_RATE <= value <= MAX_RATE:
        raise ValueError(
            f"{text!r} is neither 0 (off) nor from {_shown(MIN_RATE)} to {_shown(MAX_RATE)} calls "
            "per second (slower, a refused call would be told to wait for hours or more; "
            "faster limits nothing: give 0)"
        )
    return value


#: gRPC's channel arguments are C ints: 2**31 - 1 is the largest message limit.
MAX_MESSAGE_LIMIT = 2**31 - 1
#: The smallest --max-message-bytes: with 0, gRPC refuses every request.
MIN_MESSAGE_LIMIT = 1
#: Rates of the rate limits, when not 0 (off).
MIN_RATE, MAX_RATE = 0.001, 1_000_000.0
MAX_BURST = 1_000_000_000
MAX_LEADER_LEASE = 86_400.0
MIN_HEARTBEAT_FLUSH, MAX_HEARTBEAT_FLUSH = 0.01, 3600.0


@dataclass(frozen=True)
class Option:
    """One setting: the ``Config`` field it fills, its help, how its text reads."""

    field: str
    help: str
    parse: Callable[[str], Any] = str
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    default_text: str | None = None  # shown instead of the default value

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def env(self) -> str:
        return "TESSERA_" + self.field.upper()

    @property
    def default(self) -> Any:
        return Config.__dataclass_fields__[self.field].default

    @property
    def boolean(self) -> bool:
        return self.parse is _boolean

    def shown_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if self.boolean:
            return "on" if self.default else "off"
        return str(self.default)

    def read(self, text: str) -> Any:
        if self.choices and text not in self.choices:
            raise ValueError(f"{text!r} is not one of {', '.join(self.choices)}")
        return self.parse(text)


OPTIONS: tuple[Option, ...] = (
    Option(
        "listen",
        "host:port to serve on (port 0: any free port; no host, as in :50051: 127.0.0.1)",
        _listen,
        metavar="HOST:PORT",
    ),
    Option(
        "http_listen",
        "host:port of the administrators' web portal (HTTP): sign in with an admin key or "
        "the operator's token; its pages call this server's AdminService with it",
        _listen,
        metavar="HOST:PORT",
        default_text="off (make run: 127.0.0.1:8080)",
    ),
    Option(
        "metrics_listen",
        "host:port to serve Prometheus metrics on, at /metrics (docs/ops/README.md)",
        _listen,
        metavar="HOST:PORT",
        default_text="off (make run: 127.0.0.1:9464)",
    ),
    Option(
        "db",
        "the SQLite database file, or a PostgreSQL URL (postgresql://user@host:port/dbname), "
        "which several servers may share: one is active, the others standby",
        _database,
        metavar="PATH|URL",
    ),
    Option(
        "admin_token",
        "the operators' bearer token for AdminService",
        _admin_token,
        metavar="TOKEN",
        default_text="made at the first start, kept owner-only in <db>.admin-token "
        "(PostgreSQL: <secrets dir>/tessera.admin-token)",
    ),
    Option(
        "test_clock",
        "start in test-clock mode at this RFC 3339 instant, from "
        f"{TEST_CLOCK_RANGE}; time then moves only with AdvanceClock. A database "
        "remembers its mode: a test-clock database resumes from its stored time and "
        "needs this flag at every start (its value is then ignored); a database "
        "that ran on the real clock refuses it, since a test clock would move "
        "its time",
        parse_test_clock,
        metavar="RFC3339",
        default_text="off: the real clock",
    ),
    Option(
        "end_test_clock",
        "move a test-clock database to the real clock for good: its time jumps to "
        "now and every deadline passed meanwhile fires at start (refused while its "
        "test clock is over an hour ahead of the machine's). Without it, such a "
        "database refuses to start without --test-clock",
        _boolean,
    ),
    Option(
        "log_format",
        "log lines as JSON (to stdout) or for people (console, to stderr); auto: "
        "console on a terminal, JSON otherwise",
        choices=("auto", "json", "console"),
    ),
    Option(
        "log_level",
        "the least severe level logged",
        choices=("debug", "info", "warning", "error"),
    ),
    Option(
        "event_loop",
        "the event loop: uvloop (libuv's: about an eighth less CPU a Heartbeat than "
        "asyncio's) or asyncio's own (for a platform without uvloop, such as Windows)",
        choices=EVENT_LOOPS,
    ),
    Option(
        "front_process",
        "run gRPC's work (the port, TLS, health, reflection) in a second process that "
        "hands every call to this one: up to half again the Heartbeats a second when the "
        "machine has a core to spare for it, less when it has none (docs/performance.md)",
        _boolean,
        default_text="on with 2 cores or more; off with one, and on Windows (no Unix sockets)",
    ),
    Option(
        "sync",
        "SQLite's synchronous mode: FULL survives power loss, NORMAL a crash of the process",
        choices=("FULL", "NORMAL"),
    ),
    Option(
        "shutdown_grace",
        "seconds that calls under way get to finish on SIGTERM or Ctrl-C",
        _number(float),
        metavar="SECONDS",
    ),
    Option(
        "drain_delay",
        "seconds between health turning NOT_SERVING and the port closing, on SIGTERM, "
        "SIGHUP or Ctrl-C: calls are still answered meanwhile, so that a load balancer "
        "polling health stops sending calls here before they are refused (0 to 600)",
        _within(float, 0, 600, "", "a stop would wait that long before it even began"),
        metavar="SECONDS",
    ),
    Option(
        "heartbeat_flush",
        "seconds between batched writes of heartbeat history: a crash loses at most "
        "this much of it, never a hold, charge, session, device or a lease within an hour "
        "of its end (0.01 to 3600)",
        _within(
            float,
            MIN_HEARTBEAT_FLUSH,
            MAX_HEARTBEAT_FLUSH,
            "0 never writes it until the server stops (a crash loses all of it, and ended "
            "sessions stay in memory), less writes it a hundred times a second",
            "a crash would lose that much of it",
        ),
        metavar="SECONDS",
    ),
    Option(
        "log_heartbeats",
        "also log a line for every successful Heartbeat (failed ones and every other "
        "call are always logged; off because it costs ~15%% of heartbeat throughput)",
        _boolean,
    ),
    Option(
        "lease_batch_window",
        "under load (from 4 leases within this many seconds), the leases asked for "
        "within this many seconds share one Ed25519 signature (a hash tree: each still "
        "verifies alone, offline), each answer waiting at most this long; fewer, "
        "those of one turn of the event loop share one as it ends; 0 signs every lease "
        "alone",
        _batch_window,
        metavar="SECONDS",
    ),
    Option(
        "user_rate_limit",
        "calls per second per user key before RESOURCE_EXHAUSTED with RetryInfo (0: off; "
        f"else {_shown(MIN_RATE)} to {_shown(MAX_RATE)})",
        _rate,
        metavar="PER_SECOND",
    ),
    Option(
        "user_burst",
        "calls a user key may make at once (0: twice the rate, at least 1)",
        _within(int, 0, MAX_BURST, "", "give a rate of 0 for no limit"),
        metavar="CALLS",
    ),
    Option(
        "admin_rate_limit",
        f"calls per second with the admin token (0: off; else {_shown(MIN_RATE)} to {_shown(MAX_RATE)})",
        _rate,
        metavar="PER_SECOND",
    ),
    Option(
        "admin_burst",
        "calls the admin token may make at once (0: twice the rate, at least 1)",
        _within(int, 0, MAX_BURST, "", "give a rate of 0 for no limit"),
        metavar="CALLS",
    ),
    Option(
        "max_calls_in_flight",
        "calls under way at once (most wait for a commit); the next is refused at once "
        "with RESOURCE_EXHAUSTED, reason OVERLOADED, and a RetryInfo (0: no limit)",
        _number(int),
        metavar="CALLS",
    ),
    Option(
        "max_connection_age",
        "seconds a client's connection lasts before the server asks the client to make "
        "another (HTTP/2 GOAWAY; gRPC clients, the SDK's, do so between calls): its calls "
        "under way get a minute more (at most as long again), then end, a call whose "
        "request never came among them (1 to 86400)",
        _within(float, 1, 86400, "", "a day is long enough to hold a forgotten call"),
        metavar="SECONDS",
    ),
    Option(
        "max_message_bytes",
        f"largest request accepted, in bytes ({MIN_MESSAGE_LIMIT} to {MAX_MESSAGE_LIMIT})",
        _within(
            int,
            MIN_MESSAGE_LIMIT,
            MAX_MESSAGE_LIMIT,
            "gRPC would refuse every request",
            "gRPC's limit, a 32-bit integer",
        ),
        metavar="N",
    ),
    Option(
        "max_users_per_request",
        "most entries in one list of an AdminService request, such as AssignUsers' users "
        "(at least 1)",
        _within(int, 1, math.inf, "every AssignUsers and ImportUsers would be refused", ""),
        metavar="N",
    ),
    Option(
        "max_page_size",
        "most items in one page of a List call (at least 1)",
        _within(
            int,
            1,
            math.inf,
            "every List call would answer an empty page with no next page token",
            "",
        ),
        metavar="N",
    ),
    Option(
        "terms",
        "a TOML file changing RULES' numbers: charge_window, grace, idle_threshold, "
        "heartbeat_interval, invitation_validity, pack_expiry_warning, burn_window (each "
        'a whole number and its unit: "5m", "24h", "30d"), devices_per_product, '
        "running_devices_per_product, sessions_per_product; those it leaves out keep "
        "their defaults (docs/rules.md; an example: docs/terms.example.toml)",
        _terms,
        metavar="TOML",
        default_text="RULES' defaults",
    ),
    Option(
        "tls_cert",
        "serve TLS with this PEM certificate chain (needs --tls-key)",
        Path,
        metavar="PEM",
        default_text="off: plaintext",
    ),
    Option("tls_key", "the certificate's PEM private key", Path, metavar="PEM", default_text="off"),
    Option(
        "tls_client_ca",
        "also demand client certificates signed by this PEM CA: mutual TLS (needs --tls-cert)",
        Path,
        metavar="PEM",
        default_text="off",
    ),
    Option(
        "advertise",
        "the address other servers and clients should use for this one: a standby names "
        "the active's in NOT_LEADER refusals",
        _advertised,
        metavar="HOST:PORT",
        default_text="the listen address (with the port bound); needed with PostgreSQL "
        "when that is 0.0.0.0 or [::]",
    ),
    Option(
        "node_id",
        "this server's name among the servers of one PostgreSQL database (1 to 40 "
        "printable ASCII characters without spaces; unique: a second server with it is "
        "refused)",
        node_id,
        metavar="NAME",
        default_text="the advertised address, if it can be one",
    ),
    Option(
        "secrets_dir",
        "with PostgreSQL: the directory of the admin token, signing keys and secret key "
        "(never in the database); every server of one database shares it or a copy",
        Path,
        metavar="DIR",
    ),
    Option(
        "leader_lease",
        "with PostgreSQL: seconds the active's lease lasts unrenewed (it renews every fifth "
        "of it): a standby takes over this long after a paused or cut-off active stops "
        "renewing, and at its next round (a fifth of it) when the active's process is gone "
        f"(0.5 to {_shown(MAX_LEADER_LEASE)})",
        _lease,
        metavar="SECONDS",
    ),
)


def help_line(option: Option) -> str:
    return f"{option.help} [{option.env}; default: {option.shown_default()}]"


def parser(epilog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tessera-server",
        description="Tessera license server (gRPC).\n\nEvery flag can also be given as the "
        "environment variable in brackets;\na flag wins over its variable.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for o in OPTIONS:
        if o.boolean:
            p.add_argument(
                o.flag, dest=o.field, action=argparse.BooleanOptionalAction, help=help_line(o)
            )
        else:
            metavar = o.metavar or ("{" + ",".join(o.choices) + "}" if o.choices else None)
            p.add_argument(o.flag, dest=o.field, metavar=metavar, help=help_line(o))
    return p


def _values(p: argparse.ArgumentParser, given: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for o in OPTIONS:
        raw: Any = getattr(given, o.field)
        source = o.flag
        if raw is None:
            env = os.environ.get(o.env, "")
            raw, source = (env, o.env) if env != "" else (None, "")
        if raw is None or isinstance(raw, bool):
            values[o.field] = o.default if raw is None else raw
            continue
        try:
            values[o.field] = o.read(raw)
        except ValueError as exc:
            p.error(f"{source}: {exc}")
    return values


def parse_args(argv: Sequence[str] | None = None, *, epilog: str | None = None) -> Config:
    p = parser(epilog)
    v = _values(p, p.parse_args(argv))
    if (v["tls_cert"] is None) != (v["tls_key"] is None):
        p.error("--tls-cert and --tls-key go together")
    if v["end_test_clock"] and v["test_clock"] is not None:
        p.error("--end-test-clock and --test-clock exclude each other")
    if v["tls_client_ca"] is not None and v["tls_cert"] is None:
        p.error("--tls-client-ca needs --tls-cert and --tls-key")
    listen = v["listen"]
    if (
        isinstance(v["db"], str)
        and v["advertise"] is None
        and every_address(split_listen(listen)[0])
    ):
        # The advertised address would be the listen address, which a standby names as
        # the active's in NOT_LEADER for clients to follow (H3).
        p.error(
            f"--listen {listen} is every address of this machine, which no other can dial: "
            "with a PostgreSQL database give --advertise HOST:PORT, the address clients "
            "and the other servers reach this one at"
        )
    return Config(**v)


def flags_table(options: Iterable[Option] = OPTIONS) -> str:
    """The README's flags table, in Markdown."""
    lines = ["| flag | environment variable | default | meaning |", "| --- | --- | --- | --- |"]
    for o in options:
        flag = f"`{o.flag}`" if not o.boolean else f"`{o.flag}`, `--no-{o.flag[2:]}`"
        default = o.shown_default() if o.default_text else f"`{o.shown_default()}`"
        meaning = o.help.replace("%%", "%").replace("|", "\\|")
        lines.append(f"| {flag} | `{o.env}` | {default} | {meaning} |")
    return "\n".join(lines) + "\n"
