"""The live progress display: rich's progress bar when rich is installed and
stderr is a terminal, a one-line status otherwise (rewritten in place on a
terminal, a line every few seconds in a log)."""

from __future__ import annotations

import importlib
import sys
import time
from typing import Any, Protocol, TextIO


class Progress(Protocol):
    def phase(self, label: str, total: float | None) -> None: ...

    def update(self, completed: float, info: str) -> None: ...

    def close(self) -> None: ...


class NoProgress:
    def phase(self, label: str, total: float | None) -> None:
        pass

    def update(self, completed: float, info: str) -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress:
    """``label  [#####.....]  42%  info`` on one line of a terminal; in a log (not a
    terminal) the same line every ``interval`` seconds."""

    def __init__(self, stream: TextIO = sys.stderr, interval: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval
        self.label = ""
        self.total: float | None = None
        self.last = 0.0
        self.text = ""

    def phase(self, label: str, total: float | None) -> None:
        self._end_line()
        self.label, self.total, self.last = label, total, 0.0

    def update(self, completed: float, info: str) -> None:
        bar = ""
        if self.total:
            frac = min(1.0, max(0.0, completed / self.total))
            filled = int(frac * 24)
            bar = f"[{'#' * filled}{'.' * (24 - filled)}] {frac * 100:3.0f}%  "
        self.text = f"{self.label:<14} {bar}{info}"
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.text)
            self.stream.flush()
        elif now - self.last >= self.interval:
            self.last = now
            self.stream.write(self.text + "\n")
            self.stream.flush()

    def _end_line(self) -> None:
        if self.text:
            if self.tty:
                self.stream.write("\n")
            else:
                self.stream.write(self.text + "\n")
            self.stream.flush()
        self.text = ""

    def close(self) -> None:
        self._end_line()


class RichProgress:
    """rich.progress with one task per phase (rich is optional: imported lazily)."""

    def __init__(self) -> None:
        rp: Any = importlib.import_module("rich.progress")
        console: Any = importlib.import_module("rich.console").Console(stderr=True)
        self.bar = rp.Progress(
            rp.TextColumn("{task.description:<14}"),
            rp.BarColumn(),
            rp.TaskProgressColumn(),
            rp.TimeElapsedColumn(),
            rp.TextColumn("{task.fields[info]}"),
            console=console,
            refresh_per_second=5,
        )
        self.bar.start()
        self.task: Any = None

    def phase(self, label: str, total: float | None) -> None:
        self.task = self.bar.add_task(label, total=total, info="")

    def update(self, completed: float, info: str) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=completed, info=info)

    def close(self) -> None:
        self.bar.stop()


def make_progress(enabled: bool = True, stream: TextIO = sys.stderr) -> Progress:
    if not enabled:
        return NoProgress()
    if stream.isatty():
        try:
            return RichProgress()
        except ImportError:
            pass
    return LineProgress(stream)
