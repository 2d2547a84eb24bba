"""Named settings stored with the data.

The engine stores the test clock's time (RULES §7) and the wiring records
which clock a database runs on; both are durable objects like any other, so
they live here, beside the domain, and every store adapter writes them to its
``meta`` table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MetaValue:
    """A named setting stored with the data (the test clock's time, ...)."""

    key: str
    value: str
