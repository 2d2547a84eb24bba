"""Simulation: K actives, each owning a range of users, and one PostgreSQL (issue 13, point 8).

A model of the next step past one active (``docs/scaling.md``), fed with the
figures measured on this machine (``benchmarks/bench.py`` for the active's CPU
per call, ``benchmarks/pg_holds.py`` for PostgreSQL's hold/capture
transactions); pure Python, no I/O, seeded, so that the same arguments print
the same tables.

The model:

- **Sessions** heartbeat every ``heartbeat_s`` (300 s suggested) and start
  (Entitle, later Release) once every ``session_s``: a working day in the
  steady state, the storm's length in a morning login storm (``storm_s``:
  every session of the day starts within it). Each start costs PostgreSQL
  ``tx_per_session`` team transactions (the hold at Entitle, the capture at
  grace end), and each session one charge every ``window_s``.
- **An active** owns the users whose ``hash(user_id)`` falls in its range
  (``SLOTS`` slots, split into K contiguous ranges). Its CPU per second is
  heartbeats x CPU per heartbeat + Entitle/Release pairs x CPU per pair + team
  transactions x the client's CPU per transaction; it is full at
  ``core_budget`` of one core (Python: one event loop, one core), with room
  left for p99. The hottest range, not the mean, decides (``range_imbalance``,
  drawn with the seed: users hashed into ranges, 1 to 3 sessions each).
- **PostgreSQL** takes ``pg_tx_per_s`` team transactions per second over many
  teams, and ``team_tx_per_s`` on ONE team's row (every hold of that team
  serialises on its ``FOR UPDATE``), each up to ``pg_budget``.
- **Memory**: ``bytes_per_session`` per live session, ``memory_bytes`` per active.
- **Takeover** (RULES H2: a standby is active within 10 s): a range's new owner
  waits up to ``lease_s`` for the lease to run out, then reloads its range's
  sessions at ``reload_s_per_session``; the sessions one range may hold are
  those it reloads in ``takeover_s - lease_s``.

It prints, for K = 1, 2, 4, 8, in the steady state and in the storm: the most
live sessions each limit allows and which one breaks first (with the largest
team holding ``team_share`` of all sessions); the utilisation of each part at a few totals; and a discrete-event
run of one queue (the hot team's row, or a full active: Poisson arrivals,
fixed service time, Lindley's recursion) that shows p99 waiting as the
utilisation nears 1.

Run: ``.venv/bin/python -m benchmarks.sharding_sim`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
from dataclasses import dataclass, fields, replace

SLOTS = 1 << 16  # hash space of user ids; an active owns a contiguous range of slots


@dataclass(frozen=True)
class Costs:
    """What was measured (defaults: this machine, 2026-12-01, docs/scaling.md)."""

    heartbeat_cpu_s: float = 420e-6  # active CPU seconds per Heartbeat (bench)
    cycle_cpu_s: float = 1.19e-3  # per Release+Entitle pair (bench)
    pg_client_cpu_s: float = 150e-6  # the active's CPU per team transaction (pg_holds)
    pg_tx_per_s: float = 1_583.0  # one PostgreSQL, team transactions/s, many teams (pg_holds)
    team_tx_per_s: float = 397.0  # one team's row, transactions/s, 16 connections (pg_holds)
    bytes_per_session: float = 1_521.0  # RSS per live session (million_sessions)
    memory_bytes: float = 16 * 2**30  # RAM per active given to sessions (a choice)
    reload_s_per_session: float = 141e-6  # new term's load+restore (failover, 100k: 14.06 s)
    takeover_s: float = 10.0  # RULES H2
    lease_s: float = 5.0  # --leader-lease: the wait before a takeover may start
    core_budget: float = 0.7  # an active is full at this share of one core
    pg_budget: float = 0.7  # PostgreSQL and a team's row likewise


@dataclass(frozen=True)
class Workload:
    heartbeat_s: float = 300.0  # the suggested heartbeat
    session_s: float = 8 * 3600.0  # seconds between a session's starts: a working day
    tx_per_session: float = 2.0  # team transactions per session: hold + capture
    window_s: float = 86_400.0  # one charge per session per window
    team_share: float = 0.05  # the largest team's share of all sessions


@dataclass(frozen=True)
class Limits:
    """The most live sessions, in total, each part allows for K actives."""

    shards: int
    imbalance: float
    cpu: float
    memory: float
    takeover: float
    postgres: float
    team_row: float

    def ordered(self) -> list[tuple[str, float]]:
        """The limits, lowest first: the first is where it breaks, the next what follows."""
        named = {
            "active CPU": self.cpu,
            "active memory": self.memory,
            "takeover time": self.takeover,
            "PostgreSQL": self.postgres,
            "team row": self.team_row,
        }
        return sorted(named.items(), key=lambda item: item[1])

    @property
    def breaks_at(self) -> float:
        return self.ordered()[0][1]

    @property
    def breaks_on(self) -> str:
        return self.ordered()[0][0]


def pg_tx_rate(w: Workload) -> float:
    """Team transactions per second per live session."""
    return w.tx_per_session / w.session_s + 1 / w.window_s


def cpu_per_session(c: Costs, w: Workload) -> float:
    """An active's CPU seconds per second per live session it owns."""
    return (
        c.heartbeat_cpu_s / w.heartbeat_s
        + c.cycle_cpu_s / w.session_s
        + c.pg_client_cpu_s * pg_tx_rate(w)
    )


