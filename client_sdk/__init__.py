"""Tessera client SDK: what products and plugins use to ask whether their user may run them.

    import client_sdk

    async with client_sdk.AsyncClient("127.0.0.1:50051", user_key) as client:
        async with client.session("ACAD", "2026") as s:
            ...             # the product runs; the SDK heartbeats in the background
            s.touch()       # whenever the user does something meaningful
            async with s.plugin("ARNOLD") as p:
                ...

``Client`` is the same for code without an event loop (``with`` instead of
``async with``). Given the servers of a deployment with a standby
(``AsyncClient(targets=["127.0.0.1:50051", "127.0.0.1:50052"], user_key=key)``),
the client finds the active one and follows it through a takeover; sessions
keep their id and lease (``client_sdk.failover``). Every refusal is a ``TesseraError`` subclass chosen by the
server's reason (``InsufficientTokens``, ``RunningElsewhere``, ...); the
generated protobuf types stay reachable under ``tessera_api`` but are
never needed.

Every lease the server sends is signed, and the SDK verifies it before the
product runs on it (``client_sdk.leases``): ``s.lease`` is the last verified one,
a forged or altered one raises (or ends the session with) ``LeaseInvalid``.
A product that stored a lease checks it again at its next start, offline::

    lease = client_sdk.verify_lease(
        stored, keys, user_id=user_id, device_id=device_id, product_id="ACAD"
    )

which refuses (``LeaseInvalid``) a lease that is forged, made for another user,
device or product, or over on the wall clock (``LeaseExpired``; pass ``now=`` or
``clock=`` to check at another instant; ``leeway=``, 60 s by default, is how far the
product's clock may run ahead of the server's). ``verify_lease_signature(stored, keys)``
checks the signature alone: neither expiry nor binding.

Tools that administer Tessera (the web portal among them) use ``AsyncAdminClient``
(``client_sdk.admin``): AdminService with an admin key or the operator's token, one typed
method per RPC, refusals as the same ``TesseraError`` tree.
"""

from client_sdk._retry import RetryPolicy
from client_sdk.admin import AsyncAdminClient
from client_sdk.client import AsyncClient, new_request_id
from client_sdk.clock import Clock, ManualClock, SystemClock
from client_sdk.device import default_device_id, default_platform, device_id_for
from client_sdk.errors import (
    AlreadyExists,
    ClientClosed,
    DeadlineExceeded,
    DeviceLimit,
    FailedPrecondition,
    HostSessionRequired,
    IdleNotSupported,
    InsufficientTokens,
    InvalidArgument,
    InvitationExpired,
    InvitationPending,
    LeaseExpired,
    LeaseInvalid,
    NotAssigned,
    NotFound,
    NotLeader,
    OutcomeUnknown,
    Overloaded,
    PermissionDenied,
    ResourceExhausted,
    RunningElsewhere,
    ServerError,
    SessionEnded,
    SessionLimit,
    TesseraError,
    Unauthenticated,
    Unavailable,
    UnknownProduct,
    UnknownSession,
    UnknownSigningKey,
    UnsupportedPlatform,
    UnsupportedVersion,
)
from client_sdk.leases import (
    load_signing_keys,
    save_signing_keys,
    verify_lease,
    verify_lease_signature,
)
from client_sdk.models import (
    ChargeState,
    Coverage,
    EndReason,
    Lease,
    MyProduct,
    Plan,
    Platform,
    ProductKind,
    Session,
    SessionState,
)
from client_sdk.session import AsyncSessionHandle, SessionOptions
from client_sdk.sync import Client, SessionHandle
from client_sdk.transport import TLS

__all__ = [
    "TLS",
    "AlreadyExists",
    "AsyncAdminClient",
    "AsyncClient",
    "AsyncSessionHandle",
    "ChargeState",
    "Client",
    "ClientClosed",
    "Clock",
    "Coverage",
    "DeadlineExceeded",
    "DeviceLimit",
    "EndReason",
    "FailedPrecondition",
    "HostSessionRequired",
    "IdleNotSupported",
    "InsufficientTokens",
    "InvalidArgument",
    "InvitationExpired",
    "InvitationPending",
    "Lease",
    "LeaseExpired",
    "LeaseInvalid",
    "ManualClock",
    "MyProduct",
    "NotAssigned",
    "NotFound",
    "NotLeader",
    "OutcomeUnknown",
    "Overloaded",
    "PermissionDenied",
    "Plan",
    "Platform",
    "ProductKind",
    "ResourceExhausted",
    "RetryPolicy",
    "RunningElsewhere",
    "ServerError",
    "Session",
    "SessionEnded",
    "SessionHandle",
    "SessionLimit",
    "SessionOptions",
    "SessionState",
    "SystemClock",
    "TesseraError",
    "Unauthenticated",
    "Unavailable",
    "UnknownProduct",
    "UnknownSession",
    "UnknownSigningKey",
    "UnsupportedPlatform",
    "UnsupportedVersion",
    "default_device_id",
    "default_platform",
    "device_id_for",
    "load_signing_keys",
    "new_request_id",
    "save_signing_keys",
    "verify_lease",
    "verify_lease_signature",
]
