"""Ids grow with time (``server/ids.py``): lists kept in id order (notifications,
audit events newest first) show things in the order they were made, and SQLite
appends their rows instead of scattering them."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

import server.ids
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


def test_ids_after_not_before_sort_after_that_id_on_a_clock_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored = IdFactory().new("se")  # made by the last server, now
    real = time.time_ns
    monkeypatch.setattr(server.ids, "time", SimpleNamespace(time_ns=lambda: real() - 600 * 10**9))
    behind = IdFactory()
    assert behind.new("se") < stored  # what a server 10 minutes behind made
    behind.not_before(stored)
    made = [behind.new(p) for p in ("se", "ntf", "se")]
    assert all(m.partition("_")[2] > stored.partition("_")[2] for m in made)
    assert made[0] < made[2]


def test_ids_not_before_an_older_id_or_one_of_another_form_changes_nothing() -> None:
    ids = IdFactory()
    first = ids.new("se")
    for other in ("s1", "se_", "se_" + "u" * 23, "se_" + "0" * 23):
        ids.not_before(other)
    assert ids.new("se") > first
    assert ids.new("se")[3:13] >= first[3:13]
