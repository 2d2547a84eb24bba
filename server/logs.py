"""structlog, configured once at start: JSON lines, or colours on a terminal."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog


def configure(fmt: str = "auto", level: str = "info") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor
    processors: list[structlog.typing.Processor]
    if fmt == "console":
        processors = [
            *shared,
            structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
        ]
        factory: structlog.typing.WrappedLogger = structlog.PrintLoggerFactory(sys.stderr)
    else:
        # No locals in tracebacks: they could hold secrets.
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        processors = [*shared, structlog.processors.format_exc_info, renderer]
        factory = structlog.BytesLoggerFactory(sys.stdout.buffer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(level.upper()) if isinstance(level, str) else level
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
