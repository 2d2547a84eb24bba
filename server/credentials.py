"""Secrets: the admin token, user keys and invitation tokens.

Secrets are high-entropy random strings, shown once; only their SHA-256 is
kept (a fast hash is right for 256-bit random secrets: there is nothing to
guess). Lookups go by hash; comparisons are constant-time.

An invitation token is not random: it is derived from the server's secret key
(``PATH.secret-key``, 32 random bytes, owner-only) and what names one sending
of an invitation (its id and the id of the notification that carries it), so
the outbox can show it again while it is pending without the database ever
holding it (issue 12, point 1). A copy of the database without the key file
redeems nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from server.store.files import create_once, tighten_file, write_private

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
    """The operators' token kept beside the database (owner-only), made once (by the
    first of several servers starting together on one secrets directory)."""
    if not path.exists():
        create_once(path, (new_secret(ADMIN_PREFIX) + "\n").encode())
    tighten_file(path)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        # (A bad sector, an editor saving Latin-1.) An OSError, as for a damaged key
        # file: one line at start, not a traceback; and not the decoder's words, which
        # quote a byte of the token.
        raise OSError(
            f"{path} is damaged (not UTF-8 text): restore it from a backup or from another "
            "server's copy, or remove it: the next start makes a new admin token, which the "
            "operators then use"
        ) from None
    if token:
        return token
    token = new_secret(ADMIN_PREFIX)  # an empty file: made anew, as if missing
    write_private(path, (token + "\n").encode())
    return token


SECRET_KEY_BYTES = 32


def load_or_create_secret_key(path: Path) -> bytes:
    """The server's secret key kept beside the database (owner-only), made once (by
    the first of several servers starting together on one secrets directory)."""
    if not path.exists():
        create_once(path, (secrets.token_bytes(SECRET_KEY_BYTES).hex() + "\n").encode())
    tighten_file(path)
    return read_secret_key(path)


def read_secret_key(path: Path) -> bytes:
    """The key in ``path``, never made (for a tool that only compares it): an
    ``OSError`` naming the file if it cannot be read or holds no key."""
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except ValueError:
        key = b""
    if len(key) != SECRET_KEY_BYTES:
        raise OSError(
            f"{path} does not hold a {SECRET_KEY_BYTES}-byte key in hex: restore it from "
            "a backup (removing it makes a new key; pending invitations then keep working "
            "with the tokens already sent, but the outbox no longer shows them)"
        )
    return key


def invitation_token(key: bytes, invitation_id: str, notification_id: str) -> str:
    """The token of one sending of an invitation: HMAC-SHA256 of its invitation
    and notification ids under the server's key. The notification id makes each
    sending's token new, even two sendings in the same microsecond (a resend at an
    unchanged test clock)."""
    mac = hmac.new(key, f"{invitation_id}:{notification_id}".encode(), hashlib.sha256)
    return INVITATION_PREFIX + base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()
