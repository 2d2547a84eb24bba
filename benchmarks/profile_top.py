"""The top costs in a py-spy profile in collapsed stacks (``py-spy record --format raw``).

``make bench ARGS='--py-spy var/profiles/steady.txt'`` writes one of the server's
steady state. This prints, as shares of every sample, the frames that were on
the stack most (inclusive: a function and what it called) and those that were
running themselves (self: the leaf frame), so a note can name where the time goes.

Run: ``.venv/bin/python -m benchmarks.profile_top var/profiles/steady.txt [--top 25]``.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<name>.*?) \((?P<where>[^()]*)\)$")


def short(frame: str) -> str:
    """``name (file.py:12)`` as ``name (file.py)``: lines of one function count together."""
    found = FRAME.match(frame.strip())
    if found is None:
        return frame.strip()
    where = found["where"].rsplit(":", 1)[0]
    return f"{found['name']} ({where})"


def tally(text: str) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [short(f) for f in stack.split(";") if f]
        total += n
        for name in set(frames):
            inclusive[name] += n
        if frames:
            leaf[frames[-1]] += n
    return total, inclusive, leaf


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_top", description=__doc__)
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)
    total, inclusive, leaf = tally(a.profile.read_text(encoding="utf-8"))
    if not total:
        print("no samples")
        return 1
    print(f"{total:,} samples")
    for title, counts in (("inclusive", inclusive), ("self", leaf)):
        print(f"\n{title}:")
        for name, n in counts.most_common(a.top):
            print(f"{100 * n / total:6.1f}%  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
