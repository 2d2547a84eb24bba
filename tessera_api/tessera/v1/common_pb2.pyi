import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Platform(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLATFORM_UNSPECIFIED: _ClassVar[Platform]
    PLATFORM_WINDOWS: _ClassVar[Platform]
    PLATFORM_MACOS: _ClassVar[Platform]
    PLATFORM_LINUX: _ClassVar[Platform]

class Plan(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLAN_UNSPECIFIED: _ClassVar[Plan]
    PLAN_STANDARD: _ClassVar[Plan]
    PLAN_PREMIUM: _ClassVar[Plan]

class SessionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATE_UNSPECIFIED: _ClassVar[SessionState]
    SESSION_STATE_ACTIVE: _ClassVar[SessionState]
    SESSION_STATE_IDLE: _ClassVar[SessionState]
    SESSION_STATE_ENDED: _ClassVar[SessionState]

class EndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    END_REASON_UNSPECIFIED: _ClassVar[EndReason]
    END_REASON_RELEASED: _ClassVar[EndReason]
    END_REASON_LEASE_EXPIRED: _ClassVar[EndReason]
    END_REASON_TAKEN_OVER: _ClassVar[EndReason]
    END_REASON_INSUFFICIENT_TOKENS: _ClassVar[EndReason]
    END_REASON_NOT_ASSIGNED: _ClassVar[EndReason]
    END_REASON_HOST_ENDED: _ClassVar[EndReason]
    END_REASON_ENDED_BY_ADMIN: _ClassVar[EndReason]

class Coverage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COVERAGE_UNSPECIFIED: _ClassVar[Coverage]
    COVERAGE_TOKENS: _ClassVar[Coverage]
    COVERAGE_SUBSCRIPTION: _ClassVar[Coverage]
    COVERAGE_TRIAL: _ClassVar[Coverage]
    COVERAGE_FREE: _ClassVar[Coverage]

class ChargeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHARGE_STATE_UNSPECIFIED: _ClassVar[ChargeState]
    CHARGE_STATE_NONE: _ClassVar[ChargeState]
    CHARGE_STATE_GRACE: _ClassVar[ChargeState]
    CHARGE_STATE_CHARGED: _ClassVar[ChargeState]

class PackState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PACK_STATE_UNSPECIFIED: _ClassVar[PackState]
    PACK_STATE_ACTIVE: _ClassVar[PackState]
    PACK_STATE_DEPLETED: _ClassVar[PackState]
    PACK_STATE_EXPIRED: _ClassVar[PackState]

class ProductKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRODUCT_KIND_UNSPECIFIED: _ClassVar[ProductKind]
    PRODUCT_KIND_PRODUCT: _ClassVar[ProductKind]
    PRODUCT_KIND_PLUGIN: _ClassVar[ProductKind]

class MemberState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMBER_STATE_UNSPECIFIED: _ClassVar[MemberState]
    MEMBER_STATE_INVITED: _ClassVar[MemberState]
    MEMBER_STATE_ACTIVE: _ClassVar[MemberState]

class InvitationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INVITATION_STATE_UNSPECIFIED: _ClassVar[InvitationState]
    INVITATION_STATE_PENDING: _ClassVar[InvitationState]
    INVITATION_STATE_ACCEPTED: _ClassVar[InvitationState]
    INVITATION_STATE_EXPIRED: _ClassVar[InvitationState]

class NotificationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NOTIFICATION_KIND_UNSPECIFIED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_INVITATION: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_ACCESS_CHANGED: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_LOW_BALANCE: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_PACK_EXPIRING: _ClassVar[NotificationKind]
    NOTIFICATION_KIND_TOKENS_EXHAUSTED: _ClassVar[NotificationKind]

class AccessVia(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCESS_VIA_UNSPECIFIED: _ClassVar[AccessVia]
    ACCESS_VIA_INDIVIDUAL: _ClassVar[AccessVia]
    ACCESS_VIA_ALL_PRODUCTS: _ClassVar[AccessVia]
    ACCESS_VIA_DEFAULT_SET: _ClassVar[AccessVia]

class SubscriptionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBSCRIPTION_KIND_UNSPECIFIED: _ClassVar[SubscriptionKind]
    SUBSCRIPTION_KIND_SUBSCRIPTION: _ClassVar[SubscriptionKind]
    SUBSCRIPTION_KIND_TRIAL: _ClassVar[SubscriptionKind]

class LedgerEntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEDGER_ENTRY_KIND_UNSPECIFIED: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_PURCHASE: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_HOLD: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_CAPTURE: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_HOLD_RELEASE: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_EXPIRY: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_MOVE_OUT: _ClassVar[LedgerEntryKind]
    LEDGER_ENTRY_KIND_MOVE_IN: _ClassVar[LedgerEntryKind]
PLATFORM_UNSPECIFIED: Platform
PLATFORM_WINDOWS: Platform
PLATFORM_MACOS: Platform
PLATFORM_LINUX: Platform
PLAN_UNSPECIFIED: Plan
PLAN_STANDARD: Plan
PLAN_PREMIUM: Plan
SESSION_STATE_UNSPECIFIED: SessionState
SESSION_STATE_ACTIVE: SessionState
SESSION_STATE_IDLE: SessionState
SESSION_STATE_ENDED: SessionState
END_REASON_UNSPECIFIED: EndReason
END_REASON_RELEASED: EndReason
END_REASON_LEASE_EXPIRED: EndReason
END_REASON_TAKEN_OVER: EndReason
END_REASON_INSUFFICIENT_TOKENS: EndReason
END_REASON_NOT_ASSIGNED: EndReason
END_REASON_HOST_ENDED: EndReason
END_REASON_ENDED_BY_ADMIN: EndReason
COVERAGE_UNSPECIFIED: Coverage
COVERAGE_TOKENS: Coverage
COVERAGE_SUBSCRIPTION: Coverage
COVERAGE_TRIAL: Coverage
COVERAGE_FREE: Coverage
CHARGE_STATE_UNSPECIFIED: ChargeState
CHARGE_STATE_NONE: ChargeState
CHARGE_STATE_GRACE: ChargeState
CHARGE_STATE_CHARGED: ChargeState
PACK_STATE_UNSPECIFIED: PackState
PACK_STATE_ACTIVE: PackState
PACK_STATE_DEPLETED: PackState
PACK_STATE_EXPIRED: PackState
PRODUCT_KIND_UNSPECIFIED: ProductKind
PRODUCT_KIND_PRODUCT: ProductKind
PRODUCT_KIND_PLUGIN: ProductKind
MEMBER_STATE_UNSPECIFIED: MemberState
MEMBER_STATE_INVITED: MemberState
MEMBER_STATE_ACTIVE: MemberState
INVITATION_STATE_UNSPECIFIED: InvitationState
INVITATION_STATE_PENDING: InvitationState
INVITATION_STATE_ACCEPTED: InvitationState
INVITATION_STATE_EXPIRED: InvitationState
NOTIFICATION_KIND_UNSPECIFIED: NotificationKind
NOTIFICATION_KIND_INVITATION: NotificationKind
NOTIFICATION_KIND_ACCESS_CHANGED: NotificationKind
NOTIFICATION_KIND_LOW_BALANCE: NotificationKind
NOTIFICATION_KIND_PACK_EXPIRING: NotificationKind
NOTIFICATION_KIND_TOKENS_EXHAUSTED: NotificationKind
ACCESS_VIA_UNSPECIFIED: AccessVia
ACCESS_VIA_INDIVIDUAL: AccessVia
ACCESS_VIA_ALL_PRODUCTS: AccessVia
ACCESS_VIA_DEFAULT_SET: AccessVia
SUBSCRIPTION_KIND_UNSPECIFIED: SubscriptionKind
SUBSCRIPTION_KIND_SUBSCRIPTION: SubscriptionKind
SUBSCRIPTION_KIND_TRIAL: SubscriptionKind
LEDGER_ENTRY_KIND_UNSPECIFIED: LedgerEntryKind
LEDGER_ENTRY_KIND_PURCHASE: LedgerEntryKind
LEDGER_ENTRY_KIND_HOLD: LedgerEntryKind
LEDGER_ENTRY_KIND_CAPTURE: LedgerEntryKind
LEDGER_ENTRY_KIND_HOLD_RELEASE: LedgerEntryKind
LEDGER_ENTRY_KIND_EXPIRY: LedgerEntryKind
LEDGER_ENTRY_KIND_MOVE_OUT: LedgerEntryKind
LEDGER_ENTRY_KIND_MOVE_IN: LedgerEntryKind

class Session(_message.Message):
    __slots__ = ("session_id", "user_id", "team_id", "product_id", "product_version", "platform", "device_id", "parent_session_id", "state", "end_reason", "coverage", "plan", "daily_rate", "charge_state", "start_time", "end_time", "grace_end_time", "window_end_time", "lease_expire_time", "heartbeat_interval", "team_available_tokens")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    DAILY_RATE_FIELD_NUMBER: _ClassVar[int]
    CHARGE_STATE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    GRACE_END_TIME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_TIME_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    TEAM_AVAILABLE_TOKENS_FIELD_NUMBER: _ClassVar[int]
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
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    grace_end_time: _timestamp_pb2.Timestamp
    window_end_time: _timestamp_pb2.Timestamp
    lease_expire_time: _timestamp_pb2.Timestamp
    heartbeat_interval: _duration_pb2.Duration
    team_available_tokens: int
    def __init__(self, session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., team_id: _Optional[str] = ..., product_id: _Optional[str] = ..., product_version: _Optional[str] = ..., platform: _Optional[_Union[Platform, str]] = ..., device_id: _Optional[str] = ..., parent_session_id: _Optional[str] = ..., state: _Optional[_Union[SessionState, str]] = ..., end_reason: _Optional[_Union[EndReason, str]] = ..., coverage: _Optional[_Union[Coverage, str]] = ..., plan: _Optional[_Union[Plan, str]] = ..., daily_rate: _Optional[int] = ..., charge_state: _Optional[_Union[ChargeState, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., grace_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lease_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., team_available_tokens: _Optional[int] = ...) -> None: ...

class Team(_message.Message):
    __slots__ = ("team_id", "display_name", "plan", "guest_default_assignments", "default_product_ids", "available_tokens", "held_tokens", "create_time", "low_balance_threshold", "forecast")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    GUEST_DEFAULT_ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    HELD_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LOW_BALANCE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FORECAST_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    display_name: str
    plan: Plan
    guest_default_assignments: bool
    default_product_ids: _containers.RepeatedScalarFieldContainer[str]
    available_tokens: int
    held_tokens: int
    create_time: _timestamp_pb2.Timestamp
    low_balance_threshold: int
    forecast: TeamForecast
    def __init__(self, team_id: _Optional[str] = ..., display_name: _Optional[str] = ..., plan: _Optional[_Union[Plan, str]] = ..., guest_default_assignments: _Optional[bool] = ..., default_product_ids: _Optional[_Iterable[str]] = ..., available_tokens: _Optional[int] = ..., held_tokens: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., low_balance_threshold: _Optional[int] = ..., forecast: _Optional[_Union[TeamForecast, _Mapping]] = ...) -> None: ...

class TeamForecast(_message.Message):
    __slots__ = ("daily_burn_tokens", "depletion_time", "expiring_tokens_30d")
    DAILY_BURN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DEPLETION_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRING_TOKENS_30D_FIELD_NUMBER: _ClassVar[int]
    daily_burn_tokens: float
    depletion_time: _timestamp_pb2.Timestamp
    expiring_tokens_30d: int
    def __init__(self, daily_burn_tokens: _Optional[float] = ..., depletion_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expiring_tokens_30d: _Optional[int] = ...) -> None: ...

class TokenPack(_message.Message):
    __slots__ = ("pack_id", "team_id", "tokens", "remaining_tokens", "held_tokens", "consumed_tokens", "expired_tokens", "purchase_time", "expire_time", "state", "request_id")
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    HELD_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CONSUMED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PURCHASE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    pack_id: str
    team_id: str
    tokens: int
    remaining_tokens: int
    held_tokens: int
    consumed_tokens: int
    expired_tokens: int
    purchase_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    state: PackState
    request_id: str
    def __init__(self, pack_id: _Optional[str] = ..., team_id: _Optional[str] = ..., tokens: _Optional[int] = ..., remaining_tokens: _Optional[int] = ..., held_tokens: _Optional[int] = ..., consumed_tokens: _Optional[int] = ..., expired_tokens: _Optional[int] = ..., purchase_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[PackState, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class Product(_message.Message):
    __slots__ = ("product_id", "display_name", "daily_rate", "kind", "host_product_id", "idle_aware", "platforms", "min_linux_version")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DAILY_RATE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    HOST_PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    IDLE_AWARE_FIELD_NUMBER: _ClassVar[int]
    PLATFORMS_FIELD_NUMBER: _ClassVar[int]
    MIN_LINUX_VERSION_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    display_name: str
    daily_rate: int
    kind: ProductKind
    host_product_id: str
    idle_aware: bool
    platforms: _containers.RepeatedScalarFieldContainer[Platform]
    min_linux_version: int
    def __init__(self, product_id: _Optional[str] = ..., display_name: _Optional[str] = ..., daily_rate: _Optional[int] = ..., kind: _Optional[_Union[ProductKind, str]] = ..., host_product_id: _Optional[str] = ..., idle_aware: _Optional[bool] = ..., platforms: _Optional[_Iterable[_Union[Platform, str]]] = ..., min_linux_version: _Optional[int] = ...) -> None: ...

class Invitation(_message.Message):
    __slots__ = ("invitation_id", "team_id", "user_id", "send_time", "expire_time", "state")
    INVITATION_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SEND_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    invitation_id: str
    team_id: str
    user_id: str
    send_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    state: InvitationState
    def __init__(self, invitation_id: _Optional[str] = ..., team_id: _Optional[str] = ..., user_id: _Optional[str] = ..., send_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[InvitationState, str]] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("team_id", "user_id", "display_name", "email", "state", "guest", "all_products", "product_ids", "effective_product_ids", "invitation", "access_via")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    GUEST_FIELD_NUMBER: _ClassVar[int]
    ALL_PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    INVITATION_FIELD_NUMBER: _ClassVar[int]
    ACCESS_VIA_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    user_id: str
    display_name: str
    email: str
    state: MemberState
    guest: bool
    all_products: bool
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    effective_product_ids: _containers.RepeatedScalarFieldContainer[str]
    invitation: Invitation
    access_via: AccessVia
    def __init__(self, team_id: _Optional[str] = ..., user_id: _Optional[str] = ..., display_name: _Optional[str] = ..., email: _Optional[str] = ..., state: _Optional[_Union[MemberState, str]] = ..., guest: _Optional[bool] = ..., all_products: _Optional[bool] = ..., product_ids: _Optional[_Iterable[str]] = ..., effective_product_ids: _Optional[_Iterable[str]] = ..., invitation: _Optional[_Union[Invitation, _Mapping]] = ..., access_via: _Optional[_Union[AccessVia, str]] = ...) -> None: ...

class Notification(_message.Message):
    __slots__ = ("notification_id", "team_id", "user_id", "email", "kind", "create_time", "invitation_token", "pack_id", "tokens", "expire_time", "product_id")
    NOTIFICATION_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    INVITATION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    notification_id: str
    team_id: str
    user_id: str
    email: str
    kind: NotificationKind
    create_time: _timestamp_pb2.Timestamp
    invitation_token: str
    pack_id: str
    tokens: int
    expire_time: _timestamp_pb2.Timestamp
    product_id: str
    def __init__(self, notification_id: _Optional[str] = ..., team_id: _Optional[str] = ..., user_id: _Optional[str] = ..., email: _Optional[str] = ..., kind: _Optional[_Union[NotificationKind, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., invitation_token: _Optional[str] = ..., pack_id: _Optional[str] = ..., tokens: _Optional[int] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., product_id: _Optional[str] = ...) -> None: ...

class AdminKey(_message.Message):
    __slots__ = ("admin_key_id", "display_name", "team_ids", "create_time", "revoke_time")
    ADMIN_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    TEAM_IDS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    admin_key_id: str
    display_name: str
    team_ids: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    def __init__(self, admin_key_id: _Optional[str] = ..., display_name: _Optional[str] = ..., team_ids: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("event_id", "time", "actor", "actor_name", "method", "team_id", "target", "request_id", "request")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTOR_NAME_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    time: _timestamp_pb2.Timestamp
    actor: str
    actor_name: str
    method: str
    team_id: str
    target: str
    request_id: str
    request: _struct_pb2.Struct
    def __init__(self, event_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., actor_name: _Optional[str] = ..., method: _Optional[str] = ..., team_id: _Optional[str] = ..., target: _Optional[str] = ..., request_id: _Optional[str] = ..., request: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UserSummary(_message.Message):
    __slots__ = ("user_id", "display_name", "email", "team_ids")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    TEAM_IDS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    display_name: str
    email: str
    team_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_id: _Optional[str] = ..., display_name: _Optional[str] = ..., email: _Optional[str] = ..., team_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("subscription_id", "user_id", "product_id", "kind", "start_time", "end_time")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    user_id: str
    product_id: str
    kind: SubscriptionKind
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, subscription_id: _Optional[str] = ..., user_id: _Optional[str] = ..., product_id: _Optional[str] = ..., kind: _Optional[_Union[SubscriptionKind, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("user_id", "product_id", "device_id", "register_time", "last_seen_time", "running", "running_session_count")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTER_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_TIME_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_SESSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    product_id: str
    device_id: str
    register_time: _timestamp_pb2.Timestamp
    last_seen_time: _timestamp_pb2.Timestamp
    running: bool
    running_session_count: int
    def __init__(self, user_id: _Optional[str] = ..., product_id: _Optional[str] = ..., device_id: _Optional[str] = ..., register_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seen_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., running: _Optional[bool] = ..., running_session_count: _Optional[int] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("entry_id", "time", "kind", "pack_id", "amount", "session_id", "user_id", "product_id", "team_id", "remaining_delta", "held_delta")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    REMAINING_DELTA_FIELD_NUMBER: _ClassVar[int]
    HELD_DELTA_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    time: _timestamp_pb2.Timestamp
    kind: LedgerEntryKind
    pack_id: str
    amount: int
    session_id: str
    user_id: str
    product_id: str
    team_id: str
    remaining_delta: int
    held_delta: int
    def __init__(self, entry_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[LedgerEntryKind, str]] = ..., pack_id: _Optional[str] = ..., amount: _Optional[int] = ..., session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., product_id: _Optional[str] = ..., team_id: _Optional[str] = ..., remaining_delta: _Optional[int] = ..., held_delta: _Optional[int] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("date", "user_id", "product_id", "tokens_charged", "sessions", "active_seconds", "user_display_name", "product_display_name")
    DATE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_CHARGED_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    USER_DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    date: str
    user_id: str
    product_id: str
    tokens_charged: int
    sessions: int
    active_seconds: int
    user_display_name: str
    product_display_name: str
    def __init__(self, date: _Optional[str] = ..., user_id: _Optional[str] = ..., product_id: _Optional[str] = ..., tokens_charged: _Optional[int] = ..., sessions: _Optional[int] = ..., active_seconds: _Optional[int] = ..., user_display_name: _Optional[str] = ..., product_display_name: _Optional[str] = ...) -> None: ...

class PackUsage(_message.Message):
    __slots__ = ("pack_id", "purchased_tokens", "consumed_tokens", "held_tokens", "expired_tokens", "moved_in_tokens", "moved_out_tokens", "remaining_tokens", "expire_time", "state", "team_id")
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    PURCHASED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CONSUMED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    HELD_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MOVED_IN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MOVED_OUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    pack_id: str
    purchased_tokens: int
    consumed_tokens: int
    held_tokens: int
    expired_tokens: int
    moved_in_tokens: int
    moved_out_tokens: int
    remaining_tokens: int
    expire_time: _timestamp_pb2.Timestamp
    state: PackState
    team_id: str
    def __init__(self, pack_id: _Optional[str] = ..., purchased_tokens: _Optional[int] = ..., consumed_tokens: _Optional[int] = ..., held_tokens: _Optional[int] = ..., expired_tokens: _Optional[int] = ..., moved_in_tokens: _Optional[int] = ..., moved_out_tokens: _Optional[int] = ..., remaining_tokens: _Optional[int] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[PackState, str]] = ..., team_id: _Optional[str] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("session_id", "user_id", "team_id", "product_id", "device_id", "coverage", "lease_expire_time", "issue_time", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    ISSUE_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    user_id: str
    team_id: str
    product_id: str
    device_id: str
    coverage: Coverage
    lease_expire_time: _timestamp_pb2.Timestamp
    issue_time: _timestamp_pb2.Timestamp
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., team_id: _Optional[str] = ..., product_id: _Optional[str] = ..., device_id: _Optional[str] = ..., coverage: _Optional[_Union[Coverage, str]] = ..., lease_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., issue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class SignedLease(_message.Message):
    __slots__ = ("lease", "signature", "key_id", "tree_path", "tree_index")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TREE_PATH_FIELD_NUMBER: _ClassVar[int]
    TREE_INDEX_FIELD_NUMBER: _ClassVar[int]
    lease: bytes
    signature: bytes
    key_id: str
    tree_path: _containers.RepeatedScalarFieldContainer[bytes]
    tree_index: int
    def __init__(self, lease: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., key_id: _Optional[str] = ..., tree_path: _Optional[_Iterable[bytes]] = ..., tree_index: _Optional[int] = ...) -> None: ...

class SigningKey(_message.Message):
    __slots__ = ("key_id", "public_key", "create_time", "retired")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    public_key: bytes
    create_time: _timestamp_pb2.Timestamp
    retired: bool
    def __init__(self, key_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., retired: _Optional[bool] = ...) -> None: ...
