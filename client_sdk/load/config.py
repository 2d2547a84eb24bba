"""Options of a load run, and the loopback guard."""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from client_sdk._retry import RetryPolicy
from client_sdk.admin import MAX_PURCHASE_TOKENS
from client_sdk.failover import Targets
from client_sdk.transport import HOST_PORT_SCHEMES, target_problem

# Where ``python -m server`` (``make run``) keeps the token it generates by default.
DEFAULT_TOKEN_FILE = Path("var/tessera.db.admin-token")


class RemoteTargetError(ValueError):
    """The target is not on this machine and ``--allow-remote`` was not given."""


def target_host(target: str) -> str:
    """The host part of a gRPC target (``host:port``, ``[v6]:port``, ``ipv4:``, ``dns:///``)."""
    t = target.strip()
    for scheme in HOST_PORT_SCHEMES:
        if t.startswith(scheme):
            t = t[len(scheme) :]
            break
    if t.startswith("["):
        host, _, _ = t[1:].partition("]")
        return host
    if t.count(":") > 1:  # a bare IPv6 address without a port
        return t
    host, _, _ = t.partition(":")
    return host


def is_loopback(target: str) -> bool:
    """True for targets that cannot leave this machine.

    Literal loopback addresses (``127.0.0.0/8``, ``::1``), ``localhost`` and
    Unix sockets. Other names are not resolved: what a name points to can
    change between this check and the connection.
    """
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    host = target_host(target).lower()
    if host in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoopbackTargets(Targets):
    """Targets whose calls follow a standby's hint (NOT_LEADER naming the active) only to
    a loopback address: an active advertising another machine's name is not followed
    there without ``--allow-remote``; the calls go round the listed targets instead."""

    def move(
        self, failed: str, leader: str | None = None, unreachable: Collection[str] = ()
    ) -> str:
        return super().move(failed, leader if leader and is_loopback(leader) else None, unreachable)


def check_target(target: str, allow_remote: bool) -> None:
    if not allow_remote and not is_loopback(target):
        raise RemoteTargetError(
            f"refusing to load {target!r}: it is not a loopback address "
            "(127.0.0.1, ::1, localhost); pass --allow-remote to load another machine"
        )


#: Calls the final releases may make per live session: a Release refused with a
#: ``google.rpc.RetryInfo`` (a rate limit, an overloaded server) is sent again after the
#: delay it names (at most ``RELEASE_RETRY_WAIT`` seconds), this many times in all.
RELEASE_ATTEMPTS = 3
RELEASE_RETRY_WAIT = 5.0
#: Seconds the final releases may run past ``max_duration`` (they come after the caps).
RELEASE_GRACE_SECONDS = 30.0


#: Attempts per call with several targets (``attempts`` 0): enough, with the retry
#: policy's backoff, to ride out a takeover (RULES H2: within 10 s).
FAILOVER_ATTEMPTS = 10


def split_targets(values: Sequence[str]) -> str:
    """``--target`` values (each one address, or several separated by commas) as one
    comma-separated list: ``LoadConfig.target``."""
    return ",".join(t.strip() for v in values for t in v.split(",") if t.strip())


#: The most calls in flight a worker may be given (``--concurrency``, ``--ramp-concurrency``):
#: a coroutine each, and a worker never runs more than it has sessions anyway.
MAX_CONCURRENCY = 10_000
#: The most worker processes and connections a worker (``--workers``, ``--channels``):
#: a Python process each (``-P 100000`` started one a user), a TCP connection each.
MAX_WORKERS = 256
MAX_CHANNELS = 1000
#: The most users (``--users``): 10,000,000 made-up keys are some 3 GB, built before the
#: caps apply.
MAX_USERS = 10_000_000
#: The longest ``--timeout``, ``--max-duration`` and phase (``--warmup``, ``--steady``,
#: ``--cycle``), in seconds (some 11.6 days): gRPC's deadline of a call of ``--timeout
#: 1e10`` overflows, and every call failed DEADLINE_EXCEEDED at once.
MAX_SECONDS = 1e6
#: The most tokens one PurchaseTokens buys (as the demo's ``--tokens``): the highest
#: ``--daily-rate`` and ``--plugin-rate`` too (the server takes any int64 as a product's
#: rate, but a run buys four days of it a user).
MAX_PACK_TOKENS = MAX_PURCHASE_TOKENS
MAX_RATE = MAX_PACK_TOKENS
#: The most packs provisioning buys (of ``MAX_PACK_TOKENS`` each): every hold looks
#: through the team's packs, so thousands of them would slow the Entitles measured.
MAX_PACKS = 100

