"""Secrets: the admin token, user keys and invitation tokens.

Secrets are high-entropy random strings, shown once; only their SHA-256 is
kept (a fast hash is right for 256-bit random secrets: there is nothing to
guess). Lookups go by hash; comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

USER_KEY_PREFIX = "tsk_"
INVITATION_PREFIX = "tsi_"
ADMIN_PREFIX = "tsa_"


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(hash_secret(given), hash_secret(expected))


def bearer(metadata: object) -> str | None:
    """The secret of an ``authorization: Bearer <secret>`` header, if any."""
    if not metadata:
        return None
    for key, value in metadata:  # type: ignore[attr-defined]
        if key == "authorization":
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def load_or_create_admin_token(path: Path) -> str:
    """The operators' token kept beside the database (owner-only), made once."""
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = new_secret(ADMIN_PREFIX)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token
