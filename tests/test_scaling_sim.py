"""The sharding model's arithmetic (issue 13, point 8; ``benchmarks/sharding_sim.py``,
``docs/scaling.md``), on a worked example whose numbers were computed by hand.

The example: a Heartbeat costs 3 ms of an active's CPU, a Release+Entitle pair
6 ms, a team transaction 1.2 ms on the active's side; sessions heartbeat every
300 s, start every 3,000 s with 2 team transactions each, and pay one charge
every 6,000 s. So, per live session and per second:

- team transactions: 2/3000 + 1/6000 = 5/6000 = 1/1200;
- the active's CPU: 0.003/300 + 0.006/3000 + 0.0012/1200 = 1e-5 + 2e-6 + 1e-6 = 1.3e-5 s.

With 65 % of a core per active, 60 % of PostgreSQL's 1,000 tx/s and of a
team row's 120 tx/s, 2,000 B per session and 1 GB per active, the largest team
holding a quarter of all sessions:

- one active carries 0.65 / 1.3e-5 = 50,000 sessions; four, 200,000;
- memory: 1e9 / 2000 = 500,000 per active;
- takeover (H2): 10 s less a 5 s lease leaves 5 s to reload at 25 us a session,
  200,000 per range;
- PostgreSQL: 600 tx/s x 1200 = 720,000 sessions;
- a team's row: 72 tx/s x 1200 = 86,400 sessions of that team, so 86,400 / 0.25
  = 345,600 sessions in all.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmarks.sharding_sim import (
    SLOTS,
    Costs,
    Workload,
    cpu_per_session,
    limits,
    owner,
    pg_tx_rate,
    queue_p99_wait,
    range_imbalance,
    sessions_at,
    takeover_limit,
    team_row_limit,
)

COSTS = Costs(
    heartbeat_cpu_s=0.003,
    cycle_cpu_s=0.006,
    pg_client_cpu_s=0.0012,
    pg_tx_per_s=1_000,
    team_tx_per_s=120,
    bytes_per_session=2_000,
    memory_bytes=1e9,
    reload_s_per_session=2.5e-5,
    takeover_s=10,
    lease_s=5,
    core_budget=0.65,
    pg_budget=0.6,
)
LOAD = Workload(heartbeat_s=300, session_s=3_000, tx_per_session=2, window_s=6_000, team_share=0.25)


def test_scaling_per_session_rates() -> None:
    assert pg_tx_rate(LOAD) == pytest.approx(1 / 1200)
    assert cpu_per_session(COSTS, LOAD) == pytest.approx(1.3e-5)
    assert team_row_limit(COSTS, LOAD) == pytest.approx(86_400)
    assert takeover_limit(COSTS) == pytest.approx(200_000)


def test_scaling_four_actives_break_on_cpu() -> None:
    lim = limits(4, COSTS, LOAD, imbalance=1.0)
    assert lim.cpu == pytest.approx(200_000)
    assert lim.memory == pytest.approx(2_000_000)
    assert lim.takeover == pytest.approx(800_000)
    assert lim.postgres == pytest.approx(720_000)
    assert lim.team_row == pytest.approx(345_600)
    assert lim.breaks_at == pytest.approx(200_000)
    assert lim.breaks_on == "active CPU"


def test_scaling_eight_actives_break_on_the_team_row() -> None:
    """Twice the actives carry 400,000, past what the largest team's row allows."""
    lim = limits(8, COSTS, LOAD, imbalance=1.0)
    assert lim.cpu == pytest.approx(400_000)
    assert lim.breaks_at == pytest.approx(345_600)
    assert lim.breaks_on == "team row"


def test_scaling_the_hottest_range_decides() -> None:
    """A range 25 % busier than the mean fills first: 400,000 / 1.25 = 320,000."""
    lim = limits(8, COSTS, LOAD, imbalance=1.25)
    assert lim.breaks_at == pytest.approx(320_000)
    assert lim.breaks_on == "active CPU"


def test_scaling_a_slow_reload_breaks_on_takeover_time() -> None:
    """At 200 us a session, 5 s reload 25,000 sessions per range: four ranges,
    100,000, before their CPU (200,000) is full."""
    slow = replace(COSTS, reload_s_per_session=2e-4)
    lim = limits(4, slow, LOAD, imbalance=1.0)
    assert lim.breaks_at == pytest.approx(100_000)
    assert lim.breaks_on == "takeover time"


def test_scaling_sessions_from_calls_per_second() -> None:
    """N = rate x 300 without churn; with one Entitle and one Release every 3,000 s,
    each session costs 1/300 + 2/3000 = 1/250 calls a second."""
    assert sessions_at(1_915, 300, 0.0) == pytest.approx(574_500)
    assert sessions_at(2_000, 300, 2 / 3_000) == pytest.approx(500_000)


def test_scaling_ranges_are_contiguous_and_cover_every_slot() -> None:
    assert [owner(s, 4) for s in (0, 16_383, 16_384, 32_768, SLOTS - 1)] == [0, 0, 1, 2, 3]
    assert {owner(s, 8) for s in range(SLOTS)} == set(range(8))
    assert range_imbalance(1, 1_000, seed=1) == 1.0
    assert range_imbalance(8, 1_000, seed=1) > 1.0  # a finite draw is never perfectly even


def test_scaling_queue_waits_grow_toward_saturation() -> None:
    """Fixed service time, Poisson arrivals, seeded: no wait when nothing arrives
    close together, and p99 waiting that grows as the utilisation nears 1."""
    assert queue_p99_wait(1e-6, 0.001, 1_000, seed=1) == 0.0
    waits = [queue_p99_wait(u, 0.001, 20_000, seed=1) for u in (0.5, 0.9, 0.99)]
    assert waits == sorted(waits)
    assert waits[2] > 10 * waits[0]
