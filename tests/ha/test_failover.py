"""Two real server processes on one PostgreSQL database (RULES H1, H2).

One is active, the other a standby; the active is killed (kill -9) or paused
(SIGSTOP) and the standby takes over with every acknowledged change. The
lease is 1 s here (``--leader-lease``) so that the tests stay short; what is
asserted of the takeover's time is the rule's bound, 10 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from client_sdk.admin import AsyncAdminClient
from client_sdk.errors import Unauthenticated
from server.ha.election import APP_PREFIX
from server.store.postgres import application_name
from tests.grpcurl import Grpcurl, GrpcurlError
from tests.licensing_desk import Desk, num
from tests.pg import run_sync
from tests.store.test_postgres_tools import _execute as run_script
from tests.support import (
    ADMIN_TOKEN,
    NOT_SERVING,
    SERVING,
    ServerProcess,
    ServerThread,
    health,
    wait_for,
)
from tests.test_startup import start_server

pytestmark = pytest.mark.slow
TAKEOVER_BOUND = 10.0  # RULES H2 (wait_for waits as long by default)


class Cluster:
    """Servers of one database, sharing one secrets directory."""

    def __init__(self, url: str, secrets: Path) -> None:
        self.url = url
        self.secrets = secrets
        self.servers: list[ServerProcess] = []

    def start(self, node_id: str, *extra: str) -> ServerProcess:
        server = ServerProcess(
            db=self.url,  # type: ignore[arg-type]  # the process is given its text
            extra=[
                *("--secrets-dir", str(self.secrets), "--leader-lease", "1"),
                *("--node-id", node_id, *extra),
            ],
            ready=("standby", "serving"),
        )
        self.servers.append(server)
        return server.start()

    def close(self) -> None:
        for server in self.servers:
            if server.proc is not None and server.proc.poll() is None:
                os.kill(server.proc.pid, signal.SIGCONT)
                server.kill()


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(pg_url, tmp_path / "secrets")
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def pair(cluster: Cluster) -> tuple[ServerProcess, ServerProcess]:
    """``a`` active (started first, elected alone), ``b`` its standby."""
    a = cluster.start("a")
    wait_for(a.target, SERVING)
    b = cluster.start("b")
    return a, b


def refusal(target: str, method: str = "ListTeams") -> GrpcurlError:
    client = Grpcurl(target, ADMIN_TOKEN)
    try:
        with pytest.raises(GrpcurlError) as refused:
            client(f"tessera.v1.AdminService/{method}", {})
        return refused.value
    finally:
        client.close()


def info(target: str) -> dict[str, Any]:
    client = Grpcurl(target, ADMIN_TOKEN)
    try:
        return client("tessera.v1.AdminService/GetServerInfo", {})
    finally:
        client.close()


def test_h1_one_active_one_standby(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    assert health(a.target) == SERVING
    assert health(b.target) == NOT_SERVING
    refused = refusal(b.target)
    assert refused.code == grpc.StatusCode.UNAVAILABLE
    assert refused.reason == "NOT_LEADER"
    assert refused.metadata == {"leader": a.target}
    assert info(a.target) | {"now": ""} == {
        "version": info(b.target)["version"],
        "now": "",
        "test_clock": True,
        "node_id": "a",
        "role": "NODE_ROLE_ACTIVE",
        "leader_address": a.target,
    }
    assert info(b.target) == {
        "version": info(a.target)["version"],
        "node_id": "b",
        "role": "NODE_ROLE_STANDBY",
        "leader_address": a.target,
    }
    # A standby answers its own info to the operator; any other credential (a team
    # administrator's key, a wrong one) is the active's to judge: NOT_LEADER naming
    # it, which the SDK follows (H3), where UNAUTHENTICATED stopped a team
    # administrator's client (and a portal signing in through a standby).
    desk = Desk(a.target)
    try:
        desk.team("acme", tokens=10)
        key = desk.a("CreateAdminKey", {"display_name": "Acme IT", "team_ids": ["acme"]})
    finally:
        desk.close()
    for credential in ("wrong", key["admin_key"]):
        stranger = Grpcurl(b.target, credential)
        try:
            with pytest.raises(GrpcurlError) as refused_info:
                stranger("tessera.v1.AdminService/GetServerInfo", {})
            assert refused_info.value.reason == "NOT_LEADER"
            assert refused_info.value.metadata == {"leader": a.target}
        finally:
            stranger.close()

    async def followed(credential: str) -> str:
        async with AsyncAdminClient(targets=[b.target, a.target], credential=credential) as c:
            return str((await c.get_server_info()).node_id)

    assert asyncio.run(followed(key["admin_key"])) == "a"
    with pytest.raises(Unauthenticated):
        asyncio.run(followed("tsa_wrong"))


def acknowledged(desk: Desk) -> dict[str, Any]:
    """A purchase, a user and a running session, each answered (so committed)."""
    desk.sheet()
    desk.team("acme", tokens=500)
    user = desk.user("acme", "maya", ["ACAD"])
    session = desk.entitle(user)["session_id"]
    return {"user": user, "session": session, "balance": desk.balance("acme")}


def test_h2_kill_9_the_standby_takes_over_with_every_acknowledged_change(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    desk = Desk(a.target)
    try:
        before = acknowledged(desk)
        a.kill()
        took = wait_for(b.target, SERVING)
    finally:
        desk.close()
    assert took < TAKEOVER_BOUND
    after = Desk(b.target)
    try:
        after.keys = desk.keys
        assert after.balance("acme") == before["balance"]
        assert [s["session_id"] for s in after.sessions("acme")] == [before["session"]]
        after.heartbeat(before["user"], before["session"])  # lives on (a lost one is refused)
        after.assert_ledger_adds_up("acme")
    finally:
        after.close()
    assert info(b.target)["role"] == "NODE_ROLE_ACTIVE"
    assert any(line.get("event") == "took over" for line in b.lines)


TERMINATE_WRITER = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE application_name LIKE 'tessera-writer:%'
"""


