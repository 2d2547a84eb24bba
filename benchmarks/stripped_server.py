"""Tessera with parts of a Heartbeat taken away: where the floor is (issue 17).

``python -m benchmarks.stripped_server --strip LEVEL [server flags...]`` runs
``python -m server`` with one part of the Heartbeat path replaced, so that
h2load can measure what each part costs against the bare echo
(``python -m benchmarks.h2load_heartbeat --ladder`` runs every level):

- ``none``: Tessera as it is;
- ``signature``: answers carry the session but no signed lease (the edge, the
  engine's Heartbeat and the answer are all there; Entitle's answers too);
- ``engine``: the servicer answers the first answer it made, again (the edge:
  admission, credential, log binding, error handling; the request parsed and
  the answer serialized; no engine and no signature);
- ``edge``: the server's one interceptor hands gRPC a handler that answers the
  first answer's bytes (gRPC's routing through the interceptor, nothing else
  of Tessera: what the echo does, behind Tessera's interceptor).

For measuring only: every level but ``none`` answers wrongly on purpose.
"""

from __future__ import annotations

import sys
from typing import Any

import grpc

from server.__main__ import main as server_main
from server.api.licensing import LicensingServicer
from server.ha.gate import Gate
from server.leases import LeaseSigner

LEVELS = ("none", "signature", "engine", "edge")
HEARTBEAT = "/tessera.v1.LicensingService/Heartbeat"


def strip_signature() -> None:
    async def unsigned(
        self: LeaseSigner, out: Any, view: Any, now: Any, request_id: str = ""
    ) -> bool:
        return False  # as for an ended session: the answer carries no lease

    LeaseSigner.sign_into = unsigned  # type: ignore[method-assign]


def strip_engine() -> None:
    real = LicensingServicer.Heartbeat
    first: list[Any] = []

    async def heartbeat(self: LicensingServicer, request: Any, context: Any) -> Any:
        if not first:
            first.append(await real(self, request, context))
        return first[0]

    LicensingServicer.Heartbeat = heartbeat  # type: ignore[method-assign]


def strip_edge() -> None:
    real = Gate.intercept_service
    made: list[grpc.RpcMethodHandler[Any, Any]] = []

    async def intercept_service(self: Gate, continuation: Any, details: Any) -> Any:
        if details.method != HEARTBEAT or self.term is None:
            return await real(self, continuation, details)
        if not made:
            handler = await real(self, continuation, details)
            if handler is None:
                raise RuntimeError(f"no handler for {HEARTBEAT}")
            deserialize = handler.request_deserializer
            call = handler.unary_unary
            serialize = handler.response_serializer
            if deserialize is None or call is None or serialize is None:
                raise RuntimeError(f"{HEARTBEAT}'s handler is not unary-unary with (de)serializers")
            body: list[bytes] = []

            async def answer(request: bytes, context: Any) -> bytes:
                if not body:
                    parsed = deserialize(request)
                    reply = await call(parsed, context)
                    body.append(serialize(reply))
                return body[0]

            made.append(grpc.unary_unary_rpc_method_handler(answer))
        return made[0]

    Gate.intercept_service = intercept_service  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "--strip" or argv[1] not in LEVELS:
        print(f"usage: python -m benchmarks.stripped_server --strip {{{','.join(LEVELS)}}} ...")
        return 2
    strips = {"signature": strip_signature, "engine": strip_engine, "edge": strip_edge}
    if argv[1] in strips:
        strips[argv[1]]()
    return server_main(argv[2:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