def sessions_at(calls_per_s: float, heartbeat_s: float, churn_calls_per_session_s: float) -> float:
    """Live sessions one active carries when it does ``calls_per_s`` Heartbeat-equivalent
    calls: each session heartbeats 1/heartbeat_s a second and costs
    ``churn_calls_per_session_s`` more in Entitle/Release (N = rate x 300 without churn)."""
    return calls_per_s / (1 / heartbeat_s + churn_calls_per_session_s)


def takeover_limit(c: Costs) -> float:
    """Live sessions one range may hold and still be taken over within ``takeover_s``."""
    return max(0.0, c.takeover_s - c.lease_s) / c.reload_s_per_session


def team_row_limit(c: Costs, w: Workload) -> float:
    """Live sessions ONE team can have before its row is full."""
    return c.pg_budget * c.team_tx_per_s / pg_tx_rate(w)


def limits(k: int, c: Costs, w: Workload, imbalance: float) -> Limits:
    return Limits(
        shards=k,
        imbalance=imbalance,
        cpu=k * c.core_budget / cpu_per_session(c, w) / imbalance,
        memory=k * c.memory_bytes / c.bytes_per_session / imbalance,
        takeover=k * takeover_limit(c) / imbalance,
        postgres=c.pg_budget * c.pg_tx_per_s / pg_tx_rate(w),
        team_row=team_row_limit(c, w) / w.team_share,
    )


def owner(slot: int, k: int) -> int:
    """The range (0..k-1) that owns ``slot``: K contiguous ranges of SLOTS/K slots."""
    return slot * k // SLOTS


def slot_of(user_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest()) % SLOTS


def range_imbalance(k: int, users: int, seed: int) -> float:
    """Sessions in the busiest range over the mean, for ``users`` users with 1 to 3
    sessions each (70 % one, 25 % two, 5 % three), drawn with ``seed``."""
    rng = random.Random(seed)  # noqa: S311 - a seeded model, nothing secret
    load = [0] * k
    for i in range(users):
        u = rng.random()
        sessions = 1 if u < 0.70 else 2 if u < 0.95 else 3
        load[owner(slot_of(f"user-{seed}-{i}"), k)] += sessions
    return max(load) / (sum(load) / k)


def queue_p99_wait(utilisation: float, service_s: float, n: int, seed: int) -> float:
    """p99 waiting time (s) of one FIFO server with fixed service time and Poisson
    arrivals at ``utilisation``: Lindley's recursion over ``n`` arrivals."""
    rng = random.Random(seed)  # noqa: S311 - a seeded model, nothing secret
    rate = utilisation / service_s
    wait, waits = 0.0, []
    for _ in range(n):
        gap = rng.expovariate(rate)
        wait = max(0.0, wait + service_s - gap)
        waits.append(wait)
    waits.sort()
    return waits[math.ceil(0.99 * n) - 1]