#: The numeric options: field -> (its flag, the least value, True when the least value is
#: itself refused, the greatest value or None). Every one is finite: a ``nan`` or ``inf``
#: would switch a bound off (``--max-duration nan`` never ends). Both the command line
#: (a usage error, exit 2) and ``LoadConfig.validate`` check them.
NUMBERS: dict[str, tuple[str, float, bool, float | None]] = {
    "attempts": ("--attempts", 0, False, None),
    "users": ("--users", 1, False, MAX_USERS),
    "daily_rate": ("--daily-rate", 0, False, MAX_RATE),
    "plugin_rate": ("--plugin-rate", 0, False, MAX_RATE),
    "workers": ("--workers", 1, False, MAX_WORKERS),
    "channels": ("--channels", 1, False, MAX_CHANNELS),
    "concurrency": ("--concurrency", 1, False, MAX_CONCURRENCY),
    "ramp_concurrency": ("--ramp-concurrency", 0, False, MAX_CONCURRENCY),
    "ramp_rate": ("--ramp-rate", 0, False, None),
    "heartbeat_rate": ("--heartbeat-rate", 0, False, None),
    "warmup": ("--warmup", 0, False, MAX_SECONDS),
    "steady": ("--steady", 0, False, MAX_SECONDS),
    "cycle": ("--cycle", 0, False, MAX_SECONDS),
    "idle_fraction": ("--idle-fraction", 0, False, 1),
    "plugin_fraction": ("--plugin-fraction", 0, False, 1),
    "max_calls": ("--max-calls", 1, False, None),
    "max_duration": ("--max-duration", 0, True, MAX_SECONDS),
    "timeout": ("--timeout", 0, True, MAX_SECONDS),
}


def number_problem(field: str, value: float) -> str | None:
    """What is wrong with ``value`` for the option ``field`` (None: nothing)."""
    _, low, low_refused, high = NUMBERS[field]
    if not isinstance(value, int) and not math.isfinite(value):  # (an int of 400 digits
        return "must be a finite number"  # is finite, and no float: an OverflowError)
    if low_refused and value <= low:
        return f"must be greater than {low:g}"
    if value < low:
        return f"must be at least {low:g}"
    if high is not None and value > high:
        return f"must be within {_shown(low)}..{_shown(high)}"
    return None


def _shown(bound: float) -> str:
    """A bound as the messages give it: ``1,000,000``, not ``1e+06``."""
    return f"{bound:,.0f}" if float(bound).is_integer() else f"{bound:g}"


def provision_tokens(users: int, daily_rate: int, plugin_rate: int) -> int:
    """The tokens provisioning buys for ``users``: every meter holds its daily rate while
    in grace; captures, resumes after Idle and Release+Entitle cycles may take it again:
    four times that, and 1,000 more."""
    return max(1, users * (daily_rate + plugin_rate) * 4 + 1000)


