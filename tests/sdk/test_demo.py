"""``python -m client_sdk.demo`` against a real server (on the real clock: the demo's idle
threshold is a fraction of a second, and a test clock would stand still)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from client_sdk.demo import main
from tests.support import ADMIN_TOKEN, ServerThread

FAST = ["--work", "0.2", "--idle-after", "0.2"]


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
