"""``AsyncAdminClient``: AdminService for tools that administer Tessera (the web portal among them).

    async with client_sdk.AsyncAdminClient("127.0.0.1:50051", admin_key) as admin:
        team = await admin.get_team("alpha")
        members = await admin.assign_users("alpha", ["Ada Lovelace <ada@example.com>"], all_products=True)

The credential is an admin key (a team administrator: RULES AD1) or the operator's admin
token, sent on every call as ``authorization: Bearer <credential>``; the server decides what
it may do, exactly as for grpcurl. Every method names the request's fields as keywords and
returns the generated message of the answer (``tessera_api.tessera.v1.common_pb2``'s
``Team``, ``Member``...), typed by its stubs. Every failure is a ``TesseraError``
(``client_sdk.errors``): a refusal by its reason (``PermissionDenied`` with reason
``NOT_TEAM_ADMIN``...), bad fields as ``InvalidArgument`` whose ``field_violations`` map
each field to what is wrong with it, and an RPC the server does not offer as ``ServerError``
with ``code`` ``UNIMPLEMENTED`` (``unimplemented(error)`` tells).

Calls go through ``client_sdk.failover`` like the product client's: given several servers,
it follows the active one. A read (``Get...``, ``List...``, ``Search...``) is sent again after
any transient failure (``UNAVAILABLE``/``DEADLINE_EXCEEDED``/``CANCELLED``), and so is a change
that carries a ``request_id`` (``purchase_tokens``: the server recognises the repeat and makes
it once). Any other change is sent again only when the failure says that no server made it
(a standby's ``NOT_LEADER``, an ``OVERLOADED`` or ``RATE_LIMITED`` refusal, a connection that
was never made): after no answer in time, a connection lost under the call or ``CANCELLED``
the server may have made it (a second ``create_admin_key`` would make a second key, a second
``accept_invitation`` lose the first one's ``user_key``), so the call raises
``OutcomeUnknown`` instead, its ``cause`` the failure: look before making the change again.
``retry=RetryPolicy(max_attempts=1)`` sends every call once.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from client_sdk._retry import RetryPolicy
from client_sdk.clock import SystemClock
from client_sdk.errors import TesseraError
from client_sdk.failover import Failover, Targets
from client_sdk.transport import TLS, bearer_secret, open_channel
from tessera_api.tessera.v1 import admin_service_pb2 as pb
from tessera_api.tessera.v1 import admin_service_pb2_grpc as pb_grpc
from tessera_api.tessera.v1 import common_pb2

if TYPE_CHECKING:
    from tessera_api.tessera.v1.admin_service_pb2_grpc import AdminServiceAsyncStub

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Item = TypeVar("_Item")

#: The most tokens one PurchaseTokens buys (docs/api.md): the server refuses more, and
#: past 2**63 the request cannot even be built (a ValueError out of protobuf).
MAX_PURCHASE_TOKENS = 1_000_000_000


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


_PageT = TypeVar("_PageT", bound=_Page)


def unimplemented(error: TesseraError) -> bool:
    """Whether ``error`` says the server does not offer the call (an older server)."""
    return error.code == grpc.StatusCode.UNIMPLEMENTED


def timestamp(t: datetime | None) -> Timestamp | None:
    """A ``Timestamp`` for an aware ``datetime`` (``None`` stays unset)."""
    if t is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(t)
    return ts


#: What the reads of a whole list (``list_products``, ``list_token_packs``, ``all_members``,
#: ``list_admin_keys``, ``list_subscriptions``) ask for a page: the server's most by default (its
#: ``--max-page-size``; a larger ask gets its most, AIP-158), not its default 100: a
#: 10,000-product rate sheet, which the portal reads on most pages for the products'
#: names, was 100 calls, now 10. A page still ends before 3 MiB, whatever is asked.
WHOLE_LIST_PAGE = 1000


async def pages(
    fetch: Callable[[str], Awaitable[_PageT]],
    items: Callable[[_PageT], Iterable[_Item]],
) -> AsyncIterator[_Item]:
    """Every item of a paged list: ``fetch(page_token)`` answers one page (its
    ``next_page_token`` empty on the last one), ``items`` picks the page's items."""
    token = ""
    while True:
        page = await fetch(token)
        for item in items(page):
            yield item
        token = page.next_page_token
        if not token:
            return


