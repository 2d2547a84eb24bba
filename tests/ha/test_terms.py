"""A server's terms on PostgreSQL (RULES H1): each is its own.

A term's load may still be under way when its server loses its place and wins
it again (a big database, a short lease). The term that began later serves;
the earlier one, once loaded, finds its epoch gone and drops its own engine
and store, never the serving term's, and its store never writes: it is fenced
by its own epoch, not by whichever the server holds now
(``tests/ha/test_election.py`` has the fence alone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import asyncpg
import grpc
import pytest

from server.app import TesseraServer
from server.config import Config, parse_instant
from server.store.port import Snapshot
from server.store.postgres import PostgresStore
from tests.support import ADMIN_TOKEN, T0


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait for ``condition``, which the server's election (real time) makes true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)


async def test_h1_a_term_loaded_after_its_epoch_ended_leaves_the_next_term_serving(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = PostgresStore.load
    loading: list[PostgresStore] = []
    loaded = asyncio.Event()

    async def first_load_held(self: PostgresStore) -> Snapshot:
        loading.append(self)
        snapshot = await load(self)
        if len(loading) == 1:
            await loaded.wait()  # the first term's load is slow
        return snapshot

    monkeypatch.setattr(PostgresStore, "load", first_load_held)
    config = Config(
        listen="127.0.0.1:0",
        db=pg_url,
        admin_token=ADMIN_TOKEN,
        test_clock=parse_instant(T0),
        log_format="json",
        front_process=False,
        secrets_dir=tmp_path / "secrets",
        leader_lease=2.0,
    )
    server = TesseraServer(config)
    port = await server.start()
    db = await asyncpg.connect(pg_url)
    try:
        election = server.election
        assert election is not None
        await until(lambda: len(loading) == 1)
        first = election.epoch
        assert first is not None
        # Another server takes over while the load goes on, and is gone at once.
        await db.execute(
            "UPDATE tessera_leader SET epoch = epoch + 1, node_id = 'gone', "
            "address = 'gone:1', lease_until = now() - interval '1 second'"
        )
        await until(lambda: election.epoch == first + 2 and server.gate.term is not None)
        serving, old = server.store, loading[0]
        assert serving is not old
        loaded.set()  # the first term's load ends now: its epoch is long gone
        await until(lambda: old._conn.is_closed())  # dropped, by itself
        assert old.commits == 0  # not even the clock's mode: fenced by epoch 1
        assert (election.epoch, server.store) == (first + 2, serving)
        assert server.gate.term is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            teams = channel.unary_unary("/tessera.v1.AdminService/ListTeams")
            answer = await teams(b"", metadata=[("authorization", f"Bearer {ADMIN_TOKEN}")])
        assert answer == b""  # answered, by the serving term (no teams yet)
    finally:
        loaded.set()
        await db.close()
        await server.stop(grace=0.5)
