"""Who pays when it is not the team: subscriptions (C1) and trials (C2).

A ``Subscription`` covers one user and one product from ``start_time``
(included) to ``end_time`` (excluded). When several cover the same moment, a
subscription comes before a trial (C1, then C2); among those of one kind, the
one that ends last is chosen (then the smallest id), so that coverage lasts as
long as it can. Periods may overlap; nothing is shortened but by ``end``.

Ending one early (AD3) sets its ``end_time`` to now: one that has not begun yet
gets an empty period at now (its ``start_time`` becomes now too), so that
``start_time <= end_time`` always holds and it never covers anything; one
already over is left as it is.

Each user's, product's and (user, product)'s list is kept by start time then id
(``by_start``), the order AD3 lists them in, so that a page of a product's is
read from its start (a bisection) rather than sorted whole: ``end`` moves the one
whose start it changes (always to an earlier place).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from itertools import islice

from server.domain.changes import Changes
from server.domain.errors import (
    InvalidArgument,
    UnknownProduct,
    UnknownSubscription,
    UnknownUser,
)
from server.domain.instants import MICROSECOND, rfc3339


class SubscriptionKind(Enum):
    SUBSCRIPTION = "SUBSCRIPTION"
    TRIAL = "TRIAL"


@dataclass(slots=True)
class Subscription:
    subscription_id: str
    user_id: str
    product_id: str
    kind: SubscriptionKind
    start_time: datetime
    end_time: datetime

    def active_at(self, now: datetime) -> bool:
        return self.start_time <= now < self.end_time


def _order(sub: Subscription) -> tuple[datetime, str]:
    """A subscription's place in each list: start time, then id (``by_start``'s order)."""
    return (sub.start_time, sub.subscription_id)


_FIRST = datetime(1, 1, 1, tzinfo=UTC)


def by_start(sub: Subscription) -> str:
    """A subscription's place in AD3's lists, as the key of their pages (AIP-158): its
    start (microseconds since the year 1, fixed width, so that any instant orders as a
    string as it does as a time), then its id; ``_order``'s order."""
    return f"{(sub.start_time - _FIRST) // MICROSECOND:018d}.{sub.subscription_id}"


def _preference(sub: Subscription) -> tuple[int, float, str]:
    """Sort key: subscriptions first, then the latest end, then the id."""
    kind_rank = 0 if sub.kind is SubscriptionKind.SUBSCRIPTION else 1
    return (kind_rank, -sub.end_time.timestamp(), sub.subscription_id)


