"""docs/ops/ (issue 16): the Prometheus alert rules parse and pass their unit
tests (promtool), every dashboard query parses, and every metric the rules and
the dashboard query is one a real server's /metrics has."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tests.licensing_desk import Desk
from tests.ops.scrape import names, scrape
from tests.support import REPO, ServerThread

OPS = REPO / "docs" / "ops"
RULES = OPS / "tessera-alerts.yml"
RULE_TESTS = OPS / "tessera-alerts.test.yml"
DASHBOARD = OPS / "tessera-dashboard.json"
PROMTOOL = shutil.which("promtool")
METRIC = re.compile(r"\btessera_[a-z0-9_]+\b")
# The alerts issue 16 asks for: low balance by forecast, no active server, commit
# latency, a spike of refusals.
ASKED = {
    "TesseraLowBalanceForecast",
    "TesseraNoActiveServer",
    "TesseraCommitLatencyHigh",
    "TesseraRefusalsSpike",
    # and two found missing since: commits that do not get through (rev10), repeated
    # takeovers (its test now judges between scrapes, as a Prometheus does)
    "TesseraCommitsStalled",
    "TesseraTakeover",
}


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]


def promtool() -> str:
    """promtool's path; under CI its absence fails (.ci/run installs it), elsewhere skips."""
    if PROMTOOL is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return PROMTOOL


def run(*args: str, cwd: Path = OPS) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_rules_hold_the_four_alerts_each_with_severity_and_summary() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= ASKED
    for rule in rules:
        assert rule["expr"].strip() and METRIC.search(rule["expr"]), rule
        assert rule["labels"]["severity"] in ("page", "warning", "info"), rule
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule


def test_promtool_checks_the_rules_and_their_unit_tests() -> None:
    tool = promtool()
    assert f"SUCCESS: {len(alert_rules())} rules found" in run(tool, "check", "rules", RULES.name)
    tested = {
        t["alertname"]
        for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    assert tested >= ASKED  # each asked-for alert fires (and stays quiet) when it should
    assert "SUCCESS" in run(tool, "test", "rules", RULE_TESTS.name)


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    tool = promtool()
    queries = dashboard_queries()
    assert len(queries) >= 20
    # Each query as a recording rule: promtool parses its PromQL.
    rules = [{"record": f"tessera_dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)]
    (tmp_path / "queries.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]})
    )
    assert f"SUCCESS: {len(queries)} rules found" in run(
        tool, "check", "rules", "queries.yml", cwd=tmp_path
    )


def test_every_metric_the_rules_and_the_dashboard_query_is_scraped(
    metered: ServerThread, ops_desk: Desk
) -> None:
    d = ops_desk
    d.team("alpha", 100)
    d.team("gamma")
    ann, eve = d.user("alpha", "ann"), d.user("gamma", "eve")
    d.entitle(ann)
    d.refused_entitle(eve, grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_TOKENS")
    d.advance(6 * 60)
    scraped = names(scrape(metered))
    queried = {
        name
        for expr in [r["expr"] for r in alert_rules()] + dashboard_queries()
        for name in METRIC.findall(expr)
    }
    assert len(queried) >= 20
    assert queried <= scraped, sorted(queried - scraped)


# A structlog call's event: log.warning("store_busy", ...) or log.error(\n "…", ...).
LOG_CALL = re.compile(r"\blog\.(\w+)\(\s*\"([^\"]+)\"")


def emitted_events() -> dict[str, set[str]]:
    """Every event the server and the portal log, by level."""
    found: dict[str, set[str]] = {}
    for path in [*(REPO / "server").rglob("*.py"), *(REPO / "portal").rglob("*.py")]:
        for level, event in LOG_CALL.findall(path.read_text()):
            if level in ("debug", "info", "warning", "error", "exception", "critical"):
                found.setdefault(event, set()).add(level)
    return found


def test_ops_every_warning_and_error_the_server_logs_is_in_the_log_events_table() -> None:
    """docs/ops/README.md's "Log events" names every event logged at warning or
    above, so that an operator paged at night finds what each means and what to
    do (18 such events were named nowhere), and names no event no code logs."""
    text = (OPS / "README.md").read_text()
    table = text[text.index("## Log events") :].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([^`]+)`", table.split("| --- |", 1)[1]))
    events = emitted_events()
    serious = {e for e, levels in events.items() if levels - {"debug", "info"}}
    assert serious - documented == set()
    named = {line.split("|")[1] for line in table.splitlines() if line.startswith("| `")}
    named_events = {e for cell in named for e in re.findall(r"`([^`]+)`", cell)}
    assert named_events - events.keys() == set()
