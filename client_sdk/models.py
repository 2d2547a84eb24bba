"""The SDK's own view of the wire types: plain enums, a frozen ``Session`` and its ``Lease``,
and ``MyProduct`` (what the user may run).

Callers never need the generated protobuf classes; the message a ``Session``
was read from stays reachable as ``Session.raw`` for anyone who does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.protobuf import duration_pb2, timestamp_pb2

from tessera_api.tessera.v1 import common_pb2, licensing_service_pb2


class Platform(enum.IntEnum):
    UNSPECIFIED = common_pb2.PLATFORM_UNSPECIFIED
    WINDOWS = common_pb2.PLATFORM_WINDOWS
    MACOS = common_pb2.PLATFORM_MACOS
    LINUX = common_pb2.PLATFORM_LINUX

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``windows``, ``WINDOWS`` or ``PLATFORM_WINDOWS``."""
        name = text.strip().upper().removeprefix("PLATFORM_")
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"unknown platform {text!r}") from None


class SessionState(enum.IntEnum):
    UNSPECIFIED = common_pb2.SESSION_STATE_UNSPECIFIED
    ACTIVE = common_pb2.SESSION_STATE_ACTIVE
    IDLE = common_pb2.SESSION_STATE_IDLE
    ENDED = common_pb2.SESSION_STATE_ENDED


class EndReason(enum.IntEnum):
    UNSPECIFIED = common_pb2.END_REASON_UNSPECIFIED
    RELEASED = common_pb2.END_REASON_RELEASED
    LEASE_EXPIRED = common_pb2.END_REASON_LEASE_EXPIRED
    TAKEN_OVER = common_pb2.END_REASON_TAKEN_OVER
    INSUFFICIENT_TOKENS = common_pb2.END_REASON_INSUFFICIENT_TOKENS
    NOT_ASSIGNED = common_pb2.END_REASON_NOT_ASSIGNED
    HOST_ENDED = common_pb2.END_REASON_HOST_ENDED
    ENDED_BY_ADMIN = common_pb2.END_REASON_ENDED_BY_ADMIN
    #: The SDK's own (a server never sends it): a signed lease failed verification (forged,
    #: altered, for another session, or signed by a key the SDK does not trust), so the SDK
    #: ended the session. ``AsyncSessionHandle.error`` holds the ``LeaseInvalid``.
    LEASE_INVALID = 1000
    #: The SDK's own: the server refused the user's key (``UNAUTHENTICATED``) on a call for
    #: the running session, because a new key was issued for the user (``IssueUserKey``,
    #: which replaces the old one) or the key was revoked. Nothing of the session can be
    #: done with this key any more, so the SDK ended it; ``AsyncSessionHandle.error`` holds
    #: the ``Unauthenticated``. The product should ask the user for their current key (sign
    #: in again) and open a new client with it; the server may hold the session live until
    #: its lease ends, unless that client releases it (``release(session_id)``: a session
    #: belongs to its user, not to one key).
    KEY_REFUSED = 1001
    #: The SDK's own: the SDK ended the session on a Release the server did not confirm: it
    #: failed, or no answer came within the bound of leaving the session
    #: (``SessionOptions.release_timeout``) or of ``release(timeout=...)``. The server may
    #: still hold the session live (and its meter in use) until its lease ends (RULES M7),
    #: unless a later ``AsyncClient.release(session_id)`` reaches it (releasing twice is
    #: harmless, M10). ``AsyncSessionHandle.error`` holds the error.
    RELEASE_UNCONFIRMED = 1002
    #: The SDK's own: the server refused a Heartbeat or Idle of the running session
    #: ``NOT_FOUND`` (``UNKNOWN_SESSION``): it no longer knows the session (ended by an
    #: administrator and since forgotten, or the server was restored from a backup taken
    #: before the session began). There is nothing left to heartbeat or release, so the SDK
    #: ended it, sending nothing more for it; ``AsyncSessionHandle.error`` holds the
    #: ``UnknownSession``. The product should stop as for any other end (save the user's
    #: work) and, to go on, start a new session with Entitle (a new ``client.session(...)``):
    #: this one cannot be resumed.
    UNKNOWN_SESSION = 1003


class Coverage(enum.IntEnum):
    UNSPECIFIED = common_pb2.COVERAGE_UNSPECIFIED
    TOKENS = common_pb2.COVERAGE_TOKENS
    SUBSCRIPTION = common_pb2.COVERAGE_SUBSCRIPTION
    TRIAL = common_pb2.COVERAGE_TRIAL
    FREE = common_pb2.COVERAGE_FREE


class ProductKind(enum.IntEnum):
    UNSPECIFIED = common_pb2.PRODUCT_KIND_UNSPECIFIED
    PRODUCT = common_pb2.PRODUCT_KIND_PRODUCT
    PLUGIN = common_pb2.PRODUCT_KIND_PLUGIN


class Plan(enum.IntEnum):
    UNSPECIFIED = common_pb2.PLAN_UNSPECIFIED
    STANDARD = common_pb2.PLAN_STANDARD
    PREMIUM = common_pb2.PLAN_PREMIUM


class ChargeState(enum.IntEnum):
    UNSPECIFIED = common_pb2.CHARGE_STATE_UNSPECIFIED
    NONE = common_pb2.CHARGE_STATE_NONE
    GRACE = common_pb2.CHARGE_STATE_GRACE
    CHARGED = common_pb2.CHARGE_STATE_CHARGED


_E = TypeVar("_E", bound=enum.IntEnum)


def _enum(cls: type[_E], value: int) -> _E:
    """A value a newer server may send that this SDK does not know reads as UNSPECIFIED."""
    try:
        return cls(value)
    except ValueError:
        return cls(0)


