"""Ids grow with time (``server/ids.py``): lists kept in id order (notifications,
audit events newest first) show things in the order they were made, and SQLite
appends their rows instead of scattering them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from server.ids import IdFactory, _b32, _counter32


@given(st.integers(min_value=0, max_value=2**30 - 1))
def test_ids_counter_digits_are_its_base32_digits(n: int) -> None:
    # The table lookups that write the counter (issue 17) write what _b32 writes.
    assert _counter32(n) == _b32(n, 6)


def test_ids_of_one_factory_sort_in_the_order_they_were_made() -> None:
    ids = IdFactory()
    made = [ids.new("x") for _ in range(20_000)]  # many share a millisecond: the counter
    assert made == sorted(made)
    assert len(set(made)) == len(made)
