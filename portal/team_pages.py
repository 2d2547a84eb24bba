"""The pages about one team (``/teams/{team_id}/...``): overview (and moving a pack), usage,
users By User and By Product, invitations, default assignments, sessions and devices,
ledger, audit.

Each GET handler is a ``team_page``: it adds its parts to the team's context (a refusal of
the team itself is the page's message in words); each form is a ``web.form`` that makes one
change through ``change`` (``portal.pages``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from markupsafe import Markup
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from client_sdk.admin import AsyncAdminClient
from client_sdk.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TesseraError,
)
from portal import present
from portal.pages import (
    again,
    change,
    confirmation,
    in_words,
    main_part,
    maybe,
    named,
    operator_only,
    passed_on,
    product_names,
    rate_sheet,
    status_of,
    team_page,
)
from portal.web import Session, form, redirect, render, signed_in, team_url
from tessera_api.tessera.v1 import common_pb2

ALERT_KINDS = {
    common_pb2.NOTIFICATION_KIND_LOW_BALANCE,
    common_pb2.NOTIFICATION_KIND_PACK_EXPIRING,
    common_pb2.NOTIFICATION_KIND_TOKENS_EXHAUSTED,
}


@team_page("overview.html")
async def overview(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    packs = await session.client.list_token_packs(team_id)
    alerts, alerts_error = await maybe(_alerts(session.client, team_id))
    return {
        "packs": packs,
        "alerts": alerts or [],
        "alerts_error": alerts_error,
        "names": await product_names(session) if alerts else {},
        "purchase_id": f"portal-{secrets.token_hex(12)}",
    }


#: The overview's latest alerts.
LATEST_ALERTS = 50


async def _alerts(client: AsyncAdminClient, team_id: str) -> list[common_pb2.Notification]:
    """The team's latest alerts, newest first: one page of those kinds (the team's
    whole outbox was read for them, 101 calls for a team of 10,000 invitations)."""
    page = await client.list_notifications(
        team_id=team_id, kinds=sorted(ALERT_KINDS), order_by="time desc", page_size=LATEST_ALERTS
    )
    return list(page.notifications)


async def _threshold(request: Request, session: Session, data: FormData) -> Response:
    team_id = request.path_params["team_id"]
    try:
        value = present.whole(str(data.get("low_balance_threshold", "")), present.INT64, empty=0)
    except ValueError as exc:
        return await again(request, session, overview, {"low_balance_threshold": str(exc)})
    return await change(
        request,
        session,
        overview,
        session.client.update_team_settings(team_id, low_balance_threshold=value),
        "Low-balance alert turned off."
        if value == 0
        else f"Low-balance alert set at {present.number(value)} tokens.",
        team_url(team_id),
    )


threshold = form(_threshold)


async def _buy(request: Request, session: Session, data: FormData) -> Response:
    """PurchaseTokens with the request id the form was rendered with: a form sent twice
    (a double click, a reload) buys once (RULES T1's idempotency), and says so once."""
    team_id = request.path_params["team_id"]
    try:
        tokens = present.whole(str(data.get("tokens", "")), present.TOKENS)
    except ValueError as exc:
        return await again(request, session, overview, {"tokens": str(exc)})
    return await change(
        request,
        session,
        overview,
        session.client.purchase_tokens(team_id, tokens, str(data.get("request_id", ""))),
        lambda pack: _bought(session, pack),
        team_url(team_id),
    )


def _bought(session: Session, pack: common_pb2.TokenPack) -> str:
    """What a purchase's answer says. A repeat is answered the first purchase's pack,
    which tells nothing of it being one; the session knows the ids it bought with
    (checked and added with no wait between, so of two sends at once one is first)."""
    tokens = present.number(pack.tokens)
    if pack.request_id in session.purchases:
        return Markup(
            "Already bought: this purchase of {} tokens was made at {} (the form was sent twice)."
        ).format(tokens, present.when(pack.purchase_time))
    session.purchases.add(pack.request_id)
    return f"Bought {tokens} tokens."


buy = form(_buy)


# -- moving a pack (RULES T5) -------------------------------------------------------------------


@team_page("move_pack.html")
async def move_pack(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    """T5: the team to move one of this team's packs to, among the other teams the key
    manages (AD1: the pack's team and the destination must both be its; a team
    administrator's ListTeams holds only its own, the operator's every team). A key
    that manages no other team is told so, and offered no form."""
    pack_id = named(request, "pack")
    pack = await _pack_here(session.client, team_id, pack_id)
    teams = [t for t in await session.client.all_teams() if t.team_id != team_id]
    return {
        **confirmation(
            f"Move pack {pack_id} to another team?",
            f"Its {present.number(pack.remaining_tokens)} remaining tokens go with it; "
            "what it already paid for stays in this team's history.",
            (team_url(team_id, "/packs/move", pack=pack_id), "Move pack"),
            team_url(team_id),
            "overview",
        ),
        "pack": pack,
        "teams": teams,
    }


async def _pack_here(client: AsyncAdminClient, team_id: str, pack_id: str) -> common_pb2.TokenPack:
    """The team's pack ``pack_id``. Any other (another team's, or none) is refused as the
    server refuses an unknown pack: no team's page moves another team's pack."""
    for pack in await client.list_token_packs(team_id):
        if pack.pack_id == pack_id:
            return pack
    raise NotFound(
        f"team {team_id!r} has no pack {pack_id!r}",
        code=grpc.StatusCode.NOT_FOUND,
        reason="UNKNOWN_PACK",
    )


async def _move(request: Request, session: Session, data: FormData) -> Response:
    team_id, pack_id = request.path_params["team_id"], named(request, "pack")
    to_team_id = str(data.get("to_team_id", "")).strip()
    if not to_team_id:
        return await again(
            request, session, move_pack, {"to_team_id": "Choose the team to move the pack to."}
        )
    return await change(
        request,
        session,
        move_pack,
        _moved(session.client, team_id, pack_id, to_team_id),
        str,
        team_url(team_id),
    )


async def _moved(client: AsyncAdminClient, team_id: str, pack_id: str, to_team_id: str) -> str:
    """What the move did, in words: moved; or not, the pack having been moved by another
    administrator since the page was drawn (``PACK_MOVED``: it is no longer this team's,
    so the overview, not this pack's page, says so)."""
    try:
        await _move_pack(client, team_id, pack_id, to_team_id)
    except FailedPrecondition as exc:
        if exc.reason != "PACK_MOVED":
            raise
        return MOVED_MEANWHILE.format(team=exc.metadata.get("team_id", "another team"))
    return f"Pack {pack_id} moved to {to_team_id}."


move_token_pack = form(_move)


async def _move_pack(
    client: AsyncAdminClient, team_id: str, pack_id: str, to_team_id: str
) -> common_pb2.TokenPack:
    """MoveTokenPack of one of this team's packs. A pack with tokens on hold
    (``PACK_HAS_HOLDS``) is refused in an administrator's words, and so is a destination
    the key does not manage (``NOT_TEAM_ADMIN`` naming it: on this team's page, "You do
    not manage this team" would name the wrong one)."""
    await _pack_here(client, team_id, pack_id)
    try:  # from this team only: a move by another administrator since is not undone
        return await client.move_token_pack(pack_id, to_team_id, from_team_id=team_id)
    except PermissionDenied as exc:
        if exc.reason != "NOT_TEAM_ADMIN" or exc.metadata.get("team_id") != to_team_id:
            raise
        said = NOT_DESTINATION.format(team=to_team_id)
        raise PermissionDenied(said, code=exc.code, metadata=exc.metadata) from exc
    except FailedPrecondition as exc:
        if exc.reason != "PACK_HAS_HOLDS":
            raise
        held = exc.metadata.get("held_tokens", "")
        said = HAS_HOLDS.format(
            held=f"{present.number(int(held))} of its tokens" if held.isdigit() else "tokens"
        )
        raise FailedPrecondition(
            said, code=exc.code, reason=exc.reason, metadata=exc.metadata
        ) from exc


NOT_DESTINATION = "You do not manage team {team}: a pack moves only to a team you manage."
MOVED_MEANWHILE = (
    "This pack was moved to {team} by another administrator since this page was drawn: "
    "nothing was moved."
)
HAS_HOLDS = (
    "This pack cannot move now: {held} are on hold for sessions started in the last few "
    "minutes (their grace period). Try again in a few minutes, once the hold is charged "
    "or released."
)


# -- usage -----------------------------------------------------------------------------------------


def _range(request: Request, now: datetime) -> tuple[date, date]:
    today = now.astimezone(UTC).date()
    start = present.parse_day(request.query_params.get("from"), today - timedelta(days=29))
    end = present.parse_day(request.query_params.get("to"), today)
    if end < start:
        raise ValueError("the end comes before the start")
    if (end - start).days > 366:
        raise ValueError("at most a year at a time")
    return start, end


async def _now(session: Session) -> datetime:
    info = await session.client.get_server_info()
    return info.now.ToDatetime(tzinfo=UTC)


#: At most this many members make the usage page's user a choice from a list; a larger
#: team types the user's id (one page of ListMembers tells which, never the whole team).
USER_CHOICES = 500

#: At most this many products make a product a choice from a list (Usage, By Product);
#: a larger rate sheet types the product's id: a select of a 10,000-product sheet was
#: 10,000 options (450-530 kB a page).
PRODUCT_CHOICES = 500

#: The refusals of a usage filter, by reason, with the control each is shown next to.
FILTER_REASONS = {"UNKNOWN_USER": "user_id", "UNKNOWN_PRODUCT": "product_id"}


async def _filters(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    """The usage page's narrowing (RULES R1): the user and product asked for, and what its
    form offers: the team's members (or a box to type one in, past ``USER_CHOICES``) and
    the rate sheet. A value the lists do not hold (a former member, an edited link) is
    kept, so the form shows what the report is about."""
    user_id = request.query_params.get("user", "").strip()
    product_id = request.query_params.get("product", "").strip()
    page = await session.client.list_members(team_id, page_size=USER_CHOICES)
    members = None if page.next_page_token else list(page.members)
    products = await rate_sheet(session)
    return {
        "user_id": user_id,
        "product_id": product_id,
        "members": members,
        "user_listed": not user_id or members is None or any(m.user_id == user_id for m in members),
        "products": products,
        "product_listed": not product_id or any(p.product_id == product_id for p in products),
        "product_choices": PRODUCT_CHOICES,
    }


def _filter_errors(exc: TesseraError) -> dict[str, str]:
    """A refusal of the usage filter, in words under the control it names; empty for any
    other refusal (the team's own: the page's message)."""
    control = FILTER_REASONS.get(exc.reason or "")
    if control:
        return {control: in_words(exc)}
    if isinstance(exc, InvalidArgument):
        named_fields = {"user_id", "product_id"} & exc.field_violations.keys()
        return {name: in_words(exc) for name in named_fields}
    return {}


@team_page("usage.html")
async def usage(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    filters = await _filters(request, session, team_id)
    now = await _now(session)
    try:
        start, end = _range(request, now)
    except ValueError as exc:
        # The boxes keep what was typed (a box left empty: the day it stood for).
        today = now.astimezone(UTC).date()
        return {
            **filters,
            "title": "Error: Usage",  # the page's refusal, as a form's (base.html)
            "range_error": f"Dates: {exc}.",
            "from_day": request.query_params.get("from")
            or (today - timedelta(days=29)).isoformat(),
            "to_day": request.query_params.get("to") or today.isoformat(),
            "usage": None,
            "status": 400,
        }
    try:
        report = await session.client.get_usage_report(
            team_id,
            present.day_start(start),
            present.day_start(end + timedelta(days=1)),
            user_id=filters["user_id"],
            product_id=filters["product_id"],
        )
    except TesseraError as exc:
        passed_on(exc)
        errors = _filter_errors(exc)
        if not errors:
            raise
        return {
            **filters,
            "errors": errors,
            "from_day": start.isoformat(),
            "to_day": end.isoformat(),
            "usage": None,
            "status": status_of(exc),
        }
    # A year of a large team is a hundred thousand rows: summed on a thread of their
    # own, not on the loop that serves every call (the portal shares the server's).
    shown, chart = await asyncio.to_thread(_usage_shown, report.rows, start, end)
    held = await session.client.list_token_packs(team_id) if report.packs else []
    packs = present.packs_bought_before(
        report.packs,
        {p.pack_id: p.purchase_time.ToDatetime(tzinfo=UTC) for p in held},
        present.day_start(end + timedelta(days=1)),
    )
    query = {"from": start.isoformat(), "to": end.isoformat()}
    for name, value in (("user", filters["user_id"]), ("product", filters["product_id"])):
        if value:
            query[name] = value
    return {
        **filters,
        "from_day": start.isoformat(),
        "to_day": end.isoformat(),
        "usage": shown,
        "chart": chart,
        "report": report,
        "packs": packs,
        "csv_url": team_url(team_id, "/usage.csv", **query),
    }


def _usage_shown(
    rows: Sequence[common_pb2.UsageRow], start: date, end: date
) -> tuple[present.Usage, dict[str, object]]:
    """The usage page's table and chart of ``rows``, in one trip to a thread."""
    shown = present.usage(rows, start, end)
    return shown, shown.chart()


async def usage_csv(request: Request) -> Response:
    session = signed_in(request)
    team_id = request.path_params["team_id"]
    user_id = request.query_params.get("user", "").strip()
    product_id = request.query_params.get("product", "").strip()
    try:
        start, end = _range(request, await _now(session))
        report = await session.client.get_usage_report(
            team_id,
            present.day_start(start),
            present.day_start(end + timedelta(days=1)),
            user_id=user_id,
            product_id=product_id,
        )
    except ValueError as exc:
        return Response(f"Dates: {exc}.\n", status_code=400, media_type="text/plain")
    except TesseraError as exc:
        passed_on(exc)
        return Response(in_words(exc) + "\n", status_code=status_of(exc), media_type="text/plain")
    parts = [team_id, start.isoformat(), end.isoformat(), user_id, product_id]
    name = "usage-" + "-".join(present.file_part(p) for p in parts if p) + ".csv"
    # A byte-order mark first: Excel reads a CSV without one in the ANSI code page
    # (Zoë as ZoÃ«); with it, as UTF-8, like every other spreadsheet.
    text = await asyncio.to_thread(present.usage_csv, report.rows)  # (as usage's rows)
    return Response(
        "\ufeff" + text,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


# -- users -------------------------------------------------------------------------------------------


async def _user_rows(session: Session, team_id: str, query: str, token: str) -> dict[str, Any]:
    """The By User list: the team's members, or with a query the members found (AD4),
    each read as a member (``_found_members``) so both show the same columns; a refused
    search is said in its rows, under its status."""
    if query:
        found, error, status = await main_part(
            _found_members(session.client, team_id, query, token)
        )
        members, next_page = found or ([], "")
        return {
            "query": query,
            "members": members,
            "next_page": next_page,
            "search_error": error,
            "status": status,
        }
    page = await session.client.list_members(team_id, page_token=token)
    return {"query": "", "members": page.members, "next_page": page.next_page_token}


# Users a search shows a page: each is read as a member too (one GetMember each), so a
# page as long as a list's (100) would make a hundred calls a keystroke.
SEARCH_PAGE = 25


async def _found_members(
    client: AsyncAdminClient, team_id: str, query: str, token: str
) -> tuple[list[common_pb2.Member], str]:
    """A page of SearchUsers in the team, each user found as the team's member
    (GetMember: their products and state, which a search's summary does not hold), and
    the next page's token. One who left the team between the two calls is not shown."""
    found = await client.search_users(
        query, team_id=team_id, page_size=SEARCH_PAGE, page_token=token
    )

    async def member(user_id: str) -> common_pb2.Member | None:
        try:
            return await client.get_member(team_id, user_id)
        except NotFound:
            return None

    members = await asyncio.gather(*(member(u.user_id) for u in found.users))
    return [m for m in members if m is not None], found.next_page_token


@team_page("users.html")
async def users(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    query = request.query_params.get("q", "").strip()
    context = await _user_rows(session, team_id, query, request.query_params.get("page", ""))
    context["products"] = await rate_sheet(session)
    context["names"] = {p.product_id: p.display_name or p.product_id for p in context["products"]}
    return context


#: Marks the By User rows (``user_rows``): the page's script swaps in only an answer
#: that has it, never a proxy's error page.
ROWS_HEADER = "X-Tessera-Rows"


async def user_rows(request: Request) -> Response:
    """The By User table's rows alone: what search-as-you-type swaps in."""
    session = signed_in(request)
    team_id = request.path_params["team_id"]
    query = request.query_params.get("q", "").strip()
    try:
        context = await _user_rows(session, team_id, query, "")
        # A search refused (or not answered) shows no member: no further call, which
        # a server that does not answer would make wait as long again.
        context["names"] = {} if context.get("search_error") else await product_names(session)
    except TesseraError as exc:
        passed_on(exc)
        context = {"query": query, "members": [], "search_error": in_words(exc)}
        status = status_of(exc)
    else:
        status = context.pop("status", 200)
    context["team_id"] = team_id
    response = render(request, "_user_rows.html", context, session=session, status=status)
    response.headers[ROWS_HEADER] = "1"  # rows, also when refused: the script shows them
    return response


#: How many members a users box suggests as one types (SearchUsers' first page).
SUGGESTIONS = 10


async def user_suggestions(request: Request) -> Response:
    """The team's members whose name or email begins with ``?q=`` (SearchUsers in the
    team), as JSON for the users boxes' suggestions (``portal.js``): each with the line
    that names them in a box, ``Full Name <email>``. A refusal is its words, under its
    status; a credential the server no longer takes goes to sign in, as every page."""
    session = signed_in(request)
    team_id = request.path_params["team_id"]
    query = request.query_params.get("q", "").strip()
    if not query:
        return JSONResponse({"users": []})
    try:
        found = await session.client.search_users(query, team_id=team_id, page_size=SUGGESTIONS)
    except TesseraError as exc:
        passed_on(exc)
        return JSONResponse({"users": [], "error": in_words(exc)}, status_code=status_of(exc))
    return JSONResponse(
        {
            "users": [
                {
                    "user_id": u.user_id,
                    "name": u.display_name,
                    "email": u.email or u.user_id,
                    "line": _line_of(u),
                }
                for u in found.users
            ]
        }
    )


def _line_of(user: common_pb2.UserSummary) -> str:
    """The users box's line naming ``user``: ``Full Name <email>``, or their id alone
    when the server holds no name for them (a line the server reads as that user)."""
    address = user.email or user.user_id
    name = user.display_name.strip()
    return f"{name} <{address}>" if name and name != address else address


def _chosen_products(data: FormData) -> tuple[list[str], bool]:
    """By User's add form's choice: "All products" ticked wins over the products also
    ticked, which the server refuses beside it (A3)."""
    if data.get("all_products") == "on":
        return [], True
    return [str(p) for p in data.getlist("product_ids")], False


#: What a users box sent empty is told (By User's add form, By Product's assign form).
NO_USERS = "Enter one user a line: Name <email>."


def _user_lines(data: FormData) -> list[str]:
    """A users box's lines (By User's and By Product's): one user a line, each trimmed,
    blank ones dropped. The server reads each (``Full Name <email>`` or a user id) and
    refuses a malformed one by its index, which ``change``'s ``entries`` quotes."""
    return [line.strip() for line in str(data.get("users", "")).splitlines() if line.strip()]


def _counted(count: int) -> str:
    return f"{present.number(count)} user{'s' if count != 1 else ''}"


async def _add_users(request: Request, session: Session, data: FormData) -> Response:
    team_id = request.path_params["team_id"]
    lines = _user_lines(data)
    if not lines:
        return await again(request, session, users, {"users": NO_USERS})
    product_ids, all_products = _chosen_products(data)
    imported = data.get("mode") == "import"
    return await change(
        request,
        session,
        users,
        session.client.assign_users(
            team_id,
            lines,
            product_ids=product_ids,
            all_products=all_products,
            # Unticked says nothing: a new user is no guest, an existing member
            # stays what they are (the member page changes it).
            guest=True if data.get("guest") == "on" else None,
            import_=imported,
        ),
        # Counted from the answer: a user on two lines is one user.
        lambda members: (
            f"{_counted(len(members))} "
            + ("imported." if imported else "assigned; invitations sent to new users.")
        ),
        team_url(team_id, "/users"),
        entries={"users": lines},
    )


add_users = form(_add_users)


@team_page("member.html")
async def member(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    user_id = named(request, "user")
    found = await session.client.get_member(team_id, user_id)
    products = await rate_sheet(session)
    # Every product's, not only those they may run now: a device registered for a
    # product they lost still counts toward its 3 devices (M8), and is removed here.
    # One call (ListDevices naming no product), not one for each product on the sheet.
    devices, devices_error = await maybe(_devices(session, [user_id]))
    live = await _live_sessions(session.client, team_id, user_id)  # one read for both
    names = {p.product_id: p.display_name or p.product_id for p in products}
    place = {p: n for n, p in enumerate(names)}  # shown in the rate sheet's order
    devices = sorted(devices or [], key=lambda d: place.get(d.product_id, len(place)))
    elsewhere = _elsewhere(devices, _on_devices(live))
    return {
        "title": found.display_name or user_id,
        "member": found,
        "elsewhere": elsewhere,
        "products": products,
        "names": names,
        "devices": devices,
        "devices_error": devices_error,
        "sessions": live,
        "issued_key": getattr(request.state, "issued_key", None),
        "page": "users",
    }


async def _member_products(request: Request, session: Session, data: FormData) -> Response:
    """SetUserProducts of what this administrator changed on the page, on top of the
    member's products as they are now (GetMember): a product another administrator
    added or took away since the page was drawn stays so, and none of the member's
    sessions ends (A6) for a product this form did not untick. The form carries what
    its page showed (``_changed``); one without it counts every box as changed."""
    team_id, user_id = request.path_params["team_id"], named(request, "user")
    back = team_url(team_id, "/member", user=user_id)
    try:
        now, names = await _with_names(session, session.client.get_member(team_id, user_id))
    except TesseraError as exc:
        passed_on(exc)
        return await again(request, session, member, {}, exc)
    product_ids, added, removed = _changed(data, now.product_ids)
    all_ticked = data.get("all_products") == "on"
    all_shown = data.get("shown_all_products") == "on" if _drawn(data) else now.all_products
    all_products = all_ticked if all_ticked != all_shown else now.all_products
    if not added and not removed and all_ticked == all_shown:
        session.flash.append(f"Products of {user_id}: nothing changed.")
        return redirect(back)
    said = _changes(names, added, removed)
    if all_ticked != all_shown:
        said.insert(0, "All products: " + ("yes." if all_ticked else "no."))
    return await change(
        request,
        session,
        member,
        session.client.set_user_products(
            team_id,
            user_id,
            # All products grants every product: the server takes one or the other (A3).
            product_ids=[] if all_products else product_ids,
            all_products=all_products,
        ),
        " ".join([f"Products of {user_id} changed.", *said]),
        back,
    )


_Read = TypeVar("_Read")


async def _with_names(session: Session, read: Awaitable[_Read]) -> tuple[_Read, dict[str, str]]:
    """What ``read`` answers, and the rate sheet's names (to say what a form changed)."""
    return await read, await product_names(session)


def _drawn(data: FormData) -> bool:
    """Whether a form says what its page showed (its hidden ``shown`` fields): not one
    from a page drawn before the portal sent them, nor one posted by hand."""
    return data.get("shown") == "1"


def _changed(data: FormData, now: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """The products after a member's or the default assignments' form, with what it
    added and what it took away: those ticked that its page did not show (its hidden
    ``shown_product_ids``) are added to the products as they are ``now``, those it
    showed that are no longer ticked are taken away, and the rest stays as it is now
    (another administrator's change since the page was drawn included). A form that
    does not say what its page showed counts as showing ``now``: it gives what is
    ticked."""
    shown = [str(p) for p in data.getlist("shown_product_ids")] if _drawn(data) else now
    ticked = [str(p) for p in data.getlist("product_ids")]
    added = [p for p in dict.fromkeys(ticked) if p not in shown]
    removed = [p for p in dict.fromkeys(shown) if p not in ticked]
    kept = [p for p in now if p not in removed]
    return kept + [p for p in added if p not in kept], added, removed


def _changes(names: dict[str, str], added: Sequence[str], removed: Sequence[str]) -> list[str]:
    """What a products form changed, in sentences: the products added and taken away."""
    said = []
    for ids, what in ((added, "Added"), (removed, "Taken away")):
        if ids:
            said.append(f"{what}: {', '.join(names.get(p, p) for p in ids)}.")
    return said


member_products = form(_member_products)


async def _member_guest(request: Request, session: Session, data: FormData) -> Response:
    """A5: mark a member a guest, or no longer one (AssignUsers of their id, which
    adds no product): the default assignments follow the team's setting for guests,
    and sessions of products that were theirs only by it end (A6).

    AssignUsers also invites again a member whose invitation expired (a new token good
    for the invitation's validity, A2, and its email); no other call sets guest, so the confirmation says
    the invitation went out rather than leave it to be found in the outbox."""
    team_id, user_id = request.path_params["team_id"], named(request, "user")
    guest = data.get("guest") == "on"
    try:  # a member still (read to tell an expired invitation: see below)
        found = await session.client.get_member(team_id, user_id)
    except TesseraError as exc:
        passed_on(exc)
        return await again(request, session, member, {}, exc)
    said = f"{user_id} is {'now a guest' if guest else 'no longer a guest'}."
    expired = (
        found.state == common_pb2.MEMBER_STATE_INVITED
        and found.invitation.state == common_pb2.INVITATION_STATE_EXPIRED
    )
    return await change(
        request,
        session,
        member,
        # members_only: one removed since GetMember is refused, never added back
        session.client.assign_users(team_id, [user_id], guest=guest, members_only=True),
        lambda members: _invited_again(said, members) if expired else said,
        team_url(team_id, "/member", user=user_id),
    )


def _invited_again(said: str, members: list[common_pb2.Member]) -> str:
    """``said``, and that the member's expired invitation was sent again, until when
    the answer's new invitation says (the terms' validity, 7 days by default: A2)."""
    until = [m.invitation.expire_time for m in members if m.invitation.expire_time.seconds]
    return Markup("{} Their invitation had expired, so a new one was sent{}.").format(
        said, Markup(", good until {}").format(present.when(until[0])) if until else ""
    )


member_guest = form(_member_guest)


@team_page("confirm.html")
async def confirm_issue_key(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    """The confirmation of the operator's Issue a user key: a new key stops the member's
    earlier one, and so the products running on it. A team administrator is refused
    (OPERATOR_ONLY) as the form would be, and asked nothing."""
    if not session.operator:
        raise operator_only()
    user_id = named(request, "user")
    found = await session.client.get_member(team_id, user_id)
    who = f"{found.display_name} ({user_id})" if found.display_name else user_id
    return confirmation(
        f"Issue a new user key for {who}?",
        ISSUE_KEY,
        (team_url(team_id, "/member/key", user=user_id), "Issue user key"),
        team_url(team_id, "/member", user=user_id),
        "users",
    )


ISSUE_KEY = (
    "Any key they have now stops working at once: the products they are running stop at "
    "their next heartbeat, and start again only with the new key. The new key is shown "
    "once, on the next page, for you to hand over."
)


async def _issue_key(request: Request, session: Session, data: FormData) -> Response:
    """The operator's: a user key for the member (IssueUserKey), shown on this answer
    only (never kept, never redirected), as an admin key is. A member imported or made
    by the operator has none until then, so can run nothing; any earlier key stops
    working. A team administrator's form is refused (OPERATOR_ONLY), in words."""
    user_id = named(request, "user")
    try:
        # A member still (a removal since the confirmation, or another team's user
        # named in the link): else no key is issued, and the one they have still works.
        await session.client.get_member(request.path_params["team_id"], user_id)
        key = await session.client.issue_user_key(user_id)
    except TesseraError as exc:
        passed_on(exc)
        return await again(request, session, member, {}, exc)
    request.state.issued_key = key
    return await member(request)


issue_key = form(_issue_key)


async def _remove_member(request: Request, session: Session, data: FormData) -> Response:
    team_id, user_id = request.path_params["team_id"], named(request, "user")
    if data.get("confirm") != "on":  # the browser asks for the box; a bare POST is not it
        return await again(
            request, session, member, {"confirm": "Tick the box to confirm the removal."}
        )
    return await change(
        request,
        session,
        member,
        session.client.unassign_user(team_id, user_id),
        f"{user_id} removed from the team.",
        team_url(team_id, "/users"),
    )


remove_member = form(_remove_member)


#: Members By Product shows a page (ListMembers with ``product_id``, a page at a time), so
#: a product that thousands may run is pages with a Next link, not one table of thousands.
BY_PRODUCT_PAGE = 100


@team_page("products.html")
async def by_product(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    products = await rate_sheet(session)
    chosen = request.query_params.get("product") or (products[0].product_id if products else "")
    listed, error, status = (None, None, 200)
    if chosen:  # a product not on the rate sheet: refused, its status the page's (404)
        listed, error, status = await main_part(
            session.client.list_members(
                team_id,
                product_id=chosen,
                page_size=BY_PRODUCT_PAGE,
                page_token=request.query_params.get("page", ""),
            )
        )
    return {
        "status": status,
        "products": products,
        "chosen": chosen,
        # The Assign users form is for a product of the rate sheet (an edited link's
        # is said to be none, once).
        "chosen_name": next(
            (p.display_name or p.product_id for p in products if p.product_id == chosen), None
        ),
        "members": listed.members if listed else [],
        "next_page": listed.next_page_token if listed else "",
        "members_error": error,
        "page": "products",
        "product_choices": PRODUCT_CHOICES,
    }


async def _assign_product(request: Request, session: Session, data: FormData) -> Response:
    """By Product's Assign users (the guide's "Select Flex and click Assign Users"): the
    box's lines as By User's add form reads them (``_user_lines``), each assigned this
    product (``_assign_here``). Refused, the page again with what was typed and why."""
    team_id, product_id = request.path_params["team_id"], named(request, "product")
    lines = _user_lines(data)
    if not lines:
        return await again(request, session, by_product, {"users": NO_USERS})
    return await change(
        request,
        session,
        by_product,
        _assign_here(session, team_id, product_id, lines),
        lambda said: said,
        team_url(team_id, "/products", product=product_id),
        entries={"users": lines},
    )


assign_product = form(_assign_product)

#: How many GetMember calls an Assign users form makes at once (a pasted list may be long).
LOOKUPS_AT_ONCE = 16


async def _assign_here(session: Session, team_id: str, product_id: str, lines: list[str]) -> str:
    """Give ``product_id`` to the users of ``lines``; what was done, in words.

    One AssignUsers call with this product does it all, or nothing (a malformed line
    is refused by its index and no one changes): the server adds the product to a
    member's own (never taking one away; A1 keeps the name on file) and invites the
    others. What each member had before is read first (GetMember) only to say what
    was done: to whom the product was added, and who had it already, or all
    products, and was left as they were."""
    names = await product_names(session)
    if product_id not in names:
        raise NotFound(
            f"no product {product_id!r}", code=grpc.StatusCode.NOT_FOUND, reason="UNKNOWN_PRODUCT"
        )
    name = names[product_id]
    found = await _members_named(session.client, team_id, lines)
    members = list({m.user_id: m for m in found if m is not None}.values())
    assigned = await session.client.assign_users(team_id, lines, product_ids=[product_id])
    known = {m.user_id for m in members}
    new = [m for m in assigned if m.user_id not in known]
    has_it = {m.user_id for m in members if m.all_products or product_id in m.product_ids}
    done = [f"{_counted(len(new))} assigned {name}; invitations sent to new users."] if new else []
    added = [m for m in members if m.user_id not in has_it]
    left = [m for m in members if m.user_id in has_it]
    return " ".join(_said(done, added, left, name))


def _said(
    done: list[str],
    added: list[common_pb2.Member],
    left: list[common_pb2.Member],
    name: str,
) -> list[str]:
    """What an Assign users form did, in sentences: who was assigned, to whom the product
    was added, and who was left as they were (all products, or this one already)."""
    said = list(done)
    if added:
        said.append(f"{name} added to the products of {_whom(added)}.")
    for having, what in (
        ([m for m in left if m.all_products], "all products"),
        ([m for m in left if not m.all_products], name),
    ):
        if having:
            has = "has" if len(having) == 1 else "have"
            said.append(f"{_whom(having)} already {has} {what}: left as is.")
    return said


#: At most this many members are named in what a form did; past it, how many more.
NAMED = 10


def _whom(members: list[common_pb2.Member]) -> str:
    """Members by name and id (``Carl (carl@example.com)``), at most ``NAMED`` of them."""
    shown = [f"{m.display_name} ({m.user_id})" if m.display_name else m.user_id for m in members]
    if len(shown) > NAMED:
        shown = [*shown[:NAMED], f"{present.number(len(members) - NAMED)} more"]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


async def _members_named(
    client: AsyncAdminClient, team_id: str, lines: list[str]
) -> list[common_pb2.Member | None]:
    """For each line, the team's member its address names (GetMember), or None: a new
    user, a user of another team, or a line that names no one (AssignUsers reads it and
    says what is wrong with it). A refusal of the team itself is raised."""
    limit = asyncio.Semaphore(LOOKUPS_AT_ONCE)

    async def member(line: str) -> common_pb2.Member | None:
        address = _address(line)
        if address is None:
            return None
        try:
            async with limit:
                return await client.get_member(team_id, address)
        except NotFound as exc:
            if exc.reason != "UNKNOWN_USER":
                raise  # the team itself
            return None
        except InvalidArgument as exc:
            if "user_id" not in exc.field_violations:
                raise
            return None

    return list(await asyncio.gather(*(member(line) for line in lines)))


def _address(line: str) -> str | None:
    """The address a users line names: ``Full Name <email>``'s (or ``<email>``'s), or a
    bare user id; None for a line of any other shape, left for the server to refuse."""
    if line.endswith(">") and line.count("<") == 1 and line.count(">") == 1:
        return line[line.index("<") + 1 : -1].strip() or None
    if "<" in line or ">" in line or "@" not in line:
        return None
    return line


# Invitations a page shows at least (a page of members at a time is read until this
# many are found, or the list ends), so a team that invited thousands at once gets pages
# of a readable length instead of one table of thousands of forms.
INVITATIONS_PAGE = 100

#: The most ListMembers pages one Invitations page reads: a team of 50,000 active
#: members and no invitee was read whole for each view (642 calls of up to 3 MiB, 107 s at
#: a 10,000-product catalog); past these, the page says how far it looked and links on.
INVITATIONS_READS = 5


@team_page("invitations.html")
async def invitations(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    invited: list[common_pb2.Member] = []
    token = request.query_params.get("page", "")
    for _ in range(INVITATIONS_READS):
        page = await session.client.list_members(team_id, page_token=token)
        invited += [m for m in page.members if m.state == common_pb2.MEMBER_STATE_INVITED]
        token = page.next_page_token
        if not token or len(invited) >= INVITATIONS_PAGE:
            break
    # Fewer than a page found and more members to look through: the reads ran out.
    return {
        "invited": invited,
        "next_page": token,
        "partial": bool(token) and len(invited) < INVITATIONS_PAGE,
    }


async def _resend(request: Request, session: Session, data: FormData) -> Response:
    team_id, user_id = request.path_params["team_id"], named(request, "user")
    return await change(
        request,
        session,
        invitations,
        session.client.resend_invitation(team_id, user_id),
        f"Invitation sent again to {user_id}.",
        team_url(team_id, "/invitations"),
    )


resend = form(_resend)


@team_page("defaults.html")
async def defaults(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    return {"products": await rate_sheet(session)}


async def _set_defaults(request: Request, session: Session, data: FormData) -> Response:
    """SetDefaultAssignments of what this administrator changed on the page, on top of
    the team's default set as it is now (GetTeam), as a member's products form does
    (``_changed``): a default another administrator set since the page was drawn stays,
    and so do the sessions it pays for (A4, A6)."""
    team_id = request.path_params["team_id"]
    back = team_url(team_id, "/defaults")
    try:
        team, names = await _with_names(session, session.client.get_team(team_id))
    except TesseraError as exc:
        passed_on(exc)
        return await again(request, session, defaults, {}, exc)
    product_ids, added, removed = _changed(data, team.default_product_ids)
    if not added and not removed:
        session.flash.append("Default assignments: nothing changed.")
        return redirect(back)
    said = _changes(names, added, removed)
    done = "Default assignments saved." if product_ids else "Default assignments turned off."
    return await change(
        request,
        session,
        defaults,
        session.client.set_default_assignments(team_id, product_ids),
        " ".join([done, *said]),
        back,
    )


set_defaults = form(_set_defaults)

#: The plans the operator's Team settings offer (A8), by the form's value.
PLANS = {"standard": common_pb2.PLAN_STANDARD, "premium": common_pb2.PLAN_PREMIUM}


async def _operator_settings(request: Request, session: Session, data: FormData) -> Response:
    """A8 and A5, the operator's ("contact support", the guide says to a team's
    administrator): the team's plan, and whether guests get the default assignments.
    A team administrator's form is refused by the server (OPERATOR_ONLY), in words. The
    form carries what its page showed (``shown_plan``, ``shown_guest_defaults``): only
    what was changed on it is sent, so another operator's change since stays."""
    team_id = request.path_params["team_id"]
    back = team_url(team_id, "/defaults")
    plan = PLANS.get(str(data.get("plan", "")))
    if plan is None:
        return await again(request, session, defaults, {"plan": "Choose Standard or Premium."})
    guests = data.get("guest_defaults") == "on"
    shown_plan = PLANS.get(str(data.get("shown_plan", "")))
    if shown_plan is None:  # a form that does not say what its page showed: both are sent
        return await change(
            request,
            session,
            defaults,
            session.client.update_team_settings(
                team_id, plan=plan, guest_default_assignments=guests
            ),
            "Plan and guests' default assignments saved.",
            back,
        )
    # UpdateTeamSettings leaves what it is not given: a plan unspecified, no guests.
    new_plan = plan if plan != shown_plan else None
    new_guests = guests if guests != (data.get("shown_guest_defaults") == "on") else None
    if new_plan is None and new_guests is None:
        session.flash.append("Plan and guests: nothing changed.")
        return redirect(back)
    said = []
    if new_plan is not None:
        said.append(
            f"Plan set to {'Premium' if new_plan == common_pb2.PLAN_PREMIUM else 'Standard'}."
        )
    if new_guests is not None:
        said.append(
            "Guests now get the default assignments."
            if new_guests
            else "Guests no longer get the default assignments."
        )
    return await change(
        request,
        session,
        defaults,
        session.client.update_team_settings(
            team_id,
            plan=common_pb2.PLAN_UNSPECIFIED if new_plan is None else new_plan,
            guest_default_assignments=new_guests,
        ),
        " ".join(said),
        back,
    )


operator_settings = form(_operator_settings)


# -- sessions and devices ------------------------------------------------------------------------------


@team_page("sessions.html")
async def live_sessions(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    listed = await session.client.list_sessions(
        team_id, page_token=request.query_params.get("page", "")
    )
    users = sorted({s.user_id for s in listed.sessions})
    shown = {(s.user_id, s.product_id) for s in listed.sessions}
    devices, devices_error = await maybe(_devices(session, users))
    devices = [d for d in devices or [] if (d.user_id, d.product_id) in shown]
    return {
        "sessions": listed.sessions,
        "next_page": listed.next_page_token,
        "devices": devices or [],
        "elsewhere": _elsewhere(devices or [], await _ours(session.client, team_id, users)),
        "devices_error": devices_error,
        "names": await product_names(session),
        "page": "sessions",
    }


async def _devices(session: Session, user_ids: Iterable[str]) -> list[common_pb2.Device]:
    """Each user's devices of every product (one ListDevices a user)."""
    found: list[common_pb2.Device] = []
    for user_id in user_ids:
        found += await session.client.list_devices(user_id)
    return found


Where = tuple[str, str, str]  # a device: (user, product, device)


def _where(d: common_pb2.Device) -> Where:
    return (d.user_id, d.product_id, d.device_id)


async def _live_sessions(
    client: AsyncAdminClient, team_id: str, user_id: str
) -> list[common_pb2.Session]:
    """Every one of the team's live sessions of the user, page after page."""
    found: list[common_pb2.Session] = []
    token = ""
    while True:
        page = await client.list_sessions(
            team_id, user_id=user_id, page_size=1000, page_token=token
        )
        found += page.sessions
        token = page.next_page_token
        if not token:
            return found


def _on_devices(sessions: Iterable[common_pb2.Session]) -> Counter[Where]:
    """How many of ``sessions`` run on each device."""
    return Counter((s.user_id, s.product_id, s.device_id) for s in sessions)


async def _ours(client: AsyncAdminClient, team_id: str, user_ids: Iterable[str]) -> Counter[Where]:
    """How many of the team's live sessions (of these users) run on each device."""
    ours: Counter[Where] = Counter()
    for user_id in user_ids:
        ours.update(_on_devices(await _live_sessions(client, team_id, user_id)))
    return ours


def _elsewhere(devices: Iterable[common_pb2.Device], ours: Counter[Where]) -> dict[Where, str]:
    """The devices that run another team's session, with how their Running column
    says so. A user's devices are theirs, not a team's: one running only this team's
    sessions ends them with it, but one running another team's too (ListDevices
    counts every team's, M9 allowing several on a device) is also that team's to
    end: a team administrator's RemoveDevice is refused here (the operator ends it
    from that team's page), so it is said and offered no Remove."""
    out: dict[Where, str] = {}
    for d in devices:
        here = ours[_where(d)]
        if _running_count(d) > here:
            out[_where(d)] = "yes, also for another team" if here else "yes, for another team"
    return out


def _running_count(d: common_pb2.Device) -> int:
    return max(d.running_session_count, int(d.running))


async def confirm_end(request: Request) -> Response:
    """The confirmation, only for one of this team's live sessions: any other (another
    team's, which EndSession refuses; one ended or unknown) is refused as its form would
    be (alpha's sessions page saying why, 403), and asked nothing about."""
    session = signed_in(request)
    team_id, session_id = request.path_params["team_id"], named(request, "session")
    user_id = request.query_params.get("user", "")
    try:
        here = await _live_here(session.client, team_id, session_id, user_id)
    except InvalidArgument:
        here = False  # an edited ?user=: not one of this team's sessions' users
    except TesseraError as exc:
        passed_on(exc)
        here = True  # the team itself refused: its page says why
    if here:
        return await _confirm_end(request)
    return await _refused_here(request, NOT_LIVE_HERE)


async def _refused_here(request: Request, why: str) -> Response:
    """A confirmation not asked: the team's sessions page saying why, under 403, as
    the form's POST would be refused."""
    request.state.error = why
    response = await live_sessions(request)
    if response.status_code == 200:
        response.status_code = 403
    return response


NOT_LIVE_HERE = "This session is not one of this team's live sessions: it cannot be ended here."


async def _live_here(client: AsyncAdminClient, team_id: str, session_id: str, user_id: str) -> bool:
    """Whether the session is one of the team's live ones. The sessions page's link
    names its user, so one page of that user's sessions answers; a link without one
    walks the team's."""
    return await _live_session(client, team_id, session_id, user_id) is not None


async def _live_session(
    client: AsyncAdminClient, team_id: str, session_id: str, user_id: str
) -> common_pb2.Session | None:
    """The team's live session ``session_id`` (of ``user_id``, when given), or None."""
    return await _first_live(client, team_id, user_id, lambda s: s.session_id == session_id)


async def _first_live(
    client: AsyncAdminClient,
    team_id: str,
    user_id: str,
    match: Callable[[common_pb2.Session], bool],
) -> common_pb2.Session | None:
    """The first of the team's live sessions (of ``user_id``, when given) that matches,
    read a page at a time until one does; None when none does."""
    token = ""
    while True:
        page = await client.list_sessions(
            team_id, user_id=user_id, page_size=1000, page_token=token
        )
        found = next((s for s in page.sessions if match(s)), None)
        if found is not None:
            return found
        token = page.next_page_token
        if not token:
            return None


@team_page("confirm.html")
async def _confirm_end(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    """Whose session it is, of which product, on which device: the administrator ends
    the one they mean (``confirm_end`` asks only about one of the team's live ones)."""
    session_id = named(request, "session")
    user_id = request.query_params.get("user", "")
    live = await _live_session(session.client, team_id, session_id, user_id)
    if live is None:  # ended between the check and now
        raise NotFound(
            f"no live session {session_id!r}",
            code=grpc.StatusCode.NOT_FOUND,
            reason="UNKNOWN_SESSION",
        )
    member, _ = await maybe(session.client.get_member(team_id, live.user_id))
    who = (
        f"{member.display_name} ({live.user_id})"
        if member and member.display_name
        else live.user_id
    )
    product = (await product_names(session)).get(live.product_id, live.product_id)
    return confirmation(
        f"End the {product} session of {who} on device {live.device_id}?",
        f"{product} stops on {live.device_id} at its next heartbeat; {who} can start it "
        f"again. (Session {session_id}.)",
        (team_url(team_id, "/sessions/end", session=session_id), "End session"),
        team_url(team_id, "/sessions"),
        "sessions",
    )


async def _end(request: Request, session: Session, data: FormData) -> Response:
    team_id, session_id = request.path_params["team_id"], named(request, "session")
    return await change(
        request,
        session,
        live_sessions,
        session.client.end_session(session_id),
        f"Session {session_id} ended.",
        team_url(team_id, "/sessions"),
    )


end_session = form(_end)


def _device_path(request: Request) -> tuple[str, str, str, str]:
    names = ("user", "product", "device")
    user_id, product_id, device_id = (named(request, name) for name in names)
    return request.path_params["team_id"], user_id, product_id, device_id


async def confirm_remove_device(request: Request) -> Response:
    """The confirmation, only for a device this team's page offers to remove (as the
    member page does): one of a user its key may see, not running another team's
    session. Any other is refused as its form would be (the sessions page saying why,
    403), and asked nothing about."""
    session = signed_in(request)
    team_id, user_id, product_id, device_id = _device_path(request)
    if await _removable_here(session.client, team_id, user_id, product_id, device_id):
        return await _confirm_remove_device(request)
    return await _refused_here(request, NOT_REMOVABLE_HERE)


NOT_REMOVABLE_HERE = (
    "This device is not one this team's page can remove: it is unknown, of a user not "
    "managed here, or running only another team's session (that team's page ends it)."
)


async def _removable_here(
    client: AsyncAdminClient, team_id: str, user_id: str, product_id: str, device_id: str
) -> bool:
    try:
        devices = await client.list_devices(user_id, product_id)
    except TesseraError as exc:
        passed_on(exc)
        return False
    device = next((d for d in devices if d.device_id == device_id), None)
    if device is None or not device.running:
        return device is not None
    try:
        ours = await _ours(client, team_id, [user_id])
        return ours[_where(device)] >= _running_count(device)  # none of another team's
    except TesseraError as exc:
        passed_on(exc)
        return True  # the team itself refused: its page says why


@team_page("confirm.html")
async def _confirm_remove_device(
    request: Request, session: Session, team_id: str
) -> dict[str, Any]:
    _, user_id, product_id, device_id = _device_path(request)
    ids = {"user": user_id, "product": product_id, "device": device_id}
    return confirmation(
        f"Remove device {device_id} of {user_id} for {product_id}?",
        "Its running sessions end now; the device may register again later.",
        (team_url(team_id, "/devices/remove", **ids), "Remove device"),
        team_url(team_id, "/sessions"),
        "sessions",
    )


async def _remove_device(request: Request, session: Session, data: FormData) -> Response:
    team_id, user_id, product_id, device_id = _device_path(request)
    return await change(
        request,
        session,
        live_sessions,
        session.client.remove_device(user_id, product_id, device_id, end_sessions=True),
        f"Device {device_id} removed.",
        team_url(team_id, "/sessions"),
    )


remove_device = form(_remove_device)


# -- ledger and audit -----------------------------------------------------------------------------------


@team_page("ledger.html")
async def ledger(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    """The ledger newest first, 100 entries a page (a long history's recent entries
    first); the server's page token goes back in time, so new entries never shift it."""
    page = await session.client.list_ledger_entries(
        team_id,
        page_size=100,
        page_token=request.query_params.get("page", ""),
        order_by="time desc",
    )
    return {
        "entries": page.entries,
        "next_page": page.next_page_token,
        "names": await product_names(session),
        "kinds": present.LEDGER_KINDS.values(),
    }


@team_page("audit.html")
async def audit(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    """Who changed what, in words: what was done (``present.audit_action``) and, from
    the request the event carries, what it changed (``present.audit_details``)."""
    page, error = await maybe(
        session.client.list_audit_events(
            team_id, page_size=50, page_token=request.query_params.get("page", "")
        )
    )
    names = await product_names(session) if page and page.events else {}
    events = [
        {
            "event": e,
            "did": present.audit_action(e.method),
            "details": present.audit_details(e.method, json_format.MessageToDict(e.request), names),
        }
        for e in (page.events if page else [])
    ]
    return {
        "events": events,
        "next_page": page.next_page_token if page else "",
        "audit_error": error,
    }
