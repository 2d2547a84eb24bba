"""The portal's pages: signing in and out, the teams, the operator's admin keys, and what
every page shares (``team_page``, ``change``, errors in words); the pages about one team
are in ``portal.team_pages``.

GET handlers read and render; POST handlers (``web.form``: CSRF checked) make one change and
redirect back with a line saying what was done (post/redirect/get), or show the page again
with the server's refusal in words, next to the field it names (``BadRequest`` field
violations). A call the server does not offer yet (an older Tessera) is said in words where
its part of the page would be, never as a stack trace.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from client_sdk.admin import AsyncAdminClient, unimplemented
from client_sdk.errors import (
    DeadlineExceeded,
    InvalidArgument,
    OutcomeUnknown,
    PermissionDenied,
    TesseraError,
    Unauthenticated,
    Unavailable,
)
from portal.web import (
    COOKIE,
    IDLE,
    SIGNIN_COOKIE,
    TOO_OLD,
    Session,
    form,
    form_of,
    redirect,
    render,
    safe_next,
    same,
    sessions_of,
    signed_in,
    team_url,
)
from tessera_api.tessera.v1 import common_pb2

T = TypeVar("T")

NOT_OFFERED = "This Tessera server does not offer this yet (it is older than the portal)."

REASONS = {
    "NOT_TEAM_ADMIN": "You do not manage this team.",
    "OPERATOR_ONLY": "Only the operator can do this: contact support.",
    "UNKNOWN_TEAM": "There is no such team.",
    "UNKNOWN_USER": "There is no such user in this team.",
    "UNKNOWN_PRODUCT": "There is no such product.",
    "UNKNOWN_SESSION": "There is no such session.",
    "UNKNOWN_INVITATION": "There is no such invitation.",
    "UNKNOWN_ADMIN_KEY": "There is no such admin key.",
    "UNKNOWN_PACK": "There is no such token pack.",
    "UNKNOWN_SUBSCRIPTION": "There is no such subscription.",
    "UNAVAILABLE": "The Tessera server cannot be reached right now. Try again in a moment.",
    "NOT_LEADER": "The Tessera server is a standby right now. Try again in a moment.",
}


#: A server that did not answer in time (``DeadlineExceeded``: a hung or paused server, a
#: black-holed route): on a page, and for a form, whose change may or may not be made.
NO_ANSWER = "The Tessera server did not answer in time; try again in a moment."
NO_ANSWER_FORM = (
    "The Tessera server did not answer in time: the change may or may not have been made. "
    "Check what happened before sending the form again."
)
#: A change sent without a request id that got no answer saying whether it was made
#: (``OutcomeUnknown``: the SDK did not send it again).
NOT_SAID = (
    "The Tessera server did not say whether it made the change (it did not answer in time, "
    "or the connection was lost): it may or may not have been made. Check what happened "
    "before sending the form again."
)


def in_words(error: TesseraError, *, form: bool = False) -> str:
    """What went wrong, for a person: the reason in words, else the server's message. A
    server that did not answer (or could not be reached) is said in words, never by
    gRPC's ("Deadline Exceeded") nor with the addresses tried; ``form``: the refusal
    of a form's change, which such a failure may or may not have left made."""
    if unimplemented(error):
        return NOT_OFFERED
    if isinstance(error, OutcomeUnknown):
        return NOT_SAID
    if isinstance(error, DeadlineExceeded) or error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return NO_ANSWER_FORM if form else NO_ANSWER
    known = REASONS.get(error.reason or "")
    if known:
        return known
    if isinstance(error, Unavailable):  # a reason of a newer server's: still unreachable
        return REASONS["UNAVAILABLE"]
    said = error.message.strip()
    if not said:
        return "The server refused this."
    return _sentence(said)


def said(request: Request, error: TesseraError) -> str:
    """``in_words`` for the page answering ``request``: a form's (a POST's) refusal is
    the refusal of a change."""
    return in_words(error, form=request.method == "POST")


#: A first word that is a plain word (``team 'x' already exists``), not an identifier
#: (``zoe@example.com is already...``, ``ACAD is...``, ``'gone' is not...``).
PLAIN_WORD = re.compile(r"[a-z]+(?=[ ,:;]|$)")


def _sentence(said: str) -> str:
    """The server's message as a sentence: its first word capitalised only when it is a
    plain word (an id or an email is kept as the server spelt it), and a full stop."""
    if PLAIN_WORD.match(said):
        said = said[:1].upper() + said[1:]
    return said + ("" if said.endswith((".", "!", "?")) else ".")


