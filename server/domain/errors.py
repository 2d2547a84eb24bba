"""Every refusal the rules define, as one exception tree.

    DomainError                      root; carries ``reason`` and ``metadata``
    ├── InvalidArgument              bad fields (``violations``: field -> message)
    ├── FailedPrecondition
    │   ├── InsufficientTokens       INSUFFICIENT_TOKENS (available, daily_rate)
    │   ├── RunningElsewhere         RUNNING_ELSEWHERE (device_id)
    │   ├── DeviceLimit              DEVICE_LIMIT (limit)
    │   ├── UnsupportedPlatform      UNSUPPORTED_PLATFORM
    │   ├── UnsupportedVersion       UNSUPPORTED_VERSION
    │   ├── HostSessionRequired      HOST_SESSION_REQUIRED
    │   ├── IdleNotSupported         IDLE_NOT_SUPPORTED
    │   ├── InvitationPending        INVITATION_PENDING
    │   ├── InvitationExpired        INVITATION_EXPIRED
    │   ├── PackHasHolds             PACK_HAS_HOLDS
    │   ├── DeviceInUse              DEVICE_IN_USE (device_id, live_sessions)
    │   ├── ProductInUse             PRODUCT_IN_USE (product_id, live_sessions)
    │   └── TestClockDisabled        TEST_CLOCK_DISABLED
    ├── SessionLimit                 SESSION_LIMIT (session_limit, product_id)
    ├── NotAssigned                  NOT_ASSIGNED
    ├── NotTeamAdmin                 NOT_TEAM_ADMIN (team_id, method; user_id, device_id)
    ├── OperatorOnly                 OPERATOR_ONLY (method, field)
    ├── NotFound                     UNKNOWN_* (one subclass per kind)
    └── AlreadyExists                ALREADY_EXISTS

The domain raises these and knows nothing of gRPC: the table that turns a
class into a status code lives at the API edge (``server/api/errors.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T")


class DomainError(Exception):
    reason: str = "INTERNAL"

    def __init__(self, message: str, **metadata: object) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = {k: str(v) for k, v in metadata.items()}


class InvalidArgument(DomainError):
    """One or more fields are malformed; ``violations`` maps field to message."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Mapping[str, str]) -> None:
        self.violations = dict(violations)
        text = "; ".join(f"{field}: {msg}" for field, msg in self.violations.items())
        super().__init__(text or "invalid argument")

    @classmethod
    def field(cls, field: str, message: str) -> InvalidArgument:
        return cls({field: message})


class Problems(dict[str, str]):
    """Bad fields gathered, so that one ``InvalidArgument`` names each of them
    (AIP-193) instead of the first a call happens to check."""

    def check(self, run: Callable[[], T]) -> T | None:
        """``run()``, or None with its bad fields kept (the first word on each)."""
        try:
            return run()
        except InvalidArgument as exc:
            for name, message in exc.violations.items():
                self.setdefault(name, message)
            return None

    def raise_any(self) -> None:
        if self:
            raise InvalidArgument(self)


class FailedPrecondition(DomainError):
    pass


class InsufficientTokens(FailedPrecondition):
    reason = "INSUFFICIENT_TOKENS"

    def __init__(self, team_id: str, available: int, daily_rate: int) -> None:
        super().__init__(
            f"team {team_id!r} has {available} tokens available; the daily rate is {daily_rate}",
            team_id=team_id,
            available=available,
            daily_rate=daily_rate,
        )
        self.team_id = team_id
        self.available = available
        self.daily_rate = daily_rate


class RunningElsewhere(FailedPrecondition):
    reason = "RUNNING_ELSEWHERE"

    def __init__(self, product_id: str, device_id: str) -> None:
        super().__init__(
            f"{product_id} is running on device {device_id!r}; set takeover to move it here",
            product_id=product_id,
            device_id=device_id,
        )


class DeviceLimit(FailedPrecondition):
    reason = "DEVICE_LIMIT"

    def __init__(self, product_id: str, limit: int) -> None:
        super().__init__(
            f"{product_id} is already registered on {limit} device{'' if limit == 1 else 's'}; "
            "an administrator must remove one",
            product_id=product_id,
            limit=limit,
        )


class UnsupportedPlatform(FailedPrecondition):
    reason = "UNSUPPORTED_PLATFORM"


class UnsupportedVersion(FailedPrecondition):
    reason = "UNSUPPORTED_VERSION"


class HostSessionRequired(FailedPrecondition):
    reason = "HOST_SESSION_REQUIRED"


class IdleNotSupported(FailedPrecondition):
    reason = "IDLE_NOT_SUPPORTED"


class InvitationPending(FailedPrecondition):
    reason = "INVITATION_PENDING"


class InvitationExpired(FailedPrecondition):
    reason = "INVITATION_EXPIRED"


class PackHasHolds(FailedPrecondition):
    reason = "PACK_HAS_HOLDS"


class PackMoved(FailedPrecondition):
    """MoveTokenPack naming the team the pack was in (``from_team_id``) after it was
    moved elsewhere: the administrator's page was older than the pack's move."""

    reason = "PACK_MOVED"