#: The most the admin client receives in one answer: what the server sends at most.
ANSWER_BYTES = 64 << 20


class AsyncAdminClient:
    """AdminService with one credential, for asyncio code (``async with`` or ``close()``).

    ``target`` is ``host:port`` (or ``targets``: a deployment's servers); ``credential`` the
    admin key or the operator's token, checked as ``AsyncClient``'s ``user_key`` is
    (surrounding whitespace, such as the newline of a token file, is dropped; one that
    cannot be sent in a header is a ``ValueError`` here); ``tls`` as for ``AsyncClient``.
    """

    def __init__(
        self,
        target: str | None = None,
        credential: str = "",
        *,
        targets: Sequence[str] | None = None,
        tls: TLS | bool = False,
        retry: RetryPolicy | None = None,
        channel_options: Sequence[tuple[str, int | str]] = (),
    ) -> None:
        credential = bearer_secret("credential (an admin key or the operator's token)", credential)
        if (target is None) == (targets is None):
            raise ValueError("give the server as target, or several as targets (not both)")
        self.targets = Targets([target] if target is not None else targets or ())
        self.retry = retry or RetryPolicy()
        if isinstance(tls, TLS):  # files it cannot use: a ValueError naming them, here
            tls.credentials()
        self._tls = tls
        # What the server may send (a bulk assignment's members, a year's usage report)
        # is past gRPC's default 4 MiB; ``channel_options`` may say otherwise.
        options = dict([("grpc.max_receive_message_length", ANSWER_BYTES), *channel_options])
        self._channel_options = tuple(options.items())
        self._metadata = (("authorization", f"Bearer {credential}"),)
        self._calls: Failover[AdminServiceAsyncStub] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        calls, self._calls = self._calls, None
        if calls is not None:
            await calls.close()

    async def _call(
        self,
        method: Callable[[AdminServiceAsyncStub], grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp]],
        request: _Req,
    ) -> _Resp:
        if self._calls is None:
            self._calls = Failover(
                self.targets,
                lambda address: open_channel(address, self._tls, self._channel_options),
                pb_grpc.AdminServiceStub,
                retry=self.retry,
                clock=SystemClock(),
                rng=random.Random(),  # noqa: S311 - jitter, not cryptography
            )
        return await self._calls.call(
            method, request, self._metadata, idempotent=_repeatable(request)
        )

    # -- the server ------------------------------------------------------------------------

    async def get_server_info(self) -> pb.GetServerInfoResponse:
        return await self._call(lambda s: s.GetServerInfo, pb.GetServerInfoRequest())

    async def advance_clock(self, *, to_time: datetime) -> datetime:
        request = pb.AdvanceClockRequest(to_time=timestamp(to_time))
        return (await self._call(lambda s: s.AdvanceClock, request)).now.ToDatetime(
            tzinfo=to_time.tzinfo
        )

    # -- teams and tokens --------------------------------------------------------------------

    async def create_team(
        self,
        team_id: str,
        display_name: str = "",
        plan: common_pb2.Plan = common_pb2.PLAN_UNSPECIFIED,
    ) -> common_pb2.Team:
        request = pb.CreateTeamRequest(team_id=team_id, display_name=display_name, plan=plan)
        return (await self._call(lambda s: s.CreateTeam, request)).team

    async def get_team(self, team_id: str) -> common_pb2.Team:
        return (await self._call(lambda s: s.GetTeam, pb.GetTeamRequest(team_id=team_id))).team

    async def list_teams(self, page_size: int = 0, page_token: str = "") -> pb.ListTeamsResponse:
        request = pb.ListTeamsRequest(page_size=page_size, page_token=page_token)
        return await self._call(lambda s: s.ListTeams, request)

    async def all_teams(self) -> list[common_pb2.Team]:
        """Every team the credential may see (all pages)."""
        return [t async for t in pages(lambda p: self.list_teams(page_token=p), _teams)]

    async def update_team_settings(
        self,
        team_id: str,
        *,
        display_name: str = "",
        low_balance_threshold: int | None = None,
        guest_default_assignments: bool | None = None,
        plan: common_pb2.Plan = common_pb2.PLAN_UNSPECIFIED,
    ) -> common_pb2.Team:
        """UpdateTeamSettings: what is given changes (``plan``: unspecified leaves it)."""
        request = pb.UpdateTeamSettingsRequest(
            team_id=team_id, display_name=display_name, plan=plan
        )
        if low_balance_threshold is not None:
            request.low_balance_threshold = low_balance_threshold
        if guest_default_assignments is not None:
            request.guest_default_assignments = guest_default_assignments
        return (await self._call(lambda s: s.UpdateTeamSettings, request)).team

    async def purchase_tokens(
        self, team_id: str, tokens: int, request_id: str
    ) -> common_pb2.TokenPack:
        request = pb.PurchaseTokensRequest(team_id=team_id, tokens=tokens, request_id=request_id)
        return (await self._call(lambda s: s.PurchaseTokens, request)).token_pack

    async def move_token_pack(
        self, pack_id: str, to_team_id: str, *, from_team_id: str = ""
    ) -> common_pb2.TokenPack:
        """MoveTokenPack (RULES T5): the pack, now ``to_team_id``'s; with ``from_team_id``,
        only while the pack is still that team's (else ``FailedPrecondition``, PACK_MOVED)."""
        request = pb.MoveTokenPackRequest(
            pack_id=pack_id, to_team_id=to_team_id, from_team_id=from_team_id
        )
        return (await self._call(lambda s: s.MoveTokenPack, request)).token_pack

    async def list_token_packs(self, team_id: str) -> list[common_pb2.TokenPack]:
        async def fetch(token: str) -> pb.ListTokenPacksResponse:
            request = pb.ListTokenPacksRequest(
                team_id=team_id, page_size=WHOLE_LIST_PAGE, page_token=token
            )
            return await self._call(lambda s: s.ListTokenPacks, request)

        return [p async for p in pages(fetch, lambda r: r.packs)]

    async def list_ledger_entries(
        self, team_id: str, page_size: int = 0, page_token: str = "", order_by: str = ""
    ) -> pb.ListLedgerEntriesResponse:
        """A page of the team's ledger, oldest first; ``order_by="time desc"``: newest first."""
        request = pb.ListLedgerEntriesRequest(
            team_id=team_id, page_size=page_size, page_token=page_token, order_by=order_by
        )
        return await self._call(lambda s: s.ListLedgerEntries, request)

    async def get_usage_report(
        self,
        team_id: str,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        *,
        user_id: str = "",
        product_id: str = "",
    ) -> pb.GetUsageReportResponse:
        request = pb.GetUsageReportRequest(
            team_id=team_id,
            start_time=timestamp(start_time),
            end_time=timestamp(end_time),
            user_id=user_id,
            product_id=product_id,
        )
        return await self._call(lambda s: s.GetUsageReport, request)

    # -- the rate sheet ------------------------------------------------------------------------

    async def list_products(self) -> list[common_pb2.Product]:
        async def fetch(token: str) -> pb.ListProductsResponse:
            request = pb.ListProductsRequest(page_size=WHOLE_LIST_PAGE, page_token=token)
            return await self._call(lambda s: s.ListProducts, request)

        return [p async for p in pages(fetch, lambda r: r.products)]

    async def upsert_product(self, product: common_pb2.Product) -> common_pb2.Product:
        request = pb.UpsertProductRequest(product=product)
        return (await self._call(lambda s: s.UpsertProduct, request)).product

    # -- users and access ------------------------------------------------------------------------

    async def assign_users(
        self,
        team_id: str,
        users: Sequence[str],
        *,
        product_ids: Sequence[str] = (),
        all_products: bool = False,
        guest: bool | None = None,
        import_: bool = False,
        members_only: bool = False,
    ) -> list[common_pb2.Member]:
        """AssignUsers (or ImportUsers with ``import_``): each user an id or ``Name <email>``;
        ``guest`` None leaves existing members as they are (new ones are not guests);
        ``members_only``: each must be a member already (else ``NotFound``, UNKNOWN_USER,
        and nothing changes)."""
        if import_ and members_only:
            raise ValueError("members_only is AssignUsers': ImportUsers adds users")
        request = pb.AssignUsersRequest(
            team_id=team_id,
            users=users,
            product_ids=product_ids,
            all_products=all_products,
            guest=guest,
            members_only=members_only,
        )
        if import_:
            imported = pb.ImportUsersRequest.FromString(request.SerializeToString())
            return list((await self._call(lambda s: s.ImportUsers, imported)).members)
        return list((await self._call(lambda s: s.AssignUsers, request)).members)

    async def unassign_user(self, team_id: str, user_id: str) -> None:
        request = pb.UnassignUserRequest(team_id=team_id, user_id=user_id)
        await self._call(lambda s: s.UnassignUser, request)

    async def set_user_products(
        self,
        team_id: str,
        user_id: str,
        *,
        product_ids: Sequence[str] = (),
        all_products: bool = False,
    ) -> common_pb2.Member:
        request = pb.SetUserProductsRequest(
            team_id=team_id, user_id=user_id, product_ids=product_ids, all_products=all_products
        )
        return (await self._call(lambda s: s.SetUserProducts, request)).member

    async def get_member(self, team_id: str, user_id: str) -> common_pb2.Member:
        request = pb.GetMemberRequest(team_id=team_id, user_id=user_id)
        return (await self._call(lambda s: s.GetMember, request)).member

    async def list_members(
        self, team_id: str, *, product_id: str = "", page_size: int = 0, page_token: str = ""
    ) -> pb.ListMembersResponse:
        """A page of the team's members; with ``product_id`` only those who may run it,
        each with its ``access_via`` (RULES AD4)."""
        request = pb.ListMembersRequest(
            team_id=team_id, product_id=product_id, page_size=page_size, page_token=page_token
        )
        return await self._call(lambda s: s.ListMembers, request)

    async def all_members(self, team_id: str, *, product_id: str = "") -> list[common_pb2.Member]:
        fetch = lambda token: self.list_members(  # noqa: E731
            team_id, product_id=product_id, page_size=WHOLE_LIST_PAGE, page_token=token
        )
        return [m async for m in pages(fetch, lambda r: r.members)]

    async def search_users(
        self, query: str, *, team_id: str = "", page_size: int = 0, page_token: str = ""
    ) -> pb.SearchUsersResponse:
        request = pb.SearchUsersRequest(
            query=query, team_id=team_id, page_size=page_size, page_token=page_token
        )
        return await self._call(lambda s: s.SearchUsers, request)

    async def set_default_assignments(
        self, team_id: str, product_ids: Sequence[str]
    ) -> common_pb2.Team:
        request = pb.SetDefaultAssignmentsRequest(team_id=team_id, product_ids=product_ids)
        return (await self._call(lambda s: s.SetDefaultAssignments, request)).team

    async def resend_invitation(self, team_id: str, user_id: str) -> common_pb2.Invitation:
        request = pb.ResendInvitationRequest(team_id=team_id, user_id=user_id)
        return (await self._call(lambda s: s.ResendInvitation, request)).invitation

    async def accept_invitation(self, invitation_token: str) -> pb.AcceptInvitationResponse:
        request = pb.AcceptInvitationRequest(invitation_token=invitation_token)
        return await self._call(lambda s: s.AcceptInvitation, request)

    async def issue_user_key(self, user_id: str) -> str:
        request = pb.IssueUserKeyRequest(user_id=user_id)
        return (await self._call(lambda s: s.IssueUserKey, request)).user_key

    async def list_notifications(
        self,
        *,
        team_id: str = "",
        user_id: str = "",
        kinds: Iterable[common_pb2.NotificationKind] = (),
        order_by: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListNotificationsResponse:
        """A page of the outbox; ``kinds`` only those (none: every kind), ``order_by``
        "time desc" newest first."""
        request = pb.ListNotificationsRequest(
            team_id=team_id,
            user_id=user_id,
            kinds=kinds,
            order_by=order_by,
            page_size=page_size,
            page_token=page_token,
        )
        return await self._call(lambda s: s.ListNotifications, request)

    # -- subscriptions and trials ------------------------------------------------------------------

    async def list_subscriptions(
        self, *, user_id: str = "", product_id: str = "", include_ended: bool = False
    ) -> list[common_pb2.Subscription]:
        """Every subscription and trial of the user, the product or both (RULES AD3), by
        start time then id: read a page at a time (a product's can be tens of thousands)."""

        async def fetch(token: str) -> pb.ListSubscriptionsResponse:
            request = pb.ListSubscriptionsRequest(
                user_id=user_id,
                product_id=product_id,
                include_ended=include_ended,
                page_size=WHOLE_LIST_PAGE,
                page_token=token,
            )
            return await self._call(lambda s: s.ListSubscriptions, request)

        return [s async for s in pages(fetch, lambda r: r.subscriptions)]

    # -- devices and sessions ------------------------------------------------------------------------

    async def list_devices(self, user_id: str, product_id: str = "") -> list[common_pb2.Device]:
        request = pb.ListDevicesRequest(user_id=user_id, product_id=product_id)
        return list((await self._call(lambda s: s.ListDevices, request)).devices)

    async def remove_device(
        self, user_id: str, product_id: str, device_id: str, *, end_sessions: bool = False
    ) -> list[common_pb2.Session]:
        request = pb.RemoveDeviceRequest(
            user_id=user_id, product_id=product_id, device_id=device_id, end_sessions=end_sessions
        )
        return list((await self._call(lambda s: s.RemoveDevice, request)).ended_sessions)

    async def list_sessions(
        self,
        team_id: str = "",
        *,
        user_id: str = "",
        include_ended: bool = False,
        page_size: int = 0,
        page_token: str = "",
    ) -> pb.ListSessionsResponse:
        request = pb.ListSessionsRequest(
            team_id=team_id,
            user_id=user_id,
            include_ended=include_ended,
            page_size=page_size,
            page_token=page_token,
        )
        return await self._call(lambda s: s.ListSessions, request)

    async def end_session(self, session_id: str) -> common_pb2.Session:
        request = pb.EndSessionRequest(session_id=session_id)
        return (await self._call(lambda s: s.EndSession, request)).session

    # -- administration (RULES AD1, AD2) ------------------------------------------------------------

    async def create_admin_key(
        self, display_name: str, team_ids: Sequence[str]
    ) -> pb.CreateAdminKeyResponse:
        """A team administrator's key: ``admin_key`` is the secret, shown once."""
        request = pb.CreateAdminKeyRequest(display_name=display_name, team_ids=team_ids)
        return await self._call(lambda s: s.CreateAdminKey, request)

    async def list_admin_keys(self) -> list[common_pb2.AdminKey]:
        async def fetch(token: str) -> pb.ListAdminKeysResponse:
            request = pb.ListAdminKeysRequest(page_size=WHOLE_LIST_PAGE, page_token=token)
            return await self._call(lambda s: s.ListAdminKeys, request)

        return [k async for k in pages(fetch, lambda r: r.keys)]

    async def revoke_admin_key(self, admin_key_id: str) -> common_pb2.AdminKey:
        request = pb.RevokeAdminKeyRequest(admin_key_id=admin_key_id)
        return (await self._call(lambda s: s.RevokeAdminKey, request)).key

    async def list_audit_events(
        self, team_id: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> pb.ListAuditEventsResponse:
        request = pb.ListAuditEventsRequest(
            team_id=team_id, page_size=page_size, page_token=page_token
        )
        return await self._call(lambda s: s.ListAuditEvents, request)


def _teams(response: pb.ListTeamsResponse) -> Iterable[common_pb2.Team]:
    return response.teams


#: The requests of the calls that only read (AIP-131, -132, and the searches).
_READS = ("Get", "List", "Search")


def _repeatable(request: object) -> bool:
    """Whether sending ``request`` twice does no more than sending it once: a read, or a
    change whose ``request_id`` lets the server recognise the repeat (RULES T1)."""
    if type(request).__name__.startswith(_READS):
        return True
    return bool(getattr(request, "request_id", ""))
