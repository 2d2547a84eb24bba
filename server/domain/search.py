"""Finding users by the beginning of a name or an email address (RULES AD4).

A user matches a query when, compared as ``server/domain/text.py`` folds text
(accents dropped, case folded):

- the query's words begin the user's name at one of its words: the whole name
  ("zoe o" finds "Zoë O'Brien") or a later word ("obr", "o'b" and "OBRIEN" find
  her too); apostrophes are no word breaks, so "o'b" is "ob";
- or the query, as typed but folded, begins the email address ("zoe.ob" finds
  zoe.obrien@example.com).

An empty query (or one of spaces) matches everyone: the portal's "search as
you type" starts empty. One that folds to nothing (accents alone, typed as
combining marks) matches no one: it is not empty, and nobody's name begins
with it.

``UserIndex`` answers that without scanning every user: each name's word
suffixes ("zoe obrien", "obrien") and each folded email are kept sorted, and a
query is a ``bisect`` to its prefix range. Users are only ever added (never
renamed nor removed), so new keys wait in a short unsorted tail, scanned as is,
until the next query after it grew past ``TAIL``, which merges it in (a sort
of two sorted runs, linear): importing 40,000 users costs them nothing.

The users loaded at start are keyed after the server has started to serve,
a slice at a time (``UserIndex.later`` and ``build_some``, driven by the
engine between calls), and sorted once at the end: a million users take
seconds to key, which no restart should wait for. A search that comes first
finishes the work itself and is answered in full.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple, Protocol

from server.domain.text import fold, search_words

TAIL = 1024  # keys kept unsorted before the next query merges them


class Query(NamedTuple):
    """A query as matched: the name's words joined by one space, the email's fold;
    ``everyone`` when nothing but spaces was typed."""

    name: str
    email: str
    everyone: bool = False

    @property
    def no_one(self) -> bool:
        """Typed, but folded to nothing (accents alone): nobody begins with it."""
        return not self.everyone and not self.email


def parse(query: str) -> Query:
    typed = query.strip()
    return Query(" ".join(search_words(query)), fold(typed), not typed)


def name_keys(display_name: str) -> list[str]:
    """The suffixes of a name's words that a query may begin: "Zoë O'Brien" gives
    ["zoe obrien", "obrien"]."""
    words = search_words(display_name)
    return [" ".join(words[i:]) for i in range(len(words))]


def matches(query: Query, display_name: str, email: str) -> bool:
    """Whether the user named ``display_name`` with ``email`` answers ``query``."""
    if query.everyone:
        return True
    if query.no_one:
        return False
    if fold(email).startswith(query.email):
        return True
    return bool(query.name) and any(k.startswith(query.name) for k in name_keys(display_name))


class _Keys:
    """(key, user id) pairs, sorted but for a short unsorted tail."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._sorted = sorted(pairs)
        self._tail: list[tuple[str, str]] = []

    def add(self, key: str, user_id: str) -> None:
        self._tail.append((key, user_id))

    def starting(self, prefix: str) -> Iterator[str]:
        """The user ids of every key that begins with ``prefix``."""
        if len(self._tail) > TAIL:
            self._sorted.extend(sorted(self._tail))
            self._sorted.sort()  # two sorted runs: merged in linear time
            self._tail = []
        keys = self._sorted
        i = bisect.bisect_left(keys, (prefix, ""))
        while i < len(keys) and keys[i][0].startswith(prefix):
            yield keys[i][1]
            i += 1
        for key, user_id in self._tail:
            if key.startswith(prefix):
                yield user_id


def _key(
    names: list[tuple[str, str]],
    emails: list[tuple[str, str]],
    user_id: str,
    display_name: str,
    email: str,
) -> None:
    """A user's (key, user id) pairs: one per name key, one for the folded email."""
    names.extend((key, user_id) for key in name_keys(display_name))
    emails.append((fold(email), user_id))


class Named(Protocol):
    """What the index reads of a user."""

    @property
    def user_id(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def email(self) -> str: ...


class UserIndex:
    """Every user's name keys and folded email, for ``find``."""

    def __init__(self, users: Iterable[tuple[str, str, str]] = ()) -> None:
        """``users``: (user id, display name, email) of those already known."""
        names: list[tuple[str, str]] = []
        emails: list[tuple[str, str]] = []
        for user_id, display_name, email in users:
            _key(names, emails, user_id, display_name, email)
        self._names = _Keys(names)
        self._emails = _Keys(emails)

        self._new: list[tuple[str, str, str]] = []
        # ``later``'s users, keyed so far up to ``_done``, their keys not yet sorted
        self._todo: Sequence[Named] = ()
        self._done = 0
        self._todo_names: list[tuple[str, str]] = []
        self._todo_emails: list[tuple[str, str]] = []

    @classmethod
    def later(cls, users: Sequence[Named]) -> UserIndex:
        """An index of ``users``, keyed by ``build_some`` (or the first ``find``)."""
        index = cls()
        index._todo = users
        return index

    def build_some(self, n: int) -> bool:
        """Key up to ``n`` more of ``later``'s users (sorting them all after the
        last); True while some are left."""
        todo = self._todo
        if not todo:
            return False
        end = min(len(todo), self._done + n)
        names, emails = self._todo_names, self._todo_emails
        for i in range(self._done, end):
            user = todo[i]
            _key(names, emails, user.user_id, user.display_name, user.email)
        self._done = end
        if end < len(todo):
            return True
        self._names = _Keys(names)  # empty until now: ``find`` finishes this first
        self._emails = _Keys(emails)
        self._todo, self._todo_names, self._todo_emails = (), [], []
        return False

    def add(self, user_id: str, display_name: str, email: str) -> None:
        """A new user, keyed at the next ``find``: an import of 40,000 users pays
        for a list append each, not for folding their names."""
        self._new.append((user_id, display_name, email))

    def find(self, query: Query) -> set[str]:
        """The ids of the users ``query`` matches (not for the empty query: everyone)."""
        if query.no_one:
            return set()
        self.build_some(len(self._todo))
        for user_id, display_name, email in self._new:
            for key in name_keys(display_name):
                self._names.add(key, user_id)
            self._emails.add(fold(email), user_id)
        self._new.clear()
        found = set(self._emails.starting(query.email))
        if query.name:
            found.update(self._names.starting(query.name))
        return found