def _time(msg: common_pb2.Session, name: str) -> datetime | None:
    if not msg.HasField(name):
        return None
    ts: timestamp_pb2.Timestamp = getattr(msg, name)
    return ts.ToDatetime(tzinfo=UTC)


@dataclass(frozen=True)
class Lease:
    """A signed lease the SDK verified: the server's promise that this user may run this
    product on this device until ``lease_expire_time`` (RULES M7).

    Times are the server's (UTC), as signed. ``span`` (``lease_expire_time - issue_time``)
    is what the SDK adds to its own clock, so that the two clocks need not agree.
    ``signed`` is the ``tessera.v1.SignedLease`` as bytes: a product may store it and, at
    its next start, check it again with no server (``client_sdk.verify_lease``).
    """

    session_id: str
    user_id: str
    team_id: str
    product_id: str
    device_id: str
    coverage: Coverage
    lease_expire_time: datetime
    issue_time: datetime
    #: On an Entitle's lease, that Entitle's request id ("" on a Heartbeat's).
    request_id: str
    key_id: str
    signed: bytes = field(repr=False)
    raw: common_pb2.Lease = field(repr=False, compare=False)

    @property
    def span(self) -> timedelta:
        """How long the lease runs from when it was issued (never negative)."""
        return max(timedelta(0), self.lease_expire_time - self.issue_time)

    def signed_lease(self) -> common_pb2.SignedLease:
        """``signed`` as the protobuf message."""
        return common_pb2.SignedLease.FromString(self.signed)


def _span(d: duration_pb2.Duration) -> timedelta:
    return d.ToTimedelta()


@dataclass(frozen=True)
class Session:
    """One running copy of a product on one device, as the server last described it.

    Times are the server's (UTC). ``lease_expire_time`` is when the server
    will expire the session without a heartbeat (RULES M7).
    """

    session_id: str
    user_id: str
    team_id: str
    product_id: str
    product_version: str
    platform: Platform
    device_id: str
    parent_session_id: str
    state: SessionState
    end_reason: EndReason
    coverage: Coverage
    plan: Plan
    daily_rate: int
    charge_state: ChargeState
    start_time: datetime | None
    end_time: datetime | None
    grace_end_time: datetime | None
    window_end_time: datetime | None
    lease_expire_time: datetime | None
    heartbeat_interval: timedelta | None
    team_available_tokens: int
    raw: common_pb2.Session = field(repr=False, compare=False)
    #: The verified signed lease that came with this answer (Entitle and Heartbeat of a
    #: live session); ``None`` for the others.
    lease: Lease | None = field(default=None, repr=False, compare=False)

    @property
    def active(self) -> bool:
        return self.state is SessionState.ACTIVE

    @property
    def idle(self) -> bool:
        return self.state is SessionState.IDLE

    @property
    def ended(self) -> bool:
        return self.state is SessionState.ENDED

    @classmethod
    def from_proto(cls, msg: common_pb2.Session) -> Session:
        return cls(
            session_id=msg.session_id,
            user_id=msg.user_id,
            team_id=msg.team_id,
            product_id=msg.product_id,
            product_version=msg.product_version,
            platform=_enum(Platform, msg.platform),
            device_id=msg.device_id,
            parent_session_id=msg.parent_session_id,
            state=_enum(SessionState, msg.state),
            end_reason=_enum(EndReason, msg.end_reason),
            coverage=_enum(Coverage, msg.coverage),
            plan=_enum(Plan, msg.plan),
            daily_rate=msg.daily_rate,
            charge_state=_enum(ChargeState, msg.charge_state),
            start_time=_time(msg, "start_time"),
            end_time=_time(msg, "end_time"),
            grace_end_time=_time(msg, "grace_end_time"),
            window_end_time=_time(msg, "window_end_time"),
            lease_expire_time=_time(msg, "lease_expire_time"),
            heartbeat_interval=(
                _span(msg.heartbeat_interval) if msg.HasField("heartbeat_interval") else None
            ),
            team_available_tokens=msg.team_available_tokens,
            raw=msg,
        )

    def ended_locally(self, reason: EndReason, at: datetime | None) -> Session:
        """This session marked ended by the SDK itself (e.g. its lease ran out offline)."""
        raw = common_pb2.Session()
        raw.CopyFrom(self.raw)
        raw.state = common_pb2.SESSION_STATE_ENDED
        raw.end_reason = int(reason)  # type: ignore[assignment]
        if at is not None:
            raw.end_time.FromDatetime(at)
        return replace(Session.from_proto(raw), lease=self.lease)


@dataclass(frozen=True)
class MyProduct:
    """A product the user may run now (RULES AD5: the guide's "View Items").

    ``team_ids`` are the teams whose assignment lets the user run it; ``coverage`` is
    what would pay an Entitle now (a subscription, a trial, tokens at ``daily_rate``
    per 24 hours, or nothing: ``FREE`` at rate 0).
    """

    product_id: str
    display_name: str
    kind: ProductKind
    host_product_id: str
    daily_rate: int
    team_ids: tuple[str, ...]
    coverage: Coverage
    raw: licensing_service_pb2.MyProduct = field(repr=False, compare=False)

    @property
    def plugin(self) -> bool:
        return self.kind is ProductKind.PLUGIN

    @classmethod
    def from_proto(cls, msg: licensing_service_pb2.MyProduct) -> MyProduct:
        return cls(
            product_id=msg.product_id,
            display_name=msg.display_name,
            kind=_enum(ProductKind, msg.kind),
            host_product_id=msg.host_product_id,
            daily_rate=msg.daily_rate,
            team_ids=tuple(msg.team_ids),
            coverage=_enum(Coverage, msg.coverage),
            raw=msg,
        )