class DeviceInUse(FailedPrecondition):
    """RemoveDevice on a device where sessions run, without ``end_sessions``."""

    reason = "DEVICE_IN_USE"

    def __init__(self, device_id: str, live_sessions: int) -> None:
        super().__init__(
            f"device {device_id!r} has {live_sessions} live session(s); "
            "set end_sessions to end them and remove the device",
            device_id=device_id,
            live_sessions=live_sessions,
        )


class ProductInUse(FailedPrecondition):
    """P1/P4: a product's kind or a plugin's host changed while sessions of it run."""

    reason = "PRODUCT_IN_USE"

    def __init__(self, product_id: str, live_sessions: int) -> None:
        super().__init__(
            f"product {product_id!r} has {live_sessions} live session(s): its kind and "
            "host product can change once none runs (end them with EndSession, or wait)",
            product_id=product_id,
            live_sessions=live_sessions,
        )


class TestClockDisabled(FailedPrecondition):
    __test__ = False  # not a pytest class
    reason = "TEST_CLOCK_DISABLED"


class SessionLimit(DomainError):
    """M13: the user already holds the most live sessions of a product allowed."""

    reason = "SESSION_LIMIT"

    def __init__(self, product_id: str, limit: int) -> None:
        super().__init__(
            f"you already hold {limit} live sessions of {product_id}, the most allowed; "
            "release one first",
            session_limit=limit,
            product_id=product_id,
        )


class NotAssigned(DomainError):
    reason = "NOT_ASSIGNED"


class NotTeamAdmin(DomainError):
    """AD1: a team administrator's call names a team its key does not manage. A call
    about a user (their devices) names no team: the refusal names none either, so
    that a key learns nothing of the user's teams it does not manage (AD1, AD4:
    within the teams it may see)."""

    reason = "NOT_TEAM_ADMIN"

    def __init__(
        self,
        method: str,
        team_id: str,
        user_id: str = "",
        device_id: str = "",
        session_id: str = "",
        plugin: bool = False,
        found: tuple[str, str] | None = None,
    ) -> None:
        if found is not None:  # (field, id): what the call names is another team's
            field, value = found
            super().__init__(
                f"{method}: {field.removesuffix('_id').replace('_', ' ')} {value!r} is of a "
                "team this admin key does not manage",
                method=method,
                **{field: value},
            )
            return
        if plugin and not session_id:  # taking products away would end such a session
            whose = f"user {user_id!r}" if user_id else "a member"
            super().__init__(
                f"{method}: {whose} runs a plugin of a team this admin key does not manage "
                "on a session this change would end: ending it is that team's",
                method=method,
                **({"user_id": user_id} if user_id else {}),
            )
            return
        if session_id:  # the key manages the session's team, not one of its plugins'
            super().__init__(
                f"{method}: session {session_id!r} has a plugin running in a team this "
                "admin key does not manage: ending it is that team's",
                method=method,
                session_id=session_id,
            )
            return
        if device_id:  # the key manages one of the user's teams, not the session's
            super().__init__(
                f"{method}: device {device_id!r} of user {user_id!r} runs a session of a "
                "team this admin key does not manage: ending it is that team's",
                method=method,
                user_id=user_id,
                device_id=device_id,
            )
            return
        if user_id:  # a call about a user (their devices): one of their teams is enough
            super().__init__(
                f"{method}: this admin key manages none of the teams of user {user_id!r}",
                method=method,
                user_id=user_id,
            )
            return
        super().__init__(
            f"{method}: this admin key does not manage team {team_id!r}",
            method=method,
            team_id=team_id,
        )


class OperatorOnly(DomainError):
    """AD1: what belongs to the whole deployment, called with a team administrator's key."""

    reason = "OPERATOR_ONLY"

    def __init__(self, method: str, field: str = "") -> None:
        what = (
            f"{method}'s field {field!r} is the operator's: a team administrator's key cannot set it"
            if field
            else f"{method} is the operator's: a team administrator's key cannot call it"
        )
        super().__init__(
            what,
            method=method,
            **({"field": field} if field else {}),
        )


class NotFound(DomainError):
    reason = "NOT_FOUND"


class UnknownProduct(NotFound):
    reason = "UNKNOWN_PRODUCT"


class UnknownTeam(NotFound):
    reason = "UNKNOWN_TEAM"


class UnknownUser(NotFound):
    reason = "UNKNOWN_USER"


class UnknownSession(NotFound):
    reason = "UNKNOWN_SESSION"


class UnknownPack(NotFound):
    reason = "UNKNOWN_PACK"


class UnknownInvitation(NotFound):
    reason = "UNKNOWN_INVITATION"


class UnknownAdminKey(NotFound):
    reason = "UNKNOWN_ADMIN_KEY"


class UnknownSubscription(NotFound):
    reason = "UNKNOWN_SUBSCRIPTION"


class AlreadyExists(DomainError):
    reason = "ALREADY_EXISTS"
