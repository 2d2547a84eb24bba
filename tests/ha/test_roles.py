"""A server's role and its settings for several servers (RULES H1, API.md additions)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from structlog.testing import capture_logs

from server import app as app_module
from server.app import shown_db
from server.config import parse_args
from server.ha.gate import Gate, NodeInfo
from server.listen import StartRefused
from server.store.postgres import without_password
from tests.grpcurl import Grpcurl
from tests.security.test_tamper_and_backup import _cli
from tests.support import ServerThread


def test_h1_a_lone_server_is_active_and_its_own_leader(
    server: ServerThread, admin: Grpcurl
) -> None:
    info = admin("tessera.v1.AdminService/GetServerInfo", {})
    assert (info["role"], info["node_id"], info["leader_address"]) == (
        "NODE_ROLE_ACTIVE",
        server.target,  # --node-id and --advertise default to the address bound
        server.target,
    )


def test_h1_a_database_url_stays_a_url_and_its_secrets_stay_files() -> None:
    url = "postgresql://tessera:pw@127.0.0.1:5432/licenses"
    cfg = parse_args(["--db", url, "--secrets-dir", "/srv/tessera"])
    assert cfg.db == url  # a Path would have folded its //
    assert cfg.admin_token_path == Path("/srv/tessera/tessera.admin-token")
    sqlite = parse_args(["--db", "var/x.db"])
    assert sqlite.db == Path("var/x.db")
    assert sqlite.admin_token_path == Path("var/x.db.admin-token")


def test_h1_a_url_password_is_never_shown() -> None:
    assert shown_db("postgresql://tessera:s3cret@db:5432/t") == "postgresql://tessera:***@db:5432/t"
    assert shown_db("postgresql://tessera@db/t") == "postgresql://tessera@db/t"
    assert shown_db(Path("var/tessera.db")) == "var/tessera.db"


async def test_h1_a_url_parameter_the_driver_cannot_take_refuses_the_start_in_one_line() -> None:
    """asyncpg refuses `sslmode=bogus` before it connects (ClientConfigurationError):
    a start refusal naming the URL, password hidden, not a traceback."""
    url = "postgresql://tessera:s3cret@127.0.0.1:1/t?sslmode=bogus"
    with pytest.raises(StartRefused) as refused:
        await app_module._migrate(url)
    message = str(refused.value)
    assert message.startswith("cannot open postgresql://tessera:***@127.0.0.1:1/t?sslmode=bogus: ")
    assert "sslmode" in message.split(": ", 1)[1] and "s3cret" not in message


@pytest.mark.parametrize("node_id", ["", "two words", "zoë", "x" * 41])
def test_h1_a_node_id_names_an_election_session_so_it_is_short_ascii(
    node_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--node-id", node_id])
    assert "--node-id" in capsys.readouterr().err
    assert parse_args(["--node-id", "eu-1.example:50051"]).node_id == "eu-1.example:50051"


class _Aborted(Exception):
    pass


class _Context:
    """What ``Gate`` uses of a call's context: its headers and peer; it aborts."""

    def __init__(self, *metadata: tuple[str, str]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40404"

    async def abort(self, code: grpc.StatusCode, details: str, trailing: object) -> None:
        raise _Aborted(code, details, trailing)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (
            NodeInfo("b", False, "a.internal:50051"),
            "this server is a standby; the active server is a.internal:50051",
        ),
        (
            NodeInfo("a", False, "a.internal:50051", starting=True),
            "this server was just elected and is loading its state: repeat the call in a moment",
        ),
    ],
)
async def test_h1_a_server_elected_but_still_loading_does_not_call_itself_a_standby(
    node: NodeInfo, message: str
) -> None:
    """Between its election and SERVING (the load), a server answers NOT_LEADER
    naming its own address, as the one to come back to, and says it is loading."""
    gate = Gate(lambda: node, lambda: "tsa_x")
    answer = gate._as_standby("/tessera.v1.AdminService/ListTeams").unary_unary
    with pytest.raises(_Aborted) as aborted:
        await answer(b"", _Context())  # type: ignore[misc]
    code, details, trailing = aborted.value.args
    assert (code, details) == (grpc.StatusCode.UNAVAILABLE, message)
    (status,) = [status_pb2.Status.FromString(v) for k, v in trailing if k.endswith("-bin")]
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, dict(info.metadata)) == ("NOT_LEADER", {"leader": "a.internal:50051"})


