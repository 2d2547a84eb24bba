"""``python -m server`` / ``tessera-server``: run the license server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from server import app, logs
from server.config import parse_args


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    logs.configure(config.log_format, config.log_level)
    try:
        return asyncio.run(app.run(config))
    except OSError as exc:
        print(f"tessera-server: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
