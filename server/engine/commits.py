"""The engine's side of the group commit: what is on its way to the store.

Every use case stores its changes through ``Commits.commit`` and answers only
once it returns; ``settled`` waits for the commits already under way (the one
use of the port's ``barrier``); ``unsettled`` tells whether a given session or
meter is in one of them (a heartbeat's answer waits only for its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from server.domain.changes import Changes, Deleted
from server.domain.sessions import Meter, Session
from server.logs import call_context
from server.store.port import StorePort

Hook = Callable[[Changes], None]

log = structlog.get_logger()


class Commits:
    def __init__(self, store: StorePort) -> None:
        self._store = store
        # Called, in order, on every non-empty ``changes`` just before it is handed to
        # the store: what they add is stored in the same commit (RULES AD2's audit
        # event, L1's alert).
        self._hooks: list[Hook] = []
        self._committing = 0  # commits under way (see ``settled``)
        # Sessions and meters in commits under way, by id: how many commits (see
        # ``unsettled``).
        self._unsettled: dict[int, int] = {}
        self._waiting: set[asyncio.Task[None]] = set()  # for cancelled callers' commits

    async def commit(self, changes: Changes) -> None:
        """Store ``changes``; return once they and every change made before them are
        stored. With nothing to store, still wait for what other calls are storing:
        an answer drawn from memory (a session a pending deadline just ended or
        charged) must not promise what a crash could undo."""
        if not changes:
            await self.settled()
            return
        for hook in self._hooks:
            hook(changes)
        self._committing += 1
        unsettled = self._unsettled
        watched = [
            id(o)
            for x in changes.items
            if type(o := x.obj if type(x) is Deleted else x) is Session or type(o) is Meter
        ]
        for key in watched:
            unsettled[key] = unsettled.get(key, 0) + 1
        try:
            await self._store.commit(changes)
        except asyncio.CancelledError:
            # Its caller gave up (a deadline, a client gone), not its rows: they stay
            # queued and are written. Until then they are under way, so that a repeat
            # (M11) or a heartbeat does not answer from memory what a crash could undo.
            task = asyncio.ensure_future(self._written(watched))
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)
            raise
        except BaseException:
            self._settle(watched)
            raise
        self._settle(watched)

    def _settle(self, watched: list[int]) -> None:
        """A commit is no longer under way: it is stored, or it failed."""
        self._committing -= 1
        unsettled = self._unsettled
        for key in watched:
            if (n := unsettled[key] - 1) > 0:
                unsettled[key] = n
            else:
                del unsettled[key]

    async def _written(self, watched: list[int]) -> None:
        """Settle a commit whose caller was cancelled once everything queued with it
        is stored (or the store has failed, which fails every later write too)."""
        try:
            try:
                await self.settled()  # this commit is still counted: a barrier
            except Exception:  # noqa: S110 - a failed store is told elsewhere (store_failed)
                pass
            else:
                # Its call's line said CANCELLED (its client saw DEADLINE_EXCEEDED or
                # its own cancel): the change was made all the same. This line, in the
                # call's context (method, request_id), says so; a timer's commit, whose
                # task a stop cancelled, is no call's (nobody was told otherwise).
                if call_context.get():
                    log.info("cancelled_call_committed")
        finally:
            self._settle(watched)

    def add_hook(self, hook: Hook) -> None:
        """Run ``hook(changes)`` on every commit's changes before they are stored,
        synchronously (so in the order the commits are made); what it adds to
        ``changes`` is stored with them, in one transaction."""
        self._hooks.append(hook)

    async def settled(self) -> None:
        """Return once every change already made in memory is stored (at once when
        no commit is under way)."""
        if self._committing:
            await self._store.barrier()

    @property
    def committing(self) -> bool:
        return self._committing > 0

    def unsettled(self, *objs: Session | Meter | None) -> bool:
        """Whether a commit under way stores one of ``objs``. A heartbeat's answer
        tells its session and meter; a deadline that just ended or charged them
        may still be on its way to disk, and the answer must not promise what a
        crash could undo, so it waits (``settled``). Commits of other sessions,
        meters and packs do not hold it up (the team's available tokens in the
        answer are a figure of the moment, not a promise)."""
        unsettled = self._unsettled
        return bool(unsettled) and any(id(o) in unsettled for o in objs if o is not None)
