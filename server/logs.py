"""structlog, configured once at start: JSON lines, or colours on a terminal.

Every string of every line, a traceback included, passes through the scrubber that
keeps secrets out of error messages (``api/errors.scrub``) just before it is
rendered: the edge scrubs the fields a caller chose (``api/interceptors``), and this
catches a caller's value that reaches a line another way (an exception's message).

The call a line is written in (its method, request id, user or admin key) comes
from ``call_context``, which the edge sets once per call: one ContextVar set to a
tuple, where structlog's ``bind_contextvars`` sets a ContextVar per key (~0.5 us a
call, on every Heartbeat: issue 17). ``merge_call_context`` adds it to the lines
written in that call; ``bind_contextvars`` still works for anything else.

A JSON line's ``timestamp`` is the instant as a ``datetime``, written by orjson as
RFC 3339 in UTC with a ``Z`` (``2026-12-03T01:53:35.966039Z``, as structlog's
``TimeStamper(fmt="iso", utc=True)`` writes it): ~1 us less a line than formatting
it in Python first, and a datetime is no string for the scrubber to read (issue 17).
"""

from __future__ import annotations

import contextvars
import logging
import sys

import orjson
import structlog

from server.api.errors import scrub
from server.clock import SystemClock


def configure(fmt: str = "auto", level: str = "info") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        merge_call_context,
        structlog.processors.add_log_level,
    ]
    renderer: structlog.typing.Processor
    processors: list[structlog.typing.Processor]
    if fmt == "console":
        processors = [
            *shared,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,  # a string, so that it is scrubbed
            scrub_secrets,
            structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
        ]
        factory: structlog.typing.WrappedLogger = structlog.PrintLoggerFactory(sys.stderr)
    else:
        # No locals in tracebacks: they could hold secrets.
        renderer = structlog.processors.JSONRenderer(
            serializer=orjson.dumps, option=orjson.OPT_UTC_Z
        )
        processors = [
            *shared,
            stamp_now,
            structlog.processors.format_exc_info,
            scrub_secrets,
            renderer,
        ]
        factory = structlog.BytesLoggerFactory(sys.stdout.buffer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(level.upper()) if isinstance(level, str) else level
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


_wall_clock = SystemClock().now


def stamp_now(
    logger: structlog.typing.WrappedLogger, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """The line's ``timestamp``: now on the wall clock (a log line tells when it was
    written, whatever the test clock says), in UTC, as a datetime for orjson to write."""
    event["timestamp"] = _wall_clock()
    return event


def scrub_secrets(
    logger: structlog.typing.WrappedLogger, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Every string value of the line, scrubbed of anything secret-shaped."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = scrub(value)
    return event


#: The call being served, as (key, value) pairs for its log lines (set by the edge).
call_context: contextvars.ContextVar[tuple[tuple[str, object], ...]] = contextvars.ContextVar(
    "tessera_call", default=()
)


def merge_call_context(
    logger: structlog.typing.WrappedLogger, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """The call's method, request id and caller, on a line written in that call (a
    value the line gives itself wins)."""
    for key, value in call_context.get():
        event.setdefault(key, value)
    return event
