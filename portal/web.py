"""The portal's HTTP plumbing: server-side sessions, CSRF, security headers, rendering.

A session lives in this process (``Sessions``), named by a random id; the cookie holds that
id with an HMAC of it under a key made at start, HttpOnly and SameSite=Strict. Signing out
deletes the session here, so the cookie is worth nothing afterwards even if it was copied;
a restart of the portal signs everyone out. Every form carries the session's CSRF token (the
sign-in form a token tied to a cookie of its own), checked in one place (``form``) before
any handler runs; a form is read only when it is urlencoded and not too large (``form_of``).
Every answer carries a strict Content-Security-Policy: scripts and styles
only from the portal itself, no inline script, nothing from elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Mount
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from client_sdk.admin import AsyncAdminClient
from portal import present

COOKIE = "tessera_portal"
SIGNIN_COOKIE = "tessera_signin"
IDLE_SECONDS = 8 * 3600  # a session unused this long is over
LIFETIME_SECONDS = 12 * 3600  # and any session this long after its sign-in
SWEEP_SECONDS = 60  # how often the sessions whose cookie never returns are looked for
ENDED_KEPT_SECONDS = 7 * 24 * 3600  # how long a session that ended so is remembered
MAX_ENDED = 10_000  # and at most this many of them (the oldest forgotten first)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


def href(path: str, **query: str) -> str:
    """``path`` with ``query``: the ids a page is about travel in the query, never as path
    segments, so any text (``a/b@example.com``, ``../x``, ``?``, ``#``, ``%``) comes back
    exactly and cannot change which page or team a link reaches (Starlette decodes ``%2F``
    before routing; a browser folds ``..`` and ``%2E%2E`` segments)."""
    return f"{path}?{urlencode(query, safe='@')}" if query else path


def team_url(team_id: str, tail: str = "", **query: str) -> str:
    """A page about one team: ``team_url("alpha", "/member", user="a/b@example.com")``."""
    return href(f"/teams/{quote(team_id, safe='')}{tail}", **query)


def next_href(next_page: str, **query: str) -> str:
    """The Next page link of a list: this page's address with ``page=`` the server's next
    page token, keeping what the list is of (``q=``, ``product=``; empty ones left out)."""
    return href("", **{name: value for name, value in query.items() if value}, page=next_page)


HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals.update(
    number=present.number,
    when=present.when,
    word=present.word,
    duration=present.duration,
    field_word=present.field_word,
    products_text=present.products_text,
    ledger_kind=present.ledger_kind,
    href=href,
    next_href=next_href,
    team_url=team_url,
)


@dataclass
class Session:
    """One signed-in administrator: the credential stays here, never in the browser."""

    sid: str
    client: AsyncAdminClient
    operator: bool
    label: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    flash: list[str] = field(default_factory=list)
    #: The request ids of the purchases made through this session: a Buy form sent again
    #: (its CSRF token is this session's) is answered the same pack, and says so.
    purchases: set[str] = field(default_factory=set)
    started: float = 0.0  # the sessions' clock (``Sessions``) at sign-in
    last_seen: float = 0.0


class Sessions:
    """The signed-in sessions of this portal process. A session ends unused for
    ``IDLE_SECONDS`` or ``LIFETIME_SECONDS`` after its sign-in, on ``clock`` (monotonic
    seconds): when its cookie returns, or in a sweep at most every ``SWEEP_SECONDS``, so one
    whose cookie never returns is dropped too. The client of an ended session is closed
    in a task of ``closing``; why it ended is kept a while (``ended``), for the sign-in
    page to say when its cookie comes back."""

    def __init__(
        self, key: bytes | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._key = key or secrets.token_bytes(32)
        self._by_id: dict[str, Session] = {}
        #: The sessions that ended unused or too old: when, and which of the two (the
        #: sign-in page says so to a cookie that comes back), for ``ENDED_KEPT_SECONDS``.
        self._ended: dict[str, tuple[float, str]] = {}
        self._clock = clock
        self._swept = clock()
        self.closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._by_id)

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def cookie_value(self, session: Session) -> str:
        return f"{session.sid}.{self._sign(session.sid)}"

    def add(self, client: AsyncAdminClient, *, operator: bool, label: str) -> Session:
        now = self._clock()
        self._sweep(now)
        session = Session(
            secrets.token_urlsafe(32), client, operator, label, started=now, last_seen=now
        )
        self._by_id[session.sid] = session
        return session

    def find(self, cookie: str | None) -> Session | None:
        sid, _, mac = (cookie or "").partition(".")
        if not sid or not same(mac, self._sign(sid)):
            return None
        now = self._clock()
        self._sweep(now)
        session = self._by_id.get(sid)
        if session is None:
            return None
        if self._over(session, now):
            self._drop(session, now)
            return None
        session.last_seen = now
        return session

    def ended(self, cookie: str | None) -> str:
        """Why the session of ``cookie`` (one this portal signed) ended, when it ended
        by time: ``IDLE`` or ``TOO_OLD``; "" for any other cookie (none, forged, signed
        out, or ended too long ago to be remembered)."""
        sid, _, mac = (cookie or "").partition(".")
        if not sid or not same(mac, self._sign(sid)):
            return ""
        self.find(cookie)  # a session over now ends here, and is remembered
        return self._ended.get(sid, (0.0, ""))[1]

    def _over(self, session: Session, now: float) -> bool:
        return now - session.last_seen > IDLE_SECONDS or now - session.started > LIFETIME_SECONDS

    def _sweep(self, now: float) -> None:
        if now - self._swept < SWEEP_SECONDS:
            return
        self._swept = now
        for session in [s for s in self._by_id.values() if self._over(s, now)]:
            self._drop(session, now)
        for sid in [sid for sid, (at, _) in self._ended.items() if now - at > ENDED_KEPT_SECONDS]:
            del self._ended[sid]

    def _drop(self, session: Session, now: float) -> None:
        """``session`` ended by time: remembered (``ended``), its client closed."""
        self._ended[session.sid] = (
            now,
            IDLE if now - session.last_seen > IDLE_SECONDS else TOO_OLD,
        )
        while len(self._ended) > MAX_ENDED:
            del self._ended[next(iter(self._ended))]
        self._by_id.pop(session.sid, None)
        task = asyncio.get_running_loop().create_task(session.client.close())
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    async def end(self, session: Session) -> None:
        """Sign ``session`` out: its cookie is worth nothing from now on."""
        gone = self._by_id.pop(session.sid, None)
        if gone is not None:
            await gone.client.close()

    async def close(self) -> None:
        sessions, self._by_id = self._by_id, {}
        for session in sessions.values():
            await session.client.close()
        await asyncio.gather(*self.closing)

    def signin_token(self, nonce: str) -> str:
        """The sign-in form's CSRF token, tied to the nonce in its own cookie."""
        return self._sign("signin:" + nonce)


def same(given: str, expected: str) -> bool:
    """Whether a token the browser sent is the one expected, in constant time; any text
    (``compare_digest`` refuses a ``str`` that is not ASCII, so both are compared as UTF-8)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())


def headers_for(path: str) -> dict[str, str]:
    """The security headers of an answer at ``path``: pages are never cached."""
    return HEADERS if path.startswith("/static/") else {**HEADERS, "cache-control": "no-store"}


class SecurityHeaders:
    """ASGI middleware: the headers every answer carries (``headers_for``). Starlette answers
    an unforeseen exception outside every middleware, so that handler adds them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = [(k.encode(), v.encode()) for k, v in headers_for(str(scope.get("path"))).items()]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + added
            await send(message)

        await self.app(scope, receive, sending)


def sessions_of(request: Request) -> Sessions:
    found: Sessions = request.app.state.sessions
    return found


#: Why a session ended, as the sign-in page's ``?ended=`` says it.
IDLE = "1"  # unused for IDLE_SECONDS
TOO_OLD = "2"  # LIFETIME_SECONDS after its sign-in
#: The page to come back to for an address that is not a page (``back_to``): the rows of
#: By User's search as you type (their query is the page's), its users boxes'
#: suggestions (not: their ``q`` is a line being typed) and the usage CSV (its filter).
NOT_PAGES = {
    "/users/rows": ("/users", True),
    "/users/suggest": ("/users", False),
    "/usage.csv": ("/usage", True),
}


def signed_in(request: Request) -> Session:
    """The request's session; without one, a redirect to the sign-in page, which comes
    back here afterwards (``?next=``, ``back_to``) and, when the session ended by time,
    says so (``?ended=``; ``&form=1``: the form sent was not)."""
    sessions = sessions_of(request)
    cookie = request.cookies.get(COOKIE)
    session = sessions.find(cookie)
    if session is None:
        query: dict[str, str] = {}
        if ended := sessions.ended(cookie):
            query["ended"] = ended
            if request.method == "POST":
                query["form"] = "1"
        back = back_to(request)
        if back not in ("", "/", "/teams"):  # where sign-in goes anyway
            query["next"] = back
        raise HTTPException(303, headers={"location": href("/signin", **query)})
    return session


def back_to(request: Request) -> str:
    """The page to come back to after signing in (a path and query of this portal), or
    "": a GET's own address (of its page, for the few that are not pages:
    ``NOT_PAGES``), a form's page: its action's address when that is a page too (By
    User's Add users), else its Referer when of this portal, else the nearest page
    above its action (``/teams/T/member?user=U`` for ``/teams/T/member/products?user=U``,
    since the portal's own pages send no Referer)."""
    path, query = request.url.path, request.url.query
    if request.method in ("GET", "HEAD"):
        for tail, (page, keep) in NOT_PAGES.items():
            if path.endswith(tail):
                return path[: -len(tail)] + page + (f"?{query}" if query and keep else "")
        return path + (f"?{query}" if query else "")
    if _is_page(request, path):
        return path + (f"?{query}" if query else "")
    referer = urlsplit(request.headers.get("referer", ""))
    if (referer.scheme, referer.netloc) == (request.url.scheme, request.url.netloc):
        back = referer.path + (f"?{referer.query}" if referer.query else "")
        if safe_next(back):
            return back
    while "/" in path.rstrip("/"):
        path = path.rstrip("/").rsplit("/", 1)[0] or "/"
        if _is_page(request, path):
            return path + (f"?{query}" if query else "")
    return ""


def _is_page(request: Request, path: str) -> bool:
    """Whether ``path`` is one of the portal's pages (a GET route's full match)."""
    scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
    routes: list[BaseRoute] = request.app.routes
    return any(
        route.matches(scope)[0] == Match.FULL and not isinstance(route, Mount) for route in routes
    )


def safe_next(url: str) -> bool:
    """Whether sign-in may send the browser to ``url``: a path of this portal only (it
    starts with one "/", not "//" nor "/\\" that a browser reads as another host; no
    scheme, no backslash, printable ASCII), never elsewhere (an open redirect)."""
    if not url.startswith("/") or url.startswith(("//", "/\\")) or len(url) > 2000:
        return False
    if "\\" in url or not (url.isascii() and url.isprintable()) or " " in url:
        return False
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc


MAX_FORM_BYTES = 1024 * 1024  # 10,000 "Name <email>" lines fit (AssignUsers' default cap)
MAX_FORM_FIELDS = 5000  # a form's checkboxes: one a team or product
FORM_KIND = "This form was not sent as a plain web form (files are not taken here)."
FORM_SIZE = f"This form is too large: at most {MAX_FORM_BYTES // 1024:,} KB."


@asynccontextmanager
async def form_of(request: Request, max_fields: int = MAX_FORM_FIELDS) -> AsyncIterator[FormData]:
    """The request's form: only ``application/x-www-form-urlencoded`` (anything else, uploads
    included, is refused with 415 before its body is read), at most ``MAX_FORM_BYTES``
    (413 as soon as more arrives, whatever the Content-Length said), never a file kept."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise HTTPException(415, FORM_KIND)
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > MAX_FORM_BYTES:
            raise HTTPException(413, FORM_SIZE)
        return message

    limited = Request(request.scope, receive)
    async with limited.form(
        max_files=0, max_fields=max_fields, max_part_size=MAX_FORM_BYTES
    ) as data:
        yield data


FormHandler = Callable[[Request, Session, FormData], Awaitable[Response]]


def form(handler: FormHandler) -> Callable[[Request], Awaitable[Response]]:
    """A POST handler that runs only for a signed-in session whose form carries its
    CSRF token; anything else is refused with 403 before the handler sees it."""

    async def endpoint(request: Request) -> Response:
        session = signed_in(request)
        async with form_of(request) as data:
            token = str(data.get("csrf", ""))
            if not token or not same(token, session.csrf):
                return render(
                    request,
                    "error.html",
                    {"title": "Form refused", "message": CSRF_REFUSED},
                    session=session,
                    status=403,
                )
            request.state.form = data  # shown again if the server refuses it
            return await handler(request, session, data)

    endpoint.__name__ = handler.__name__
    return endpoint


CSRF_REFUSED = (
    "This form was refused: it did not carry the portal's security token (it may be an old "
    "page or come from another site). Reload the page and try again."
)


_FIELD_ERROR = re.compile(r'field_error\("(\w+)"\)')
_SHOWN: dict[str, frozenset[str]] = {}


def shown_fields(name: str) -> frozenset[str]:
    """The fields template ``name`` shows a refusal next to (its ``field_error`` calls,
    and ``product_choices``' ``product_ids``), read from its source once."""
    if name not in _SHOWN:
        source = templates.env.loader.get_source(templates.env, name)[0]  # type: ignore[union-attr]
        fields = set(_FIELD_ERROR.findall(source))
        if "product_choices(" in source:
            fields.add("product_ids")
        _SHOWN[name] = frozenset(fields)
    return _SHOWN[name]


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    session: Session | None = None,
    status: int = 200,
) -> Response:
    errors = getattr(request.state, "errors", {})
    form_error = getattr(request.state, "error", None)
    if form_error is None and not errors.keys() <= shown_fields(name):
        form_error = getattr(request.state, "unshown", None)  # no control to show it by
    values = {
        "session": session,
        "csrf": session.csrf if session else "",
        "errors": errors,
        "form_error": form_error,
        "form": getattr(request.state, "form", {}),
        "refused_status": getattr(request.state, "refused_status", 0),
    }
    values.update(context)
    if session is not None and session.flash:
        values["flash"], session.flash = session.flash, []
    return templates.TemplateResponse(request, name, values, status_code=status)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)
