"""Wiring: builds the store, engine, servicers and gRPC server from a Config,
and runs the process (health, reflection, signals, drain).

The one place that knows which store adapter serves (``open_store``); the
engine and the servicers see only ``server/store/port.py``'s ``StorePort``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import asyncpg
import grpc
import structlog
from grpc_health.v1 import health_pb2

from server import leases, loops
from server.api import reflection
from server.api.admin import AdminServicer
from server.api.admission import Admission
from server.api.audit import AuditRecorder
from server.api.health import Health
from server.api.interceptors import EdgeInterceptor
from server.api.licensing import LicensingServicer
from server.api.limits import RateLimits
from server.api.scopes import EngineLookup
from server.clock import MAX_STAND_STILL, Clock, SystemClock, TestClock, monotonic
from server.config import (
    Config,
    every_address,
    node_id,
    oserror_words,
    parse_instant,
    split_listen,
)
from server.credentials import load_or_create_admin_token
from server.domain.changes import Deleted
from server.domain.meta import MetaValue
from server.domain.terms import LEASE, Terms
from server.engine import Engine
from server.engine.core import TEST_CLOCK_KEY
from server.front import SILENT_AFTER, Back
from server.ha import secrets
from server.ha.election import Election, NodeIdInUse
from server.ha.gate import Gate, GenericOnly, NodeInfo, Term, handlers
from server.leases import LeaseSigner
from server.listen import SERVICE_NAMES, StartRefused, bind, grpc_server
from server.metrics import Metrics
from server.store import port
from server.store.loading import loading
from server.store.port import Snapshot, StorePort
from server.store.postgres import (
    DATABASE_GONE,
    Fence,
    PostgresStore,
    hidden,
    migrate,
    shown_url,
)
from server.store.sqlite import Store

if TYPE_CHECKING:
    from portal.serve import PortalServer
from tessera_api.tessera.v1 import (
    admin_service_pb2_grpc,
    licensing_service_pb2_grpc,
)

log = structlog.get_logger()

#: A store that failed, or a database out of reach.
_STORE_GONE: tuple[type[Exception], ...] = (port.StoreFailed, *DATABASE_GONE)

# The cyclic collector's thresholds while serving (CPython's default: 700, 10,
# 10). Sessions, meters and devices live for hours, so every Entitle adds
# objects that the collector's full passes walk again: at the default, a pass
# came every ~10 gen-1 passes once the old generation had grown by a quarter,
# 27 passes (10.8 s, a third of the time) over 200,000 Entitles, each pause as
# long as the whole heap (176 ms at 100,000 sessions). A full pass now waits
# for 1,000 gen-1 passes (and still for that quarter).
# (`python -m benchmarks.million_sessions --sessions 200000`: Entitle 168 ->
# 131 us, p99 635 -> 191 ms; see the README.) A young pass waits for 7,000 new
# objects, not 700: most of a call's objects die with it, so a pass finds few,
# and in the Entitle+Release cycle the collector's time fell from 1.6 % of a
# core to 0.15 % (20,000 users, 15 s timed by gc.callbacks; issue 17;
# docs/performance-log.md, "The collector's thresholds").
GC_THRESHOLDS = (7000, 10, 1000)


def settle_heap() -> None:
    """Before the server takes calls: what was loaded lives as long as the
    server, so it is frozen out of the collector's passes (``gc.freeze``), and
    the passes over the old generation become rare (``GC_THRESHOLDS``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# Written at the first start on the real clock; a test-clock database has
# TEST_CLOCK_KEY instead. Either tells a later start which clock the data is on.
REAL_CLOCK_KEY = "real_clock_since"


async def open_store(
    config: Config,
    fence: Fence | None = None,
    on_failed: Callable[[BaseException], None] | None = None,
    node_id: str = "",
) -> StorePort:
    """The store ``config`` asks for, open and migrated: the SQLite file at
    ``config.db`` (the embedded default), or the PostgreSQL database at its URL,
    every write transaction of which first runs ``fence`` (the election's), and
    any failed write of which ``on_failed`` is told."""
    if isinstance(config.db, str):
        return await PostgresStore.open(
            config.db,
            fence=fence,
            secrets_dir=config.secrets_dir,
            on_failed=on_failed,
            node_id=node_id,
        )
    return await Store.open(config.db, synchronous=config.sync, on_failed=on_failed)


def _clock(config: Config, stored: dict[str, str], has_data: bool) -> Clock:
    """The clock the database is on. A test-clock database resumes from its
    stored time (RULES §7) and needs --test-clock: without it, its time would
    jump to today. A database that ran on the real clock refuses a test clock,
    which would move a production database's time."""
    saved = stored.get(TEST_CLOCK_KEY)
    if config.test_clock is None:
        if saved is not None and not config.end_test_clock:
            raise StartRefused(
                f"{shown_db(config.db)} is a test-clock database, its clock at {saved}: start with "
                "--test-clock to resume it there (the flag's instant is then ignored), "
                "or with --end-test-clock to move it to the real clock for good, or use "
                "a fresh --db"
            )
        clock = SystemClock()
        machine = clock.now()
        if saved is not None and parse_instant(saved) - machine > MAX_STAND_STILL:
            # Its windows, graces and packs would end that far in the future on the
            # real clock (a user charged again only then), and a later start would
            # find the stored data far ahead of the machine (``not_before``).
            raise StartRefused(
                f"{shown_db(config.db)}'s test clock is at {saved}, ahead of this machine's "
                f"clock ({machine.isoformat()}): moved to the real clock, what it holds "
                "would fall due that far in the future; end it once the machine's clock has "
                "passed that instant, or use a fresh --db"
            )
        return clock
    if saved is None and (REAL_CLOCK_KEY in stored or has_data):
        since = stored.get(REAL_CLOCK_KEY)
        raise StartRefused(
            f"{shown_db(config.db)} runs on the real clock"
            + (f" (since {since})" if since else "")
            + ": a test clock would move its time; start without --test-clock, "
            "or use a fresh --db for test-clock mode"
        )
    return TestClock(parse_instant(saved) if saved is not None else config.test_clock)


async def _not_before_the_stored(clock: Clock, store: StorePort, snapshot: Snapshot) -> None:
    """The real clock of a start (a lone server's, or a standby's taking over)
    never goes back from the latest instant the stored data says something was
    done (``server/clock.py``): on a machine whose clock is behind it, the
    server's time stands there, with one warning, until the wall clock passes it.
    So also when the test clock is ended (--end-test-clock) up to an hour ahead of
    the machine's (further is refused in ``_clock``): nothing is dated before the
    test clock's last entries, which later starts read as the chains' heads."""
    if not isinstance(clock, SystemClock):
        return
    latest = await store.latest_instant(snapshot)
    if latest is not None:
        clock.not_before(latest)


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


#: The meta key of the terms the data was last served by (``_terms_in_force``).
TERMS_KEY = "terms"


def _terms_in_force(terms: Terms, stored: dict[str, str]) -> list[object]:
    """The terms this start serves by, recorded with the data, if they are not
    recorded yet. A change since the last start is logged (``terms_changed``,
    with both): a server given other terms than before, or a standby started
    with other terms than the active it takes over from, is seen in the log."""
    shown = terms.shown()
    text = _terms_text(terms)
    was = stored.get(TERMS_KEY)
    if was == text:
        return []
    if was is not None:
        log.warning("terms_changed", was=json.loads(was), now=shown)
    return [MetaValue(TERMS_KEY, text)]


def _terms_text(terms: Terms) -> str:
    """``terms`` as the data records them (``TERMS_KEY``)."""
    return json.dumps(terms.shown(), sort_keys=True)


def _terms_before(terms: Terms, stored: dict[str, str]) -> Terms | None:
    """The terms the data was last served by, if they are other than ``terms``: read
    as recorded, though this version's checks may refuse them for a start (a record
    this version cannot read at all is taken as no change)."""
    was = stored.get(TERMS_KEY)
    if was is None or was == _terms_text(terms):
        return None
    try:
        return Terms.recorded(json.loads(was))
    except ValueError:  # (json's errors are ValueErrors too)
        return None


def _loopback(listen: str, port: int) -> str:
    """Where a client in this process reaches the gRPC port: the listen address, or
    loopback when it listens on every address."""
    host = split_listen(listen)[0]  # (no host: 127.0.0.1)
    if every_address(host):
        return f"[::1]:{port}" if ":" in host else f"127.0.0.1:{port}"
    return _address(listen, port)


def _address(listen: str, port: int) -> str:
    """The listen address with the port bound (``host:port``, ``[::1]:port``)."""
    return f"{listen.rpartition(':')[0] or '127.0.0.1'}:{port}"


def shown_db(db: Path | str) -> str:
    """The database as it may be printed and logged: a URL without its passwords."""
    return shown_url(db) if isinstance(db, str) else str(db)


def cannot_open(url: str, exc: BaseException) -> str:
    """Why the database at ``url`` cannot be opened, in one line, without its passwords."""
    if type(exc) is ValueError:  # asyncpg could not read the URL: not quoted, since
        # what it says it could not read may be a piece of the password
        why = (
            "the URL cannot be read; in a password, write # / ? @ : and % "
            "percent-encoded (%23 %2F %3F %40 %3A %25)"
        )
    else:
        why = hidden(str(exc) or type(exc).__name__, url)
    return f"cannot open {shown_db(url)}: {why}"


class TesseraServer:
    """One running server: ``start()`` returns the bound port, ``stop()`` drains.

    On SQLite it is the active server from the start. On PostgreSQL it starts
    as a standby (RULES H1): it binds its port, answers as ``server/ha/gate.py``
    says, and takes part in the election (``server/ha/election.py``); elected,
    it opens the store fenced by its epoch, loads the state, fires the
    deadlines that fell due meanwhile, and only then reports SERVING. Losing
    its place (a renewal that fails past the lease, a fenced write), it stops
    answering as active at once, drops its engine and store, and is a standby
    again, ready to win anew."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.port = 0
        self.advertise = ""
        self.node_id = ""
        self.admin_token = ""
        self.admin_token_made = False  # made by this start (then shown once)
        self.engine: Engine | None = None
        self.store: StorePort | None = None
        self.election: Election | None = None
        self.gate = Gate(self._node, lambda: self.admin_token)
        #: A term that could not begin, or a store that failed: the process ends.
        self.failure: BaseException | None = None
        self.failed = asyncio.Event()
        # Where calls come in: this process's gRPC server, or (--front-process) the front's.
        self._server: grpc.aio.Server | Back | None = None
        self._front: Back | None = None
        self._health = Health()
        # stop() begun: health says NOT_SERVING until the port closes, even if this
        # server is elected meanwhile (Health ignores sets once shutting down; the
        # front is told nothing more).
        self._draining = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.phases: dict[str, float] = {}  # seconds of the last term's start, by phase
        self.portal: PortalServer | None = None  # --http-listen, bound by start()
        self.metrics = Metrics(self) if config.metrics_listen else None
        self.gate.metrics = self.metrics  # a standby's calls are counted too
        self.metrics_port = 0  # bound by start() (--metrics-listen)

    def mount(self, server: grpc.aio.Server) -> None:
        """Health, reflection and Tessera's services on ``server``: the session calls
        registered, each its own queue of calls not yet taken in; all the rest sharing
        one (``ha/gate.py``'s docstring: health's generated code would register it)."""
        only_generic = cast(grpc.aio.Server, GenericOnly(server))  # a stand-in, by design
        reflection.add_health(self._health, only_generic)  # its requests parsed strictly
        reflection.enable(server, SERVICE_NAMES)
        self.gate.register(server)

    def _node(self) -> NodeInfo:
        election = self.election
        if election is None:
            return NodeInfo(self.node_id, True, self.advertise)
        active = self.gate.term is not None and self.gate.term.holds()
        starting = not active and election.leading  # elected, its term not begun yet
        return NodeInfo(self.node_id, active, election.leader_address(), starting)

    @property
    def front_pid(self) -> int:
        """Its front process's (``--front-process``), else 0 (metrics)."""
        return self._front.pid if self._front is not None else 0

    def is_active(self) -> bool:
        """Whether this server answers calls as the active one (metrics)."""
        return self.engine is not None and self._node().active

    async def start(self) -> int:
        """Bind the port, then (SQLite) open and load the database and serve, or
        (PostgreSQL) serve as a standby and join the election: a port in use or
        a refused start leaves the database as it was."""
        cfg = self.config
        server: grpc.aio.Server | Back
        if cfg.front_process:
            self._server = server = self._front = Back(self.gate)
            self.port = await server.open(cfg)
            server.ended.add_done_callback(self._front_ended)
        else:
            self._server = server = grpc_server(cfg, [self.gate])
            self.port = bind(server, cfg)
            self.mount(server)
        self._bind_portal()
        if self.metrics is not None and cfg.metrics_listen is not None:
            try:
                self.metrics_port = await self.metrics.serve(cfg.metrics_listen)
            except OSError as exc:
                reason = oserror_words(exc)
                raise StartRefused(
                    f"cannot serve metrics on {cfg.metrics_listen}: {reason}"
                ) from exc
        self.advertise = cfg.advertise or _address(cfg.listen, self.port)
        self.node_id = cfg.node_id or self.advertise
        if not isinstance(cfg.db, str):
            self._install(*await self._activate(None))
            await server.start()
            await self._start_portal()
            assert self.engine is not None  # noqa: S101 (just made by _activate)
            await self._serving(self.engine)
            return self.port
        if cfg.node_id is None:  # the advertised address, checked as --node-id is
            try:
                node_id(self.node_id)
            except ValueError as exc:
                raise StartRefused(
                    f"this server's node id would be its advertised address, and {exc}: "
                    "give it a --node-id (each server of one database its own)"
                ) from None
        # (the election's row is made by the migrations)
        await _migrate(cfg.db, cfg.secrets_dir, self.node_id, cfg)
        self._load_admin_token()
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        await self._start_portal()
        self.election = election = Election(
            cfg.db,
            self.node_id,
            self.advertise,
            lease=cfg.leader_lease,
            interval=cfg.leader_lease / 5,
            on_elected=lambda epoch: self._spawn(self._take_over(election, epoch)),
            on_lost=self._lost,
        )
        # On a thread of its own: a busy loop must not cost the active its lease.
        try:
            await election.start_thread()
        except NodeIdInUse as exc:
            raise StartRefused(str(exc)) from None
        log.info(
            "standby",
            listen=cfg.listen,
            port=self.port,
            node_id=self.node_id,
            advertise=self.advertise,
            db=shown_db(cfg.db),
        )
        return self.port

    def _bind_portal(self) -> None:
        """``--http-listen``: the administrators' web portal, bound now (a port in use
        refuses the start before the database is opened). It runs in this server's event
        loop (``portal/serve.py`` says why) and calls this server's AdminService over
        loopback gRPC with each signed-in administrator's credential, like any client."""
        cfg = self.config
        if cfg.http_listen is None:
            return
        if cfg.tls_cert is not None:
            raise StartRefused(
                "--http-listen serves the portal beside a plaintext gRPC port; with TLS, run "
                "it on its own: python -m portal --server HOST:PORT --tls-ca CA.pem"
            )
        from portal.serve import PortalServer  # starlette and uvicorn load only when asked

        try:
            self.portal = PortalServer(_loopback(cfg.listen, self.port), cfg.http_listen)
        except OSError as exc:
            reason = oserror_words(exc)
            raise StartRefused(f"cannot serve the portal on {cfg.http_listen}: {reason}") from exc

    async def _start_portal(self) -> None:
        if self.portal is not None:
            await self.portal.start()

    def _load_admin_token(self) -> None:
        cfg = self.config
        if cfg.admin_token is not None:
            self.admin_token = cfg.admin_token
        elif not self.admin_token:
            self.admin_token_made = not cfg.admin_token_path.exists()
            self.admin_token = load_or_create_admin_token(cfg.admin_token_path)

    async def _activate(self, epoch: int | None) -> tuple[Engine, StorePort, Term]:
        """Open the store (fenced by ``epoch``'s lease), load the state, fire
        what fell due meanwhile: the term, for ``_install`` to hand calls to."""
        cfg = self.config
        election = self.election
        marks = [monotonic()]
        if isinstance(cfg.db, str):  # the files may have changed since the start
            await _same_secrets(cfg, self.node_id)
        store = await (
            open_store(cfg, on_failed=self._alone_store_failed)
            if election is None
            else open_store(
                cfg, election.fence_for(epoch), self._store_failed(election, epoch), self.node_id
            )
        )
        try:
            marks.append(monotonic())
            snapshot = await store.load()
            marks.append(monotonic())
            stored = {m.key: m.value for m in snapshot.of(MetaValue)}
            has_data = any(rows for kind, rows in snapshot.objects.items() if kind is not MetaValue)
            clock = _clock(cfg, stored, has_data)
            await _not_before_the_stored(clock, store, snapshot)
            with loading():  # the indexes and deadlines of what was loaded stay too
                engine = Engine.restore(
                    snapshot,
                    clock,
                    store,
                    cfg.terms,
                    max_users_per_request=cfg.max_users_per_request,
                    max_page_size=cfg.max_page_size,
                    terms_before=_terms_before(cfg.terms, stored),
                )
            marks.append(monotonic())
            await store.commit(_clock_mode(clock, stored) + _terms_in_force(cfg.terms, stored))
            self._load_admin_token()
            edge = EdgeInterceptor(
                self.admin_token,
                engine.resolve_user_key,
                lookup=EngineLookup(engine),
                audit=AuditRecorder(engine.audit, self.admin_token),
                log_calls=lambda method: cfg.log_heartbeats or not method.endswith("/Heartbeat"),
                max_entries=cfg.max_users_per_request,
                user_limits=RateLimits(cfg.user_rate_limit, cfg.user_burst),
                admin_limits=RateLimits(cfg.admin_rate_limit, cfg.admin_burst),
                metrics=self.metrics,
                admission=Admission(cfg.max_calls_in_flight),
                catch_up=engine.caught_up,
            )
            try:
                keys = leases.load_or_create(leases.key_path(cfg.secrets_base), engine.now())
            except leases.DamagedKeys as exc:
                raise StartRefused(str(exc)) from None
            signer = LeaseSigner(keys, LEASE, cfg.lease_batch_window)
            term = Term(
                edge,
                handlers(
                    (
                        admin_service_pb2_grpc.add_AdminServiceServicer_to_server,
                        AdminServicer(engine, self._node),
                    ),
                    (
                        licensing_service_pb2_grpc.add_LicensingServiceServicer_to_server,
                        LicensingServicer(engine, signer),
                    ),
                ),
            )
            if election is not None:
                term.holds = lambda: election.leading and election.epoch == epoch
                term.leader = election.leader_address
                term.on_store_failed = lambda: (
                    election.give_up("a write failed") if election.epoch == epoch else None
                )
            # Deadlines that fell due while no server was active fire before any
            # call is taken, so no call sees the state from before them.
            await engine.start(cfg.heartbeat_flush)
            settle_heap()
            marks.append(monotonic())
        except BaseException:
            await _quietly(store.close())
            raise
        # Where a start's time goes (the failover benchmark prints it).
        phases = ("open", "load", "restore", "start")
        spans = pairwise(marks)
        self.phases = {p: round(b - a, 3) for p, (a, b) in zip(phases, spans, strict=True)}
        return engine, store, term

    def _install(self, engine: Engine, store: StorePort, term: Term) -> None:
        """From now on the gate hands calls to this term."""
        self.engine, self.store = engine, store
        term.stopping = self.failure is not None  # a store that failed while it started
        self.gate.term = term

    @staticmethod
    def _store_failed(election: Election, epoch: int | None) -> Callable[[BaseException], None]:
        """What the store of ``epoch``'s term does when a write fails: any write,
        also one no call waits for (a timer's, the heartbeat flush), steps the
        server down at once, so that a standby takes over (RULES H2). A fenced
        write has stepped it down already; a later term ignores an old store."""

        def failed(exc: BaseException) -> None:
            if election.epoch == epoch and not isinstance(exc, port.NotLeader):
                election.give_up(f"a write failed: {str(exc) or type(exc).__name__}")

        return failed

    def _alone_store_failed(self, exc: BaseException) -> None:
        """What a server alone on its database (SQLite) does when a write fails
        (a full disk, an I/O error): it stops, with an error, for its supervisor or
        operator to start it again once the disk is mended. Memory is then ahead
        of the database, which every later write would fail to reach; going on
        would answer calls (Heartbeats from memory) whose effects a restart
        forgets. Started again, it resumes from its last commit, and the calls cut
        meanwhile are repeated with their request ids (``ha/gate.py``)."""
        if self.failure is not None:
            return
        db, reason = shown_db(self.config.db), str(exc) or type(exc).__name__
        log.error("store_failed", db=db, error=reason)
        if (term := self.gate.term) is not None:
            term.stopping = True  # no call answered from memory from now on
        self.failure = StartRefused(
            f"a write to {db} failed ({reason}): the server stops, "
            "since what it holds in memory can no longer be stored; mend the disk (room, "
            "permissions) and start it again, and it resumes from its last commit"
        )
        self.failed.set()

    async def _serving(self, engine: Engine) -> None:
        cfg = self.config
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving",
            listen=cfg.listen,
            port=self.port,
            db=shown_db(cfg.db),
            node_id=self.node_id,
            test_clock=engine.clock.is_test,
            now=engine.now().isoformat(),
            tls="mutual" if cfg.tls_client_ca else "on" if cfg.tls_cert else "off",
            event_loop=loops.name_of(asyncio.get_running_loop()),
            **({"front_pid": self._front.pid} if self._front is not None else {}),
            **({"metrics_port": self.metrics_port} if self.metrics_port else {}),
        )

    async def _take_over(self, election: Election, epoch: int) -> None:
        """Elected: begin a term; lost meanwhile, stay a standby. A term loaded for
        an epoch this server no longer holds is dropped, its own engine and store
        alone: the server may hold a later epoch's term by then (lost and elected
        again while this one was loading), which goes on serving."""
        began = monotonic()
        try:
            engine, store, term = await self._activate(epoch)
        except port.NotLeader:
            log.warning("lost the lead while taking over", epoch=epoch)
            return
        except _STORE_GONE as exc:
            log.error("could not take over", epoch=epoch, error=str(exc) or type(exc).__name__)
            election.give_up("the store could not be opened")
            return
        except Exception as exc:  # a refused start (the clock mode...): the process ends
            self.failure = exc
            self.failed.set()
            return
        if election.epoch != epoch:
            log.warning("lost the lead while taking over", epoch=epoch)
            self._spawn(self._drop(engine, store))
            return
        if self.engine is not None:  # an earlier term's, not yet told it was lost
            self._spawn(self._drop(self.engine, self.store))
        self._install(engine, store, term)
        await self._serving(engine)
        log.info("took over", epoch=epoch, seconds=round(monotonic() - began, 3), **self.phases)

    def _lost(self) -> None:
        """Stop answering as active at once (the gate), then drop the term."""
        self.gate.term = None
        engine, store, self.engine, self.store = self.engine, self.store, None, None
        self._spawn(self._step_down(engine, store))

    async def _step_down(self, engine: Engine | None, store: StorePort | None) -> None:
        """Drop a term that lost its place. Its writes are fenced (lost, never money),
        and the database may not answer at all (a partition, a paused database): the
        store is closed first, its writer cut after a round of the election, so that
        the calls waiting on a commit leave as ``NOT_LEADER`` (outcome unknown: the
        client repeats them on the active) rather than wait for the database, and the
        engine's last flush then fails at once."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._drop(engine, store)
        if self.gate.term is None:  # (not elected again meanwhile)
            log.info("standby", node_id=self.node_id, port=self.port)

    async def _drop(self, engine: Engine | None, store: StorePort | None) -> None:
        """Close a term's store, then stop its engine (``_step_down``)."""
        if isinstance(store, PostgresStore):
            await _quietly(store.close(timeout=self.config.leader_lease / 5))
        elif store is not None:
            await _quietly(store.close())
        if engine is not None:
            await _quietly(engine.stop())
        gc.unfreeze()  # the old term's objects may be collected now

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _front_ended(self, ended: asyncio.Future[int | None]) -> None:
        """The front process ended without being told to: the server stops, with an
        error, for a supervisor to start both again (``server/front.py``)."""
        code = ended.result()
        log.error("front_process_ended", exit_code=code)
        front = self._front
        if front is not None and front.killed:  # by this process: it had gone silent
            how = f"killed by the server: it answered nothing for {SILENT_AFTER:g} s"
        elif code is None or code < 0:
            how = "killed by a signal"
        else:
            how = f"exit code {code}"
        self.failure = StartRefused(
            f"the front process (--front-process) ended unasked ({how}): "
            "the server stops; start it again"
        )
        self.failed.set()

    async def _set_health(self, status: Any) -> None:
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)
        if self._front is not None and not self._draining:
            self._front.health(status)

    async def stop(self, grace: float | None = None, drain_delay: float = 0.0) -> None:
        """Say NOT_SERVING, go on answering for ``drain_delay`` seconds (``--drain-delay``:
        a load balancer sees the health first), stop taking calls, finish those under
        way, write everything out, and (PostgreSQL) hand the lead over at once."""
        if self.portal is not None:  # no new page while the calls drain
            await self.portal.stop()
        self._draining = True
        await self._health.enter_graceful_shutdown()  # NOT_SERVING
        if self._front is not None:
            self._front.health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if drain_delay > 0:
            log.info("not_serving", port_closes_in_seconds=drain_delay)
            await asyncio.sleep(drain_delay)
        await self._health.close()  # its Watch streams end: the stop waits for none
        if self._front is None:  # (the front closes so itself, ``server/front.py``)
            await self.gate.closing.close()  # gRPC's queue emptied first: its stop cancels bare
        if self._server is not None:
            await self._server.stop(self.config.shutdown_grace if grace is None else grace)
        for task in list(self._tasks):
            task.cancel()
            await _quietly(task)
        self.gate.term = None
        if self.engine is not None:
            # Its last flush fails on a store that failed (logged, and the process
            # ends with that failure); the store is closed all the same: its worker
            # thread is not a daemon, and left open it would keep the process alive.
            await _quietly(self.engine.stop())
        if self.store is not None:
            await self.store.close()
        if self.election is not None:
            await self.election.stop()
        if self.metrics is not None:
            await self.metrics.close()
        log.info("stopped")


