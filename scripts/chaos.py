"""Chaos (issue 13, point 6): servers on one PostgreSQL, the active killed or paused under load.

``scripts/crash_loop.py``'s loop and its checks, on two or three server
processes sharing one PostgreSQL database (RULES H1, H2) instead of one server
on SQLite. The load comes from the SDK (RULES H3): each user is a
``client_sdk.AsyncClient(targets=[every server], user_key=...)`` that entitles,
heartbeats, goes idle and releases (``crash_loop``'s users' calls, made by the
SDK, which finds the active and follows it); the operator buys tokens, advances
the clock and reads the ledger through ``client_sdk.failover.Failover`` on the
admin service, a purchase repeated with its request id wherever it goes. A
call is acknowledged when the SDK returned success. Each cycle breaks the
active at a random moment, kill -9 and SIGSTOP in turn, while the load goes on
through the takeover until the clients have followed the new active for a
while. Then:

1. a standby must answer SERVING within 10 s (RULES H2; the takeover times
   are printed);
2. every session that was live when the active broke heartbeats on the new
   active, from its user's client, and keeps its session id: it lives on, or
   it ended with a reason of the rules (released or taken over meanwhile by the
   load, expired as the clock moved, its host ended); the clock is not
   advanced from the break until then;
3. a paused one is resumed (SIGCONT) once another has taken over: it must say
   it is a standby and refuse calls with NOT_LEADER naming the new active (it
   never answers as active again, H1); a killed one starts again, as a
   standby;
4. exactly one server is active; ``python -m server verify --db URL`` passes;
   and the new active has every purchase (a purchase whose answer was lost,
   sent again with its request id, buys once), session, hold, charge, device
   and ledger entry that was acknowledged, with each team's balance equal to
   the sums over its packs (``crash_loop.Cluster.check``). What is found gone
   or changed is counted as lost.

    python scripts/chaos.py --cycles 30 [--servers 3] [--seed N] [--db URL]

Without ``--db`` (or ``TESSERA_TEST_PG``) PostgreSQL comes from ``pgserver``
in a temporary directory. ``tests/ha/test_chaos.py`` runs a few cycles in
``make test``.
"""

# S101: asserts narrow Optional types for mypy; S311: random picks what and when to
# break, nothing secret; E402: the repository goes on sys.path before its modules.
# ruff: noqa: S101, S311, E402

from __future__ import annotations

import argparse
import asyncio
import operator
import os
import random
import signal
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import crash_loop
import grpc
from crash_loop import ADMIN, CUT, EXPECTED, GONE, Summary
from grpc_health.v1 import health_pb2, health_pb2_grpc

import client_sdk
from client_sdk.failover import Failover, Targets
from client_sdk.transport import open_channel
from tessera_api.tessera.v1 import admin_service_pb2 as api
from tessera_api.tessera.v1 import admin_service_pb2_grpc

TAKEOVER_BOUND = 10.0  # RULES H2
SERVING = health_pb2.HealthCheckResponse.SERVING
# The clients' retries: short deadlines (a paused server answers nothing), enough
# attempts to span a takeover (a paused active's lease runs out first).
RETRY = client_sdk.RetryPolicy(
    max_attempts=12, initial_backoff=0.05, max_backoff=1.0, call_timeout=3.0
)
FOLLOW = 0.5  # seconds of load on the new active before a cycle's load stops
T = TypeVar("T")


def health(target: str) -> int:
    try:
        with grpc.insecure_channel(target) as channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' typing lacks Check
            return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status)
    except grpc.RpcError:
        return -1


def server_info(target: str) -> api.GetServerInfoResponse | grpc.StatusCode:
    try:
        with grpc.insecure_channel(target) as channel:
            stub = admin_service_pb2_grpc.AdminServiceStub(channel)
            reply: api.GetServerInfoResponse = stub.GetServerInfo(
                api.GetServerInfoRequest(), metadata=tuple(ADMIN), timeout=5
            )
            return reply
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code


