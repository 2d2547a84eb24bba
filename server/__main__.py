"""``python -m server`` / ``tessera-server``: run the license server, or an
operator tool (``verify``, ``backup``, ``rotate-signing-key``: see
``server/tools.py``)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

try:
    import structlog

    from server import app, logs
    from server.config import Config, parse_args
    from server.listen import StartRefused
    from server.loops import LoopUnavailable, loop_factory
    from server.tools import COMMANDS
except ModuleNotFoundError as missing:  # `pip install tessera` is the client SDK alone
    sys.exit(
        f"tessera-server: {missing.name} is not installed: the server needs the "
        "'server' extra (pip install 'tessera[server]')"
    )

log = structlog.get_logger()


def commands_help() -> str:
    """The tools, one line each, for the server's ``--help``."""
    lines = ["commands (python -m server COMMAND --help for a command's flags):"]
    lines += [f"  {name:<20} {help}" for name, help in COMMANDS.items()]
    return "\n".join(lines)


async def _serve(config: Config) -> int:
    async with logs.lines_per_turn():
        return await app.run(config)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        from server import tools

        return tools.main(args)
    config = parse_args(args, epilog=commands_help())
    logs.configure(config.log_format, config.log_level)
    try:
        with asyncio.Runner(loop_factory=loop_factory(config.event_loop)) as runner:
            return runner.run(_serve(config))
    except (OSError, LoopUnavailable, StartRefused) as exc:
        # One line, no traceback: what is wrong and what to do is in the message; the
        # log says it too, for a reader of the JSON lines alone (a log collector).
        log.error("stopped_on_error", error=str(exc), exit_code=1)
        print(f"tessera-server: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
