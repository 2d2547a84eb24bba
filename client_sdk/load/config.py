"""Options of a load run, and the loopback guard."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from client_sdk._retry import RetryPolicy

# Where ``python -m server`` (``make run``) keeps the token it generates by default.
DEFAULT_TOKEN_FILE = Path("var/tessera.db.admin-token")


class RemoteTargetError(ValueError):
    """The target is not on this machine and ``--allow-remote`` was not given."""


def target_host(target: str) -> str:
    """The host part of a gRPC target (``host:port``, ``[v6]:port``, ``ipv4:``, ``dns:///``)."""
    t = target.strip()
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
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


def check_target(target: str, allow_remote: bool) -> None:
    if not allow_remote and not is_loopback(target):
        raise RemoteTargetError(
            f"refusing to load {target!r}: it is not a loopback address "
            "(127.0.0.1, ::1, localhost); pass --allow-remote to load another machine"
        )


#: Attempts per call with several targets (``attempts`` 0): enough, with the retry
#: policy's backoff, to ride out a takeover (RULES H2: within 10 s).
FAILOVER_ATTEMPTS = 10


def split_targets(values: Sequence[str]) -> str:
    """``--target`` values (each one address, or several separated by commas) as one
    comma-separated list: ``LoadConfig.target``."""
    return ",".join(t.strip() for v in values for t in v.split(",") if t.strip())


@dataclass(frozen=True)
class LoadConfig:
    # One server, or several of one deployment separated by commas (the active and its
    # standbys, RULES H3): every call goes to the active and follows it to another.
    target: str = "127.0.0.1:50051"
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

    def retry(self, call_timeout: float | None = None) -> RetryPolicy:
        """How a call is tried (across targets): ``attempts``, the SDK's backoff."""
        attempts = self.attempts or (1 if len(self.targets) == 1 else FAILOVER_ATTEMPTS)
        return RetryPolicy(max_attempts=attempts, call_timeout=call_timeout or self.timeout)

    def validate(self) -> None:
        if not self.targets:
            raise ValueError("--target: at least one server address is required")
        for target in self.targets:
            check_target(target, self.allow_remote)
        if self.attempts < 0:
            raise ValueError("--attempts must not be negative")
        if self.users < 1:
            raise ValueError("--users must be at least 1")
        if self.workers < 1 or self.channels < 1 or self.concurrency < 1:
            raise ValueError("--workers, --channels and --concurrency must be at least 1")
        if self.ramp_concurrency < 0:
            raise ValueError("--ramp-concurrency must not be negative")
        for name in ("idle_fraction", "plugin_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be within 0..1")
        if self.max_calls < 1 or self.max_duration <= 0:
            raise ValueError("--max-calls and --max-duration must be positive")
        if self.users_file is not None and self.fake_users:
            raise ValueError("--users-file and --fake-users exclude each other")
        if self.users_file is None and not self.fake_users and not self.admin_token:
            raise ValueError(
                "say where users come from: --admin-token (provision them), "
                "--users-file FILE, or --fake-users (servers that check no key)"
            )
        if self.count_server_sessions and not self.admin_token:
            raise ValueError("--count-server-sessions needs the admin token")


def parser() -> argparse.ArgumentParser:
    d = LoadConfig()
    p = argparse.ArgumentParser(
        prog="python -m client_sdk.load",
        description="Load a Tessera server with simulated users: provision, ramp up Entitles, "
        "a steady state of Heartbeats (some Idle, some plugin sessions), optional "
        "Release+Entitle cycles, Releases at the end.",
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
        type=int,
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
    g.add_argument("-n", "--users", type=int, default=d.users, help="users = host sessions")
    g.add_argument("--daily-rate", type=int, default=d.daily_rate)
    g.add_argument("--plugin-rate", type=int, default=d.plugin_rate)
    g = p.add_argument_group("processes")
    g.add_argument("-P", "--workers", type=int, default=d.workers, help="worker processes")
    g.add_argument("--channels", type=int, default=d.channels, help="connections per worker")
    g.add_argument(
        "-c", "--concurrency", type=int, default=d.concurrency, help="calls in flight per worker"
    )
    g.add_argument(
        "--ramp-concurrency",
        type=int,
        default=d.ramp_concurrency,
        help="calls in flight per worker in the ramp-up and the final releases "
        "(default: --concurrency)",
    )
    g = p.add_argument_group("phases")
    g.add_argument("--ramp-rate", type=float, default=d.ramp_rate, help="Entitles/s; 0: max")
    g.add_argument(
        "--heartbeat-rate", type=float, default=d.heartbeat_rate, help="Heartbeats/s; 0: max"
    )
    g.add_argument("--warmup", type=float, default=d.warmup, help="seconds, not measured")
    g.add_argument("--steady", type=float, default=d.steady, help="seconds of heartbeats")
    g.add_argument("--cycle", type=float, default=d.cycle, help="seconds of Release+Entitle")
    g.add_argument("--idle-fraction", type=float, default=d.idle_fraction)
    g.add_argument("--plugin-fraction", type=float, default=d.plugin_fraction)
    g.add_argument("--no-release", dest="release", action="store_false", help="leave sessions")
    g = p.add_argument_group("bounds")
    g.add_argument("--max-calls", type=int, default=d.max_calls, help="hard cap on calls")
    g.add_argument("--max-duration", type=float, default=d.max_duration, help="hard cap, s")
    g.add_argument("--timeout", type=float, default=d.timeout, help="deadline per call, s")
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
    target = split_targets(ns.target or [os.environ.get("TESSERA_TARGET", LoadConfig.target)])
    token = ns.admin_token
    local = all(is_loopback(t) for t in target.split(","))
    if token is None and not (ns.users_file or ns.fake_users) and local:
        token = default_admin_token()
    return LoadConfig(
        target=target,
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


def parse(argv: Sequence[str] | None = None) -> tuple[LoadConfig, argparse.Namespace]:
    ns = parser().parse_args(argv)
    return from_args(ns), ns