def _number(kind: type[int] | type[float], field: str) -> Callable[[str], float]:
    """An argparse ``type`` that refuses what ``number_problem`` refuses (a usage error)."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if kind is int else 'a number'}"
            ) from None
        problem = number_problem(field, value)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"{text}: {problem}")
        return value

    return convert


def check_readable_file(path: Path, flag: str) -> None:
    """``path`` is a file this process may read (checked before any work is done)."""
    if not path.exists():
        raise ValueError(f"{flag} {path}: no such file")
    if not path.is_file():
        raise ValueError(f"{flag} {path}: not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot be read ({exc.strerror or exc})") from None


def check_writable_file(path: Path, flag: str) -> None:
    """``path`` can be written (checked before any work is done, by opening it: permission
    bits say nothing to root, nor about a read-only file system). Directories missing on
    the way are made now, as writing the file would; an existing file is left as it is."""
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a directory")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot be written ({exc.strerror or exc})") from None
    if not existed:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class LoadConfig:
    # One server, or several of one deployment separated by commas (the active and its
    # standbys, RULES H3): every call goes to the active and follows it to another.
    target: str = "127.0.0.1:50051"
    # Where ``target`` came from, as a refusal names it: the flag, or TESSERA_TARGET.
    target_from: str = "--target"
    allow_remote: bool = False
    # Attempts per call: 0 is 1 with one target (every failure counted, as measured) and
    # FAILOVER_ATTEMPTS with several (calls follow NOT_LEADER and lost connections).
    attempts: int = 0
    # Provisioning: through AdminService with this token, or users from a file.
    admin_token: str | None = None
    users_file: Path | None = None
    save_users: Path | None = None
    fake_users: bool = False  # made-up keys: for servers that check none (the echo)
    users: int = 1000  # users provisioned = host sessions
    daily_rate: int = 1
    plugin_rate: int = 1
    # Processes and connections.
    workers: int = 2
    channels: int = 1  # per worker, each its own TCP connection
    concurrency: int = 32  # calls in flight per worker
    ramp_concurrency: int = 0  # in the ramp-up and the final releases; 0: concurrency
    # Phases.
    ramp_rate: float = 0.0  # Entitles per second in all; 0: as fast as concurrency allows
    heartbeat_rate: float = 0.0  # Heartbeats per second in all; 0: as fast as allowed
    warmup: float = 1.0  # seconds of heartbeats before measuring
    steady: float = 10.0  # seconds of measured heartbeats
    cycle: float = 0.0  # seconds of Release+Entitle cycles (0: none)
    idle_fraction: float = 0.02  # share of steady-state calls that are Idle
    plugin_fraction: float = 0.1  # share of users who also run the plugin
    release: bool = True
    # Hard caps.
    max_calls: int = 10_000_000  # LicensingService calls in the whole run
    max_duration: float = 3600.0  # seconds, everything included
    timeout: float = 10.0  # deadline of each call
    count_server_sessions: bool = False  # ask ListSessions how many live ones it holds
    seed: int = 1
    version: str = "2026.1"

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.target.split(",") if t.strip())

    def new_targets(self) -> Targets:
        """The targets to call, followed only to loopback ones unless ``allow_remote``."""
        return Targets(self.targets) if self.allow_remote else LoopbackTargets(self.targets)

    def retry(self, call_timeout: float | None = None) -> RetryPolicy:
        """How a call is tried (across targets): ``attempts``, the SDK's backoff."""
        attempts = self.attempts or (1 if len(self.targets) == 1 else FAILOVER_ATTEMPTS)
        return RetryPolicy(max_attempts=attempts, call_timeout=call_timeout or self.timeout)

    def validate(self) -> None:
        if not self.targets:
            raise ValueError(f"{self.target_from}: at least one server address is required")
        for target in self.targets:
            problem = target_problem(target)
            if problem is not None:  # gRPC would load another port, or 443
                raise ValueError(f"{self.target_from} {target!r}: {problem}")
            check_target(target, self.allow_remote)
        for name, (flag, *_) in NUMBERS.items():
            problem = number_problem(name, getattr(self, name))
            if problem is not None:
                raise ValueError(f"{flag} {problem}")
        provisioned = self.admin_token and self.users_file is None and not self.fake_users
        tokens = provision_tokens(self.users, self.daily_rate, self.plugin_rate)
        if provisioned and tokens > MAX_PACKS * MAX_PACK_TOKENS:
            raise ValueError(
                f"--daily-rate {self.daily_rate:,} and --plugin-rate {self.plugin_rate:,} for "
                f"--users {self.users:,} would buy {tokens:,} tokens, more than the "
                f"{MAX_PACKS * MAX_PACK_TOKENS:,} a run provisions: lower them"
            )
        if self.users_file is not None and self.fake_users:
            raise ValueError("--users-file and --fake-users exclude each other")
        if self.users_file is None and not self.fake_users and not self.admin_token:
            raise ValueError(
                "say where users come from: --admin-token (provision them), "
                "--users-file FILE, or --fake-users (servers that check no key)"
            )
        if self.count_server_sessions and not self.admin_token:
            raise ValueError("--count-server-sessions needs the admin token")
        if self.users_file is not None:
            check_readable_file(self.users_file, "--users-file")
        if self.save_users is not None:
            check_writable_file(self.save_users, "--save-users")


