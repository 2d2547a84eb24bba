"""RULES §7: deadlines fire in time order, each at its own instant; at one
instant by kind, then key, whatever order they were scheduled in. The store
keeps them in buckets of 16 seconds (``server/domain/timers.py``); these tests hold
it to a plain sorted list of every deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.timers import TimerHeap, TimerKind

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
KINDS = list(TimerKind)

# An offset in microseconds from T0: clustered in a few seconds (many share a
# bucket, some share an instant) or spread over a day.
OFFSETS = st.one_of(
    st.integers(0, 3_000_000),
    st.sampled_from([0, 999_999, 1_000_000, 1_000_001, 2_500_000]),
    st.integers(0, 86_400_000_000),
)
SCHEDULE = st.tuples(st.just("schedule"), OFFSETS, st.sampled_from(KINDS), st.sampled_from("abc"))
POP = st.tuples(st.just("pop"), OFFSETS)


@settings(max_examples=400)
@given(st.lists(st.one_of(SCHEDULE, POP), max_size=80))
def test_s7_deadlines_fire_in_time_then_kind_then_key_order(
    steps: list[tuple[object, ...]],
) -> None:
    heap = TimerHeap()
    model: list[tuple[datetime, TimerKind, str]] = []
    for step in steps:
        if step[0] == "schedule":
            _, offset, kind, key = step
            assert isinstance(offset, int) and isinstance(kind, TimerKind) and isinstance(key, str)
            due = T0 + timedelta(microseconds=offset)
            heap.schedule(due, kind, key)
            model.append((due, kind, key))
        else:
            assert isinstance(step[1], int)
            until = T0 + timedelta(microseconds=step[1])
            fired = []
            while (deadline := heap.pop_due(until)) is not None:
                fired.append(deadline)
            model.sort()
            expected = [d for d in model if d[0] <= until]
            del model[: len(expected)]
            assert fired == expected
        assert len(heap) == len(model)
        assert heap.next_due() == (min(model)[0] if model else None)
        assert sorted(heap.pending()) == sorted(model)


def test_s7_a_deadline_scheduled_into_the_open_second_fires_in_order() -> None:
    """While a second's deadlines fire, a handler may schedule one in that same
    second (or before it): it fires in its place, not after the bucket."""
    heap = TimerHeap()
    s = T0 + timedelta(seconds=10)
    heap.schedule(s + timedelta(microseconds=500), TimerKind.LEASE_END, "late")
    heap.schedule(s + timedelta(microseconds=100), TimerKind.IDLE, "first")
    heap.schedule(s + timedelta(seconds=1), TimerKind.IDLE, "next second")
    assert heap.pop_due(s + timedelta(microseconds=100)) == (
        s + timedelta(microseconds=100),
        TimerKind.IDLE,
        "first",
    )
    heap.schedule(s + timedelta(microseconds=300), TimerKind.GRACE_END, "added")
    heap.schedule(s - timedelta(seconds=5), TimerKind.PACK_EXPIRY, "overdue")
    until = s + timedelta(seconds=2)
    keys = [d[2] for _ in range(4) if (d := heap.pop_due(until)) is not None]
    assert keys == ["overdue", "added", "late", "next second"]
    assert heap.pop_due(until) is None and len(heap) == 0 and heap.next_due() is None


def test_s7_deadlines_cost_about_three_pointers_each() -> None:
    """The memory the store adds per deadline (its lists, dict and heap of
    seconds) is about 3 pointers, not a 72-byte tuple and slot: 200,000
    deadlines over a day of seconds, their objects held by the caller."""
    heap = TimerHeap()
    keys = [f"ss_{i:023d}" for i in range(200_000)]
    dues = [T0 + timedelta(microseconds=i * 431_999) for i in range(200_000)]  # a day
    for due, key in zip(dues, keys, strict=True):
        heap.schedule(due, TimerKind.IDLE, key)
    per_entry = heap.container_bytes() / len(heap)
    assert 24 <= per_entry <= 40, per_entry
