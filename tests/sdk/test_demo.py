"""``python -m client_sdk.demo`` against a real server (on the real clock: the demo's idle
threshold is a fraction of a second, and a test clock would stand still)."""

from __future__ import annotations

import functools
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from client_sdk import RetryPolicy, demo
from client_sdk.demo import main
from tessera_api.tessera.v1 import admin_service_pb2 as admin_pb
from tessera_api.tessera.v1 import admin_service_pb2_grpc as admin_grpc
from tessera_api.tessera.v1 import common_pb2
from tests.security.test_tls import _issue
from tests.support import ADMIN_TOKEN, REPO, ServerThread

FAST = ["--work", "0.2", "--idle-after", "0.2"]
MD = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


@pytest.fixture(autouse=True)
def _keys_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo keeps the user's key under ``var/demo-keys`` of where it runs: here."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[ServerThread]:
    srv = ServerThread(tmp_path / "tessera.db", test_clock=None).start()
    try:
        yield srv
    finally:
        srv.stop()


def test_demo_provisions_and_plays_a_product(
    live_server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--target", live_server.target, "--admin-token", ADMIN_TOKEN, *FAST]) == 0
    out = capsys.readouterr().out
    for expected in (
        "provisioned team 'demo'",
        "entitled DEMOCAD 2026",
        "DEMOCAD is now idle (was active)",
        "DEMOCAD is now active (was idle)",
        "opened plugin DEMOPLUG",
        "DEMOPLUG ended: released",
        "DEMOCAD ended: released",
    ):
        assert expected in out, out
    # Run again: provisioning is idempotent. A product id the server rejects stops it.
    assert main(["--target", live_server.target, "--admin-token", ADMIN_TOKEN, *FAST]) == 0
    capsys.readouterr()
    code = main(
        ["--target", live_server.target, "--admin-token", ADMIN_TOKEN, "--product", "no pe", *FAST]
    )
    assert code == 1
    assert "provisioning failed: INVALID_ARGUMENT" in capsys.readouterr().err


def test_demo_with_a_user_key_and_refusals(
    live_server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--target", live_server.target, "--user-key", "tsu_wrong", *FAST])
    assert code == 2
    assert "refused: Unauthenticated" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--target", live_server.target])  # neither a token nor a key


def _pack(out: str) -> str:
    """The pack id the provisioning line names."""
    return out.split("; pack ", 1)[1].split(")", 1)[0]


def test_demo_rerun_with_other_tokens_buys_them(
    live_server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--target", live_server.target, "--admin-token", ADMIN_TOKEN, *FAST]
    assert main([*base, "--tokens", "100"]) == 0
    first = _pack(capsys.readouterr().out)
    # Another amount is a purchase of its own (its request_id was refused as reused before).
    assert main([*base, "--tokens", "7"]) == 0
    out = capsys.readouterr().out
    assert "provisioned team 'demo'" in out and "DEMOCAD ended: released" in out, out
    second = _pack(out)
    assert second != first
    # The same amount again is the same purchase: nothing more is bought.
    assert main([*base, "--tokens", "7"]) == 0
    assert _pack(capsys.readouterr().out) == second


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--idle-after", "-1"], "--idle-after"),
        (["--idle-after", "0"], "--idle-after"),
        (["--idle-after", "nan"], "--idle-after"),
        (["--work", "-1"], "--work"),
        (["--work", "inf"], "--work"),
        (["--tokens", "0"], "--tokens"),
    ],
)
def test_demo_refuses_bad_numbers_as_usage_errors(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:  # before any call: nothing listens at port 1
        main(["--target", "127.0.0.1:1", "--admin-token", "t", *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {argv[1]}: must be a number" in err, err


@pytest.mark.parametrize(
    ("flag", "most", "past"),
    [
        ("--idle-after", "1e9", "1e300"),  # was an OverflowError out of timedelta
        ("--work", "1e9", "1e300"),
        ("--tokens", "1000000000", "1000000001"),  # the most one PurchaseTokens buys
        ("--tokens", "1000000000", str(2**63)),  # was a ValueError out of protobuf
    ],
)
def test_demo_refuses_numbers_past_what_it_can_use_as_usage_errors(
    flag: str, most: str, past: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--target", "127.0.0.1:1", "--admin-token", "t"]
    demo.parse_args([*base, flag, most])  # the bound itself is taken
    with pytest.raises(SystemExit) as stop:  # before any call: nothing listens at port 1
        main([*base, flag, past])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {past}: must be a number" in err, err
    assert "at most 1,000,000,000" in err, err


@pytest.mark.parametrize("flag", ["--admin-token", "--user-key"])
def test_demo_refuses_a_secret_that_cannot_go_in_a_header_as_a_usage_error(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A line break pasted in: grpc's ExecuteBatchError (the token), a ValueError out of
    # AsyncClient (the key), each a traceback, before.
    with pytest.raises(SystemExit) as stop:
        main(["--target", "127.0.0.1:1", flag, "s3cr\net"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {flag} holds '\\n', which cannot be sent in a header" in err, err
    assert "s3cr" not in err  # the secret is never shown


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--root-ca", "{missing}"], "--root-ca {missing}: No such file or directory"),
        (["--root-ca", "{tmp}"], "--root-ca {tmp}: Is a directory"),
        (
            ["--client-cert", "{cert}", "--client-key", "{missing}"],
            "--client-key {missing}: No such file or directory",
        ),
        (["--client-cert", "{cert}"], "--client-cert and --client-key go together"),
    ],
)
def test_demo_refuses_pem_files_it_cannot_use_as_usage_errors(
    argv: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each was a traceback (FileNotFoundError, ValueError) when the channel was made.
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    names = {"missing": tmp_path / "missing.pem", "tmp": tmp_path, "cert": cert}
    with pytest.raises(SystemExit) as stop:
        main(["--target", "127.0.0.1:1", "--user-key", "k", *(a.format(**names) for a in argv)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {said.format(**names)}" in err, err


def test_demo_says_when_a_release_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = ServerThread(tmp_path / "tessera.db", test_clock=None).start()
    works: list[float] = []

    async def work_then_die(clock: object, handle: object, seconds: float) -> None:
        works.append(seconds)
        if len(works) == 2:  # the plugin's work: the server goes away under it
            srv.stop()

    monkeypatch.setattr(demo, "_work", work_then_die)
    # Each Release to the server that went away is retried for the policy's time: the
    # default's 20 s, twice, is real time spent for nothing here.
    brief = RetryPolicy(max_attempts=2, initial_backoff=0.0, call_timeout=2.0)
    monkeypatch.setattr(demo, "AsyncClient", functools.partial(demo.AsyncClient, retry=brief))
    code = main(["--target", srv.target, "--admin-token", ADMIN_TOKEN, *FAST])
    out = capsys.readouterr().out
    assert code == 2, out
    assert "opened plugin DEMOPLUG" in out
    assert "DEMOPLUG: Release failed (Unavailable" in out
    assert "DEMOCAD: Release failed (Unavailable" in out
    assert "ended: released" not in out and "released DEMOCAD" not in out


# -- the demo as a newcomer runs it: in a terminal, twice, against a rate sheet of theirs ----


def _admin(target: str, method: str, request: object) -> object:
    with grpc.insecure_channel(target) as channel:
        stub = admin_grpc.AdminServiceStub(channel)
        return getattr(stub, method)(request, metadata=MD, timeout=10)


def _live(target: str) -> list[tuple[str, str, str]]:
    answer: object = _admin(target, "ListSessions", admin_pb.ListSessionsRequest(team_id="demo"))
    return [(s.session_id, s.device_id, s.product_id) for s in answer.sessions]  # type: ignore[attr-defined]


class Demo:
    """The demo in a process of its own (provisioning with the admin token), its output
    read line by line as it comes (a thread reads it: select() cannot see what a text
    stream has buffered already)."""

    def __init__(self, target: str, keys: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "client_sdk.demo", "--target", target),
                *("--admin-token", ADMIN_TOKEN, "--keys-dir", str(keys), *extra),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")  # the end

    def until(self, text: str, timeout: float = 30) -> str:
        """The output up to the first line holding ``text``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen += line
            if text in line:
                return self.seen
            if not line:
                break
        self.proc.kill()
        raise AssertionError(f"never saw {text!r}:\n{self.seen}")

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """Its exit code and all it wrote."""
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        while not self.lines.empty():
            self.seen += self.lines.get()
        return self.proc.returncode, self.seen


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_m3_demo_stopped_by_sigterm_or_sighup_releases_its_session(
    live_server: ServerThread, tmp_path: Path, sig: signal.Signals
) -> None:
    """As Ctrl+C does: killed on the spot, the session stayed live for its lease, was
    charged at 5 minutes, and the user's other devices were refused RUNNING_ELSEWHERE."""
    run = Demo(live_server.target, tmp_path, "--work", "60", "--device-id", "dev-a")
    run.until("working for")
    run.proc.send_signal(sig)
    code, out = run.finish()
    assert (code, _live(live_server.target)) == (128 + sig, []), out


def test_m9_a_second_demo_keeps_the_first_ones_key_and_offers_the_takeover(
    live_server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Provisioning issued the user a new key on every run, which revoked the key of a
    demo still running: that one ended KEY_REFUSED and could not release its session.
    And the refusal says "set takeover", which the demo had no flag for."""
    first = Demo(live_server.target, tmp_path, "--device-id", "dev-a", "--work", "30")
    try:
        first.until("working for")
        base = ["--target", live_server.target, "--admin-token", ADMIN_TOKEN, *FAST]
        here = [*base, "--keys-dir", str(tmp_path), "--device-id", "dev-b"]
        assert main(here) == 2
        out = capsys.readouterr().out
        assert "RunningElsewhere" in out and "set takeover to move it here" in out, out
        assert "with the key kept in" in out, out
        assert main([*here, "--takeover"]) == 0
        out = capsys.readouterr().out
        assert "DEMOCAD ended: released" in out, out
        code, out = first.finish()
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
            first.finish()
    assert "DEMOCAD ended: taken_over" in out, out
    assert (code, _live(live_server.target)) == (0, [])


def test_m12_demo_says_so_when_the_server_ended_its_session(
    live_server: ServerThread, tmp_path: Path
) -> None:
    run = Demo(live_server.target, tmp_path, "--work", "2", "--idle-after", "0.5")
    seen = run.until("working for")
    session = re.search(r"entitled DEMOCAD 2026: session (se_\S+):", seen)
    assert session, seen
    _admin(live_server.target, "EndSession", admin_pb.EndSessionRequest(session_id=session[1]))
    code, out = run.finish()
    assert code == 0 and "DEMOCAD ended: ended_by_admin" in out, out
    for wrong in ("idle-aware", "stands still", "refused"):  # it played on, blaming those
        assert wrong not in out, out


def test_demo_does_not_blame_idle_awareness_when_the_server_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = ServerThread(tmp_path / "tessera.db", test_clock=None).start()
    works: list[float] = []
    real_work = demo._work

    async def work_then_stop(clock: object, handle: object, seconds: float) -> None:
        works.append(seconds)
        await real_work(clock, handle, seconds)  # type: ignore[arg-type]
        if len(works) == 1:  # the host's work done: the server goes away
            srv.stop()

    monkeypatch.setattr(demo, "_work", work_then_stop)
    brief = RetryPolicy(max_attempts=2, initial_backoff=0.0, call_timeout=1.0)
    monkeypatch.setattr(demo, "AsyncClient", functools.partial(demo.AsyncClient, retry=brief))
    main(["--target", srv.target, "--admin-token", ADMIN_TOKEN, *FAST])
    out = capsys.readouterr().out
    assert "the session did not go idle: the server does not answer" in out, out
    assert "idle-aware" not in out, out


def test_p1_demo_leaves_a_product_already_on_the_rate_sheet_as_it_is(
    live_server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--product MAYA`` (the README's product) rewrote the operator's MAYA as Demo CAD,
    10 tokens a day, idle-aware."""
    maya = common_pb2.Product(
        product_id="MAYA",
        display_name="Autodesk Maya",
        daily_rate=50,
        kind=common_pb2.PRODUCT_KIND_PRODUCT,
        idle_aware=True,
        platforms=demo.ALL_PLATFORMS,
    )
    _admin(live_server.target, "UpsertProduct", admin_pb.UpsertProductRequest(product=maya))
    main(["--target", live_server.target, "--admin-token", ADMIN_TOKEN, "--product", "MAYA", *FAST])
    out = capsys.readouterr().out
    assert "product MAYA is on the rate sheet already: left as it is" in out, out
    listed: object = _admin(live_server.target, "ListProducts", admin_pb.ListProductsRequest())
    after = {p.product_id: p for p in listed.products}["MAYA"]  # type: ignore[attr-defined]
    assert (after.display_name, after.daily_rate) == ("Autodesk Maya", 50)


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1:50051",
        "[::1]:50051",
        "dns:///localhost:50051",
        "ipv4:127.0.0.1:1,127.0.0.2:2",  # gRPC's list of addresses: each checked
        "ipv6:[::1]:1",
        "unix:/tmp/tessera.sock",
        "xds:///licenses",  # gRPC's other resolvers: their targets are theirs
        "vsock:3:5000",
    ],
)
def test_demo_takes_every_target_form_grpc_does(target: str) -> None:
    assert demo.parse_args(["--target", target, "--user-key", "tsu_key"]).target == target


@pytest.mark.parametrize("target", ["127.0.0.1:115536", "127.0.0.1:", "", "nohost", ":50051"])
def test_demo_refuses_a_target_that_is_not_host_port_as_a_usage_error(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """gRPC takes a port past 65535 modulo 65536 (the demo played another server) and an
    empty one as 443; an empty target was a traceback out of the SDK."""
    with pytest.raises(SystemExit) as stop:
        main(["--target", target, "--user-key", "tsu_x", *FAST])
    assert stop.value.code == 2
    assert "--target" in capsys.readouterr().err


def test_demo_ends_within_its_release_timeouts_when_the_server_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each release ran the whole retry policy (20 s) with nothing printed: 40 s to end."""
    srv = ServerThread(tmp_path / "tessera.db", test_clock=None).start()
    works: list[float] = []
    stopped: list[float] = []

    async def work_then_die(clock: object, handle: object, seconds: float) -> None:
        works.append(seconds)
        if len(works) == 2:  # the plugin's work: the server goes away under it
            srv.stop()
            stopped.append(time.monotonic())

    monkeypatch.setattr(demo, "_work", work_then_die)
    main(["--target", srv.target, "--admin-token", ADMIN_TOKEN, *FAST])
    took = time.monotonic() - stopped[0]
    out = capsys.readouterr().out
    assert "releasing DEMOPLUG" in out and "DEMOPLUG: Release failed" in out, out
    assert took < 2 * demo.SessionOptions().release_timeout.total_seconds() + 3, out


def test_demo_an_admin_token_given_beats_a_user_key_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TESSERA_USER_KEY", "tsk_stale")
    args = demo.parse_args(["--target", "127.0.0.1:1", "--admin-token", "tsa_given"])
    assert (args.admin_token, args.user_key) == ("tsa_given", None)
    monkeypatch.setenv("TESSERA_ADMIN_TOKEN", "tsa_env")
    args = demo.parse_args(["--target", "127.0.0.1:1"])
    assert (args.admin_token, args.user_key) == ("tsa_env", "tsk_stale")  # as before


def test_demo_a_keys_dir_used_with_two_servers_keeps_the_running_demos_key(
    tmp_path: Path,
) -> None:
    """Keys were kept by user id alone: a run on another server replaced the file, and
    the next run on the first issued a key there again, revoking a running demo's."""
    a = ServerThread(tmp_path / "a.db", test_clock=None).start()
    b = ServerThread(tmp_path / "b.db", test_clock=None).start()
    keys = tmp_path / "keys"
    try:
        first = Demo(a.target, keys, "--device-id", "dev-a", "--work", "6", "--idle-after", "0.2")
        try:
            first.until("working for")
            for target in (b.target, a.target):  # another server, then this one again
                argv = ["--target", target, "--admin-token", ADMIN_TOKEN, *FAST]
                assert main([*argv, "--keys-dir", str(keys), "--device-id", "dev-a"]) == 0
            code, out = first.finish()
        finally:
            if first.proc.poll() is None:
                first.proc.kill()
                first.finish()
        assert code == 0, out
        assert "key_refused" not in out and "Release failed" not in out, out
        assert _live(a.target) == []
    finally:
        a.stop()
        b.stop()


def test_demo_a_key_written_over_a_stale_file_is_the_owners_alone(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "demo@example.com.key"
    path.parent.mkdir(mode=0o700)
    path.write_text("tsu_stale\n")
    os.chmod(path, 0o644)  # a file left there readable by all: it kept that mode
    assert "kept in" in demo._keep(path, "tsu_new-secret")
    assert path.read_text() == "tsu_new-secret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The last line of the demo's usage error (exit 2) on ``argv``, before any call."""
    with pytest.raises(SystemExit) as stop:  # nothing listens at port 1
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--root-ca", "{garbage}"], "--root-ca {garbage} holds no PEM certificate"),
        (
            ["--client-cert", "{garbage}", "--client-key", "{garbage}"],
            "--client-cert {garbage} holds no PEM certificate",
        ),
        (
            ["--client-cert", "{cert}", "--client-key", "{garbage}"],
            "--client-key {garbage} holds no unencrypted PEM private key",
        ),
        (
            ["--client-cert", "{cert}", "--client-key", "{other_key}"],
            "--client-key {other_key} is not the key of --client-cert",
        ),
    ],
)
def test_demo_pem_files_that_hold_no_usable_pem_are_usage_errors_naming_the_flag(
    argv: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each was a traceback ending ``ValueError: root_ca holds no PEM certificate`` (exit 1)
    when the channel was made."""
    files = {"garbage": "not a certificate\n", "cert": _issue("me", None).cert.decode()}
    files["other_key"] = _issue("other", None).key.decode()
    names = {}
    for name, text in files.items():
        names[name] = tmp_path / f"{name}.pem"
        names[name].write_text(text)
    argv = [a.format(**names) for a in argv]
    line = _usage_error(capsys, ["--target", "127.0.0.1:1", "--user-key", "tsu_x", *argv])
    assert line.endswith(f"error: {said.format(**names)}"), line


def test_demo_usable_pem_files_pass_the_check(tmp_path: Path) -> None:
    made = _issue("me", None)
    (tmp_path / "c.pem").write_bytes(made.cert)
    (tmp_path / "k.pem").write_bytes(made.key)
    tls = ["--root-ca", str(tmp_path / "c.pem"), "--client-cert", str(tmp_path / "c.pem")]
    args = demo.parse_args(
        [
            "--target",
            "127.0.0.1:1",
            "--user-key",
            "k",
            *tls,
            "--client-key",
            str(tmp_path / "k.pem"),
        ]
    )
    assert args.root_ca == str(tmp_path / "c.pem")


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("TESSERA_TARGET", "nonsense", "TESSERA_TARGET 'nonsense': must be host:port"),
        ("TESSERA_TARGET", "127.0.0.1:115536", "TESSERA_TARGET '127.0.0.1:115536': its port"),
        ("TESSERA_USER_KEY", "s3cr\net", "TESSERA_USER_KEY holds '\\n'"),
        ("TESSERA_ADMIN_TOKEN", "s3cr\tet", "TESSERA_ADMIN_TOKEN holds '\\t'"),
    ],
)
def test_demo_a_bad_environment_variable_is_named_as_the_variable(
    variable: str,
    value: str,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each was reported as the flag (``--target 'nonsense': ...``), which was not given."""
    for name in ("TESSERA_TARGET", "TESSERA_USER_KEY", "TESSERA_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, value)
    argv = ["--user-key", "tsu_x"] if variable == "TESSERA_TARGET" else ["--target", "127.0.0.1:1"]
    line = _usage_error(capsys, argv)
    assert f"error: {said}" in line, line
    assert "s3cr" not in line  # the secret is never shown


def test_demo_flags_given_beat_bad_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_TARGET", "nonsense")
    monkeypatch.setenv("TESSERA_USER_KEY", "s3cr\net")
    args = demo.parse_args(["--target", "127.0.0.1:1", "--user-key", "tsu_given"])
    assert (args.target, args.user_key) == ("127.0.0.1:1", "tsu_given")
    monkeypatch.delenv("TESSERA_TARGET")
    assert demo.parse_args(["--user-key", "tsu_given"]).target == "127.0.0.1:50051"


def test_demo_a_bad_target_flag_is_still_named_as_the_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TESSERA_TARGET", "127.0.0.1:1")
    line = _usage_error(capsys, ["--target", "nonsense", "--user-key", "tsu_x"])
    assert "error: --target 'nonsense': must be host:port" in line, line
