"""RULES AD4: the search normalizer, the matcher and its index, without I/O."""

from __future__ import annotations

import random
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.search import TAIL, UserIndex, matches, name_keys, parse
from server.domain.text import fold, search_words

ZOE = ("zoe.obrien@example.com", "Zoë O'Brien", "zoe.obrien@example.com")


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Zoë", "zoe"),
        ("ZOË", "zoe"),
        ("zoe\u0308", "zoe"),  # a combining diaeresis typed apart
        ("Straße", "strasse"),
        ("ﬁne", "fine"),  # a compatibility ligature
        ("Åsa Østby", "asa ostby"),  # Ø does not decompose: spelled without its stroke
        ("Łukasz", "lukasz"),
        ("İlkay", "ilkay"),
        ("\uff3a\uff4f\uff45", "zoe"),  # full-width letters
    ],
)
def test_ad4_fold_drops_accents_and_case(text: str, folded: str) -> None:
    assert fold(text) == folded


def test_ad4_words_join_at_apostrophes_and_split_at_other_marks() -> None:
    assert search_words("Zoë O'Brien") == ["zoe", "obrien"]
    assert search_words("Zoë O\u2019Brien") == ["zoe", "obrien"]  # the typographic apostrophe
    assert search_words("  Jean-Luc  Picard ") == ["jean", "luc", "picard"]
    assert search_words("o'b") == ["ob"]
    assert search_words("--") == []


def test_ad4_the_vowel_signs_of_indic_scripts_are_part_of_their_words() -> None:
    """A vowel sign is a mark, neither letter nor digit, and no accent that fold drops:
    "किशोर" (Kishore) was read as the words क श र, so "कि" (ki) began every name
    beginning with क (Kamal's too), and "शोर" the middle of Kishore's."""
    assert search_words("किशोर कुमार") == ["किशोर", "कुमार"]
    assert search_words("कि") == ["कि"]
    # A virama (्) is an accent to fold (combining class 9): dropped in names and
    # queries alike; the words stay whole.
    assert name_keys("कमल शर्मा") == ["कमल शरमा", "शरमा"] == [fold("कमल शर्मा"), fold("शर्मा")]
    assert search_words("தமிழ் செல்வி") == [fold("தமிழ்"), fold("செல்வி")]  # Tamil
    assert search_words("\u0301a") == ["a"]  # a mark alone begins no word


def test_ad4_a_variation_selector_is_no_part_of_what_is_searched() -> None:
    """葛城 drawn the Japanese way (an ideographic variation selector after 葛, or a
    standardized one) is typed 葛城: the selector changes no letter, and split the name
    into words, so "葛城" did not find it and "城" did."""
    for drawn in ("葛\U000e0100城 太郎", "葛\ufe00城 太郎"):
        assert search_words(drawn) == ["葛城", "太郎"]
        assert name_keys(drawn) == ["葛城 太郎", "太郎"]


def test_ad4_name_keys_are_the_suffixes_of_its_words() -> None:
    assert name_keys("Zoë O'Brien") == ["zoe obrien", "obrien"]
    assert name_keys("Mary Ann Lee") == ["mary ann lee", "ann lee", "lee"]


@pytest.mark.parametrize(
    "query",
    [
        "zoe",
        "Zoë",
        "ZOË",
        "z",
        "obr",
        "o'b",
        "O'BRIEN",
        "zoe o",
        "zoë o'b",
        "zoe.obr",
        "ZOE.OBRIEN@",
    ],
)
def test_ad4_zoe_is_found_by(query: str) -> None:
    _, name, email = ZOE
    assert matches(parse(query), name, email)


@pytest.mark.parametrize(
    "query",
    ["oe", "brien", "zoey", "obrien zoe", "example", "zoe.x", "'", "@"],
)
def test_ad4_zoe_is_not_found_by(query: str) -> None:
    """Beginnings only: not the middle of a word, nor the email's domain."""
    _, name, email = ZOE
    assert not matches(parse(query), name, email)


def test_ad4_the_empty_query_matches_everyone() -> None:
    assert parse("").everyone and parse("   ").everyone
    assert matches(parse(""), "Anyone", "any@example.com")
    assert not parse("'").everyone  # punctuation alone is a query (for emails)


def test_ad4_a_query_of_accents_alone_matches_no_one() -> None:
    """Two combining acute accents fold to nothing: not the empty query (which lists
    everyone, as the portal's search starts), and no name begins with them."""
    query = parse("\u0301\u0301")
    assert not query.everyone
    assert not matches(query, "Zoë O'Brien", "zoe.obrien@example.com")
    assert UserIndex([ZOE]).find(query) == set()


