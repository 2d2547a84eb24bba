"""The README's table of the server's flags, made from ``server/config.py``'s
``OPTIONS`` (the same data ``--help`` is built from), so the two cannot differ.

    python scripts/flags_table.py           print the table (Markdown)
    python scripts/flags_table.py --write   put it into README.md between the markers (make docs)
    python scripts/flags_table.py --check   exit 1 if README.md's table is not this one
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.config import flags_table  # noqa: E402 - after the path above

README = ROOT / "README.md"
BEGIN = "<!-- flags:begin -->"
END = "<!-- flags:end -->"


def spliced(readme: str, table: str) -> str:
    """``readme`` with ``table`` between the markers."""
    head, begin, rest = readme.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        sys.exit(f"flags_table: {README.name} has no {BEGIN} ... {END} section")
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="update README.md")
    mode.add_argument("--check", action="store_true", help="fail if README.md differs")
    a = p.parse_args(argv)
    table = flags_table()
    if not (a.write or a.check):
        sys.stdout.write(table)
        return 0
    readme = README.read_text(encoding="utf-8")
    wanted = spliced(readme, table)
    if a.check:
        if wanted != readme:
            print("README.md's flags table is not what server/config.py says: run `make docs`")
            return 1
        return 0
    if wanted != readme:
        README.write_text(wanted, encoding="utf-8")
        print("flags_table: README.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
