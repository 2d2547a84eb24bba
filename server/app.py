"""Wiring: builds the store, engine, servicers and gRPC server from a Config,
and runs the process (health, reflection, signals, drain).

The one place that knows which store adapter serves (``open_store``); the
engine and the servicers see only ``server/store/port.py``'s ``StorePort``."""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from server import leases
from server.api import reflection
from server.api.admin import AdminServicer
from server.api.interceptors import EdgeInterceptor
from server.api.licensing import LicensingServicer
from server.api.limits import RateLimits
from server.clock import Clock, SystemClock, TestClock
from server.config import Config, parse_instant, split_listen
from server.credentials import load_or_create_admin_token
from server.domain.changes import Deleted
from server.domain.meta import MetaValue
from server.engine import Engine
from server.engine.core import TEST_CLOCK_KEY
from server.leases import LeaseSigner
from server.store.loading import loading
from server.store.port import StorePort
from server.store.sqlite import Store
from tessera_api.tessera.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    licensing_service_pb2,
    licensing_service_pb2_grpc,
)

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
# Written at the first start on the real clock; a test-clock database has
# TEST_CLOCK_KEY instead. Either tells a later start which clock the data is on.
REAL_CLOCK_KEY = "real_clock_since"


class StartRefused(Exception):
    """The server will not start as configured; the message says why and what to do."""


async def open_store(config: Config) -> StorePort:
    """The store ``config`` asks for, open and migrated: the SQLite file at
    ``config.db`` (the embedded default)."""
    return await Store.open(config.db, synchronous=config.sync)


def _clock(config: Config, stored: dict[str, str], has_data: bool) -> Clock:
    """The clock the database is on. A test-clock database resumes from its
    stored time (RULES §7) and needs --test-clock: without it, its time would
    jump to today. A database that ran on the real clock refuses a test clock,
    which would move a production database's time."""
    saved = stored.get(TEST_CLOCK_KEY)
    if config.test_clock is None:
        if saved is not None and not config.end_test_clock:
            raise StartRefused(
                f"{config.db} is a test-clock database, its clock at {saved}: start with "
                "--test-clock to resume it there (the flag's instant is then ignored), "
                "or with --end-test-clock to move it to the real clock for good, or use "
                "a fresh --db"
            )
        return SystemClock()
    if saved is None and (REAL_CLOCK_KEY in stored or has_data):
        since = stored.get(REAL_CLOCK_KEY)
        raise StartRefused(
            f"{config.db} runs on the real clock"
            + (f" (since {since})" if since else "")
            + ": a test clock would move its time; start without --test-clock, "
            "or use a fresh --db for test-clock mode"
        )
    return TestClock(parse_instant(saved) if saved is not None else config.test_clock)


def _clock_mode(clock: Clock, stored: dict[str, str]) -> list[object]:
    """What records the database's clock, if it is not recorded yet (or the
    test clock was just ended)."""
    changes: list[object] = []
    if not clock.is_test and TEST_CLOCK_KEY in stored:
        changes.append(Deleted(MetaValue(TEST_CLOCK_KEY, stored[TEST_CLOCK_KEY])))
    mode_key = TEST_CLOCK_KEY if clock.is_test else REAL_CLOCK_KEY
    if mode_key not in stored or changes:
        changes.append(MetaValue(mode_key, clock.now().isoformat()))
    return changes


def _unavailable(listen: str) -> str | None:
    """Why ``listen`` cannot be bound (e.g. "address already in use"), or None.

    Asked with a plain socket before gRPC binds, so that a port in use is one
    clear line and not gRPC's error log: no address of the host binds, with
    SO_REUSEADDR as gRPC sets it."""
    try:
        host, port = split_listen(listen)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (ValueError, OSError) as exc:
        return str(exc)
    if port == 0:
        return None
    reason = "no address to bind"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                reason = (exc.strerror or str(exc)).lower()
                continue
        return None
    return reason


