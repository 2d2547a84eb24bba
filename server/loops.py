"""The event loop the server runs on (``--event-loop``).

uvloop, libuv's loop for asyncio, is the default: grpc.aio, aiosqlite, asyncpg
and uvicorn all run on it unchanged (the test suite runs on it), and it spends
about an eighth less of the event loop's thread on a Heartbeat than asyncio's
own loop, so the server answers about an eighth more of them a second
(docs/performance-log.md, "Stop 19: the event loop"). ``asyncio`` is asyncio's own
loop, for a platform without uvloop (Windows) or to rule the loop out.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from typing import Any

EVENT_LOOPS = ("uvloop", "asyncio")
#: Objects ``let_go`` frees at once: a millisecond or two of the GIL.
LET_GO_AT_ONCE = 2_000


class LoopUnavailable(Exception):
    """The loop asked for cannot be had here; the message says what to do."""


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new loop of this kind, for ``asyncio.Runner(loop_factory=...)``."""
    if name == "asyncio":
        return asyncio.new_event_loop
    if name != "uvloop":
        raise ValueError(f"{name!r} is not one of {', '.join(EVENT_LOOPS)}")
    if importlib.util.find_spec("uvloop") is None:
        raise LoopUnavailable(
            "uvloop is not installed (it has no Windows build): install it, or start "
            "with --event-loop asyncio"
        )
    import uvloop

    return uvloop.new_event_loop


def let_go(*many: list[Any]) -> None:
    """Empty each list a slice at a time, on a thread doing a big read's work off the
    event loop, so that the objects they hold are freed there: freed at once (by the
    loop, or by one ``clear``), a year's report's million objects held the GIL, and
    with it the loop and every call, for a tenth of a second; between two slices the
    loop takes its turn."""
    for items in many:
        while items:
            del items[-LET_GO_AT_ONCE:]


def name_of(loop: asyncio.AbstractEventLoop) -> str:
    """The ``--event-loop`` name of a running loop: the package its class is from."""
    return type(loop).__module__.split(".")[0]
