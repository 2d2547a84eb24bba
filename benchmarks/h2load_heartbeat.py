"""Heartbeat under h2load: the server alone, against the same bare grpc.aio echo (issue 17).

``make bench`` runs a Python load generator on the same two cores as the server,
so the client's own cost is part of its figures. h2load (Debian's
``nghttp2-client``: a C HTTP/2 load generator that speaks gRPC framing when
given the headers) costs the machine far less, so its figures are closer to
what the server alone can do. In one run this:

1. starts a fresh Tessera (``python -m server``, a throwaway database, the real
   clock, JSON logs to a file, ``--user-rate-limit 0``: h2load sends one
   request body, so every call is one user's heartbeat of one session, which the
   per-user limit would otherwise refuse after its burst);
2. provisions one user (``client_sdk.load.provision``) and opens one session
   (``Entitle``), then writes that session's ``HeartbeatRequest`` in gRPC
   framing (a 5-byte prefix and the message);
3. runs ``h2load -c CONNECTIONS -m STREAMS --warm-up-time W -D SECONDS`` on
   ``/tessera.v1.LicensingService/Heartbeat`` with the user's key, and reads
   the server's CPU time over the run (``/proc``);
4. does 3 against ``benchmarks/echo_server.py`` (canned responses: Tessera's
   own answer to that Heartbeat, lease and all, so that both answer the same
   bytes; nothing else), the same h2load flags, first in every other round so
   that a host slowing through a run does not favour one side;
5. with ``--ladder``, does 3 against Tessera with parts of the Heartbeat taken
   away as well (``benchmarks/stripped_server.py``: without the signature, without
   the engine, without the edge), printing each one's share of the echo: where
   the floor of this process model is, and what each part costs; with
   ``--one-process``, against Tessera run with ``--no-front-process`` as well.
   Tessera runs as ``python -m server`` does by default: with two cores or more,
   gRPC's work in a second process (``server/front.py``; CPU a call then counts
   both processes, the loop named is the front's, and the back's is shown
   beside it);
6. checks Tessera's log: gRPC puts a failure in the trailers of an HTTP 200,
   which h2load counts as a success, and the server logs every failed call (the
   calls shed at admission in one line a second that counts them), so the run is
   refused when the log names any;
7. prints the last line

   ``H2LOAD heartbeat_rps=… echo_rps=… heartbeat_vs_echo=… heartbeat_cpu_us=…
   echo_cpu_us=… [one_process_vs_echo=…] failed=…``

   where the CPU figures are the server process's CPU microseconds per call.
   Each round also prints how much of a core the server's main thread (the
   event loop's: gRPC's dispatch and every handler) used: near 1, it is the limit.

Target (issue 17): ``heartbeat_vs_echo`` ≥ 0.80. Note the load average printed
beside the figures, and repeat a run taken while something else was busy.

Run: ``.venv/bin/python -m benchmarks.h2load_heartbeat`` (``--help`` for the
knobs); needs ``h2load`` on the PATH (``apt-get install nghttp2-client``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from benchmarks.bench import REPO, Child, _terminate, cpu_seconds
from client_sdk._retry import RetryPolicy
from client_sdk.failover import Targets
from client_sdk.load.provision import provision
from server.config import Config
from server.loops import EVENT_LOOPS
from tessera_api.tessera.v1 import common_pb2, licensing_service_pb2_grpc
from tessera_api.tessera.v1 import licensing_service_pb2 as lic

PATH = "/tessera.v1.LicensingService/Heartbeat"
RPS = re.compile(r"finished in [^,]+, ([\d.]+) req/s")
STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded")


@dataclass(frozen=True)
class Point:
    rps: float
    succeeded: int
    cpu_us: float  # the server's CPU per call
    loop_cores: float = 0.0  # its main thread's (the event loop's) CPU over the run, in cores
    back_cores: float | None = None  # --split: the back's event loop thread, in cores

    def describe(self) -> str:
        back = "" if self.back_cores is None else f", the back's {self.back_cores:.2f}"
        return (
            f"{self.rps:,.0f} calls/s, {self.succeeded:,} answered, {self.cpu_us:,.0f} us CPU/call, "
            f"event loop's thread {self.loop_cores:.2f} of a core{back}"
        )


def grpc_unframed(path: Path) -> bytes:
    """The message of the length-prefixed frame ``grpc_frame`` wrote to ``path``."""
    return path.read_bytes()[5:]


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, then the length, big-endian."""
    return struct.pack(">BI", 0, len(message)) + message


