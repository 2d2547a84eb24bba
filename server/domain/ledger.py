"""Token packs and their ledger: RULES T1-T6.

Every change to a pack is one append-only ``LedgerEntry`` that says how many
tokens moved between the pack's *remaining* and *held* counts, so summing a
pack's entries always gives its state (T6):

    kind          remaining_delta   held_delta   also
    PURCHASE      +n                 0
    HOLD          -n                +n           (grace begins, M2)
    CAPTURE        0                -n           consumed += n (M3)
    HOLD_RELEASE  +n                -n
    EXPIRY        -n                 0           expired += n (T4)
    MOVE_OUT      -n                 0           the pack leaves a team (T5)
    MOVE_IN       +n                 0           ... and joins another

Entries form a hash chain (tamper evidence): each carries
``hash = sha256(previous hash | its own fields)`` (``entry_digest``), so
editing, removing or reordering a stored entry breaks every hash after it;
``python -m server verify`` checks the chain and the sums.

A debit is a hold that is later captured: ``hold`` takes the daily rate from
the team's packs in the order of T3, possibly spanning several packs, and
``capture`` or ``release`` settles exactly the parts that the hold took.
"""

from __future__ import annotations

import bisect
import calendar
import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import NamedTuple

from server.domain.changes import Changes
from server.domain.errors import (
    AlreadyExists,
    InsufficientTokens,
    InvalidArgument,
    PackHasHolds,
    PackMoved,
    Problems,
    UnknownPack,
    UnknownTeam,
)
from server.domain.instants import micros
from server.domain.text import check_request_id

MAX_PURCHASE_TOKENS = 1_000_000_000


class EntryKind(Enum):
    PURCHASE = "PURCHASE"
    HOLD = "HOLD"
    CAPTURE = "CAPTURE"
    HOLD_RELEASE = "HOLD_RELEASE"
    EXPIRY = "EXPIRY"
    MOVE_OUT = "MOVE_OUT"
    MOVE_IN = "MOVE_IN"


class PackState(Enum):
    ACTIVE = "ACTIVE"
    DEPLETED = "DEPLETED"
    EXPIRED = "EXPIRED"


def add_one_year(t: datetime) -> datetime:
    """T1: one calendar year later; 29 February maps to 28 February."""
    year = t.year + 1
    day = t.day
    if t.month == 2 and day == 29 and not calendar.isleap(year):
        day = 28
    return t.replace(year=year, day=day)


@dataclass(slots=True)
class TokenPack:
    pack_id: str
    team_id: str
    tokens: int
    purchase_time: datetime
    expire_time: datetime
    request_id: str = ""
    remaining: int = 0
    held: int = 0
    consumed: int = 0
    expired_tokens: int = 0
    expired: bool = False
    # T1: the team that bought it. A retry of its purchase is that team's wherever
    # the pack has moved since (T5); "" in rows stored before it was kept.
    bought_by: str = ""

    @property
    def state(self) -> PackState:
        if self.expired:
            return PackState.EXPIRED
        if self.remaining == 0 and self.held == 0:
            return PackState.DEPLETED
        return PackState.ACTIVE

    def order_key(self) -> tuple[datetime, int, datetime, str]:
        """T3: earliest expiry, then smallest pack, then earliest purchase, then id."""
        return (self.expire_time, self.tokens, self.purchase_time, self.pack_id)

    def bought_key(self) -> tuple[datetime, str]:
        """A team's packs as listed: by purchase, then id."""
        return (self.purchase_time, self.pack_id)


@dataclass(slots=True, frozen=True)
class Cause:
    """Who a hold, capture or release is for (T6)."""

    session_id: str = ""
    user_id: str = ""
    product_id: str = ""


NO_CAUSE = Cause()


GENESIS_HASH = "0" * 64


