"""Signed leases: Ed25519 keys kept beside the database (RULES M7, offline use).

Entitle and Heartbeat answers carry a ``SignedLease``: a serialized ``Lease``
(session, user, team, product, device, coverage, lease end) and its Ed25519
signature: of the lease alone, or, under load, of the root of a hash tree over
the leases of one batch, each answer carrying its lease's path to that root
(``LeaseSigner``; the format is ``tessera.v1.SignedLease``'s). Products verify it offline with the public keys from
``GetSigningKeys`` (the SDK caches them), so they can run until the lease ends
without the server and refuse a forged or altered lease.

The key file ``<db>.signing-keys`` (owner-only, 0600) is created at the first
start. ``python -m server rotate-signing-key --db PATH`` adds a new key and
retires the old ones: the server signs with the newest after its next start,
and keeps publishing retired keys for a lease's lifetime so leases they signed
verify until they end.

A key is retired when the server stops signing with it, not when the tool ran: a
server running meanwhile still signs with the old key until it restarts (or, with
PostgreSQL, until another server takes over). So ``rotate`` marks the old keys
``retire_at_start`` (their ``retired_time`` is the rotation's, until then), and the
first start after it (``load_or_create``) stamps their ``retired_time`` with that
start's time, by the server's clock, and clears the mark: a lease the old key
signed after the rotation still verifies, with the keys fetched, until it ends.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from server.api.convert import COVERAGES_OUT, set_ts
from server.clock import monotonic
from server.domain.sessions import SessionView
from server.store.files import (
    SIGNING_KEYS_SUFFIX,
    create_once,
    side_path,
    tighten_file,
    write_private,
)
from tessera_api.tessera.v1 import common_pb2 as pb

KEY_FILE_SUFFIX = SIGNING_KEYS_SUFFIX


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    private: Ed25519PrivateKey
    create_time: datetime
    retired_time: datetime | None = None
    # Retired by ``rotate`` while a server may still sign with it: the next start
    # stamps ``retired_time`` with its own time (``load_or_create``).
    retire_at_start: bool = False

    @property
    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_path(db: Path) -> Path:
    return side_path(db, KEY_FILE_SUFFIX)


def _new_key(now: datetime) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = "k_" + base64.urlsafe_b64encode(raw[:9]).decode()
    return SigningKey(key_id, private, now)


def _dump(keys: list[SigningKey]) -> str:
    return json.dumps(
        [
            {
                "key_id": k.key_id,
                "private": base64.b64encode(
                    k.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
                ).decode(),
                "create_time": k.create_time.isoformat(),
                "retired_time": k.retired_time.isoformat() if k.retired_time else None,
                **({"retire_at_start": True} if k.retire_at_start else {}),
            }
            for k in keys
        ],
        indent=1,
    )


def _load(text: str) -> list[SigningKey]:
    return [
        SigningKey(
            key_id=item["key_id"],
            private=Ed25519PrivateKey.from_private_bytes(base64.b64decode(item["private"])),
            create_time=datetime.fromisoformat(item["create_time"]),
            retired_time=(
                datetime.fromisoformat(item["retired_time"]) if item["retired_time"] else None
            ),
            retire_at_start=item.get("retire_at_start") is True,  # absent: stamped
        )
        for item in json.loads(text)
    ]


def _write_private(path: Path, text: str) -> None:
    """Write owner-only, atomically (a crash leaves the old file or the new one)."""
    write_private(path, text.encode())


class DamagedKeys(ValueError):
    """The signing keys' file cannot be read."""


def load_or_create(path: Path, now: datetime) -> list[SigningKey]:
    """The keys kept in ``path``, made at the first start (by the first of several
    servers starting together on one secrets directory).

    ``now`` is when this server starts signing, by its clock: the keys a rotation
    retired since the last start (``retire_at_start``) are stamped retired then,
    in the file too, since a server running during the rotation signed with them
    until it stopped (a stamp the rotation made later than ``now`` is kept)."""
    if not path.exists():
        create_once(path, (_dump([_new_key(now)]) + "\n").encode())
    tighten_file(path)
    keys = _read(path)
    if any(k.retire_at_start for k in keys):
        keys = [_retired_at(k, now) if k.retire_at_start else k for k in keys]
        _write_private(path, _dump(keys))
    return keys


