"""Load generator for Tessera: ``python -m client_sdk.load`` (``make load``).

Simulates many users, each running the product (some also its plugin) on a
device of their own, over several worker processes, each with its own event
loop and its own connections, against one server (or the servers of one
deployment: ``--target`` repeated or comma-separated; the calls go to the active
one and follow it through a takeover, as the SDK's do, RULES H3):

1. **provision**: a team, tokens, a product and a plugin, users imported in
   bulk and a key issued to each (with ``--admin-token``); or users and keys
   from ``--users-file``; or made-up keys (``--fake-users``, for servers that
   check none);
2. **ramp**: an ``Entitle`` per session, paced by ``--ramp-rate`` or as fast as
   ``--concurrency`` allows;
3. **steady**: ``Heartbeat`` round the live sessions at ``--heartbeat-rate``
   (or flat out), a share of them ``Idle`` instead;
4. **cycle** (``--cycle SECONDS``): ``Release`` then ``Entitle`` again, flat out;
5. **release**: a ``Release`` per live session.

Each user runs one session of the product at a time (RULES M9), so 100,000
live sessions take 100,000 users. The run is bounded by ``--max-calls`` and
``--max-duration`` and refuses targets off this machine unless
``--allow-remote``. At the end it prints, per phase and RPC, the calls, errors
by status code (and ``ErrorInfo`` reason), successful calls per second and
p50/p95/p99/max latency; ``--json FILE`` writes the same for machines.

The calls go through the generated stubs, not the client SDK: the SDK's
conveniences (background heartbeats, lease checks) are not what is measured,
and the generator must stay light, for it shares the machine with the server.
Only the SDK's ``Failover`` sits between: with one target it makes one attempt
per call (every failure is counted), with several it retries across them
(``--attempts``) and a call's latency includes its way to the active.
"""

from client_sdk.load.config import LoadConfig, RemoteTargetError, check_target, is_loopback
from client_sdk.load.runner import LoadError, RunResult, run

__all__ = [
    "LoadConfig",
    "LoadError",
    "RemoteTargetError",
    "RunResult",
    "check_target",
    "is_loopback",
    "run",
]
