"""Benchmark: import 10,000 new users in one ImportUsers call (issue 3, "Measure").

Starts a real server as a child process (``python -m server`` on 127.0.0.1
port 0, test clock, a throwaway database), creates a team, calls
``ImportUsers`` once with 10,000 entries ``User N <userN@example.com>``, and
prints the call's wall time, the server's peak resident memory (``VmHWM``
from ``/proc/<pid>/status``) before and after, and the longest wait of a
``GetServerInfo`` sent every 20 ms on another connection meanwhile (how long the
call kept the server's event loop from every other call). Then stops the server
with SIGTERM. Loopback only; one call, and the probe's calls while it runs.

Run: ``.venv/bin/python -m benchmarks.import_users`` (``--users N`` to change the count).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import grpc

from tessera_api.tessera.v1 import admin_service_pb2 as api
from tessera_api.tessera.v1 import admin_service_pb2_grpc, common_pb2
from tests.support import ADMIN_TOKEN, ServerProcess

MIB = 1024 * 1024


def proc_status(pid: int, field: str) -> int:
    """A ``kB`` figure of /proc/<pid>/status (VmHWM, VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


class Probe(threading.Thread):
    """``GetServerInfo`` every ``every`` seconds until ``stop``: the longest wait."""

    def __init__(self, target: str, auth: tuple[tuple[str, str], ...], every: float = 0.02):
        super().__init__(name="probe", daemon=True)
        self.target, self.auth, self.every = target, auth, every
        self.worst, self.calls = 0.0, 0
        self._stopping = threading.Event()

    def run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = admin_service_pb2_grpc.AdminServiceStub(channel)
            while not self._stopping.wait(self.every):
                sent = time.perf_counter()
                stub.GetServerInfo(api.GetServerInfoRequest(), metadata=self.auth, timeout=60)
                self.worst = max(self.worst, time.perf_counter() - sent)
                self.calls += 1

    def stop(self) -> None:
        self._stopping.set()
        self.join(70)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tessera-bench-") as tmp:
        server = ServerProcess(Path(tmp) / "bench.db").start()
        if server.proc is None:
            raise RuntimeError("the server did not start")
        pid = server.proc.pid
        try:
            options = [
                ("grpc.max_receive_message_length", 64 * MIB),
                ("grpc.max_send_message_length", 64 * MIB),
            ]
            with grpc.insecure_channel(server.target, options=options) as channel:
                stub = admin_service_pb2_grpc.AdminServiceStub(channel)
                auth = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
                stub.CreateTeam(
                    api.CreateTeamRequest(
                        team_id="bench", display_name="Bench", plan=common_pb2.PLAN_STANDARD
                    ),
                    metadata=auth,
                )
                users = [f"User {n} <user{n}@example.com>" for n in range(args.users)]
                request = api.ImportUsersRequest(team_id="bench", users=users)
                hwm_before = proc_status(pid, "VmHWM")
                rss_before = proc_status(pid, "VmRSS")

                probe = Probe(server.target, auth)
                probe.start()
                start = time.perf_counter()
                try:
                    response = stub.ImportUsers(request, metadata=auth, timeout=600)
                finally:
                    elapsed = time.perf_counter() - start
                    probe.stop()

                hwm_after = proc_status(pid, "VmHWM")
                rss_after = proc_status(pid, "VmRSS")
            active = sum(m.state == common_pb2.MEMBER_STATE_ACTIVE for m in response.members)
            print(f"ImportUsers: {args.users:,} new users in one call")
            print(f"  request size     {request.ByteSize() / MIB:8.2f} MiB")
            print(
                f"  response size    {response.ByteSize() / MIB:8.2f} MiB "
                f"({len(response.members):,} members, {active:,} active)"
            )
            print(f"  wall time        {elapsed:8.3f} s")
            print(
                f"  other calls      {probe.worst * 1000:8.0f} ms the longest wait "
                f"({probe.calls:,} GetServerInfo, one every 20 ms)"
            )
            print(
                f"  server VmHWM     {hwm_before / MIB:8.1f} MiB before -> "
                f"{hwm_after / MIB:.1f} MiB after (+{(hwm_after - hwm_before) / MIB:.1f} MiB)"
            )
            print(
                f"  server VmRSS     {rss_before / MIB:8.1f} MiB before -> "
                f"{rss_after / MIB:.1f} MiB after"
            )
            if len(response.members) != args.users or active != args.users:
                print("  UNEXPECTED: not every user came back as an active member")
                return 1
        finally:
            code = server.terminate()
            for thread in threading.enumerate():
                if thread.name.endswith("(_drain)"):
                    thread.join(10)
            if server.proc.stdout is not None:
                server.proc.stdout.close()
            print(f"  server exit code {code} (SIGTERM)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
