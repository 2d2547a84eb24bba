"""Prometheus metrics at ``--metrics-listen`` (issue 16; docs/ops/README.md says
what each one means and how many series a deployment makes).

Most figures are read from the server's memory when Prometheus scrapes, by one
collector (``Metrics.collect``): live sessions by product and state, meters in
grace or in a window, tokens available and held per team, the timer heap, the
store's queue, this server's role. Nothing on the hot path keeps them.

What happens in between is counted where it happens, in plain ints and fixed
buckets (``server/stats.py``): deadlines fired by kind (the scheduler), each
transaction's rows and seconds (the store's group commit), each heartbeat
flush's objects and seconds, elections won (``server/ha/election.py``), tokens
captured and expired per team (the ledger, where it captures and expires), and
at the edge each call's duration by method and status code,
refusals by reason and rate-limited calls. So a call pays a dictionary lookup
and a bucket index for its metrics, never a lock.

``/metrics`` is served on the server's own event loop (``asyncio`` streams), so
the collector reads the engine on the thread that changes it: a scrape sees
one consistent state. What grows with the teams and the products is read as
plain rows, and made into families and text on a thread (``Metrics.read``).

Labels are bounded: a team, a product, a method, a status code, a refusal
reason, a timer kind; never a user, a session, a device or a request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import grpc
from prometheus_client import ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from server.config import split_listen
from server.domain.sessions import ChargeState, SessionState
from server.domain.timers import TimerKind
from server.engine import Engine
from server.ha.election import Election
from server.stats import Batches, Distribution
from server.store.group_commit import GroupCommit
from server.store.port import StorePort

CREDENTIALS = ("user", "admin")
RATE_LIMITED = "RATE_LIMITED"  # the reason of the rate limits' refusals (server/api/limits.py)
# The text format every Prometheus reads (generate_latest writes it for plain names).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# What a scrape's request may be: one line and a few headers, all read within this
# time (one deadline for the whole request: a client sending a header line every few
# seconds does not keep its connection longer).
REQUEST_SECONDS = 10.0
MAX_HEADER_LINES = 100
# Connections served at once; more are closed at once, so a few slow clients cannot
# take the process's file descriptors (Prometheus opens one at a time).
MAX_CONNECTIONS = 32


class Source(Protocol):
    """What the collector reads: the running server (``server/app.py``). Read-only
    here, so a stand-in may hold ``None`` where the server holds its parts."""

    @property
    def engine(self) -> Engine | None: ...
    @property
    def store(self) -> StorePort | None: ...
    @property
    def election(self) -> Election | None: ...
    @property
    def front_pid(self) -> int: ...  # its front process's (--front-process), else 0

    def is_active(self) -> bool: ...


class RpcCalls:
    """One method's calls: a duration distribution per status code."""

    __slots__ = ("by_code", "method", "service")

    def __init__(self, service: str, method: str) -> None:
        self.service = service
        self.method = method
        self.by_code: dict[grpc.StatusCode, Distribution] = {}

    def observe(self, code: grpc.StatusCode, seconds: float) -> None:
        found = self.by_code.get(code)
        if found is None:
            found = self.by_code[code] = Distribution()
        found.observe(seconds)


