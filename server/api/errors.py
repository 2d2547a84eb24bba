"""The one table from domain errors to gRPC status (API.md "Errors").

Every refusal leaves as a status whose details hold a ``google.rpc.ErrorInfo``
(domain ``tessera``, the reason word, metadata with the figures) and, for bad
fields, a ``google.rpc.BadRequest`` naming each field (AIP-193). Anything that
is not a ``DomainError`` is ``INTERNAL`` with no internals shown.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.domain import errors as e

DOMAIN = "tessera"


class Unauthenticated(e.DomainError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(e.DomainError):
    reason = "PERMISSION_DENIED"


class Unimplemented(e.DomainError):
    reason = "UNIMPLEMENTED"


class ResourceExhausted(e.DomainError):
    """A credential's rate limit: ``retry_after_seconds`` goes out as RetryInfo."""

    reason = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after_seconds: float, **metadata: object) -> None:
        super().__init__(message, retry_after_seconds=f"{retry_after_seconds:.3f}", **metadata)
        self.retry_after = retry_after_seconds


STATUS_CODES: dict[type[e.DomainError], grpc.StatusCode] = {
    e.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    e.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    e.NotAssigned: grpc.StatusCode.PERMISSION_DENIED,
    e.NotFound: grpc.StatusCode.NOT_FOUND,
    e.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_code_for(exc: e.DomainError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        code = STATUS_CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def _pack(msg: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(msg)  # type: ignore[arg-type]
    return packed


def to_status(exc: e.DomainError) -> grpc.Status:
    code = status_code_for(exc)
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN, metadata=exc.metadata))
    ]
    if isinstance(exc, e.InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                        for f, d in exc.violations.items()
                    ]
                )
            )
        )
    if isinstance(exc, ResourceExhausted):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(exc.retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=code.value[0], message=exc.message, details=details)
    return rpc_status.to_status(status)


def internal_status() -> grpc.Status:
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message="internal error; the server logged the details",
        details=[_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN))],
    )
    return rpc_status.to_status(status)
