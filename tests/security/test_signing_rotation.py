"""M7: a signing key rotated while the server runs is retired when the server stops
signing with it (README: "the old key stays published by GetSigningKeys until its
last leases have ended"; docs/api.md: GetSigningKeys returns "every public key whose
leases may still be valid").

``rotate-signing-key`` used to stamp the old key retired when the tool ran, while the
running server went on signing with it until its restart: the key was then dropped a
lease's span after the rotation, before the leases it signed meanwhile had ended, and
a product that fetched the keys again refused a valid lease. The first start after a
rotation now stamps the retirement, by the server's clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc

from server.leases import key_path, load_or_create, rotate
from tessera_api.tessera.v1 import common_pb2 as pb
from tessera_api.tessera.v1 import licensing_service_pb2 as lic
from tessera_api.tessera.v1 import licensing_service_pb2_grpc as lic_grpc
from tests.grpcurl import Grpcurl
from tests.security.test_signed_leases import _entitle, _keys, _provision, verify_lease
from tests.security.test_tamper_and_backup import _cli
from tests.support import ADMIN_TOKEN, ServerThread, running

A = "tessera.v1.AdminService/"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _move_clock(srv: ServerThread, **how: str) -> None:
    admin = Grpcurl(srv.target, ADMIN_TOKEN)
    try:
        admin(A + "AdvanceClock", how)
    finally:
        admin.close()


def _stored(path: Path) -> list[dict[str, object]]:
    """The key file's entries, without their private halves."""
    return [
        {k: v for k, v in item.items() if k != "private"} for item in json.loads(path.read_text())
    ]


def test_m7_a_key_rotated_while_the_server_runs_is_published_until_its_last_lease_ends(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tessera.db"
    with running(db) as srv, grpc.insecure_channel(srv.target) as channel:  # test clock at T0
        stub = lic_grpc.LicensingServiceStub(channel)
        user_key = _provision(srv)
        session_id = pb.Lease.FromString(_entitle(stub, user_key).lease.lease).session_id
        done = _cli("rotate-signing-key", "--db", str(db))  # while the server runs
        assert done.returncode == 0, done.stderr
        _move_clock(srv, by="7200s")  # the restart comes 2 hours later
        # Until then the server signs with the old key: a lease to T0 + 26 h.
        last_lease = stub.Heartbeat(
            lic.HeartbeatRequest(session_id=session_id),
            metadata=(("authorization", f"Bearer {user_key}"),),
            timeout=10,
        ).lease
        assert pb.Lease.FromString(last_lease.lease).lease_expire_time.ToJsonString() == (
            "2026-01-02T02:00:00Z"
        )
    with running(db) as srv, grpc.insecure_channel(srv.target) as channel:
        stub = lic_grpc.LicensingServiceStub(channel)
        _move_clock(srv, to_time="2026-01-02T02:00:00Z")  # the lease's last instant
        reply = stub.GetSigningKeys(lic.GetSigningKeysRequest(), timeout=10)
        assert [(k.key_id == last_lease.key_id, k.retired) for k in reply.keys] == [
            (False, False),
            (True, True),
        ]
        verify_lease(last_lease, _keys(stub))  # a product fetching the keys again: still good
        _move_clock(srv, by="1s")  # the lease has ended: its key is no longer published
        assert last_lease.key_id not in _keys(stub)


def test_m7_the_first_start_after_a_rotation_stamps_the_old_key_retired_once(
    tmp_path: Path,
) -> None:
    path = key_path(tmp_path / "tessera.db")
    [old] = load_or_create(path, T0)
    new = rotate(path, T0 + HOUR)
    # Until a start, the rotation's time, marked for the next start to stamp.
    assert _stored(path) == [
        {"key_id": new.key_id, "create_time": "2026-01-01T01:00:00+00:00", "retired_time": None},
        {
            "key_id": old.key_id,
            "create_time": "2026-01-01T00:00:00+00:00",
            "retired_time": "2026-01-01T01:00:00+00:00",
            "retire_at_start": True,
        },
    ]
    started = load_or_create(path, T0 + 3 * HOUR)  # the start: the server's clock
    assert [(k.key_id, k.retired_time, k.retire_at_start) for k in started] == [
        (new.key_id, None, False),
        (old.key_id, T0 + 3 * HOUR, False),
    ]
    assert _stored(path)[1] == {
        "key_id": old.key_id,
        "create_time": "2026-01-01T00:00:00+00:00",
        "retired_time": "2026-01-01T03:00:00+00:00",
    }
    kept = path.read_bytes()
    again = load_or_create(path, T0 + 30 * HOUR)  # a later start changes nothing
    assert [k.retired_time for k in again] == [None, T0 + 3 * HOUR]
    assert path.read_bytes() == kept


def test_m7_keys_rotated_twice_before_a_start_are_both_retired_at_it(tmp_path: Path) -> None:
    """The running server signed with the first key until the start; the second was
    never used, and is retired at the same start."""
    path = key_path(tmp_path / "tessera.db")
    [first] = load_or_create(path, T0)
    second = rotate(path, T0 + HOUR)
    third = rotate(path, T0 + 2 * HOUR)
    started = load_or_create(path, T0 + 5 * HOUR)
    assert [(k.key_id, k.retired_time) for k in started] == [
        (third.key_id, None),
        (second.key_id, T0 + 5 * HOUR),
        (first.key_id, T0 + 5 * HOUR),
    ]


def test_m7_a_start_before_the_rotations_stamp_keeps_the_later_stamp(tmp_path: Path) -> None:
    """A key is never made to retire earlier than the rotation said (a clock behind
    the one the tool read): the later of the two instants is kept."""
    path = key_path(tmp_path / "tessera.db")
    [old] = load_or_create(path, T0)
    rotate(path, T0 + 5 * HOUR)
    started = load_or_create(path, T0 + HOUR)
    assert [k.retired_time for k in started if k.key_id == old.key_id] == [T0 + 5 * HOUR]
    assert not any(k.retire_at_start for k in load_or_create(path, T0 + 6 * HOUR))


def test_m7_a_key_file_retired_before_the_mark_existed_is_left_as_it_was(
    tmp_path: Path,
) -> None:
    """A file an earlier release rotated (no mark): its stamps stand, unwritten."""
    path = key_path(tmp_path / "tessera.db")
    load_or_create(path, T0)
    rotate(path, T0 + HOUR)
    items = json.loads(path.read_text())
    for item in items:
        item.pop("retire_at_start", None)
    path.write_text(json.dumps(items, indent=1))
    kept = path.read_bytes()
    started = load_or_create(path, T0 + 3 * HOUR)
    assert [k.retired_time for k in started] == [None, T0 + HOUR]
    assert path.read_bytes() == kept
