"""The edge every Tessera call passes through: credentials, errors, one log line.

``EdgeInterceptor`` wraps each ``tessera.v1`` method's behaviour so that, in
the call's own task, it:

0. takes one of the places for calls under way (``api/admission.py``), or refuses
   the call at once with ``RESOURCE_EXHAUSTED``/``OVERLOADED`` and a RetryInfo
   when they are all taken (such calls get no line each: the admission logs how
   many it shed, at most once a second);
1. checks the credential (``authorization: Bearer <secret>``): on
   ``AdminService`` the admin token (constant-time comparison, the operator) or
   a team administrator's admin key (resolved by hash, in memory), the caller
   in ``current_caller``; a user key on ``LicensingService`` (resolved to its
   user by hash, in memory), in ``current_user``; none on ``AcceptInvitation``;
2. on ``AdminService``, lets the call through only if the method's rule allows
   this caller (``api/scopes.py`` over ``api/methods.py``, RULES AD1), then
   hands a state-changing call to the audit hook (RULES AD2) and has a read
   wait until the deadlines already due have fired (``catch_up``,
   ``Engine.caught_up``), so that it answers what stands at the clock's time
   even when the scheduler lags;
3. turns a ``DomainError`` into its status with details (``api/errors.py``),
   and anything unexpected into ``INTERNAL``, logged with its traceback;
4. writes one log line: method, status code, duration, request id, user, and
   counts the call in the metrics (``server/metrics.py``: duration by method and
   status code, refusals by reason); the method, the request id and the user or
   admin key are bound to the call's log context (``logs.call_context``, in the
   call's task), so every line written deeper (engine, store, timers it fires)
   carries them.

Secrets are never logged: neither metadata nor request bodies are, and what the
caller chose that is logged (the request id, the user id) passes through the
scrubber that keeps secrets out of error messages (``api/errors.scrub``), with the
admin token itself taken out too, whatever its shape (``--admin-token``).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc
import structlog
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

from server.api import scopes
from server.api.admission import Admission
from server.api.caller import NOBODY, THE_OPERATOR, AuditHook, Caller, current_caller
from server.api.errors import (
    PermissionDenied,
    Unauthenticated,
    internal_status,
    scrub,
    to_status,
)
from server.api.limits import RateLimits
from server.api.methods import RULES
from server.clock import monotonic
from server.credentials import bearer, same_secret
from server.domain.errors import DomainError, InvalidArgument
from server.domain.userentries import canonical_user_id
from server.engine.access import entries_read, read_entries
from server.logs import call_context

if TYPE_CHECKING:
    from server.metrics import Metrics

log = structlog.get_logger()

current_user: contextvars.ContextVar[str] = contextvars.ContextVar("current_user", default="")

ADMIN_PREFIX = "/tessera.v1.AdminService/"
LICENSING_PREFIX = "/tessera.v1.LicensingService/"
NO_CREDENTIAL = frozenset(
    {"/tessera.v1.AdminService/AcceptInvitation", "/tessera.v1.LicensingService/GetSigningKeys"}
)

LOGGED_CHARS = 100  # of a caller's string in a log line
SHOWN_USERS = 131_072  # user ids kept scrubbed (_shown_user); make bench has 100,000
# What is scrubbed of it: a secret cut in two at LOGGED_CHARS must still be seen whole.
SCRUBBED_CHARS = 8192

Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
UserResolver = Callable[[str], str | None]


def _no_audit(
    method: str, request: Any, caller: Caller, teams: tuple[str, ...], request_id: str
) -> None:
    pass


#: The most entries a list of an AdminService request may hold unless configured
#: (``Config.max_users_per_request``'s default).
MAX_ENTRIES = 10_000
#: The calls whose ``users`` are entries to read (``Access.read_entries``).
ENTRY_LISTS = frozenset({"AssignUsers", "ImportUsers"})
#: The fields of a call's ``rpc`` line (and of every line: ``event``, ``level``...), which
#: a refusal's metadata never replaces on it.
RPC_LINE_FIELDS = frozenset(
    {"event", "level", "timestamp", "process", "method", "code", "duration_ms"}
    | {"request_id", "user_id", "admin", "reason", "peer"}
)


#: The methods whose servicer may answer with the bytes of its answer, serialized on
#: a thread: a year's usage report of a large team is 20 MB, and protobuf's one call
#: to serialize it, on the event loop, held every call for 0.1-0.2 s.
SERIALIZED_AHEAD = frozenset({"/tessera.v1.AdminService/GetUsageReport"})


def _bytes_or(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes]:
    """``serialize``, but for an answer already serialized (``SERIALIZED_AHEAD``)."""

    def out(answer: Any) -> bytes:
        if type(answer) is bytes or serialize is None:
            return cast(bytes, answer)
        return serialize(answer)

    return out


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        admin_token: str,
        resolve_user: UserResolver,
        *,
        lookup: scopes.EngineLookup,
        audit: AuditHook = _no_audit,
        log_calls: Callable[[str], bool] = lambda method: True,
        user_limits: RateLimits | None = None,
        admin_limits: RateLimits | None = None,
        metrics: Metrics | None = None,
        admission: Admission | None = None,
        catch_up: Callable[[], Awaitable[None]] | None = None,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        """``max_entries``: the most entries an AdminService request's list may hold
        (``--max-users-per-request``)."""
        self._admin_token = admin_token
        self._max_entries = max_entries
        self._catch_up = catch_up
        self._resolve_user = resolve_user
        self._lookup = lookup
        self._audit = audit
        self._log_calls = log_calls
        self._counter = 0
        self._metrics = metrics
        self.admission = admission if admission is not None and admission.enabled else None
        self._user_limits = user_limits if user_limits is not None and user_limits.enabled else None
        self._admin_limits = (
            admin_limits if admin_limits is not None and admin_limits.enabled else None
        )
        self._shown: dict[str, str | None] = {}  # user id -> as logged (_shown_user)
        # grpc.aio asks for the handler on every call: wrap each method once.
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = details.method
        done = self._wrapped.get(method)
        if done is not None:
            return done
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        if method.startswith(ADMIN_PREFIX):
            kind = "none" if method in NO_CREDENTIAL else "admin"
        elif method.startswith(LICENSING_PREFIX):
            kind = "none" if method in NO_CREDENTIAL else "user"
        else:
            return handler
        behavior = cast(Behavior, handler.unary_unary)  # grpc.aio handlers are coroutines
        wrapped = self._wrap(behavior, method, kind, self._log_calls(method))
        done = self._wrapped[method] = grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=(
                _bytes_or(handler.response_serializer)
                if method in SERIALIZED_AHEAD
                else handler.response_serializer
            ),
        )
        return done

    def _authenticate(self, kind: str, metadata: Any) -> str:
        if kind == "none":
            return ""
        secret = _secret(metadata)
        user_id = self._resolve_user(secret)
        if user_id is None:
            raise Unauthenticated("unknown or revoked user key")
        return user_id

    def _admin(self, kind: str, metadata: Any) -> Caller:
        """RULES AD1: the operator (the admin token) or a live admin key's holder."""
        if kind == "none":
            return NOBODY
        secret = _secret(metadata)
        if same_secret(secret, self._admin_token):
            return THE_OPERATOR
        caller = self._lookup.admin_caller(secret)
        if caller is not None:
            return caller
        if self._resolve_user(secret) is not None:
            raise PermissionDenied("a user key cannot call AdminService; use an admin credential")
        raise Unauthenticated("wrong admin token, or an unknown or revoked admin key")

    async def _admit(
        self, short: str, kind: str, request: Any, metadata: Any, request_id: str
    ) -> None:
        """An AdminService call's caller, rate limit, scope (AD1) and audit (AD2)."""
        caller = self._admin(kind, metadata)
        if kind == "admin" and self._admin_limits is not None:
            self._admin_limits.take(caller.actor)  # a bucket per actor
        current_caller.set(caller)
        if caller.actor:  # OPERATOR or the admin key's id; none for AcceptInvitation
            call_context.set((*call_context.get(), ("admin", caller.actor)))
        if isinstance(request, Undecodable):
            raise InvalidArgument.field(request.field, request.problem)
        if (crowded := too_many_entries(request, self._max_entries)) is not None:
            # Before anything reads them: 4 MiB of ids is a million entries, seconds
            # of the event loop for whoever parses them first (a guest's AssignUsers
            # parses every address to find whose sessions it may end).
            raise InvalidArgument.field(
                crowded,
                f"must name at most {self._max_entries:,} "
                f"{crowded.rsplit('.', 1)[-1].replace('_', ' ')} per request",
            )
        if _has_field(request, "user_id") and request.user_id:  # one user, however spelt
            request.user_id = canonical_user_id(request.user_id)
            if not request.user_id:  # spaces alone: a filter dropped would answer for all
                raise InvalidArgument.field("user_id", "must not be blank")
        if (
            short in ENTRY_LISTS
            and request.users
            and request.guest  # only a guest loses anything: whom it touches needs them
            and caller.may_see(request.team_id)
        ):
            # Read on a thread, before the check of whom the call touches (a guest's
            # sessions in other teams: AD1), and kept for the call, which changes the
            # state with no wait after that check, where a session could open unchecked.
            # A call that may not touch the team at all is refused without them; one
            # that ends no session reads them in the use case.
            await read_entries(request.users)
        elif short in ENTRY_LISTS:
            entries_read.set(None)  # (none of an earlier call's, whatever runs calls)
        rule = RULES.get(short)
        teams = scopes.check(short, rule, request, caller, self._lookup)
        if rule is not None and rule.changes:
            self._audit(short, request, caller, teams, request_id)
        elif self._catch_up is not None:  # a read: what stands at the clock's time
            await self._catch_up()

    def _wrap(self, behavior: Behavior, method: str, kind: str, logged: bool) -> Behavior:
        short = method.rsplit("/", 1)[-1]
        admin = method.startswith(ADMIN_PREFIX)
        metrics = self._metrics
        calls = metrics.rpc(method) if metrics is not None else None
        admission = self.admission

        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            start = monotonic()
            code = grpc.StatusCode.OK
            reason: str | None = None  # a refusal's ErrorInfo reason, for its log line
            said: dict[str, str | None] = {}  # and what else it says (_refusal_fields)
            user_id = ""
            shown_user: str | None = None  # user_id as it may be logged
            entered = shed = False
            metadata = context.invocation_metadata()  # a new tuple each time it is asked
            sent_id = request_id_in(metadata, request)
            request_id = self._loggable(sent_id)
            answer: tuple[Any, ...]  # abort's arguments, for a refused or failed call
            try:
                if admission is not None:
                    shed = True  # until it has a place (Admission logs what it sheds)
                    admission.enter()
                    entered, shed = True, False
                if admin:
                    call_context.set((("method", short), ("request_id", request_id)))
                    await self._admit(short, kind, request, metadata, sent_id)
                    return await behavior(request, context)
                user_id = self._authenticate(kind, metadata)
                shown_user = self._shown_user(user_id)
                # (bound once the caller is known: the call's own line names them itself)
                call_context.set(
                    (("method", short), ("request_id", request_id), ("user_id", shown_user))
                )
                if kind == "user" and self._user_limits is not None:
                    self._user_limits.take(user_id)
                current_user.set(user_id)
                if isinstance(request, Undecodable):
                    raise InvalidArgument.field(request.field, request.problem)
                return await behavior(request, context)
            except DomainError as exc:
                reason = exc.reason
                said = self._refusal_fields(exc, request)
                if metrics is not None:
                    metrics.refused(exc.reason, kind)
                status = to_status(exc)
                code = status.code
                answer = (code, status.details, status.trailing_metadata)
            except NotImplementedError:
                code = grpc.StatusCode.UNIMPLEMENTED
                answer = (code, f"{short} is not implemented yet")
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:  # the client gave up (its deadline, a cancel)
                code = grpc.StatusCode.CANCELLED  # not OK: the call was never answered
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("rpc_failed", method=short)
                status = internal_status()
                answer = (status.code, status.details, status.trailing_metadata)
            finally:
                if admission is not None and entered:
                    admission.leave()
                if calls is not None:
                    calls.observe(code, monotonic() - start)
                if (logged or code is not grpc.StatusCode.OK) and not shed:
                    self._counter += 1
                    log.info(
                        "rpc",
                        method=short,
                        code=code.name,
                        duration_ms=round((monotonic() - start) * 1000, 3),
                        request_id=request_id,
                        # its caller: a user, or (bound) the admin an AdminService
                        # call is made by, whose line has no user_id at all
                        **({} if admin else {"user_id": shown_user}),
                        # which of a code's refusals (RUNNING_ELSEWHERE, INSUFFICIENT_TOKENS
                        # and DEVICE_LIMIT are all FAILED_PRECONDITION): only on a refusal
                        **({"reason": reason} if reason is not None else {}),
                        # and whom it concerns (the team short of tokens, the product)
                        **said,
                        # who called, for a change or a refusal (a key tried from where?);
                        # not on an answered session call, the hot path's line
                        **(
                            {"peer": context.peer()}
                            if admin or code is not grpc.StatusCode.OK
                            else {}
                        ),
                    )
            # A refused or failed call: its status goes out only now, once the call is
            # counted and logged (``abort`` sends it before it raises), so a client that
            # reads the metrics or the log right after the error finds it there.
            await context.abort(*answer)

        return wrapped

    def _refusal_fields(self, exc: DomainError, request: Any) -> dict[str, str | None]:
        """What a refusal's line says besides its reason: its ErrorInfo's metadata (the
        team short of tokens and what it has, the device it runs on...) and the product
        the request names, each as it may be logged; never a field the line has of its
        own (``RPC_LINE_FIELDS``)."""
        fields: dict[str, str | None] = {}
        product_id = getattr(request, "product_id", "")
        if product_id and isinstance(product_id, str):
            fields["product_id"] = self._loggable(product_id)
        for key, value in exc.metadata.items():
            if key not in RPC_LINE_FIELDS:
                fields[key] = self._loggable(value)
        return fields

    def _shown_user(self, user_id: str) -> str | None:
        """``_loggable(user_id)``, kept for the users seen lately: a user id is scrubbed
        once, not on every heartbeat (~2 us each; the ids come from the server's own
        keys, so there are as many as users, and the memo is emptied when full)."""
        memo = self._shown
        if user_id in memo:
            return memo[user_id]
        if len(memo) >= SHOWN_USERS:
            memo.clear()
        shown = memo[user_id] = self._loggable(user_id)
        return shown

    def _loggable(self, text: str) -> str | None:
        return loggable(text, self._admin_token)


