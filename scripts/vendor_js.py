"""Copy the portal's front-end libraries from node_modules into portal/static/vendor.

The versions are pinned in package.json / package-lock.json (npm registry); ``make vendor``
runs ``npm ci`` and then this script, and the copies are committed with their licenses, so
that the portal, ``make run`` and ``make test`` need no npm and no network, and a page never
loads a script from a CDN. ``--check`` fails when a committed copy differs from what npm
installed (run after ``npm ci``); tests/portal/test_vendor.py checks the pinned version
against the copy's own header without npm.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "portal" / "static" / "vendor"

#: package -> (file inside the package, name in portal/static/vendor)
FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "chart.js": (
        ("dist/chart.umd.min.js", "chart.umd.min.js"),
        ("LICENSE.md", "chart.js.LICENSE.md"),
    ),
}


def pinned(package: str) -> str:
    """The version package-lock.json pins for ``package``."""
    lock = json.loads((ROOT / "package-lock.json").read_text())
    version: str = lock["packages"][f"node_modules/{package}"]["version"]
    return version


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--check", action="store_true", help="compare instead of copying")
    check = args.parse_args(argv).check
    stale = []
    for package, files in FILES.items():
        source = ROOT / "node_modules" / package
        installed = json.loads((source / "package.json").read_text())["version"]
        if installed != pinned(package):
            print(
                f"{package} {installed} is installed, the lockfile pins {pinned(package)}: npm ci"
            )
            return 1
        for inside, name in files:
            data = (source / inside).read_bytes()
            target = VENDOR / name
            if check:
                if not target.exists() or target.read_bytes() != data:
                    stale.append(str(target.relative_to(ROOT)))
                continue
            VENDOR.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            print(f"{package} {installed}: {inside} -> {target.relative_to(ROOT)}")
    if stale:
        print("not what npm installed (run `make vendor` and commit): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
