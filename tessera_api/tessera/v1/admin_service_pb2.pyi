import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tessera_api.tessera.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_ROLE_UNSPECIFIED: _ClassVar[NodeRole]
    NODE_ROLE_ACTIVE: _ClassVar[NodeRole]
    NODE_ROLE_STANDBY: _ClassVar[NodeRole]
NODE_ROLE_UNSPECIFIED: NodeRole
NODE_ROLE_ACTIVE: NodeRole
NODE_ROLE_STANDBY: NodeRole

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServerInfoResponse(_message.Message):
    __slots__ = ("version", "now", "test_clock", "node_id", "role", "leader_address")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    TEST_CLOCK_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    version: str
    now: _timestamp_pb2.Timestamp
    test_clock: bool
    node_id: str
    role: NodeRole
    leader_address: str
    def __init__(self, version: _Optional[str] = ..., now: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., test_clock: _Optional[bool] = ..., node_id: _Optional[str] = ..., role: _Optional[_Union[NodeRole, str]] = ..., leader_address: _Optional[str] = ...) -> None: ...

class AdvanceClockRequest(_message.Message):
    __slots__ = ("by", "to_time")
    BY_FIELD_NUMBER: _ClassVar[int]
    TO_TIME_FIELD_NUMBER: _ClassVar[int]
    by: _duration_pb2.Duration
    to_time: _timestamp_pb2.Timestamp
    def __init__(self, by: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., to_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AdvanceClockResponse(_message.Message):
    __slots__ = ("now",)
    NOW_FIELD_NUMBER: _ClassVar[int]
    now: _timestamp_pb2.Timestamp
    def __init__(self, now: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateTeamRequest(_message.Message):
    __slots__ = ("team_id", "display_name", "plan")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    display_name: str
    plan: _common_pb2.Plan
    def __init__(self, team_id: _Optional[str] = ..., display_name: _Optional[str] = ..., plan: _Optional[_Union[_common_pb2.Plan, str]] = ...) -> None: ...

class CreateTeamResponse(_message.Message):
    __slots__ = ("team",)
    TEAM_FIELD_NUMBER: _ClassVar[int]
    team: _common_pb2.Team
    def __init__(self, team: _Optional[_Union[_common_pb2.Team, _Mapping]] = ...) -> None: ...

class GetTeamRequest(_message.Message):
    __slots__ = ("team_id",)
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    def __init__(self, team_id: _Optional[str] = ...) -> None: ...

class GetTeamResponse(_message.Message):
    __slots__ = ("team",)
    TEAM_FIELD_NUMBER: _ClassVar[int]
    team: _common_pb2.Team
    def __init__(self, team: _Optional[_Union[_common_pb2.Team, _Mapping]] = ...) -> None: ...

class ListTeamsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTeamsResponse(_message.Message):
    __slots__ = ("teams", "next_page_token")
    TEAMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    teams: _containers.RepeatedCompositeFieldContainer[_common_pb2.Team]
    next_page_token: str
    def __init__(self, teams: _Optional[_Iterable[_Union[_common_pb2.Team, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateTeamSettingsRequest(_message.Message):
    __slots__ = ("team_id", "plan", "guest_default_assignments", "display_name", "low_balance_threshold")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    GUEST_DEFAULT_ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    LOW_BALANCE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    plan: _common_pb2.Plan
    guest_default_assignments: bool
    display_name: str
    low_balance_threshold: int
    def __init__(self, team_id: _Optional[str] = ..., plan: _Optional[_Union[_common_pb2.Plan, str]] = ..., guest_default_assignments: _Optional[bool] = ..., display_name: _Optional[str] = ..., low_balance_threshold: _Optional[int] = ...) -> None: ...

class UpdateTeamSettingsResponse(_message.Message):
    __slots__ = ("team",)
    TEAM_FIELD_NUMBER: _ClassVar[int]
    team: _common_pb2.Team
    def __init__(self, team: _Optional[_Union[_common_pb2.Team, _Mapping]] = ...) -> None: ...

class PurchaseTokensRequest(_message.Message):
    __slots__ = ("team_id", "tokens", "request_id")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    tokens: int
    request_id: str
    def __init__(self, team_id: _Optional[str] = ..., tokens: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class PurchaseTokensResponse(_message.Message):
    __slots__ = ("token_pack",)
    TOKEN_PACK_FIELD_NUMBER: _ClassVar[int]
    token_pack: _common_pb2.TokenPack
    def __init__(self, token_pack: _Optional[_Union[_common_pb2.TokenPack, _Mapping]] = ...) -> None: ...

class ListTokenPacksRequest(_message.Message):
    __slots__ = ("team_id", "page_size", "page_token")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    page_size: int
    page_token: str
    def __init__(self, team_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTokenPacksResponse(_message.Message):
    __slots__ = ("packs", "next_page_token")
    PACKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    packs: _containers.RepeatedCompositeFieldContainer[_common_pb2.TokenPack]
    next_page_token: str
    def __init__(self, packs: _Optional[_Iterable[_Union[_common_pb2.TokenPack, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class MoveTokenPackRequest(_message.Message):
    __slots__ = ("pack_id", "to_team_id", "from_team_id")
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    TO_TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    pack_id: str
    to_team_id: str
    from_team_id: str
    def __init__(self, pack_id: _Optional[str] = ..., to_team_id: _Optional[str] = ..., from_team_id: _Optional[str] = ...) -> None: ...

class MoveTokenPackResponse(_message.Message):
    __slots__ = ("token_pack",)
    TOKEN_PACK_FIELD_NUMBER: _ClassVar[int]
    token_pack: _common_pb2.TokenPack
    def __init__(self, token_pack: _Optional[_Union[_common_pb2.TokenPack, _Mapping]] = ...) -> None: ...

class ListLedgerEntriesRequest(_message.Message):
    __slots__ = ("team_id", "page_size", "page_token", "pack_id", "order_by")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PACK_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    page_size: int
    page_token: str
    pack_id: str
    order_by: str
    def __init__(self, team_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., pack_id: _Optional[str] = ..., order_by: _Optional[str] = ...) -> None: ...

class ListLedgerEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_common_pb2.LedgerEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[_common_pb2.LedgerEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpsertProductRequest(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: _common_pb2.Product
    def __init__(self, product: _Optional[_Union[_common_pb2.Product, _Mapping]] = ...) -> None: ...

class UpsertProductResponse(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: _common_pb2.Product
    def __init__(self, product: _Optional[_Union[_common_pb2.Product, _Mapping]] = ...) -> None: ...

class ListProductsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListProductsResponse(_message.Message):
    __slots__ = ("products", "next_page_token")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[_common_pb2.Product]
    next_page_token: str
    def __init__(self, products: _Optional[_Iterable[_Union[_common_pb2.Product, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AssignUsersRequest(_message.Message):
    __slots__ = ("team_id", "users", "product_ids", "all_products", "guest", "members_only")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    GUEST_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_ONLY_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    users: _containers.RepeatedScalarFieldContainer[str]
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    all_products: bool
    guest: bool
    members_only: bool
    def __init__(self, team_id: _Optional[str] = ..., users: _Optional[_Iterable[str]] = ..., product_ids: _Optional[_Iterable[str]] = ..., all_products: _Optional[bool] = ..., guest: _Optional[bool] = ..., members_only: _Optional[bool] = ...) -> None: ...

class AssignUsersResponse(_message.Message):
    __slots__ = ("members",)
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[_common_pb2.Member]
    def __init__(self, members: _Optional[_Iterable[_Union[_common_pb2.Member, _Mapping]]] = ...) -> None: ...

class ImportUsersRequest(_message.Message):
    __slots__ = ("team_id", "users", "product_ids", "all_products", "guest")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    GUEST_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    users: _containers.RepeatedScalarFieldContainer[str]
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    all_products: bool
    guest: bool
    def __init__(self, team_id: _Optional[str] = ..., users: _Optional[_Iterable[str]] = ..., product_ids: _Optional[_Iterable[str]] = ..., all_products: _Optional[bool] = ..., guest: _Optional[bool] = ...) -> None: ...

class ImportUsersResponse(_message.Message):
    __slots__ = ("members",)
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[_common_pb2.Member]
    def __init__(self, members: _Optional[_Iterable[_Union[_common_pb2.Member, _Mapping]]] = ...) -> None: ...

class UnassignUserRequest(_message.Message):
    __slots__ = ("team_id", "user_id")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    user_id: str
    def __init__(self, team_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class UnassignUserResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetUserProductsRequest(_message.Message):
    __slots__ = ("team_id", "user_id", "product_ids", "all_products")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    ALL_PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    user_id: str
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    all_products: bool
    def __init__(self, team_id: _Optional[str] = ..., user_id: _Optional[str] = ..., product_ids: _Optional[_Iterable[str]] = ..., all_products: _Optional[bool] = ...) -> None: ...

class SetUserProductsResponse(_message.Message):
    __slots__ = ("member",)
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    member: _common_pb2.Member
    def __init__(self, member: _Optional[_Union[_common_pb2.Member, _Mapping]] = ...) -> None: ...

class GetMemberRequest(_message.Message):
    __slots__ = ("team_id", "user_id")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    user_id: str
    def __init__(self, team_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class GetMemberResponse(_message.Message):
    __slots__ = ("member",)
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    member: _common_pb2.Member
    def __init__(self, member: _Optional[_Union[_common_pb2.Member, _Mapping]] = ...) -> None: ...

class ListMembersRequest(_message.Message):
    __slots__ = ("team_id", "page_size", "page_token", "product_id")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    page_size: int
    page_token: str
    product_id: str
    def __init__(self, team_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., product_id: _Optional[str] = ...) -> None: ...

class ListMembersResponse(_message.Message):
    __slots__ = ("members", "next_page_token")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[_common_pb2.Member]
    next_page_token: str
    def __init__(self, members: _Optional[_Iterable[_Union[_common_pb2.Member, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SetDefaultAssignmentsRequest(_message.Message):
    __slots__ = ("team_id", "product_ids")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_IDS_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    product_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, team_id: _Optional[str] = ..., product_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SetDefaultAssignmentsResponse(_message.Message):
    __slots__ = ("team",)
    TEAM_FIELD_NUMBER: _ClassVar[int]
    team: _common_pb2.Team
    def __init__(self, team: _Optional[_Union[_common_pb2.Team, _Mapping]] = ...) -> None: ...

class ResendInvitationRequest(_message.Message):
    __slots__ = ("team_id", "user_id")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    user_id: str
    def __init__(self, team_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ResendInvitationResponse(_message.Message):
    __slots__ = ("invitation",)
    INVITATION_FIELD_NUMBER: _ClassVar[int]
    invitation: _common_pb2.Invitation
    def __init__(self, invitation: _Optional[_Union[_common_pb2.Invitation, _Mapping]] = ...) -> None: ...

class AcceptInvitationRequest(_message.Message):
    __slots__ = ("invitation_token",)
    INVITATION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    invitation_token: str
    def __init__(self, invitation_token: _Optional[str] = ...) -> None: ...

class AcceptInvitationResponse(_message.Message):
    __slots__ = ("user_id", "user_key")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_KEY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    user_key: str
    def __init__(self, user_id: _Optional[str] = ..., user_key: _Optional[str] = ...) -> None: ...

class IssueUserKeyRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class IssueUserKeyResponse(_message.Message):
    __slots__ = ("user_id", "user_key")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_KEY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    user_key: str
    def __init__(self, user_id: _Optional[str] = ..., user_key: _Optional[str] = ...) -> None: ...

class ListNotificationsRequest(_message.Message):
    __slots__ = ("team_id", "user_id", "page_size", "page_token", "kinds", "order_by")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    user_id: str
    page_size: int
    page_token: str
    kinds: _containers.RepeatedScalarFieldContainer[_common_pb2.NotificationKind]
    order_by: str
    def __init__(self, team_id: _Optional[str] = ..., user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., kinds: _Optional[_Iterable[_Union[_common_pb2.NotificationKind, str]]] = ..., order_by: _Optional[str] = ...) -> None: ...

class ListNotificationsResponse(_message.Message):
    __slots__ = ("notifications", "next_page_token")
    NOTIFICATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    notifications: _containers.RepeatedCompositeFieldContainer[_common_pb2.Notification]
    next_page_token: str
    def __init__(self, notifications: _Optional[_Iterable[_Union[_common_pb2.Notification, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GrantSubscriptionRequest(_message.Message):
    __slots__ = ("user_id", "product_id", "start_time", "end_time")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    product_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., product_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GrantSubscriptionResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: _common_pb2.Subscription
    def __init__(self, subscription: _Optional[_Union[_common_pb2.Subscription, _Mapping]] = ...) -> None: ...

class StartTrialRequest(_message.Message):
    __slots__ = ("user_id", "product_id", "end_time")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    product_id: str
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., product_id: _Optional[str] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StartTrialResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: _common_pb2.Subscription
    def __init__(self, subscription: _Optional[_Union[_common_pb2.Subscription, _Mapping]] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ("user_id", "product_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    product_id: str
    def __init__(self, user_id: _Optional[str] = ..., product_id: _Optional[str] = ...) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[_common_pb2.Device]
    def __init__(self, devices: _Optional[_Iterable[_Union[_common_pb2.Device, _Mapping]]] = ...) -> None: ...

class RemoveDeviceRequest(_message.Message):
    __slots__ = ("user_id", "product_id", "device_id", "end_sessions")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    END_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    product_id: str
    device_id: str
    end_sessions: bool
    def __init__(self, user_id: _Optional[str] = ..., product_id: _Optional[str] = ..., device_id: _Optional[str] = ..., end_sessions: _Optional[bool] = ...) -> None: ...

class RemoveDeviceResponse(_message.Message):
    __slots__ = ("ended_sessions",)
    ENDED_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    ended_sessions: _containers.RepeatedCompositeFieldContainer[_common_pb2.Session]
    def __init__(self, ended_sessions: _Optional[_Iterable[_Union[_common_pb2.Session, _Mapping]]] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("team_id", "include_ended", "page_size", "page_token", "user_id")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ENDED_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    include_ended: bool
    page_size: int
    page_token: str
    user_id: str
    def __init__(self, team_id: _Optional[str] = ..., include_ended: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "next_page_token")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[_common_pb2.Session]
    next_page_token: str
    def __init__(self, sessions: _Optional[_Iterable[_Union[_common_pb2.Session, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class EndSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class EndSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _common_pb2.Session
    def __init__(self, session: _Optional[_Union[_common_pb2.Session, _Mapping]] = ...) -> None: ...

class GetUsageReportRequest(_message.Message):
    __slots__ = ("team_id", "start_time", "end_time", "user_id", "product_id")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    user_id: str
    product_id: str
    def __init__(self, team_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., user_id: _Optional[str] = ..., product_id: _Optional[str] = ...) -> None: ...

class GetUsageReportResponse(_message.Message):
    __slots__ = ("rows", "total_tokens_charged", "packs", "total_sessions", "total_active_seconds")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_CHARGED_FIELD_NUMBER: _ClassVar[int]
    PACKS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ACTIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[_common_pb2.UsageRow]
    total_tokens_charged: int
    packs: _containers.RepeatedCompositeFieldContainer[_common_pb2.PackUsage]
    total_sessions: int
    total_active_seconds: int
    def __init__(self, rows: _Optional[_Iterable[_Union[_common_pb2.UsageRow, _Mapping]]] = ..., total_tokens_charged: _Optional[int] = ..., packs: _Optional[_Iterable[_Union[_common_pb2.PackUsage, _Mapping]]] = ..., total_sessions: _Optional[int] = ..., total_active_seconds: _Optional[int] = ...) -> None: ...

class CreateAdminKeyRequest(_message.Message):
    __slots__ = ("display_name", "team_ids")
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    TEAM_IDS_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    team_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, display_name: _Optional[str] = ..., team_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateAdminKeyResponse(_message.Message):
    __slots__ = ("admin_key", "key")
    ADMIN_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    admin_key: str
    key: _common_pb2.AdminKey
    def __init__(self, admin_key: _Optional[str] = ..., key: _Optional[_Union[_common_pb2.AdminKey, _Mapping]] = ...) -> None: ...

class ListAdminKeysRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAdminKeysResponse(_message.Message):
    __slots__ = ("keys", "next_page_token")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[_common_pb2.AdminKey]
    next_page_token: str
    def __init__(self, keys: _Optional[_Iterable[_Union[_common_pb2.AdminKey, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RevokeAdminKeyRequest(_message.Message):
    __slots__ = ("admin_key_id",)
    ADMIN_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    admin_key_id: str
    def __init__(self, admin_key_id: _Optional[str] = ...) -> None: ...

class RevokeAdminKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: _common_pb2.AdminKey
    def __init__(self, key: _Optional[_Union[_common_pb2.AdminKey, _Mapping]] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("team_id", "page_size", "page_token")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    page_size: int
    page_token: str
    def __init__(self, team_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_common_pb2.AuditEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[_common_pb2.AuditEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListSubscriptionsRequest(_message.Message):
    __slots__ = ("user_id", "product_id", "include_ended", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ENDED_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    product_id: str
    include_ended: bool
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., product_id: _Optional[str] = ..., include_ended: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSubscriptionsResponse(_message.Message):
    __slots__ = ("subscriptions", "next_page_token")
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subscriptions: _containers.RepeatedCompositeFieldContainer[_common_pb2.Subscription]
    next_page_token: str
    def __init__(self, subscriptions: _Optional[_Iterable[_Union[_common_pb2.Subscription, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class EndSubscriptionRequest(_message.Message):
    __slots__ = ("subscription_id",)
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    def __init__(self, subscription_id: _Optional[str] = ...) -> None: ...

class EndSubscriptionResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: _common_pb2.Subscription
    def __init__(self, subscription: _Optional[_Union[_common_pb2.Subscription, _Mapping]] = ...) -> None: ...

class SearchUsersRequest(_message.Message):
    __slots__ = ("query", "team_id", "page_size", "page_token")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    query: str
    team_id: str
    page_size: int
    page_token: str
    def __init__(self, query: _Optional[str] = ..., team_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SearchUsersResponse(_message.Message):
    __slots__ = ("users", "next_page_token")
    USERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[_common_pb2.UserSummary]
    next_page_token: str
    def __init__(self, users: _Optional[_Iterable[_Union[_common_pb2.UserSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
