"""Between protobuf messages and domain objects, both ways."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from server.domain.admins import AdminKey, AuditEvent
from server.domain.coverage import Subscription, SubscriptionKind
from server.domain.directory import (
    AccessVia,
    Invitation,
    InvitationState,
    Member,
    MemberState,
    Notification,
    NotificationKind,
    User,
)
from server.domain.errors import InvalidArgument
from server.domain.forecast import Forecast
from server.domain.instants import EPOCH
from server.domain.ledger import EntryKind, LedgerEntry, PackState, TokenPack
from server.domain.products import (
    DEFAULT_MIN_LINUX_VERSION,
    Platform,
    Product,
    ProductKind,
)
from server.domain.sessions import (
    ChargeState,
    Coverage,
    Device,
    EndReason,
    SessionState,
    SessionView,
)
from server.domain.teams import Plan, Team
from server.engine.usage import PackUsage, UsageRow
from tessera_api.tessera.v1 import common_pb2 as pb

# -- scalars ----------------------------------------------------------------


def ts(t: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp from integer arithmetic (a quarter of ``FromDatetime``'s cost,
    which counts: a Session carries up to six)."""
    if t is None:
        return None
    d = t - EPOCH  # a timedelta's parts are whole and normalized: days, seconds, microseconds
    return timestamp_pb2.Timestamp(seconds=d.days * 86_400 + d.seconds, nanos=d.microseconds * 1000)


_DURATIONS: dict[timedelta, duration_pb2.Duration] = {}


def dur(d: timedelta) -> duration_pb2.Duration:
    """A Duration; the few that answers repeat (the heartbeat interval) are made
    once (a message given to a constructor is copied, so sharing it is safe)."""
    out = _DURATIONS.get(d)
    if out is None:
        out = duration_pb2.Duration()
        out.FromTimedelta(d)
        if len(_DURATIONS) < 64:
            _DURATIONS[d] = out
    return out


MAX_DURATION_SECONDS = 315_576_000_000  # protobuf's range: +-10,000 years


def from_duration(msg: duration_pb2.Duration, field: str) -> float:
    """A Duration's seconds, refusing what protobuf says no Duration is: nanos
    beyond +-999,999,999, or of the other sign than seconds (-1 s +500 ms
    could mean -0.5 s or -1.5 s)."""
    seconds, nanos = msg.seconds, msg.nanos
    if abs(seconds) > MAX_DURATION_SECONDS:
        raise InvalidArgument.field(field, "must be within 10,000 years")
    if abs(nanos) > 999_999_999:
        raise InvalidArgument.field(field, "nanos must be from -999,999,999 to 999,999,999")
    if (seconds > 0 and nanos < 0) or (seconds < 0 and nanos > 0):
        raise InvalidArgument.field(
            field, "seconds and nanos must have the same sign (or nanos be 0)"
        )
    return seconds + nanos / 1e9


MIN_TIME = EPOCH
MAX_TIME = datetime(9999, 12, 31, tzinfo=UTC)


def from_ts(msg: timestamp_pb2.Timestamp, field: str) -> datetime:
    try:
        t = msg.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument.field(field, "is not a valid instant") from exc
    if not MIN_TIME <= t <= MAX_TIME:
        raise InvalidArgument.field(
            field, "must be from 1970-01-01T00:00:00Z to 9999-12-31T00:00:00Z"
        )
    return t


def instant_in(request: Any, field: str) -> datetime | None:
    """``request``'s Timestamp ``field`` (``from_ts``), or None when it is not set."""
    return from_ts(getattr(request, field), field) if request.HasField(field) else None


# -- enums ------------------------------------------------------------------

