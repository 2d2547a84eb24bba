"""What a load run measured: latencies and errors per phase and RPC.

Workers record every call in a :class:`Recorder` (successful latencies as raw
seconds in an ``array('d')``, errors counted by status code), send them to the
driver at the end of each phase, and the driver merges them. Percentiles are
exact, by the nearest-rank method over successful calls: p99 is the smallest
latency at or above which 1 % of the calls lie.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = (50.0, 95.0, 99.0)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest rank: the ``ceil(p/100 * n)``-th smallest value (0.0 when empty)."""
    n = len(sorted_values)
    if n == 0:
        return 0.0
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile {p} is not within 0..100")
    rank = max(1, math.ceil(round(p / 100.0 * n, 9)))  # 99.9 % of 1,000 is 999, not 999.0…01
    return sorted_values[rank - 1]


@dataclass
class Recorder:
    """One RPC in one phase of one worker: cheap to append to, easy to merge."""

    latencies: array[float] = field(default_factory=lambda: array("d"))
    errors: dict[str, int] = field(default_factory=dict)
    # One message per status code, to tell a person what went wrong.
    error_samples: dict[str, str] = field(default_factory=dict)

    def ok(self, seconds: float) -> None:
        self.latencies.append(seconds)

    def error(self, code: str, message: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        if code not in self.error_samples:
            self.error_samples[code] = message[:300]

    @property
    def ok_count(self) -> int:
        return len(self.latencies)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def calls(self) -> int:
        return self.ok_count + self.error_count

    def merge(self, other: Recorder) -> None:
        self.latencies.extend(other.latencies)
        for code, n in other.errors.items():
            self.errors[code] = self.errors.get(code, 0) + n
        for code, msg in other.error_samples.items():
            self.error_samples.setdefault(code, msg)


@dataclass
class PhaseStats:
    """One phase of one worker (or, merged, of the whole run)."""

    phase: str
    started: float = 0.0  # time.monotonic(): one clock for every process on Linux
    ended: float = 0.0
    rpcs: dict[str, Recorder] = field(default_factory=dict)
    #: Seconds between ``started`` and ``ended`` that belong to no slice of the phase
    #: (a phase run in slices, others' between them: ``then``).
    paused: float = 0.0

    def rpc(self, name: str) -> Recorder:
        rec = self.rpcs.get(name)
        if rec is None:
            rec = self.rpcs[name] = Recorder()
        return rec

    @property
    def seconds(self) -> float:
        return max(0.0, self.ended - self.started - self.paused)

    def merge(self, other: PhaseStats) -> None:
        if other.started and (not self.started or other.started < self.started):
            self.started = other.started
        self.ended = max(self.ended, other.ended)
        for name, rec in other.rpcs.items():
            self.rpc(name).merge(rec)

    def then(self, later: PhaseStats) -> None:
        """Add ``later``, a slice of the same phase run after this one: its calls,
        and its seconds but not those between the two."""
        if not later.started:
            return
        if self.started and later.started > self.ended:
            self.paused += later.started - self.ended
        self.paused += later.paused
        self.merge(later)


def merge_phases(parts: Iterable[PhaseStats]) -> PhaseStats | None:
    merged: PhaseStats | None = None
    for part in parts:
        if merged is None:
            merged = PhaseStats(part.phase)
        merged.merge(part)
    return merged


@dataclass(frozen=True)
class RpcSummary:
    """The row of the final table (times in milliseconds)."""

    phase: str
    rpc: str
    calls: int
    ok: int
    errors: Mapping[str, int]
    seconds: float
    rps: float  # successful calls per second of the phase
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "rpc": self.rpc,
            "calls": self.calls,
            "ok": self.ok,
            "errors": dict(self.errors),
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p95_ms": round(self.p95_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "mean_ms": round(self.mean_ms, 3),
        }


def summarize(phase: PhaseStats) -> list[RpcSummary]:
    rows = []
    seconds = phase.seconds
    for name in sorted(phase.rpcs, key=_rpc_order):
        rec = phase.rpcs[name]
        if not rec.calls:
            continue
        lat = sorted(rec.latencies)
        n = len(lat)
        p50, p95, p99 = (percentile(lat, p) * 1000 for p in PERCENTILES)
        rows.append(
            RpcSummary(
                phase=phase.phase,
                rpc=name,
                calls=rec.calls,
                ok=n,
                errors=dict(sorted(rec.errors.items())),
                seconds=seconds,
                rps=n / seconds if seconds > 0 else 0.0,
                p50_ms=p50,
                p95_ms=p95,
                p99_ms=p99,
                max_ms=(lat[-1] * 1000) if n else 0.0,
                mean_ms=(math.fsum(lat) / n * 1000) if n else 0.0,
            )
        )
    return rows


_ORDER = {"Entitle": 0, "Heartbeat": 1, "Idle": 2, "Release": 3}


def _rpc_order(name: str) -> tuple[int, str]:
    return (_ORDER.get(name, 99), name)


def format_errors(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{code} {n}" for code, n in errors.items()) or "-"


def render_table(rows: Sequence[RpcSummary]) -> str:
    """A fixed-width table: one line per phase and RPC."""
    header = ("phase", "rpc", "calls", "errors", "rps", "p50 ms", "p95 ms", "p99 ms", "max ms")
    body = [
        (
            r.phase,
            r.rpc,
            f"{r.calls:,}",
            format_errors(r.errors),
            f"{r.rps:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p95_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.max_ms:.2f}",
        )
        for r in rows
    ]
    # (A run that made no call has no line: the header's widths.)
    widths = [max([len(h), *(len(line[i]) for line in body)]) for i, h in enumerate(header)]
    left = {0, 1, 3}  # text columns; the figures are right-aligned

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    lines = [fmt(header), fmt(["-" * w for w in widths])]
    lines += [fmt(line) for line in body]
    lines.append("rps counts successful calls per second of the phase; latencies are theirs.")
    return "\n".join(lines)
