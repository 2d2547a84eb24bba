"""The one table from domain errors to gRPC status (API.md "Errors").

Every refusal leaves as a status whose details hold a ``google.rpc.ErrorInfo``
(domain ``tessera``, the reason word, metadata with the figures) and, for bad
fields, a ``google.rpc.BadRequest`` naming each field (AIP-193). Anything that
is not a ``DomainError`` is ``INTERNAL`` with no internals shown.
"""

from __future__ import annotations

import re

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.credentials import ADMIN_PREFIX, INVITATION_PREFIX, USER_KEY_PREFIX
from server.domain import errors as e
from server.store.port import ReadFailed

DOMAIN = "tessera"


class Unauthenticated(e.DomainError):
    reason = "UNAUTHENTICATED"


class PermissionDenied(e.DomainError):
    reason = "PERMISSION_DENIED"


class Unimplemented(e.DomainError):
    reason = "UNIMPLEMENTED"


class RetryLater(e.DomainError):
    """A refusal made before anything was done: ``retry_after_seconds`` goes out as
    RetryInfo, which tells a client to send the same request again then (the SDK
    does, even a change without a request id: nothing was done)."""

    def __init__(self, message: str, *, retry_after_seconds: float, **metadata: object) -> None:
        super().__init__(message, retry_after_seconds=f"{retry_after_seconds:.3f}", **metadata)
        self.retry_after = retry_after_seconds


class ResourceExhausted(RetryLater):
    """A credential's rate limit."""

    reason = "RATE_LIMITED"


class Overloaded(ResourceExhausted):
    """Too many calls under way in the server (``api/admission.py``): nothing was
    done, and RetryInfo says when to send the same request again."""

    reason = "OVERLOADED"


class NotServing(RetryLater):
    """The front process's answer while its server (the back) has not answered it for
    a while (``server/front.py``, ``SILENT``): the call was not handed over."""

    reason = "NOT_SERVING"


class NotLeader(e.DomainError):
    """This server is not the active one (RULES H1); ``leader`` names the active."""

    reason = "NOT_LEADER"


class Unavailable(e.DomainError):
    """The server is stopping because a write to its database failed (a server
    alone on its database, with no standby to step down to): the call's change is
    not known to be stored, so the client repeats it, with the same request id,
    once the server is back (API.md: like a lost connection)."""

    reason = "UNAVAILABLE"


STATUS_CODES: dict[type[e.DomainError], grpc.StatusCode] = {
    e.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    e.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    e.NotAssigned: grpc.StatusCode.PERMISSION_DENIED,
    e.NotTeamAdmin: grpc.StatusCode.PERMISSION_DENIED,
    e.OperatorOnly: grpc.StatusCode.PERMISSION_DENIED,
    e.NotFound: grpc.StatusCode.NOT_FOUND,
    e.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    e.SessionLimit: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotLeader: grpc.StatusCode.UNAVAILABLE,
    NotServing: grpc.StatusCode.UNAVAILABLE,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    ReadFailed: grpc.StatusCode.UNAVAILABLE,
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


# A status leaves in the trailers, and gRPC clients refuse trailers over 8 KiB
# (``grpc.max_metadata_size``) with an unexplained RESOURCE_EXHAUSTED: messages echo
# what the caller sent (an unknown id of 100 KB, hundreds of bad entries), so what is
# echoed is clipped to keep every refusal deliverable and readable.
MAX_MESSAGE_BYTES = 512
MAX_VALUE_BYTES = 160
MAX_VIOLATIONS = 8


# Anything shaped like one of Tessera's secrets, should a caller paste one into a
# field that an error repeats (a user key as a user id) or that the edge logs (a
# request id): kept out of every refusal and every log line. Secret-shaped: one of
# the prefixes and what follows, or a long run of URL-safe base64 mixing upper and
# lower case (a secret's random part without its prefix, 43 characters; hex request
# ids and UUIDs, which have no mixed case, stay readable).
_B64 = r"[A-Za-z0-9_\-]"
SECRET = re.compile(
    "(" + "|".join(map(re.escape, (USER_KEY_PREFIX, INVITATION_PREFIX, ADMIN_PREFIX))) + ")"
    rf"{_B64}{{8,}}"
    rf"|(?<!{_B64})(?={_B64}*[A-Z])(?={_B64}*[a-z]){_B64}{{32,}}"
)


_PREFIXES = (USER_KEY_PREFIX, INVITATION_PREFIX, ADMIN_PREFIX)  # each has "_" (a test says so)
# Searched apart: one pattern with both costs several times the two (0.2-0.3 us
# an id against 0.9-1.4 for a test per prefix and a translated copy, and several
# ids are on every log line).
_PREFIX = re.compile("|".join(map(re.escape, _PREFIXES)))
_RUN = re.compile(rf"{_B64}{{32}}")  # the shortest run of SECRET's second kind


def may_hold_secret(text: str) -> bool:
    """Whether ``scrub`` could find anything in ``text`` (no false "no"), far faster
    than looking: neither one of the prefixes (each has "_") nor a run of 32 in text
    of both cases (most of what a log line or a request holds: times, names, codes,
    e-mail addresses, hex request ids)."""
    if len(text) < 32 or text.islower() or text.isupper():  # no run, or none of both cases
        return "_" in text and _PREFIX.search(text) is not None
    return _PREFIX.search(text) is not None or _RUN.search(text) is not None


def scrub(text: str) -> str:
    """``text`` with every secret-shaped part cut to its prefix and an ellipsis
    (issue 17: only text that may hold one is searched, ~1.6 us each otherwise)."""
    if not may_hold_secret(text):
        return text
    return SECRET.sub("\\1\u2026", text)


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8, marked with an ellipsis."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", "ignore") + "…"


def to_status(exc: e.DomainError) -> grpc.Status:
    code = status_code_for(exc)
    metadata = {
        clip(k, MAX_VALUE_BYTES): clip(scrub(v), MAX_VALUE_BYTES) for k, v in exc.metadata.items()
    }
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN, metadata=metadata))
    ]
    message = exc.message
    if isinstance(exc, e.InvalidArgument):
        violations = list(exc.violations.items())
        if len(violations) > MAX_VIOLATIONS:
            shown = "; ".join(f"{f}: {d}" for f, d in violations[:MAX_VIOLATIONS])
            message = f"{len(violations)} invalid fields; the first {MAX_VIOLATIONS}: {shown}"
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=clip(f, MAX_VALUE_BYTES),
                            description=clip(scrub(d), MAX_VALUE_BYTES),
                        )
                        for f, d in violations[:MAX_VIOLATIONS]
                    ]
                )
            )
        )
    if isinstance(exc, RetryLater):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(exc.retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(
        code=code.value[0], message=clip(scrub(message), MAX_MESSAGE_BYTES), details=details
    )
    return rpc_status.to_status(status)


def internal_status() -> grpc.Status:
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message="internal error; the server logged the details",
        details=[_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN))],
    )
    return rpc_status.to_status(status)
