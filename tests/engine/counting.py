"""An outbox index that counts the notifications read from it (a test's fake of
the directory's lists: what a page reads, never how long it takes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from server.domain.directory import Notification


class CountingList(list[Notification]):
    """A list of notifications counting, in ``read``, the items read from it."""

    read = 0

    def __iter__(self) -> Iterator[Notification]:
        for n in super().__iter__():
            self.read += 1
            yield n

    def __getitem__(self, at: Any) -> Any:
        got = super().__getitem__(at)
        self.read += len(got) if isinstance(at, slice) else 1
        return got
