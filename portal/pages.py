"""The portal's pages: one handler per screen of the guide, each a few AdminService calls.

GET handlers read and render; POST handlers (``web.form``: CSRF checked) make one change and
redirect back with a line saying what was done (post/redirect/get), or show the page again
with the server's refusal in words, next to the field it names (``BadRequest`` field
violations). A call the server does not offer yet (an older Tessera) is said in words where
its part of the page would be, never as a stack trace.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from client_sdk.admin import AsyncAdminClient, unimplemented
from client_sdk.errors import InvalidArgument, PermissionDenied, TesseraError, Unauthenticated
from portal import present
from portal.web import (
    COOKIE,
    SIGNIN_COOKIE,
    Session,
    form,
    redirect,
    render,
    sessions_of,
    signed_in,
)
from tessera_api.tessera.v1 import common_pb2

T = TypeVar("T")

NOT_OFFERED = "This Tessera server does not offer this yet (it is older than the portal)."

REASONS = {
    "NOT_TEAM_ADMIN": "You do not manage this team.",
    "OPERATOR_ONLY": "Only the operator can do this: contact support.",
    "UNAUTHENTICATED": "Your sign-in is no longer accepted by the server. Sign in again.",
    "UNKNOWN_TEAM": "There is no such team.",
    "UNKNOWN_USER": "There is no such user.",
    "UNKNOWN_PRODUCT": "There is no such product.",
    "UNKNOWN_SESSION": "There is no such session.",
    "UNKNOWN_INVITATION": "There is no such invitation.",
    "UNAVAILABLE": "The Tessera server cannot be reached right now. Try again in a moment.",
    "NOT_LEADER": "The Tessera server is a standby right now. Try again in a moment.",
}

ALERT_KINDS = {
    common_pb2.NOTIFICATION_KIND_LOW_BALANCE,
    common_pb2.NOTIFICATION_KIND_PACK_EXPIRING,
    common_pb2.NOTIFICATION_KIND_TOKENS_EXHAUSTED,
}


def in_words(error: TesseraError) -> str:
    """What went wrong, for a person: the reason in words, else the server's message."""
    if unimplemented(error):
        return NOT_OFFERED
    known = REASONS.get(error.reason or "")
    if known:
        return known
    return error.message or error.reason or "The server refused this."


def violations(error: TesseraError) -> dict[str, str]:
    """The refused fields, each under its name without an index (``users[2]`` under
    ``users``), so the page shows it next to that control."""
    if not isinstance(error, InvalidArgument):
        return {}
    shown: dict[str, str] = {}
    for name, message in error.field_violations.items():
        base = name.split("[", 1)[0].split(".", 1)[0]
        shown[base] = f"{shown[base]} {message}" if base in shown else message
    return shown


async def maybe(call: Awaitable[T]) -> tuple[T | None, str | None]:
    """The call's answer, or None and why in words (a call not offered included)."""
    try:
        return await call, None
    except TesseraError as exc:
        return None, in_words(exc)


# -- signing in and out ----------------------------------------------------------------------


async def signin_page(request: Request) -> Response:
    return _signin(request, {})


def _signin(request: Request, context: dict[str, Any], status: int = 200) -> Response:
    nonce = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
    context["signin_csrf"] = sessions_of(request).signin_token(nonce)
    context.setdefault("title", "Sign in")
    response = render(request, "signin.html", context, status=status)
    response.set_cookie(SIGNIN_COOKIE, nonce, httponly=True, samesite="strict", path="/signin")
    return response


