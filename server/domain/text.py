"""What text the server accepts in names and keys that people or logs will show.

One rule for every display name (a team's, a product's, a user's in
``Full Name <email>``) and one for every ``request_id`` (Entitle,
PurchaseTokens), so that a name cannot hide or reorder what an operator reads
next to it and an idempotency key cannot carry a NUL or a line break into a
log line.

Refused in both: control characters (Unicode category Cc: C0, DEL, C1),
format characters (Cf: the bidi embeddings and overrides U+202A-U+202E, the
isolates U+2066-U+2069, the marks U+200E, U+200F and U+061C, the soft hyphen,
zero-width space and no-break, the BOM...) and the line and paragraph
separators (Zl, Zp). Two format characters are kept in names: U+200C
ZERO WIDTH NON-JOINER and U+200D ZERO WIDTH JOINER are part of how Persian,
Hindi and other scripts spell names, and they cannot reorder text.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from server.domain.errors import InvalidArgument

MAX_DISPLAY_NAME = 200
MAX_REQUEST_ID = 200  # as every other id a request carries (``liveview.MAX_FIELD``)

_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp"})
_JOINERS = frozenset({"\u200c", "\u200d"})
# Letters that draw nothing (the Hangul fillers, the blank Braille pattern), and
# marks, which draw only on a letter before them (combining accents, variation
# selectors, the grapheme joiner): a name of these alone shows as nothing.
_BLANK_LETTERS = frozenset({"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"})
_MARKS = frozenset({"Mn", "Me"})
# Printable ASCII, the usual case: nothing in it is refused, so one search in C
# answers for most values instead of a Python step per character (an Entitle
# checks six of them: issue 17).
_ASCII_PRINTABLE = re.compile(r"[ -~]*")


def unprintable(value: str, *, joiners: bool = False) -> str | None:
    """The first character the rule refuses, as ``U+XXXX``, or None.
    ``joiners`` lets ZWNJ and ZWJ through (names)."""
    if _ASCII_PRINTABLE.fullmatch(value) is not None:
        return None
    for ch in value:
        if (ch < " " or ch >= "\x7f") and unicodedata.category(ch) in _UNPRINTABLE:
            if joiners and ch in _JOINERS:
                continue
            return f"U+{ord(ch):04X}"
    return None


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a display name, in words, or None."""
    bad = unprintable(name, joiners=True)
    if bad is not None:
        return f"must not contain a control or format character such as a line break or a bidi override (found {bad})"
    odd = next((ch for ch in name if _noncharacter(ch)), None)
    if odd is not None:  # never a character: Unicode keeps them out of text for good
        return f"must not contain a noncharacter (found U+{ord(odd):04X})"
    if name and all(_shows_nothing(ch) for ch in name):
        return (
            "must have a visible character: a name of spaces, joiners, blank letters "
            "or marks alone shows as nothing"
        )
    return None


def _noncharacter(ch: str) -> bool:
    """U+FDD0-U+FDEF and the last two code points of every plane (U+FFFE, U+FFFF,
    U+1FFFE...): Unicode's 66 noncharacters, never assigned, shown as nothing or a
    box. (Unassigned code points are not refused: a newer Unicode than this
    Python's may have made them a letter or an emoji.)"""
    code = ord(ch)
    return 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE


def _shows_nothing(ch: str) -> bool:
    return (
        ch.isspace() or ch in _JOINERS or ch in _BLANK_LETTERS or unicodedata.category(ch) in _MARKS
    )


QUOTED = 40  # bytes (UTF-8) of a caller's value a refusal repeats before what is wrong


def quoted(value: str) -> str:
    """``value`` as a refusal quotes it, cut to ``QUOTED`` bytes of UTF-8 as it is shown
    (40 letters of a Latin name, 13 of a Chinese one, 10 emoji, 10 control characters
    written ``\\x01``): what the refusal says after it must survive the edge's clip of
    each description to 160 bytes (``server/api/errors.py``), however long the value
    sent, and in whatever script (40 emoji were all of it)."""
    head = value[:QUOTED]  # (no more characters than bytes can fit)
    while len(repr(head).encode("utf-8", "surrogatepass")) > QUOTED + 2:  # 2: the quotes
        head = head[:-1]  # a control character is 4 bytes as repr shows it (\x01)
    return repr(head) if len(head) == len(value) else repr(head + "\u2026")


