"""A grpcurl stand-in for tests: what grpcurl does, with the same libraries.

It reads the server's schema through server reflection
(grpcio-reflection's ``ProtoReflectionDescriptorDatabase``), builds each
request from JSON with protobuf's ``json_format``, calls the method by name
over a real channel, and returns the response as JSON (a dict). It imports
nothing from the project, so it sees only what a stranger's grpcurl would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


@dataclass
class GrpcurlError(Exception):
    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str]
    field_violations: dict[str, str]

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"


class Grpcurl:
    def __init__(self, target: str, token: str | None = None) -> None:
        self.channel = grpc.insecure_channel(target)
        self.db = ProtoReflectionDescriptorDatabase(self.channel)
        self.pool = descriptor_pool.DescriptorPool(self.db)
        self.token = token

    def close(self) -> None:
        self.channel.close()

    def services(self) -> list[str]:
        return list(self.db.get_services())

    def describe(self, symbol: str) -> Any:
        return self.pool.FindMethodByName(symbol)

    def __call__(
        self,
        method: str,
        body: dict[str, Any] | str | None = None,
        *,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """``method`` as grpcurl writes it: ``tessera.v1.AdminService/CreateTeam``."""
        service_name, _, method_name = method.partition("/")
        service = self.pool.FindServiceByName(service_name)
        mdesc = service.methods_by_name[method_name]
        req_cls = message_factory.GetMessageClass(mdesc.input_type)
        resp_cls = message_factory.GetMessageClass(mdesc.output_type)
        text = body if isinstance(body, str) else json.dumps(body or {})
        request = json_format.Parse(text, req_cls())
        call = self.channel.unary_unary(
            f"/{service_name}/{method_name}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=resp_cls.FromString,
        )
        secret = token if token is not None else self.token
        metadata = [("authorization", f"Bearer {secret}")] if secret else []
        try:
            response = call(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise _error(exc) from None
        return json_format.MessageToDict(response, preserving_proto_field_name=True)

    def every(self, method: str, body: dict[str, Any], field: str) -> list[dict[str, Any]]:
        """Every item of a paged list (AIP-158), following ``next_page_token``."""
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            page = self(method, {**body, "page_token": token})
            out.extend(page.get(field, []))
            token = page.get("next_page_token", "")
            if not token:
                return out


def _error(exc: grpc.RpcError) -> GrpcurlError:
    reason, metadata, violations = "", {}, {}
    for key, value in exc.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    assert info.domain == "tessera"
                    reason, metadata = info.reason, dict(info.metadata)
                elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    violations = {v.field: v.description for v in bad.field_violations}
    return GrpcurlError(exc.code(), exc.details() or "", reason, metadata, violations)  # type: ignore[attr-defined]
