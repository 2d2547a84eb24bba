"""The hot state in memory and the use cases that change it.

Each use case reads the clock once, checks and applies its change in memory
with no ``await`` in between (so two calls racing cannot both win), collects
what changed, and awaits the store's group commit before answering.
"""

from __future__ import annotations

from server.engine.core import Engine

__all__ = ["Engine"]
