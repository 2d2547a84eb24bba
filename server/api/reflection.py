"""Server reflection that documents the API: what ``grpcurl list`` and
``grpcurl describe`` read, under both reflection versions.

The descriptors come from ``tessera_api/descriptors.binpb``, the
FileDescriptorSet that ``make protos`` writes with ``--include_source_info``:
the ``.proto`` comments travel with each file, so ``grpcurl describe
tessera.v1.AdminService.CreateTeam`` prints the RPC's documentation. (The
descriptors compiled into the ``*_pb2`` modules have no comments, and a
``DescriptorPool`` gives none back either.)

grpcio-reflection's servicer answers everything else (``list``, extensions).
Two requests are answered here:

* a file by name or by symbol is sent as it is in the set, comments included,
  with the files it imports;
* a symbol may name a method (``tessera.v1.AdminService.CreateTeam``), which
  grpcurl asks for and protobuf's pool does not resolve: the file is its
  service's.

grpcio-reflection serves only ``grpc.reflection.v1alpha``; ``v1`` has the same
messages under another package, so the same servicer answers under both names,
and v1's descriptor is derived from v1alpha's.

Health (``add_health``) and reflection parse their requests strictly: a body that
is not the method's message (a corrupt wire format, a string that is not UTF-8) is
refused ``INVALID_ARGUMENT``, "the request is not a valid
grpc.health.v1.HealthCheckRequest (...)", with a ``BadRequest`` naming the field
``request``, as Tessera's own methods refuse one (``api/interceptors.py``), where
gRPC alone answered ``UNKNOWN`` naming a Python exception and logged a traceback.
"""

from __future__ import annotations

import importlib.resources
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any, cast

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer as _LibraryServicer

from server.api.errors import to_status
from server.api.interceptors import Undecodable, decode_failure
from server.domain.errors import InvalidArgument

DESCRIPTOR_SET = "descriptors.binpb"  # in the package tessera_api
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_SERVICES = (health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1)

Request = reflection_pb2.ServerReflectionRequest
Response = reflection_pb2.ServerReflectionResponse


def _copy(file: Any) -> descriptor_pb2.FileDescriptorProto:  # a *_pb2 module's DESCRIPTOR
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    return proto


def _reflection_v1() -> descriptor_pb2.FileDescriptorProto:
    """``grpc/reflection/v1/reflection.proto``, made from v1alpha's."""
    proto = _copy(reflection_pb2.DESCRIPTOR)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = "grpc.reflection.v1"
    proto.ClearField("options")
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(".v1alpha.", ".v1.")
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(".v1alpha.", ".v1.")
            method.output_type = method.output_type.replace(".v1alpha.", ".v1.")
    return proto


def api_files() -> list[descriptor_pb2.FileDescriptorProto]:
    """Tessera's files and their imports, with their comments (dependencies first)."""
    data = (importlib.resources.files("tessera_api") / DESCRIPTOR_SET).read_bytes()
    return list(descriptor_pb2.FileDescriptorSet.FromString(data).file)


def _proto_names(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> list[descriptor_pb2.FileDescriptorProto]:
    """Without ``json_name`` (protoc's set has one per field), so grpcurl prints the
    fields by their names in the contract (``pack_id``, not ``packId``), as it always has."""

    def clear(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            for field in message.field:
                field.ClearField("json_name")
            clear(message.nested_type)

    for proto in files:
        clear(proto.message_type)
    return files


class Descriptors:
    """The files reflection serves: a pool to resolve names, and each file's
    serialized form as it is sent (comments included)."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        self.serialized: dict[str, bytes] = {}
        for proto in files:
            self.pool.Add(proto)
            self.serialized[proto.name] = proto.SerializeToString()

    @classmethod
    def served(cls) -> Descriptors:
        # error_details.proto: grpcurl resolves the ErrorInfo / BadRequest / RetryInfo of a
        # refusal through reflection, else it prints them as raw bytes without the reason.
        extra = (
            _copy(health_pb2.DESCRIPTOR),
            _copy(reflection_pb2.DESCRIPTOR),
            _reflection_v1(),
            _copy(error_details_pb2.DESCRIPTOR),
        )
        return cls([*_proto_names(api_files()), *extra])

    def file_of(self, symbol: str) -> FileDescriptor | None:
        """The file that defines ``symbol``: a message, field, enum, service or method."""
        try:
            return self.pool.FindFileContainingSymbol(symbol)
        except KeyError:
            pass
        service, _, method = symbol.rpartition(".")
        try:
            found = self.pool.FindServiceByName(service)
        except KeyError:
            return None
        return found.file if method in found.methods_by_name else None

    def file_named(self, name: str) -> FileDescriptor | None:
        try:
            return self.pool.FindFileByName(name)
        except KeyError:
            return None

    def with_imports(self, file: FileDescriptor) -> list[bytes]:
        """The file, then every file it imports, directly or not, each once."""
        order: list[str] = []
        stack = [file]
        while stack:
            current = stack.pop()
            if current.name not in order:
                order.append(current.name)
                stack.extend(current.dependencies)
        return [self.serialized[name] for name in order]


class ReflectionServicer:
    def __init__(self, service_names: Iterable[str], descriptors: Descriptors) -> None:
        self._descriptors = descriptors
        self._library = _LibraryServicer(tuple(service_names), pool=descriptors.pool)

    async def ServerReflectionInfo(
        self, request_iterator: AsyncIterable[Request], context: Any
    ) -> AsyncIterator[Response]:
        async for request in request_iterator:
            which = request.WhichOneof("message_request")
            if which == "file_by_filename":
                yield self._file(request, self._descriptors.file_named(request.file_by_filename))
            elif which == "file_containing_symbol":
                yield self._file(request, self._descriptors.file_of(request.file_containing_symbol))
            else:
                answers = self._library.ServerReflectionInfo(_one(request), context)
                # an async generator (typeshed's stub declares a coroutine)
                async for response in cast(AsyncIterable[Response], answers):
                    yield response

    def _file(self, request: Request, file: FileDescriptor | None) -> Response:
        if file is None:
            return Response(
                error_response=reflection_pb2.ErrorResponse(
                    error_code=grpc.StatusCode.NOT_FOUND.value[0],
                    error_message="symbol or file not found",
                ),
                original_request=request,
            )
        return Response(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=self._descriptors.with_imports(file)
            ),
            original_request=request,
        )


async def _one(request: Request) -> AsyncIterator[Request]:
    yield request


def enable(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection for ``service_names`` and reflection's own services,
    under v1alpha and v1, its requests parsed strictly."""
    servicer = ReflectionServicer((*service_names, *REFLECTION_SERVICES), Descriptors.served())
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=Request.FromString,
        response_serializer=Response.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(
                name, {"ServerReflectionInfo": strict(handler, name.rpartition(".")[0])}
            )
            for name in (reflection.SERVICE_NAME, REFLECTION_V1)
        )
    )


