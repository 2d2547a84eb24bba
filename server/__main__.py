"""``python -m server`` / ``tessera-server``: run the license server, or an
operator tool (``verify``, ``backup``: see ``server/tools.py``)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from server import app, logs
from server.config import parse_args

TOOLS = ("verify", "backup", "rotate-signing-key")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in TOOLS:
        from server import tools

        return tools.main(args)
    config = parse_args(args)
    logs.configure(config.log_format, config.log_level)
    try:
        return asyncio.run(app.run(config))
    except OSError as exc:
        print(f"tessera-server: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
