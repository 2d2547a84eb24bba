"""The statements a store's named reads send, as a test watches them."""

from __future__ import annotations

from typing import Any

from server.store.codec import Row
from server.store.reads import NamedReads


def statements_sent(store: NamedReads) -> list[tuple[str, Row]]:
    """Every statement ``store``'s named reads send from now on, with its values."""
    asked: list[tuple[str, Row]] = []
    rows = store._rows

    async def seen(sql: str, params: Row = ()) -> list[Any]:
        asked.append((sql, params))
        return await rows(sql, params)

    store._rows = seen  # type: ignore[method-assign]
    return asked
