from tessera_api.tessera.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntitleRequest(_message.Message):
    __slots__ = ("product_id", "product_version", "platform", "device_id", "parent_session_id", "request_id", "takeover", "team_id")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TAKEOVER_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    product_version: str
    platform: _common_pb2.Platform
    device_id: str
    parent_session_id: str
    request_id: str
    takeover: bool
    team_id: str
    def __init__(self, product_id: _Optional[str] = ..., product_version: _Optional[str] = ..., platform: _Optional[_Union[_common_pb2.Platform, str]] = ..., device_id: _Optional[str] = ..., parent_session_id: _Optional[str] = ..., request_id: _Optional[str] = ..., takeover: _Optional[bool] = ..., team_id: _Optional[str] = ...) -> None: ...

class EntitleResponse(_message.Message):
    __slots__ = ("session", "lease")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    session: _common_pb2.Session
    lease: _common_pb2.SignedLease
    def __init__(self, session: _Optional[_Union[_common_pb2.Session, _Mapping]] = ..., lease: _Optional[_Union[_common_pb2.SignedLease, _Mapping]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("session_id", "seconds_since_activity")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SINCE_ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    seconds_since_activity: int
    def __init__(self, session_id: _Optional[str] = ..., seconds_since_activity: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("session", "lease")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    session: _common_pb2.Session
    lease: _common_pb2.SignedLease
    def __init__(self, session: _Optional[_Union[_common_pb2.Session, _Mapping]] = ..., lease: _Optional[_Union[_common_pb2.SignedLease, _Mapping]] = ...) -> None: ...

class IdleRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class IdleResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _common_pb2.Session
    def __init__(self, session: _Optional[_Union[_common_pb2.Session, _Mapping]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _common_pb2.Session
    def __init__(self, session: _Optional[_Union[_common_pb2.Session, _Mapping]] = ...) -> None: ...

class GetSigningKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSigningKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[_common_pb2.SigningKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[_common_pb2.SigningKey, _Mapping]]] = ...) -> None: ...

class ListMyProductsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListMyProductsResponse(_message.Message):
    __slots__ = ("products",)
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[MyProduct]
    def __init__(self, products: _Optional[_Iterable[_Union[MyProduct, _Mapping]]] = ...) -> None: ...

class MyProduct(_message.Message):
    __slots__ = ("product_id", "display_name", "kind", "host_product_id", "daily_rate", "team_ids", "coverage")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    HOST_PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    DAILY_RATE_FIELD_NUMBER: _ClassVar[int]
    TEAM_IDS_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    display_name: str
    kind: _common_pb2.ProductKind
    host_product_id: str
    daily_rate: int
    team_ids: _containers.RepeatedScalarFieldContainer[str]
    coverage: _common_pb2.Coverage
    def __init__(self, product_id: _Optional[str] = ..., display_name: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.ProductKind, str]] = ..., host_product_id: _Optional[str] = ..., daily_rate: _Optional[int] = ..., team_ids: _Optional[_Iterable[str]] = ..., coverage: _Optional[_Union[_common_pb2.Coverage, str]] = ...) -> None: ...