# Refuses the device rows a's writer writes (the heartbeat flush's): a write the
# database refuses, a's alone.
REFUSE_AS_DEVICES = """
CREATE FUNCTION refuse_a() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('application_name') = 'tessera-writer:a' THEN
        RAISE EXCEPTION 'refused by the test';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_a BEFORE INSERT OR UPDATE ON devices
    FOR EACH ROW EXECUTE FUNCTION refuse_a();
"""


def test_h2_a_failed_background_write_steps_the_active_down_and_the_standby_takes_over(
    pair: tuple[ServerProcess, ServerProcess], pg_url: str
) -> None:
    """A write no call waits for (the heartbeat flush's, in the background) is
    refused by the database: the active steps down at once (it kept its lease,
    renewed on the election's own connection) and the standby takes over within
    H2's bound, with everything acknowledged; the session keeps its id."""
    a, b = pair
    desk = Desk(a.target)
    try:
        before = acknowledged(desk)
        run_sync(lambda: run_script(pg_url, REFUSE_AS_DEVICES))
        desk.heartbeat(before["user"], before["session"])  # memory; the flush writes it
        took = wait_for(b.target, SERVING)
    finally:
        desk.close()
    assert took < TAKEOVER_BOUND
    lost = [line for line in a.lines if line.get("event") == "lost the lead"]
    assert [line["why"].split(":")[0] for line in lost] == ["a write failed"]
    after = Desk(b.target)
    try:
        after.keys = desk.keys
        assert after.balance("acme") == before["balance"]
        assert [s["session_id"] for s in after.sessions("acme")] == [before["session"]]
        beat = after.heartbeat(before["user"], before["session"])
        assert (beat["session_id"], beat["state"]) == (before["session"], "SESSION_STATE_ACTIVE")
        after.assert_ledger_adds_up("acme")
    finally:
        after.close()
    assert info(a.target)["role"] == "NODE_ROLE_STANDBY"
    assert info(b.target)["role"] == "NODE_ROLE_ACTIVE"