def passed_on(error: TesseraError) -> None:
    """Raise ``error`` again when every page answers it the same way rather than in words:
    a credential the server no longer takes (a revoked key) ends the session and sends the
    browser to sign in (``portal.app``); a page token it refuses (``?page=`` edited or
    from another list) is the same 400 on every list."""
    if isinstance(error, Unauthenticated):
        raise error
    if isinstance(error, InvalidArgument) and "page_token" in error.field_violations:
        raise HTTPException(400, PAGE_GONE) from error


PAGE_GONE = (
    "This page of the list is out of date (the link is old or was changed). "
    "Open the list again to start from its first page."
)


def violations(
    error: TesseraError, entries: Mapping[str, Sequence[str]] | None = None
) -> dict[str, str]:
    """The refused fields, each under its own name without an index or the message it is
    in (``users[2]`` under ``users``, ``product.daily_rate`` under ``daily_rate``), so the
    page shows it next to that control. A refused entry of a list the form sent
    (``entries``: a box of one user a line) is quoted before its message: among hundreds
    of lines, the reader finds the one to mend."""
    if not isinstance(error, InvalidArgument):
        return {}
    shown: dict[str, str] = {}
    for name, message in error.field_violations.items():
        base = name.split("[", 1)[0].rsplit(".", 1)[-1]
        if (entry := _entry(name, entries)) is not None:
            message = _quoted(entry, message)
        shown[base] = f"{shown[base]} {message}" if base in shown else message
    return shown


def _quoted(entry: str, message: str) -> str:
    """``message`` about ``entry`` with the entry quoted once, first: the server's own
    quote of it (``'bogus line' is neither...``) becomes the portal's, and a message
    that already names it elsewhere is left as it is."""
    if message.startswith(repr(entry)):
        return f"\u201c{entry}\u201d{message[len(repr(entry)) :]}"
    if repr(entry) in message:
        return message
    return f"\u201c{entry}\u201d {message}"


def _entry(name: str, entries: Mapping[str, Sequence[str]] | None) -> str | None:
    """The entry a refused field's name points at (``users[2]``: the third of
    ``entries["users"]``), or None."""
    found = re.fullmatch(r"(\w+)\[(\d+)\]", name)
    if not entries or found is None or found.group(1) not in entries:
        return None
    listed, index = entries[found.group(1)], int(found.group(2))
    return listed[index] if index < len(listed) else None


async def maybe(call: Awaitable[T]) -> tuple[T | None, str | None]:
    """The call's answer, or None and why in words (a call not offered included): a
    part of a page, which the page shows without it."""
    value, words, _ = await main_part(call)
    return value, words


async def main_part(call: Awaitable[T]) -> tuple[T | None, str | None, int]:
    """As ``maybe``, with the HTTP status the page answers under (``status_of`` the
    refusal, 200 without one): the call the page is for (a list, the rate sheet)."""
    try:
        return await call, None, 200
    except TesseraError as exc:
        passed_on(exc)
        return None, in_words(exc), status_of(exc)


# -- signing in and out ----------------------------------------------------------------------


async def signin_page(request: Request) -> Response:
    """The sign-in form; ``?next=`` the page to go to afterwards (``web.signed_in``),
    ``?ended=`` why the session ended (``ENDED``), ``&form=1``: a form was not sent."""
    query = request.query_params
    context: dict[str, Any] = {"next": query.get("next", "")}
    why = ENDED.get(query.get("ended", ""))
    if why:
        context["ended"] = why + (ENDED_FORM if query.get("form") == "1" else ".")
    return _signin(request, context)


#: What the sign-in page says of a session that ended by time (``?ended=``, ``web.IDLE``
#: and ``web.TOO_OLD``), and of the form that was sent after it ended (``&form=1``).
ENDED = {
    IDLE: "Your session ended (unused for 8 hours): sign in again",
    TOO_OLD: "Your session ended (12 hours after its sign-in): sign in again",
}
ENDED_FORM = "; the form was not sent."


def _signin(request: Request, context: dict[str, Any], status: int = 200) -> Response:
    nonce = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
    context["signin_csrf"] = sessions_of(request).signin_token(nonce)
    context["next"] = context.get("next", "") if safe_next(context.get("next", "")) else ""
    context.setdefault("title", "Sign in")
    response = render(request, "signin.html", context, status=status)
    response.set_cookie(SIGNIN_COOKIE, nonce, httponly=True, samesite="strict", path="/signin")
    return response