def add_health(servicer: health_pb2_grpc.HealthServicer, server: grpc.aio.Server) -> None:
    """``health_pb2_grpc.add_HealthServicer_to_server``, its requests parsed strictly
    (on a ``GenericOnly`` stand-in, its generic handlers alone: ``ha/gate.py``)."""
    collected = _Collector()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, collected)  # type: ignore[arg-type]
    for service, methods in collected.services.items():
        package = service.rpartition(".")[0]
        checked = {name: strict(handler, package) for name, handler in methods.items()}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, checked),))
        server.add_registered_method_handlers(service, checked)


class _Collector:
    """Stands in for a gRPC server to collect a servicer's method handlers."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # the registered handlers below are the same methods

    def add_registered_method_handlers(self, service: str, methods: dict[str, Any]) -> None:
        self.services[service] = dict(methods)


def strict(handler: Any, package: str) -> Any:
    """``handler`` (a grpc.RpcMethodHandler) with its request parsed strictly: a body
    that is not its message (named in ``package``: ``grpc.reflection.v1`` serves
    v1alpha's messages under its own name) is refused INVALID_ARGUMENT, naming it,
    instead of gRPC's UNKNOWN and a traceback in the log."""
    parse = _parse(handler.request_deserializer, package)
    kind = "unary_unary" if handler.unary_unary is not None else None
    for name in ("unary_stream", "stream_unary", "stream_stream"):
        if getattr(handler, name) is not None:
            kind = name
    assert kind is not None  # noqa: S101 (a handler has one behaviour)
    behavior = getattr(handler, kind)
    make = getattr(grpc, f"{kind}_rpc_method_handler")
    wrapped = _streamed(behavior) if kind.startswith("stream") else _unary(behavior)
    return make(
        wrapped, request_deserializer=parse, response_serializer=handler.response_serializer
    )


def _parse(deserialize: Callable[[bytes], Any], package: str) -> Callable[[bytes], Any]:
    message = getattr(deserialize, "__self__").DESCRIPTOR.name  # noqa: B009 (a bound FromString)
    full_name = f"{package}.{message}"

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as exc:
            return Undecodable(f"is not a valid {full_name} ({decode_failure(exc)})")

    return parse


async def refuse(context: Any, unparsed: Undecodable) -> None:
    """INVALID_ARGUMENT naming the field ``request`` (a BadRequest) and saying why."""
    problem = InvalidArgument.field(unparsed.field, unparsed.problem)
    problem.message = f"the request {unparsed.problem}"
    status = to_status(problem)
    await context.abort(status.code, status.details, status.trailing_metadata)


def _unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def answers(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await refuse(context, request)
            async for answer in behavior(request, context):
                yield answer

        return answers

    async def answer(request: Any, context: Any) -> Any:
        if isinstance(request, Undecodable):
            await refuse(context, request)
        return await behavior(request, context)

    return answer


def _streamed(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def checked(requests: AsyncIterable[Any], context: Any) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Undecodable):
                await refuse(context, request)
            yield request

    if inspect.isasyncgenfunction(behavior):

        async def answers(requests: AsyncIterable[Any], context: Any) -> AsyncIterator[Any]:
            async for answer in behavior(checked(requests, context), context):
                yield answer

        return answers

    async def answer(requests: AsyncIterable[Any], context: Any) -> Any:
        return await behavior(checked(requests, context), context)

    return answer
