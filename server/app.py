"""Wiring: builds the store, engine, servicers and gRPC server from a Config,
and runs the process (health, reflection, signals, drain)."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from datetime import datetime
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from client_sdk.proto.tessera.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    licensing_service_pb2,
    licensing_service_pb2_grpc,
)
from server import leases
from server.api.admin import AdminServicer
from server.api.interceptors import EdgeInterceptor
from server.api.licensing import LicensingServicer
from server.api.limits import RateLimits
from server.clock import Clock, SystemClock, TestClock
from server.config import Config, parse_instant
from server.credentials import load_or_create_admin_token
from server.engine import Engine
from server.engine.core import TEST_CLOCK_KEY
from server.leases import LeaseSigner
from server.store.codec import MetaValue
from server.store.sqlite import Store, loading

log = structlog.get_logger()

# The cyclic collector's thresholds while serving (CPython's default: 700, 10,
# 10). Sessions, meters and devices live for hours, so every Entitle adds
# objects that the collector's full passes walk again: at the default, a pass
# came every ~10 gen-1 passes once the old generation had grown by a quarter,
# 27 passes (10.8 s, a third of the time) over 200,000 Entitles, each pause as
# long as the whole heap (176 ms at 100,000 sessions). A full pass now waits
# for 1,000 gen-1 passes (and still for that quarter); the young generations,
# where the short-lived cycles of calls die, are collected as often as ever.
# (`python -m benchmarks.million_sessions --sessions 200000`: Entitle 168 ->
# 131 us, p99 635 -> 191 ms; see the README.)
GC_THRESHOLDS = (700, 10, 1000)


def settle_heap() -> None:
    """Before the server takes calls: what was loaded lives as long as the
    server, so it is frozen out of the collector's passes (``gc.freeze``), and
    the passes over the old generation become rare (``GC_THRESHOLDS``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


SERVICE_NAMES = (
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    licensing_service_pb2.DESCRIPTOR.services_by_name["LicensingService"].full_name,
)
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _clock(config: Config, stored: dict[str, str]) -> Clock:
    if config.test_clock is None:
        return SystemClock()
    # RULES §7: a restart on the same database resumes from the stored time.
    saved = stored.get(TEST_CLOCK_KEY)
    start: datetime = parse_instant(saved) if saved else config.test_clock
    return TestClock(start)


def _register_reflection_v1_descriptor() -> None:
    """Put ``grpc/reflection/v1/reflection.proto`` into the default pool.

    grpcio-reflection ships only v1alpha's descriptor. v1 is the same file under
    another package, so it is derived from v1alpha's; with it in the pool the v1
    name can be advertised and ``grpcurl describe`` answers for it too (PERF.md
    warns against advertising a name whose descriptor is missing)."""
    from google.protobuf import descriptor_pb2, descriptor_pool
    from grpc_reflection.v1alpha import reflection_pb2

    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("grpc/reflection/v1/reflection.proto")
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
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
    pool.Add(proto)


REFLECTED = (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1)


def _mount_reflection_v1(server: grpc.aio.Server) -> None:
    """grpcio-reflection serves only v1alpha; v1 has identical messages, so the
    same servicer answers under the v1 name (``../shared/PERF.md``, Reflection)."""
    from grpc_reflection.v1alpha import reflection_pb2
    from grpc_reflection.v1alpha._async import ReflectionServicer

    _register_reflection_v1_descriptor()
    servicer = ReflectionServicer(REFLECTED)
    handler = grpc.method_handlers_generic_handler(
        REFLECTION_V1,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))