def loggable(text: str, admin_token: str) -> str | None:
    """A string the caller chose, as it may be logged: secret-shaped parts and the
    admin token taken out, then cut to ``LOGGED_CHARS`` (None when empty)."""
    if not text:
        return None
    text = text[:SCRUBBED_CHARS]
    if admin_token:
        text = text.replace(admin_token, "\u2026")
    return scrub(text)[:LOGGED_CHARS]


def _secret(metadata: Any) -> str:
    secret = bearer(metadata)
    if secret is None:
        raise Unauthenticated("missing credential: send 'authorization: Bearer <secret>'")
    return secret


class Undecodable:
    """A request body that is not the method's message (corrupt wire format, a
    string that is not UTF-8): answered INVALID_ARGUMENT once the caller is known,
    where gRPC alone would answer UNKNOWN naming a Python exception. ``field``: the
    field at fault when it can be told (a string that is not UTF-8), else the
    request as a whole."""

    def __init__(self, problem: str, field: str = "request") -> None:
        self.problem = problem
        self.field = field


def _lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None
    message = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as exc:
            text = str(exc)
            field = _bad_utf8(message, data) if message is not None and "UTF-8" in text else None
            if field is not None:
                return Undecodable("must be UTF-8 text", field)
            return Undecodable(
                f"is not a valid protobuf message for this method ({decode_failure(exc)})"
            )

    return parse


