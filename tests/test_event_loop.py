"""The event loop the server runs on (``--event-loop``, server/loops.py): uvloop
by default, asyncio's own when asked, and a clear refusal where uvloop is
missing. The rest of the suite runs on uvloop, as the server does
(``tests/conftest.py``'s ``pytest_asyncio_loop_factories``; ``ServerThread``)."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from server import loops
from server.config import parse_args
from tests.grpcurl import Grpcurl
from tests.support import ADMIN_TOKEN, ServerProcess

A = "tessera.v1.AdminService/"


@pytest.mark.parametrize(
    ("flag", "loop"), [([], "uvloop"), (["--event-loop", "asyncio"], "asyncio")]
)
def test_the_server_serves_on_the_loop_it_is_given(
    tmp_path: Path, flag: list[str], loop: str
) -> None:
    server = ServerProcess(tmp_path / "tessera.db", extra=flag).start()
    try:
        (serving,) = (line for line in server.lines if line.get("event") == "serving")
        assert serving["event_loop"] == loop
        c = Grpcurl(server.target, ADMIN_TOKEN)
        assert c(A + "GetServerInfo", {})["now"] == "2026-01-01T00:00:00Z"
        c.close()
    finally:
        assert server.terminate() == 0  # SIGTERM still stops it cleanly on either loop


async def test_the_suites_own_loops_are_the_servers() -> None:
    assert loops.name_of(asyncio.get_running_loop()) == "uvloop" == parse_args([]).event_loop


def test_without_uvloop_the_default_is_refused_in_one_line_saying_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    with pytest.raises(loops.LoopUnavailable, match="--event-loop asyncio"):
        loops.loop_factory("uvloop")
    assert loops.loop_factory("asyncio") is asyncio.new_event_loop