async def signin(request: Request) -> Response:
    sessions = sessions_of(request)
    data = await request.form()
    nonce = request.cookies.get(SIGNIN_COOKIE, "")
    token = str(data.get("csrf", ""))
    if not nonce or not secrets.compare_digest(token, sessions.signin_token(nonce)):
        return _signin(request, {"error": "The sign-in form expired: try again."}, 403)
    credential = str(data.get("credential", "")).strip()
    if not credential:
        return _signin(request, {"errors": {"credential": "Paste your admin key."}}, 400)
    client = AsyncAdminClient(request.app.state.target, credential, **request.app.state.client)
    try:
        await client.get_server_info()
        operator = await _is_operator(client)
    except TesseraError as exc:
        await client.close()
        if isinstance(exc, Unauthenticated):
            message = "This key is not known to the server (or was revoked)."
        elif isinstance(exc, PermissionDenied):
            message = "This is a user's key: sign in with an admin key."
        else:
            message = in_words(exc)
        return _signin(request, {"errors": {"credential": message}}, 401)
    label = "Operator" if operator else "Team administrator"
    session = sessions.add(client, operator=operator, label=label)
    response = redirect("/teams")
    response.set_cookie(
        COOKIE, sessions.cookie_value(session), httponly=True, samesite="strict", path="/"
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/signin", httponly=True, samesite="strict")
    return response


async def _is_operator(client: AsyncAdminClient) -> bool:
    """The operator may list admin keys; a team administrator is refused. A server
    without admin keys has only the operator's token."""
    try:
        await client.list_admin_keys()
    except PermissionDenied:
        return False
    except TesseraError as exc:
        if unimplemented(exc):
            return True
        raise
    return True


async def _signout(request: Request, session: Session, data: FormData) -> Response:
    client = sessions_of(request).remove(session)
    if client is not None:
        await client.close()
    response = redirect("/signin")
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


signout = form(_signout)


async def home(request: Request) -> Response:
    signed_in(request)
    return redirect("/teams")


# -- teams -------------------------------------------------------------------------------------


async def teams(request: Request) -> Response:
    session = signed_in(request)
    token = request.query_params.get("page", "")
    listed, error = await maybe(session.client.list_teams(page_token=token))
    context = {
        "title": "Teams you manage",
        "teams": listed.teams if listed else [],
        "next_page": listed.next_page_token if listed else "",
        "error": error,
    }
    return render(request, "teams.html", context, session=session)


async def _create_team(request: Request, session: Session, data: FormData) -> Response:
    team_id = str(data.get("team_id", "")).strip()
    return await _change(
        request,
        session,
        teams,
        session.client.create_team(team_id, str(data.get("display_name", "")).strip()),
        f"Team {team_id} created.",
        f"/teams/{quote(team_id)}",
    )


create_team = form(_create_team)


# -- admin keys (the operator's: RULES AD1) ----------------------------------------------------


async def admin_keys(request: Request) -> Response:
    session = signed_in(request)
    keys, error = await maybe(session.client.list_admin_keys())
    context: dict[str, Any] = {
        "title": "Admin keys",
        "keys": keys or [],
        "keys_error": error,
        "teams": (await maybe(session.client.all_teams()))[0] or [],
        "created": getattr(request.state, "created", None),
        "page": "admin_keys",
    }
    return render(request, "admin_keys.html", context, session=session)


async def _create_key(request: Request, session: Session, data: FormData) -> Response:
    """The new key's secret is shown on this answer only (never kept, never redirected)."""
    try:
        made = await session.client.create_admin_key(
            str(data.get("display_name", "")).strip(), [str(t) for t in data.getlist("team_ids")]
        )
    except TesseraError as exc:
        errors = violations(exc)
        return await _again(request, session, admin_keys, errors, None if errors else in_words(exc))
    request.state.created = made
    request.state.form = {}
    return await admin_keys(request)


create_key = form(_create_key)


async def confirm_revoke(request: Request) -> Response:
    session = signed_in(request)
    key_id = request.path_params["key_id"]
    context = {
        "title": "Revoke an admin key",
        "question": f"Revoke admin key {key_id}?",
        "detail": "It stops working at once: whoever holds it is signed out of the portal.",
        "action": f"/admin-keys/{quote(key_id)}/revoke",
        "button": "Revoke key",
        "back": "/admin-keys",
    }
    return render(request, "confirm.html", context, session=session)


async def _revoke(request: Request, session: Session, data: FormData) -> Response:
    key_id = request.path_params["key_id"]
    return await _change(
        request,
        session,
        admin_keys,
        session.client.revoke_admin_key(key_id),
        f"Admin key {key_id} revoked.",
        "/admin-keys",
    )


revoke_key = form(_revoke)


async def _team_context(session: Session, team_id: str) -> dict[str, Any]:
    team = await session.client.get_team(team_id)
    return {"team": team, "team_id": team_id, "title": team.display_name or team_id}


def team_page(
    template: str,
) -> Callable[
    [Callable[[Request, Session, str], Awaitable[dict[str, Any]]]],
    Callable[[Request], Awaitable[Response]],
]:
    """A page about one team: the handler adds its parts to the team's context; a refusal
    of the team itself (not managed, unknown) is the page's message in words."""

    def wrap(
        handler: Callable[[Request, Session, str], Awaitable[dict[str, Any]]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = signed_in(request)
            team_id = request.path_params["team_id"]
            try:
                context = await _team_context(session, team_id)
                context.update(await handler(request, session, team_id))
            except TesseraError as exc:
                context = {"title": team_id, "team_id": team_id, "message": in_words(exc)}
                return render(request, "error.html", context, session=session, status=_status(exc))
            context.setdefault("page", handler.__name__)
            return render(request, template, context, session=session)

        endpoint.__name__ = handler.__name__
        return endpoint

    return wrap


def _status(exc: TesseraError) -> int:
    if unimplemented(exc):
        return 501
    if isinstance(exc, PermissionDenied):
        return 403
    return 404 if (exc.reason or "").startswith("UNKNOWN_") else 502


async def _product_names(session: Session) -> dict[str, str]:
    return {p.product_id: p.display_name or p.product_id for p in await _products(session)}


async def _products(session: Session) -> list[common_pb2.Product]:
    return await session.client.list_products()


@team_page("overview.html")
async def overview(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    packs = await session.client.list_token_packs(team_id)
    alerts, alerts_error = await maybe(_alerts(session.client, team_id))
    return {
        "packs": packs,
        "alerts": alerts or [],
        "alerts_error": alerts_error,
        "purchase_id": f"portal-{secrets.token_hex(12)}",
    }


async def _alerts(client: AsyncAdminClient, team_id: str) -> list[common_pb2.Notification]:
    found: list[common_pb2.Notification] = []
    token = ""
    while True:
        page = await client.list_notifications(team_id=team_id, page_token=token)
        found += [n for n in page.notifications if n.kind in ALERT_KINDS]
        token = page.next_page_token
        if not token:
            return list(reversed(found))[:50]


async def _threshold(request: Request, session: Session, data: FormData) -> Response:
    team_id = request.path_params["team_id"]
    text = str(data.get("low_balance_threshold", "")).strip() or "0"
    try:
        value = int(text.replace(",", ""))
    except ValueError:
        return await _again(
            request, session, overview, {"low_balance_threshold": "Enter a whole number."}
        )
    return await _change(
        request,
        session,
        overview,
        session.client.update_team_settings(team_id, low_balance_threshold=value),
        "Low-balance alert turned off."
        if value == 0
        else f"Low-balance alert set at {present.number(value)} tokens.",
        f"/teams/{quote(team_id)}",
    )


threshold = form(_threshold)


async def _buy(request: Request, session: Session, data: FormData) -> Response:
    """PurchaseTokens with the request id the form was rendered with: a form sent twice
    (a double click, a reload) buys once (RULES T1's idempotency)."""
    team_id = request.path_params["team_id"]
    text = str(data.get("tokens", "")).strip().replace(",", "")
    if not text.isdigit() or int(text) <= 0:
        return await _again(
            request, session, overview, {"tokens": "Enter a whole number of tokens."}
        )
    tokens = int(text)
    return await _change(
        request,
        session,
        overview,
        session.client.purchase_tokens(team_id, tokens, str(data.get("request_id", ""))),
        f"Bought {present.number(tokens)} tokens.",
        f"/teams/{quote(team_id)}",
    )


buy = form(_buy)


async def _again(
    request: Request,
    session: Session,
    page: Callable[[Request], Awaitable[Response]],
    errors: dict[str, str],
    error: str | None = None,
) -> Response:
    """The page again (as its GET shows it), with what was refused next to its field."""
    request.state.errors = errors
    request.state.error = error
    response = await page(request)
    response.status_code = 400 if errors else 409
    return response


async def _change(
    request: Request,
    session: Session,
    page: Callable[[Request], Awaitable[Response]],
    call: Awaitable[object],
    done: str,
    back: str,
) -> Response:
    try:
        await call
    except TesseraError as exc:
        errors = violations(exc)
        return await _again(request, session, page, errors, None if errors else in_words(exc))
    session.flash.append(done)
    return redirect(back)


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


@team_page("usage.html")
async def usage(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    try:
        start, end = _range(request, await _now(session))
    except ValueError as exc:
        today = (await _now(session)).date()
        return {"range_error": f"Dates: {exc}.", "start": today, "end": today, "usage": None}
    report = await session.client.get_usage_report(
        team_id, present.day_start(start), present.day_start(end + timedelta(days=1))
    )
    shown = present.usage(report.rows, start, end)
    query = urlencode({"from": start.isoformat(), "to": end.isoformat()})
    return {
        "start": start,
        "end": end,
        "usage": shown,
        "chart": shown.chart(),
        "report": report,
        "csv_url": f"/teams/{quote(team_id)}/usage.csv?{query}",
    }


async def usage_csv(request: Request) -> Response:
    session = signed_in(request)
    team_id = request.path_params["team_id"]
    try:
        start, end = _range(request, await _now(session))
        report = await session.client.get_usage_report(
            team_id, present.day_start(start), present.day_start(end + timedelta(days=1))
        )
    except ValueError as exc:
        return Response(f"Dates: {exc}.\n", status_code=400, media_type="text/plain")
    except TesseraError as exc:
        return Response(in_words(exc) + "\n", status_code=_status(exc), media_type="text/plain")
    name = f"usage-{team_id}-{start.isoformat()}-{end.isoformat()}.csv"
    return Response(
        present.usage_csv(report.rows),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


# -- users -------------------------------------------------------------------------------------------


async def _user_rows(session: Session, team_id: str, query: str, token: str) -> dict[str, Any]:
    """The By User list: the team's members, or with a query the users found (AD4)."""
    if query:
        found, error = await maybe(
            session.client.search_users(query, team_id=team_id, page_token=token)
        )
        return {
            "query": query,
            "found": found.users if found else [],
            "next_page": found.next_page_token if found else "",
            "search_error": error,
        }
    page = await session.client.list_members(team_id, page_token=token)
    return {"query": "", "members": page.members, "next_page": page.next_page_token}


@team_page("users.html")
async def users(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    query = request.query_params.get("q", "").strip()
    context = await _user_rows(session, team_id, query, request.query_params.get("page", ""))
    context["products"] = await _products(session)
    context["names"] = {p.product_id: p.display_name for p in context["products"]}
    return context


async def user_rows(request: Request) -> Response:
    """The By User table's rows alone: what search-as-you-type swaps in."""
    session = signed_in(request)
    team_id = request.path_params["team_id"]
    query = request.query_params.get("q", "").strip()
    try:
        context = await _user_rows(session, team_id, query, "")
        context["names"] = await _product_names(session)
    except TesseraError as exc:
        context = {"query": query, "found": [], "search_error": in_words(exc)}
    context["team_id"] = team_id
    return render(request, "_user_rows.html", context, session=session)


def _chosen_products(data: FormData) -> tuple[list[str], bool]:
    return [str(p) for p in data.getlist("product_ids")], data.get("all_products") == "on"


async def _add_users(request: Request, session: Session, data: FormData) -> Response:
    team_id = request.path_params["team_id"]
    lines = [line.strip() for line in str(data.get("users", "")).splitlines() if line.strip()]
    if not lines:
        return await _again(
            request, session, users, {"users": "Enter one user a line: Name <email>."}
        )
    product_ids, all_products = _chosen_products(data)
    imported = data.get("mode") == "import"
    return await _change(
        request,
        session,
        users,
        session.client.assign_users(
            team_id,
            lines,
            product_ids=product_ids,
            all_products=all_products,
            guest=data.get("guest") == "on",
            import_=imported,
        ),
        f"{len(lines)} user{'s' if len(lines) != 1 else ''} "
        + ("imported." if imported else "assigned; invitations sent to new users."),
        f"/teams/{quote(team_id)}/users",
    )


add_users = form(_add_users)


@team_page("member.html")
async def member(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    user_id = request.path_params["user_id"]
    found = await session.client.get_member(team_id, user_id)
    products = await _products(session)
    devices, devices_error = await maybe(
        _devices(session, [(user_id, p) for p in found.effective_product_ids])
    )
    live = await session.client.list_sessions(team_id, user_id=user_id)
    return {
        "member": found,
        "products": products,
        "names": {p.product_id: p.display_name or p.product_id for p in products},
        "devices": devices or [],
        "devices_error": devices_error,
        "sessions": live.sessions,
        "page": "users",
    }


async def _member_products(request: Request, session: Session, data: FormData) -> Response:
    team_id, user_id = request.path_params["team_id"], request.path_params["user_id"]
    product_ids, all_products = _chosen_products(data)
    return await _change(
        request,
        session,
        member,
        session.client.set_user_products(
            team_id, user_id, product_ids=product_ids, all_products=all_products
        ),
        f"Products of {user_id} changed.",
        f"/teams/{quote(team_id)}/users/{quote(user_id)}",
    )


member_products = form(_member_products)


async def _remove_member(request: Request, session: Session, data: FormData) -> Response:
    team_id, user_id = request.path_params["team_id"], request.path_params["user_id"]
    return await _change(
        request,
        session,
        member,
        session.client.unassign_user(team_id, user_id),
        f"{user_id} removed from the team.",
        f"/teams/{quote(team_id)}/users",
    )


remove_member = form(_remove_member)


@team_page("products.html")
async def by_product(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    products = await _products(session)
    chosen = request.query_params.get("product") or (products[0].product_id if products else "")
    members, error = (None, None)
    if chosen:
        members, error = await maybe(session.client.all_members(team_id, product_id=chosen))
    return {
        "products": products,
        "chosen": chosen,
        "members": members or [],
        "members_error": error,
        "page": "products",
    }


@team_page("invitations.html")
async def invitations(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    members = await session.client.all_members(team_id)
    invited = [m for m in members if m.state == common_pb2.MEMBER_STATE_INVITED]
    return {"invited": invited}


async def _resend(request: Request, session: Session, data: FormData) -> Response:
    team_id, user_id = request.path_params["team_id"], request.path_params["user_id"]
    return await _change(
        request,
        session,
        invitations,
        session.client.resend_invitation(team_id, user_id),
        f"Invitation sent again to {user_id}.",
        f"/teams/{quote(team_id)}/invitations",
    )


resend = form(_resend)


@team_page("defaults.html")
async def defaults(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    return {"products": await _products(session)}


async def _set_defaults(request: Request, session: Session, data: FormData) -> Response:
    team_id = request.path_params["team_id"]
    product_ids = [str(p) for p in data.getlist("product_ids")]
    return await _change(
        request,
        session,
        defaults,
        session.client.set_default_assignments(team_id, product_ids),
        "Default assignments saved." if product_ids else "Default assignments turned off.",
        f"/teams/{quote(team_id)}/defaults",
    )


set_defaults = form(_set_defaults)


# -- sessions and devices ------------------------------------------------------------------------------


@team_page("sessions.html")
async def live_sessions(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    listed = await session.client.list_sessions(
        team_id, page_token=request.query_params.get("page", "")
    )
    devices, devices_error = await maybe(
        _devices(session, sorted({(s.user_id, s.product_id) for s in listed.sessions}))
    )
    return {
        "sessions": listed.sessions,
        "next_page": listed.next_page_token,
        "devices": devices or [],
        "devices_error": devices_error,
        "names": await _product_names(session),
        "page": "sessions",
    }


async def _devices(session: Session, pairs: Iterable[tuple[str, str]]) -> list[common_pb2.Device]:
    """The devices of each (user, product)."""
    found: list[common_pb2.Device] = []
    for user_id, product_id in pairs:
        found += await session.client.list_devices(user_id, product_id)
    return found


@team_page("confirm.html")
async def confirm_end(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    session_id = request.path_params["session_id"]
    return {
        "question": f"End session {session_id}?",
        "detail": "The product stops at its next heartbeat; the user can start it again.",
        "action": f"/teams/{quote(team_id)}/sessions/{quote(session_id)}/end",
        "button": "End session",
        "back": f"/teams/{quote(team_id)}/sessions",
        "page": "sessions",
    }


async def _end(request: Request, session: Session, data: FormData) -> Response:
    team_id, session_id = request.path_params["team_id"], request.path_params["session_id"]
    return await _change(
        request,
        session,
        live_sessions,
        session.client.end_session(session_id),
        f"Session {session_id} ended.",
        f"/teams/{quote(team_id)}/sessions",
    )


end_session = form(_end)


def _device_path(request: Request) -> tuple[str, str, str, str]:
    p = request.path_params
    return p["team_id"], p["user_id"], p["product_id"], p["device_id"]


@team_page("confirm.html")
async def confirm_remove_device(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    _, user_id, product_id, device_id = _device_path(request)
    base = f"/teams/{quote(team_id)}"
    return {
        "question": f"Remove device {device_id} of {user_id} for {product_id}?",
        "detail": "Its running sessions end now; the device may register again later.",
        "action": f"{base}/devices/{quote(user_id)}/{quote(product_id)}/{quote(device_id)}/remove",
        "button": "Remove device",
        "back": f"{base}/sessions",
        "page": "sessions",
    }


async def _remove_device(request: Request, session: Session, data: FormData) -> Response:
    team_id, user_id, product_id, device_id = _device_path(request)
    return await _change(
        request,
        session,
        live_sessions,
        session.client.remove_device(user_id, product_id, device_id, end_sessions=True),
        f"Device {device_id} removed.",
        f"/teams/{quote(team_id)}/sessions",
    )


remove_device = form(_remove_device)


# -- ledger and audit -----------------------------------------------------------------------------------


@team_page("ledger.html")
async def ledger(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    page = await session.client.list_ledger_entries(
        team_id, page_size=100, page_token=request.query_params.get("page", "")
    )
    return {"entries": page.entries, "next_page": page.next_page_token}


@team_page("audit.html")
async def audit(request: Request, session: Session, team_id: str) -> dict[str, Any]:
    page, error = await maybe(
        session.client.list_audit_events(
            team_id, page_size=50, page_token=request.query_params.get("page", "")
        )
    )
    return {
        "events": page.events if page else [],
        "next_page": page.next_page_token if page else "",
        "audit_error": error,
    }
