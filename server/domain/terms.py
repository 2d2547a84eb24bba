"""The numbers of RULES.md's table: defaults that configuration may change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


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


DEFAULT_TERMS = Terms()

# M7: a lease runs this long from the latest Entitle or Heartbeat. Not a term
# configuration may change: a session keeps only when its lease began
# (``Session.lease_start``; one instant fewer than keeping its end, 48 bytes a
# live session) and its end is derived from this, so a different lease at a
# restart would move the end of every stored lease.
LEASE = timedelta(hours=24)
