"""RULES M7 under load (issue 17): leases asked for within a few milliseconds of
each other share one Ed25519 signature through a hash tree (``server/leases.py``),
and each one still verifies alone, offline, with the SDK's own check."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from client_sdk.errors import LeaseInvalid
from client_sdk.leases import verify_lease_signature
from server.leases import BATCH_CONTEXT, BUSY, LeaseSigner, Signature, _new_key, hash_tree
from tessera_api.tessera.v1 import common_pb2 as pb
from tessera_api.tessera.v1 import licensing_service_pb2 as lic
from tessera_api.tessera.v1 import licensing_service_pb2_grpc as lic_grpc
from tests.security.test_signed_leases import _entitle, _keys, _provision
from tests.support import SecondsClock, running

NOW = datetime(2026, 1, 1, tzinfo=UTC)
KEY = _new_key(NOW)
KEYS = {KEY.key_id: KEY.public_bytes}
WINDOW = 0.002
# Where a test drives the batches itself (``sign_batch``), the window is long enough
# that the loop's own call to it never comes first, however slow the machine.
LONG = 600.0


def lease(n: int) -> bytes:
    msg = pb.Lease(
        session_id=f"ses_{n:04d}",
        user_id="ann@example.com",
        team_id="acme",
        product_id="ACAD",
        device_id="dev-1",
        coverage=pb.COVERAGE_TOKENS,
    )
    msg.lease_expire_time.FromDatetime(NOW + timedelta(days=1))
    msg.issue_time.FromDatetime(NOW)
    return msg.SerializeToString(deterministic=True)


def signed(payload: bytes, signature: bytes, path: list[bytes] | tuple[()], index: int) -> bytes:
    return pb.SignedLease(
        lease=payload, signature=signature, key_id=KEY.key_id, tree_path=path, tree_index=index
    ).SerializeToString()


def signer(clock: SecondsClock | None = None, window: float = LONG) -> LeaseSigner:
    return LeaseSigner([KEY], timedelta(days=1), window, clock or SecondsClock())


async def signature_of(s: LeaseSigner, payload: bytes) -> Signature:
    """The signature of ``payload``, made now or, in a batch, once it is made."""
    made = s.signature(payload)
    return made if isinstance(made, tuple) else await made


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17])
def test_m7_each_lease_of_a_batch_verifies_alone_with_the_sdk(n: int) -> None:
    payloads = [lease(i) for i in range(n)]
    answers = signer().sign_all(payloads)
    assert len({signature for signature, _, _ in answers}) == 1  # one Ed25519 signature
    for i, (payload, (signature, path, index)) in enumerate(zip(payloads, answers, strict=True)):
        assert index == i and len(path) == math.ceil(math.log2(n))  # 0 when alone
        checked = verify_lease_signature(signed(payload, signature, list(path), index), KEYS)
        assert checked.session_id == f"ses_{i:04d}"
        assert checked.lease_expire_time == NOW + timedelta(days=1)


def test_m7_a_batched_lease_altered_moved_or_passed_off_is_refused() -> None:
    payloads = [lease(i) for i in range(5)]
    answers = signer().sign_all(payloads)
    signature, path, index = answers[2]
    path = list(path)

    def refused(data: bytes, reason: str) -> None:
        with pytest.raises(LeaseInvalid) as caught:
            verify_lease_signature(data, KEYS)
        assert caught.value.reason == reason

    other = pb.Lease.FromString(payloads[2])
    other.lease_expire_time.seconds += 365 * 86400  # a year of free use
    refused(signed(other.SerializeToString(), signature, path, index), "LEASE_BAD_SIGNATURE")
    refused(signed(payloads[2], signature, path, 3), "LEASE_BAD_SIGNATURE")  # another place
    refused(signed(payloads[2], signature, list(answers[3][1]), 2), "LEASE_BAD_SIGNATURE")
    refused(signed(payloads[2], signature, path[:-1], index), "LEASE_BAD_SIGNATURE")
    refused(signed(payloads[2], signature, path, index + 8), "LEASE_MALFORMED")  # past its path
    refused(signed(payloads[2], signature, [path[0][:31], *path[1:]], index), "LEASE_MALFORMED")
    refused(signed(payloads[2], signature, (), 2), "LEASE_MALFORMED")
    # The batch's signed root, handed over as if it were a lease signed alone.
    root, _ = hash_tree(payloads)
    refused(signed(BATCH_CONTEXT + root, signature, (), 0), "LEASE_MALFORMED")


def test_m7_a_client_calling_one_at_a_time_never_waits_for_a_batch() -> None:
    async def scenario() -> None:
        clock = SecondsClock()
        s = signer(clock, WINDOW)
        for i in range(1000):  # ~1,350 calls a second, the most one call at a time gets here
            assert (await signature_of(s, lease(i)))[1] == ()
            clock.t += 0.00074
        assert (s.signatures, s.signed) == (1000, 1000)

    asyncio.run(scenario())


def test_m7_leases_asked_for_in_one_turn_share_a_signature_without_waiting_for_a_window() -> None:
    async def scenario() -> None:
        s = signer()  # a window that never comes: only the turn's end can sign them
        waiting = [asyncio.ensure_future(signature_of(s, lease(i))) for i in range(3)]
        for _ in range(3):  # they ask in one turn; it ends; their tasks resume
            await asyncio.sleep(0)
        assert all(w.done() for w in waiting)
        answers = [w.result() for w in waiting]
        assert (s.signatures, s.signed) == (1, 3)
        assert len({signature for signature, _, _ in answers}) == 1
        for i, (signature, path, index) in enumerate(answers):
            assert (index, len(path)) == (i, 2)
            verify_lease_signature(signed(lease(i), signature, list(path), index), KEYS)

    asyncio.run(scenario())


def test_m7_leases_share_a_signature_under_load_and_are_signed_alone_once_quiet() -> None:
    async def scenario() -> None:
        clock = SecondsClock()
        s = signer(clock)
        # BUSY leases within one window, each asked for alone, are signed alone; the next wait.
        for i in range(BUSY):
            assert (await signature_of(s, lease(i)))[1] == ()
        waiting = [asyncio.ensure_future(signature_of(s, lease(i))) for i in range(10)]
        await asyncio.sleep(0)  # let them ask (no time passes: the clock is the test's)
        assert not any(w.done() for w in waiting)
        s.sign_batch()  # the batch's time has come
        answers = [await w for w in waiting]
        assert (s.signatures, s.signed) == (BUSY + 1, BUSY + 10)
        assert len({signature for signature, _, _ in answers}) == 1
        for i, (signature, path, index) in enumerate(answers):
            verify_lease_signature(signed(lease(i), signature, list(path), index), KEYS)
        # In the next window too, after BUSY in the last one: it waits.
        clock.t += LONG
        next_one = asyncio.ensure_future(signature_of(s, lease(99)))
        await asyncio.sleep(0)
        assert not next_one.done()
        s.sign_batch()
        assert (await next_one)[1] == ()  # a batch of one is signed as the lease alone
        assert (s.signatures, s.signed) == (BUSY + 2, BUSY + 11)
        # Quiet for two windows: none waits for a window again.
        clock.t += 3 * LONG
        assert (await signature_of(s, lease(7)))[1] == ()
        clock.t += 3 * LONG
        assert (await signature_of(s, lease(8)))[1] == ()

    asyncio.run(scenario())


def test_m7_a_call_gone_from_a_batch_leaves_the_others_signed() -> None:
    async def scenario() -> None:
        s = signer()
        for i in range(BUSY):
            await signature_of(s, lease(i))
        gone, kept = (asyncio.ensure_future(signature_of(s, lease(i))) for i in (10, 11))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        s.sign_batch()
        signature, path, index = await kept
        verify_lease_signature(signed(lease(11), signature, list(path), index), KEYS)

    asyncio.run(scenario())


def test_m7_concurrent_heartbeats_over_the_wire_get_leases_that_verify(tmp_path: Path) -> None:
    """A real server with the longest window: calls made at once share signatures,
    and the SDK accepts every answer's lease as its session's."""
    with running(tmp_path / "tessera.db", lease_batch_window=0.1) as srv:
        with grpc.insecure_channel(srv.target) as channel:
            stub = lic_grpc.LicensingServiceStub(channel)
            key = _provision(srv)
            session = _entitle(stub, key).session
            keys = _keys(stub)

        async def beat_many() -> list[lic.HeartbeatResponse]:
            async with grpc.aio.insecure_channel(srv.target) as aio:
                hb = lic_grpc.LicensingServiceStub(aio)
                return list(
                    await asyncio.gather(
                        *(
                            hb.Heartbeat(
                                lic.HeartbeatRequest(session_id=session.session_id),
                                metadata=[("authorization", f"Bearer {key}")],
                                timeout=30,
                            )
                            for _ in range(40)
                        )
                    )
                )

        answers = asyncio.run(beat_many())
    assert any(a.lease.tree_path for a in answers)  # some were signed in a batch
    assert len({a.lease.signature for a in answers}) < len(answers)
    for a in answers:
        lease = verify_lease_signature(a.lease, keys)
        assert lease.session_id == session.session_id
        assert lease.lease_expire_time == a.session.lease_expire_time.ToDatetime(tzinfo=UTC)


def test_m7_m11_concurrent_entitles_over_the_wire_get_leases_of_one_session_that_verify(
    tmp_path: Path,
) -> None:
    """Forty Entitles at once with one request id (M11: one session, the repeats
    answered once the first is stored) each get a lease of that session that the
    SDK accepts, and some share a signature."""
    with running(tmp_path / "tessera.db", lease_batch_window=0.1) as srv:
        with grpc.insecure_channel(srv.target) as channel:
            stub = lic_grpc.LicensingServiceStub(channel)
            key = _provision(srv)
            keys = _keys(stub)

        async def entitle_many() -> list[lic.EntitleResponse]:
            request = lic.EntitleRequest(
                product_id="ACAD",
                product_version="2026",
                platform=pb.PLATFORM_WINDOWS,
                device_id="dev-1",
                request_id="one-sign-in",
            )
            async with grpc.aio.insecure_channel(srv.target) as aio:
                en = lic_grpc.LicensingServiceStub(aio)
                auth = [("authorization", f"Bearer {key}")]
                return list(
                    await asyncio.gather(
                        *(en.Entitle(request, metadata=auth, timeout=30) for _ in range(40))
                    )
                )

        answers = asyncio.run(entitle_many())
    assert len({a.session.session_id for a in answers}) == 1
    assert any(a.lease.tree_path for a in answers)  # some were signed in a batch
    assert len({a.lease.signature for a in answers}) < len(answers)
    for a in answers:
        lease = verify_lease_signature(a.lease, keys)
        assert lease.session_id == a.session.session_id
        assert lease.lease_expire_time == a.session.lease_expire_time.ToDatetime(tzinfo=UTC)