def decode_failure(exc: DecodeError) -> str:
    """What protobuf found wrong in a body it could not read, without its own
    preamble naming the message type ("Wire format was corrupt")."""
    text = str(exc)
    return text.rsplit(": ", 1)[-1] if ": " in text else "the wire format was corrupt"


def _bad_utf8(message: Descriptor, data: bytes) -> str | None:
    """The path of the first string field in ``data`` (``message``'s wire format)
    whose bytes are not UTF-8 (``users[2]``, ``product.display_name``), or None
    (the parser's complaint was about something else, or the bytes end early).
    Read only for a body protobuf refused, to name the field in its refusal."""
    seen: dict[int, int] = {}  # field number -> items of it read so far
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            elif wire == 2:
                size, pos = _varint(data, pos)
                chunk, pos = data[pos : pos + size], pos + size
                field = message.fields_by_number.get(number)
                if field is None:
                    continue
                index = seen[number] = seen.get(number, -1) + 1
                name = f"{field.name}[{index}]" if field.is_repeated else field.name
                if field.type == FieldDescriptor.TYPE_STRING:
                    chunk.decode("utf-8")
                elif field.message_type is not None:  # a message, a map's entry
                    inner = _bad_utf8(field.message_type, chunk)
                    if inner is not None:
                        return f"{name}.{inner}"
            else:
                return None
    except UnicodeDecodeError:
        return name
    except IndexError:
        return None
    return None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


