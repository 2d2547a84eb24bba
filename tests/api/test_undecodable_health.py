"""Health and reflection refuse a request that is not their message as Tessera's
own methods do: INVALID_ARGUMENT naming the message, with a BadRequest naming the
field ``request``, and no traceback logged (gRPC alone answered UNKNOWN
"Unexpected <class 'google.protobuf.message.DecodeError'>" and logged one), in
one process and with the front process (``server/front.py``) alike."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.support import SERVING, health, running

CORRUPT = b"\xff\xff\xff"  # no valid field tag: the wire format is corrupt
NOT_UTF8 = b"\x0a\x03\xff\xfe\xfd"  # field 1 (a string) with bytes that are not UTF-8
HEALTH = "grpc.health.v1.HealthCheckRequest"


def _refusal(call: grpc.RpcError) -> tuple[str, str, list[tuple[str, str]]]:
    status = rpc_status.from_call(call)  # type: ignore[arg-type]
    violations = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
    return call.code().name, call.details() or "", violations


def _same(data: bytes) -> bytes:
    return data


def _call(channel: grpc.Channel, method: str, body: bytes) -> None:
    """``body``, as it is, as the request of ``method`` (the streams read to their end)."""
    kw = {"request_serializer": _same, "response_deserializer": _same}
    if method.endswith("/Check"):
        channel.unary_unary(method, **kw)(body, timeout=10)
    elif method.endswith("/Watch"):
        list(channel.unary_stream(method, **kw)(body, timeout=10))
    else:
        list(channel.stream_stream(method, **kw)(iter([body]), timeout=10))


@pytest.mark.parametrize("front", [False, True], ids=["one-process", "front-process"])
def test_api_health_and_reflection_refuse_an_undecodable_request_naming_its_message(
    tmp_path: Path,
    front: bool,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.ERROR)
    calls = {  # each method, by the message it takes
        HEALTH: ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"),
        "grpc.reflection.v1.ServerReflectionRequest": (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ),
        "grpc.reflection.v1alpha.ServerReflectionRequest": (
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ),
    }
    bodies = {CORRUPT: "Wire format was corrupt", NOT_UTF8: "String field had bad UTF-8"}
    with (
        running(tmp_path / "t.db", front_process=front) as srv,
        grpc.insecure_channel(srv.target) as channel,
    ):
        for message, methods in calls.items():
            for method in methods:
                for body, why in bodies.items():
                    with pytest.raises(grpc.RpcError) as refused:
                        _call(channel, method, body)
                    problem = f"is not a valid {message} ({why})"
                    assert _refusal(refused.value) == (
                        "INVALID_ARGUMENT",
                        f"the request {problem}",
                        [("request", problem)],
                    ), method
        assert health(srv.target) == SERVING  # a good request is answered as ever
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert "Traceback" not in capfd.readouterr().err  # nor on stderr, the front's too
