"""Every error the SDK raises, as one tree; ``grpc.RpcError`` never leaves the SDK.

    TesseraError                     root: code, reason, message, metadata
    ├── Unavailable                  no server could be reached (retries exhausted; targets);
    │                                also NOT_SERVING: its front had no answer from the server
    │                                (with RetryInfo: nothing was done, sent again)
    │   ├── DeadlineExceeded         ... or none answered in time (retries exhausted)
    │   └── NotLeader                NOT_LEADER: a standby answered (leader: the active's address)
    ├── Unauthenticated              missing or wrong user key
    ├── PermissionDenied
    │   └── NotAssigned              NOT_ASSIGNED: the user may not run this product
    ├── InvalidArgument              bad fields (``field_violations``: field -> message)
    ├── FailedPrecondition
    │   ├── InsufficientTokens       INSUFFICIENT_TOKENS (available, daily_rate, team_id)
    │   ├── RunningElsewhere         RUNNING_ELSEWHERE (device_id)
    │   ├── DeviceLimit              DEVICE_LIMIT (limit)
    │   ├── UnsupportedPlatform      UNSUPPORTED_PLATFORM
    │   ├── UnsupportedVersion       UNSUPPORTED_VERSION
    │   ├── HostSessionRequired      HOST_SESSION_REQUIRED
    │   ├── IdleNotSupported         IDLE_NOT_SUPPORTED
    │   ├── InvitationPending        INVITATION_PENDING
    │   └── InvitationExpired        INVITATION_EXPIRED
    ├── NotFound                     UNKNOWN_* (other kinds keep their reason)
    │   ├── UnknownProduct           UNKNOWN_PRODUCT
    │   └── UnknownSession           UNKNOWN_SESSION
    ├── AlreadyExists                ALREADY_EXISTS (e.g. a request_id reused for another request)
    ├── ResourceExhausted            RESOURCE_EXHAUSTED (a rate limit, with RetryInfo)
    │   ├── SessionLimit             SESSION_LIMIT (limit): too many live sessions of one product
    │   └── Overloaded               OVERLOADED: too many calls under way (with RetryInfo)
    ├── OutcomeUnknown               raised by the SDK: a change without request_id got no
    │                                answer that says whether it was made (not sent again; cause)
    ├── ClientClosed                 raised by the SDK: the client was closed (also under a call)
    ├── SessionEnded                 raised by the SDK: the session is over (reason)
    ├── LeaseInvalid                 raised by the SDK: a signed lease failed verification
    │   ├── UnknownSigningKey        ... signed by a key the SDK does not trust
    │   └── LeaseExpired             ... genuine, but over (``verify_lease``)
    └── ServerError                  INTERNAL, UNIMPLEMENTED and anything unforeseen

The class is chosen by the ``google.rpc.ErrorInfo`` reason the server sends
(``from_rpc_error``); a reason this SDK does not know falls back to the class
of its status code, so a newer server's refusals still land in the right
branch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from client_sdk.models import EndReason

DOMAIN = "tessera"


class TesseraError(Exception):
    """The root of every SDK error.

    ``code`` is the gRPC status code (``None`` for errors the SDK makes itself),
    ``reason`` the ``ErrorInfo`` reason word, ``metadata`` its figures.
    ``retry_after`` is the delay in seconds of a ``google.rpc.RetryInfo`` the server
    sent (``None`` without one): the call was not done, and the SDK sends the same
    request again after that delay, as long as its retry policy has attempts left.
    """

    default_reason = ""

    def __init__(
        self,
        message: str = "",
        *,
        code: grpc.StatusCode | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason if reason is not None else self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_after: float | None = None

    def __str__(self) -> str:
        head = self.reason or (self.code.name if self.code else type(self).__name__)
        return f"{head}: {self.message}" if self.message else head


class Unavailable(TesseraError):
    """No server could be reached, after every retry; ``targets`` are the addresses tried."""

    default_reason = "UNAVAILABLE"
    targets: tuple[str, ...] = ()


class DeadlineExceeded(Unavailable):
    """The server did not answer within the call deadline, after every retry."""

    default_reason = "DEADLINE_EXCEEDED"


class NotLeader(Unavailable):
    """A standby answered (RULES H1): it serves no call. ``leader`` is the address of the
    active server it knows of (``None`` when it knows none yet); the SDK goes there itself,
    so this reaches the caller only when every attempt met a standby."""

    default_reason = "NOT_LEADER"

    @property
    def leader(self) -> str | None:
        return self.metadata.get("leader") or None


class Unauthenticated(TesseraError):
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(TesseraError):
    default_reason = "PERMISSION_DENIED"


class NotAssigned(PermissionDenied):
    default_reason = "NOT_ASSIGNED"


class InvalidArgument(TesseraError):
    """Bad fields: ``field_violations`` maps each field to what is wrong with it."""

    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str = "",
        *,
        field_violations: Mapping[str, str] | None = None,
        **kw: object,
    ) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.field_violations: dict[str, str] = dict(field_violations or {})


class FailedPrecondition(TesseraError):
    default_reason = "FAILED_PRECONDITION"


def _int(metadata: Mapping[str, str], key: str) -> int | None:
    try:
        return int(metadata[key])
    except (KeyError, ValueError):
        return None


class InsufficientTokens(FailedPrecondition):
    """The team cannot pay the daily rate: ``available`` tokens against ``daily_rate``."""

    default_reason = "INSUFFICIENT_TOKENS"

    @property
    def available(self) -> int | None:
        return _int(self.metadata, "available")

    @property
    def daily_rate(self) -> int | None:
        return _int(self.metadata, "daily_rate")

    @property
    def team_id(self) -> str | None:
        return self.metadata.get("team_id")


class RunningElsewhere(FailedPrecondition):
    """The product runs on another device (``device_id``); entitle with takeover to move it."""

    default_reason = "RUNNING_ELSEWHERE"

    @property
    def device_id(self) -> str | None:
        return self.metadata.get("device_id")


class DeviceLimit(FailedPrecondition):
    """The product is registered on ``limit`` devices already."""

    default_reason = "DEVICE_LIMIT"

    @property
    def limit(self) -> int | None:
        return _int(self.metadata, "limit")


class UnsupportedPlatform(FailedPrecondition):
    default_reason = "UNSUPPORTED_PLATFORM"


class UnsupportedVersion(FailedPrecondition):
    default_reason = "UNSUPPORTED_VERSION"


class HostSessionRequired(FailedPrecondition):
    default_reason = "HOST_SESSION_REQUIRED"


class IdleNotSupported(FailedPrecondition):
    default_reason = "IDLE_NOT_SUPPORTED"


class InvitationPending(FailedPrecondition):
    default_reason = "INVITATION_PENDING"


class InvitationExpired(FailedPrecondition):
    default_reason = "INVITATION_EXPIRED"


class NotFound(TesseraError):
    default_reason = "NOT_FOUND"


class UnknownProduct(NotFound):
    default_reason = "UNKNOWN_PRODUCT"


class UnknownSession(NotFound):
    default_reason = "UNKNOWN_SESSION"


class AlreadyExists(TesseraError):
    """ALREADY_EXISTS: e.g. a ``request_id`` already used for a different Entitle."""

    default_reason = "ALREADY_EXISTS"


class ResourceExhausted(TesseraError):
    """RESOURCE_EXHAUSTED: a limit was reached (the server's rate limit, or a cap)."""


class Overloaded(ResourceExhausted):
    """The server had too many calls under way and did not do this one; the SDK repeats
    it (same request, same ``request_id``) after the server's ``retry_after``, and
    raises this only when its retry policy's attempts are spent."""

    default_reason = "OVERLOADED"


class SessionLimit(ResourceExhausted):
    """The user already holds ``limit`` live sessions of this product (RULES M13):
    release one first."""

    default_reason = "SESSION_LIMIT"

    @property
    def limit(self) -> int | None:
        return _int(self.metadata, "session_limit")


class OutcomeUnknown(TesseraError):
    """The SDK's own error: a change was sent, and no answer says whether the server made
    it (no answer in time, the connection lost under the call, the client closed under
    it). The request carries no ``request_id`` by which the server would recognise it sent
    again, so the SDK did not send it again: a second ``CreateAdminKey`` would make a
    second key, a second ``AcceptInvitation`` lose the first one's ``user_key``. Look
    (list, get) before repeating the change. ``cause`` is the failure met; ``code`` is
    its status code (``DEADLINE_EXCEEDED``...)."""

    default_reason = "OUTCOME_UNKNOWN"

    def __init__(self, message: str = "", *, cause: TesseraError | None = None) -> None:
        super().__init__(
            message,
            code=cause.code if cause is not None else None,
            metadata=cause.metadata if cause is not None else None,
        )
        self.cause = cause


class ClientClosed(TesseraError):
    """The SDK's own error: the client was closed, before the call or while it was under
    way (another task called ``close()``). A call of a closed client is never sent."""

    default_reason = "CLIENT_CLOSED"


class SessionEnded(TesseraError):
    """The SDK's own error: the session is over (``end_reason`` says why)."""

    default_reason = "SESSION_ENDED"

    def __init__(self, end_reason: EndReason, message: str = "") -> None:
        super().__init__(message or f"the session ended ({end_reason.name})")
        self.end_reason = end_reason


class LeaseInvalid(TesseraError):
    """The SDK's own error: a signed lease failed verification, so the SDK refuses it.

    ``reason`` says how: ``LEASE_MISSING`` (a live session came without one),
    ``LEASE_MALFORMED`` (not a lease), ``LEASE_BAD_SIGNATURE`` (forged or altered),
    ``LEASE_UNKNOWN_KEY`` (``UnknownSigningKey``), ``LEASE_MISMATCH`` (a genuine lease,
    but for another session, user, team, product or device than the one at hand),
    ``LEASE_EXPIRED`` (``LeaseExpired``). ``session_id`` is the session the lease came
    with, when there was one; ``key_id`` the key it names.
    """

    default_reason = "LEASE_INVALID"

    def __init__(
        self,
        message: str = "",
        *,
        reason: str | None = None,
        session_id: str = "",
        key_id: str = "",
    ) -> None:
        super().__init__(message, reason=reason)
        self.session_id = session_id
        self.key_id = key_id


class UnknownSigningKey(LeaseInvalid):
    """The lease names a signing key the SDK does not know (after fetching the keys again)."""

    default_reason = "LEASE_UNKNOWN_KEY"


class LeaseExpired(LeaseInvalid):
    """The lease is genuine but over: its ``lease_expire_time`` has passed."""

    default_reason = "LEASE_EXPIRED"


class ServerError(TesseraError):
    """INTERNAL, UNIMPLEMENTED or any status the SDK does not expect."""


BY_REASON: dict[str, type[TesseraError]] = {
    cls.default_reason: cls
    for cls in (
        NotAssigned,
        InsufficientTokens,
        RunningElsewhere,
        DeviceLimit,
        UnsupportedPlatform,
        UnsupportedVersion,
        HostSessionRequired,
        IdleNotSupported,
        InvitationPending,
        InvitationExpired,
        UnknownProduct,
        UnknownSession,
        SessionLimit,
        Overloaded,
        NotLeader,
    )
}

BY_CODE: dict[grpc.StatusCode, type[TesseraError]] = {
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.CANCELLED: Unavailable,  # the server's: it stopped before doing the call
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def from_status(
    code: grpc.StatusCode, message: str, status: status_pb2.Status | None
) -> TesseraError:
    """The typed error for a failed call: by ErrorInfo reason, else by status code."""
    reason: str | None = None
    metadata: dict[str, str] = {}
    violations: dict[str, str] = {}
    retry_after: float | None = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain in (DOMAIN, ""):
                reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            later = error_details_pb2.RetryInfo()
            detail.Unpack(later)
            retry_after = max(0.0, later.retry_delay.ToNanoseconds() / 1e9)
    cls = BY_REASON.get(reason or "") or BY_CODE.get(code, ServerError)
    if cls is InvalidArgument or violations:
        return InvalidArgument(
            message, code=code, reason=reason, metadata=metadata, field_violations=violations
        )
    error = cls(
        message, code=code, reason=reason or cls.default_reason or code.name, metadata=metadata
    )
    error.retry_after = retry_after
    return error


def from_rpc_error(exc: grpc.RpcError, status: status_pb2.Status | None = None) -> TesseraError:
    """Translate a failed call; ``status`` is the rich status when already read."""
    code = exc.code()
    message = exc.details() or ""
    if status is None:
        status = _status_from_trailers(exc)
    return from_status(code, message, status)


def _status_from_trailers(exc: grpc.RpcError) -> status_pb2.Status | None:
    # grpc's sync errors give (key, value) namedtuples, grpc.aio's a Metadata of tuples.
    trailers: Any = exc.trailing_metadata() or ()
    for key, value in trailers:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:  # a garbled detail must not hide the error itself
                return None
    return None
