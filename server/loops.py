"""The event loop the server runs on (``--event-loop``).

uvloop, libuv's loop for asyncio, is the default: grpc.aio, aiosqlite, asyncpg
and uvicorn all run on it unchanged (the test suite runs on it), and it spends
about an eighth less of the event loop's thread on a Heartbeat than asyncio's
own loop, so the server answers about an eighth more of them a second
(docs/performance.md, "Stop 19: the event loop"). ``asyncio`` is asyncio's own
loop, for a platform without uvloop (Windows) or to rule the loop out.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable

EVENT_LOOPS = ("uvloop", "asyncio")


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


def name_of(loop: asyncio.AbstractEventLoop) -> str:
    """The ``--event-loop`` name of a running loop: the package its class is from."""
    return type(loop).__module__.split(".")[0]