class Metrics(Collector):
    """The server's metrics: what the edge and the engine count, the collector
    that reads the rest at scrape time, and the ``/metrics`` endpoint."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._rpcs: dict[str, RpcCalls] = {}
        self.refusals: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter(dict.fromkeys(CREDENTIALS, 0))
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        # prometheus_client's process_* series (CPU, memory, files; from /proc, so Linux
        # alone), this process's, and as tessera_front_process_* its front's, if it has one.
        self._processes = (
            ProcessCollector(registry=self.registry),
            ProcessCollector("tessera_front", pid=self._front_proc, registry=self.registry),
        )
        self._http: asyncio.Server | None = None
        self._connections = 0  # being answered (MAX_CONNECTIONS)

    def _front_proc(self) -> str:
        """The front's /proc entry; without a front, one that is not there (no series)."""
        pid = self._source.front_pid
        return str(pid) if pid else "no-front"

    # -- what the edge and the engine tell ------------------------------------

    def rpc(self, method: str) -> RpcCalls:
        """The counts of ``/package.Service/Method`` (the edge asks once per method)."""
        found = self._rpcs.get(method)
        if found is None:
            service, _, name = method.lstrip("/").rpartition("/")
            found = self._rpcs[method] = RpcCalls(service.rsplit(".", 1)[-1], name)
        return found

    def refused(self, reason: str, credential: str) -> None:
        """A call refused with ``reason`` (its ErrorInfo's), made with a ``credential``
        of that kind ("user", "admin" or "none")."""
        self.refusals[reason] += 1
        if reason == RATE_LIMITED:
            self.rate_limited[credential] += 1

    # -- the scrape --------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """Every family, read and made at once (the registry's way)."""
        return self.read()()

    def read(self) -> Callable[[], Iterator[Metric]]:
        """Read what the families say, now, on the event loop (the thread that changes
        it: one consistent state); the function returned makes them, on any thread.
        What grows with the teams and the products is read as plain rows and made
        into families there: 10,000 teams made 40,000 series, whose families and
        text held the loop a third of a second at every scrape."""
        made = list(self._made())
        engine = self._source.engine
        wide = _engine(engine) if engine is not None else None

        def families() -> Iterator[Metric]:
            yield from made
            if wide is not None:
                yield from wide()

        return families

    def _made(self) -> Iterator[Metric]:
        source = self._source
        election = source.election
        yield _gauge(
            "tessera_server_active",
            "1 while this server is the active one (serving calls), 0 while a standby",
            int(source.is_active()),
        )
        yield _counter(
            "tessera_takeovers",
            "Times this server won the election and became the active server "
            "(PostgreSQL; its first election included)",
            election.won if election is not None else 0,
        )
        yield from self._calls()
        yield from _store(source.store)

    def _calls(self) -> Iterator[Metric]:
        rpc = HistogramMetricFamily(
            "tessera_rpc_duration_seconds",
            "Calls answered, by service, method and status code, and how long each took",
            labels=("service", "method", "code"),
        )
        for calls in list(self._rpcs.values()):
            for code, dist in list(calls.by_code.items()):
                rpc.add_metric(
                    [calls.service, calls.method, code.name], dist.cumulative(), dist.sum
                )
        yield rpc
        refusals = CounterMetricFamily(
            "tessera_refusals",
            "Calls refused with a reason (google.rpc.ErrorInfo), by reason",
            labels=("reason",),
        )
        for reason, n in sorted(self.refusals.items()):
            refusals.add_metric([reason], n)
        yield refusals
        limited = CounterMetricFamily(
            "tessera_rate_limited_calls",
            "Calls refused RESOURCE_EXHAUSTED by the per-credential rate limits",
            labels=("credential",),
        )
        for credential, n in sorted(self.rate_limited.items()):
            limited.add_metric([credential], n)
        yield limited

    # -- /metrics ------------------------------------------------------------------

    async def serve(self, listen: str) -> int:
        """Serve ``/metrics`` at ``listen`` (host:port); the bound port."""
        host, port = split_listen(listen)
        self._http = await asyncio.start_server(self._answer, host, port)
        bound: int = self._http.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        if self._http is not None:
            self._http.close()
            with contextlib.suppress(Exception):
                await self._http.wait_closed()
            self._http = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One HTTP/1.x request, then the connection closes."""
        if self._connections >= MAX_CONNECTIONS:
            writer.close()
            return
        self._connections += 1
        try:
            # The request, and the answer's way out: a client that reads nothing keeps
            # no place for longer (its connection is cut, what it left unread dropped).
            async with asyncio.timeout(REQUEST_SECONDS):
                try:
                    line = await reader.readline()
                    for _ in range(MAX_HEADER_LINES):
                        header = await reader.readline()
                        if not header:  # it went before its request ended: nobody to answer
                            return
                        if header in (b"\r\n", b"\n"):
                            break
                except ValueError:  # a line past the reader's limit (64 KiB)
                    line = b""
                writer.write(await self._reply(line))
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            writer.transport.abort()
        finally:
            self._connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _reply(self, line: bytes) -> bytes:
        """The whole answer to the request line ``line``: GET or HEAD of /metrics."""
        parts = line.split()
        extra = ""
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            status, kind, body = "400 Bad Request", "text/plain", b"GET /metrics\n"
        elif parts[0] not in (b"GET", b"HEAD"):
            status, kind, body = "405 Method Not Allowed", "text/plain", b"GET /metrics\n"
            extra = "Allow: GET, HEAD\r\n"
        elif parts[1].split(b"?", 1)[0] != b"/metrics":
            status, kind, body = "404 Not Found", "text/plain", b"Metrics are at /metrics\n"
        else:
            # Read here, on the loop; the families and their text made on a thread,
            # which gives the loop the interpreter back every few milliseconds.
            scrape = _Scrape(self.read(), self._processes)
            status, kind, body = (
                "200 OK",
                CONTENT_TYPE,
                await asyncio.to_thread(generate_latest, scrape),
            )
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n{extra}"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        return head if parts[:1] == [b"HEAD"] else head + body


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _histogram(name: str, doc: str, dist: Distribution) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=dist.cumulative(), sum_value=dist.sum)


def _batches(prefix: str, what: str, size: str, batches: Batches) -> Iterator[Metric]:
    yield _histogram(f"{prefix}_seconds", f"Seconds each {what} took", batches.seconds)
    yield _histogram(f"{prefix}_{size}", f"{size.capitalize()} in each {what}", batches.sizes)


def _per_team(name: str, doc: str, counts: Iterable[tuple[str, int]]) -> Metric:
    """A counter per team of the engine (0 until it counts)."""
    family = CounterMetricFamily(
        name, f"{doc}, by team, since this server became the active one", labels=("team",)
    )
    for team_id, n in counts:
        family.add_metric([team_id], n)
    return family


def _store(store: StorePort | None) -> Iterator[Metric]:
    # Both adapters keep their group commit as ``_group`` (server/store/group_commit.py).
    group = getattr(store, "_group", None)
    if not isinstance(group, GroupCommit):
        return
    yield from _batches(
        "tessera_store_commit",
        "transaction of the group commit (the write and COMMIT)",
        "rows",
        group.stats,
    )
    yield _histogram(
        "tessera_store_commit_sync_seconds",
        "Seconds the COMMIT of each of those transactions took alone: the database's "
        "durability (SQLite: the WAL's sync and any checkpoint due; PostgreSQL: the "
        "commit's round trip and WAL flush)",
        group.syncs,
    )
    yield _gauge(
        "tessera_store_commit_queue",
        "Commits waiting for the store's writer or being written (each a call or a timer)",
        group.queued,
    )
    yield _gauge(
        "tessera_store_commit_age_seconds",
        "Seconds the transaction under way has been writing (0 when none is): one that "
        "does not get through (another process holding the lock) shows here",
        group.writing_seconds,
    )


def _engine(engine: Engine) -> Callable[[], Iterator[Metric]]:
    """The engine's families: what grows with the products and the teams read here, as
    plain rows, and made into families by the function returned (``Metrics.read``)."""
    lic = engine.sessions.lic
    # Kept as states change (a walk of 300,000 sessions and meters held the loop for
    # a third of a second at each scrape)
    sessions, meters = lic.live_counts, lic.meters.counts
    products = [
        (
            product_id,
            (sessions[product_id, SessionState.ACTIVE], sessions[product_id, SessionState.IDLE]),
            (meters[product_id, ChargeState.GRACE], meters[product_id, ChargeState.CHARGED]),
        )
        for product_id in sorted(engine.products)
    ]
    ledger = engine.ledger
    captured, expired = ledger.captured, ledger.expired
    teams = [
        (t, ledger.available(t), ledger.held(t), captured[t], expired[t])
        for t in sorted(engine.teams)
    ]
    made = list(_engine_small(engine))

    def families() -> Iterator[Metric]:
        live = GaugeMetricFamily(
            "tessera_live_sessions",
            "Live sessions, by product and state",
            labels=("product", "state"),
        )
        charging = GaugeMetricFamily(
            "tessera_meters",
            "Meters (team, user, product) with tokens held in grace or a window paid for, "
            "by product and state (grace, window)",
            labels=("product", "state"),
        )
        for product_id, (active, idle), (grace, window) in products:
            live.add_metric([product_id, "active"], active)
            live.add_metric([product_id, "idle"], idle)
            charging.add_metric([product_id, "grace"], grace)
            charging.add_metric([product_id, "window"], window)
        yield live
        yield charging
        available = GaugeMetricFamily(
            "tessera_team_tokens_available", "Tokens a team can spend (T2)", labels=("team",)
        )
        held = GaugeMetricFamily(
            "tessera_team_tokens_held", "Tokens held by meters in grace (M2)", labels=("team",)
        )
        for team_id, can, holds, _, _ in teams:
            available.add_metric([team_id], can)
            held.add_metric([team_id], holds)
        yield available
        yield held
        charged = ((t, n) for t, _, _, n, _ in teams)
        yield _per_team("tessera_tokens_charged", "Tokens captured (charged)", charged)
        unused = ((t, n) for t, _, _, _, n in teams)
        yield _per_team("tessera_tokens_expired", "Tokens that expired unused", unused)
        yield from made

    return families


def _engine_small(engine: Engine) -> Iterator[Metric]:
    """The engine's families of a few series each, made at once."""
    scheduler = engine.scheduler
    yield _gauge(
        "tessera_timer_heap_size", "Deadlines waiting in the timer heap", len(scheduler.heap)
    )
    fired = CounterMetricFamily(
        "tessera_deadlines_fired",
        "Deadlines that fell due and were looked at, by kind",
        labels=("kind",),
    )
    for kind in TimerKind:
        fired.add_metric([kind.name.lower()], scheduler.fired_by_kind[kind])
    yield fired
    yield from _batches(
        "tessera_heartbeat_flush",
        "batch of heartbeat history written",
        "objects",
        engine.sessions.flushes,
    )
    yield _gauge(
        "tessera_heartbeat_dirty",
        "Sessions and devices whose heartbeats wait for the next flush",
        engine.sessions.dirty,
    )


class _Scrape:
    """What ``generate_latest`` writes out on a thread: the families a read on the
    loop makes (``Metrics.read``), and the processes' own, read from /proc there."""

    def __init__(self, families: Callable[[], Iterator[Metric]], processes: Iterable[Collector]):
        self._families = families
        self._processes = processes

    def collect(self) -> Iterator[Metric]:
        yield from self._families()
        for process in self._processes:
            yield from process.collect()
