"""C1, C2: subscriptions and trials, stored and looked up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.changes import Changes
from server.domain.coverage import Coverages, Subscription, SubscriptionKind, by_start
from server.domain.errors import InvalidArgument, UnknownProduct, UnknownUser

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
USERS = frozenset({"ann@x.com", "bob@x.com"})
PRODUCTS = frozenset({"ACAD", "REVIT"})
SUB = SubscriptionKind.SUBSCRIPTION
TRIAL = SubscriptionKind.TRIAL


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"sub-{self.count}"


@pytest.fixture
def coverages() -> Coverages:
    return Coverages()


def grant(
    coverages: Coverages,
    start: datetime | None,
    end: datetime | None,
    kind: SubscriptionKind = SUB,
    user_id: str = "ann@x.com",
    product_id: str = "ACAD",
    changes: Changes | None = None,
    new_id: Counter | None = None,
) -> Subscription:
    return coverages.grant(
        user_id,
        product_id,
        start,
        end,
        kind,
        new_id or Counter(),
        changes if changes is not None else Changes(),
        USERS,
        PRODUCTS,
    )


def test_c1_subscription_covers_from_start_until_just_before_end(coverages: Coverages) -> None:
    changes = Changes()
    sub = grant(coverages, T0, T0 + 30 * DAY, changes=changes)
    assert sub == Subscription("sub-1", "ann@x.com", "ACAD", SUB, T0, T0 + 30 * DAY)
    assert changes.items == [sub]
    assert coverages.covering("ann@x.com", "ACAD", T0 - SECOND) is None
    assert coverages.covering("ann@x.com", "ACAD", T0) is sub
    assert coverages.covering("ann@x.com", "ACAD", T0 + 30 * DAY - SECOND) is sub
    assert coverages.covering("ann@x.com", "ACAD", T0 + 30 * DAY) is None
    assert coverages.covering("ann@x.com", "REVIT", T0) is None
    assert coverages.covering("bob@x.com", "ACAD", T0) is None


def test_c1_subscription_comes_before_a_trial_then_the_trial_takes_over(
    coverages: Coverages,
) -> None:
    ids = Counter()
    trial = grant(coverages, T0, T0 + 14 * DAY, TRIAL, new_id=ids)
    sub = grant(coverages, T0 + DAY, T0 + 5 * DAY, SUB, new_id=ids)
    assert coverages.covering("ann@x.com", "ACAD", T0) is trial
    assert coverages.covering("ann@x.com", "ACAD", T0 + DAY) is sub
    assert coverages.covering("ann@x.com", "ACAD", T0 + 5 * DAY) is trial
    assert coverages.covering("ann@x.com", "ACAD", T0 + 14 * DAY) is None


def test_c1_of_two_subscriptions_the_one_ending_last_is_chosen(coverages: Coverages) -> None:
    ids = Counter()
    grant(coverages, T0, T0 + 10 * DAY, new_id=ids)
    longer = grant(coverages, T0 + DAY, T0 + 20 * DAY, new_id=ids)
    assert coverages.covering("ann@x.com", "ACAD", T0 + 2 * DAY) is longer


def test_c2_trial_starts_now_and_must_end_later(coverages: Coverages) -> None:
    now = T0 + 3 * DAY
    trial = coverages.start_trial(
        "bob@x.com", "REVIT", now + 14 * DAY, now, Counter(), Changes(), USERS, PRODUCTS
    )
    assert (trial.kind, trial.start_time, trial.end_time) == (TRIAL, now, now + 14 * DAY)
    assert coverages.covering("bob@x.com", "REVIT", now) is trial
    with pytest.raises(InvalidArgument) as caught:
        coverages.start_trial("bob@x.com", "REVIT", now, now, Counter(), Changes(), USERS, PRODUCTS)
    assert list(caught.value.violations) == ["end_time"]


@pytest.mark.parametrize(
    ("start", "end", "violations"),
    [
        (T0, T0, {"end_time"}),
        (T0, T0 - SECOND, {"end_time"}),
        (None, T0, {"start_time"}),
        (T0, None, {"end_time"}),
        (None, None, {"start_time", "end_time"}),
        (datetime(2026, 3, 1), T0 + DAY, {"start_time"}),  # naive: no time zone
        (T0, datetime(2026, 2, 1), {"end_time"}),  # naive, and before the start
        (T0 + DAY, T0 + 2 * DAY, set()),
    ],
)
def test_grant_checks_times_and_records_nothing_when_bad(
    coverages: Coverages,
    start: datetime | None,
    end: datetime | None,
    violations: set[str],
) -> None:
    changes = Changes()
    if not violations:
        grant(coverages, start, end, changes=changes)
        assert len(changes) == 1
        return
    with pytest.raises(InvalidArgument) as caught:
        grant(coverages, start, end, changes=changes)
    assert set(caught.value.violations) == violations
    assert not changes


def test_grant_end_before_start_says_so(coverages: Coverages) -> None:
    with pytest.raises(InvalidArgument) as caught:
        grant(coverages, T0, T0 - DAY)
    assert caught.value.violations == {
        "end_time": "must be after the start (2026-03-01T12:00:00Z); it is 2026-02-28T12:00:00Z"
    }


def test_grant_requires_a_known_user_and_product(coverages: Coverages) -> None:
    changes = Changes()
    with pytest.raises(UnknownUser) as user:
        grant(coverages, T0, T0 + DAY, user_id="ghost@x.com", changes=changes)
    assert user.value.metadata == {"user_id": "ghost@x.com"}
    with pytest.raises(UnknownProduct) as product:
        grant(coverages, T0, T0 + DAY, product_id="MAYA", changes=changes)
    assert product.value.metadata == {"product_id": "MAYA"}
    with pytest.raises(InvalidArgument) as missing:
        grant(coverages, T0, T0 + DAY, user_id="", product_id="", changes=changes)
    assert missing.value.violations == {"user_id": "is required", "product_id": "is required"}
    assert not changes
    assert coverages.of_user("ghost@x.com") == []


def test_next_change_is_the_next_start_or_end(coverages: Coverages) -> None:
    ids = Counter()
    grant(coverages, T0 + DAY, T0 + 3 * DAY, SUB, new_id=ids)
    grant(coverages, T0 + 2 * DAY, T0 + 10 * DAY, TRIAL, new_id=ids)
    assert coverages.next_change("ann@x.com", "ACAD", T0) == T0 + DAY
    assert coverages.next_change("ann@x.com", "ACAD", T0 + DAY) == T0 + 2 * DAY
    assert coverages.next_change("ann@x.com", "ACAD", T0 + 2 * DAY) == T0 + 3 * DAY
    assert coverages.next_change("ann@x.com", "ACAD", T0 + 3 * DAY) == T0 + 10 * DAY
    assert coverages.next_change("ann@x.com", "ACAD", T0 + 10 * DAY) is None
    assert coverages.next_change("bob@x.com", "ACAD", T0) is None


def test_restore_gives_back_the_same_lookups(coverages: Coverages) -> None:
    ids = Counter()
    sub = grant(coverages, T0, T0 + 5 * DAY, SUB, new_id=ids)
    trial = grant(coverages, T0, T0 + 9 * DAY, TRIAL, new_id=ids)
    other = grant(coverages, T0, T0 + DAY, SUB, product_id="REVIT", new_id=ids)
    restored = Coverages.restore([trial, other, sub])
    assert restored.covering("ann@x.com", "ACAD", T0 + DAY) is sub
    assert restored.covering("ann@x.com", "ACAD", T0 + 5 * DAY) is trial
    assert restored.of_user("ann@x.com") == [sub, trial, other]
    assert restored.get("sub-3") is other


def test_ad3_ending_one_at_its_very_end_changes_nothing() -> None:
    """AD3: "one already over comes back unchanged"; a period is [start, end), so at
    its end_time it is over (C1). EndSubscription then records no change, so the call
    leaves no audit event (AD2: a call that changes nothing leaves none)."""
    coverages = Coverages()
    sub = grant(coverages, T0, T0 + DAY)
    changes = Changes()
    ended = coverages.end(sub.subscription_id, T0 + DAY, changes)
    assert (ended.start_time, ended.end_time) == (T0, T0 + DAY)
    assert changes.items == []


HOUR = timedelta(hours=1)
_GRANT = st.tuples(
    st.sampled_from(sorted(USERS)),
    st.sampled_from(sorted(PRODUCTS)),
    st.integers(0, 30),  # start, hours after T0 (before the clock, or after it)
    st.integers(1, 30),  # length, hours
)
_END = st.tuples(st.integers(0, 50), st.integers(0, 4))  # which one, hours the clock moves first


@given(steps=st.lists(st.one_of(_GRANT, _END), max_size=40), limit=st.integers(1, 4))
def test_ad3_lists_stay_in_start_order_as_ones_not_begun_are_ended(
    steps: list[tuple[str, str, int, int] | tuple[int, int]], limit: int
) -> None:
    """AD3 lists by start time then id, read from each list as it is kept (no sort
    per call): ending one not yet begun moves its start to now, and with it its place
    in its user's, product's and (user, product)'s lists. Each listing, whole or a
    page at a time after a ``by_start`` key, is the sorted filter of every one, and so
    after a restore."""
    coverages, ids, now, every = Coverages(), Counter(), T0, []
    for step in steps:
        if len(step) == 4:
            user_id, product_id, start, hours = step
            begin = T0 + start * HOUR
            every.append(
                grant(coverages, begin, begin + hours * HOUR, SUB, user_id, product_id, None, ids)
            )
        elif every:
            which, hours = step
            now += hours * HOUR
            coverages.end(every[which % len(every)].subscription_id, now, Changes())
    for listed in (coverages, Coverages.restore(reversed(every))):
        for user_id, product_id in [(u, "") for u in USERS] + [
            (u, p) for u in ("", *USERS) for p in PRODUCTS
        ]:
            for include_ended in (False, True):
                expected = sorted(
                    (
                        s
                        for s in every
                        if user_id in ("", s.user_id)
                        and product_id in ("", s.product_id)
                        and (include_ended or s.end_time > now)
                    ),
                    key=lambda s: (s.start_time, s.subscription_id),
                )
                assert listed.listing(user_id, product_id, include_ended, now) == expected
                walked: list[Subscription] = []
                while True:
                    after = by_start(walked[-1]) if walked else None
                    page = listed.listing(
                        user_id, product_id, include_ended, now, after=after, limit=limit
                    )
                    walked += page
                    if len(page) < limit:
                        break
                assert walked == expected
