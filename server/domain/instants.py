"""Instants as whole numbers: the one epoch and the one microsecond every part of
the server counts from.

The store keeps each instant as microseconds since the Unix epoch
(``server/store/codec.py``), the ledger's and the audit trail's hash chains cover
that same number, and the API's keys and timestamps count from the same epoch.
They all take these from here, so the count has one definition.

``MICROSECOND`` is made once: a ``timedelta`` made on each call cost a third of
a ledger entry's own time (issue 17).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
SECOND = timedelta(seconds=1)


def micros(t: datetime) -> int:
    """Whole microseconds from the epoch to ``t`` (an aware instant)."""
    return (t - EPOCH) // MICROSECOND


def rfc3339(t: datetime) -> str:
    """``t`` as the API writes an instant (RFC 3339 in UTC, with a ``Z``, as grpcurl
    shows a Timestamp): in refusals' messages and metadata too."""
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def instant(us: int) -> datetime:
    """The instant ``us`` microseconds from the epoch: ``micros``' inverse (exact,
    and three times faster than ``timedelta(microseconds=us)``)."""
    return EPOCH + MICROSECOND * us