PLANS = {pb.PLAN_STANDARD: Plan.STANDARD, pb.PLAN_PREMIUM: Plan.PREMIUM}
PLANS_OUT = {v: k for k, v in PLANS.items()}
PLATFORMS = {
    pb.PLATFORM_WINDOWS: Platform.WINDOWS,
    pb.PLATFORM_MACOS: Platform.MACOS,
    pb.PLATFORM_LINUX: Platform.LINUX,
}
PLATFORMS_OUT = {v: k for k, v in PLATFORMS.items()}
KINDS = {pb.PRODUCT_KIND_PRODUCT: ProductKind.PRODUCT, pb.PRODUCT_KIND_PLUGIN: ProductKind.PLUGIN}
KINDS_OUT = {v: k for k, v in KINDS.items()}
PACK_STATES_OUT = {
    PackState.ACTIVE: pb.PACK_STATE_ACTIVE,
    PackState.DEPLETED: pb.PACK_STATE_DEPLETED,
    PackState.EXPIRED: pb.PACK_STATE_EXPIRED,
}
ENTRY_KINDS_OUT: dict[EntryKind, Any] = {
    k: pb.LedgerEntryKind.Value(f"LEDGER_ENTRY_KIND_{k.value}") for k in EntryKind
}


def plan_in(value: int, field: str = "plan", *, required: bool = False) -> Plan | None:
    if value == pb.PLAN_UNSPECIFIED and not required:
        return None
    plan: Plan | None = PLANS.get(value)  # type: ignore[call-overload]
    if plan is None:
        raise InvalidArgument.field(field, "must be PLAN_STANDARD or PLAN_PREMIUM")
    return plan


def platform_in(value: int, field: str = "platform") -> Platform:
    platform: Platform | None = PLATFORMS.get(value)  # type: ignore[call-overload]
    if platform is None:
        raise InvalidArgument.field(
            field, "must be PLATFORM_WINDOWS, PLATFORM_MACOS or PLATFORM_LINUX"
        )
    return platform


def notification_kinds_in(
    values: Iterable[int], field: str = "kinds"
) -> frozenset[NotificationKind]:
    """The kinds a ListNotifications asks for (none: every kind)."""
    wanted = {NOTIFICATION_KINDS_IN.get(v) for v in values}  # type: ignore[call-overload]
    if None in wanted:
        names = ", ".join(pb.NotificationKind.Name(k) for k in NOTIFICATION_KINDS_IN)
        raise InvalidArgument.field(field, f"each must be one of {names}")
    return frozenset(k for k in wanted if k is not None)


# -- messages ---------------------------------------------------------------


def forecast_out(f: Forecast) -> pb.TeamForecast:
    return pb.TeamForecast(
        daily_burn_tokens=f.daily_burn_tokens,
        depletion_time=ts(f.depletion_time),
        expiring_tokens_30d=f.expiring_tokens_30d,
    )


def team_out(team: Team, available: int, held: int, forecast: Forecast) -> pb.Team:
    return pb.Team(
        team_id=team.team_id,
        display_name=team.display_name,
        plan=PLANS_OUT[team.plan],
        guest_default_assignments=team.guest_default_assignments,
        default_product_ids=sorted(team.default_product_ids),
        available_tokens=available,
        held_tokens=held,
        create_time=ts(team.create_time),
        low_balance_threshold=team.low_balance_threshold,
        forecast=forecast_out(forecast),
    )


#: How a team a team administrator does not manage is named to it (AD1).
OTHER_TEAM = "(another team)"


def team_shown(team_id: str, managed: frozenset[str] | None) -> str:
    """``team_id`` as a caller managing ``managed`` may see it (None: the operator,
    every team): ``OTHER_TEAM`` for a team not one of them (AD1); none stays none."""
    return team_id if managed is None or not team_id or team_id in managed else OTHER_TEAM


def pack_out(p: TokenPack, managed: frozenset[str] | None = None) -> pb.TokenPack:
    """``managed``: a team administrator's teams. A pack now of a team not one of them
    (a purchase of its own, retried after the operator moved the pack, T1/T5) is
    said only as bought: its team ``OTHER_TEAM``, none of that team's figures (AD1)."""
    if (shown := team_shown(p.team_id, managed)) != p.team_id:
        return pb.TokenPack(
            pack_id=p.pack_id,
            team_id=shown,
            tokens=p.tokens,
            purchase_time=ts(p.purchase_time),
            expire_time=ts(p.expire_time),
            request_id=p.request_id,
        )
    return pb.TokenPack(
        pack_id=p.pack_id,
        team_id=p.team_id,
        tokens=p.tokens,
        remaining_tokens=p.remaining,
        held_tokens=p.held,
        consumed_tokens=p.consumed,
        expired_tokens=p.expired_tokens,
        purchase_time=ts(p.purchase_time),
        expire_time=ts(p.expire_time),
        state=PACK_STATES_OUT[p.state],
        request_id=p.request_id,
    )