async def signin(request: Request) -> Response:
    sessions = sessions_of(request)
    async with form_of(request, max_fields=10) as data:
        token, credential = str(data.get("csrf", "")), str(data.get("credential", "")).strip()
        back = str(data.get("next", ""))
    nonce = request.cookies.get(SIGNIN_COOKIE, "")
    if not nonce or not same(token, sessions.signin_token(nonce)):
        context = {"error": "The sign-in form expired: try again.", "next": back}
        return _signin(request, context, 403)
    if not credential:
        empty = {"errors": {"credential": "Paste your admin key."}, "next": back}
        return _signin(request, empty, 400)
    if not _could_be_a_key(credential):
        return _signin(request, {"errors": {"credential": UNKNOWN_KEY}, "next": back}, 401)
    client = AsyncAdminClient(request.app.state.target, credential, **request.app.state.client)
    try:
        await client.get_server_info()
        operator = await _is_operator(client)
    except TesseraError as exc:
        await client.close()
        if isinstance(exc, Unauthenticated):
            message = UNKNOWN_KEY
        elif isinstance(exc, PermissionDenied):
            message = "This is a user's key: sign in with an admin key."
        else:
            message = in_words(exc)
        status = 401 if isinstance(exc, Unauthenticated | PermissionDenied) else status_of(exc)
        return _signin(request, {"errors": {"credential": message}, "next": back}, status)
    label = "Operator" if operator else "Team administrator"
    if (earlier := sessions.find(request.cookies.get(COOKIE))) is not None:
        # A sign-in over a live one (another key, say) ends it: its cookie, which a
        # copy of the browser's cookies may still hold, is worth nothing from now on.
        await sessions.end(earlier)
    session = sessions.add(client, operator=operator, label=label)
    # Back to the page the session ended on: only a path of this portal, never elsewhere.
    response = redirect(back if safe_next(back) else "/teams")
    response.set_cookie(
        COOKIE, sessions.cookie_value(session), httponly=True, samesite="strict", path="/"
    )
    response.delete_cookie(SIGNIN_COOKIE, path="/signin", httponly=True, samesite="strict")
    return response


UNKNOWN_KEY = "This key is not known to the server (or was revoked)."
MAX_CREDENTIAL = 1024  # an admin key is about 50 characters; the operator's token too


def _could_be_a_key(credential: str) -> bool:
    """Whether ``credential`` can travel as gRPC metadata (printable ASCII, not too long);
    anything else is no key the server made, and is never sent."""
    return len(credential) <= MAX_CREDENTIAL and credential.isascii() and credential.isprintable()


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
    return await signed_out(request, session)


async def signed_out(request: Request, session: Session | None) -> Response:
    """The session (if any) ends here, its cookie is dropped, and the browser signs in."""
    if session is not None:
        await sessions_of(request).end(session)
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
    listed, error, status = await main_part(session.client.list_teams(page_token=token))
    context = {
        "title": "Teams you manage",
        "teams": listed.teams if listed else [],
        "next_page": listed.next_page_token if listed else "",
        "error": error,
    }
    return render(request, "teams.html", context, session=session, status=status)


async def _create_team(request: Request, session: Session, data: FormData) -> Response:
    team_id = str(data.get("team_id", "")).strip()
    return await change(
        request,
        session,
        teams,
        session.client.create_team(team_id, str(data.get("display_name", "")).strip()),
        f"Team {team_id} created.",
        team_url(team_id),
    )


create_team = form(_create_team)


def confirmation(
    question: str, detail: str, action: tuple[str, str], back: str, page: str = ""
) -> dict[str, Any]:
    """A confirmation page: what is asked, what it does, the form's address and its
    button, and where Cancel goes. Nothing changes until its form is sent."""
    url, button = action
    return {
        "title": question,
        "question": question,
        "detail": detail,
        "action": url,
        "button": button,
        "back": back,
        "page": page,
    }


def operator_only() -> PermissionDenied:
    """The server's refusal of a team administrator (OPERATOR_ONLY), for a page that is
    the operator's alone (a confirmation of an operator's form): said before anything is
    asked, as the form would be refused."""
    return PermissionDenied(
        "only the operator can do this",
        code=grpc.StatusCode.PERMISSION_DENIED,
        reason="OPERATOR_ONLY",
    )


def refused(request: Request, session: Session, exc: TesseraError) -> Response:
    """The usual page of a refusal: its words, under the status of its code."""
    context = {"title": "Refused", "message": said(request, exc)}
    return render(request, "error.html", context, session=session, status=status_of(exc))


async def _team_context(session: Session, team_id: str) -> dict[str, Any]:
    team = await session.client.get_team(team_id)
    name = team.display_name or team_id
    return {"team": team, "team_id": team_id, "team_name": name, "title": name}


#: The team's tabs (base.html), by page: a page's title names its tab, then its team.
TABS = {
    "overview": "Overview",
    "usage": "Usage",
    "users": "By User",
    "products": "By Product",
    "invitations": "Invitations",
    "defaults": "Team settings",
    "sessions": "Sessions & devices",
    "ledger": "Ledger",
    "audit": "Audit",
}


