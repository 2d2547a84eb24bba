"""Loading the state at start without the garbage collector in the way.

Store-neutral: every adapter's ``load`` runs in ``loading()``, and so does
``Engine.restore`` in the wiring (``server/app.py``).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """Keep the cyclic garbage collector off while the state loads, then freeze
    what was loaded (``gc.freeze``).

    A load makes millions of objects that all stay: every pass of the collector
    would walk them again and again (a third of the time of a load and a restore
    of a million sessions). Merely deferring the passes does not help, since the
    objects would then be walked once per generation as they age, and every full
    pass after that would walk them all. Frozen, they are left out of every pass;
    freed by reference counting as ever. Garbage from before the load is
    collected first so that none of it is frozen. Every store's ``load`` runs in it, and
    so does ``Engine.restore`` (``server/app.py``), whose indexes and deadlines
    of what was loaded stay as long.
    """
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if was_enabled:
            gc.enable()
