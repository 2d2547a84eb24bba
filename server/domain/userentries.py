"""A1: reading the ``users`` entries of AssignUsers and ImportUsers.

An entry is either a user id (a known user's email address) or a new user as
``Full Name <email>``. Parsing is strict about structure and kind about
spelling: spaces around the parts are trimmed, the name is kept as written (any
script, accents, dots, apostrophes, inner quotes; a name wrapped in double
quotes loses them), and the address is checked by ``email-validator`` (syntax
only, never the network) and lower-cased to make the user id.

``<email>`` with no name is read as a user id. Whether a user id names a known
user is for the directory to say; this module only reads text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from server.domain.errors import InvalidArgument
from server.domain.text import name_problem, quoted

MAX_NAME_LENGTH = 256
#: The longest email address there is (RFC 5321's path, less its angle brackets).
MAX_EMAIL_CHARS = 254
#: Text longer than this is no address, whatever it holds, and is refused without the
#: address's checks (90 us for a real one; seconds for megabytes of text, on the event
#: loop of every call that names a user): a margin over ``MAX_EMAIL_CHARS`` for the
#: spaces and the combining accents that normalizing takes away.
MAX_ADDRESS_CHARS = 1_000


@dataclass(slots=True, frozen=True)
class ExistingRef:
    """A user named by id; ``index`` is the entry's position in the request."""

    user_id: str
    index: int


@dataclass(slots=True, frozen=True)
class NewUser:
    """``Full Name <email>``: a new user unless the address is already known."""

    display_name: str
    email: str
    index: int

    @property
    def user_id(self) -> str:
        return self.email


UserEntry = ExistingRef | NewUser


class EntryError(ValueError):
    """One entry is malformed; the message says how, in plain words."""


def normalize_email(address: str) -> str:
    """Check an address's syntax and return it as a user id (lower case).

    ``test_environment`` lets ``*.test`` addresses through (reserved for
    testing, never delivered); deliverability is never checked.
    """
    if len(address) > MAX_ADDRESS_CHARS:  # refused before its checks, which cost by the length
        raise EntryError(
            f"the address {quoted(address)} is {len(address):,} characters long; an address "
            f"has at most {MAX_EMAIL_CHARS}"
        )
    try:
        result = validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise EntryError(f"the address {quoted(address)} is not valid: {exc}") from None
    return result.normalized.lower()


def canonical_user_id(text: str) -> str:
    """The user id ``text`` names, spelt as an administrator may type it
    (``Zoe@Example.COM``, spaces around it, ``zoë`` typed as ``o`` and a combining
    accent): the address as ``normalize_email`` keeps it, so that a user found
    by one spelling in ``AssignUsers`` is found by it everywhere. Text that is
    no address stays as it is (then no user has it)."""
    text = text.strip()
    if "@" not in text:
        return text
    try:
        return normalize_email(text)
    except EntryError:
        return text


def parse_entry(raw: str, index: int) -> UserEntry:
    """Read one entry; raise EntryError saying what is wrong with it."""
    text = raw.strip()
    if not text:
        raise EntryError("is empty; write a user id or Full Name <email>")
    opens, closes = text.count("<"), text.count(">")
    if opens == 0 and closes == 0:
        if "@" not in text:
            raise EntryError(
                f"{quoted(text)} is neither a user id (an email address) nor Full Name <email>"
            )
        return ExistingRef(normalize_email(text), index)
    if opens == 0:
        raise EntryError("has '>' but no opening '<'; write Full Name <email>")
    if closes == 0:
        raise EntryError("has '<' but no closing '>'; write Full Name <email>")
    if opens > 1 or closes > 1:
        raise EntryError("has more than one '<' or '>'; write one address in angle brackets")
    start, end = text.index("<"), text.index(">")
    if end < start:
        raise EntryError("has '>' before '<'; write Full Name <email>")
    tail = text[end + 1 :].strip()
    if tail:
        raise EntryError(f"has text after the closing '>': {quoted(tail)}")
    address = text[start + 1 : end].strip()
    if not address:
        raise EntryError("has nothing between '<' and '>'; write the email address there")
    name = text[:start].strip()
    in_quotes = len(name) >= 2 and name[0] == name[-1] == '"'
    if in_quotes:
        name = name[1:-1].strip()
    email = normalize_email(address)
    if not name:
        if in_quotes:
            raise EntryError("has an empty name between the double quotes")
        return ExistingRef(email, index)
    _check_name(name)
    return NewUser(name, email, index)


def _check_name(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise EntryError(f"has a name longer than {MAX_NAME_LENGTH} characters")
    if name.count('"') % 2:
        raise EntryError("has an unmatched double quote in the name")
    problem = name_problem(name)
    if problem is not None:
        raise EntryError(f"has a name that {problem}")


#: What ``check_user_entries`` gives: the good entries and the errors by index.
CheckedEntries = tuple[list[UserEntry], dict[int, str]]


def check_user_entries(entries: Sequence[str]) -> CheckedEntries:
    """Read every entry; return the good ones (duplicates once) and the errors by index.

    A user named twice counts once, at the place of their first entry; when one
    of the duplicates gives a name (``Full Name <email>``) and the first did not,
    the named form is kept so that a new user can still be invited.
    """
    kept: list[UserEntry] = []
    position: dict[str, int] = {}
    errors: dict[int, str] = {}
    for index, raw in enumerate(entries):
        try:
            entry = parse_entry(raw, index)
        except EntryError as exc:
            errors[index] = str(exc)
            continue
        at = position.get(entry.user_id)
        if at is None:
            position[entry.user_id] = len(kept)
            kept.append(entry)
        elif isinstance(entry, NewUser) and isinstance(kept[at], ExistingRef):
            kept[at] = entry
    return kept, errors


def entry_violations(field: str, errors: dict[int, str]) -> dict[str, str]:
    """Errors by index as BadRequest fields (``users[3]``), in entry order."""
    return {f"{field}[{index}]": errors[index] for index in sorted(errors)}


def parse_user_entries(entries: Sequence[str], field: str = "users") -> list[UserEntry]:
    """A1: read a request's entries, or raise InvalidArgument naming every bad one."""
    if not entries:
        raise InvalidArgument.field(field, "must name at least one user")
    kept, errors = check_user_entries(entries)
    if errors:
        raise InvalidArgument(entry_violations(field, errors))
    return kept
