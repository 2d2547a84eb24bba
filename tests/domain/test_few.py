"""The small index entries of the big indexes (``server/domain/few.py``): a key
holds one object alone, a tuple of several, and is gone with its last."""

from __future__ import annotations

from server.domain.few import add_few, drop_few, few


class Thing:
    """Compared by identity, as the indexes' objects (devices, meters, members) are."""


def test_an_index_entry_holds_one_object_alone_then_a_tuple_then_nothing() -> None:
    a, b, c = Thing(), Thing(), Thing()
    index: dict[str, Thing | tuple[Thing, ...]] = {}
    add_few(index, "ann", a)
    assert index["ann"] is a
    add_few(index, "ann", b)
    add_few(index, "ann", c)
    assert index["ann"] == (a, b, c)
    assert drop_few(index, "ann", b) is True
    assert index["ann"] == (a, c)
    assert drop_few(index, "ann", a) is True
    assert index["ann"] is c  # one left: the object itself again
    assert drop_few(index, "ann", c) is True
    assert "ann" not in index and few(index.get("ann")) == ()


def test_dropping_what_is_not_there_changes_nothing() -> None:
    a, b = Thing(), Thing()
    index: dict[str, Thing | tuple[Thing, ...]] = {"ann": a}
    assert drop_few(index, "ann", b) is False
    assert drop_few(index, "bob", a) is False
    assert index == {"ann": a}