def entry_out(e: LedgerEntry) -> pb.LedgerEntry:
    return pb.LedgerEntry(
        entry_id=e.entry_id,
        time=ts(e.time),
        kind=ENTRY_KINDS_OUT[e.kind],
        pack_id=e.pack_id,
        amount=e.amount,
        session_id=e.cause.session_id,
        user_id=e.cause.user_id,
        product_id=e.cause.product_id,
        team_id=e.team_id,
        remaining_delta=e.remaining_delta,
        held_delta=e.held_delta,
    )


def product_out(p: Product) -> pb.Product:
    return pb.Product(
        product_id=p.product_id,
        display_name=p.display_name,
        daily_rate=p.daily_rate,
        kind=KINDS_OUT[p.kind],
        host_product_id=p.host_product_id,
        idle_aware=p.idle_aware,
        platforms=sorted(PLATFORMS_OUT[x] for x in p.platforms),
        min_linux_version=p.min_linux_version,
    )


def product_in(msg: pb.Product) -> Product:
    problems: dict[str, str] = {}
    kind = ProductKind.PRODUCT
    if msg.kind != pb.PRODUCT_KIND_UNSPECIFIED:
        k = KINDS.get(msg.kind)
        if k is None:
            problems["product.kind"] = "must be PRODUCT_KIND_PRODUCT or PRODUCT_KIND_PLUGIN"
        else:
            kind = k
    platforms: set[Platform] = set()
    for i, value in enumerate(msg.platforms):
        platform = PLATFORMS.get(value)
        if platform is None:
            problems[f"product.platforms[{i}]"] = (
                "must be PLATFORM_WINDOWS, PLATFORM_MACOS or PLATFORM_LINUX"
            )
        else:
            platforms.add(platform)
    if problems:
        raise InvalidArgument(problems)
    return Product(
        product_id=msg.product_id.strip(),
        display_name=msg.display_name,
        daily_rate=msg.daily_rate,
        kind=kind,
        host_product_id=msg.host_product_id.strip(),
        idle_aware=msg.idle_aware,
        platforms=frozenset(platforms),
        min_linux_version=msg.min_linux_version or DEFAULT_MIN_LINUX_VERSION,
    )


# -- users and access -----------------------------------------------------------

MEMBER_STATES_OUT = {
    MemberState.INVITED: pb.MEMBER_STATE_INVITED,
    MemberState.ACTIVE: pb.MEMBER_STATE_ACTIVE,
}
INVITATION_STATES_OUT = {
    InvitationState.PENDING: pb.INVITATION_STATE_PENDING,
    InvitationState.ACCEPTED: pb.INVITATION_STATE_ACCEPTED,
    InvitationState.EXPIRED: pb.INVITATION_STATE_EXPIRED,
}
NOTIFICATION_KINDS_OUT = {
    NotificationKind.INVITATION: pb.NOTIFICATION_KIND_INVITATION,
    NotificationKind.ACCESS_CHANGED: pb.NOTIFICATION_KIND_ACCESS_CHANGED,
    NotificationKind.LOW_BALANCE: pb.NOTIFICATION_KIND_LOW_BALANCE,
    NotificationKind.PACK_EXPIRING: pb.NOTIFICATION_KIND_PACK_EXPIRING,
    NotificationKind.TOKENS_EXHAUSTED: pb.NOTIFICATION_KIND_TOKENS_EXHAUSTED,
}
NOTIFICATION_KINDS_IN = {v: k for k, v in NOTIFICATION_KINDS_OUT.items()}
SUBSCRIPTION_KINDS_OUT = {
    SubscriptionKind.SUBSCRIPTION: pb.SUBSCRIPTION_KIND_SUBSCRIPTION,
    SubscriptionKind.TRIAL: pb.SUBSCRIPTION_KIND_TRIAL,
}


def invitation_out(i: Invitation, now: datetime) -> pb.Invitation:
    return pb.Invitation(
        invitation_id=i.invitation_id,
        team_id=i.team_id,
        user_id=i.user_id,
        send_time=ts(i.send_time),
        expire_time=ts(i.expire_time),
        state=INVITATION_STATES_OUT[i.state_at(now)],
    )


