"""The numbers of RULES.md's table: defaults that configuration may change.

``Terms`` holds them; the server reads a changed set from a TOML file
(``--terms``, ``Terms.from_mapping``), each a number or a duration written
with its unit (``"5m"``, ``"24h"``, ``"30d"``). Two of the table's numbers are
not terms: the lease (``LEASE`` below) and a pack's validity (a calendar year,
T1: part of what was sold, and what the ledger's audit checks every pack's
expiry against).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Terms:
    charge_window: timedelta = timedelta(hours=24)
    grace: timedelta = timedelta(minutes=5)
    idle_threshold: timedelta = timedelta(minutes=15)
    heartbeat_interval: timedelta = timedelta(minutes=5)
    invitation_validity: timedelta = timedelta(days=7)
    devices_per_product: int = 3
    running_devices_per_product: int = 1
    sessions_per_product: int = 10  # M13: live sessions of one user and product
    pack_expiry_warning: timedelta = timedelta(days=30)  # L2
    burn_window: timedelta = timedelta(days=30)  # L4: whole days

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> Terms:
        """The defaults with ``values`` (a TOML file's table) in their place; a
        name or value that cannot be a term is refused with a ``ValueError``
        naming it and saying what it may be."""
        terms = cls.recorded(values)
        for name, (low, high) in _SPANS.items():
            span = getattr(terms, name)
            if not low <= span <= high:
                raise ValueError(
                    f"{name} is {_text(span)}: it must be from {_text(low)} to {_text(high)}"
                )
        terms._check()
        return terms

    @classmethod
    def recorded(cls, values: Mapping[str, object]) -> Terms:
        """The terms ``values`` write (as ``shown`` does), without the bounds and the
        checks of one term against another: the terms a database was last served by
        are read back as they were, though a later version may refuse them as a start's
        (``from_mapping``). A name or value that cannot be a term is a ``ValueError``."""
        known = {f.name: f for f in fields(cls)}
        changed: dict[str, object] = {}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"{name!r} is not a term (the terms: {', '.join(known)})")
            changed[name] = (
                _duration(name, value) if name in _SPANS else _count(name, value, _COUNTS[name])
            )
        return replace(cls(), **changed)  # type: ignore[arg-type]

    def _check(self) -> None:
        """What the terms must be of one another."""
        if self.grace >= self.charge_window:
            raise ValueError(
                f"grace ({_text(self.grace)}) must be shorter than charge_window "
                f"({_text(self.charge_window)}): a window's first use is free for the grace"
            )
        if self.heartbeat_interval * 2 > self.idle_threshold:
            raise ValueError(
                f"heartbeat_interval ({_text(self.heartbeat_interval)}) must be at most half "
                f"of idle_threshold ({_text(self.idle_threshold)}): a heartbeat a little late "
                "(the SDK spreads them by a tenth, the network delays them) would find its "
                "session idle, and a grace broken at every heartbeat is never charged"
            )
        if self.running_devices_per_product > self.devices_per_product:
            raise ValueError(
                f"running_devices_per_product ({self.running_devices_per_product}) must not be "
                f"over devices_per_product ({self.devices_per_product})"
            )
        if self.burn_window % timedelta(days=1):
            raise ValueError(f"burn_window is {_text(self.burn_window)}: it must be whole days")

    def shown(self) -> dict[str, str | int]:
        """Each term as the file writes it (the server's log, ``terms_changed``)."""
        return {
            f.name: _text(v) if isinstance(v := getattr(self, f.name), timedelta) else v
            for f in fields(self)
        }


DEFAULT_TERMS = Terms()


#: A term's span until a start changed it, and that start's instant.
SpanChange = tuple[timedelta, datetime]


def instant_across_a_change(base: datetime, span: timedelta, change: SpanChange | None) -> datetime:
    """The instant ``base + span`` that a term sets (an idle instant, a pack's
    warning), when the term was ``change``'s span until a start at its instant
    changed it: a change applies from the start that makes it (docs/rules.md, "The
    numbers"). One that fell before the change under the earlier span stays where it
    fell (a start fires it at its own instant); a later one follows the new span,
    but never falls before the change. No change: ``base + span``."""
    if change is None:
        return base + span
    span_before, changed_at = change
    earlier = base + span_before
    if earlier <= changed_at:
        return earlier
    return max(base + span, changed_at)


#: Each span's bounds: outside them a term would make the rules meaningless or a
#: deadline unreachable (a window of a second, an invitation of ten years).
_SPANS: dict[str, tuple[timedelta, timedelta]] = {
    "charge_window": (timedelta(hours=1), timedelta(days=366)),
    "grace": (timedelta(seconds=1), timedelta(days=365)),
    "idle_threshold": (timedelta(minutes=1), timedelta(days=30)),
    "heartbeat_interval": (timedelta(seconds=10), timedelta(hours=12)),
    "invitation_validity": (timedelta(hours=1), timedelta(days=366)),
    "pack_expiry_warning": (timedelta(hours=1), timedelta(days=364)),
    "burn_window": (timedelta(days=1), timedelta(days=366)),
}
#: The longest a span term may be (``--terms``): what the test clock's latest time
#: leaves before the last day an instant may have (``engine/core.py``).
LONGEST_SPAN = max(high for _, high in _SPANS.values())
#: Each count's bounds.
_COUNTS: dict[str, tuple[int, int]] = {
    "devices_per_product": (1, 100),
    "running_devices_per_product": (1, 100),
    "sessions_per_product": (1, 1000),
}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SPAN = re.compile(r"(\d{1,9})\s*([smhd])")


def _duration(name: str, value: object) -> timedelta:
    """``"30d"``, ``"24h"``, ``"15m"``, ``"90s"``: a whole number and its unit."""
    match = _SPAN.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(
            f"{name} is {value!r}: write a whole number and its unit, s, m, h or d "
            '(e.g. "5m", "24h", "30d")'
        )
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def _count(name: str, value: object, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{name} is {value!r}: it must be a whole number from {low} to {high}")
    return value


def _text(span: timedelta) -> str:
    """A span in the largest unit that writes it whole: ``"30d"``, ``"90m"``."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:  # (nothing is "0s", as it was written)
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# M7: a lease runs this long from the latest Entitle or Heartbeat. Not a term
# configuration may change: a session keeps only when its lease began
# (``Session.lease_start``; one instant fewer than keeping its end, 48 bytes a
# live session) and its end is derived from this, so a different lease at a
# restart would move the end of every stored lease.
LEASE = timedelta(hours=24)
