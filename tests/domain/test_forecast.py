"""RULES L4: the forecast as a pure function, on examples worked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from server.domain.forecast import PackBalance, forecast

NOW = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def test_l4_no_charges_no_depletion_time() -> None:
    f = forecast(NOW, [PackBalance(100, 0, NOW + 400 * DAY)], [])
    assert f.daily_burn_tokens == 0.0
    assert f.depletion_time is None
    assert f.expiring_tokens_30d == 0


def test_l4_one_pack_runs_out_pro_rata_to_the_second() -> None:
    # 30 tokens charged in 30 days: 1 token/day. 10 tokens last 10 days.
    f = forecast(NOW, [PackBalance(10, 0, NOW + 300 * DAY)], [20, 10])
    assert f.daily_burn_tokens == 1.0
    assert f.depletion_time == NOW + 10 * DAY
    # 7 tokens charged: 7/30 per day; 1 token lasts 30/7 days = 370285.714... s -> 370285 s
    g = forecast(NOW, [PackBalance(1, 0, NOW + 300 * DAY)], [7])
    assert g.daily_burn_tokens == 7 / 30
    assert g.depletion_time == NOW + timedelta(seconds=370285)


def test_l4_tokens_left_at_expiry_are_lost() -> None:
    # 60 charged: 2/day. Pack A: 40 tokens expiring in 5 days: 10 used, 30 lost at day 5.
    # Pack B: 20 tokens expiring in 100 days: used from day 5, 10 days: runs out at day 15.
    packs = [PackBalance(40, 0, NOW + 5 * DAY), PackBalance(20, 0, NOW + 100 * DAY)]
    f = forecast(NOW, packs, [60])
    assert f.depletion_time == NOW + 15 * DAY
    assert f.expiring_tokens_30d == 40


def test_l4_last_pack_lost_to_expiry_depletes_at_its_expiry() -> None:
    # 30 charged: 1/day. 10 tokens expiring in 4 days: 4 used, 6 lost at day 4.
    f = forecast(NOW, [PackBalance(10, 0, NOW + 4 * DAY)], [30])
    assert f.depletion_time == NOW + 4 * DAY


def test_l4_a_pack_expiring_as_use_reaches_it_is_lost_and_the_next_one_is_used() -> None:
    # 30 charged: 1/day. A: 10 tokens expiring in 5 days: 5 used, 5 lost at day 5.
    # B expires at that same instant, as use reaches it: all 10 lost, none used.
    # C: 3 tokens expiring in 100 days, used from day 5: runs out at day 8.
    packs = [
        PackBalance(10, 0, NOW + 5 * DAY),
        PackBalance(10, 0, NOW + 5 * DAY),
        PackBalance(3, 0, NOW + 100 * DAY),
    ]
    assert forecast(NOW, packs, [30]).depletion_time == NOW + 8 * DAY


def test_l4_a_pack_all_held_after_the_last_lost_tokens_leaves_their_expiry_exact() -> None:
    # 30 charged: 1/day. A: 10 tokens expiring 4 days and half a second from now: the
    # last used tokens are lost then, so depletion is that instant, not truncated to the
    # second. B has nothing available (all held): it changes nothing.
    expiry = NOW + 4 * DAY + timedelta(milliseconds=500)
    packs = [PackBalance(10, 0, expiry), PackBalance(0, 5, NOW + 50 * DAY)]
    assert forecast(NOW, packs, [30]).depletion_time == expiry


def test_l4_held_tokens_are_not_available() -> None:
    # 30 charged: 1/day; 5 remaining (+50 held) last 5 days; held never expire-counted.
    f = forecast(NOW, [PackBalance(5, 50, NOW + 10 * DAY)], [30])
    assert f.depletion_time == NOW + 5 * DAY
    assert f.expiring_tokens_30d == 5


def test_l4_expiring_within_30_days_counts_unexpired_remaining() -> None:
    packs = [
        PackBalance(7, 0, NOW),  # expired already: not counted
        PackBalance(11, 3, NOW + 30 * DAY),  # exactly 30 days: counted (remaining only)
        PackBalance(13, 0, NOW + 30 * DAY + timedelta(seconds=1)),  # after: not counted
    ]
    assert forecast(NOW, packs, []).expiring_tokens_30d == 11


def test_l4_charges_but_no_tokens_deplete_now() -> None:
    assert forecast(NOW, [], [3]).depletion_time == NOW


_packs = st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 400)), max_size=6).map(
    lambda xs: sorted(
        (PackBalance(n, 0, NOW + timedelta(days=d)) for n, d in xs), key=lambda p: p.expire_time
    )
)


@given(_packs, st.integers(1, 10_000), st.integers(1, 1000))
def test_l4_depletion_never_before_now_and_monotone_in_balance(
    packs: list[PackBalance], charged: int, extra: int
) -> None:
    before = forecast(NOW, packs, [charged]).depletion_time
    assert before is not None and before >= NOW
    more = [PackBalance(extra, 0, NOW + 500 * DAY), *packs]
    more.sort(key=lambda p: p.expire_time)
    after = forecast(NOW, more, [charged]).depletion_time
    assert after is not None and after >= before