async def test_h1_a_standbys_refusal_line_names_the_request_id_and_the_peer() -> None:
    """Calls arriving at a standby are clients pointed at the wrong server
    (docs/ops): its line names them as the active's refusal lines do, the request
    id scrubbed of the admin token as there."""
    gate = Gate(lambda: NodeInfo("b", False, "a.internal:50051"), lambda: "tsa_x")
    answer = gate._as_standby("/tessera.v1.AdminService/ListTeams").unary_unary
    context = _Context(("authorization", "Bearer tsa_x"), ("x-request-id", "po-7 tsa_x"))
    with capture_logs() as lines, pytest.raises(_Aborted):
        await answer(b"", context)  # type: ignore[misc]
    (line,) = [x for x in lines if x["event"] == "rpc"]
    assert (line["method"], line["code"], line["reason"]) == (
        "ListTeams",
        "UNAVAILABLE",
        "NOT_LEADER",
    )
    assert (line["request_id"], line["peer"]) == ("po-7 \u2026", "ipv4:127.0.0.1:40404")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://postgres@/t?host=/run/pg&password=S3cretQueryPass",
            "postgresql://postgres@/t?host=/run/pg&password=***",
        ),
        (
            "postgresql://postgres:Secretpw1#x@/t?host=/run/pg",
            "postgresql://postgres:***@/t?host=/run/pg",
        ),
        ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("postgresql://h/db?options=a@b", "postgresql://h/db?options=a@b"),
        (
            "postgresql://u@h/db?sslmode=verify-full&sslpassword=keypass",
            "postgresql://u@h/db?sslmode=verify-full&sslpassword=***",
        ),
    ],
)
def test_h1_a_url_password_is_never_shown_wherever_it_is_written(url: str, shown: str) -> None:
    """libpq takes a password in the user info or as a ``password=`` parameter, and a
    password with a character it should have encoded still is one."""
    assert shown_db(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://tessera:Secretpw1#x@127.0.0.1:5432/t",
        "postgresql://tessera:Secretpw1/x@127.0.0.1:5432/t",
        "postgresql://tessera:Secretpw1@127.0.0.1:5x/t",
        "postgresql://tessera:Secre\\tpw1#x@127.0.0.1:5432/t",  # a backslash, quoted doubled
    ],
)
async def test_h1_a_url_the_driver_cannot_read_refuses_the_start_in_one_line(url: str) -> None:
    """asyncpg reads ``Secretpw1`` as a port when a password holds an unencoded # or /:
    its ValueError was a traceback that quoted the password."""
    with pytest.raises(StartRefused) as refused:
        await app_module._migrate(url)
    message = str(refused.value)
    assert message.startswith("cannot open postgresql://tessera:***@")
    assert "the URL cannot be read" in message and "percent-encoded" in message
    assert "Secre" not in message and "\n" not in message


def test_h1_the_operator_tools_say_a_url_they_cannot_read_without_its_password() -> None:
    done = _cli("verify", "--db", "postgresql://tessera:Secretpw1#x@127.0.0.1:5432/t")
    assert done.returncode == 2
    assert done.stderr.startswith("python -m server verify: cannot open postgresql://tessera:***@")
    assert "Secretpw1" not in done.stderr and "Traceback" not in done.stderr


def test_h1_pg_dump_is_given_the_password_by_its_environment_not_its_command_line() -> None:
    assert without_password("postgresql://u:p%40ss@h/db?sslmode=require") == (
        "postgresql://u@h/db?sslmode=require",
        "p@ss",
    )
    assert without_password("postgresql://u@/db?host=/run/pg&password=pw") == (
        "postgresql://u@/db?host=/run/pg",
        "pw",
    )
    assert without_password("postgresql://u@h/db") == ("postgresql://u@h/db", None)
