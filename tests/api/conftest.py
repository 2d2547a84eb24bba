"""The licensing desk the wire tests drive (``tests/licensing_desk.py``), on the
``server`` fixture of ``tests/conftest.py`` (so on every store)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.licensing_desk import Desk
from tests.support import ServerThread


@pytest.fixture
def sheet_desk(server: ServerThread) -> Iterator[Desk]:
    """A desk on the server with the rate sheet and no team."""
    d = Desk(server.target).sheet()
    try:
        yield d
    finally:
        d.close()


@pytest.fixture
def desk(sheet_desk: Desk) -> Desk:
    """The rate sheet and team ``alpha`` with 100 tokens."""
    sheet_desk.team("alpha", 100)
    return sheet_desk