_FIELDS: dict[tuple[type, str], bool] = {}  # (a request type, a field): whether it has it


def too_many_entries(message: Any, limit: int, prefix: str = "") -> str | None:
    """The first list in ``message`` (or a message inside it: ``product.platforms``)
    holding more than ``limit`` entries, named as a field path; else None."""
    listed = getattr(message, "ListFields", None)  # (not a message: nothing to count)
    if listed is None:
        return None
    field: FieldDescriptor
    for field, value in listed():
        if field.is_repeated:
            if len(value) > limit:
                return f"{prefix}{field.name}"
        elif field.message_type is not None and field.message_type.full_name.startswith("tessera."):
            found = too_many_entries(value, limit, f"{prefix}{field.name}.")
            if found is not None:
                return found
    return None


def _has_field(request: Any, name: str) -> bool:
    """Whether ``request``'s message type has a field ``name`` (asked once a type:
    no AttributeError raised on every Heartbeat)."""
    key = (type(request), name)
    has = _FIELDS.get(key)
    if has is None:
        fields = getattr(getattr(request, "DESCRIPTOR", None), "fields_by_name", {})
        has = _FIELDS[key] = name in fields
    return has


def request_id_in(metadata: Any, request: Any) -> str:
    """The ``x-request-id`` header, else the request's ``request_id`` field (when
    ``request`` has one), as sent."""
    for key, value in metadata or ():
        if key == "x-request-id" and str(value).strip():  # an empty header says nothing
            return str(value)
    return str(request.request_id or "") if _has_field(request, "request_id") else ""