ACCESS_VIA_OUT: dict[AccessVia | None, Any] = {
    None: pb.ACCESS_VIA_UNSPECIFIED,
    **{v: pb.AccessVia.Value(f"ACCESS_VIA_{v.value}") for v in AccessVia},
}


def member_out(
    m: Member,
    user: User | None,
    effective: frozenset[str],
    invitation: Invitation | None,
    now: datetime,
    via: AccessVia | None = None,
) -> pb.Member:
    return pb.Member(
        team_id=m.team_id,
        user_id=m.user_id,
        display_name=user.display_name if user else "",
        email=user.email if user else "",
        state=MEMBER_STATES_OUT[m.state],
        guest=m.guest,
        all_products=m.all_products,
        product_ids=sorted(m.product_ids),
        effective_product_ids=sorted(effective),
        invitation=invitation_out(invitation, now) if invitation is not None else None,
        access_via=ACCESS_VIA_OUT[via],
    )


def user_summary_out(u: User, team_ids: list[str]) -> pb.UserSummary:
    return pb.UserSummary(
        user_id=u.user_id, display_name=u.display_name, email=u.email, team_ids=team_ids
    )


def notification_out(n: Notification) -> pb.Notification:
    return pb.Notification(
        notification_id=n.notification_id,
        team_id=n.team_id,
        user_id=n.user_id,
        email=n.email,
        kind=NOTIFICATION_KINDS_OUT[n.kind],
        create_time=ts(n.create_time),
        invitation_token=n.invitation_token,
        pack_id=n.pack_id,  # L1-L3: what a team alert is about
        tokens=n.tokens,
        expire_time=ts(n.expire_time),
        product_id=n.product_id,
    )


def subscription_out(s: Subscription) -> pb.Subscription:
    return pb.Subscription(
        subscription_id=s.subscription_id,
        user_id=s.user_id,
        product_id=s.product_id,
        kind=SUBSCRIPTION_KINDS_OUT[s.kind],
        start_time=ts(s.start_time),
        end_time=ts(s.end_time),
    )


# -- sessions and devices (RULES §4-§6, R2) ---------------------------------

SESSION_STATES_OUT = {
    SessionState.ACTIVE: pb.SESSION_STATE_ACTIVE,
    SessionState.IDLE: pb.SESSION_STATE_IDLE,
    SessionState.ENDED: pb.SESSION_STATE_ENDED,
}
END_REASONS_OUT: dict[EndReason | None, Any] = {
    r: pb.EndReason.Value(f"END_REASON_{r.value}") for r in EndReason
}
COVERAGES_OUT: dict[Coverage, Any] = {c: pb.Coverage.Value(f"COVERAGE_{c.value}") for c in Coverage}
CHARGE_STATES_OUT: dict[ChargeState, Any] = {
    c: pb.ChargeState.Value(f"CHARGE_STATE_{c.value}") for c in ChargeState
}


def admin_key_out(k: AdminKey) -> pb.AdminKey:
    """Never its secret nor its hash."""
    return pb.AdminKey(
        admin_key_id=k.admin_key_id,
        display_name=k.display_name,
        team_ids=sorted(k.team_ids),
        create_time=ts(k.create_time),
        revoke_time=ts(k.revoke_time),
    )


def session_out(view: SessionView) -> pb.Session:
    out = pb.Session()
    session_into(out, view)
    return out


def set_ts(field: timestamp_pb2.Timestamp, t: datetime | None) -> None:
    """``ts`` written into a message's own field (unset when None): no Timestamp made
    and then copied into its parent, which is most of what building an answer costs."""
    if t is not None:
        d = t - EPOCH  # (half the cost of counting microseconds and dividing, issue 17)
        field.seconds = d.days * 86_400 + d.seconds
        field.nanos = d.microseconds * 1000
        if t == EPOCH:
            field.SetInParent()  # set, even at the epoch itself