def test_h3_a_call_whose_write_failed_leaves_as_not_leader_and_is_repeated_on_the_new_active(
    pair: tuple[ServerProcess, ServerProcess], pg_url: str
) -> None:
    """A call's write fails (the store's connection is gone): the active steps down
    and the call leaves as UNAVAILABLE/NOT_LEADER, which a client repeats on the
    active (it was INTERNAL, which no client repeats); repeated with its request
    id, the purchase buys once."""
    a, b = pair
    desk = Desk(a.target)
    body = {"team_id": "acme", "tokens": 7, "request_id": "po-cut"}
    try:
        before = acknowledged(desk)
        assert run_sync(lambda: _execute(pg_url, TERMINATE_WRITER)) == 1
        with pytest.raises(GrpcurlError) as refused:
            desk.a("PurchaseTokens", body)
        assert (refused.value.code, refused.value.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "NOT_LEADER",
        )
        assert wait_for(b.target, SERVING) < TAKEOVER_BOUND
    finally:
        desk.close()
    after = Desk(b.target)
    try:
        first = after.a("PurchaseTokens", body)["token_pack"]
        assert after.a("PurchaseTokens", body)["token_pack"]["pack_id"] == first["pack_id"]
        available, held = before["balance"]
        assert after.balance("acme") == (available + 7, held)
        after.assert_ledger_adds_up("acme")
    finally:
        after.close()


