"""The portal as an ASGI application: ``create_app(target)``.

It holds no data of its own: every page is AdminService calls to ``target`` with the
signed-in administrator's credential (``client_sdk.admin``), so the server's scope rules
(AD1) and audit (AD2) apply to every click as to grpcurl.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from client_sdk._retry import RetryPolicy
from client_sdk.errors import Unauthenticated
from client_sdk.transport import TLS
from portal import operator_pages, pages, team_pages
from portal.web import (
    COOKIE,
    HERE,
    SecurityHeaders,
    Sessions,
    headers_for,
    render,
    sessions_of,
)

TEAM = "/teams/{team_id}"  # team ids are the server's (a-z, 0-9, -); other ids: web.href
log = structlog.get_logger()

ROUTES = [
    Route("/", pages.home),
    Route("/signin", pages.signin_page, methods=["GET"]),
    Route("/signin", pages.signin, methods=["POST"]),
    Route("/signout", pages.signout, methods=["POST"]),
    Route("/teams", pages.teams, methods=["GET"]),
    Route("/teams", pages.create_team, methods=["POST"]),
    Route("/products", operator_pages.products, methods=["GET"]),
    Route("/products", operator_pages.save_product, methods=["POST"]),
    Route("/admin-keys", operator_pages.admin_keys, methods=["GET"]),
    Route("/admin-keys", operator_pages.create_key, methods=["POST"]),
    Route("/admin-keys/revoke", operator_pages.confirm_revoke, methods=["GET"]),
    Route("/admin-keys/revoke", operator_pages.revoke_key, methods=["POST"]),
    Route(TEAM + "/buy", team_pages.buy, methods=["POST"]),
    Route(TEAM, team_pages.overview),
    Route(TEAM + "/threshold", team_pages.threshold, methods=["POST"]),
    Route(TEAM + "/packs/move", team_pages.move_pack, methods=["GET"]),
    Route(TEAM + "/packs/move", team_pages.move_token_pack, methods=["POST"]),
    Route(TEAM + "/usage", team_pages.usage),
    Route(TEAM + "/usage.csv", team_pages.usage_csv),
    Route(TEAM + "/users", team_pages.users, methods=["GET"]),
    Route(TEAM + "/users", team_pages.add_users, methods=["POST"]),
    Route(TEAM + "/users/rows", team_pages.user_rows),
    Route(TEAM + "/users/suggest", team_pages.user_suggestions),
    Route(TEAM + "/member", team_pages.member),
    Route(TEAM + "/member/products", team_pages.member_products, methods=["POST"]),
    Route(TEAM + "/member/guest", team_pages.member_guest, methods=["POST"]),
    Route(TEAM + "/member/key", team_pages.confirm_issue_key, methods=["GET"]),
    Route(TEAM + "/member/key", team_pages.issue_key, methods=["POST"]),
    Route(TEAM + "/member/remove", team_pages.remove_member, methods=["POST"]),
    Route(TEAM + "/member/resend", team_pages.resend, methods=["POST"]),
    Route(TEAM + "/products", team_pages.by_product, methods=["GET"]),
    Route(TEAM + "/products", team_pages.assign_product, methods=["POST"]),
    Route(TEAM + "/invitations", team_pages.invitations),
    Route(TEAM + "/defaults", team_pages.defaults, methods=["GET"]),
    Route(TEAM + "/defaults", team_pages.set_defaults, methods=["POST"]),
    Route(TEAM + "/settings", team_pages.operator_settings, methods=["POST"]),
    Route(TEAM + "/sessions", team_pages.live_sessions),
    Route(TEAM + "/sessions/end", team_pages.confirm_end, methods=["GET"]),
    Route(TEAM + "/sessions/end", team_pages.end_session, methods=["POST"]),
    Route(TEAM + "/devices/remove", team_pages.confirm_remove_device, methods=["GET"]),
    Route(TEAM + "/devices/remove", team_pages.remove_device, methods=["POST"]),
    Route(TEAM + "/ledger", team_pages.ledger),
    Route(TEAM + "/audit", team_pages.audit),
    Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
]


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    if exc.headers and "location" in exc.headers:
        return Response(status_code=exc.status_code, headers=exc.headers)
    message = {404: "There is no such page.", 405: "That is not something this page does."}
    context = {
        "title": "Not here" if exc.status_code in message else "Refused",
        "message": message.get(exc.status_code, exc.detail),
    }
    session = sessions_of(request).find(request.cookies.get(COOKIE))
    return render(request, "error.html", context, session=session, status=exc.status_code)


async def _signed_out(request: Request, exc: Exception) -> Response:
    """The server no longer takes the session's credential (its admin key was revoked):
    the session ends here too, and the browser is sent to sign in."""
    return await pages.signed_out(request, sessions_of(request).find(request.cookies.get(COOKIE)))


async def _failed(request: Request, exc: Exception) -> Response:
    """Anything unforeseen: logged with its traceback here, a sentence in the page."""
    log.error("portal page failed", path=request.url.path, exc_info=exc)
    context = {"title": "Something went wrong", "message": FAILED}
    response = render(request, "error.html", context, status=500)
    response.headers.update(headers_for(request.url.path))  # outside SecurityHeaders
    return response


FAILED = "The portal could not show this page. Try again; if it goes on, tell the operator."


def create_app(
    target: str, *, tls: TLS | bool = False, sessions: Sessions | None = None
) -> Starlette:
    """The portal for the Tessera server at ``target`` (``host:port``); ``sessions`` for a
    test's own clock."""
    sessions = Sessions() if sessions is None else sessions

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await sessions.close()

    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={
            HTTPException: _http_error,
            Unauthenticated: _signed_out,
            Exception: _failed,
        },
        lifespan=lifespan,
    )
    app.state.sessions = sessions
    app.state.target = target
    client: dict[str, Any] = {
        "tls": tls,
        # (A year's usage report of a large team, not paged, is past gRPC's default
        # 4 MiB: the admin client receives what the server sends, up to 64 MiB.)
        "retry": RetryPolicy(max_attempts=2, call_timeout=15.0),
    }
    app.state.client = client
    return app