def _bind(server: grpc.aio.Server, cfg: Config) -> int:
    """Listen on ``cfg.listen`` (TLS if configured); the bound port."""
    reason = _unavailable(cfg.listen)
    port = 0
    if reason is None:
        try:
            if cfg.tls_cert is not None and cfg.tls_key is not None:
                client_ca = cfg.tls_client_ca.read_bytes() if cfg.tls_client_ca else None
                credentials = grpc.ssl_server_credentials(
                    [(cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())],
                    root_certificates=client_ca,
                    require_client_auth=client_ca is not None,
                )
                port = server.add_secure_port(cfg.listen, credentials)
            else:
                port = server.add_insecure_port(cfg.listen)
        except RuntimeError:  # gRPC's "Failed to bind": taken between the probe and now
            reason = "address not available"
    if port == 0:
        raise StartRefused(f"cannot listen on {cfg.listen}: {reason or 'address not available'}")
    return port


class _LateEdge(grpc.aio.ServerInterceptor):
    """The edge interceptor, given once the state is loaded.

    gRPC takes its interceptors when the server is made, and the port is bound
    before the database is opened; the real edge needs the admin token and the
    engine's user keys, known only after. No call is taken before it is set."""

    def __init__(self) -> None:
        self.edge: EdgeInterceptor | None = None

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        if self.edge is None:  # never: the server starts after the edge is set
            return None
        return await self.edge.intercept_service(continuation, details)


class TesseraServer:
    """One running server: ``start()`` returns the bound port, ``stop()`` drains."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.port = 0
        self.admin_token = ""
        self.admin_token_made = False  # made by this start (then shown once)
        self.engine: Engine | None = None
        self.store: StorePort | None = None
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()

    async def start(self) -> int:
        """Bind the port, then open and load the database, then serve: a port
        in use or a refused start leaves the database as it was."""
        cfg = self.config
        edge = _LateEdge()
        self._server = server = grpc.aio.server(
            interceptors=[edge],
            options=[
                ("grpc.max_receive_message_length", cfg.max_message_bytes),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.port = _bind(server, cfg)
        self.store = store = await open_store(cfg)
        snapshot = await store.load()
        stored = {m.key: m.value for m in snapshot.of(MetaValue)}
        has_data = any(rows for kind, rows in snapshot.objects.items() if kind is not MetaValue)
        clock = _clock(cfg, stored, has_data)
        with loading():  # the indexes and deadlines of what was loaded stay too
            self.engine = engine = Engine.restore(
                snapshot,
                clock,
                store,
                max_users_per_request=cfg.max_users_per_request,
                max_page_size=cfg.max_page_size,
            )
        await store.commit(_clock_mode(clock, stored))
        if cfg.admin_token is not None:
            self.admin_token = cfg.admin_token
        else:
            self.admin_token_made = not cfg.admin_token_path.exists()
            self.admin_token = load_or_create_admin_token(cfg.admin_token_path)
        edge.edge = EdgeInterceptor(
            self.admin_token,
            engine.resolve_user_key,
            log_calls=lambda method: cfg.log_heartbeats or not method.endswith("/Heartbeat"),
            user_limits=RateLimits(cfg.user_rate_limit, cfg.user_burst),
            admin_limits=RateLimits(cfg.admin_rate_limit, cfg.admin_burst),
        )
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(engine), server)
        signer = LeaseSigner(
            leases.load_or_create(leases.key_path(cfg.db), engine.now()), engine.terms.lease
        )
        licensing_service_pb2_grpc.add_LicensingServiceServicer_to_server(
            LicensingServicer(engine, signer), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable(server, SERVICE_NAMES)
        # Deadlines that fell due while the server was down fire before any call
        # is taken, so no call sees the state from before them.
        await engine.start(cfg.heartbeat_flush)
        settle_heap()
        await server.start()
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
    # A token is shown once, when this start made it, so that an operator can
    # begin (README); after that the banner says where it is kept, never the
    # token: output a service manager keeps as a log must not hold it. One the
    # operator passed in is theirs already.
    path = cfg.admin_token_path
    if cfg.admin_token is not None:
        print("Admin token: as given (--admin-token or TESSERA_ADMIN_TOKEN)", file=out)
        shown = "$TESSERA_ADMIN_TOKEN"
    elif server.admin_token_made:
        shown = server.admin_token
        print(f"Admin token: {shown} (new, shown only now; kept owner-only in {path})", file=out)
    else:
        print(f"Admin token: kept owner-only in {path}; read it with: cat {path}", file=out)
        shown = f"$(cat {path})"
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
