"""The portal's sign-in sessions on a clock of the test's own, without a server: a
session ends unused for 8 hours or 12 hours after its sign-in, and one whose cookie never
returns is dropped (its client closed) all the same."""

from __future__ import annotations

import asyncio

from portal.web import IDLE, IDLE_SECONDS, LIFETIME_SECONDS, SWEEP_SECONDS, TOO_OLD, Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Client:
    """Stands in for the session's AsyncAdminClient."""

    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def test_a_session_ends_unused_for_8_hours_even_if_its_cookie_never_returns() -> None:
    clock = Clock()
    sessions = Sessions(clock=clock)
    gone, kept = Client(), Client()
    sessions.add(gone, operator=False, label="never back")  # type: ignore[arg-type]
    used = sessions.add(kept, operator=True, label="used")  # type: ignore[arg-type]
    cookie = sessions.cookie_value(used)
    clock.now += IDLE_SECONDS - 1
    assert sessions.find(cookie) is used
    assert len(sessions) == 2
    clock.now += SWEEP_SECONDS
    assert sessions.find(cookie) is used  # the sweep drops the one never seen again
    assert len(sessions) == 1
    await asyncio.gather(*sessions.closing)
    assert (gone.closed, kept.closed) == (True, False)
    clock.now += IDLE_SECONDS + 1
    assert sessions.find(cookie) is None
    assert len(sessions) == 0


async def test_a_session_ends_12_hours_after_its_sign_in_however_busy() -> None:
    clock = Clock()
    sessions = Sessions(clock=clock)
    client = Client()
    session = sessions.add(client, operator=True, label="busy")  # type: ignore[arg-type]
    cookie = sessions.cookie_value(session)
    while clock.now + 3600 <= 1000.0 + LIFETIME_SECONDS:
        clock.now += 3600
        assert sessions.find(cookie) is session
    clock.now = 1000.0 + LIFETIME_SECONDS + 1
    assert sessions.find(cookie) is None
    await asyncio.gather(*sessions.closing)
    assert (len(sessions), client.closed) == (0, True)


async def test_portal_a_session_ended_by_time_is_remembered_for_the_sign_in_page() -> None:
    """Why a session ended reaches the sign-in page when its cookie comes back: unused
    (``IDLE``), also when a sweep made for another session dropped it first; too old
    (``TOO_OLD``). A session signed out, or a cookie this portal did not sign, ended
    by no time: nothing is said."""
    clock = Clock()
    sessions = Sessions(clock=clock)
    idle = sessions.cookie_value(sessions.add(Client(), operator=True, label="a"))  # type: ignore[arg-type]
    other = sessions.cookie_value(sessions.add(Client(), operator=True, label="b"))  # type: ignore[arg-type]
    out = sessions.add(Client(), operator=True, label="c")  # type: ignore[arg-type]
    await sessions.end(out)
    clock.now += IDLE_SECONDS + 1
    assert sessions.find(other) is None  # its find sweeps: "a" is dropped unseen
    assert len(sessions) == 0
    assert (sessions.ended(idle), sessions.ended(other)) == (IDLE, IDLE)
    assert sessions.ended(sessions.cookie_value(out)) == ""
    assert sessions.ended(idle.split(".")[0] + ".forged") == ""
    old = sessions.add(Client(), operator=True, label="d")  # type: ignore[arg-type]
    for _ in range(12):
        clock.now += 3600
        assert sessions.find(sessions.cookie_value(old)) is old
    clock.now += 1
    assert sessions.ended(sessions.cookie_value(old)) == TOO_OLD
    await asyncio.gather(*sessions.closing)