def parser(epilog: str | None = None) -> argparse.ArgumentParser:
    d = LoadConfig()
    p = argparse.ArgumentParser(
        prog="python -m client_sdk.load",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Load a Tessera server with simulated users: provision, ramp up Entitles, a\n"
            "steady state of Heartbeats (some Idle, some plugin sessions), optional\n"
            "Release+Entitle cycles, Releases at the end (even after a cap stopped the run)."
        ),
    )
    a = p.add_argument
    a(
        "--target",
        action="append",
        help="host:port; repeat it, or separate several by commas, for the servers of one "
        "deployment (the active and its standbys: calls follow the active) "
        f"(TESSERA_TARGET; default {d.target})",
    )
    a("--allow-remote", action="store_true", help="allow a target that is not loopback")
    a(
        "--attempts",
        type=_number(int, "attempts"),
        default=d.attempts,
        help="attempts per call, across targets (default: 1 with one target, "
        f"{FAILOVER_ATTEMPTS} with several)",
    )
    g = p.add_argument_group("users")
    g.add_argument(
        "--admin-token",
        default=os.environ.get("TESSERA_ADMIN_TOKEN"),
        help="provision a team, tokens, a product, a plugin and users through AdminService "
        f"(TESSERA_ADMIN_TOKEN; default: the token `make run` keeps in {DEFAULT_TOKEN_FILE})",
    )
    g.add_argument("--users-file", type=Path, help="read users and keys from this JSON file")
    g.add_argument("--save-users", type=Path, help="write provisioned users and keys here")
    g.add_argument("--fake-users", action="store_true", help="made-up keys (echo servers)")
    g.add_argument(
        "-n", "--users", type=_number(int, "users"), default=d.users, help="users = host sessions"
    )
    g.add_argument(
        "--daily-rate",
        type=_number(int, "daily_rate"),
        default=d.daily_rate,
        help=f"tokens a day of the product provisioned (at most {MAX_RATE:,})",
    )
    g.add_argument(
        "--plugin-rate",
        type=_number(int, "plugin_rate"),
        default=d.plugin_rate,
        help=f"tokens a day of its plugin (at most {MAX_RATE:,})",
    )
    g = p.add_argument_group("processes")
    g.add_argument(
        "-P", "--workers", type=_number(int, "workers"), default=d.workers, help="worker processes"
    )
    g.add_argument(
        "--channels",
        type=_number(int, "channels"),
        default=d.channels,
        help="connections per worker",
    )
    g.add_argument(
        "-c",
        "--concurrency",
        type=_number(int, "concurrency"),
        default=d.concurrency,
        help="calls in flight per worker (at most as many as its sessions; "
        f"{MAX_CONCURRENCY:,} at most)",
    )
    g.add_argument(
        "--ramp-concurrency",
        type=_number(int, "ramp_concurrency"),
        default=d.ramp_concurrency,
        help="calls in flight per worker in the ramp-up and the final releases "
        "(default: --concurrency)",
    )
    g = p.add_argument_group("phases")
    g.add_argument(
        "--ramp-rate",
        type=_number(float, "ramp_rate"),
        default=d.ramp_rate,
        help="Entitles/s; 0: max",
    )
    g.add_argument(
        "--heartbeat-rate",
        type=_number(float, "heartbeat_rate"),
        default=d.heartbeat_rate,
        help="Heartbeats/s; 0: max",
    )
    g.add_argument(
        "--warmup", type=_number(float, "warmup"), default=d.warmup, help="seconds, not measured"
    )
    g.add_argument(
        "--steady", type=_number(float, "steady"), default=d.steady, help="seconds of heartbeats"
    )
    g.add_argument(
        "--cycle", type=_number(float, "cycle"), default=d.cycle, help="seconds of Release+Entitle"
    )
    g.add_argument("--idle-fraction", type=_number(float, "idle_fraction"), default=d.idle_fraction)
    g.add_argument(
        "--plugin-fraction", type=_number(float, "plugin_fraction"), default=d.plugin_fraction
    )
    g.add_argument("--no-release", dest="release", action="store_false", help="leave sessions")
    g = p.add_argument_group("bounds")
    g.add_argument(
        "--max-calls",
        type=_number(int, "max_calls"),
        default=d.max_calls,
        help="hard cap on the calls before the final releases",
    )
    g.add_argument(
        "--max-duration",
        type=_number(float, "max_duration"),
        default=d.max_duration,
        help="hard cap, s, before the final releases (none begun later than "
        f"{RELEASE_GRACE_SECONDS:g} s past it, each waiting at most --timeout; "
        f"{RELEASE_ATTEMPTS} calls per session at most)",
    )
    g.add_argument(
        "--timeout", type=_number(float, "timeout"), default=d.timeout, help="deadline per call, s"
    )
    g = p.add_argument_group("output")
    g.add_argument("--json", dest="json_out", metavar="FILE", help="write results ('-': stdout)")
    g.add_argument("--no-progress", action="store_true", help="no live progress display")
    g.add_argument(
        "--count-server-sessions",
        action="store_true",
        help="after the steady state, count the live sessions the server lists (admin token)",
    )
    g.add_argument("--seed", type=int, default=d.seed)
    return p


