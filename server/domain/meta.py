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

#: Where this release's start reads the sessions from, besides those named in the
#: table ``sessions_older_loaded`` (``OlderLoaded``): the first session in memory
#: opened in the days memory keeps ended ones (``Sessions.keep_load_bound``). One
#: session live for months no longer makes every start read every session stored
#: since it opened (``SESSIONS_FROM_KEY``, kept as before, lies at or below it: a
#: start reads from it when there is no recent bound, as the release before did).
SESSIONS_RECENT_FROM_KEY = "sessions_recent_from"


@dataclass(frozen=True, slots=True)
class MetaValue:
    """A named setting stored with the data (the test clock's time, ...)."""

    key: str
    value: str


def meta_value(stored: Iterable[MetaValue], key: str) -> str | None:
    """The value stored under ``key`` among ``stored``, if any."""
    return next((meta.value for meta in stored if meta.key == key), None)


def clock_at(stored: Iterable[MetaValue]) -> datetime | None:
    """The real clock's high-water mark among ``stored`` (``CLOCK_AT_KEY``), if any."""
    value = meta_value(stored, CLOCK_AT_KEY)
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class OlderLoaded:
    """A session a start loads whose id is below ``SESSIONS_RECENT_FROM_KEY``: one in
    memory that opened before the days memory keeps ended ones (live for days, or
    ended lately after a long run). Kept with that bound, in one commit, by
    ``Sessions.keep_load_bound``."""

    session_id: str
