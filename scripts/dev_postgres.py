"""A throwaway PostgreSQL for trying Tessera on it, with nothing installed by hand.

The dev dependency ``pgserver`` ships PostgreSQL in its wheel. This starts one
with its data in DIR (made at the first call, reused after), leaves it running
in the background, and prints its URL for ``--db``: a Unix socket, no TCP port,
trust authentication for local users. It is for a laptop and the README, not
for production (docs/postgres.md says what a deployment needs).

    python scripts/dev_postgres.py DIR          start it (or find it running) and print its URL
    python scripts/dev_postgres.py DIR --stop   stop it (fast shutdown); DIR stays, to start again

Run as root, ``pgserver`` runs PostgreSQL as its own user ``pgserver`` (PostgreSQL
refuses root), hands DIR to it and opens DIR's parent directories to others for
reading and listing (chmod o+rx), as it must for that user to reach DIR.
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys
import warnings
from pathlib import Path

with warnings.catch_warnings():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI) and falls
    # back to /tmp/runtime-<uid> for pgserver's lock file: fine here.
    warnings.simplefilter("ignore")
    import pgserver
    from pgserver.postgres_server import get_server
    from pgserver.utils import PostmasterInfo


def start(data: Path) -> str:
    """Start PostgreSQL in ``data`` unless it runs already; its URL."""
    data.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(data, cleanup_mode=None)  # None: left running at exit
    return server.get_uri()


def stop(data: Path) -> str:
    """Stop the PostgreSQL of ``data``, waiting until it has exited; what was done."""
    info = PostmasterInfo.read_from_pgdata(data)
    if info is None or not info.is_running():
        return f"no PostgreSQL runs in {data}"
    # pg_ctl, like postgres, runs as the data directory's owner (root may not)
    owner = pwd.getpwuid(data.stat().st_uid).pw_name if os.geteuid() == 0 else None
    pg_ctl = pgserver.pg_ctl  # type: ignore[attr-defined]  # made at import, one per program
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data, user=owner)
    return f"stopped the PostgreSQL in {data}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("dir", type=Path, help="the data directory (made at the first start)")
    p.add_argument("--stop", action="store_true", help="stop the PostgreSQL running in DIR")
    a = p.parse_args(argv)
    data = a.dir.resolve()  # postmaster.pid and pgserver's own records hold absolute paths
    if a.stop:
        print(stop(data))
    else:
        print(start(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
