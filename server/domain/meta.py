"""Named settings stored with the data.

The engine stores the test clock's time (RULES §7) and the wiring records
which clock a database runs on; both are durable objects like any other, so
they live here, beside the domain, and every store adapter writes them to its
``meta`` table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

#: The real clock's high-water mark: the latest time the server has acted at (fired
#: deadlines, started, stopped, or a minute's wake of its clock), never lowered. A
#: start's clock does not go back from it (``NamedReads.latest_instant``): a deadline
#: fired without a dated row (a trial's end, a window closing unused) is not fired
#: again, nor an ended coverage revived, after a restart on a clock stepped back.
CLOCK_AT_KEY = "real_clock_at"

#: A session id no session a start loads is below (the live ones, and those ended in
#: the days a start loads: ``store/codec.py``, ``SESSIONS``): a start reads the
#: sessions from it on, not every session ever stored. Kept by the engine
#: (``Sessions.keep_load_bound``) as the least of the first such stored session and
#: every session in memory; valid for every later start too, since a session that
#: a later start loads was live at the time it was kept, or opened after (ids grow
#: with time: ``server/ids.py``).
SESSIONS_FROM_KEY = "sessions_loaded_from"


@dataclass(frozen=True, slots=True)
class MetaValue:
    """A named setting stored with the data (the test clock's time, ...)."""

    key: str
    value: str


def clock_at(stored: Iterable[MetaValue]) -> datetime | None:
    """The real clock's high-water mark among ``stored`` (``CLOCK_AT_KEY``), if any."""
    for meta in stored:
        if meta.key == CLOCK_AT_KEY:
            return datetime.fromisoformat(meta.value)
    return None