class Coverages:
    """Every subscription and trial, by (user, product)."""

    def __init__(self) -> None:
        self._by_meter: dict[tuple[str, str], list[Subscription]] = {}
        self._by_id: dict[str, Subscription] = {}
        self._by_user: dict[str, list[Subscription]] = {}
        self._by_product: dict[str, list[Subscription]] = {}

    @classmethod
    def restore(cls, subscriptions: Iterable[Subscription]) -> Coverages:
        coverages = cls()
        for sub in subscriptions:
            coverages._add(sub, keep_order=False)
        for lists in (coverages._by_meter, coverages._by_user, coverages._by_product):
            for subs in lists.values():
                subs.sort(key=_order)  # once each, not one insertion at a time
        return coverages

    def grant(
        self,
        user_id: str,
        product_id: str,
        start_time: datetime | None,
        end_time: datetime | None,
        kind: SubscriptionKind,
        new_id: Callable[[], str],
        changes: Changes,
        known_users: Collection[str],
        known_products: Collection[str],
        bad: Mapping[str, str] | None = None,
    ) -> Subscription:
        """C1/C2: record a subscription or trial after checking every field (``bad``:
        those the edge found bad already, an instant out of range, named with these)."""
        problems: dict[str, str] = dict(bad or {})
        if not user_id:
            problems["user_id"] = "is required"
        if not product_id:
            problems["product_id"] = "is required"
        for name, value in (("start_time", start_time), ("end_time", end_time)):
            if name in problems:
                continue
            if value is None:
                problems[name] = "is required"
            elif value.utcoffset() is None:
                problems[name] = "must be an instant with a time zone (UTC)"
        times_ok = not problems.keys() & {"start_time", "end_time"}
        if times_ok and start_time and end_time and end_time <= start_time:
            problems["end_time"] = (
                f"must be after the start ({rfc3339(start_time)}); it is {rfc3339(end_time)}"
            )
        if problems or start_time is None or end_time is None:
            raise InvalidArgument(problems)
        if user_id not in known_users:
            raise UnknownUser(f"there is no user {user_id!r}", user_id=user_id)
        if product_id not in known_products:
            raise UnknownProduct(f"{product_id!r} is not on the rate sheet", product_id=product_id)
        sub = Subscription(new_id(), user_id, product_id, kind, start_time, end_time)
        self._add(sub)
        changes.upsert(sub)
        return sub

    def start_trial(
        self,
        user_id: str,
        product_id: str,
        end_time: datetime | None,
        now: datetime,
        new_id: Callable[[], str],
        changes: Changes,
        known_users: Collection[str],
        known_products: Collection[str],
        bad: Mapping[str, str] | None = None,
    ) -> Subscription:
        """C2: a trial from now until ``end_time``."""
        return self.grant(
            user_id,
            product_id,
            now,
            end_time,
            SubscriptionKind.TRIAL,
            new_id,
            changes,
            known_users,
            known_products,
            bad,
        )

    def covering(self, user_id: str, product_id: str, now: datetime) -> Subscription | None:
        """C1 then C2: what covers this user and product at ``now``, if anything."""
        active = [s for s in self._by_meter.get((user_id, product_id), ()) if s.active_at(now)]
        return min(active, key=_preference) if active else None

    def next_change(self, user_id: str, product_id: str, now: datetime) -> datetime | None:
        """The first instant after ``now`` at which ``covering`` may change (a start or an end)."""
        later = [
            t
            for s in self._by_meter.get((user_id, product_id), ())
            for t in (s.start_time, s.end_time)
            if t > now
        ]
        return min(later) if later else None

    def seats(self) -> Iterable[tuple[str, str]]:
        """Every (user, product) with a subscription or trial, past or to come."""
        return self._by_meter.keys()

    def of_user(self, user_id: str) -> list[Subscription]:
        """A user's subscriptions and trials, by product and start."""
        subs = self._by_user.get(user_id, [])
        return sorted(subs, key=lambda s: (s.product_id, s.start_time, s.subscription_id))

    def get(self, subscription_id: str) -> Subscription | None:
        return self._by_id.get(subscription_id)

    def listing(
        self,
        user_id: str,
        product_id: str,
        include_ended: bool,
        now: datetime,
        *,
        after: str | None = None,
        limit: int = 0,
    ) -> list[Subscription]:
        """AD3: a user's, a product's, or (both given) a user's of one product, by
        start time then id; those whose end has passed only with ``include_ended``:
        from the first after the ``by_start`` key ``after``, at most ``limit`` (0: all).
        Read from the list kept in that order, from the page's start: a product's
        whole list was sorted for each call. The caller checks that the user and
        product it names exist."""
        if not user_id and not product_id:
            raise InvalidArgument.field("user_id", "give a user_id, a product_id or both")
        if user_id:
            subs = self._by_user.get(user_id, [])
            if product_id:
                subs = self._by_meter.get((user_id, product_id), [])
        else:
            subs = self._by_product.get(product_id, [])
        start = 0 if after is None else bisect_right(subs, after, key=by_start)
        out = []
        for sub in islice(subs, start, None):
            if include_ended or sub.end_time > now:
                out.append(sub)
                if len(out) == limit:
                    break
        return out

    def end(self, subscription_id: str, now: datetime, changes: Changes) -> Subscription:
        """AD3: end a subscription or trial at ``now``; one already over comes back
        unchanged (see the module's docstring for one not yet begun)."""
        sub = self._by_id.get(subscription_id)
        if sub is None:
            if not subscription_id:
                raise InvalidArgument.field("subscription_id", "is required")
            raise UnknownSubscription(
                f"no subscription or trial {subscription_id!r}", subscription_id=subscription_id
            )
        if sub.end_time > now:
            if sub.start_time > now:  # not begun: it moves to now, earlier in its lists
                lists = self._lists(sub)
                for subs in lists:
                    del subs[bisect_left(subs, _order(sub), key=_order)]
                sub.start_time = now
                for subs in lists:
                    insort(subs, sub, key=_order)
            sub.end_time = now
            changes.upsert(sub)
        return sub

    def _lists(self, sub: Subscription) -> tuple[list[Subscription], ...]:
        """The lists ``sub`` is in: its (user, product)'s, its user's, its product's."""
        return (
            self._by_meter.setdefault((sub.user_id, sub.product_id), []),
            self._by_user.setdefault(sub.user_id, []),
            self._by_product.setdefault(sub.product_id, []),
        )

    def _add(self, sub: Subscription, keep_order: bool = True) -> None:
        """Index ``sub``, each list kept in ``_order`` (``restore`` sorts them once
        after adding every one, ``keep_order`` False)."""
        self._by_id[sub.subscription_id] = sub
        for subs in self._lists(sub):
            if keep_order:
                insort(subs, sub, key=_order)
            else:
                subs.append(sub)