def team_page(
    template: str,
) -> Callable[
    [Callable[[Request, Session, str], Awaitable[dict[str, Any]]]],
    Callable[[Request], Awaitable[Response]],
]:
    """A page about one team: the handler adds its parts to the team's context; a refusal
    of the team itself (not managed, unknown) is the page's message in words, without the
    team's tabs. Its title says which page of which team (``Usage · Alpha``; a handler's
    own title first, a member's name or a question), or the refusal's kind (``Error: Not
    found · nobody``)."""

    def wrap(
        handler: Callable[[Request, Session, str], Awaitable[dict[str, Any]]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = signed_in(request)
            team_id = request.path_params["team_id"]
            context: dict[str, Any] = {}
            try:
                context = await _team_context(session, team_id)
                shown = await handler(request, session, team_id)
                context.update(shown)
            except TesseraError as exc:
                passed_on(exc)
                # The team's tabs only once the server showed the team (a member not
                # found, say): none of a team refused (not managed, unknown).
                tabs = {"team_id": team_id} if context else {}
                team, status = context.get("team_name", team_id), status_of(exc)
                context = {"title": f"Error: {_kind(status)} · {team}", "heading": team, **tabs}
                context["message"] = said(request, exc)
                context["form_error"] = None  # a form's refusal is this message: said once
                context["errors"] = {}  # and the title's Error said once
                return render(request, "error.html", context, session=session, status=status)
            context.setdefault("page", handler.__name__)
            own = shown.get("title") or TABS.get(context["page"])
            team = context["team_name"]
            context["title"] = f"{own} · {team}" if own else team
            status = context.pop("status", 200)
            return render(request, template, context, session=session, status=status)

        endpoint.__name__ = handler.__name__
        return endpoint

    return wrap


def _kind(status: int) -> str:
    """A refusal's kind, for a page's title (its words are said once, on the page)."""
    if status == 404:
        return "Not found"
    return "No answer from the server" if status >= 500 else "Refused"


def named(request: Request, name: str) -> str:
    """The id a page is about, from its query (``?user=...``, see ``web.href``); a page
    without it is not here (404)."""
    value = request.query_params.get(name, "")
    if not value:
        raise HTTPException(404)
    return value


#: The HTTP status of a refusal, by its gRPC code: one table for pages and forms.
STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def status_of(exc: TesseraError) -> int:
    """The HTTP status for ``exc`` (``STATUS``); 502 for anything else the server said."""
    if exc.code in STATUS:
        return STATUS[exc.code]
    return 503 if isinstance(exc, Unavailable) else 502


async def product_names(session: Session) -> dict[str, str]:
    return {p.product_id: p.display_name or p.product_id for p in await rate_sheet(session)}


async def rate_sheet(session: Session) -> list[common_pb2.Product]:
    """The whole rate sheet, read the server's largest page a call (``WHOLE_LIST_PAGE``)."""
    return await session.client.list_products()


async def again(
    request: Request,
    session: Session,
    page: Callable[[Request], Awaitable[Response]],
    errors: dict[str, str],
    refusal: TesseraError | None = None,
) -> Response:
    """The page again (as its GET shows it), with what was refused next to its field, or
    the server's refusal in words above the form, under the status of its code."""
    request.state.errors = errors
    request.state.error = None if errors or refusal is None else said(request, refusal)
    # Said above the form instead when the page has no control for a refused field
    # (a device already removed, a form's hidden request id): never a silent 400.
    request.state.unshown = (
        said(request, refusal) if refusal is not None else " ".join(errors.values())
    )
    # What the page may need to know of it (the Buy form: a refused purchase's id
    # is not used again; one whose outcome is unknown, 5xx, must be).
    request.state.refused_status = status_of(refusal) if refusal is not None else 0
    response = await page(request)
    response.status_code = 400 if refusal is None else status_of(refusal)
    return response


async def change(
    request: Request,
    session: Session,
    page: Callable[[Request], Awaitable[Response]],
    call: Awaitable[object],
    done: str | Callable[[Any], str],
    back: str,
    entries: Mapping[str, Sequence[str]] | None = None,
) -> Response:
    """Make the change ``call``, then go ``back`` saying ``done`` (or what ``done`` makes
    of the call's answer); refused, the page again with why (``violations``: ``entries``
    are the lists the form sent)."""
    try:
        answer = await call
    except TesseraError as exc:
        passed_on(exc)
        return await again(request, session, page, violations(exc, entries), exc)
    session.flash.append(done if isinstance(done, str) else done(answer))
    return redirect(back)
