"""Issue 16 on several servers (RULES H1, H2): /metrics says whether this server
is the active one, counts the elections it won, and reports the engine's figures
only while it has one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.ha.test_failover import TAKE_OVER_BEHIND_ITS_BACK, _execute
from tests.licensing_desk import Desk
from tests.ops.scrape import names, scrape, total, value
from tests.pg import run_sync
from tests.support import NOT_SERVING, SERVING, ServerThread, wait_for


@contextlib.contextmanager
def _active_with_metrics(pg_url: str, tmp_path: Path) -> Iterator[tuple[ServerThread, Desk]]:
    """A server alone on the database, so active, with /metrics; team acme, 10 tokens."""
    srv = ServerThread(
        pg_url, secrets_dir=tmp_path, leader_lease=2.0, metrics_listen="127.0.0.1:0"
    ).start()
    desk = Desk(srv.target)
    try:
        wait_for(srv.target, SERVING)
        desk.team("acme", tokens=10)
        yield srv, desk
    finally:
        desk.close()
        srv.stop()


def test_h1_the_role_and_the_takeovers_follow_the_election(pg_url: str, tmp_path: Path) -> None:
    with _active_with_metrics(pg_url, tmp_path) as (srv, _):
        m = scrape(srv)
        assert (value(m, "tessera_server_active"), value(m, "tessera_takeovers_total")) == (1, 1)
        assert value(m, "tessera_team_tokens_available", team="acme") == 10
        run_sync(lambda: _execute(pg_url, TAKE_OVER_BEHIND_ITS_BACK))
        wait_for(srv.target, NOT_SERVING)  # a standby now: no engine
        m = scrape(srv)
        assert (value(m, "tessera_server_active"), value(m, "tessera_takeovers_total")) == (0, 1)
        assert "tessera_team_tokens_available" not in names(m)
        assert "tessera_timer_heap_size" not in names(m)
        run_sync(lambda: _execute(pg_url, "UPDATE tessera_leader SET lease_until = now()"))
        wait_for(srv.target, SERVING)  # elected again
        m = scrape(srv)
        assert (value(m, "tessera_server_active"), value(m, "tessera_takeovers_total")) == (1, 2)
        assert value(m, "tessera_team_tokens_available", team="acme") == 10


UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def test_h1_a_standbys_answers_are_counted_like_the_actives(pg_url: str, tmp_path: Path) -> None:
    """Clients pointed at a standby are answered NOT_LEADER (GetServerInfo is answered):
    those calls are in its metrics, by method and code, and in its refusals, so an
    operator sees them (``TesseraRefusalsSpike``). A method that is not Tessera's is
    UNIMPLEMENTED, as on the active, and makes no series."""
    with _active_with_metrics(pg_url, tmp_path) as (srv, desk):
        run_sync(lambda: _execute(pg_url, TAKE_OVER_BEHIND_ITS_BACK))
        wait_for(srv.target, NOT_SERVING)
        for _ in range(3):
            desk.refused(None, "GetTeam", {"team_id": "acme"}, UNAVAILABLE, "NOT_LEADER")
        assert desk.a("GetServerInfo")["role"] == "NODE_ROLE_STANDBY"
        with grpc.insecure_channel(srv.target) as channel:
            unknown = channel.unary_unary("/tessera.v1.AdminService/NoSuchMethod")
            with pytest.raises(grpc.RpcError) as refused:
                unknown(b"", timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
        m = scrape(srv)
    calls = "tessera_rpc_duration_seconds_count"
    admin = {"service": "AdminService"}
    assert value(m, calls, **admin, method="GetTeam", code="UNAVAILABLE") == 3
    assert value(m, calls, **admin, method="GetServerInfo", code="OK") == 1
    assert value(m, "tessera_refusals_total", reason="NOT_LEADER") == 3
    assert total(m, calls, method="NoSuchMethod") == 0
    assert not any(("method", "NoSuchMethod") in labels for _, labels in m)
