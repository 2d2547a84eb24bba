"""Reflection documents the API (issue 12, point 12): the real grpcurl resolves
method names (``describe tessera.v1.AdminService.CreateTeam``) and prints the
.proto comments, under grpc.reflection v1alpha (grpcurl 1.8.6's) and v1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.api.reflection import Descriptors, api_files
from tessera_api.tessera.v1 import admin_service_pb2, common_pb2, licensing_service_pb2
from tests.api.test_accounts_api import _reflection_v1
from tests.support import ADMIN_TOKEN, ServerThread

GRPCURL = Path(sys.executable).parent / "grpcurl"
# FileDescriptorProto field numbers: message_type 4, service 6; in a message,
# field 2; in a service, method 2.
MESSAGE, SERVICE, FIELD, METHOD = 4, 6, 2, 2


def grpcurl(
    target: str, *args: str, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    assert GRPCURL.exists(), "run `make install`: the dev extra installs grpcurl"
    return subprocess.run(
        [str(GRPCURL), "-plaintext", *flags, target, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def api_file(name: str) -> descriptor_pb2.FileDescriptorProto:
    (found,) = (f for f in api_files() if f.name == name)
    return found


def comment(file: descriptor_pb2.FileDescriptorProto, *path: int) -> list[str]:
    """The leading comment at ``path``, as grpcurl prints it (``// line``)."""
    for location in file.source_code_info.location:
        if tuple(location.path) == path:
            return [f"//{line}".rstrip() for line in location.leading_comments.splitlines()]
    return []


def described(server: ServerThread, symbol: str) -> list[str]:
    result = grpcurl(server.target, "describe", symbol)
    assert result.returncode == 0, result.stderr
    return [line.strip() for line in result.stdout.splitlines()]


def test_issue12_h4_12_describe_resolves_a_method_name(server: ServerThread) -> None:
    out = described(server, "tessera.v1.AdminService.CreateTeam")
    assert out[0] == "tessera.v1.AdminService.CreateTeam is a method:"
    assert "rpc CreateTeam ( .tessera.v1.CreateTeamRequest ) returns" in out[-1]


def test_issue12_h4_12_describe_a_method_prints_its_comment(server: ServerThread) -> None:
    file = api_file("tessera/v1/admin_service.proto")
    (service,) = file.service
    index = [m.name for m in service.method].index("CreateTeam")
    expected = comment(file, SERVICE, 0, METHOD, index)
    assert expected, "CreateTeam is documented in admin_service.proto"
    out = described(server, "tessera.v1.AdminService.CreateTeam")
    assert out[1 : 1 + len(expected)] == expected


@pytest.mark.parametrize(
    ("service", "file_name"),
    [
        ("tessera.v1.AdminService", "tessera/v1/admin_service.proto"),
        ("tessera.v1.LicensingService", "tessera/v1/licensing_service.proto"),
    ],
)
def test_issue12_h4_12_describe_a_service_prints_every_rpc_comment(
    server: ServerThread, service: str, file_name: str
) -> None:
    file = api_file(file_name)
    out = "\n".join(described(server, service))
    for index, method in enumerate(file.service[0].method):
        expected = comment(file, SERVICE, 0, METHOD, index)
        assert expected, f"rpc {method.name} has no comment in {file_name}"
        assert "\n".join([*expected, f"rpc {method.name} ("]) in out


def test_issue12_h4_12_describe_a_message_prints_its_field_comments(server: ServerThread) -> None:
    file = api_file("tessera/v1/admin_service.proto")
    index = [m.name for m in file.message_type].index("CreateTeamRequest")
    out = "\n".join(described(server, "tessera.v1.CreateTeamRequest"))
    team_id = comment(file, MESSAGE, index, FIELD, 0)
    assert team_id, "CreateTeamRequest.team_id is documented"
    assert "\n".join([*team_id, "string team_id = 1;"]) in out


def test_issue12_h4_12_an_unknown_method_is_still_not_found(server: ServerThread) -> None:
    result = grpcurl(server.target, "describe", "tessera.v1.AdminService.NoSuchMethod")
    assert result.returncode != 0
    assert "Symbol not found: tessera.v1.AdminService.NoSuchMethod" in result.stderr


def test_issue12_h4_12_list_shows_both_reflection_versions(server: ServerThread) -> None:
    result = grpcurl(server.target, "list")
    assert result.returncode == 0, result.stderr
    assert {
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "tessera.v1.AdminService",
    } <= set(result.stdout.split())


def test_issue12_h4_12_grpcurl_prints_fields_by_their_names_in_the_proto(
    server: ServerThread,
) -> None:
    """The descriptor set has a json_name per field; served, grpcurl would print
    ``testClock``. The contract's names are the proto's."""
    auth = ("-H", f"authorization: Bearer {ADMIN_TOKEN}")
    result = grpcurl(server.target, "tessera.v1.AdminService/GetServerInfo", flags=auth)
    assert result.returncode == 0, result.stderr
    assert '"testClock"' not in result.stdout
    assert '"test_clock": true' in result.stdout


def test_issue12_h4_12_error_details_resolve_for_grpcurl(server: ServerThread) -> None:
    out = described(server, "google.rpc.ErrorInfo")
    assert out[0] == "google.rpc.ErrorInfo is a message:"


def _v1alpha(target: str, request: reflection_pb2.ServerReflectionRequest) -> list[object]:
    with grpc.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        return list(stub.ServerReflectionInfo(iter([request]), timeout=10))


@pytest.mark.parametrize("version", ["v1alpha", "v1"])
def test_issue12_h4_12_both_versions_send_a_methods_file_with_its_comments(
    server: ServerThread, version: str
) -> None:
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="tessera.v1.AdminService.CreateTeam"
    )
    (answer,) = (_v1alpha if version == "v1alpha" else _reflection_v1)(server.target, request)
    assert answer.WhichOneof("message_response") == "file_descriptor_response"  # type: ignore[attr-defined]
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answer.file_descriptor_response.file_descriptor_proto  # type: ignore[attr-defined]
    ]
    assert files[0].name == "tessera/v1/admin_service.proto"
    assert sorted(f.name for f in files[1:]) == [
        "google/protobuf/duration.proto",
        "google/protobuf/struct.proto",
        "google/protobuf/timestamp.proto",
        "tessera/v1/common.proto",
    ]
    source_info = api_file("tessera/v1/admin_service.proto").source_code_info
    assert files[0].source_code_info == source_info
    assert len(source_info.location) > 100


def test_issue12_h4_12_the_served_files_are_the_generated_modules_with_comments() -> None:
    """descriptors.binpb and the *_pb2 modules come from one `make protos`: what
    reflection serves is what the code was compiled from, plus the comments."""
    served = Descriptors.served().serialized
    for module in (admin_service_pb2, common_pb2, licensing_service_pb2):
        compiled = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        file = descriptor_pb2.FileDescriptorProto.FromString(served[module.DESCRIPTOR.name])
        assert file.source_code_info.location
        file.ClearField("source_code_info")
        assert file == compiled
