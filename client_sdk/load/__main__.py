"""``python -m client_sdk.load``: run a load test and print what it measured."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from client_sdk.load.config import RemoteTargetError, check_writable_file, parse
from client_sdk.load.progress import make_progress
from client_sdk.load.runner import LoadError, RunResult, run
from client_sdk.load.stats import render_table

EXIT_CODES = """exit codes (the first that applies):
  2    usage: a bad option, an unreadable or unwritable file, a remote target
       (checked before any work)
  130  interrupted (SIGINT or SIGTERM)
  3    stopped early: --max-calls or --max-duration was reached before the phases
       were done (what was opened is released all the same, within bounds)
  1    a call failed, a session was left live, or the run could not start
  0    every call succeeded and every session opened was released"""


def report(result: RunResult) -> str:
    r = result
    cfg = r.config
    lines = [
        f"{'targets' if ',' in r.target else 'target'} {r.target}: {r.users:,} users, {r.sessions:,} sessions, "
        f"{cfg.workers} workers x {cfg.channels} connections x {r.in_flight or cfg.concurrency} in flight",
        f"live sessions: {r.live_after_ramp:,} after ramp-up, {r.live_steady:,} at the end "
        "of the steady state"
        + (
            f" ({r.server_live_sessions:,} listed by the server)"
            if r.server_live_sessions is not None
            else ""
        )
        + f", {r.live_at_end:,} at the end",
    ]
    if r.ended:
        ended = ", ".join(f"{k} {v:,}" for k, v in sorted(r.ended.items()))
        lines.append(f"sessions the server ended: {ended}")
    if r.provision_seconds:
        lines.append(f"provisioning took {r.provision_seconds:.1f} s")
    if r.phases.get("cycle") is not None:
        lines.append(f"Release+Entitle cycle: {r.cycle_rps():,.0f} calls/s")
    la = ", ".join(f"{x:.2f}" for x in r.load_average) or "unknown"
    lines.append(f"run took {r.seconds:.1f} s; load average at the start {la}")
    if r.aborted:
        lines.append(f"STOPPED EARLY: {r.aborted}")
    if cfg.release and r.live_at_end:
        lines.append(
            f"LEFT LIVE: {r.live_at_end:,} sessions could not be released "
            "(the server ends them when their heartbeats stop)"
        )
    return render_table(r.rows()) + "\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    cfg, ns = parse(argv, epilog=EXIT_CODES)
    to_stdout = ns.json_out == "-"
    try:
        cfg.validate()
        if ns.json_out and not to_stdout:
            check_writable_file(Path(ns.json_out), "--json")
    except (RemoteTargetError, ValueError) as exc:
        print(f"client_sdk.load: {exc}", file=sys.stderr)
        return 2
    try:
        result = run(cfg, make_progress(not ns.no_progress))
    except (RemoteTargetError, ValueError) as exc:
        print(f"client_sdk.load: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a users file that went away, say
        print(f"client_sdk.load: {exc}", file=sys.stderr)
        return 2
    except LoadError as exc:
        print(f"client_sdk.load: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("client_sdk.load: interrupted", file=sys.stderr)
        return 130
    print(report(result), file=sys.stderr if to_stdout else sys.stdout)
    if ns.json_out:
        text = json.dumps(result.as_dict(), indent=2)
        if to_stdout:
            print(text)
        else:
            try:
                path = Path(ns.json_out)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text + "\n", encoding="utf-8")
            except OSError as exc:  # checked before the run, but a disk can fill up
                print(f"client_sdk.load: --json {ns.json_out}: {exc}", file=sys.stderr)
                return 2
    return exit_code(result)


def exit_code(result: RunResult) -> int:
    """What the command exits with (``EXIT_CODES``, the first that applies)."""
    if result.aborted == "interrupted":
        return 130
    if result.aborted:
        return 3
    errors = sum(row.calls - row.ok for row in result.rows())
    return 1 if errors or (result.config.release and result.live_at_end) else 0


if __name__ == "__main__":
    sys.exit(main())