def test_ad4_the_index_finds_what_the_matcher_matches() -> None:
    index = UserIndex([ZOE, ("ann@example.com", "Ann Lee", "ann@example.com")])
    index.add("zed@example.com", "Zed Olsen", "zed@example.com")
    assert index.find(parse("zo")) == {"zoe.obrien@example.com"}
    assert index.find(parse("z")) == {"zoe.obrien@example.com", "zed@example.com"}
    assert index.find(parse("o")) == {"zoe.obrien@example.com", "zed@example.com"}
    assert index.find(parse("lee")) == {"ann@example.com"}
    assert index.find(parse("ann@")) == {"ann@example.com"}
    assert index.find(parse("nobody")) == set()


def test_ad4_users_added_past_the_tail_are_merged_and_still_found() -> None:
    index = UserIndex()
    for i in range(TAIL * 2 + 3):
        index.add(f"u{i:05d}@example.com", f"User {i:05d}", f"u{i:05d}@example.com")
    assert index.find(parse("user 0000")) == {f"u{i:05d}@example.com" for i in range(10)}
    index.add("late@example.com", "Late Comer", "late@example.com")
    assert index.find(parse("comer")) == {"late@example.com"}
    assert len(index.find(parse("u"))) == TAIL * 2 + 3


NAMES = st.text(alphabet="aeoëÖz 'O-", max_size=12)


@given(users=st.lists(st.tuples(NAMES, NAMES), max_size=12), query=NAMES)
def test_ad4_the_index_agrees_with_the_matcher(users: list[tuple[str, str]], query: str) -> None:
    people = [(f"id{i}", name, f"{local}@x.org") for i, (name, local) in enumerate(users)]
    index = UserIndex(people[: len(people) // 2])
    for person in people[len(people) // 2 :]:
        index.add(*person)
    q = parse(query)
    expected = {uid for uid, name, email in people if matches(q, name, email)}
    if q.everyone:
        assert expected == {uid for uid, _, _ in people}
    else:
        assert index.find(q) == expected


class Person(NamedTuple):
    user_id: str
    display_name: str
    email: str


@given(
    users=st.lists(st.tuples(NAMES, NAMES), max_size=12),
    query=NAMES,
    slices=st.lists(st.integers(1, 5), max_size=4),
)
def test_ad4_an_index_built_in_slices_after_start_agrees_with_the_matcher(
    users: list[tuple[str, str]], query: str, slices: list[int]
) -> None:
    """The users loaded at start are keyed a slice at a time after the server
    serves (``later``, ``build_some``); a search before the last slice, and users
    added meanwhile, get the same answer as an index built at once."""
    people = [Person(f"id{i}", name, f"{local}@x.org") for i, (name, local) in enumerate(users)]
    loaded, added = people[: len(people) // 2], people[len(people) // 2 :]
    index = UserIndex.later(loaded)
    left = bool(loaded)
    for n in slices:
        left = index.build_some(n)
    assert left == (sum(slices) < len(loaded))
    for person in added:
        index.add(*person)
    q = parse(query)
    if not q.everyone:
        assert index.find(q) == {uid for uid, name, email in people if matches(q, name, email)}
        assert index.build_some(1) is False  # the search finished the work


def test_ad4_the_index_finds_what_the_matcher_finds_among_100k_users() -> None:
    """100,000 users: a two-letter query matching about 10,000 of them finds exactly
    the users the matcher accepts (checked on the first 10,000). How fast it is,
    against a scan with the same matcher, is ``benchmarks/search_users.py``'s
    to print, not a test's to time."""
    people = hundred_thousand_people()
    index = UserIndex(people)
    query = parse("zo")
    found = index.find(query)
    sample = {uid for uid, name, email in people[:10_000] if matches(query, name, email)}
    assert len(found) > 9_000
    assert sample == {uid for uid in found if int(uid[4:].split("@")[0]) < 10_000}


def hundred_thousand_people(count: int = 100_000) -> list[tuple[str, str, str]]:
    """``count`` users (id, name, email) with accented first names, the same every run."""
    rng = random.Random(4)
    first = ["Zoë", "Ann", "Bob", "Chloé", "Dmitri", "Eve", "François", "Gus", "Hana", "Ian"]
    return [
        (
            f"user{i}@example.com",
            f"{rng.choice(first)} {''.join(rng.choices('abcdefghijklmnopqrstuvwxyz', k=7))}",
            f"user{i}@example.com",
        )
        for i in range(count)
    ]