async def _migrate(
    url: str, secrets_dir: Path | None = None, node_id: str = "", config: Config | None = None
) -> None:
    """Bring the database's schema up to this release's and (``secrets_dir``) check
    that it is the database's secrets directory, before any file is made there
    (``server/ha/secrets.py``), on one connection; or refuse to start. With
    ``config``, its clock too (``_clock``): a standby on the other clock than the
    data's would stand by looking healthy and, elected, refuse to serve."""
    try:
        conn = await asyncpg.connect(url, timeout=30)
        try:
            await migrate(conn)
            if secrets_dir is not None:
                await secrets.check(conn, secrets_dir, node_id)
            if config is not None:
                rows = await conn.fetch(
                    "SELECT key, value FROM meta WHERE key = ANY($1::text[])",
                    [TEST_CLOCK_KEY, REAL_CLOCK_KEY],
                )
                has_data = await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM teams) OR EXISTS (SELECT 1 FROM products)"
                )
                _clock(config, {r["key"]: r["value"] for r in rows}, bool(has_data))
        finally:
            await conn.close()
    except secrets.SecretsMismatch as exc:
        raise StartRefused(str(exc)) from None
    except (
        OSError,
        TimeoutError,
        asyncpg.PostgresError,
        asyncpg.ClientConfigurationError,  # a URL parameter asyncpg cannot take (sslmode=...)
        ValueError,  # a URL it cannot read (a port that is not a number...)
        port.StoreFailed,
    ) as exc:
        raise StartRefused(cannot_open(url, exc)) from None


