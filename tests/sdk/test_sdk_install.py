"""The client SDK as a product vendor installs it: the project's wheel, outside the
repository, with only the dependencies a plain ``pip install tessera`` brings (the
server's are the ``server`` extra), its types seen by the vendor's mypy, and its two
tools starting where there are no Unix signals (Windows)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata as md
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.support import REPO, run_python

VENV_BIN = Path(sys.executable).parent
PIP = (sys.executable, "-m", "pip")
#: A requirement's distribution name (PEP 508), normalized (PEP 503).
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normalized(requirement: str) -> str:
    match = _NAME.match(requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _base_requirements() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {_normalized(r) for r in project["dependencies"]}


def _with_their_own(names: set[str]) -> set[str]:
    """``names`` and every distribution they require in turn (as installed here)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = md.requires(name) or []
        except md.PackageNotFoundError:  # one a marker leaves out here (an older Python's)
            continue
        for requirement in requirements:
            if "extra ==" not in requirement:
                todo.append(_normalized(requirement))
    return seen


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the tree (no stale build/ reused)."""
    out = tmp_path_factory.mktemp("wheel")
    src = out / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".venv",
            "build",
            "*.egg-info",
            "__pycache__",
            "node_modules",
            ".git",
            "test-output",
            "var",
            ".mypy_cache",
            ".ruff_cache",
            ".pytest_cache",
            ".hypothesis",
        ),
    )
    subprocess.run(
        [*PIP, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("tessera-*.whl"))


def test_sdk_install_brings_no_server_dependency(wheel: Path) -> None:
    """A plain install requires what the SDK imports, nothing of the server's: each
    unconditional Requires-Dist of the wheel is one of pyproject's base dependencies,
    and the server's (asyncpg, structlog, starlette...) come only with the extra."""
    meta = zipfile.ZipFile(wheel).read("tessera-0.1.0.dist-info/METADATA").decode()
    plain = {
        _normalized(line.split(":", 1)[1])
        for line in meta.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    }
    server = {
        _normalized(line.split(":", 1)[1])
        for line in meta.splitlines()
        if line.startswith("Requires-Dist:") and 'extra == "server"' in line
    }
    assert plain == _base_requirements()
    assert {"asyncpg", "aiosqlite", "structlog", "starlette", "uvloop"} <= server
    assert plain & server == set()


def test_sdk_imports_only_what_its_install_brings() -> None:
    """Every module of client_sdk and tessera_api imports in a fresh interpreter where
    nothing is found but the standard library, the SDK and the base dependencies (with
    what they require): a vendor without the server extra runs it. (grpc itself looks
    for grpc_health and grpc_reflection, and goes on without them.)"""
    allowed = _with_their_own(_base_requirements())
    blocked = sorted(
        top
        for top, dists in md.packages_distributions().items()
        if top not in {"client_sdk", "tessera_api"}
        and not ({_normalized(d) for d in dists} & allowed)
    )
    assert {"server", "portal", "structlog", "asyncpg", "grpc_health"} <= set(blocked)
    code = (
        "import importlib, json, pkgutil, sys\n"
        f"blocked = set({blocked!r})\n"
        "class Absent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in blocked:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Absent())\n"
        "before = {n.split('.')[0] for n in sys.modules}  # a .pth's (setuptools')\n"
        "import client_sdk, tessera_api\n"
        "for pkg in (client_sdk, tessera_api):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "loaded = {n.split('.')[0] for n in sys.modules} - before\n"
        "print(json.dumps(sorted(loaded & blocked)))\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_sdk_types_reach_a_vendors_mypy(wheel: Path, tmp_path: Path) -> None:
    """The wheel marks client_sdk and tessera_api typed (PEP 561): a product checked
    with mypy against the installed wheel gets the SDK's types, a wrong one refused."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"client_sdk/py.typed", "tessera_api/py.typed"} <= names
    site = tmp_path / "site"
    subprocess.run(
        [*PIP, "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    product, cache = tmp_path / "product.py", tmp_path / "cache"
    product.write_text(
        "import client_sdk\n\n"
        "def start(key: str) -> None:\n"
        "    with client_sdk.Client('127.0.0.1:1', key) as c:\n"
        "        with c.session('MAYA', '2026') as s:\n"
        "            rate: str = s.session.daily_rate\n"
        "            print(rate)\n"
    )
    done = subprocess.run(
        [
            str(VENV_BIN / "mypy"),
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(cache),
            str(product),
        ],
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": "", "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
    )
    assert "import-untyped" not in done.stdout
    assert 'Incompatible types in assignment (expression has type "int"' in done.stdout


@pytest.mark.parametrize(
    ("module", "gone", "said"),
    [
        ("server.__main__", "structlog", "tessera-server: structlog is not installed: the server"),
        ("portal.__main__", "h11", "python -m portal: h11 is not installed: the portal"),
    ],
)
def test_server_without_its_extra_says_what_to_install(module: str, gone: str, said: str) -> None:
    """``tessera-server`` and ``python -m portal`` from a plain install (the SDK's
    dependencies only) end with one line naming the missing module and the extra, not
    a traceback."""
    code = (
        "import sys\n"
        "class Gone:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {gone!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Gone())\n"
        f"import {module}\n"
    )
    done = run_python(code, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip() == f"{said} needs the 'server' extra (pip install 'tessera[server]')"


def test_demo_starts_without_unix_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no SIGHUP, and its event loop takes no signal handlers: the demo
    product runs there (stopped by Ctrl+C alone) instead of failing at its start."""
    from client_sdk import demo

    monkeypatch.delattr(signal, "SIGHUP")

    def refused(*args: object) -> None:  # as asyncio's ProactorEventLoop
        raise NotImplementedError

    monkeypatch.setattr(asyncio.AbstractEventLoop, "add_signal_handler", refused)
    import asyncio.unix_events as unix

    monkeypatch.setattr(unix._UnixSelectorEventLoop, "add_signal_handler", refused)
    played: list[str] = []

    async def play(args: object) -> int:
        played.append(str(getattr(args, "target", "")))
        return 0

    monkeypatch.setattr(demo, "play", play)
    assert demo.main(["--target", "127.0.0.1:1", "--user-key", "k"]) == 0
    assert played == ["127.0.0.1:1"]


def test_load_tool_starts_without_a_load_average(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no os.getloadavg: the load tool's driver opens a run without it (the
    start's load average left empty) and its report says "unknown", instead of a
    traceback before the run."""
    from client_sdk.load import runner
    from client_sdk.load.__main__ import report

    monkeypatch.delattr(os, "getloadavg")
    opened: list[str] = []
    monkeypatch.setattr(runner.Driver, "users", lambda self: opened.append("users") or [])
    monkeypatch.setattr(runner.Driver, "start_workers", lambda self, users: None)
    cfg = runner.LoadConfig(target="127.0.0.1:1", users=1, fake_users=True)
    driver = runner.Driver(cfg)
    with contextlib.suppress(Exception):
        driver.open()  # past the load average: what follows needs workers
    assert opened == ["users"]
    assert driver.result.load_average == ()
    assert "load average at the start unknown" in report(driver.result)
