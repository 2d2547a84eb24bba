"""Signed leases, checked offline (issue 6; RULES M7).

Every Entitle and Heartbeat answer for a live session carries a
``tessera.v1.SignedLease``: a serialized ``tessera.v1.Lease`` (session, user,
team, product, device, coverage, lease end, issue time) and the server's
Ed25519 signature over exactly those bytes, or, for a lease signed in a batch
under load, over the root of a hash tree that the lease's ``tree_path`` leads
to from the lease (``_signed_bytes``), naming the key (``key_id``) that made it.
The SDK checks each one with the server's public keys before it lets
the product run on it, and refuses (``LeaseInvalid``) a lease that is

- missing, or not a lease at all;
- signed by a key it does not trust (``UnknownSigningKey``);
- altered or forged (the signature does not match);
- for another session, user, team, product or device than the one at hand.

Where the keys come from (``AsyncClient(signing_keys=..., fetch_signing_keys=...)``):

- by default the client fetches them from ``LicensingService.GetSigningKeys`` once
  (with its retry policy), caches them, and fetches once more when a lease names a
  key it does not know (the server rotated its key);
- ``signing_keys`` pins them: a mapping ``key_id -> public key`` (the raw 32 bytes,
  their base64, or an ``Ed25519PublicKey``) or the path of a JSON file
  (``save_signing_keys`` writes one; the output of ``grpcurl ...
  tessera.v1.LicensingService/GetSigningKeys`` works too). Pinned keys are then the
  only ones trusted and the client never asks the server for keys, so a product
  verifies with no server at all, and a server that is not the real one cannot
  vouch for itself. ``fetch_signing_keys=True`` trusts the server's keys as well.

Keys fetched from the server are only as trustworthy as the connection they came
over: use TLS, or pin the keys, when the network is not trusted.

``verify_lease(signed, keys, user_id=..., device_id=..., product_id=...)`` is the check
for a product's own use, e.g. on a lease it stored (``Lease.signed``) and reads back at
its next start, offline: the user, device and product are required and the lease must
not be over on the wall clock (or a given ``now``/``clock``), allowing ``leeway`` (60 s
by default) for a product's clock that runs ahead of the server's. ``verify_lease_signature``
is the raw check of the signature alone, for tools: it checks neither expiry nor binding.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import math
import os
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from client_sdk.clock import Clock, SystemClock
from client_sdk.errors import LeaseExpired, LeaseInvalid, UnknownSigningKey
from client_sdk.models import Coverage, Lease, Session, _enum
from tessera_api.tessera.v1 import common_pb2
from tessera_api.tessera.v1 import licensing_service_pb2 as pb

#: One public key: the raw 32 bytes, their base64 (standard or URL-safe), or a key object.
PublicKey = bytes | str | Ed25519PublicKey
#: Signing keys: ``key_id -> PublicKey``, or the path of a JSON file holding them.
SigningKeysSource = Mapping[str, PublicKey] | str | os.PathLike[str]
#: How far past its end ``verify_lease`` still accepts a lease by default: the clock
#: skew tolerated between the product's machine and the server (see ``verify_lease``).
DEFAULT_LEEWAY = timedelta(seconds=60)


def same_user(user_id: str) -> str:
    """``user_id`` as ``verify_lease`` compares it with a lease's: the server finds a user
    by any spelling of their address (RULES A1: ``Zoe@Example.COM``, spaces around it,
    ``zoë`` typed with a combining accent, a domain in Punycode or full-width letters),
    so a product may keep the address as its user typed it. The address in lower case,
    its local part in Unicode NFC, its domain's labels decoded from Punycode and
    compatibility-normalized (NFKC, as IDNA maps them); text without ``@`` as it is."""
    text = user_id.strip()
    local, at, domain = text.rpartition("@")
    if not at:
        return text
    labels = []
    for label in domain.split("."):
        if label[:4].lower() == "xn--":
            with contextlib.suppress(UnicodeError):
                label = label.encode("ascii").decode("idna")
        labels.append(label)
    domain = unicodedata.normalize("NFKC", ".".join(labels))
    return f"{unicodedata.normalize('NFC', local)}@{domain}".lower()


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    """The raw 32 bytes of a public key (what ``GetSigningKeys`` sends)."""
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _public_key(key_id: str, key: PublicKey) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PublicKey):
        return key
    raw: bytes
    if isinstance(key, str):
        text = key.strip()
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"signing key {key_id!r} is not base64") from None
    else:
        raw = key
    try:
        return Ed25519PublicKey.from_public_bytes(bytes(raw))
    except ValueError:
        raise ValueError(
            f"signing key {key_id!r} is not a raw 32-byte Ed25519 public key"
        ) from None


def public_keys(source: SigningKeysSource) -> dict[str, Ed25519PublicKey]:
    """Signing keys as key objects, from a mapping or a JSON file (``load_signing_keys``)."""
    if isinstance(source, str | os.PathLike):
        source = load_signing_keys(source)
    return {str(key_id): _public_key(str(key_id), key) for key_id, key in source.items()}


def keys_from_response(response: pb.GetSigningKeysResponse) -> dict[str, bytes]:
    """``key_id -> raw public key`` from a ``GetSigningKeys`` answer."""
    return {k.key_id: bytes(k.public_key) for k in response.keys}


def load_signing_keys(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """Read pinned signing keys (``key_id -> raw public key``) from a JSON file.

    Either ``{"<key_id>": "<base64 public key>", ...}`` (what ``save_signing_keys``
    writes) or a ``GetSigningKeysResponse`` in JSON (``{"keys": [{"keyId": ...,
    "publicKey": ...}]}``, as grpcurl prints it). Raises ``ValueError`` for anything else,
    a file that is missing or cannot be read included (its ``OSError`` as the cause).
    """
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the signing-keys file ({exc})") from exc
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a JSON signing-keys file ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("keys"), list):
        response = pb.GetSigningKeysResponse()
        try:
            json_format.ParseDict(data, response, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise ValueError(f"{path}: not a GetSigningKeys answer ({exc})") from None
        return {k: raw_public_key(v) for k, v in public_keys(keys_from_response(response)).items()}
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return {k: raw_public_key(v) for k, v in public_keys(data).items()}
    raise ValueError(f"{path}: expected {{key_id: base64 public key}} or {{'keys': [...]}}")


def save_signing_keys(path: str | os.PathLike[str], keys: Mapping[str, PublicKey]) -> None:
    """Write signing keys as ``{"<key_id>": "<base64 public key>"}`` (public: not secret)."""
    text = json.dumps(
        {k: base64.b64encode(raw_public_key(v)).decode() for k, v in public_keys(keys).items()},
        indent=1,
        sort_keys=True,
    )
    Path(path).write_text(text + "\n")


def _parse_signed(
    signed: bytes | bytearray | memoryview | common_pb2.SignedLease,
) -> tuple[common_pb2.SignedLease, bytes]:
    if isinstance(signed, common_pb2.SignedLease):
        return signed, signed.SerializeToString(deterministic=True)
    data = bytes(signed)
    try:
        msg = common_pb2.SignedLease.FromString(data)
    except DecodeError:
        raise LeaseInvalid("not a signed lease", reason="LEASE_MALFORMED") from None
    return msg, data


def verify_lease(
    signed: bytes | bytearray | memoryview | common_pb2.SignedLease,
    keys: SigningKeysSource,
    *,
    user_id: str,
    device_id: str,
    product_id: str,
    session_id: str | None = None,
    team_id: str | None = None,
    now: datetime | None = None,
    clock: Clock | None = None,
    leeway: float | timedelta = DEFAULT_LEEWAY,
) -> Lease:
    """Check a stored lease offline, as a product does at its next start, and return it.

    ``signed`` is a ``SignedLease`` or its bytes (``Lease.signed``); ``keys`` the public
    keys to trust (``key_id -> PublicKey``, or a keys file: see ``load_signing_keys``).

    The lease is accepted only when it is genuine (``verify_lease_signature``), made for
    this ``user_id``, ``device_id`` and ``product_id`` (required: a genuine lease of
    another user, device or product is refused; the user's address in any spelling the
    server takes for it, ``same_user``), and not over: its end plus ``leeway``
    must be after ``now``, which is the wall clock unless given (or read from ``clock``,
    e.g. a ``ManualClock`` in tests). ``session_id`` and ``team_id``, when given, must
    match too.

    ``leeway`` (seconds, or a ``timedelta``; as PyJWT's ``leeway`` for ``exp``) is how far
    the product's clock may run ahead of the server's that signed the lease: the lease is
    accepted while ``now < lease_expire_time + leeway``. The default, 60 seconds, covers
    the drift of a machine whose clock is not kept in sync for a while (one kept by NTP
    is off by well under a second) and is nothing against a 24-hour lease (RULES M7: it
    lets a product start at most a minute past its lease's end, offline, never run
    longer than that); ``leeway=0`` checks the end exactly. A clock running behind the
    server's needs no leeway (the lease only looks longer). Only the end is checked:
    ``issue_time`` is not compared with ``now``.

    Raises ``LeaseInvalid`` when the lease is not to be trusted: ``LeaseExpired`` when it
    is over, ``UnknownSigningKey`` when signed by a key not in ``keys``, reason
    ``LEASE_MISMATCH`` when it is another's; ``ValueError`` when ``keys`` itself is not
    usable (a keys file missing or unreadable too), ``now`` has no timezone,
    ``user_id``, ``device_id`` or ``product_id`` is empty, or ``leeway`` is negative, not
    finite or over a day (``MAX_LEEWAY``); ``TypeError`` when one of those is not a string (``None`` would check
    nothing) or ``leeway`` not a number of seconds or a ``timedelta``.
    """
    required = {"user_id": user_id, "device_id": device_id, "product_id": product_id}
    for name, value in required.items():
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, not {type(value).__name__}")
        if not value:
            raise ValueError(f"{name} must not be empty: the lease is checked against it")
    for name, given in (("session_id", session_id), ("team_id", team_id)):
        if given is not None and not isinstance(given, str):
            raise TypeError(f"{name} must be a string or None, not {type(given).__name__}")
    if now is None:
        now = (clock or SystemClock()).now()
    elif clock is not None:
        raise ValueError("give now or clock, not both")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    slack = _leeway(leeway)
    lease = verify_bound(signed, keys, session_id=session_id)
    if same_user(lease.user_id) != same_user(user_id):
        expect(lease, user_id=user_id)  # refused, in the words of the other fields'
    expect(lease, team_id=team_id, product_id=product_id, device_id=device_id)
    if now >= lease.lease_expire_time + slack:
        late = f" (checked at {now.isoformat()}, allowing {slack.total_seconds():g} s)"
        raise LeaseExpired(
            f"the lease ended at {lease.lease_expire_time.isoformat()}{late}",
            session_id=lease.session_id,
            key_id=lease.key_id,
        )
    return lease


#: The most ``verify_lease`` allows for a clock's skew: a lease's own length (24 h);
#: more would accept a lease over for longer than it lasted.
MAX_LEEWAY = timedelta(days=1)


def _leeway(leeway: object) -> timedelta:
    """``verify_lease``'s ``leeway`` as a ``timedelta`` (seconds or a ``timedelta``)."""
    if isinstance(leeway, timedelta):
        slack = leeway
    elif isinstance(leeway, int | float) and not isinstance(leeway, bool):
        if not math.isfinite(leeway):
            raise ValueError(f"leeway must be a finite number of seconds, not {leeway}")
        if leeway < 0:
            raise ValueError("leeway must not be negative")
        slack = timedelta(seconds=min(leeway, MAX_LEEWAY.total_seconds() + 1))
    else:
        raise TypeError(f"leeway must be seconds or a timedelta, not {type(leeway).__name__}")
    if slack < timedelta(0):
        raise ValueError("leeway must not be negative")
    if slack > MAX_LEEWAY:
        raise ValueError("leeway must be at most a day (86400 s), a lease's own length")
    return slack


#: A lease signed in a batch: the signature covers these bytes, then the batch's root.
BATCH_CONTEXT = b"tessera.v1 lease batch\x00"
_MAX_TREE_DEPTH = 32  # 4 billion leases in one batch


def _signed_bytes(msg: common_pb2.SignedLease) -> bytes:
    """What the signature of ``msg`` covers: the lease itself, or (signed in a batch,
    ``tree_path`` set) ``BATCH_CONTEXT`` and the root its path leads to, as
    ``tessera.v1.SignedLease`` describes."""
    path = msg.tree_path
    if not path:
        if msg.tree_index:
            raise LeaseInvalid("a tree index without a tree path", reason="LEASE_MALFORMED")
        if msg.lease.startswith(BATCH_CONTEXT):  # (nor would it parse as a lease)
            raise LeaseInvalid("a batch's signed root is not a lease", reason="LEASE_MALFORMED")
        return msg.lease
    if len(path) > _MAX_TREE_DEPTH or msg.tree_index >> len(path):
        raise LeaseInvalid("the tree index does not fit its path", reason="LEASE_MALFORMED")
    node = hashlib.sha256(b"\x00" + msg.lease).digest()
    place = msg.tree_index
    for sibling in path:
        if len(sibling) != 32:
            raise LeaseInvalid("a tree path hash is not 32 bytes", reason="LEASE_MALFORMED")
        pair = sibling + node if place & 1 else node + sibling
        node = hashlib.sha256(b"\x01" + pair).digest()
        place >>= 1
    return BATCH_CONTEXT + node


def verify_lease_signature(
    signed: bytes | bytearray | memoryview | common_pb2.SignedLease,
    keys: SigningKeysSource,
) -> Lease:
    """Only check that a lease was signed by one of ``keys``, and decode it.

    This checks NEITHER expiry NOR binding: an expired lease, or one made for another
    user, device or product, passes. It is the raw check for tools that inspect leases;
    a product deciding whether to run calls ``verify_lease``.

    Raises ``LeaseInvalid`` (``UnknownSigningKey``) when the lease is malformed, forged,
    altered or signed by a key not in ``keys``; ``ValueError`` when ``keys`` is not usable.
    """
    msg, data = _parse_signed(signed)
    trusted = public_keys(keys)
    if not msg.lease or not msg.signature:
        raise LeaseInvalid("the signed lease is empty", reason="LEASE_MALFORMED", key_id=msg.key_id)
    key = trusted.get(msg.key_id)
    if key is None:
        raise UnknownSigningKey(
            f"the lease is signed by a key this product does not trust ({msg.key_id!r})",
            key_id=msg.key_id,
        )
    try:
        key.verify(msg.signature, _signed_bytes(msg))
    except InvalidSignature:
        raise LeaseInvalid(
            "the lease signature does not match: forged or altered",
            reason="LEASE_BAD_SIGNATURE",
            key_id=msg.key_id,
        ) from None
    try:
        raw = common_pb2.Lease.FromString(msg.lease)
    except DecodeError:  # signed, yet not a lease: the signer is broken, not to be trusted
        raise LeaseInvalid(
            "the signed bytes are not a lease", reason="LEASE_MALFORMED", key_id=msg.key_id
        ) from None
    if not raw.HasField("lease_expire_time") or not raw.HasField("issue_time"):
        raise LeaseInvalid(
            "the lease has no end or issue time",
            reason="LEASE_MALFORMED",
            session_id=raw.session_id,
            key_id=msg.key_id,
        )
    return Lease(
        session_id=raw.session_id,
        user_id=raw.user_id,
        team_id=raw.team_id,
        product_id=raw.product_id,
        device_id=raw.device_id,
        coverage=_enum(Coverage, raw.coverage),
        lease_expire_time=raw.lease_expire_time.ToDatetime(tzinfo=UTC),
        issue_time=raw.issue_time.ToDatetime(tzinfo=UTC),
        request_id=raw.request_id,
        key_id=msg.key_id,
        signed=data,
        raw=raw,
    )


def verify_bound(
    signed: bytes | bytearray | memoryview | common_pb2.SignedLease,
    keys: SigningKeysSource,
    **expected: str | None,
) -> Lease:
    """``verify_lease_signature``, then each expected value that is not None must be
    what the lease says (``expect``); expiry is left to the caller."""
    lease = verify_lease_signature(signed, keys)
    expect(lease, **expected)
    return lease


def expect(lease: Lease, **expected: object) -> None:
    """Each expected value that is not None must be what the lease says (``LEASE_MISMATCH``)."""
    for name, want in expected.items():
        if want is None:
            continue
        got = getattr(lease, name)
        if got != want:
            raise LeaseInvalid(
                f"the lease is for {name} {got!r}, not {want!r}",
                reason="LEASE_MISMATCH",
                session_id=lease.session_id,
                key_id=lease.key_id,
            )


def match_session(lease: Lease, session: Session) -> None:
    """The lease must say what the (unsigned) session it came with says."""
    expect(
        lease,
        session_id=session.session_id,
        user_id=session.user_id,
        team_id=session.team_id,
        product_id=session.product_id,
        device_id=session.device_id,
        coverage=session.coverage,
        lease_expire_time=session.lease_expire_time,
    )
