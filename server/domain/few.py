"""A small index entry: nothing, one object, or a tuple of them.

Most keys of the big indexes (a user's devices, meters, memberships) hold one
object; a tuple or a set per key would cost a million users 60-200 bytes each.
"""

from __future__ import annotations

from typing import TypeVar

_K = TypeVar("_K")
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


def add_few(index: dict[_K, _T | tuple[_T, ...]], key: _K, item: _T) -> None:
    """Add ``item`` to ``index[key]``, a small index entry (the one object while alone)."""
    found = index.get(key)
    index[key] = item if found is None else (*few(found), item)


def drop_few(index: dict[_K, _T | tuple[_T, ...]], key: _K, item: _T) -> bool:
    """Remove ``item`` (this very object) from ``index[key]``, the key with its
    last item; False when it was not there."""
    mine = few(index.get(key))
    rest = tuple(x for x in mine if x is not item)
    if len(rest) == len(mine):
        return False
    packed = pack_few(rest)
    if packed is None:
        del index[key]
    else:
        index[key] = packed
    return True
