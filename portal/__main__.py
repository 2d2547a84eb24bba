"""``python -m portal --server HOST:PORT --listen 127.0.0.1:8080``: the administrators'
web portal on its own, for any Tessera server (``python -m server --http-listen`` serves
the same portal inside the server)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from client_sdk.transport import TLS, tls_problem

try:
    from portal.serve import PortalServer, split
except ModuleNotFoundError as missing:  # `pip install tessera` is the client SDK alone
    sys.exit(
        f"python -m portal: {missing.name} is not installed: the portal needs the "
        "'server' extra (pip install 'tessera[server]')"
    )


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
    p.add_argument(
        "--tls-cert",
        metavar="PEM",
        help="the server demands client certificates (--tls-client-ca): the portal's, "
        "signed by that CA (needs --tls-key and --tls-ca)",
    )
    p.add_argument("--tls-key", metavar="PEM", help="the portal's certificate's private key")
    args = p.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        p.error("--tls-cert and --tls-key go together")
    if args.tls_cert is not None and args.tls_ca is None:
        p.error("--tls-cert needs --tls-ca: a server that asks for certificates speaks TLS")
    return args


#: The portal's flag for each file of its TLS (what a refusal names).
TLS_FLAGS = {"root_ca": "--tls-ca", "client_cert": "--tls-cert", "client_key": "--tls-key"}


def tls_of(args: argparse.Namespace) -> TLS | bool:
    """How the portal reaches its server: plaintext, TLS, or mutual TLS."""
    if not args.tls_ca:
        return False
    return TLS(root_ca=args.tls_ca, client_cert=args.tls_cert, client_key=args.tls_key)


async def run(args: argparse.Namespace) -> int:
    tls = tls_of(args)
    problem = tls_problem(tls, TLS_FLAGS) if isinstance(tls, TLS) else None
    if problem:  # files it cannot use: said now, not at each sign-in
        print(f"python -m portal: {problem}", file=sys.stderr)
        return 2
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
