"""Signed leases: Ed25519 keys kept beside the database (RULES M7, offline use).

Entitle and Heartbeat answers carry a ``SignedLease``: a serialized ``Lease``
(session, user, team, product, device, coverage, lease end) and its Ed25519
signature. Products verify it offline with the public keys from
``GetSigningKeys`` (the SDK caches them), so they can run until the lease ends
without the server and refuse a forged or altered lease.

The key file ``<db>.signing-keys`` (owner-only, 0600) is created at the first
start. ``python -m server rotate-signing-key --db PATH`` adds a new key and
retires the old ones: the server signs with the newest after its next start,
and keeps publishing retired keys for a lease's lifetime so leases they signed
verify until they end.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from server.api.convert import COVERAGES_OUT, set_ts
from server.domain.sessions import SessionView
from server.store.files import SIGNING_KEYS_SUFFIX, side_path, tighten_file, write_private
from tessera_api.tessera.v1 import common_pb2 as pb

KEY_FILE_SUFFIX = SIGNING_KEYS_SUFFIX


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    private: Ed25519PrivateKey
    create_time: datetime
    retired_time: datetime | None = None

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
        )
        for item in json.loads(text)
    ]


def _write_private(path: Path, text: str) -> None:
    """Write owner-only, atomically (a crash leaves the old file or the new one)."""
    write_private(path, text.encode())


def load_or_create(path: Path, now: datetime) -> list[SigningKey]:
    if path.exists():
        tighten_file(path)
        return _load(path.read_text())
    keys = [_new_key(now)]
    _write_private(path, _dump(keys))
    return keys


def rotate(path: Path, now: datetime) -> SigningKey:
    """Add a new signing key; the others become retired (still published)."""
    keys = _load(path.read_text()) if path.exists() else []
    keys = [
        k if k.retired_time else SigningKey(k.key_id, k.private, k.create_time, now) for k in keys
    ]
    new = _new_key(now)
    _write_private(path, _dump([new, *keys]))
    return new


class LeaseSigner:
    """Signs leases with the newest key; publishes the keys that may still verify."""

    def __init__(self, keys: list[SigningKey], lease: timedelta) -> None:
        if not keys:
            raise ValueError("no signing key")
        self.keys = sorted(keys, key=lambda k: k.create_time, reverse=True)
        self.current = next((k for k in self.keys if k.retired_time is None), self.keys[0])
        self._lease = lease
        self._sign = self.current.private.sign
        self._key_id = self.current.key_id

    def sign(self, view: SessionView, now: datetime) -> pb.SignedLease | None:
        signed = pb.SignedLease()
        return signed if self.sign_into(signed, view, now) else None

    def sign_into(self, out: pb.SignedLease, view: SessionView, now: datetime) -> bool:
        """Sign the session's lease into ``out`` (a response's own field, not copied
        there); False, leaving ``out`` unset, when the session has no lease (ended).

        Signed afresh on every Heartbeat (~20-40 us of Ed25519, issue 17): the lease's
        end moves with each one, the SDK checks that it is the session's, and
        ``issue_time`` lets it see a replayed lease."""
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
        )
        set_ts(lease.lease_expire_time, view.lease_expire_time)
        set_ts(lease.issue_time, now)
        payload = lease.SerializeToString(deterministic=True)
        out.lease = payload
        out.signature = self._sign(payload)
        out.key_id = self._key_id
        return True

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


def verify_lease(signed: pb.SignedLease, keys: dict[str, bytes]) -> pb.Lease:
    """Check a signed lease against public keys (key_id -> raw bytes); raises
    ValueError when the key is unknown or the signature does not match."""
    raw = keys.get(signed.key_id)
    if raw is None:
        raise ValueError(f"lease signed by unknown key {signed.key_id!r}")
    from cryptography.exceptions import InvalidSignature

    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signed.signature, signed.lease)
    except InvalidSignature as exc:
        raise ValueError("lease signature does not match: forged or altered") from exc
    lease = pb.Lease()
    lease.ParseFromString(signed.lease)
    return lease
