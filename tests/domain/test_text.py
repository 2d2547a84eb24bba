"""Issue 12, points 6 and 8: one rule for display names, one for request ids."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.errors import InvalidArgument
from server.domain.text import (
    check_request_id,
    display_name,
    name_problem,
    request_id_problem,
    unprintable,
)

BIDI = [
    "\u202a",  # LEFT-TO-RIGHT EMBEDDING
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\u2066",  # LEFT-TO-RIGHT ISOLATE
    "\u2067",
    "\u2068",
    "\u2069",
    "\u200e",  # LEFT-TO-RIGHT MARK
    "\u200f",
    "\u061c",  # ARABIC LETTER MARK
]
CONTROL = ["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9b"]
OTHER_FORMAT = ["\u00ad", "\u200b", "\u2060", "\ufeff"]  # soft hyphen, zero widths, BOM
SEPARATORS = ["\u2028", "\u2029"]


@pytest.mark.parametrize("ch", BIDI + CONTROL + OTHER_FORMAT + SEPARATORS)
def test_issue12_h2_8_display_name_refuses_control_format_and_bidi_characters(ch: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        display_name(f"Acme{ch}Corp", "display_name")
    assert list(e.value.violations) == ["display_name"]
    assert f"U+{ord(ch):04X}" in e.value.violations["display_name"]
    assert "bidi override" in e.value.violations["display_name"]


@pytest.mark.parametrize(
    "name",
    [
        "Acme Corp",
        "Société Générale",
        "株式会社アクメ",
        "شركة أكمي",  # right to left by itself: no override needed
        "Mehr\u200cnaz",  # ZERO WIDTH NON-JOINER: Persian spelling
        "क्\u200dष",  # ZERO WIDTH JOINER
        "O'Brien & Sons, Ltd.",
        "🎨 Studio",
        "Jose\u0301",  # an accent on its letter
        "\u3164\u3131",  # a filler beside a letter that draws
    ],
)
def test_issue12_h2_8_display_name_keeps_every_script(name: str) -> None:
    assert name_problem(name) is None
    assert display_name(f"  {name} ", "product.display_name") == name


@pytest.mark.parametrize("ch", ["\ufdd0", "\ufdef", "\ufffe", "\uffff", "\U0001fffe", "\U0010ffff"])
def test_a1_a_display_name_with_a_noncharacter_is_refused_naming_it(ch: str) -> None:
    """Unicode's 66 noncharacters are never letters: a name holding one shows a box
    or nothing there. Private-use and not-yet-assigned code points are kept (a
    newer Unicode than this Python's may have made one an emoji)."""
    with pytest.raises(InvalidArgument) as e:
        display_name(f"Acme{ch}Corp", "display_name")
    assert e.value.violations == {
        "display_name": f"must not contain a noncharacter (found U+{ord(ch):04X})"
    }
    for kept in ("\ue000", "\U000e0fff", "\ufffd"):  # private use, unassigned, replacement
        assert name_problem(f"Acme{kept}") is None


@pytest.mark.parametrize(
    "name",
    [
        "\u200d",
        "\u200c\u200d",
        "\u200d \u200c",
        "\u200d\u3000",
        "\u3164",  # HANGUL FILLER, a letter that draws nothing
        "\u115f\u1160",  # the Hangul choseong and jungseong fillers
        "\uffa0",  # HALFWIDTH HANGUL FILLER
        "\u2800",  # BRAILLE PATTERN BLANK
        "\u034f",  # COMBINING GRAPHEME JOINER
        "\ufe0f",  # VARIATION SELECTOR-16
        "\u0301",  # a combining accent with no letter under it
        "\u20dd",  # COMBINING ENCLOSING CIRCLE (Me)
    ],
)
def test_issue12_h2_8_a_display_name_of_joiners_alone_is_refused(name: str) -> None:
    """The joiners are kept for the scripts that spell names with them, marks for
    the accents they put on letters; a name of nothing else, or of letters that
    draw nothing, shows as nothing beside what it names."""
    with pytest.raises(InvalidArgument) as e:
        display_name(name, "display_name")
    assert "visible character" in e.value.violations["display_name"]


def test_issue12_h2_8_display_name_length_and_empty() -> None:
    assert display_name("", "display_name") == ""  # not given: the caller's default
    assert display_name("  Acme ", "display_name") == "Acme"
    for blank in ("   ", " \u3000 "):  # given, and shows nothing
        with pytest.raises(InvalidArgument) as e:
            display_name(blank, "display_name")
        assert "visible character" in e.value.violations["display_name"]
    assert display_name("x" * 200, "display_name") == "x" * 200
    with pytest.raises(InvalidArgument) as e:
        display_name("x" * 201, "display_name")
    assert e.value.violations == {"display_name": "must be at most 200 characters"}


@pytest.mark.parametrize(
    ("request_id", "words"),
    [
        ("po\x00-1", "U+0000"),
        ("po-1\n", "U+000A"),
        ("po\u202e1", "U+202E"),
        ("po\u200d1", "U+200D"),  # joiners have no business in a key
        ("\t", "U+0009"),
        ("   ", "must not be blank"),
        ("x" * 201, "at most 200 characters"),
    ],
)
def test_issue12_h2_6_one_request_id_rule(request_id: str, words: str) -> None:
    for required in (True, False):
        problem = request_id_problem(request_id, required=required)
        assert problem is not None and words in problem
    with pytest.raises(InvalidArgument) as e:
        check_request_id(request_id, required=False)
    assert list(e.value.violations) == ["request_id"]


def test_issue12_h2_6_request_id_may_be_empty_only_where_it_is_optional() -> None:
    assert request_id_problem("", required=False) is None
    assert request_id_problem("", required=True) == (
        "is required: a key unique to this request, so that a retry is not applied twice"
    )
    for good in ("po-2026-001", "7c9e6679-7425-40de-944b-e07fc1f90ae7", "x" * 200, "é"):
        assert request_id_problem(good, required=True) is None


def _refused_one_by_one(value: str, joiners: bool) -> str | None:
    """The rule as the module docstring states it, a character at a time."""
    for ch in value:
        if unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"}:
            if joiners and ch in "\u200c\u200d":
                continue
            return f"U+{ord(ch):04X}"
    return None


@given(st.text(), st.booleans())
def test_issue12_h2_8_printable_ascii_shortcut_refuses_what_the_rule_refuses(
    value: str, joiners: bool
) -> None:
    """``unprintable`` answers printable ASCII with one search (issue 17): the
    same answer, on every text, as checking each character's category."""
    assert unprintable(value, joiners=joiners) == _refused_one_by_one(value, joiners)
    assert unprintable("ok-" + value, joiners=joiners) == _refused_one_by_one(value, joiners)