def _retired_at(key: SigningKey, now: datetime) -> SigningKey:
    """``key``, retired at ``now`` (or at its own stamp, if later), the mark cleared."""
    stamped = key.retired_time
    retired = now if stamped is None or stamped < now else stamped
    return SigningKey(key.key_id, key.private, key.create_time, retired)


def _read(path: Path) -> list[SigningKey]:
    try:
        keys = _load(path.read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError, IndexError) as exc:  # binascii.Error is one
        raise DamagedKeys(
            f"{path} is damaged ({type(exc).__name__}: {exc}): restore it from a backup or "
            "from another server's copy. Removing it makes a new key at the next start, "
            "and the leases products hold then verify only once renewed"
        ) from None
    if not keys:
        raise DamagedKeys(f"{path} holds no key: restore it from a backup")
    return keys


def rotate(path: Path, now: datetime) -> SigningKey:
    """Add a new signing key; the others become retired (still published).

    A server running now still signs with the old key until it restarts, so the
    old keys are marked ``retire_at_start``: ``retired_time`` is ``now`` until the
    next start stamps its own (``load_or_create``), from which a retired key is
    published for a lease's lifetime."""
    keys = _read(path) if path.exists() else []
    keys = [
        k if k.retired_time else SigningKey(k.key_id, k.private, k.create_time, now, True)
        for k in keys
    ]
    new = _new_key(now)
    _write_private(path, _dump([new, *keys]))
    return new


#: What a batch's signature covers: these bytes, then the root of its hash tree.
BATCH_CONTEXT = b"tessera.v1 lease batch\x00"


