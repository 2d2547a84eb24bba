"""The store's writer held at a gate, on the server's own loop, so that a commit
stays "under way" for as long as a test wants, with no sleeping."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from server.store.sqlite import Store


@contextlib.asynccontextmanager
async def held_writer(
    store: Store,
) -> AsyncIterator[tuple[asyncio.Event, asyncio.Event, list[list[Any]]]]:
    """Hold the store's writer at a gate (set it to let writes through) and
    record the ops of each transaction (one per row written); ``holding`` is set once the writer has
    taken a transaction and waits at the gate. The writer is restored on the
    way out."""
    gate, holding = asyncio.Event(), asyncio.Event()
    writes: list[list[Any]] = []
    group = store._group  # the group commit's writer calls its _write per transaction
    write = group._write

    async def held(plan: Any) -> Any:
        holding.set()
        await gate.wait()
        writes.append([(table, delete, row) for table, delete, rows in plan for row in rows])
        return await write(plan)

    group._write = held
    try:
        yield gate, holding, writes
    finally:
        gate.set()
        group._write = write