class TesseraServer:
    """One running server: ``start()`` returns the bound port, ``stop()`` drains."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.port = 0
        self.admin_token = ""
        self.engine: Engine | None = None
        self.store: Store | None = None
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()

    async def start(self) -> int:
        cfg = self.config
        self.store = store = await Store.open(cfg.db, synchronous=cfg.sync)
        snapshot = await store.load()
        stored = {m.key: m.value for m in snapshot.of(MetaValue)}
        clock = _clock(cfg, stored)
        with loading():  # the indexes and deadlines of what was loaded stay too
            self.engine = engine = Engine.restore(snapshot, clock, store)
        engine.max_users_per_request = cfg.max_users_per_request
        engine.max_page_size = cfg.max_page_size
        if isinstance(clock, TestClock) and TEST_CLOCK_KEY not in stored:
            await store.commit([MetaValue(TEST_CLOCK_KEY, clock.now().isoformat())])
        self.admin_token = cfg.admin_token or load_or_create_admin_token(cfg.admin_token_path)

        server = grpc.aio.server(
            interceptors=[
                EdgeInterceptor(
                    self.admin_token,
                    engine.resolve_user_key,
                    log_calls=lambda method: (
                        cfg.log_heartbeats or not method.endswith("/Heartbeat")
                    ),
                    user_limits=RateLimits(cfg.user_rate_limit, cfg.user_burst),
                    admin_limits=RateLimits(cfg.admin_rate_limit, cfg.admin_burst),
                )
            ],
            options=[
                ("grpc.max_receive_message_length", cfg.max_message_bytes),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ],
        )
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(engine), server)
        signer = LeaseSigner(
            leases.load_or_create(leases.key_path(cfg.db), engine.now()), engine.terms.lease
        )
        licensing_service_pb2_grpc.add_LicensingServiceServicer_to_server(
            LicensingServicer(engine, signer), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        _mount_reflection_v1(server)
        reflection.enable_server_reflection(REFLECTED, server)
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            client_ca = cfg.tls_client_ca.read_bytes() if cfg.tls_client_ca else None
            credentials = grpc.ssl_server_credentials(
                [(cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())],
                root_certificates=client_ca,
                require_client_auth=client_ca is not None,
            )
            self.port = server.add_secure_port(cfg.listen, credentials)
        else:
            self.port = server.add_insecure_port(cfg.listen)
        if self.port == 0:
            raise OSError(f"could not listen on {cfg.listen}")
        # Deadlines that fell due while the server was down fire before any call
        # is taken, so no call sees the state from before them.
        await engine.start(cfg.heartbeat_flush)
        settle_heap()
        await server.start()
        self._server = server
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            listen=cfg.listen,
            port=self.port,
            db=str(cfg.db),
            test_clock=clock.is_test,
            now=clock.now().isoformat(),
            tls="mutual" if cfg.tls_client_ca else "on" if cfg.tls_cert else "off",
        )
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking calls, finish those under way, write everything out."""
        await self._health.enter_graceful_shutdown()  # NOT_SERVING
        if self._server is not None:
            await self._server.stop(self.config.shutdown_grace if grace is None else grace)
        if self.engine is not None:
            await self.engine.stop()
        if self.store is not None:
            await self.store.close()
        log.info("stopped")


def _banner(server: TesseraServer) -> None:
    host = server.config.listen.rsplit(":", 1)[0] or "127.0.0.1"
    target = f"{host}:{server.port}"
    out = sys.stderr
    print(f"Tessera is serving on {target} (database {server.config.db})", file=out)
    cfg = server.config
    # The token kept beside the database is shown so that an operator can start
    # (README); one the operator passed in is theirs already: never echo it into
    # output that a service manager keeps as a log.
    if cfg.admin_token is not None:
        print("Admin token: as given (--admin-token or TESSERA_ADMIN_TOKEN)", file=out)
        shown = "$TESSERA_ADMIN_TOKEN"
    else:
        shown = server.admin_token
        print(f"Admin token: {shown} (kept in {cfg.admin_token_path})", file=out)
    if cfg.tls_cert is None:
        transport = "-plaintext"
    else:
        transport = "-cacert ca.pem"
        if cfg.tls_client_ca is not None:
            transport += " -cert client.pem -key client-key.pem"
    print("Try:", file=out)
    print(
        f'  grpcurl {transport} -H "authorization: Bearer {shown}" '
        f"{target} tessera.v1.AdminService/GetServerInfo",
        file=out,
        flush=True,
    )


async def run(config: Config) -> int:
    server = TesseraServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except BaseException:
        # Close what did open (the store's worker thread is not a daemon): a start
        # that fails must end the process with an error, not leave it hanging.
        await server.stop()
        raise
    _banner(server)
    await stop.wait()
    log.info("draining")
    await server.stop()
    return 0


def main_async(config: Config) -> Any:
    return run(config)
