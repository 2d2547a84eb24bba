"""A small index entry: nothing, one object, or a tuple of them.

Most keys of the big indexes (a user's devices, meters, memberships) hold one
object; a tuple or a set per key would cost a million users 60-200 bytes each.
"""

from __future__ import annotations

from typing import TypeVar

_T = TypeVar("_T")


def few(found: _T | tuple[_T, ...] | None) -> tuple[_T, ...]:
    """The items of a small index entry: nothing, one object, or a tuple of them."""
    if found is None:
        return ()
    if isinstance(found, tuple):
        return found
    return (found,)


def pack_few(items: tuple[_T, ...]) -> _T | tuple[_T, ...] | None:
    """The smallest index entry for ``items`` (the inverse of ``few``)."""
    return None if not items else items[0] if len(items) == 1 else items
