"""Page sizes and opaque page tokens (AIP-158)."""

from __future__ import annotations

import base64
import binascii

from server.domain.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(value: int, field: str = "page_size", limit: int = MAX_PAGE_SIZE) -> int:
    """AIP-158: 0 means the default; more than the maximum is the maximum."""
    if value < 0:
        raise InvalidArgument.field(field, "must not be negative")
    if value == 0:
        return min(DEFAULT_PAGE_SIZE, limit)
    return min(value, limit)


def encode(kind: str, position: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def decode(token: str, kind: str, field: str = "page_token") -> str | None:
    """The position a token stands for, or None for the first page."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument.field(field, "is not a page token this server gave out") from exc
    prefix, sep, position = raw.partition(":")
    if prefix != kind or not sep:
        raise InvalidArgument.field(field, "is not a page token this server gave out")
    return position
