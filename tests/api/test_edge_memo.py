"""Issue 17: the edge scrubs a user id once and keeps what it logs for the users seen
lately, rather than scrubbing it on every heartbeat; what it keeps is the scrubbed text,
and the memo is emptied when full, so it never holds more than ``SHOWN_USERS`` ids."""

from __future__ import annotations

from typing import Any, cast

import pytest

from server.api import interceptors
from server.api.interceptors import EdgeInterceptor

TOKEN = "tsa_operator-token-for-this-test"


def an_edge() -> EdgeInterceptor:
    return EdgeInterceptor(TOKEN, lambda secret: None, lookup=cast(Any, None))


def test_edge_memo_keeps_the_scrubbed_user_id() -> None:
    edge = an_edge()
    odd = "ann+tsu_" + "A" * 43 + "@example.com"  # a user key pasted into an address
    for _ in range(2):  # the first call scrubs, the second finds it kept
        shown = edge._shown_user(odd)
        assert shown is not None and "A" * 43 not in shown
        assert shown == edge._loggable(odd)
    assert edge._shown_user(TOKEN + "@example.com") == "\u2026@example.com"


def test_edge_memo_is_emptied_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interceptors, "SHOWN_USERS", 3)
    edge = an_edge()
    for n in range(7):
        assert edge._shown_user(f"user-{n}@example.com") == f"user-{n}@example.com"
        assert len(edge._shown) <= 3
