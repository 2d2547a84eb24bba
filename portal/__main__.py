"""``python -m portal --server HOST:PORT --listen 127.0.0.1:8080``: the administrators'
web portal on its own, for any Tessera server (``python -m server --http-listen`` serves
the same portal inside the server)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from client_sdk.transport import TLS
from portal.serve import PortalServer, split


def _address(text: str) -> str:
    split(text)
    return text


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m portal",
        description="The Tessera administrators' web portal. Sign in with an admin key or "
        "the operator's token; every page is AdminService calls with it.",
    )
    p.add_argument(
        "--server",
        type=_address,
        default="127.0.0.1:50051",
        metavar="HOST:PORT",
        help="the Tessera server's gRPC address [default: 127.0.0.1:50051]",
    )
    p.add_argument(
        "--listen",
        type=_address,
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="where the portal serves HTTP [default: 127.0.0.1:8080]",
    )
    p.add_argument(
        "--tls-ca",
        metavar="PEM",
        help="the server speaks TLS: verify it with this CA (default: plaintext)",
    )
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    tls: TLS | bool = TLS(root_ca=args.tls_ca) if args.tls_ca else False
    try:
        portal = PortalServer(args.server, args.listen, tls=tls)
    except OSError as exc:
        print(f"cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await portal.start()
    print(f"Tessera portal on {portal.url} for {args.server}", file=sys.stderr, flush=True)
    await stop.wait()
    await portal.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(parse(argv)))


if __name__ == "__main__":
    sys.exit(main())
