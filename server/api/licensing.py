"""LicensingService: products and plugins ask here (sessions arrive with RULES §5)."""

from __future__ import annotations

from client_sdk.proto.tessera.v1 import licensing_service_pb2_grpc
from server.engine import Engine


class LicensingServicer(licensing_service_pb2_grpc.LicensingServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.e = engine