def entry_digest(
    prev_hash: str,
    seq: int,
    time_us: int,
    kind: str,
    team_id: str,
    pack_id: str,
    amount: int,
    remaining_delta: int,
    held_delta: int,
    session_id: str,
    user_id: str,
    product_id: str,
) -> str:
    """The chain hash of one entry: its predecessor's hash and every stored field
    (times in microseconds since the epoch, as the store keeps them)."""
    text = "|".join(
        (
            prev_hash,
            str(seq),
            str(time_us),
            kind,
            team_id,
            pack_id,
            str(amount),
            str(remaining_delta),
            str(held_delta),
            session_id,
            user_id,
            product_id,
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(slots=True, frozen=True)
class LedgerEntry:
    seq: int
    time: datetime
    kind: EntryKind
    team_id: str
    pack_id: str
    amount: int
    remaining_delta: int
    held_delta: int
    cause: Cause = NO_CAUSE
    hash: str = ""

    @property
    def entry_id(self) -> str:
        return f"{self.seq:012d}"


Parts = tuple[tuple[str, int], ...]  # (pack_id, tokens) in the order T3 took them
_PARTS: dict[Parts, Parts] = {}
_PARTS_KEPT = 4096


def shared_parts(parts: Parts) -> Parts:
    """One tuple for equal parts (they are immutable): nearly every hold takes
    one rate from one pack, so a million holds in grace share a handful of
    tuples instead of holding two each (112 bytes). Bounded: past
    ``_PARTS_KEPT`` distinct ones the table starts again."""
    found = _PARTS.get(parts)
    if found is None:
        if len(_PARTS) >= _PARTS_KEPT:
            _PARTS.clear()
        found = _PARTS[parts] = parts
    return found


@dataclass(slots=True)
class Hold:
    """Tokens held for one meter in grace (M2): which packs gave how many, for
    whom (its cause, kept as its three ids: a ``Cause`` object per hold would
    cost 64 bytes more, and a million meters may be in grace)."""

    hold_id: str
    team_id: str
    amount: int
    parts: Parts
    session_id: str
    user_id: str
    product_id: str
    time: datetime

    @classmethod
    def of(
        cls, hold_id: str, team_id: str, amount: int, parts: Parts, cause: Cause, time: datetime
    ) -> Hold:
        return cls(
            hold_id,
            team_id,
            amount,
            shared_parts(parts),
            cause.session_id,
            cause.user_id,
            cause.product_id,
            time,
        )

    @property
    def cause(self) -> Cause:
        return Cause(self.session_id, self.user_id, self.product_id)


class BalanceNote(NamedTuple):
    """A team's available balance after a change (L1): when, how many, and whether
    the change lowered it."""

    time: datetime
    available: int
    fell: bool


@dataclass(slots=True)
class _Balance:
    remaining: int = 0
    held: int = 0
    # Every pack the team holds, as listed (``TokenPack.bought_key``).
    packs: list[TokenPack] = field(default_factory=list)
    # The packs with tokens to take (remaining, not expired), in T3 order: a hold
    # takes from the front and C3 reads the front's expiry, neither walking the
    # packs a team has spent or seen expire (a team buying daily keeps hundreds).
    live: list[TokenPack] = field(default_factory=list)

    def take_up(self, pack: TokenPack) -> None:
        """``pack`` has tokens to take again (bought, moved in, given back)."""
        bisect.insort(self.live, pack, key=TokenPack.order_key)

    def put_down(self, pack: TokenPack) -> None:
        """``pack`` has none to take any more (expired, moved out)."""
        live = self.live
        i = bisect.bisect_left(live, pack.order_key(), key=TokenPack.order_key)
        if i < len(live) and live[i] is pack:
            del live[i]


class Ledger:
    """All teams' packs, their balances and the append-only entries."""

    def __init__(self, next_seq: int = 1, last_hash: str = GENESIS_HASH) -> None:
        self.packs: dict[str, TokenPack] = {}
        self._balances: dict[str, _Balance] = {}
        self._by_request: dict[str, str] = {}
        self._next_seq = next_seq
        self._last_hash = last_hash or GENESIS_HASH
        # Tokens captured and expired per team since this ledger was built (the
        # server's metrics; the stored entries hold the whole history).
        self.captured: Counter[str] = Counter()
        self.expired: Counter[str] = Counter()
        # L1: each team's available balance after each change of it, in order, since
        # the last ``take_balances``; kept only once ``track_balances`` is called.
        self._balance_log: dict[str, list[BalanceNote]] | None = None

    # -- building -----------------------------------------------------------

    def add_team(self, team_id: str) -> None:
        self._balances.setdefault(team_id, _Balance())

    @classmethod
    def restore(
        cls,
        team_ids: Iterable[str],
        packs: Iterable[TokenPack],
        next_seq: int,
        last_hash: str = GENESIS_HASH,
    ) -> Ledger:
        ledger = cls(next_seq=next_seq, last_hash=last_hash)
        for team_id in team_ids:
            ledger.add_team(team_id)
        for pack in packs:
            ledger._index(pack, in_order=False)
        for bal in ledger._balances.values():
            bal.packs.sort(key=TokenPack.bought_key)
            bal.live.sort(key=TokenPack.order_key)
        return ledger

    def _index(self, pack: TokenPack, in_order: bool = True) -> None:
        self.packs[pack.pack_id] = pack
        bal = self._balances.setdefault(pack.team_id, _Balance())
        live = pack.remaining > 0 and not pack.expired
        if in_order:
            bisect.insort(bal.packs, pack, key=TokenPack.bought_key)
            if live:
                bal.take_up(pack)
        else:
            bal.packs.append(pack)
            if live:
                bal.live.append(pack)
        bal.remaining += pack.remaining
        bal.held += pack.held
        if pack.request_id:
            self._by_request[pack.request_id] = pack.pack_id

    def _balance(self, team_id: str) -> _Balance:
        bal = self._balances.get(team_id)
        if bal is None:
            raise UnknownTeam(f"no team {team_id!r}", team_id=team_id)
        return bal

    # -- reading ------------------------------------------------------------

    def available(self, team_id: str) -> int:
        """T2: tokens of unexpired packs neither consumed nor held."""
        return self._balance(team_id).remaining

    def held(self, team_id: str) -> int:
        return self._balance(team_id).held

    def team_packs(self, team_id: str) -> Sequence[TokenPack]:
        """The team's packs by purchase, then id (``TokenPack.bought_key``): the
        ledger's own list, kept in that order, to be read, not changed."""
        return self._balance(team_id).packs

    def live_packs(self, team_id: str) -> Sequence[TokenPack]:
        """The team's packs with tokens to take, in T3 order (the next taken first):
        the ledger's own list, to be read, not changed."""
        return self._balance(team_id).live

    def pack(self, pack_id: str) -> TokenPack:
        pack = self.packs.get(pack_id)
        if pack is None:
            raise UnknownPack(f"no token pack {pack_id!r}", pack_id=pack_id)
        return pack

    def next_expiry(self, team_id: str) -> datetime | None:
        """C3: when the team's next tokens to be consumed expire."""
        live = self._balance(team_id).live
        return live[0].expire_time if live else None

    @property
    def next_seq(self) -> int:
        return self._next_seq

    # -- what changed the balances (L1) ---------------------------------------------

    def track_balances(self) -> None:
        """From now on, log each team's available balance after every change of it
        (purchase, hold, release, expiry, move out and in), for ``take_balances``."""
        if self._balance_log is None:
            self._balance_log = {}

    def take_balances(self) -> dict[str, list[BalanceNote]]:
        """The balances logged since the last call, per team, in the order of the
        changes; the log starts afresh. Nothing changed: an empty dict, at the cost
        of one test."""
        log = self._balance_log
        if not log:
            return {}
        self._balance_log = {}
        return log

    def note_balance(self, team_id: str, now: datetime, fell: bool = False) -> None:
        """Log the team's available balance at ``now``, after a change that lowered
        it (``fell``: a hold, an expiry, a move out) or did not (a purchase, a
        release, a move in; or a change of what it is compared with: L1's threshold)."""
        log = self._balance_log
        if log is not None:
            note = BalanceNote(now, self._balance(team_id).remaining, fell)
            log.setdefault(team_id, []).append(note)

    # -- changing -----------------------------------------------------------

    def _entry(
        self,
        changes: Changes,
        now: datetime,
        kind: EntryKind,
        pack: TokenPack,
        amount: int,
        remaining_delta: int,
        held_delta: int,
        cause: Cause = NO_CAUSE,
    ) -> None:
        seq = self._next_seq
        digest = entry_digest(
            self._last_hash,
            seq,
            micros(now),
            kind.value,
            pack.team_id,
            pack.pack_id,
            amount,
            remaining_delta,
            held_delta,
            cause.session_id,
            cause.user_id,
            cause.product_id,
        )
        entry = LedgerEntry(
            seq=seq,
            time=now,
            kind=kind,
            team_id=pack.team_id,
            pack_id=pack.pack_id,
            amount=amount,
            remaining_delta=remaining_delta,
            held_delta=held_delta,
            cause=cause,
            hash=digest,
        )
        self._next_seq += 1
        self._last_hash = digest
        changes.upsert(entry)

    def purchase(
        self,
        team_id: str,
        tokens: int,
        request_id: str,
        now: datetime,
        new_id: Callable[[], str],
        changes: Changes,
    ) -> tuple[TokenPack, bool]:
        """T1: a new pack of ``tokens`` for the team. ``request_id`` is required (a
        retry must never buy twice): repeated with the same team and tokens it
        returns the first purchase's pack; with another team or number of tokens
        it is ``AlreadyExists`` and buys nothing. (The team compared is the one
        that bought the pack: once moved (T5), a retry from the buyer still returns
        it, now another team's, and is never told to buy again under a new id.)
        Returns (pack, created)."""
        bad = Problems()  # each bad field named, whatever the request id says
        bad.check(lambda: check_request_id(request_id, required=True))
        if tokens <= 0 or tokens > MAX_PURCHASE_TOKENS:
            bad["tokens"] = f"must be a whole number from 1 to {MAX_PURCHASE_TOKENS:,}"
        bad.raise_any()
        if request_id in self._by_request:
            pack = self.packs[self._by_request[request_id]]
            buyer = pack.bought_by or pack.team_id
            if buyer != team_id:  # another team's: its purchase is none of this one's
                raise AlreadyExists(
                    f"request_id {request_id!r} was already used for another purchase: "
                    "give this one a request_id of its own",
                    request_id=request_id,
                )
            if pack.tokens != tokens:
                raise AlreadyExists(
                    f"request_id {request_id!r} was already used for a purchase of "
                    f"{pack.tokens} tokens by team {buyer!r}",
                    request_id=request_id,
                    pack_id=pack.pack_id,
                )
            return pack, False
        self._balance(team_id)  # the team must exist
        pack = TokenPack(
            pack_id=new_id(),
            team_id=team_id,
            tokens=tokens,
            purchase_time=now,
            expire_time=add_one_year(now),
            request_id=request_id,
            remaining=tokens,
            bought_by=team_id,
        )
        self._index(pack)  # counts the new tokens into the team's balance
        self._entry(changes, now, EntryKind.PURCHASE, pack, tokens, tokens, 0)
        changes.upsert(pack)
        self.note_balance(team_id, now)
        return pack, True

    def hold(
        self,
        team_id: str,
        amount: int,
        cause: Cause,
        now: datetime,
        hold_id: str,
        changes: Changes,
    ) -> Hold:
        """M2: hold ``amount`` tokens, taken from packs in T3 order, or refuse."""
        bal = self._balance(team_id)
        if amount <= 0:
            raise ValueError("a hold is for a positive amount")
        if bal.remaining < amount:
            raise InsufficientTokens(team_id, bal.remaining, amount)
        parts: list[tuple[str, int]] = []
        need = amount
        spent = 0  # the packs at the front that this hold empties
        for pack in bal.live:
            take = min(need, pack.remaining)
            pack.remaining -= take
            pack.held += take
            parts.append((pack.pack_id, take))
            self._entry(changes, now, EntryKind.HOLD, pack, take, -take, take, cause)
            changes.upsert(pack)
            need -= take
            spent += pack.remaining == 0
            if need == 0:
                break
        del bal.live[:spent]
        bal.remaining -= amount
        bal.held += amount
        hold = Hold.of(hold_id, team_id, amount, tuple(parts), cause, now)
        changes.upsert(hold)
        self.note_balance(team_id, now, fell=True)
        return hold

    def capture(self, hold: Hold, now: datetime, changes: Changes) -> None:
        """M3: the held tokens are consumed, pack by pack as the hold took them."""
        for pack_id, take in hold.parts:
            pack = self.packs[pack_id]
            pack.held -= take
            pack.consumed += take
            self.captured[pack.team_id] += take
            self._balance(pack.team_id).held -= take
            self._entry(changes, now, EntryKind.CAPTURE, pack, take, 0, -take, hold.cause)
            changes.upsert(pack)
        changes.delete(hold)

    def release(self, hold: Hold, now: datetime, changes: Changes) -> None:
        """M3: the held tokens go back; tokens of a pack that expired meanwhile
        expire at once (T4)."""
        for pack_id, take in hold.parts:
            pack = self.packs[pack_id]
            bal = self._balance(pack.team_id)
            pack.held -= take
            pack.remaining += take
            bal.held -= take
            bal.remaining += take
            self._entry(changes, now, EntryKind.HOLD_RELEASE, pack, take, take, -take, hold.cause)
            if pack.expired:
                self._expire_remaining(pack, now, changes)
            elif pack.remaining == take:  # it had none left to take: it has again
                bal.take_up(pack)
            changes.upsert(pack)
        changes.delete(hold)
        self.note_balance(hold.team_id, now)  # a pack with holds never moves

    def expire(self, pack_id: str, now: datetime, changes: Changes) -> bool:
        """T4: at its expiry the pack's unconsumed tokens leave the balance for good.

        Held tokens stay held until their hold is captured or released. Returns
        whether anything changed (firing twice is harmless)."""
        pack = self.packs.get(pack_id)
        if pack is None or pack.expired or now < pack.expire_time:
            return False
        pack.expired = True
        if pack.remaining:
            self._expire_remaining(pack, now, changes)
            self.note_balance(pack.team_id, now, fell=True)
        changes.upsert(pack)
        return True

    def _expire_remaining(self, pack: TokenPack, now: datetime, changes: Changes) -> None:
        n = pack.remaining
        if n == 0:
            return
        bal = self._balance(pack.team_id)
        bal.put_down(pack)
        pack.remaining = 0
        pack.expired_tokens += n
        self.expired[pack.team_id] += n
        bal.remaining -= n
        self._entry(changes, now, EntryKind.EXPIRY, pack, n, -n, 0)

    def move(
        self, pack_id: str, to_team_id: str, now: datetime, changes: Changes, from_team_id: str = ""
    ) -> TokenPack:
        """T5: the pack and its remaining tokens go to another team; what it paid
        for stays in the first team's entries. A pack with no tokens left still
        moves by its two entries (T6: every move out and in; their amount is 0),
        but lowers no balance, so L1 hears of no fall. ``from_team_id``, when
        given, is where the pack must be now (``PackMoved`` if it was moved since)."""
        pack = self.pack(pack_id)
        if from_team_id and pack.team_id != from_team_id:
            raise PackMoved(
                f"pack {pack_id!r} is no longer in team {from_team_id!r} (it was moved to "
                f"{pack.team_id!r}); nothing was moved",
                pack_id=pack_id,
                from_team_id=from_team_id,
                team_id=pack.team_id,
            )
        to_bal = self._balance(to_team_id)
        if to_team_id == pack.team_id:
            raise InvalidArgument.field("to_team_id", f"the pack already belongs to {to_team_id!r}")
        if pack.held:
            raise PackHasHolds(
                f"pack {pack_id!r} has {pack.held} tokens held by sessions in grace; "
                "it can move once they are captured or released",
                pack_id=pack_id,
                held_tokens=pack.held,
            )
        from_team_id = pack.team_id
        # T1: its buyer kept as it leaves (a pack an older release sold has none
        # written: unmoved so far, the team holding it bought it).
        pack.bought_by = pack.bought_by or from_team_id
        from_bal = self._balance(from_team_id)
        n = pack.remaining
        self._entry(changes, now, EntryKind.MOVE_OUT, pack, n, -n, 0)
        from_bal.packs.remove(pack)
        from_bal.remaining -= n
        pack.team_id = to_team_id
        bisect.insort(to_bal.packs, pack, key=TokenPack.bought_key)
        to_bal.remaining += n
        if n:  # tokens to take (an expired pack has none left)
            from_bal.put_down(pack)
            to_bal.take_up(pack)
        self._entry(changes, now, EntryKind.MOVE_IN, pack, n, n, 0)
        changes.upsert(pack)
        self.note_balance(from_team_id, now, fell=n > 0)
        self.note_balance(to_team_id, now)
        return pack
