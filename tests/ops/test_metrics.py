"""Issue 16: what /metrics says equals what the API says, on a server driven
through the wire with the test clock (so on both stores)."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from server import metrics as metrics_module
from server.domain.timers import TimerKind
from server.metrics import REQUEST_SECONDS
from tests.licensing_desk import Desk, num
from tests.ops.scrape import fetch, scrape, total, value
from tests.support import ServerThread, running

STATES = {"SESSION_STATE_ACTIVE": "active", "SESSION_STATE_IDLE": "idle"}
CHARGES = {"CHARGE_STATE_GRACE": "grace", "CHARGE_STATE_CHARGED": "window"}


def captured(desk: Desk, team_id: str) -> int:
    """Tokens the team's ledger entries captured (M3)."""
    return sum(
        num(e, "amount") for e in desk.ledger(team_id) if e["kind"] == "LEDGER_ENTRY_KIND_CAPTURE"
    )


def test_metrics_equal_what_the_api_says(metered: ServerThread, ops_desk: Desk) -> None:
    d = ops_desk
    d.team("alpha", 100)
    d.team("beta", 30)
    d.team("gamma")  # no tokens
    ann, bob, dan = d.user("alpha", "ann"), d.user("alpha", "bob"), d.user("alpha", "dan")
    cid, eve = d.user("beta", "cid"), d.user("gamma", "eve")
    first = d.entitle(ann)
    d.entitle(bob, "REVIT")
    d.entitle(cid)
    d.advance(6 * 60)  # past the 5-minute grace: three charges of 10 (M3)
    d.entitle(dan)  # in grace: 10 held (M2)
    d.idle(ann, first["session_id"])
    d.refused_entitle(eve, grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_TOKENS")

    m = scrape(metered)

    # live sessions = ListSessions, by product and state
    listed = Counter((s["product_id"], STATES[s["state"]]) for s in d.sessions())
    assert sum(listed.values()) == 4
    assert total(m, "tessera_live_sessions") == 4
    for (product, state), n in listed.items():
        assert value(m, "tessera_live_sessions", product=product, state=state) == n
    # meters in grace / in a window = the sessions' charge states (one session each here)
    charging = Counter((s["product_id"], CHARGES[s["charge_state"]]) for s in d.sessions())
    assert charging == {("ACAD", "window"): 2, ("REVIT", "window"): 1, ("ACAD", "grace"): 1}
    for (product, state), n in charging.items():
        assert value(m, "tessera_meters", product=product, state=state) == n
    # tokens charged = the ledger's captures; available and held = GetTeam
    assert (captured(d, "alpha"), captured(d, "beta")) == (20, 10)
    for team in ("alpha", "beta", "gamma"):
        assert value(m, "tessera_tokens_charged_total", team=team) == captured(d, team)
        available, held = d.balance(team)
        assert value(m, "tessera_team_tokens_available", team=team) == available
        assert value(m, "tessera_team_tokens_held", team=team) == held
    assert d.balance("alpha") == (70, 10)
    # the deadlines that charged, the role, the refusal and the calls
    assert value(m, "tessera_deadlines_fired_total", kind="grace_end") == 3
    assert value(m, "tessera_server_active") == 1
    assert value(m, "tessera_refusals_total", reason="INSUFFICIENT_TOKENS") == 1
    entitles = dict(service="LicensingService", method="Entitle")
    assert value(m, "tessera_rpc_duration_seconds_count", **entitles, code="OK") == 4
    refused = value(m, "tessera_rpc_duration_seconds_count", **entitles, code="FAILED_PRECONDITION")
    assert refused == 1
    commits = value(m, "tessera_store_commit_seconds_count")
    assert commits >= 1
    # Every transaction's COMMIT is timed alone, and is part of the transaction's time.
    assert value(m, "tessera_store_commit_sync_seconds_count") == commits
    synced = value(m, "tessera_store_commit_sync_seconds_sum")
    assert 0 < synced <= value(m, "tessera_store_commit_seconds_sum")
    assert value(m, "tessera_timer_heap_size") >= 4  # at least one deadline per live session


def test_metrics_count_what_happens_next(metered: ServerThread, ops_desk: Desk) -> None:
    """A second scrape moves with the state: the counter only grows, gauges follow."""
    d = ops_desk
    d.team("alpha", 100)
    ann = d.user("alpha", "ann")
    s = d.entitle(ann)
    before = scrape(metered)
    assert value(before, "tessera_live_sessions", product="ACAD", state="active") == 1
    assert value(before, "tessera_tokens_charged_total", team="alpha") == 0
    d.advance(6 * 60)
    d.release(ann, s["session_id"])
    after = scrape(metered)
    assert total(after, "tessera_live_sessions") == len(d.sessions()) == 0
    assert value(after, "tessera_tokens_charged_total", team="alpha") == captured(d, "alpha") == 10
    assert (
        value(after, "tessera_team_tokens_available", team="alpha") == d.balance("alpha")[0] == 90
    )


def test_metrics_t4_tokens_expired_add_up_every_pack_of_a_team(
    metered: ServerThread, ops_desk: Desk
) -> None:
    """The expired counter is the sum of the team's EXPIRY entries (T4), one pack
    after another, not the last pack's."""
    d = ops_desk
    d.team("alpha", 30)
    d.advance(10 * 86400)
    d.buy("alpha", 20)
    d.advance(366 * 86400)  # a year after each purchase: both packs expired
    expired = [
        num(e, "amount") for e in d.ledger("alpha") if e["kind"] == "LEDGER_ENTRY_KIND_EXPIRY"
    ]
    assert sorted(expired) == [20, 30]
    m = scrape(metered)
    assert value(m, "tessera_tokens_expired_total", team="alpha") == 50
    assert d.balance("alpha") == (0, 0)


def test_metrics_endpoint_answers_only_metrics(metered: ServerThread) -> None:
    status, kind, body = fetch(metered)
    assert status == 200 and kind.startswith("text/plain; version=0.0.4"), kind
    assert "# TYPE tessera_live_sessions gauge" in body
    assert fetch(metered, "/")[0] == 404
    assert fetch(metered, "/metrics?name[]=x")[0] == 200


def _raw(srv: ServerThread, request: bytes) -> bytes:
    """What the metrics port answers ``request`` (sent whole), to the connection's end."""
    with socket.create_connection(("127.0.0.1", srv.server.metrics_port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_metrics_endpoint_answers_head_and_says_what_it_allows(metered: ServerThread) -> None:
    """HTTP as a client expects it: HEAD has the GET's headers and no body, another
    method is told which ones it may use, and a line that is no request is a 400."""
    get = _raw(metered, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head = _raw(metered, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert b"Content-Length: 0" not in head and get.startswith(head.split(b"Content-Length")[0])
    post = _raw(metered, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert post.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"\r\nAllow: GET, HEAD\r\n" in post
    assert _raw(metered, b"\x16\x03\x01 hello\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request")
    long_line = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 100_000 + b"\r\n\r\n"
    assert _raw(metered, long_line).startswith(b"HTTP/1.1 400 Bad Request")


def test_metrics_endpoint_serves_a_bounded_number_of_connections(metered: ServerThread) -> None:
    """Slow clients holding connections open cannot take every file descriptor: past
    MAX_CONNECTIONS a connection is closed at once, and scrapes work again when the
    slow ones go."""
    port = metered.server.metrics_port
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(32)]
    try:
        for conn in held:  # each handler has begun: it answers a line it then reads
            conn.sendall(b"GET /metrics HTTP/1.1\r\n")
        # Closed unanswered, long before the 10 s an unfinished request is given.
        with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_SECONDS / 2) as extra:
            assert extra.recv(1) == b""
    finally:
        for conn in held:
            conn.close()
    assert fetch(metered)[0] == 200


def test_series_count_is_4_per_team_4_per_product_and_80_plus_timer_kinds(
    metered: ServerThread, ops_desk: Desk
) -> None:
    """docs/ops/README.md's count, before the calls' own series (16 per method and
    status code seen) and the refusals' (one per reason seen)."""
    d = ops_desk  # 5 products on the rate sheet
    for team in ("alpha", "beta", "gamma"):
        d.team(team, 10)
    d.entitle(d.user("alpha", "ann"))
    m = scrape(metered)
    calls = {k for k in m if k[0].startswith(("tessera_rpc_", "tessera_refusals"))}
    assert len(m) - len(calls) == 4 * 3 + 4 * 5 + 80 + len(TimerKind)
    per_call = [k for k in calls if dict(k[1]).get("method") == "Entitle"]
    assert len(per_call) == 16  # 13 buckets, +Inf, sum, count: one status code so far


def test_metrics_a_scrape_reads_the_engine_on_its_loop_and_writes_the_text_on_a_thread(
    metered: ServerThread, ops_desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine is read on the loop that changes it (one consistent state, as the
    rows of its teams and products); their families and the text are made on a
    thread: with 10,000 teams (40,000 series) that held the loop, and every call,
    a third of a second at each scrape."""
    d = ops_desk
    d.team("alpha", 10)
    made_on: dict[str, int] = {}
    written_on: list[int] = []
    gauge, write = metrics_module.GaugeMetricFamily, metrics_module.generate_latest

    def made(name: str, *args: Any, **kwargs: Any) -> Any:
        made_on[name] = threading.get_ident()
        return gauge(name, *args, **kwargs)

    def written(registry: Any) -> bytes:
        written_on.append(threading.get_ident())
        return write(registry)

    monkeypatch.setattr(metrics_module, "GaugeMetricFamily", made)
    monkeypatch.setattr(metrics_module, "generate_latest", written)
    m = scrape(metered)
    assert value(m, "tessera_team_tokens_available", team="alpha") == 10
    loop = metered._thread.ident
    assert made_on["tessera_server_active"] == loop  # the few, made as read
    wide = ("tessera_team_tokens_available", "tessera_live_sessions", "tessera_meters")
    assert all(made_on[name] != loop for name in wide), made_on
    assert len(written_on) == 1 and written_on[0] != loop
    # What was read stays as read: the families say the state of their read.
    metrics = metered.server.metrics
    assert metrics is not None
    families = asyncio.run_coroutine_threadsafe(_read(metrics), metered.loop).result(10)
    d.buy("alpha", 5)
    before = {f.name: f.samples for f in families()}["tessera_team_tokens_available"]
    assert [(s.labels["team"], s.value) for s in before] == [("alpha", 10)]
    assert value(scrape(metered), "tessera_team_tokens_available", team="alpha") == 15


async def _read(metrics: metrics_module.Metrics) -> Any:
    return metrics.read()


def test_metrics_process_series_are_the_servers_own(metered: ServerThread) -> None:
    """prometheus_client's process_* series, of the process the server runs in (the
    test's own here: a server thread); no front, so no tessera_front_* series."""
    m = scrape(metered)
    assert value(m, "process_resident_memory_bytes") > 10 * 2**20
    assert value(m, "process_cpu_seconds_total") > 0
    assert value(m, "process_open_fds") > 0
    assert not [name for name, _ in m if name.startswith("tessera_front_")]


def test_metrics_a_front_process_has_its_own_process_series(tmp_path: Path) -> None:
    with running(tmp_path / "t.db", metrics_listen="127.0.0.1:0", front_process=True) as srv:
        m = scrape(srv)
        front_pid = srv.server.front_pid
        ticks = os.sysconf("SC_CLK_TCK")
        stat = Path(f"/proc/{front_pid}/stat").read_bytes().split(b")")[-1].split()
        # The front's, not this process's: it started later, and uses memory of its own.
        assert value(m, "tessera_front_process_start_time_seconds") > value(
            m, "process_start_time_seconds"
        )
        # Read after the scrape, so no less (in prometheus_client's floating sum).
        cpu_now = int(stat[11]) / ticks + int(stat[12]) / ticks
        assert value(m, "tessera_front_process_cpu_seconds_total") <= cpu_now + 1e-9
        assert value(m, "tessera_front_process_resident_memory_bytes") > 10 * 2**20


class _Unread:
    """A scrape's connection whose client sent its request and reads nothing: the
    answer's way out (``drain``) never clears."""

    def __init__(self) -> None:
        self.transport = self
        self.aborted = False

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        await asyncio.Event().wait()

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


async def test_metrics_a_client_that_reads_no_answer_keeps_its_place_no_longer_than_a_request(
    metered: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline of a scrape's request covers its answer's way out too: a client
    that reads nothing is cut off (its connection aborted) and gives its place back,
    where it kept one of the MAX_CONNECTIONS places for as long as it stayed."""
    monkeypatch.setattr(metrics_module, "REQUEST_SECONDS", 0.05)
    metrics = metered.server.metrics
    assert metrics is not None
    reader = asyncio.StreamReader()
    reader.feed_data(b"GET /elsewhere HTTP/1.1\r\n\r\n")  # a 404: nothing of the server read
    unread = _Unread()
    await asyncio.wait_for(metrics._answer(reader, cast(asyncio.StreamWriter, unread)), 10)
    assert unread.aborted and metrics._connections == 0


def test_metrics_a_commit_that_does_not_get_through_shows_its_age_and_its_waiters(
    tmp_path: Path,
) -> None:
    """Another process holds the SQLite database's lock while a purchase commits: the
    commit histogram does not move until it gets through, so a stall showed nowhere
    (the queue gauge counted only calls queued behind it: 0). The transaction under
    way is now counted in the queue, and its age grows; both fall back once the lock
    is let go."""
    db = tmp_path / "t.db"
    with running(db, metrics_listen="127.0.0.1:0") as srv:
        desk = Desk(srv.target)
        desk.team("acme")
        holder = sqlite3.connect(db, isolation_level=None, timeout=1)
        holder.execute("BEGIN IMMEDIATE")
        buying = threading.Thread(target=desk.buy, args=("acme", 5))
        buying.start()
        try:
            deadline = time.monotonic() + 30
            while value(m := scrape(srv), "tessera_store_commit_age_seconds") < 0.5:
                assert time.monotonic() < deadline, "no commit under way"
                time.sleep(0.05)
            assert value(m, "tessera_store_commit_queue") == 1
        finally:
            holder.execute("ROLLBACK")
            holder.close()
            buying.join(30)
        m = scrape(srv)
        assert value(m, "tessera_store_commit_age_seconds") == 0
        assert value(m, "tessera_store_commit_queue") == 0
        assert desk.balance("acme") == (5, 0)
        desk.close()
