"""A server that serves its metrics, on every store (``database``, tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.licensing_desk import Desk
from tests.support import ServerThread, running


@pytest.fixture
def metered(database: Path | str) -> Iterator[ServerThread]:
    """A server with ``--metrics-listen 127.0.0.1:0`` (test clock at T0)."""
    with running(database, metrics_listen="127.0.0.1:0") as srv:
        yield srv


@pytest.fixture
def ops_desk(metered: ServerThread) -> Iterator[Desk]:
    """The rate sheet on the metered server."""
    d = Desk(metered.target).sheet()
    try:
        yield d
    finally:
        d.close()
