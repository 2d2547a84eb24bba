"""Identifiers that grow with time, so SQLite appends instead of scattering
inserts across its B-trees (keys in insertion order keep each insert at the
end of the index)."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


# Every pair of base32 digits, by the 10 bits they encode: the counter's 6 digits are
# three lookups, not six divisions (0.11 us against 0.54, an id in every Entitle).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


def _counter32(n: int) -> str:
    """``_b32(n, 6)``: the low 30 bits of ``n`` in 6 digits."""
    return _PAIRS[n >> 20 & 1023] + _PAIRS[n >> 10 & 1023] + _PAIRS[n & 1023]


_DIGITS = frozenset(_ALPHABET)


def _un32(digits: str) -> int:
    n = 0
    for d in digits:
        n = n * 32 + _ALPHABET.index(d)
    return n


def _b32(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 32)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


class IdFactory:
    """ULID-like ids: 48-bit milliseconds, then a counter that only grows, so ids
    made by one process sort in the order they were made; random bits keep ids
    of different processes apart."""

    def __init__(self) -> None:
        self._last_ms = 0
        self._counter = 0
        self._salt = int.from_bytes(os.urandom(4), "big")
        # Encoded once (salt) or once per millisecond (time): most ids of a busy
        # second encode only their counter.
        self._salt32 = _b32(self._salt, 7)
        self._ms32 = _b32(0, 10)

    def not_before(self, newest: str) -> None:
        """Make every later id sort after ``newest``, an id of this form (any prefix)
        made by another process, whatever this machine's clock says. A server that
        starts on a clock behind the last one's (a restart after the clock stepped
        back, a standby taking over on a machine behind) would otherwise make ids
        below those stored, and lists paged by id (ListSessions, ListAdminKeys) would
        skip them. Anything not of this form is ignored."""
        body = newest.partition("_")[2]
        if len(body) != 23 or not set(body) <= _DIGITS:
            return
        ms, counter = _un32(body[:10]), _un32(body[10:16])
        if (ms, counter) >= (self._last_ms, self._counter):
            self._last_ms, self._counter, self._ms32 = ms, counter, body[:10]

    def new(self, prefix: str) -> str:
        ms = time.time_ns() // 1_000_000
        if ms <= self._last_ms:
            self._counter += 1
        else:
            self._last_ms = ms
            self._ms32 = _b32(ms, 10)
            self._counter = int.from_bytes(os.urandom(2), "big")
        return f"{prefix}_{self._ms32}{_counter32(self._counter)}{self._salt32}"
