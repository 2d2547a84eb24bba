"""What handing a call from the front to the back costs the back, alone.

With the front process (the default with two cores or more), every call
reaches the server as an item of a frame on a Unix socket (``server/front.py``),
and the back runs it as a task of its own. This measures that part and
nothing else: a real ``Back`` and its ``Link``, in a child process, with a gate
whose one handler answers canned bytes at once, fed by this process through
a ``Link`` of its own (as the front feeds it) at ``--in-flight`` calls at a
time. For each ``--in-flight`` it prints the calls a second, the calls a
frame, and the back's CPU a call (its process's CPU over the run, less what it
had spent when it became ready), then a ``HANDOVER`` line.

Under ``make bench`` the front's frames carry one call each (calls arrive
about half a millisecond apart); how many calls a frame carries at a given
number in flight, and what each call then costs the back, is what this shows
(``docs/performance-log.md``, "Where an Entitle's wait goes").

Run: ``.venv/bin/python -m benchmarks.handover [--calls N] [--in-flight 2 8 32]
[--one-per-frame]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from server import loops
from server.config import Config
from server.front import Back, Link

METHOD = "/tessera.v1.LicensingService/Heartbeat"
REQUEST = b"r" * 60  # about a Heartbeat request's size
PEER = "ipv4:127.0.0.1:50412"  # the client's address, as the front sends it with each call
ANSWER = b"a" * 300  # about a Heartbeat answer's size


class CannedGate:
    """The gate as ``run_call`` asks it: one handler, canned answers."""

    def __init__(self) -> None:
        async def answer(request: bytes, context: Any) -> bytes:
            return ANSWER

        self.handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
            answer
        )

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        return self.handler


async def serve(path: str) -> None:
    """The back's side: take calls on ``path`` until the other side closes."""
    loop = asyncio.get_running_loop()
    back = Back(CannedGate())  # type: ignore[arg-type]  # a stand-in gate, by design
    frames = 0
    on_batch = back.link.on_batch

    def counted(batch: list[tuple[Any, ...]]) -> None:
        nonlocal frames
        frames += 1
        on_batch(batch)

    back.link.on_batch = counted
    server = await loop.create_unix_server(lambda: back.link, path)
    print(f"ready {time.process_time()}", flush=True)
    await back.link.closed
    server.close()
    print(f"done {time.process_time()} {frames}", flush=True)


async def feed(path: str, calls: int, in_flight: int, one_per_frame: bool) -> float:
    """The front's side: ``calls`` calls, ``in_flight`` at a time; their seconds.
    ``one_per_frame``: each call written at once, in a frame of its own (as the
    front's are when its calls arrive apart)."""
    loop = asyncio.get_running_loop()
    waiting: dict[int, asyncio.Future[tuple[Any, ...]]] = {}

    def answered(batch: list[tuple[Any, ...]]) -> None:
        for item in batch:
            future = waiting.pop(item[0], None)
            if future is not None:
                future.set_result(item)

    link = Link(answered)
    await loop.create_unix_connection(lambda: link, path)

    def gone(_: object) -> None:
        """The back closed the link under calls (it failed): they fail, not wait."""
        for future in waiting.values():
            if not future.done():
                future.set_exception(RuntimeError("the back closed the link (its output says why)"))

    link.closed.add_done_callback(gone)
    ids = itertools.count()
    metadata = (("authorization", "Bearer a-user-key"),)

    async def lane(n: int) -> None:
        for _ in range(n):
            if link.closed.done():
                raise RuntimeError("the back closed the link (its output says why)")
            call_id = next(ids)
            future = waiting[call_id] = loop.create_future()
            link.send((call_id, METHOD, metadata, REQUEST, PEER))
            if one_per_frame:
                link.flush()
            code = (await future)[1]
            if code:
                raise RuntimeError(f"the back refused a call: {code}")

    began = time.perf_counter()
    try:
        await asyncio.gather(*(lane(calls // in_flight) for _ in range(in_flight)))
    finally:  # the back runs until its link closes: close it on a failure too
        if link.transport is not None:
            link.transport.close()
    return time.perf_counter() - began


def one(calls: int, in_flight: int, event_loop: str, one_per_frame: bool) -> dict[str, float]:
    calls -= calls % in_flight
    with tempfile.TemporaryDirectory(prefix="tessera-handover-") as folder:
        path = str(Path(folder) / "back.sock")
        with subprocess.Popen(  # noqa: S603 - this interpreter, this module
            [
                sys.executable,
                "-m",
                "benchmarks.handover",
                "--serve",
                path,
                "--event-loop",
                event_loop,
            ],
            stdout=subprocess.PIPE,
            text=True,
        ) as back:
            out = back.stdout
            if out is None:  # stdout=PIPE: never
                raise RuntimeError("the back's output is not piped")
            ready = float(out.readline().split()[1])
            with asyncio.Runner(loop_factory=loops.loop_factory(event_loop)) as runner:
                seconds = runner.run(feed(path, calls, in_flight, one_per_frame))
            _, spent, frames = out.readline().split()
            back.wait(30)
    return {
        "in_flight": in_flight,
        "calls_per_second": calls / seconds,
        "calls_per_frame": calls / int(frames),
        "back_cpu_us": (float(spent) - ready) / calls * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=40_000, help="calls for each --in-flight")
    p.add_argument("--in-flight", type=int, nargs="+", default=[2, 4, 8, 32])
    p.add_argument(
        "--event-loop", choices=loops.EVENT_LOOPS, default=Config.event_loop, help="both processes'"
    )
    p.add_argument(
        "--one-per-frame",
        action="store_true",
        help="write each call in a frame of its own, as the front does under make bench",
    )
    p.add_argument("--serve", help=argparse.SUPPRESS)  # the back's process
    a = p.parse_args(argv)
    if a.serve:
        with asyncio.Runner(loop_factory=loops.loop_factory(a.event_loop)) as runner:
            runner.run(serve(a.serve))
        return 0
    results = [one(a.calls, n, a.event_loop, a.one_per_frame) for n in a.in_flight]
    for r in results:
        print(
            f"{r['in_flight']:>4.0f} in flight: {r['calls_per_second']:>8,.0f} calls/s, "
            f"{r['calls_per_frame']:5.2f} calls a frame, the back {r['back_cpu_us']:6.1f} µs CPU a call"
        )
    print(
        "HANDOVER "
        + " ".join(f"back_cpu_us_at_{r['in_flight']:.0f}={r['back_cpu_us']:.1f}" for r in results)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