async def _same_secrets(cfg: Config, node_id: str) -> None:
    """Elected: refuse to serve on a secrets directory other than the database's (its
    files may have changed since the start); a database error is the caller's."""
    assert isinstance(cfg.db, str)  # noqa: S101 (PostgreSQL only)
    conn = await asyncpg.connect(cfg.db, timeout=30)
    try:
        await secrets.check(conn, cfg.secrets_dir, node_id)
    except secrets.SecretsMismatch as exc:
        raise StartRefused(str(exc)) from None
    finally:
        await conn.close()


async def _quietly(work: Awaitable[object]) -> None:
    """Await ``work``; a store that fails or a task cancelled is logged, not raised."""
    try:
        await work
    except _STORE_GONE as exc:
        log.warning("on the way out", error=str(exc) or type(exc).__name__)
    except asyncio.CancelledError:
        pass


def _banner(server: TesseraServer) -> None:
    host = server.config.listen.rsplit(":", 1)[0] or "127.0.0.1"
    target = f"{host}:{server.port}"
    out = sys.stderr
    role = "serving" if server.election is None else "a standby, in the election"
    print(f"Tessera is {role} on {target} (database {shown_db(server.config.db)})", file=out)
    if server.portal is not None:
        shown_portal = f"{server.portal.url} (sign in with the admin token or an admin key)"
        print(f"Portal: {shown_portal}", file=out)
    if server.metrics_port:
        metrics_host = (server.config.metrics_listen or "").rsplit(":", 1)[0] or "127.0.0.1"
        print(f"Metrics: http://{metrics_host}:{server.metrics_port}/metrics", file=out)
    cfg = server.config
    # A token is shown once, when this start made it, and only to a terminal, so
    # that an operator can begin (README); otherwise the banner says where it is
    # kept, never the token: output a service manager or a pipe keeps as a log
    # (journald, a log shipper) must not hold it. One the operator passed in is
    # theirs already.
    path = cfg.admin_token_path
    if cfg.admin_token is not None:
        print("Admin token: as given (--admin-token or TESSERA_ADMIN_TOKEN)", file=out)
        shown = "$TESSERA_ADMIN_TOKEN"
    elif server.admin_token_made and out.isatty():
        shown = server.admin_token
        print(f"Admin token: {shown} (new, shown only now; kept owner-only in {path})", file=out)
    else:
        new = "new, " if server.admin_token_made else ""
        print(f"Admin token: {new}kept owner-only in {path}; read it with: cat {path}", file=out)
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
    # SIGHUP too: a closed terminal or ssh session drains the server, as Ctrl-C
    # does, instead of killing it with its calls and heartbeat history unwritten.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    stopped = asyncio.ensure_future(stop.wait())
    starting = asyncio.ensure_future(server.start())
    gave_up = False
    try:
        # A stop asked for while the server starts (a long load) gives the start
        # up then, rather than once it is done and has served for a moment.
        await asyncio.wait((starting, stopped), return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            gave_up = True
            starting.cancel()
        await starting
    except BaseException as exc:
        # Close what did open (the store's worker thread is not a daemon): a start
        # that fails must end the process with an error, not leave it hanging.
        stopped.cancel()
        if not starting.done():  # this call itself was cancelled
            starting.cancel()
            await _quietly(starting)
        await server.stop()
        me = asyncio.current_task()
        if gave_up and starting.cancelled() and not (me is not None and me.cancelling()):
            log.info("stopped while starting")
            return 0
        if isinstance(exc, port.StoreFailed) and server.failure is not None:
            # The start's own commit failed (a disk with room to open the database but
            # not to write): the one-line refusal store_failed built, as for a write
            # that fails later.
            raise server.failure from None
        raise
    asked = False
    try:
        # The banner goes to a terminal that may close, or a pipe nobody reads any
        # more: the server serves on (its log lines are dropped the same way).
        with contextlib.suppress(OSError):
            _banner(server)
        failed = asyncio.ensure_future(server.failed.wait())
        await asyncio.wait((stopped, failed), return_when=asyncio.FIRST_COMPLETED)
        asked = stopped.done()  # a stop asked for waits --drain-delay; one on a failure does not
        for waiter in (stopped, failed):
            waiter.cancel()
        log.info("draining")
    finally:
        # Whatever ended the wait, the server stops: its store's thread is no daemon,
        # and a process left holding the database's lock could not be started again.
        await server.stop(drain_delay=config.drain_delay if asked else 0.0)
    if server.failure is not None:
        raise server.failure
    return 0


def main_async(config: Config) -> Any:
    return run(config)