async def open_session(target: str, admin_token: str) -> tuple[str, bytes]:
    """A new user with a live session: (their key, the session's HeartbeatRequest)."""
    users = await provision(Targets([target]), RetryPolicy(), admin_token, 1)
    _, key = users.users[0]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = licensing_service_pb2_grpc.LicensingServiceStub(channel)
        answer = await stub.Entitle(
            lic.EntitleRequest(
                product_id=users.product_id,
                product_version="2026.1",
                platform=common_pb2.PLATFORM_LINUX,
                device_id="h2load-device",
                request_id="h2load-" + secrets.token_hex(6),
            ),
            metadata=(("authorization", f"Bearer {key}"),),
        )
    request = lic.HeartbeatRequest(session_id=answer.session.session_id, seconds_since_activity=1)
    return key, request.SerializeToString()


async def heartbeat_answer(target: str, key: str, body: bytes) -> bytes:
    """The server's answer to one Heartbeat ``body`` (serialized): the echo answers
    the same bytes, a lease and all, so that both send the same size back."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = licensing_service_pb2_grpc.LicensingServiceStub(channel)
        answer = await stub.Heartbeat(
            lic.HeartbeatRequest.FromString(body), metadata=(("authorization", f"Bearer {key}"),)
        )
    return answer.SerializeToString()


def h2load(a: argparse.Namespace, server: Child, body: Path, key: str) -> Point:
    exe = shutil.which("h2load")
    if exe is None:
        raise SystemExit("h2load not found: apt-get install nghttp2-client")
    args = [
        *(exe, f"http://{server.target}{PATH}", "-d", str(body)),
        *("-c", str(a.connections), "-m", str(a.streams), "-t", "1"),
        *("--warm-up-time", f"{a.warmup:g}", "-D", f"{a.seconds:g}"),
        *("-H", "content-type: application/grpc", "-H", "te: trailers"),
        *("-H", f"authorization: Bearer {key}"),
    ]
    # The main thread's task id is the process id: its CPU is the event loop's,
    # which runs gRPC's dispatch and every handler (the limit when near 1 core).
    # With --front-process, two processes: the front's loop runs gRPC's.
    pids = server.pids
    loop = f"{pids[-1]}/task/{pids[-1]}"
    back = f"{server.pid}/task/{server.pid}"

    def cpu() -> float:
        return sum(cpu_seconds(pid) for pid in pids)

    cpu0, loop0, back0, t0 = cpu(), cpu_seconds(loop), cpu_seconds(back), time.monotonic()
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout  # noqa: S603
    used, wall = cpu() - cpu0, time.monotonic() - t0
    loop_cores = (cpu_seconds(loop) - loop0) / wall
    back_cores = (cpu_seconds(back) - back0) / wall if server.front_pid else None
    rps = RPS.search(out)
    done = REQUESTS.search(out)
    codes = STATUS.search(out)
    if rps is None or done is None or codes is None:
        raise RuntimeError("h2load's output was not understood:\n" + out)
    succeeded = int(done.group(4))
    if int(codes.group(1)) != succeeded:
        raise RuntimeError("h2load saw answers other than HTTP 200:\n" + out)
    # CPU over the whole run (warm-up included) against the calls of the whole run.
    calls = float(rps.group(1)) * wall
    per_call = 1e6 * used / calls if calls else 0.0
    return Point(float(rps.group(1)), succeeded, per_call, loop_cores, back_cores)


@contextlib.contextmanager
def spying(a: argparse.Namespace | None, pid: int) -> Iterator[None]:
    """py-spy on ``pid`` while the block runs, when ``a.py_spy`` names an output."""
    if a is None or a.py_spy is None:
        yield
        return
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    fmt = {".json": "speedscope", ".txt": "raw"}.get(a.py_spy.suffix, "flamegraph")
    args = [exe, "record", "--pid", str(pid), "--output", str(a.py_spy), "--format", fmt]
    # py-spy unwinds C frames only while the process is stopped: --native and
    # --nonblocking together write nothing.
    args += ["--rate", "200", *(["--native"] if a.native else ["--nonblocking"])]
    spy = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()


def failed_calls(log: Path, cut: int = 0) -> dict[str, int]:
    """Codes of the failed calls the server logged: a line each, but calls shed at
    admission (``OVERLOADED``) in one line a second that counts them (``shed``).
    Up to ``cut`` ``CANCELLED`` calls are not counted: h2load ends a run by closing
    its connections with its streams in flight (``-c`` times ``-m`` a run at most), and
    gRPC reports those calls cancelled by their client; h2load does not count
    them answered, so they move no figure."""
    codes: dict[str, int] = {}
    for raw in log.read_bytes().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(line, dict):
            continue
        if line.get("event") == "rpc" and line.get("code") != "OK":
            codes[str(line.get("code"))] = codes.get(str(line.get("code")), 0) + 1
        elif line.get("event") == "overloaded" and isinstance(shed := line.get("shed"), int):
            codes["RESOURCE_EXHAUSTED"] = codes.get("RESOURCE_EXHAUSTED", 0) + shed
    if "CANCELLED" in codes:
        codes["CANCELLED"] -= min(cut, codes["CANCELLED"])
        if not codes["CANCELLED"]:
            del codes["CANCELLED"]
    return codes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.h2load_heartbeat", description=__doc__.splitlines()[0]
    )
    p.add_argument("--connections", type=int, default=1, help="h2load -c")
    p.add_argument("--streams", type=int, default=64, help="h2load -m: calls in flight each")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds measured (h2load -D)")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of both; medians printed (by calls a second; of an even number of "
        "rounds, the lower of the middle two)",
    )
    p.add_argument(
        "--py-spy",
        type=Path,
        help="profile Tessera during its first round with py-spy (.txt collapsed stacks, "
        ".svg flame graph, .json speedscope)",
    )
    p.add_argument(
        "--native",
        action="store_true",
        help="py-spy --native (C frames too: the server is stopped at each sample, so "
        "that round's figures are the profile's, not comparable)",
    )
    p.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=Config.event_loop,
        help="the loop both servers run on (--event-loop of python -m server)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument(
        "--one-process",
        action="store_true",
        help="also run Tessera with --no-front-process (gRPC's work and Tessera's in one "
        "process; the default where the machine has one core)",
    )
    p.add_argument(
        "--ladder",
        action="store_true",
        help="also run Tessera with parts of a Heartbeat taken away "
        "(benchmarks/stripped_server.py): what each part costs against the echo",
    )
    p.add_argument(
        "--against",
        type=Path,
        metavar="DIR",
        help="also run the Tessera of another checkout (git worktree add DIR REV), in "
        "turn with this one in every round: what a change did, on the same host and hour",
    )
    return p.parse_args(argv)


def median(points: list[Point]) -> Point:
    """The median round by calls a second; of an even number, the lower of the middle
    two (a round itself, not a mean of two: its CPU figures go with its rate)."""
    ordered = sorted(points, key=lambda p: p.rps)
    return ordered[(len(ordered) - 1) // 2]


def tessera_child(
    name: str,
    tmp: Path,
    token: str,
    loop: str,
    strip: str | None = None,
    *flags: str,
    cwd: Path = REPO,
) -> Child:
    """Tessera on a throwaway database: ``python -m server`` (with ``flags``), or with
    ``strip`` the stripped server of that level; run from the checkout ``cwd``."""
    runner = ["-m", "server"] if strip is None else ["-m", "benchmarks.stripped_server"]
    return Child(
        name,
        [
            *(sys.executable, *runner, *(["--strip", strip] if strip else [])),
            *("--listen", "127.0.0.1:0", "--db", str(tmp / f"{name}.db")),
            *("--admin-token", token, "--log-format", "json", "--user-rate-limit", "0"),
            *("--event-loop", loop, *flags),
        ],
        tmp,
        cwd,
    )


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # stops the servers, removes tmp (finally)
    tmp = Path(tempfile.mkdtemp(prefix="tessera-h2load-"))
    token = "tsa_" + secrets.token_urlsafe(24)
    servers: list[Child] = []
    try:
        tessera = tessera_child("tessera", tmp, token, a.event_loop)
        # The ladder (--ladder): the same server with parts of a Heartbeat taken away.
        stripped = [
            tessera_child(f"stripped-{level}", tmp, token, a.event_loop, level)
            for level in (("signature", "engine", "edge") if a.ladder else ())
        ]
        if a.one_process:
            one = tessera_child("one-process", tmp, token, a.event_loop, None, "--no-front-process")
            stripped.append(one)
        if a.against is not None:  # another checkout's server, the same instrument
            stripped.append(tessera_child("against", tmp, token, a.event_loop, cwd=a.against))
        responses = tmp / "responses.json"  # Tessera's own Heartbeat answer, below
        echo = Child(
            "echo",
            [
                *(sys.executable, "-m", "benchmarks.echo_server", "--listen", "127.0.0.1:0"),
                *("--event-loop", a.event_loop, "--responses", str(responses)),
            ],
            tmp,
        )
        servers += [tessera, *stripped, echo]
        keys: dict[str, tuple[str, Path]] = {}
        for child in (tessera, *stripped):
            child.start()
            key, request = asyncio.run(open_session(child.target, token))
            body = tmp / f"{child.name}.bin"
            body.write_bytes(grpc_frame(request))
            keys[child.name] = (key, body)
        key, body = keys["tessera"]
        answer = asyncio.run(heartbeat_answer(tessera.target, key, grpc_unframed(body)))
        responses.write_text(json.dumps({"Heartbeat": answer.hex()}))
        echo.start()
        flags = f"-c {a.connections} -m {a.streams} --warm-up-time {a.warmup:g} -D {a.seconds:g}"
        print(f"h2load {flags}; load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
        points: dict[str, list[Point]] = {c.name: [] for c in (tessera, *stripped, echo)}
        for n in range(a.rounds):
            for child in (tessera, *stripped, echo) if n % 2 == 0 else (echo, tessera, *stripped):
                key, body = keys["tessera" if child is echo else child.name]
                with spying(a if n == 0 and child is tessera else None, child.pid):
                    points[child.name].append(h2load(a, child, body, key))
            print(
                f"round {n + 1}: "
                + "; ".join(f"{name} {p[-1].describe()}" for name, p in points.items())
                + f"; load average {os.getloadavg()[0]:.2f}",
                file=sys.stderr,
            )
        for child in (tessera, *stripped):
            child.stop()
        failed: dict[str, int] = {}
        for child in (tessera, *stripped):
            if not child.name.startswith("stripped-"):  # those that answer rightly
                cut = a.connections * a.streams * a.rounds  # each run's end (failed_calls)
                for code, n in failed_calls(child.out_path, cut).items():
                    failed[code] = failed.get(code, 0) + n
        t, e = median(points["tessera"]), median(points["echo"])
        print(f"tessera Heartbeat: {t.describe()}")
        for child in stripped:
            p = median(points[child.name])
            print(f"{child.name + ':':<19}{p.describe()}; {p.rps / e.rps:.2f} of the echo")
        print(f"echo:              {e.describe()}")
        if failed:
            print(f"failed calls in Tessera's log: {failed}")
        ratio = t.rps / e.rps if e.rps else 0.0
        print(
            f"H2LOAD heartbeat_rps={t.rps:.0f} echo_rps={e.rps:.0f} heartbeat_vs_echo={ratio:.2f} "
            f"heartbeat_cpu_us={t.cpu_us:.0f} echo_cpu_us={e.cpu_us:.0f} "
            + (
                f"one_process_vs_echo={median(points['one-process']).rps / e.rps:.2f} "
                if a.one_process and e.rps
                else ""
            )
            + f"failed={sum(failed.values())}"
        )
        return 1 if failed else 0
    finally:
        for child in servers:
            child.stop()
        if a.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
