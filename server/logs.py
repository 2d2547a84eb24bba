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

While the server runs (``lines_per_turn``), the JSON lines written on its event
loop's thread go out once a turn of the loop, together (``LineWriter``): one
system call for the lines of every call that turn served, where structlog's
``BytesLogger`` makes one a line, and each one lets go of the GIL for the store's
thread to take (issue 17: 3 % of the server's loop in the Entitle+Release cycle).
Lines from other threads, and every line before and after, are written at once.
A line waits for no more than the turn it was written in; ``kill -9`` can lose
that turn's lines, never a token (the store is not the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, BinaryIO

import orjson
import structlog

from server.api.errors import scrub
from server.clock import wall_clock


def configure(
    fmt: str = "auto",
    level: str = "info",
    process: str = "",
    sink: Callable[[str | bytes], None] | None = None,
) -> None:
    """``process``: a name every line carries (``"process": "front"``), for a process
    whose lines go to the same output as the server's (``server/front.py``);
    ``sink``: where its lines go instead of stdout or stderr (the front hands them
    to the server, which writes them as its own: ``write_line``)."""
    global _out
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        merge_call_context,
        structlog.processors.add_log_level,
    ]
    if process:
        shared.append(_naming(process))
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
        out: Any = _ConsoleLogger(sys.stderr)
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
        out = LineWriter.of(sys.stdout.buffer)
    _out = out
    if sink is not None:
        out = _SinkLogger(sink)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(level.upper()) if isinstance(level, str) else level
        ),
        logger_factory=lambda *args: out,
        cache_logger_on_first_use=True,
    )
    _take_stdlib_lines()


class _Forwarded(logging.Handler):
    """The lines the libraries write through the standard library's ``logging``
    (uvicorn's ``Invalid HTTP request received.``, asyncio's ``Task exception was never
    retrieved``, the SDK's inside the portal), warnings and worse, as lines of this
    process like its own: the same format, scrubber and output, with ``logger``
    naming where they come from. Without it they went to stderr bare, or nowhere."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format string: its text as given
            message = str(record.msg)
        fields: dict[str, Any] = {"logger": record.name}
        if record.exc_info:
            fields["exc_info"] = record.exc_info
        # A level of the library's own (35, "NOTICE") as the standard one below it:
        # structlog knows those alone, and a log call must never raise into its caller.
        levels = (logging.CRITICAL, logging.ERROR)
        level = next((n for n in levels if record.levelno >= n), logging.WARNING)
        try:
            _stdlib_log.log(level, message, **fields)
        except Exception:
            self.handleError(record)


_stdlib_log = structlog.get_logger()


def _take_stdlib_lines() -> None:
    """Route the standard library's warnings and errors through ``_Forwarded`` (once,
    however many times ``configure`` is called)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _Forwarded):
            root.removeHandler(handler)
    root.addHandler(_Forwarded(logging.WARNING))
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)


#: Where ``configure`` sends this process's own lines: stderr's or stdout's writer.
_out: Any = None


def write_line(line: str | bytes) -> None:
    """Write a line another process rendered (the front's, with the same format) as
    this process writes its own."""
    out = _out if _out is not None else LineWriter.of(sys.stdout.buffer)
    if isinstance(out, _ConsoleLogger):
        out.msg(line.decode() if isinstance(line, bytes) else line)
    else:
        out.msg(line.encode() if isinstance(line, str) else line)


class _SinkLogger:
    """A structlog logger that hands each rendered line to a function."""

    def __init__(self, sink: Callable[[str | bytes], None]) -> None:
        self.msg = sink

    def __getattr__(self, name: str) -> Callable[[str | bytes], None]:
        return self.msg  # log, info, warning, error...


def _naming(process: str) -> structlog.typing.Processor:
    def name(_: object, __: str, event_dict: structlog.typing.EventDict) -> Any:
        event_dict["process"] = process
        return event_dict

    return name


class _ConsoleLogger(structlog.PrintLogger):
    """structlog's ``PrintLogger``, which drops a line its terminal can no longer take
    (closed: EIO; a pipe's reader gone: EPIPE), as ``LineWriter`` does."""

    def msg(self, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().msg(message)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class LineWriter:
    """structlog's ``BytesLogger`` (one line a call of ``msg``), which writes the
    lines of a turn of an attached event loop together at the turn's end (see the
    module's docstring). One writer a file."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._lock = threading.Lock()
        self._lines: list[bytes] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None  # the attached loop's

    @classmethod
    def of(cls, file: BinaryIO) -> LineWriter:
        """The one writer of ``file``."""
        writer = _writers.get(file)
        if writer is None:
            writer = _writers[file] = cls(file)
        return writer

    def msg(self, message: bytes) -> None:
        loop = self._loop
        if loop is not None and threading.get_ident() == self._thread and not loop.is_closed():
            if not self._lines:
                loop.call_soon(self.flush)
            self._lines.append(message)
            return
        self._write(message + b"\n")

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def flush(self) -> None:
        """Write the lines waiting for the end of the turn."""
        lines, self._lines = self._lines, []
        if lines:
            lines.append(b"")
            self._write(b"\n".join(lines))

    def _write(self, data: bytes) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):
            # Gone (a closed terminal: EIO; a reader that left: EPIPE; closed): the
            # line is lost, the server is not (a log line is never worth a call).
            self._file.write(data)
            self._file.flush()

    def attach(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Lines written on ``loop``'s thread wait for the end of its turn (None:
        none wait; those waiting are written now)."""
        self.flush()
        self._loop, self._thread = loop, threading.get_ident() if loop is not None else None


_writers: dict[BinaryIO, LineWriter] = {}  # by their file


@contextlib.asynccontextmanager
async def lines_per_turn() -> AsyncIterator[None]:
    """While inside, the JSON lines written on this event loop's thread go out
    once a turn (``LineWriter``); all of them are out when it ends."""
    writers = list(_writers.values())
    loop = asyncio.get_running_loop()
    for writer in writers:
        writer.attach(loop)
    try:
        yield
    finally:
        for writer in writers:
            writer.attach(None)


def stamp_now(
    logger: structlog.typing.WrappedLogger, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """The line's ``timestamp``: now on the wall clock (a log line tells when it was
    written, whatever the test clock says), in UTC, as a datetime for orjson to write."""
    event["timestamp"] = wall_clock()
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