def test_h1_a_paused_active_is_replaced_and_never_answers_as_active_again(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    assert a.proc is not None
    desk = Desk(a.target)
    try:
        desk.team("acme", tokens=100)
    finally:
        desk.close()
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        wait_for(b.target, SERVING)
        on_b = Desk(b.target)
        try:
            on_b.buy("acme", 50)
            assert num(on_b.a("GetTeam", {"team_id": "acme"})["team"], "available_tokens") == 150
        finally:
            on_b.close()
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    # Resumed, it refuses at once: its own lease ran out while it was paused.
    for method in ("ListTeams", "GetTeam", "PurchaseTokens"):
        refused = refusal(a.target, method)
        assert (refused.code, refused.reason) == (grpc.StatusCode.UNAVAILABLE, "NOT_LEADER")
    wait_for(a.target, NOT_SERVING)
    # It names the new active once it has read the row again (its next round).
    deadline = time.monotonic() + 5
    while "leader_address" not in info(a.target) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert info(a.target) | {"version": ""} == {
        "version": "",
        "node_id": "a",
        "role": "NODE_ROLE_STANDBY",
        "leader_address": b.target,
    }
    refused = refusal(a.target)
    assert refused.metadata == {"leader": b.target}
    assert any(line.get("event") == "lost the lead" for line in a.lines)
    assert health(b.target) == SERVING  # b was never disturbed


def test_h1_a_write_after_a_takeover_it_missed_is_fenced_and_steps_it_down(
    pg_url: str, tmp_path: Path
) -> None:
    """The active has not noticed that another server took over (its own lease
    runs 60 s): its next write is refused by the fence in the database, leaves
    as NOT_LEADER (not committed: the client may repeat it on the new active),
    and the server stops answering as active at once.

    The other server runs: its election's session is open. Without one, its row's
    holder is dead to this server's next round (``still_there``), which takes the row
    straight back: that round comes 12 s after the last, and a test slowed that much
    (a loaded machine) finds this server active again, GetTeam answered."""
    srv = ServerThread(pg_url, secrets_dir=tmp_path, leader_lease=60.0).start()
    desk = Desk(srv.target)
    other: asyncpg.Connection | None = None
    try:
        wait_for(srv.target, SERVING)
        desk.team("acme", tokens=10)
        other = _the_other_server_runs(srv, pg_url)
        run_sync(lambda: _execute(pg_url, TAKE_OVER_BEHIND_ITS_BACK))
        with pytest.raises(GrpcurlError) as refused:
            desk.buy("acme", 5)
        assert (refused.value.code, refused.value.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "NOT_LEADER",
        )
        wait_for(srv.target, NOT_SERVING)
        assert refusal(srv.target, "GetTeam").reason == "NOT_LEADER"
        assert run_sync(lambda: _execute(pg_url, "SELECT count(*) FROM packs")) == 1
    finally:
        desk.close()
        if other is not None:
            srv.call(other.close())
        srv.stop()


TAKE_OVER_BEHIND_ITS_BACK = """
UPDATE tessera_leader SET node_id = 'other', address = '127.0.0.1:1', epoch = epoch + 1,
    lease_until = now() + interval '60 seconds'
"""


def _the_other_server_runs(srv: ServerThread, url: str) -> asyncpg.Connection:
    """An open session named as the election of ``TAKE_OVER_BEHIND_ITS_BACK``'s
    server: without one, that row's holder is dead to ``srv``'s next round
    (``still_there``), which takes the row straight back, whatever its lease (opened
    on the server's loop, which outlives it: a sync test has none of its own)."""
    name = application_name(APP_PREFIX, "other")
    conn: asyncpg.Connection = srv.call(
        asyncpg.connect(url, server_settings={"application_name": name})
    )
    return conn


async def _execute(url: str, sql: str) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def test_h1_a_server_that_lost_its_place_is_a_standby_and_may_win_anew(
    pg_url: str, tmp_path: Path
) -> None:
    srv = ServerThread(pg_url, secrets_dir=tmp_path, leader_lease=2.0).start()
    desk = Desk(srv.target)
    other: asyncpg.Connection | None = None
    try:
        wait_for(srv.target, SERVING)
        desk.team("acme", tokens=10)
        # (the other server runs while it holds the place: with no session of its own,
        # this server's next round, 0.4 s later, took it straight back, racing the
        # checks of its standby role)
        other = _the_other_server_runs(srv, pg_url)
        run_sync(lambda: _execute(pg_url, TAKE_OVER_BEHIND_ITS_BACK))
        wait_for(srv.target, NOT_SERVING)  # its next renewal finds the epoch moved on
        assert info(srv.target)["role"] == "NODE_ROLE_STANDBY"
        srv.call(other.close())
        run_sync(lambda: _execute(pg_url, "UPDATE tessera_leader SET lease_until = now()"))
        wait_for(srv.target, SERVING)  # the other one is gone: elected again, a new term
        assert info(srv.target)["role"] == "NODE_ROLE_ACTIVE"
        assert desk.balance("acme") == (10, 0)
        desk.buy("acme", 5)
        assert desk.balance("acme") == (15, 0)
        assert run_sync(lambda: _execute(pg_url, "SELECT epoch FROM tessera_leader")) == 3
    finally:
        desk.close()
        if other is not None and not other.is_closed():
            srv.call(other.close())
        srv.stop()


def test_h1_a_second_server_with_a_node_id_in_use_refuses_to_start(cluster: Cluster) -> None:
    """Two servers given one ``--node-id`` would each read the other's sessions
    as its own (who is alive, who leads): the second is refused, in one line, and
    the first keeps serving."""
    a = cluster.start("a")
    wait_for(a.target, SERVING)
    twin = start_server(
        *("--db", cluster.url, "--secrets-dir", str(cluster.secrets), "--node-id", "a"),
        *("--test-clock", "2026-01-01T00:00:00Z"),  # the database's clock, as a's
    )
    assert twin.returncode == 1
    assert twin.stderr.splitlines() == [
        "tessera-server: another server on this database runs with node id 'a': give each "
        "server its own --node-id (the default is its advertised address)"
    ]
    assert info(a.target)["role"] == "NODE_ROLE_ACTIVE"


BACKENDS_OF_A = """
SELECT array_agg(pid) FROM pg_stat_activity
WHERE application_name IN ('tessera-election:a', 'tessera-writer:a')
    AND datname = current_database()
"""


def test_h3_a_call_on_an_active_cut_off_from_its_database_leaves_as_not_leader(
    cluster: Cluster, pg_url: str
) -> None:
    """The database stops answering the active (a partition: here its election's and
    writer's backends are paused) while a call waits on its commit, and heartbeat
    history waits for its flush. The active steps down once its lease has run out,
    and the call leaves as UNAVAILABLE/NOT_LEADER, to be repeated on the active,
    rather than wait for the database to come back (it waited for ever: the term's
    last flush queued behind it, and the store was closed only after that flush).
    Repeated with its request id once a server is active again, it buys once."""
    a = cluster.start("a", "--heartbeat-flush", "3600")  # the history stays in memory
    wait_for(a.target, SERVING)
    b = cluster.start("b")
    desk = Desk(a.target)
    body = {"team_id": "acme", "tokens": 7, "request_id": "po-cut-off"}
    try:
        before = acknowledged(desk)
        available, held = before["balance"]
        desk.heartbeat(before["user"], before["session"])
        backends = run_sync(lambda: _execute(pg_url, BACKENDS_OF_A))
        assert len(backends) == 2
        for pid in backends:
            os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(GrpcurlError) as refused:
                desk.a("PurchaseTokens", body)  # 30 s of deadline (tests/grpcurl.py)
        finally:
            for pid in backends:
                os.kill(pid, signal.SIGCONT)
        assert (refused.value.code, refused.value.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "NOT_LEADER",
        )
    finally:
        desk.close()
    after = Desk(_serving(a, b).target)
    try:
        first = after.a("PurchaseTokens", body)["token_pack"]
        assert after.a("PurchaseTokens", body)["token_pack"]["pack_id"] == first["pack_id"]
        assert after.balance("acme") == (available + 7, held)
        after.assert_ledger_adds_up("acme")
    finally:
        after.close()


def _serving(*servers: ServerProcess) -> ServerProcess:
    """The first of ``servers`` seen SERVING (within H2's bound)."""
    deadline = time.monotonic() + TAKEOVER_BOUND
    while time.monotonic() < deadline:
        for server in servers:
            if health(server.target) == SERVING:
                return server
        time.sleep(0.05)
    raise AssertionError("no server took over")


@pytest.mark.parametrize(
    ("advertise", "why"),
    [
        ("tëssera-a:50051", "'tëssera-a:50051' is not 1 to 40 printable ASCII characters"),
        ("tessera." + "x" * 40 + ":50051", "is not 1 to 40 printable ASCII characters"),
    ],
)
def test_h1_an_advertised_address_that_cannot_be_a_node_id_needs_one(
    cluster: Cluster, advertise: str, why: str
) -> None:
    """Without --node-id the node id is the advertised address. PostgreSQL rewrites the
    non-ASCII bytes of a session's name, and keeps 63: two such servers found no
    session of the other's, took the lead from each other every round and both answered
    as active; two long ones shared one name, and a killed one was replaced only after
    its lease. Such an address needs a --node-id, said in one line."""
    done = start_server(
        *("--db", cluster.url, "--secrets-dir", str(cluster.secrets), "--advertise", advertise)
    )
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("tessera-server: this server's node id would be its advertised address")
    assert why in line and line.endswith(
        "give it a --node-id (each server of one database its own)"
    )


def test_h2_an_active_whose_writer_connection_is_lost_steps_down_at_once(
    pair: tuple[ServerProcess, ServerProcess], pg_url: str
) -> None:
    """Its store's connection cut while no call writes (a pooler restart, a
    terminated backend): it steps down at once, not at its next write (until which it
    answered reads as active, also after a standby took over when its election's
    session was cut too), and the standby takes over within H2's bound."""
    a, b = pair
    assert run_sync(lambda: _execute(pg_url, TERMINATE_WRITER)) == 1
    assert wait_for(b.target, SERVING) < TAKEOVER_BOUND
    lost = [line for line in a.lines if line.get("event") == "lost the lead"]
    assert [line["why"] for line in lost] == [
        "a write failed: the store's connection to the database was lost"
    ]
    assert info(a.target)["role"] == "NODE_ROLE_STANDBY"
