"""The edge's side of the audit trail (RULES AD2): what an administrative call
is, as its event will say.

The edge (``server/api/interceptors.py``) calls ``AuditRecorder`` (an
``AuditHook``, ``server/api/caller.py``) for every call whose rule in
``server/api/methods.py`` says it changes state, once the call is let through
and before the servicer runs, in the call's own task. It makes the draft of the
call's event and hands it to the engine's trail (``server/engine/audit.py``),
which writes it with the call's first commit, or never if the call changes
nothing.

The draft carries:

- the request as JSON (``json_format.MessageToDict`` with the proto's field
  names), every secret removed: the fields in ``SECRET_FIELDS`` are dropped,
  and every string passes through the scrubber that keeps secrets out of error
  messages (``errors.scrub``), so a key pasted into a name never lands in the
  trail;
- the target: the request field the rule names (a path such as
  ``product.product_id``; a repeated field's values joined by ", "), cut to
  ``TARGET_BYTES``; for the calls whose target is only known once the change
  is made (a new pack, key or member) the trail reads it from the changes;
- the request id the edge found: the ``x-request-id`` header, else the
  request's ``request_id`` (as the edge logs it);
- the teams the rule resolved: the first is the event's ``team_id``, the
  second (MoveTokenPack's destination) its ``other_team_id``, and any more
  (a host's plugins in two other teams) its ``more_team_ids``, so the event is
  read in every one of them (RemoveDevice: the teams whose sessions it ended,
  then the caller's own, ``scopes.check``);
- who: the operator, or the admin key's id and name; AcceptInvitation, made
  without a credential, is the invitee's (actor ``invitee``, see
  ``server/engine/audit.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.message import Message

from server.api.caller import Caller
from server.api.errors import clip, may_hold_secret, scrub
from server.api.methods import RULES
from server.engine.audit import INVITEE, AuditTrail, Draft

# Request fields that are secrets: never in the trail (fields of the request
# itself; no request nests a secret in a message).
SECRET_FIELDS = frozenset({"invitation_token"})
TARGET_BYTES = 1024  # an import of thousands of users names them in its request
# A request kept in full up to this size; past it, its lists keep their first
# LIST_ITEMS items and say how many more there were, and its strings their first
# TEXT_CHARS characters, so a page of ListAuditEvents stays far below 4 MiB.
REQUEST_CHARS = 16_384
LIST_ITEMS = 100
TEXT_CHARS = 1024


# What ``errors.scrub`` looks for can only be where a secret's prefix is, or a run
# of 32 URL-safe base64 characters. Scrubbing costs ~25 us a string (its pattern
# tries lookaheads at every position): 1.1 s for an import of 40,000 users. So the
# request's JSON is first checked for either at C speed (a substring search; the
# run found in the text mapped byte by byte to "a" for such characters), and its
# strings are scrubbed only when one is there.
def cleaned(value: Any, change: Callable[[str], str]) -> Any:
    """A JSON value with every secret field dropped and ``change`` made to every
    string (never to a field's name or the JSON's punctuation)."""
    if isinstance(value, dict):
        return {k: cleaned(v, change) for k, v in value.items() if k not in SECRET_FIELDS}
    if isinstance(value, list):
        return [cleaned(v, change) for v in value]
    if isinstance(value, str):
        return change(value)
    return value


def _text(value: str) -> str:
    # PostgreSQL's text holds no NUL: a caller's NUL would fail the commit.
    return scrub(value).replace("\x00", "\ufffd")


def _shown(text: str) -> str:
    return text


def target_of(request: Message, path: str, hide: Callable[[str], str] = _shown) -> str:
    """The value at ``path`` (dotted) of ``request``; a repeated one's joined. ``hide``
    takes out what must never be kept (the admin token), before the text is cut: a
    secret cut short no longer looks like itself."""
    if not path:
        return ""
    value: Any = request
    for name in path.split("."):
        value = getattr(value, name)
    text = value if isinstance(value, str) else ", ".join(str(v) for v in value)  # repeated
    return _short(hide(text))


def _short(text: str) -> str:
    """At most ``TARGET_BYTES``, scrubbed; cut before scrubbing too (a secret cut at
    4 KB is dropped by the final cut anyway)."""
    return clip(_text(text[: 4 * TARGET_BYTES]), TARGET_BYTES)


def request_json(request: Message, hide: Callable[[str], str] = _shown) -> str:
    try:
        data = json_format.MessageToDict(request, preserving_proto_field_name=True)
    except json_format.Error:
        # A value JSON cannot carry (a Duration's nanos out of range): the servicer
        # refuses such a request, so its draft is never written; keep it readable.
        copy = type(request)()
        copy.CopyFrom(request)
        for name in SECRET_FIELDS & {f.name for f in copy.DESCRIPTOR.fields}:
            copy.ClearField(name)
        data = {"text": text_format.MessageToString(copy, as_one_line=True)}
    else:
        data = {k: v for k, v in data.items() if k not in SECRET_FIELDS}
    text = _json(data)
    if may_hold_secret(text):
        data = cleaned(data, _text)
        text = _json(data)
    # Scrubbed and hidden before it is cut: a secret cut short might no longer look
    # like one. Hidden in each string, not in the text: the admin token may be any
    # text, JSON's punctuation or a field's name included, and the JSON stays whole.
    if hide(text) != text:
        data = cleaned(data, hide)
        text = _json(data)
    return _json(shortened(data)) if len(text) > REQUEST_CHARS else text


def shortened(value: Any) -> Any:
    """A large request's JSON value, cut down (see ``REQUEST_CHARS``)."""
    if isinstance(value, dict):
        return {k: shortened(v) for k, v in value.items()}
    if isinstance(value, list):
        kept = [shortened(v) for v in value[:LIST_ITEMS]]
        more = len(value) - LIST_ITEMS
        return [*kept, f"\u2026 and {more} more"] if more > 0 else kept
    if isinstance(value, str) and len(value) > TEXT_CHARS:
        return value[:TEXT_CHARS] + "\u2026"
    return value


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class AuditRecorder:
    """The ``AuditHook`` the edge calls (see the module docstring). ``admin_token``,
    whatever its shape (``--admin-token`` may be any text, so the scrubber may not
    know it), is taken out of every string of the draft, as the log takes it out."""

    def __init__(self, trail: AuditTrail, admin_token: str = "") -> None:
        self._trail = trail
        self._hidden = (
            (
                (admin_token, "\u2026"),
                (json.dumps(admin_token, ensure_ascii=False)[1:-1], "\u2026"),  # in the JSON
            )
            if admin_token
            else ()
        )

    def _hide(self, text: str) -> str:
        for secret, mark in self._hidden:
            text = text.replace(secret, mark)
        return text

    def __call__(
        self, method: str, request: Any, caller: Caller, teams: tuple[str, ...], request_id: str
    ) -> None:
        if not isinstance(request, Message):
            return  # undecodable: refused before the servicer runs, so nothing changes
        rule = RULES[method]
        actor, actor_name = (caller.actor, caller.actor_name) if caller.actor else (INVITEE, "")
        hide = self._hide
        self._trail.begin(
            Draft(
                method=method,
                actor=actor,
                actor_name=actor_name,
                team_id=teams[0] if teams else "",
                other_team_id=teams[1] if len(teams) > 1 else "",
                more_team_ids=tuple(sorted({t for t in teams[2:] if t} - set(teams[:2]))),
                target=target_of(request, rule.target, hide),
                request_id=_short(hide(request_id)),
                request=request_json(request, hide),
            )
        )