def session_into(out: pb.Session, view: SessionView) -> None:
    """The API's Session, written into ``out`` (e.g. a response's own ``session``: a
    third of the cost of building one and copying it there, issue 17)."""
    s = view.session
    out.session_id = s.session_id
    out.user_id = s.user_id
    out.team_id = s.team_id
    out.product_id = s.product_id
    out.product_version = s.product_version
    out.platform = PLATFORMS_OUT[s.platform]
    out.device_id = s.device_id
    out.parent_session_id = s.parent_session_id
    out.state = SESSION_STATES_OUT[s.state]
    out.end_reason = END_REASONS_OUT.get(s.end_reason, pb.END_REASON_UNSPECIFIED)
    out.coverage = COVERAGES_OUT[s.coverage]
    out.plan = PLANS_OUT[view.plan]
    out.daily_rate = view.daily_rate
    out.charge_state = CHARGE_STATES_OUT[view.charge_state]
    set_ts(out.start_time, s.start_time)
    set_ts(out.end_time, s.end_time)
    set_ts(out.grace_end_time, view.grace_end_time)
    set_ts(out.window_end_time, view.window_end_time)
    set_ts(out.lease_expire_time, view.lease_expire_time)
    out.heartbeat_interval.CopyFrom(dur(view.heartbeat_interval))
    out.team_available_tokens = view.team_available_tokens


def device_out(d: Device) -> pb.Device:
    return pb.Device(
        user_id=d.user_id,
        product_id=d.product_id,
        device_id=d.device_id,
        register_time=ts(d.register_time),
        last_seen_time=ts(d.last_seen_time),
        running=d.running,
        running_session_count=len(d.sessions()),
    )


def usage_row_out(r: UsageRow) -> pb.UsageRow:
    return pb.UsageRow(
        date=r.date,
        user_id=r.user_id,
        product_id=r.product_id,
        tokens_charged=r.tokens_charged,
        sessions=r.sessions,
        active_seconds=r.active_seconds,  # whole seconds, the exact total truncated (R1)
        user_display_name=r.user_display_name,
        product_display_name=r.product_display_name,
    )


def pack_usage_out(p: PackUsage, managed: frozenset[str] | None = None) -> pb.PackUsage:
    """``managed``: a team administrator's teams; a pack moved since to a team not one
    of them says ``OTHER_TEAM`` where the team holding it now is (AD1), as its move
    does in the audit trail."""
    return pb.PackUsage(
        pack_id=p.pack_id,
        team_id=team_shown(p.team_id, managed),
        purchased_tokens=p.purchased_tokens,
        consumed_tokens=p.consumed_tokens,
        held_tokens=p.held_tokens,
        expired_tokens=p.expired_tokens,
        moved_in_tokens=p.moved_in_tokens,
        moved_out_tokens=p.moved_out_tokens,
        remaining_tokens=p.remaining_tokens,
        expire_time=ts(p.expire_time),
        state=PACK_STATES_OUT[p.state],
    )


# The request fields of the audited calls that name teams (a team, a pack's new team,
# an admin key's teams).
_TEAM_FIELDS = ("team_id", "to_team_id", "from_team_id", "team_ids")


def audit_event_out(
    e: AuditEvent, team_id: str = "", managed: frozenset[str] | None = None
) -> pb.AuditEvent:
    """``team_id``: the team whose trail it is read in. An event about two teams (a
    pack moved, a device of a user of both) is in each one's trail, and says that
    team there: a team administrator reading its own learns no other team's name.
    ``managed``: a team administrator's teams; a team its request names that is not
    one of them is said as ``OTHER_TEAM`` (AD1)."""
    body = json.loads(e.request)
    target = e.target
    if managed is not None and target and target == body.get("team_id"):
        target = team_shown(target, managed)  # the event is about a team (its settings)
    if managed is not None:
        for name in _TEAM_FIELDS:
            value = body.get(name)
            if isinstance(value, str):
                body[name] = team_shown(value, managed)
            elif isinstance(value, list):
                body[name] = [team_shown(t, managed) for t in value]
    request = struct_pb2.Struct()
    request.update(body)
    return pb.AuditEvent(
        event_id=e.event_id,
        time=ts(e.time),
        actor=e.actor,
        actor_name=e.actor_name,
        method=e.method,
        team_id=team_id or e.team_id,
        target=target,
        request_id=e.request_id,
        request=request,
    )
