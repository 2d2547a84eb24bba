"""Page sizes and opaque page tokens (AIP-158)."""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import heapq
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from server.domain.errors import InvalidArgument

_T = TypeVar("_T")

# 100 of most lists' messages (a Member with its invitation, a few hundred bytes)
# are tens of KB. Some can be far larger (a Member who may run each of hundreds of
# products, an audit event keeping a 16 KB request), so a page also stops before
# ``ANSWER_BYTES`` (AIP-158 lets a page hold fewer than asked): under the 4 MiB that
# gRPC clients (grpcurl, the SDK) receive unless told otherwise.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
ANSWER_BYTES = 3 << 20
_M = TypeVar("_M", bound=Message)


def page_size(value: int, field: str = "page_size", limit: int = MAX_PAGE_SIZE) -> int:
    """AIP-158: 0 means the default; more than the maximum is the maximum."""
    if value < 0:
        raise InvalidArgument.field(field, "must not be negative")
    if value == 0:
        return min(DEFAULT_PAGE_SIZE, limit)
    return min(value, limit)


def of_query(kind: str, request: Message) -> str:
    """``kind`` bound to the request's other fields than its page's (AIP-158: a token
    goes with the query that gave it): a digest of them, so that a token given for
    one team's list, say, is refused with another's instead of skipping its items."""
    query = type(request)()
    query.CopyFrom(request)
    query.ClearField("page_token")
    query.ClearField("page_size")
    digest = hashlib.blake2b(query.SerializeToString(deterministic=True), digest_size=6)
    return f"{kind}.{digest.hexdigest()}"


def _check(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_CHECK_BYTES).digest()


_CHECK_BYTES = 4


def encode(kind: str, position: str) -> str:
    """The token of the page after ``position``: its query's kind and the position, behind
    a checksum, so that a token cut short (a link copied in part) is refused rather than
    read as an earlier position. Opaque, not secret: a forged one lists only what the
    caller may list anyway."""
    body = f"{kind}:{position}".encode()
    return base64.urlsafe_b64encode(_check(body) + body).decode().rstrip("=")


def decode(token: str, kind: str, field: str = "page_token") -> str | None:
    """The position a token stands for, or None for the first page."""
    if not token:
        return None
    try:
        whole = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        check, body = whole[:_CHECK_BYTES], whole[_CHECK_BYTES:]
        if check != _check(body):
            raise ValueError("its checksum does not match")
        raw = body.decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument.field(field, "is not a page token this server gave out") from exc
    prefix, sep, position = raw.partition(":")
    if prefix != kind or not sep:
        if sep and prefix.partition(".")[0] == kind.partition(".")[0]:
            raise InvalidArgument.field(
                field,
                "was given for another query: send it with the same fields as the call "
                "that returned it (only page_size may change)",
            )
        raise InvalidArgument.field(field, "is not a page token this server gave out")
    return position


def decode_seq(token: str, kind: str) -> int | None:
    """The sequence number a token of ``kind`` stands for (a ledger entry's, an audit
    event's), or None for the first page: up to 18 ASCII digits (a forged token with
    more would overflow SQLite's integers)."""
    position = decode(token, kind)
    if position is None:
        return None
    if position.isascii() and position.isdigit() and len(position) <= 18:
        return int(position)
    raise InvalidArgument.field("page_token", "is not a page token this server gave out")


#: AIP-132's ``order_by`` of a list in time order: oldest first (the default) or newest.
TIME_ORDERS = {"": False, "time": False, "time asc": False, "time desc": True}


def time_order(order_by: str, field: str = "order_by") -> bool:
    """True for newest first (``"time desc"``), False for oldest first (``""``,
    ``"time"``, ``"time asc"``); anything else is refused naming the field."""
    newest = TIME_ORDERS.get(" ".join(order_by.split()).lower())
    if newest is None:
        raise InvalidArgument.field(field, 'must be "time" (oldest first) or "time desc"')
    return newest


def paginate(
    items: Sequence[_T],
    key: Callable[[_T], str],
    kind: str,
    page_size_value: int,
    page_token: str,
    limit: int = MAX_PAGE_SIZE,
) -> tuple[list[_T], str]:
    """One page of ``items``, which are sorted by ``key`` (unique), and the
    token of the next page ("" on the last). A page starts after the key its
    token carries, not at a position, so items added or removed between two
    calls never make a walk skip or repeat one that was there all along."""
    size = page_size(page_size_value, limit=limit)
    after = decode(page_token, kind)
    start = 0 if after is None else bisect.bisect_right(items, after, key=key)
    return page_of(list(items[start : start + size + 1]), size, kind, key)


def merged_page(
    lists: Sequence[Sequence[_T]],
    key: Callable[[_T], str],
    after: str | None,
    limit: int,
    newest_first: bool = False,
) -> list[_T]:
    """The first ``limit`` items after the key ``after`` (None: from the start) of
    the merge of ``lists``, each sorted by ``key`` (unique across them), in that
    order or (``newest_first``) the reverse: each list is entered by bisection and
    read no further than the page needs (``page_of``'s page and one)."""
    walks: list[Iterator[_T]] = []
    for items in lists:
        if newest_first:
            end = len(items) if after is None else bisect.bisect_left(items, after, key=key)
            walks.append(_walk(items, range(end - 1, -1, -1)))
        else:
            start = 0 if after is None else bisect.bisect_right(items, after, key=key)
            walks.append(_walk(items, range(start, len(items))))
    merged = walks[0] if len(walks) == 1 else heapq.merge(*walks, key=key, reverse=newest_first)
    return list(itertools.islice(merged, limit))


def _walk(items: Sequence[_T], places: range) -> Iterator[_T]:
    """``items`` at ``places``, read as they are taken."""
    return (items[i] for i in places)


def page_of(
    found: list[_T], size: int, kind: str, key: Callable[[_T], str]
) -> tuple[list[_T], str]:
    """The page of ``found``, read as a page and one more (``size + 1`` items from
    the page's start, in order), and the next page's token ("" when nothing more
    was found): the reads that seek the page's start themselves (the ledger, the
    audit trail, the members by product) ask for no more than that."""
    page = found[:size]
    return page, encode(kind, key(page[-1])) if len(found) > size and page else ""


def fitted(
    items: Sequence[_T],
    answers: Iterable[_M],
    token: str,
    kind: str,
    key: Callable[[_T], str],
) -> tuple[list[_M], str]:
    """A page's ``answers`` (one message an item of ``items``, in order) and its next
    page's ``token``, cut before ``ANSWER_BYTES`` (one message at least, whatever its
    size): the next page then starts after the last one kept. ``answers`` may be made
    as they are taken: none is made past the cut (a page of 1,000 members, each with
    a catalog of 10,000 products, made all 1,000 to keep 30)."""
    kept: list[_M] = []
    total = 0
    for answer in answers:
        total += answer.ByteSize()
        if total > ANSWER_BYTES and kept:
            return kept, encode(kind, key(items[len(kept) - 1]))
        kept.append(answer)
    return kept, token
