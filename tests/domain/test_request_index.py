"""M11's index of ended sessions by request id, when users share one.

Request ids are the client's: a hand-written client that copies the README's
``"request_id": "e-1"`` gives every user the same one. Each user's repeat must
still find their own session, and the index must grow and shrink a session at a
time: kept as one tuple of everyone's sessions, each end copied it and each
forgotten session rebuilt it (20,000 users: 2-4 s to restore, 10-20 s on the event
loop to forget them, holding every call).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.domain.ledger import Ledger
from server.domain.liveview import LiveView
from server.domain.sessions import Session
from server.domain.terms import DEFAULT_TERMS
from tests.store.builders import a_session

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _ended(i: int, user: str, request_id: str = "e-1") -> Session:
    t = T0 + timedelta(seconds=i)
    return a_session(f"se_{i:08d}", t, ended=t, user_id=user, request_id=request_id)


def _restored(sessions: list[Session]) -> LiveView:
    return LiveView.restore(
        sessions,
        [],
        [],
        [],
        ledger=Ledger(),
        products={},
        teams={},
        terms=DEFAULT_TERMS,
        access=None,  # type: ignore[arg-type]
        coverage=None,  # type: ignore[arg-type]
        new_id=lambda prefix: prefix,
    )


def test_m11_users_sharing_a_request_id_each_find_their_own_ended_session() -> None:
    sessions = [_ended(i, f"u{i}@example.com") for i in range(3000)]
    sessions.append(_ended(3000, "solo@example.com", "s-1"))
    lic = _restored(sessions)
    for s in sessions:
        assert lic._earlier(s.user_id, s.request_id) is s
    assert lic._earlier("nobody@example.com", "e-1") is None
    assert lic._earlier("solo@example.com", "e-1") is None
    assert lic._earlier("u1@example.com", "s-1") is None


def test_m11_the_shared_request_id_index_grows_and_shrinks_in_place() -> None:
    """One more user's session joins the index in place, and forgetting the 1,500
    that ended first leaves exactly the others, each still found; once all are
    forgotten the id is gone from the index."""
    sessions = [_ended(i, f"u{i}@example.com") for i in range(3000)]
    lic = _restored(sessions)
    index = lic._by_request["e-1"]
    late = _ended(3000, "late@example.com")
    lic._remember(late)
    assert lic._by_request["e-1"] is index  # not a copy of everyone's
    assert lic._earlier("late@example.com", "e-1") is late

    lic._sessions.update({late.session_id: late})
    assert lic.forget_ended(T0 + timedelta(seconds=1500)) == 1500
    assert lic._by_request["e-1"] is index
    assert [lic._earlier(s.user_id, "e-1") is None for s in sessions[:1500]] == [True] * 1500
    assert all(lic._earlier(s.user_id, "e-1") is s for s in sessions[1500:])
    assert lic.forget_ended(T0 + timedelta(days=1)) == 1501
    assert "e-1" not in lic._by_request


def test_m11_a_user_s_latest_session_of_an_id_is_the_one_kept() -> None:
    """A user's second session of one id (opened once the first was let go of, both
    stored and restored, in either order) is the one a repeat finds; forgetting the
    first, no longer indexed, leaves the index alone."""
    first, second = _ended(0, "ann@example.com"), _ended(1, "ann@example.com")
    other = _ended(2, "bob@example.com")
    for order in ([first, second, other], [second, other, first]):
        lic = _restored(order)
        assert lic._earlier("ann@example.com", "e-1") is second
        lic._forget_request(first)
        assert lic._earlier("ann@example.com", "e-1") is second
        lic._forget_request(other)
        assert lic._by_request["e-1"] is second  # one user left: the session itself
    lic = _restored([second, first])  # ann's alone: the session itself, not a dict
    assert lic._by_request["e-1"] is second