@dataclass
class Node(crash_loop.Server):
    """One server of the database, its stderr in the run's directory."""

    workdir: Path = Path()
    name: str = ""

    @property
    def stderr_log(self) -> Path:
        return self.workdir / f"server-{self.name}-stderr.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class ChaosCluster(crash_loop.Cluster):
    """``crash_loop.Cluster`` with several servers on one PostgreSQL database:
    ``proc`` is the active one, the one the load and the checks talk to."""

    def __init__(
        self,
        workdir: Path,
        rng: random.Random,
        summary: Summary,
        *,
        url: str,
        servers: int = 2,
        lease: float = 1.0,
    ) -> None:
        super().__init__(workdir, rng, summary)
        self.db = url  # type: ignore[assignment]  # the servers are given its text
        self.workdir = workdir
        self.lease = lease
        self.pause_next = rng.random() < 0.5  # kill -9 and SIGSTOP in turn
        self.breaks: Counter[str] = Counter()
        self.nodes = [self._node(f"n{i}") for i in range(servers)]
        self.takeovers: list[float] = []
        self.broken_at = 0.0
        self.following = False  # the load's calls now reach the new active
        self.frozen = False  # no clock advance from a break until the sessions continued

    def _node(self, name: str) -> Node:
        extra = ["--secrets-dir", str(self.workdir / "secrets"), "--leader-lease", str(self.lease)]
        return Node(
            db=self.db,
            extra=[*extra, "--node-id", name],
            ready=("standby", "serving"),
            workdir=self.workdir,
            name=name,
        )

    # -- the processes -----------------------------------------------------------------

    def start(self) -> None:
        """Wait for the active server (after a kill -9: a standby taking over),
        then every server that is not running starts, as a standby; check that
        the active one is the only one, and talk to it."""
        if not any(node.running for node in self.nodes):
            self._revive()
        active = self._wait_for_active()
        if self.broken_at:
            self._took_over()
        self._revive()
        for node in self.nodes:
            if node is not active:
                self._check_standby(node, active)
        self.proc = active
        self.killed.clear()
        self.channel = grpc.insecure_channel(active.target)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(self.channel)

    def _revive(self) -> None:
        for i, node in enumerate(self.nodes):
            if not node.running:
                self.nodes[i] = node = self._node(node.name)
                node.start()

    def _took_over(self) -> None:
        took = time.monotonic() - self.broken_at
        self.broken_at = 0.0
        self.takeovers.append(took)
        if took > TAKEOVER_BOUND:
            self.problem(f"the takeover took {took:.1f} s, over {TAKEOVER_BOUND} s")

    def _wait_for_active(self) -> Node:
        began = time.monotonic()
        while True:
            for node in self.nodes:
                if node.running and health(node.target) == SERVING:
                    return node
            if time.monotonic() - began > 60:
                raise RuntimeError("no server became active within 60 s")
            time.sleep(0.02)

    def _check_standby(self, node: Node, active: Node) -> None:
        # One resumed after a pause learns the new active's address at its next round.
        deadline = time.monotonic() + self.lease
        info = server_info(node.target)
        while (
            not isinstance(info, grpc.StatusCode)
            and info.role == api.NODE_ROLE_STANDBY
            and info.leader_address != active.target
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
            info = server_info(node.target)
        if isinstance(info, grpc.StatusCode):
            self.problem(f"{node.name}: GetServerInfo failed with {info.name}")
        elif info.role != api.NODE_ROLE_STANDBY or info.leader_address != active.target:
            self.problem(
                f"{node.name} says role {api.NodeRole.Name(info.role)}, leader "
                f"{info.leader_address!r} while {active.name} ({active.target}) is active"
            )

    def kill(self) -> None:
        """Break the active server: kill -9, or SIGSTOP until another has taken
        over, then SIGCONT (it must come back as a standby)."""
        active = self.proc
        assert isinstance(active, Node) and active.proc is not None
        self.killed.set()
        self.broken_at = time.monotonic()
        self.pause_next = pausing = not self.pause_next
        if not pausing:
            self.breaks["kill -9"] += 1
            active.kill()
            return
        self.breaks["SIGSTOP"] += 1
        os.kill(active.proc.pid, signal.SIGSTOP)
        try:
            others = [n for n in self.nodes if n is not active]
            while not any(n.running and health(n.target) == SERVING for n in others):
                if time.monotonic() - self.broken_at > 60:
                    self.problem("no standby took over from a paused active within 60 s")
                    break
                time.sleep(0.02)
            else:
                self._took_over()
        finally:
            os.kill(active.proc.pid, signal.SIGCONT)
        # Resumed: it refuses at once (its lease ran out while it was paused).
        info = server_info(active.target)
        if info != grpc.StatusCode.UNAVAILABLE and (
            isinstance(info, grpc.StatusCode) or info.role != api.NODE_ROLE_STANDBY
        ):
            self.problem(f"{active.name}, resumed after a takeover, answered {info}")

    # -- the load, through the SDK ---------------------------------------------------

    def load(self, seconds: float) -> None:
        """Load from the SDK's clients, given every server (RULES H3); break the
        active ``seconds`` in; the load goes on until the clients have followed the
        new active for ``FOLLOW`` seconds."""
        asyncio.run(self._load(seconds))
        self.close_channel()

    async def _load(self, seconds: float) -> None:
        targets = [node.target for node in self.nodes]
        stop = asyncio.Event()
        busy = [0]
        cycle = self.summary.cycles
        clients = {user: self._client(targets, key) for user, key in sorted(self.keys.items())}
        admin: Failover[admin_service_pb2_grpc.AdminServiceStub] = Failover(
            Targets(targets),
            lambda address: open_channel(address, False),
            admin_service_pb2_grpc.AdminServiceStub,
            retry=RETRY,
            clock=client_sdk.SystemClock(),
            rng=random.Random(self.rng.random()),
        )
        work = [
            self._user_sdk(user, client, stop, busy, random.Random(self.rng.random()))
            for user, client in clients.items()
        ]
        work.append(self._operator_sdk(cycle, admin, stop, busy, random.Random(self.rng.random())))
        tasks = [asyncio.create_task(self._guarded_sdk(w)) for w in work]
        try:
            await asyncio.sleep(seconds)
            self.summary.in_flight_at_kill += busy[0]
            self.frozen = True
            with self.acked.lock:
                at_kill = {
                    sid: told.session.user_id
                    for sid, told in self.acked.sessions.items()
                    if not told.ended
                }
            await asyncio.to_thread(self.kill)
            await asyncio.to_thread(self._await_takeover)
            await self._continue(clients, at_kill)
            self.frozen = False
            self.following = True
            await asyncio.sleep(FOLLOW)
            stop.set()
            _, hung = await asyncio.wait(tasks, timeout=120)
            if hung:
                self.problem(f"{len(hung)} SDK clients hung after the takeover")
        finally:
            self.following = False
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in clients.values():
                await client.close()
            await admin.close()

    def _client(self, targets: list[str], key: str) -> client_sdk.AsyncClient:
        return client_sdk.AsyncClient(
            targets=targets, user_key=key, retry=RETRY, rng=random.Random(self.rng.random())
        )

    def _await_takeover(self) -> None:
        """After a kill -9: wait for the standby taking over (a pause waited already)."""
        if self.broken_at:
            self._wait_for_active()
            self._took_over()

    async def _guarded_sdk(self, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception as exc:
            self.problem(f"an SDK client failed: {exc!r}")

    async def _sdk(self, what: str, call: Awaitable[T], busy: list[int]) -> T | grpc.StatusCode:
        """One call through the SDK; acknowledged when the SDK returned success."""
        busy[0] += 1
        try:
            reply = await call
        except client_sdk.TesseraError as exc:
            code = exc.code or grpc.StatusCode.UNKNOWN
            self.count(what, code)  # a call cut by the break keeps its code in the counts
            if (
                code not in EXPECTED
                and code not in GONE
                and not (code in CUT and self.killed.is_set())
            ):
                self.problem(f"{what}: {type(exc).__name__} {exc}")
            return code
        finally:
            busy[0] -= 1
        self.count(what, grpc.StatusCode.OK)
        self.summary.followed += self.following
        return reply

    async def _user_sdk(
        self,
        user_id: str,
        client: client_sdk.AsyncClient,
        stop: asyncio.Event,
        busy: list[int],
        rng: random.Random,
    ) -> None:
        """``crash_loop``'s user, its calls made by the SDK's multi-target client."""
        device, live = self.user_start(user_id, rng)
        n = 0
        while not stop.is_set():
            n += 1
            what, request, device = self.user_step(user_id, device, live, rng, n)
            reply = await self._sdk(what, _session_call(client, what, request), busy)
            if isinstance(reply, grpc.StatusCode):
                self.user_refused(user_id, what, request, reply)
                await asyncio.sleep(0.01 if reply in GONE else 0)
                continue
            live = self.user_answered(live, reply.raw, what)

    async def _operator_sdk(
        self,
        cycle: int,
        admin: Failover[admin_service_pb2_grpc.AdminServiceStub],
        stop: asyncio.Event,
        busy: list[int],
        rng: random.Random,
    ) -> None:
        """``crash_loop``'s operator, each call following the active with the same
        request (a purchase keeps its request id)."""
        n = 0
        while not stop.is_set():
            n += 1
            what, request = self.operator_step(cycle, n, rng)
            if what == "AdvanceClock" and self.frozen:
                await asyncio.sleep(0.01)
                continue
            call = admin.call(operator.attrgetter(what), request, ADMIN)
            reply = await self._sdk(what, call, busy)
            if not isinstance(reply, grpc.StatusCode):
                self.operator_answered(what, request, reply)
            await asyncio.sleep(rng.random() * 0.01)

    async def _continue(
        self, clients: dict[str, client_sdk.AsyncClient], at_kill: dict[str, str]
    ) -> None:
        """Every session live when the active broke: its user's client (the one
        the load runs on) heartbeats it now that another server is active. It
        keeps its id (RULES H3) and lives on, or is ended with a reason (the
        rules': released or taken over meanwhile by the load, expired...)."""
        for sid, user in sorted(at_kill.items()):
            with self.acked.lock:
                told = self.acked.sessions[sid].session
            try:
                session = await clients[user].heartbeat(sid)
            except client_sdk.NotFound as exc:
                self.lose(f"session {sid}, live before the break, is unknown after it: {exc}")
                continue
            except client_sdk.TesseraError as exc:
                self.problem(f"session {sid}: no heartbeat reached the new active: {exc}")
                continue
            if session.session_id != sid:
                self.lose(f"session {sid} came back as {session.session_id}")
            elif session.ended and session.end_reason == client_sdk.EndReason.UNSPECIFIED:
                self.lose(f"session {sid} ended without a reason")
            else:
                outcome = f"ended {session.end_reason.name}" if session.ended else "live"
                if (
                    session.end_reason == client_sdk.EndReason.LEASE_EXPIRED
                    and told.HasField("lease_expire_time")
                    and session.raw.end_time.ToDatetime() < told.lease_expire_time.ToDatetime()
                ):
                    # An acknowledged Heartbeat's extension, held in memory until the
                    # next flush (--heartbeat-flush), died with the old active.
                    outcome += " (before the lease it was told: an unflushed extension)"
                self.summary.continued[outcome] += 1
            self._told(session.raw, "Heartbeat after the takeover")

    def terminate(self) -> int:
        self.close_channel()
        worst = 0
        for node in self.nodes:
            if node.running:
                worst = max(worst, node.terminate())
        return worst

    def kill_all(self) -> None:
        self.close_channel()
        for node in self.nodes:
            if node.running:
                assert node.proc is not None
                os.kill(node.proc.pid, signal.SIGCONT)
                node.kill()


def _session_call(client: client_sdk.AsyncClient, what: str, r: Any) -> Awaitable[Any]:
    """``crash_loop``'s request for ``what`` as the SDK's call."""
    if what == "Entitle":
        return client.entitle(
            r.product_id,
            r.product_version,
            platform=client_sdk.Platform(r.platform),
            device_id=r.device_id,
            parent_session_id=r.parent_session_id,
            takeover=r.takeover,
            team_id=r.team_id,
            request_id=r.request_id,
        )
    if what == "Heartbeat":
        return client.heartbeat(r.session_id, r.seconds_since_activity)
    if what == "Idle":
        return client.idle(r.session_id)
    assert what == "Release"
    return client.release(r.session_id)


def run(
    cycles: int,
    workdir: Path,
    url: str,
    seed: int | None = None,
    *,
    servers: int = 2,
    lease: float = 1.0,
    max_load: float = 1.5,
    log: Callable[[str], None] = lambda line: None,
) -> tuple[Summary, ChaosCluster]:
    """``cycles`` chaos cycles on the (empty) database at ``url``; the summary,
    and the cluster (its ``takeovers`` in seconds, its ``breaks`` by kind)."""
    made: list[ChaosCluster] = []

    def cluster(workdir: Path, rng: random.Random, summary: Summary) -> ChaosCluster:
        made.append(ChaosCluster(workdir, rng, summary, url=url, servers=servers, lease=lease))
        return made[-1]

    try:
        summary = crash_loop.run(
            cycles, workdir, seed, max_load=max_load, log=log, cluster_type=cluster
        )
    finally:
        for c in made:
            c.kill_all()
    return summary, made[0]


@contextmanager
def postgres(given: str | None) -> Iterator[str]:
    """A URL of an empty database: ``given``, ``TESSERA_TEST_PG``'s server, or pgserver's."""
    url = given or os.environ.get("TESSERA_TEST_PG")
    if url:
        yield url
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        import pgserver

    with tempfile.TemporaryDirectory(prefix="tessera-chaos-pg-") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 - pgserver hands it to its own user when root
        get_server = pgserver.get_server  # type: ignore[attr-defined]  # re-exported untyped
        server = get_server(Path(tmp) / "data", cleanup_mode="delete")
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cycles", type=int, default=30)
    p.add_argument("--servers", type=int, default=2, choices=(2, 3))
    p.add_argument("--lease", type=float, default=1.0, help="--leader-lease (default 1 s)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--db", default=None, help="an EMPTY PostgreSQL database's URL")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.randrange(2**32)
    print(f"seed {seed}", flush=True)
    with postgres(a.db) as url, tempfile.TemporaryDirectory(prefix="tessera-chaos-") as tmp:
        summary, cluster = run(
            a.cycles,
            Path(tmp),
            url,
            seed,
            servers=a.servers,
            lease=a.lease,
            log=lambda line: print(line, flush=True),
        )
    for problem in summary.problems:
        print(f"PROBLEM: {problem}")
    print(summary.line())
    takeovers = cluster.takeovers
    print(f"breaks: {dict(cluster.breaks)}")
    if takeovers:
        print(
            f"takeovers: {len(takeovers)}, {min(takeovers):.2f} s min, "
            f"{sorted(takeovers)[len(takeovers) // 2]:.2f} s median, {max(takeovers):.2f} s max "
            f"(lease {a.lease} s)"
        )
    print(
        f"acknowledged by a new active within the load that saw its takeover: "
        f"{summary.followed}; sessions live at a break, at their next heartbeat: "
        f"{dict(sorted(summary.continued.items()))}"
    )
    for what, n in sorted(summary.calls.items()):
        print(f"  {what}: {n}")
    return 1 if summary.problems else 0


if __name__ == "__main__":
    sys.exit(main())