def fmt(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def limits_table(imbalances: dict[int, float], c: Costs, w: Workload) -> str:
    head = (
        f"{'K':>2} {'imbal':>6} | {'CPU':>8} {'memory':>8} {'takeover':>8} {'Postgres':>9} "
        f"{'team row':>9} | {'breaks at':>9} {'on':<13} | then"
    )
    lines = [head, "-" * len(head)]
    for k, imbalance in imbalances.items():
        lim = limits(k, c, w, imbalance)
        (first, at), (second, next_at) = lim.ordered()[:2]
        lines.append(
            f"{k:>2} {lim.imbalance:>6.3f} | {fmt(lim.cpu):>8} {fmt(lim.memory):>8} "
            f"{fmt(lim.takeover):>8} {fmt(lim.postgres):>9} {fmt(lim.team_row):>9} | "
            f"{fmt(at):>9} {first:<13} | {second} at {fmt(next_at)}"
        )
    return "\n".join(lines)


def load_table(imbalances: dict[int, float], totals: list[float], c: Costs, w: Workload) -> str:
    """Utilisation of the hottest active, PostgreSQL and the largest team's row; the
    hottest range's takeover time."""
    head = (
        f"{'sessions':>9} {'K':>2} | {'active':>7} {'takeover':>8} {'Postgres':>9} "
        f"{'team row':>9} | verdict"
    )
    lines = [head, "-" * len(head)]
    for total in totals:
        for k, imbalance in imbalances.items():
            active = total / k * imbalance * cpu_per_session(c, w)
            pg = total * pg_tx_rate(w) / c.pg_tx_per_s
            row = total * w.team_share * pg_tx_rate(w) / c.team_tx_per_s
            memory = total / k * imbalance * c.bytes_per_session / c.memory_bytes
            takeover = total / k * imbalance / takeover_limit(c)
            takeover_time = c.lease_s + total / k * imbalance * c.reload_s_per_session
            over = [
                name
                for name, u, cap in (
                    ("active CPU", active, c.core_budget),
                    ("active memory", memory, 1.0),
                    ("takeover time", takeover, 1.0),
                    ("PostgreSQL", pg, c.pg_budget),
                    ("team row", row, c.pg_budget),
                )
                if u > cap
            ]
            verdict = "ok" if not over else "BREAKS: " + ", ".join(over)
            lines.append(
                f"{fmt(total):>9} {k:>2} | {active:>6.0%} {takeover_time:>7.1f}s {pg:>9.0%} "
                f"{row:>9.0%} | {verdict}"
            )
    return "\n".join(lines)


def queue_table(c: Costs, n: int, seed: int) -> str:
    service = 1 / c.team_tx_per_s
    head = f"{'utilisation':>11} | {'team row p99 wait ms':>20} | {'active p99 wait ms':>18}"
    lines = [head, "-" * len(head)]
    for u in (0.5, 0.7, 0.8, 0.9, 0.95, 0.99):
        row = queue_p99_wait(u, service, n, seed) * 1000
        active = queue_p99_wait(u, c.heartbeat_cpu_s, n, seed) * 1000
        lines.append(f"{u:>11.0%} | {row:>20.1f} | {active:>18.1f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="K actives by user range, one PostgreSQL: a model")
    for group in (Costs(), Workload()):
        for f in fields(group):
            p.add_argument(
                f"--{f.name.replace('_', '-')}", type=float, default=getattr(group, f.name)
            )
    p.add_argument("--storm-s", type=float, default=900.0, help="login storm length, s")
    p.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--totals", type=float, nargs="+", default=[2.5e5, 5e5, 1e6, 2e6])
    p.add_argument("--users", type=int, default=100_000, help="users drawn for the imbalance")
    p.add_argument("--arrivals", type=int, default=200_000, help="arrivals per queue run")
    p.add_argument("--seed", type=int, default=13)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    c = replace(Costs(), **{f.name: getattr(a, f.name) for f in fields(Costs)})
    w = replace(Workload(), **{f.name: getattr(a, f.name) for f in fields(Workload)})
    per = cpu_per_session(c, w)
    print(
        f"per live session: {per * 1e6:.2f} us CPU/s on its active, "
        f"{pg_tx_rate(w) * 1e6:.1f} team tx/s per million on PostgreSQL (steady day)"
    )
    imbalances = {k: range_imbalance(k, a.users, a.seed) for k in a.shards}
    storm = replace(w, session_s=a.storm_s)
    one_team = replace(storm, team_share=1.0)
    for name, load in (
        (f"steady day, largest team {w.team_share:.0%} of sessions", w),
        (f"login storm (every start in {a.storm_s:.0f} s), largest team {w.team_share:.0%}", storm),
        ("login storm, ONE team holds every session", one_team),
    ):
        print(
            f"\n== where it breaks: {name}; a team's row is full at "
            f"{fmt(team_row_limit(c, load))} of its sessions =="
        )
        print(limits_table(imbalances, c, load))
    print(
        f"\n== utilisation in the storm at a given total (budget {c.core_budget:.0%} "
        "of a core, of PostgreSQL, of a row) =="
    )
    print(load_table(imbalances, a.totals, c, storm))
    print("\n== one queue near saturation (discrete events, Poisson arrivals) ==")
    print(queue_table(c, a.arrivals, a.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
