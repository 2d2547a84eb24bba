"""A1: reading ``users`` entries (``user id`` or ``Full Name <email>``)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain import userentries
from server.domain.errors import InvalidArgument
from server.domain.text import name_problem
from server.domain.userentries import (
    EntryError,
    ExistingRef,
    NewUser,
    parse_entry,
    parse_user_entries,
)


def violations(entries: list[str]) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        parse_user_entries(entries)
    return caught.value.violations


def test_a1_bare_user_id_is_trimmed_and_lower_cased() -> None:
    assert parse_user_entries(["  Bob@Example.COM \t"]) == [ExistingRef("bob@example.com", 0)]


@pytest.mark.parametrize(
    ("entry", "name", "email"),
    [
        ("Zoë O'Brien-Łukasz <Zoe@Example.COM>", "Zoë O'Brien-Łukasz", "zoe@example.com"),
        ("李雷 <li@example.cn>", "李雷", "li@example.cn"),
        ("J. R. R. Tolkien <jrr@example.org>", "J. R. R. Tolkien", "jrr@example.org"),
        ('"Doe, John" <j@x.com>', "Doe, John", "j@x.com"),
        ('  " Jane Roe "   <jane@x.com>', "Jane Roe", "jane@x.com"),
        ("   Ada   Lovelace   <  ADA@Example.com  >  ", "Ada   Lovelace", "ada@example.com"),
        ('Dwayne "The Rock" Johnson <rock@x.com>', 'Dwayne "The Rock" Johnson', "rock@x.com"),
        ("Doe, John <jd@x.com>", "Doe, John", "jd@x.com"),
        ("Ωμέγα <user@bücher.de>", "Ωμέγα", "user@bücher.de"),
        ("Tess Ter <tess@acme.test>", "Tess Ter", "tess@acme.test"),
    ],
)
def test_a1_new_user_keeps_name_as_written_and_lower_cases_email(
    entry: str, name: str, email: str
) -> None:
    [parsed] = parse_user_entries([entry])
    assert parsed == NewUser(name, email, 0)
    assert parsed.user_id == email


def test_a1_address_in_brackets_without_a_name_is_a_user_id() -> None:
    assert parse_user_entries(["<Bob@X.com>"]) == [ExistingRef("bob@x.com", 0)]


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("", "is empty"),
        ("    ", "is empty"),
        ("John Doe <john@x.com", "no closing '>'"),
        ("John Doe john@x.com>", "no opening '<'"),
        ("John Doe <john@x.com> (work)", "text after the closing '>': '(work)'"),
        ("John Doe <john@>", "There must be something after the @-sign"),
        ("John Doe <john>", "must have an @-sign"),
        ("John Doe <john@localhost>", "is not valid"),
        ("John Doe <>", "nothing between '<' and '>'"),
        ("A <a@x.com> <b@x.com>", "more than one '<' or '>'"),
        ("John Doe >john@x.com<", "'>' before '<'"),
        ("John Doe", "neither a user id (an email address) nor Full Name <email>"),
        ("john@", "There must be something after the @-sign"),
        ('"" <j@x.com>', "empty name"),
        ('"John <j@x.com>', "unmatched double quote"),
        ("John\tDoe <j@x.com>", "control or format character"),
        ("John\u2028Doe <j@x.com>", "control or format character"),
        ("John\u202eeoD <j@x.com>", "bidi override (found U+202E)"),  # issue 12, 8
        ("John\u2066Doe <j@x.com>", "(found U+2066)"),
        ("x" * 257 + " <j@x.com>", "longer than 256 characters"),
    ],
)
def test_a1_malformed_entry_is_named_and_explained(entry: str, words: str) -> None:
    found = violations(["Good Person <good@x.com>", entry])
    assert list(found) == ["users[1]"]
    assert words in found["users[1]"]


def test_a1_every_bad_entry_is_reported_in_order() -> None:
    found = violations(["Ann <ann@x.com>", "Bob <bob@x.com", "", "carol@x.com", "Dan <dan@>"])
    assert list(found) == ["users[1]", "users[2]", "users[4]"]


def test_a1_field_name_is_configurable() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_user_entries(["", "ok@x.com"], field="entries")
    assert caught.value.violations == {
        "entries[0]": "is empty; write a user id or Full Name <email>"
    }


def test_a1_empty_list_is_rejected() -> None:
    assert violations([]) == {"users": "must name at least one user"}


def test_a1_duplicates_count_once_keeping_the_first() -> None:
    parsed = parse_user_entries(
        ["Ann <Ann@X.com>", "ann@x.com", "Annie <ANN@x.com>", "bob@x.com", " bob@x.com "]
    )
    assert parsed == [NewUser("Ann", "ann@x.com", 0), ExistingRef("bob@x.com", 3)]


def test_a1_named_duplicate_replaces_a_bare_first_entry() -> None:
    parsed = parse_user_entries(["ann@x.com", "Bob <bob@x.com>", "Ann <ann@x.com>"])
    assert parsed == [NewUser("Ann", "ann@x.com", 2), NewUser("Bob", "bob@x.com", 1)]


def test_a1_thousand_entries_in_one_request() -> None:
    entries = [f"User Number {i} <User.{i}@Example.com>" for i in range(1000)]
    parsed = parse_user_entries(entries)
    assert len(parsed) == 1000
    assert parsed[999] == NewUser("User Number 999", "user.999@example.com", 999)
    entries[517] = "User Number 517 <user.517@>"
    assert list(violations(entries)) == ["users[517]"]


names = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp"), blacklist_characters='<>"'
    ),
    min_size=1,
    max_size=60,
).filter(lambda s: s.strip() != "" and name_problem(s.strip()) is None)  # shows something


@given(names)
def test_a1_any_name_without_brackets_or_quotes_is_kept_trimmed(name: str) -> None:
    assert parse_entry(f"{name} <a@example.com>", 7) == NewUser(name.strip(), "a@example.com", 7)


@given(st.text(max_size=80))
def test_a1_any_text_parses_or_is_explained(text: str) -> None:
    try:
        entry = parse_entry(text, 0)
    except EntryError as exc:
        assert str(exc)
    else:
        assert entry.user_id == entry.user_id.lower()
        assert "@" in entry.user_id


def test_a1_text_longer_than_any_address_is_refused_before_the_address_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The address checks cost with the text's length (seconds for the 4 MB a request
    may carry, on the event loop of every call that names a user): text longer than
    any address, spaces and combining accents included, is refused without them, as
    the address it cannot be; one of an address's length still gets them."""
    checked: list[int] = []
    real = userentries.validate_email

    def counted(address: str, **kwargs: Any) -> Any:
        checked.append(len(address))
        return real(address, **kwargs)

    monkeypatch.setattr(userentries, "validate_email", counted)
    huge = "a" * 4_000_000 + "@example.com"
    with pytest.raises(
        EntryError, match="is 4,000,012 characters long; an address has at most 254"
    ):
        userentries.normalize_email(huge)
    assert userentries.canonical_user_id(f" {huge} ") == huge  # no one's: no user has it
    with pytest.raises(EntryError, match="characters long"):
        userentries.parse_entry(f"Huge <{huge}>", 0)
    assert checked == []
    longest = "z" * 64 + "@" + ".".join(["d" * 61] * 3) + ".com"  # 254 characters
    assert userentries.normalize_email(longest.upper()) == longest
    spaced = " " * 700 + "Zoe@Example.COM"
    assert userentries.canonical_user_id(spaced) == "zoe@example.com"
    assert checked == [254, 15]
