"""The numbers of RULES.md's table: defaults that configuration may change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class Terms:
    charge_window: timedelta = timedelta(hours=24)
    grace: timedelta = timedelta(minutes=5)
    idle_threshold: timedelta = timedelta(minutes=15)
    lease: timedelta = timedelta(hours=24)
    heartbeat_interval: timedelta = timedelta(minutes=5)
    invitation_validity: timedelta = timedelta(days=7)
    devices_per_product: int = 3
    running_devices_per_product: int = 1
    sessions_per_product: int = 10  # M13: live sessions of one user and product


DEFAULT_TERMS = Terms()