def default_admin_token(path: Path = DEFAULT_TOKEN_FILE) -> str | None:
    """The token a local ``make run`` generated beside its database, if any."""
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def from_args(ns: argparse.Namespace) -> LoadConfig:
    from_env = not ns.target and "TESSERA_TARGET" in os.environ
    target = split_targets(ns.target or [os.environ.get("TESSERA_TARGET", LoadConfig.target)])
    token = ns.admin_token
    local = all(is_loopback(t) for t in target.split(","))
    if token is None and not (ns.users_file or ns.fake_users) and local:
        token = default_admin_token()
    return LoadConfig(
        target=target,
        target_from="TESSERA_TARGET" if from_env else "--target",
        allow_remote=ns.allow_remote,
        attempts=ns.attempts,
        admin_token=token,
        users_file=ns.users_file,
        save_users=ns.save_users,
        fake_users=ns.fake_users,
        users=ns.users,
        daily_rate=ns.daily_rate,
        plugin_rate=ns.plugin_rate,
        workers=ns.workers,
        channels=ns.channels,
        concurrency=ns.concurrency,
        ramp_concurrency=ns.ramp_concurrency,
        ramp_rate=ns.ramp_rate,
        heartbeat_rate=ns.heartbeat_rate,
        warmup=ns.warmup,
        steady=ns.steady,
        cycle=ns.cycle,
        idle_fraction=ns.idle_fraction,
        plugin_fraction=ns.plugin_fraction,
        release=ns.release,
        max_calls=ns.max_calls,
        max_duration=ns.max_duration,
        timeout=ns.timeout,
        count_server_sessions=ns.count_server_sessions,
        seed=ns.seed,
    )


def parse(
    argv: Sequence[str] | None = None, epilog: str | None = None
) -> tuple[LoadConfig, argparse.Namespace]:
    ns = parser(epilog).parse_args(argv)
    return from_args(ns), ns
