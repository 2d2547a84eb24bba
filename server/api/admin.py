"""AdminService: thin translation between protobuf and the engine's use cases."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from google.protobuf.message import Message

from server.api import convert as cv
from server.api import paging
from server.api.caller import current_caller
from server.domain.admins import AdminKey, AuditEvent
from server.domain.coverage import SubscriptionKind, by_start
from server.domain.directory import AccessVia, Member, Notification, by_user_id
from server.domain.errors import InvalidArgument, Problems
from server.domain.instants import micros
from server.domain.ledger import LedgerEntry, TokenPack
from server.domain.products import Product
from server.domain.teams import Team
from server.engine import Engine
from server.engine.usage import UsageReport
from server.ha.gate import NodeInfo, server_info
from server.loops import LET_GO_AT_ONCE, let_go
from tessera_api.tessera.v1 import admin_service_pb2 as api
from tessera_api.tessera.v1 import admin_service_pb2_grpc

Ctx = Any
_T = TypeVar("_T")
_M = TypeVar("_M", bound=Message)


# The order and page position of each paged list (unique, stable keys).
def _team_key(t: Team) -> str:
    return t.team_id


def _product_key(p: Product) -> str:
    return p.product_id


def _pair_key(pair: tuple[Member, Any]) -> str:
    return by_user_id(pair[0])


def _seq(x: LedgerEntry | AuditEvent) -> str:
    """A ledger entry's or an audit event's place: its sequence number."""
    return str(x.seq)


def _notification_key(n: Notification) -> str:
    return n.notification_id  # ids grow with time: the order they were made


def _admin_key_key(k: AdminKey) -> str:
    """Creation time (microseconds, fixed width), then id: oldest first."""
    return f"{micros(k.create_time):020d}.{k.admin_key_id}"


def _pack_key(p: TokenPack) -> str:
    """Purchase time (microseconds, fixed width), then id: ListTokenPacks' order."""
    return f"{micros(p.purchase_time):020d}.{p.pack_id}"


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, engine: Engine, node: Callable[[], NodeInfo] | None = None) -> None:
        self.e = engine
        self.node = node or (lambda: NodeInfo("", True, ""))  # RULES H1: this server's role

    def _window(
        self, request: Any, kind: str, items: Sequence[_T], key: Callable[[_T], str]
    ) -> tuple[list[_T], str, str]:
        """A page of a list sorted by ``key`` (AIP-158), as ListSessions pages, the next
        page's token, and the kind of query that token is bound to (``paging.fitted``)."""
        kind = paging.of_query(kind, request)
        page, token = paging.paginate(
            items, key, kind, request.page_size, request.page_token, self.e.max_page_size
        )
        return page, token, kind

    def _cursor(self, request: Any, kind: str) -> tuple[int, str, str | None]:
        """A paged request's size (AIP-158: the default for 0, at most the server's
        maximum), the kind of query its token is bound to, and the key its page starts
        after (None: the first page), for a list read from its page's start."""
        size = paging.page_size(request.page_size, limit=self.e.max_page_size)
        kind = paging.of_query(kind, request)
        return size, kind, paging.decode(request.page_token, kind)

    def _page(
        self,
        request: Any,
        kind: str,
        items: Sequence[_T],
        key: Callable[[_T], str],
        out: Callable[[_T], _M],
    ) -> tuple[list[_M], str]:
        """``_window``'s page as its items' messages (``out``) and the next page's token,
        the page cut short of a client's 4 MiB (``paging.fitted``)."""
        page, token, kind = self._window(request, kind, items, key)
        return paging.fitted(page, map(out, page), token, kind, key)

    async def _team(self, team: Team) -> Any:
        ledger, team_id = self.e.ledger, team.team_id
        forecast = await self.e.accounts.forecast(team_id)
        return cv.team_out(team, ledger.available(team_id), ledger.held(team_id), forecast)

    # -- server and clock ----------------------------------------------------

    async def GetServerInfo(self, request: api.GetServerInfoRequest, context: Ctx) -> Any:
        return server_info(self.node(), self.e.now(), self.e.clock.is_test)

    async def AdvanceClock(self, request: api.AdvanceClockRequest, context: Ctx) -> Any:
        which = request.WhichOneof("target")
        if which == "to_time":
            to = cv.from_ts(request.to_time, "to_time")
            now = await self.e.advance_clock(to, None)
        elif which == "by":
            seconds = cv.from_duration(request.by, "by")
            if seconds > 100 * 366 * 86400:
                raise InvalidArgument.field("by", "must be at most 100 years")
            now = await self.e.advance_clock(None, seconds)
        else:
            now = await self.e.advance_clock(None, None)
        return api.AdvanceClockResponse(now=cv.ts(now))

    # -- teams ---------------------------------------------------------------

    async def CreateTeam(self, request: api.CreateTeamRequest, context: Ctx) -> Any:
        bad = Problems()
        plan = bad.check(lambda: cv.plan_in(request.plan))
        team = await self.e.accounts.create_team(request.team_id, request.display_name, plan, bad)
        return api.CreateTeamResponse(team=await self._team(team))

    async def GetTeam(self, request: api.GetTeamRequest, context: Ctx) -> Any:
        return api.GetTeamResponse(team=await self._team(self.e.accounts.team(request.team_id)))

    async def ListTeams(self, request: api.ListTeamsRequest, context: Ctx) -> Any:
        visible = current_caller.get().team_ids  # RULES AD1: a team administrator's only
        teams, token, kind = self._window(
            request, "teams", self.e.accounts.list_teams(visible), _team_key
        )
        answers = [await self._team(t) for t in teams]  # each with its forecast
        answers, token = paging.fitted(teams, answers, token, kind, _team_key)
        return api.ListTeamsResponse(teams=answers, next_page_token=token)

    async def UpdateTeamSettings(self, request: api.UpdateTeamSettingsRequest, context: Ctx) -> Any:
        bad = Problems()
        plan = bad.check(lambda: cv.plan_in(request.plan))
        guests = (
            request.guest_default_assignments
            if request.HasField("guest_default_assignments")
            else None
        )
        threshold = (
            request.low_balance_threshold if request.HasField("low_balance_threshold") else None
        )
        team = await self.e.accounts.update_team_settings(
            request.team_id, plan, guests, request.display_name or None, threshold, bad
        )
        return api.UpdateTeamSettingsResponse(team=await self._team(team))

    # -- tokens --------------------------------------------------------------

    async def PurchaseTokens(self, request: api.PurchaseTokensRequest, context: Ctx) -> Any:
        pack = await self.e.accounts.purchase(request.team_id, request.tokens, request.request_id)
        return api.PurchaseTokensResponse(
            token_pack=cv.pack_out(pack, current_caller.get().team_ids)
        )

    async def ListTokenPacks(self, request: api.ListTokenPacksRequest, context: Ctx) -> Any:
        packs, token = self._page(
            request, "packs", self.e.accounts.list_packs(request.team_id), _pack_key, cv.pack_out
        )
        return api.ListTokenPacksResponse(packs=packs, next_page_token=token)

    async def MoveTokenPack(self, request: api.MoveTokenPackRequest, context: Ctx) -> Any:
        pack = await self.e.accounts.move_pack(
            request.pack_id, request.to_team_id, request.from_team_id
        )
        return api.MoveTokenPackResponse(token_pack=cv.pack_out(pack))

    async def ListLedgerEntries(self, request: api.ListLedgerEntriesRequest, context: Ctx) -> Any:
        size = paging.page_size(request.page_size, limit=self.e.max_page_size)
        newest_first = paging.time_order(request.order_by)
        kind = paging.of_query("ledger", request)  # a token keeps its order and pack
        since = paging.decode_seq(request.page_token, kind) or 0
        entries, token = paging.page_of(
            await self.e.accounts.ledger_page(
                request.team_id, since, size + 1, request.pack_id, newest_first=newest_first
            ),
            size,
            kind,
            _seq,
        )
        answers, token = paging.fitted(
            entries, [cv.entry_out(x) for x in entries], token, kind, _seq
        )
        return api.ListLedgerEntriesResponse(entries=answers, next_page_token=token)

    # -- rate sheet ------------------------------------------------------------

    async def UpsertProduct(self, request: api.UpsertProductRequest, context: Ctx) -> Any:
        if not request.HasField("product"):
            raise InvalidArgument.field("product", "is required")
        product = await self.e.accounts.upsert_product(cv.product_in(request.product))
        return api.UpsertProductResponse(product=cv.product_out(product))

    async def ListProducts(self, request: api.ListProductsRequest, context: Ctx) -> Any:
        products, token = self._page(
            request, "products", self.e.accounts.list_products(), _product_key, cv.product_out
        )
        return api.ListProductsResponse(products=products, next_page_token=token)

    # -- users and access (RULES §3) ------------------------------------------------

    def _member(self, member: Member, via: AccessVia | None = None) -> Any:
        d = self.e.directory
        return cv.member_out(
            member,
            d.find_user(member.user_id),
            self.e.access.effective(member),
            d.invitation(member.invitation_id),
            self.e.now(),
            via,
        )

    async def AssignUsers(self, request: api.AssignUsersRequest, context: Ctx) -> Any:
        members = await self.e.access.assign(
            request.team_id,
            list(request.users),
            list(request.product_ids),
            request.all_products,
            request.guest if request.HasField("guest") else None,
            import_=False,
            members_only=request.members_only,
        )
        return api.AssignUsersResponse(members=[self._member(m) for m in members])

    async def ImportUsers(self, request: api.ImportUsersRequest, context: Ctx) -> Any:
        members = await self.e.access.assign(
            request.team_id,
            list(request.users),
            list(request.product_ids),
            request.all_products,
            request.guest if request.HasField("guest") else None,
            import_=True,
        )
        return api.ImportUsersResponse(members=[self._member(m) for m in members])

    async def UnassignUser(self, request: api.UnassignUserRequest, context: Ctx) -> Any:
        await self.e.access.unassign(request.team_id, request.user_id)
        return api.UnassignUserResponse()

    async def SetUserProducts(self, request: api.SetUserProductsRequest, context: Ctx) -> Any:
        member = await self.e.access.set_user_products(
            request.team_id, request.user_id, list(request.product_ids), request.all_products
        )
        return api.SetUserProductsResponse(member=self._member(member))

    async def GetMember(self, request: api.GetMemberRequest, context: Ctx) -> Any:
        member = self.e.access.member(request.team_id, request.user_id)
        return api.GetMemberResponse(member=self._member(member))

    async def ListMembers(self, request: api.ListMembersRequest, context: Ctx) -> Any:
        if request.product_id:  # RULES AD4: the "By Product" view
            size, kind, after = self._cursor(request, "members")
            # Read from the page's start, and only a page and one: a filter of the whole
            # team for each page was 25 ms a page of a team of 50,000.
            found = self.e.access.members_with(
                request.team_id, request.product_id, after=after, limit=size + 1
            )
            page, token = paging.page_of(found, size, kind, _pair_key)
            granted, token = paging.fitted(
                page, (self._member(*pair) for pair in page), token, kind, _pair_key
            )
            return api.ListMembersResponse(members=granted, next_page_token=token)
        members, token = self._page(
            request, "members", self.e.access.members(request.team_id), by_user_id, self._member
        )
        return api.ListMembersResponse(members=members, next_page_token=token)

    async def SetDefaultAssignments(
        self, request: api.SetDefaultAssignmentsRequest, context: Ctx
    ) -> Any:
        await self.e.access.set_default_assignments(request.team_id, list(request.product_ids))
        return api.SetDefaultAssignmentsResponse(
            team=await self._team(self.e.accounts.team(request.team_id))
        )

    async def ResendInvitation(self, request: api.ResendInvitationRequest, context: Ctx) -> Any:
        invitation, _token = await self.e.access.resend_invitation(request.team_id, request.user_id)
        return api.ResendInvitationResponse(invitation=cv.invitation_out(invitation, self.e.now()))

    async def AcceptInvitation(self, request: api.AcceptInvitationRequest, context: Ctx) -> Any:
        user_id, key = await self.e.access.accept_invitation(request.invitation_token)
        return api.AcceptInvitationResponse(user_id=user_id, user_key=key)

    async def IssueUserKey(self, request: api.IssueUserKeyRequest, context: Ctx) -> Any:
        key = await self.e.access.issue_user_key(request.user_id)
        return api.IssueUserKeyResponse(user_id=request.user_id, user_key=key)

    async def ListNotifications(self, request: api.ListNotificationsRequest, context: Ctx) -> Any:
        kinds = cv.notification_kinds_in(request.kinds)
        lists = self.e.access.notification_lists(
            request.team_id, request.user_id, current_caller.get().team_ids, kinds
        )
        size = paging.page_size(request.page_size, limit=self.e.max_page_size)
        newest_first = paging.time_order(request.order_by)
        kind = paging.of_query("notifications", request)  # a token keeps its order and kinds
        after = paging.decode(request.page_token, kind)
        # Read from the page's start, a page and one, in each list merged: a team's
        # alerts are not looked for among every invitation it ever sent.
        found = paging.merged_page(lists, _notification_key, after, size + 1, newest_first)
        notes, token = paging.page_of(found, size, kind, _notification_key)
        # The tokens, derived for this page only, are the mailer's, that is the
        # operator's: a team administrator who could read one could accept it and
        # hold that user's key (AD1: user keys are the operator's).
        if current_caller.get().team_ids is None:
            notes = self.e.access.with_tokens(notes)
        answers = [cv.notification_out(n) for n in notes]
        answers, token = paging.fitted(notes, answers, token, kind, _notification_key)
        return api.ListNotificationsResponse(notifications=answers, next_page_token=token)

    async def SearchUsers(self, request: api.SearchUsersRequest, context: Ctx) -> Any:
        """RULES AD4: within the caller's teams (the operator: every user)."""
        visible = current_caller.get().team_ids
        size, kind, after = self._cursor(request, "users")
        users, more = self.e.access.search_users(
            request.query, request.team_id, visible, after or "", size
        )
        team_ids = self.e.access.user_teams
        answers, token = paging.fitted(
            users,
            [cv.user_summary_out(u, team_ids(u.user_id, visible)) for u in users],
            paging.encode(kind, users[-1].user_id) if more else "",
            kind,
            lambda u: u.user_id,
        )
        return api.SearchUsersResponse(users=answers, next_page_token=token)

    # -- subscriptions and trials (RULES C1, C2, AD3) ------------------------------

    async def GrantSubscription(self, request: api.GrantSubscriptionRequest, context: Ctx) -> Any:
        bad = Problems()
        start = bad.check(lambda: cv.instant_in(request, "start_time"))
        end = bad.check(lambda: cv.instant_in(request, "end_time"))
        sub = await self.e.access.grant(
            request.user_id, request.product_id, start, end, SubscriptionKind.SUBSCRIPTION, bad
        )
        return api.GrantSubscriptionResponse(subscription=cv.subscription_out(sub))

    async def StartTrial(self, request: api.StartTrialRequest, context: Ctx) -> Any:
        bad = Problems()
        end = bad.check(lambda: cv.instant_in(request, "end_time"))
        sub = await self.e.access.grant(
            request.user_id, request.product_id, None, end, SubscriptionKind.TRIAL, bad
        )
        return api.StartTrialResponse(subscription=cv.subscription_out(sub))

    async def ListSubscriptions(self, request: api.ListSubscriptionsRequest, context: Ctx) -> Any:
        size, kind, after = self._cursor(request, "subscriptions")  # user, product, ended
        # Read from the page's start (the lists are kept by start then id), a page and
        # one: a product's whole list was sorted and sent at once (50,000: 0.6-0.8 s).
        found = self.e.access.list_subscriptions(
            request.user_id, request.product_id, request.include_ended, after=after, limit=size + 1
        )
        subs, token = paging.page_of(found, size, kind, by_start)
        answers, token = paging.fitted(subs, map(cv.subscription_out, subs), token, kind, by_start)
        return api.ListSubscriptionsResponse(subscriptions=answers, next_page_token=token)

    async def EndSubscription(self, request: api.EndSubscriptionRequest, context: Ctx) -> Any:
        sub = await self.e.access.end_subscription(request.subscription_id)
        return api.EndSubscriptionResponse(subscription=cv.subscription_out(sub))

    # -- devices and sessions (RULES M8, R2) ---------------------------------------

    async def ListDevices(self, request: api.ListDevicesRequest, context: Ctx) -> Any:
        devices = self.e.sessions.devices(request.user_id, request.product_id)
        return api.ListDevicesResponse(devices=[cv.device_out(d) for d in devices])

    async def RemoveDevice(self, request: api.RemoveDeviceRequest, context: Ctx) -> Any:
        ended = await self.e.sessions.remove_device(
            request.user_id, request.product_id, request.device_id, request.end_sessions
        )
        return api.RemoveDeviceResponse(ended_sessions=[cv.session_out(v) for v in ended])

    async def ListSessions(self, request: api.ListSessionsRequest, context: Ctx) -> Any:
        limit, kind, after = self._cursor(request, "sessions")
        views, last = self.e.sessions.list_sessions(
            request.team_id,
            request.user_id,
            request.include_ended,
            after,
            limit,
            current_caller.get().team_ids,
        )
        answers, token = paging.fitted(
            views,
            [cv.session_out(v) for v in views],
            paging.encode(kind, last) if last else "",
            kind,
            lambda v: v.session.session_id,
        )
        return api.ListSessionsResponse(sessions=answers, next_page_token=token)

    async def EndSession(self, request: api.EndSessionRequest, context: Ctx) -> Any:
        view = await self.e.sessions.end_session(request.session_id)
        return api.EndSessionResponse(session=cv.session_out(view))

    # -- team administrators' keys (RULES AD1) -------------------------------------

    async def CreateAdminKey(self, request: api.CreateAdminKeyRequest, context: Ctx) -> Any:
        key, secret = await self.e.admins.create(request.display_name, list(request.team_ids))
        return api.CreateAdminKeyResponse(admin_key=secret, key=cv.admin_key_out(key))

    async def ListAdminKeys(self, request: api.ListAdminKeysRequest, context: Ctx) -> Any:
        keys, token = self._page(
            request, "admin_keys", self.e.admins.list(), _admin_key_key, cv.admin_key_out
        )
        return api.ListAdminKeysResponse(keys=keys, next_page_token=token)

    async def RevokeAdminKey(self, request: api.RevokeAdminKeyRequest, context: Ctx) -> Any:
        key = await self.e.admins.revoke(request.admin_key_id)
        return api.RevokeAdminKeyResponse(key=cv.admin_key_out(key))

    # -- the usage report (RULES R1) -----------------------------------------------

    async def GetUsageReport(self, request: api.GetUsageReportRequest, context: Ctx) -> Any:
        start = cv.instant_in(request, "start_time")
        end = cv.instant_in(request, "end_time")
        report = await self.e.sessions.usage_report(
            request.team_id, start, end, request.user_id, request.product_id
        )
        # Its messages made, and serialized, on a thread too (``Sessions.usage_report``):
        # the report is this call's own, and 160,000 rows are a second of Python; the
        # edge sends the bytes as they are (``SERIALIZED_AHEAD``).
        managed = current_caller.get().team_ids
        return await asyncio.to_thread(
            lambda: _usage_report_out(report, managed).SerializeToString()
        )

    # -- the audit trail (RULES AD2) -------------------------------------------------

    async def ListAuditEvents(self, request: api.ListAuditEventsRequest, context: Ctx) -> Any:
        if request.team_id:
            self.e.accounts.team(request.team_id)  # UNKNOWN_TEAM
        size = paging.page_size(request.page_size, limit=self.e.max_page_size)
        kind = paging.of_query("audit", request)
        before = paging.decode_seq(request.page_token, kind) or 0  # newest first
        events, token = paging.page_of(
            await self.e.audit.page(request.team_id, before, size + 1), size, kind, _seq
        )
        managed = current_caller.get().team_ids
        answers, token = paging.fitted(
            events,
            [cv.audit_event_out(x, request.team_id, managed) for x in events],
            token,
            kind,
            _seq,
        )
        return api.ListAuditEventsResponse(events=answers, next_page_token=token)


def _usage_report_out(
    report: UsageReport, managed: frozenset[str] | None
) -> api.GetUsageReportResponse:
    """The answer, on a thread: its rows added a slice at a time (one call of
    protobuf's for a year's 286,842 rows held the GIL, and the event loop, 0.37 s),
    and the report freed here as they are, not on the loop."""
    out = api.GetUsageReportResponse(
        total_tokens_charged=report.total_tokens_charged,
        packs=[cv.pack_usage_out(p, managed) for p in report.packs],
        total_sessions=report.total_sessions,
        total_active_seconds=report.total_active_seconds,
    )
    rows = report.rows
    for first in range(0, len(rows), LET_GO_AT_ONCE):
        out.rows.extend([cv.usage_row_out(r) for r in rows[first : first + LET_GO_AT_ONCE]])
    let_go(rows)
    return out
