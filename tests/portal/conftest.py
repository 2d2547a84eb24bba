"""The portal's tests: a real server serving it (``--http-listen``), a world of two teams
on the test clock, and for the browser tests Playwright driving the system's Chromium.

Playwright's own browser download is never used: the browser is Debian's ``chromium``
(``/usr/bin/chromium``, or ``TESSERA_CHROMIUM``), which ``.ci/run`` installs. Without it the
browser tests are skipped with one line saying why, unless ``CI`` is set: there they must
run, so a browser that cannot start fails them.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.licensing_desk import Desk, at
from tests.support import ServerThread, running

ROOT = Path(__file__).resolve().parents[2]
#: Screenshots of every page (git-ignored): look at them after a change to the portal.
SHOTS = ROOT / "test-output" / "portal"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_skipped: list[str] = []


def chromium() -> str | None:
    """The system Chromium the browser tests drive, if there is one."""
    given = os.environ.get("TESSERA_CHROMIUM")
    if given:
        return given
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class World:
    """Teams ``alpha`` (10,000 tokens) and ``beta`` (200); in alpha: Ada (all products,
    active, with a live AutoCAD session), Bob (invited, AutoCAD), Carl (Revit); two days
    of use. The clock ends at 2026-01-03T09:00Z."""

    server: ServerThread
    desk: Desk
    session_id: str

    @property
    def target(self) -> str:
        return self.server.target

    @property
    def portal(self) -> str:
        assert self.server.server.portal is not None
        return self.server.server.portal.url

    def a(self, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.desk.a(method, body)


def _use(desk: Desk, user_id: str, product_id: str, start: str, end: str) -> None:
    desk.to(start)
    s = desk.entitle(user_id, product_id)
    desk.to(end)
    desk.release(user_id, s["session_id"])


def make_world(server: ServerThread) -> World:
    desk = Desk(server.target).sheet()
    desk.team("alpha", 10_000)
    desk.team("beta", 200)
    ada = desk.user("alpha", "ada")
    carl = desk.user("alpha", "carl", ["REVIT"])
    desk.a(
        "AssignUsers",
        {"team_id": "alpha", "users": ["Bob Builder <bob@example.com>"], "product_ids": ["ACAD"]},
    )
    desk.user("beta", "bea")
    _use(desk, ada, "ACAD", at(h=9), at(h=9, m=30))
    _use(desk, carl, "REVIT", at(h=10), at(h=10, m=20))
    _use(desk, ada, "REVIT", at(d=1, h=9), at(d=1, h=9, m=40))
    desk.to(at(d=2, h=8, m=58))
    live = desk.entitle(ada, "ACAD")
    desk.to(at(d=2, h=9))
    return World(server, desk, live["session_id"])


@pytest.fixture
def portal_server(database: Path | str) -> Iterator[ServerThread]:
    """A real server on the test clock serving the portal on a free loopback port."""
    with running(database, http_listen="127.0.0.1:0") as srv:
        yield srv


@pytest.fixture
def world(portal_server: ServerThread) -> Iterator[World]:
    w = make_world(portal_server)
    try:
        yield w
    finally:
        w.desk.close()


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium under Playwright, once per module: Playwright's sync API keeps an
    event loop of its own, which must be gone before the asyncio tests of other modules."""
    path = chromium()
    if path is None or not Path(path).exists():
        why = "no Chromium (apt-get install chromium, or set TESSERA_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the portal's browser tests cannot run: {why}")
        _skipped.append(why)
        pytest.skip(f"portal browser tests skipped: {why}")
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as pw:
        try:
            launched = pw.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        except Error as exc:
            why = f"{path} did not start: {str(exc).splitlines()[0]}"
            if os.environ.get("CI"):
                pytest.fail(f"CI is set but the portal's browser tests cannot run: {why}")
            _skipped.append(why)
            pytest.skip(f"portal browser tests skipped: {why}")
        try:
            yield launched
        finally:
            launched.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skipped:
        terminalreporter.write_line(f"portal browser tests skipped: {_skipped[0]}")