def display_name(name: str, field: str, limit: int = MAX_DISPLAY_NAME) -> str:
    """A display name as stored: trimmed, checked; empty stays empty (the caller
    picks the default), but one of spaces alone is refused as one of other blank
    characters is: it was given, and shows nothing."""
    given, name = name, name.strip()
    if given and not name:
        raise InvalidArgument.field(field, name_problem(given) or "must not be blank")
    if len(name) > limit:
        raise InvalidArgument.field(field, f"must be at most {limit} characters")
    problem = name_problem(name)
    if problem is not None:
        raise InvalidArgument.field(field, problem)
    return name


def request_id_problem(request_id: str, *, required: bool) -> str | None:
    """Why ``request_id`` cannot be an idempotency key, in words, or None."""
    if not request_id:
        return (
            "is required: a key unique to this request, so that a retry is not applied twice"
            if required
            else None
        )
    if len(request_id) > MAX_REQUEST_ID:
        return f"must be at most {MAX_REQUEST_ID} characters"
    bad = unprintable(request_id)
    if bad is not None:
        return f"must not contain a control or format character (found {bad})"
    if not request_id.strip():
        return "must not be blank"
    return None


def check_request_id(request_id: str, *, required: bool, field: str = "request_id") -> None:
    problem = request_id_problem(request_id, required=required)
    if problem is not None:
        raise InvalidArgument.field(field, problem)


# -- search (RULES AD4) ------------------------------------------------------------

# Apostrophes join the letters around them ("O'Brien" is one word, "obrien"); every
# other character that is neither a letter, a digit nor a mark within a word (``_word``)
# separates words, the underscore too.
_SEPARATED = str.maketrans({**dict.fromkeys("'\u2019\u02bc\u2018`\u00b4"), "_": " "})


@functools.cache
def _word() -> re.Pattern[str]:
    """A word: a letter or a digit, then letters, digits and marks. The vowel signs of
    Indic scripts (the i of कि, "ki") are marks, neither letters nor digits, and fold
    keeps them (they are no accent: कि is not क): they were taken for separators, so
    "कि" matched every name beginning with क, and "शोर" the middle of "किशोर". Built
    once, from the Unicode database (the marks to U+1FFFF: ~25 ms)."""
    ranges: list[list[int]] = []
    for code in range(0x300, 0x20000):
        if unicodedata.category(chr(code))[0] == "M":
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    marks = "".join(f"\\U{low:08x}-\\U{high:08x}" for low, high in ranges)
    return re.compile(rf"\w[\w{marks}]*")  # (underscores are spaces by then: _SEPARATED)


# Letters whose stroke or ligature Unicode does not decompose, spelled as people
# type them on a keyboard without them ("Øster" is found by "oster").
_SPELLED: dict[str | int, str | None] = {
    **{"ø": "o", "ł": "l", "đ": "d", "ħ": "h", "\u0131": "i", "æ": "ae", "œ": "oe"},
    # Variation selectors choose a glyph and change no letter (葛\U000e0100城 is 葛城
    # drawn the Japanese way, typed without it): dropped, as accents are.
    **dict.fromkeys([*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)]),
    **dict.fromkeys([0x180B, 0x180C, 0x180D, 0x180F]),
}
_UNDECOMPOSED = str.maketrans(_SPELLED)


def fold(text: str) -> str:
    """``text`` as search compares it: compatibility-decomposed (NFKD), case-folded,
    its combining marks dropped ("Zoë" and "ZOË" both give "zoe"; "ß" gives "ss",
    the ligature "ﬁ" gives "fi"), and the few letters with a stroke that do not
    decompose spelled without it ("Ø" gives "o")."""
    if text.isascii():
        return text.lower()  # the same, faster: most names and emails are ASCII
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    return "".join(ch for ch in folded if not unicodedata.combining(ch)).translate(_UNDECOMPOSED)


def search_words(text: str) -> list[str]:
    """The words of a name as search matches them: folded, apostrophes dropped,
    split at anything else that is not a letter, a digit or a mark within a word
    ("Zoë O'Brien" gives ["zoe", "obrien"]; "Jean-Luc" gives ["jean", "luc"]; "किशोर"
    is one word, its vowel signs in it)."""
    return _word().findall(fold(text).translate(_SEPARATED))