def leaf_hash(lease: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + lease).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def hash_tree(leases: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root of a SHA-256 hash tree over ``leases`` and, for each, the sibling
    hashes from its leaf up to the root (``SignedLease.tree_path``; its index in
    ``leases`` is its ``tree_index``). A level with an odd count pairs its last
    hash with itself."""
    level = [leaf_hash(lease) for lease in leases]
    paths: list[list[bytes]] = [[] for _ in leases]
    places = list(range(len(leases)))
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        for i, place in enumerate(places):
            paths[i].append(level[place ^ 1])
            places[i] = place >> 1
        level = [node_hash(level[k], level[k + 1]) for k in range(0, len(level), 2)]
    return level[0], paths


#: Leases asked for in one window from which the next ones wait for a batch: a client
#: making one call at a time (at most ~1,400 a second here) stays under it at 2 ms.
BUSY = 4

#: A lease's signature, its tree path and its index (an empty path: signed alone).
Signature = tuple[bytes, Sequence[bytes], int]


class LeaseSigner:
    """Signs leases with the newest key; publishes the keys that may still verify.

    One Ed25519 signature costs 20-40 us, as much as the rest of a Heartbeat
    (issue 17). While leases are few, none waits for a window: those asked for in
    one turn of the event loop share a signature made as the turn ends (a lease
    asked for alone is signed alone; a group commit wakes its Entitles in one
    turn). Once ``BUSY`` were asked for within ``window`` seconds, the next ones
    wait for a batch: every lease asked for within ``window`` of the batch's
    first is a leaf of one hash tree whose root is signed once, and each answer
    carries its lease's path to that root (``SignedLease.tree_path``). Each lease
    still verifies alone, offline, with the same public key. ``window`` 0 signs
    every lease alone, at once."""

    def __init__(
        self,
        keys: list[SigningKey],
        lease: timedelta,
        window: float = 0.0,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        if not keys:
            raise ValueError("no signing key")
        self.keys = sorted(keys, key=lambda k: k.create_time, reverse=True)
        self.current = next((k for k in self.keys if k.retired_time is None), self.keys[0])
        self._lease = lease
        self._sign = self.current.private.sign
        self._key_id = self.current.key_id
        self._window = window
        self._clock = clock
        self._counted_since = -math.inf  # leases asked for since then (the clock's time)
        self._asked = 0
        self._was_busy = False  # at least BUSY leases asked for in the last window
        self._batch: list[tuple[bytes, asyncio.Future[Signature]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.signatures = 0  # made, alone or for a batch
        self.signed = 0  # leases signed

    async def sign_into(
        self, out: pb.SignedLease, view: SessionView, now: datetime, request_id: str = ""
    ) -> bool:
        """Sign the session's lease into ``out`` (a response's own field, not copied
        there); False, leaving ``out`` unset, when the session has no lease (ended).

        Signed afresh on every Heartbeat: the lease's end moves with each one, the
        SDK checks that it is the session's, and ``issue_time`` lets it see a
        replayed lease. An Entitle's lease carries its ``request_id``, which the SDK
        checks against the one it sent: an Entitle's answer recorded and replayed
        to a later Entitle (by a stand-in for the server) opens nothing."""
        s = view.session
        if view.lease_expire_time is None:
            return False
        lease = pb.Lease(
            session_id=s.session_id,
            user_id=s.user_id,
            team_id=s.team_id,
            product_id=s.product_id,
            device_id=s.device_id,
            coverage=COVERAGES_OUT[s.coverage],
            request_id=request_id,
        )
        set_ts(lease.lease_expire_time, view.lease_expire_time)
        set_ts(lease.issue_time, now)
        payload = lease.SerializeToString(deterministic=True)
        out.lease = payload
        out.key_id = self._key_id
        signed = self.signature(payload)
        signature, path, index = signed if isinstance(signed, tuple) else await signed
        out.signature = signature
        if path:
            out.tree_path.extend(path)
            out.tree_index = index
        return True

    def signature(self, payload: bytes) -> Signature | asyncio.Future[Signature]:
        """``payload``'s signature: at once with no window, else a future, signed as
        the loop's turn ends while leases are few and ``window`` after the batch's
        first lease under load (see the class)."""
        if self._window <= 0:
            self.signatures += 1
            self.signed += 1
            return self._sign(payload), (), 0
        busy = self._busy()
        loop = self._loop
        if loop is None or loop.is_closed():  # kept: get_running_loop makes a system call
            loop = self._loop = asyncio.get_running_loop()
        if not self._batch:  # the first of its batch: when the batch is signed
            if busy:
                loop.call_later(self._window, self.sign_batch)
            else:
                loop.call_soon(self.sign_batch)
        done: asyncio.Future[Signature] = loop.create_future()
        self._batch.append((payload, done))
        return done

    def _busy(self) -> bool:
        """Whether leases come fast enough to share signatures: more than ``BUSY``
        asked for in this window, at least ``BUSY`` in the last one (a client calling
        one at a time never waits for a window), or a batch already waiting."""
        now = self._clock()
        if now - self._counted_since >= self._window:
            recent = now - self._counted_since < 2 * self._window
            self._was_busy = recent and self._asked >= BUSY
            self._counted_since, self._asked = now, 0
        self._asked += 1
        return self._was_busy or self._asked > BUSY or bool(self._batch)

    def sign_batch(self) -> None:
        """Sign the leases waiting for the next batch, now (when its time comes)."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        try:
            answers = self.sign_all([payload for payload, _ in batch])
        except Exception as exc:  # every waiting call fails, none waits forever
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        for (_, done), answer in zip(batch, answers, strict=True):
            if not done.done():  # a call cancelled meanwhile
                done.set_result(answer)

    def sign_all(self, payloads: Sequence[bytes]) -> list[Signature]:
        """One signature for ``payloads``: of the lease itself when alone, else of
        ``BATCH_CONTEXT`` and the root of their hash tree, with each one's path."""
        self.signatures += 1
        self.signed += len(payloads)
        if len(payloads) == 1:
            return [(self._sign(payloads[0]), (), 0)]
        root, paths = hash_tree(payloads)
        signature = self._sign(BATCH_CONTEXT + root)
        return [(signature, path, index) for index, path in enumerate(paths)]

    def published(self, now: datetime) -> list[pb.SigningKey]:
        """Current keys, and retired ones whose last leases may not have ended."""
        out = []
        for k in self.keys:
            if k.retired_time is not None and k.retired_time + self._lease < now:
                continue
            msg = pb.SigningKey(
                key_id=k.key_id, public_key=k.public_bytes, retired=k is not self.current
            )
            msg.create_time.FromDatetime(k.create_time)
            out.append(msg)
        return out
