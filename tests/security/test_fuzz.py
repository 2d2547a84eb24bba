"""Fuzzing (issue 6, item 4): hostile requests to every RPC, garbage on the port.

Every method of ``tessera.v1.AdminService`` and ``tessera.v1.LicensingService``
is found in the generated descriptors, and its request is built generically by
walking the request descriptor: each field gets values by its type (empty,
huge, unicode, control characters, NUL, int64 extremes, out-of-range enum
numbers, timestamps and durations outside their valid range, unknown ids,
bogus page tokens), mixed with the real ids of a small world made in setup so
that calls also get past the first check. Most calls carry the right
credential (the admin token, or a real user key); some carry none, a wrong
one, or the other service's.

Each answer must be OK or a clear refusal: a status in ``ALLOWED`` with a
``google.rpc.ErrorInfo`` of domain ``tessera``, and for ``INVALID_ARGUMENT`` a
``google.rpc.BadRequest`` naming a field of the request. Never ``INTERNAL``
or ``UNKNOWN``. Health stays ``SERVING`` throughout.

One server serves the whole module (test clock). The number of examples per
fuzz test is small by default so that ``make test`` stays quick; set
``TESSERA_FUZZ_EXAMPLES`` (for example 20000) for a long run, with ``-s`` to see
how many requests were sent and how they were answered::

    TESSERA_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -s -p no:cacheprovider \\
        tests/security/test_fuzz.py
"""

from __future__ import annotations

import base64
import os
import random
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, message, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.api import paging
from server.config import Config
from tessera_api.tessera.v1 import admin_service_pb2, licensing_service_pb2
from tests.pg import PgServer
from tests.support import ADMIN_TOKEN, BACKENDS, ServerThread, forget_secrets

EXAMPLES = int(os.environ.get("TESSERA_FUZZ_EXAMPLES", "0") or 0)
DEFAULT_EXAMPLES = 400  # per fuzz test; the module runs in well under a minute

# A long run may take hours: lift pytest-timeout's default minute.
pytestmark = pytest.mark.timeout(max(60, EXAMPLES // 5) if EXAMPLES else 60)

FUZZ = settings(
    max_examples=EXAMPLES or DEFAULT_EXAMPLES,
    database=None,  # the server's state moves on; a stored example may not replay
    suppress_health_check=list(HealthCheck),
)

SERVICES: dict[str, descriptor.ServiceDescriptor] = {
    "AdminService": admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"],
    "LicensingService": licensing_service_pb2.DESCRIPTOR.services_by_name["LicensingService"],
}
NO_CREDENTIAL = {"AcceptInvitation", "GetSigningKeys"}
MAX_MESSAGE_BYTES = Config.max_message_bytes  # the server's default limit on a request

# Clear refusals; INTERNAL and UNKNOWN are never among them.
ALLOWED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}

# -- what was sent and how it was answered ------------------------------------------

SENT: Counter[str] = Counter()
ANSWERS: Counter[tuple[str, str]] = Counter()


def _report() -> str:
    total = sum(SENT.values())
    by_code: Counter[str] = Counter()
    for (_method, code), n in ANSWERS.items():
        by_code[code] += n
    lines = [f"fuzz: {total} requests to {len(SENT)} methods; answers {dict(by_code)}"]
    lines += [f"  {m}: {n}" for m, n in sorted(SENT.items())]
    return "\n".join(lines)


# -- the world the fuzzer plays in ---------------------------------------------------

KNOWN_SLOTS = 16  # values per known field name


@dataclass
class World:
    server: ServerThread
    channel: grpc.Channel
    user_key: str = ""
    other_key: str = ""
    known: dict[str, list[str]] = field(default_factory=dict)
    _learned: int = 0

    def call(
        self,
        service: str,
        method: str,
        request: message.Message,
        authorization: str | None,
        timeout: float = 30.0,
    ) -> tuple[grpc.StatusCode, message.Message | grpc.RpcError]:
        mdesc = SERVICES[service].methods_by_name[method]
        resp_cls = message_factory.GetMessageClass(mdesc.output_type)
        stub: Any = self.channel.unary_unary(
            f"/{SERVICES[service].full_name}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=resp_cls.FromString,
        )
        metadata = (("authorization", authorization),) if authorization is not None else ()
        SENT[f"{service}/{method}"] += 1
        try:
            response = stub(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            ANSWERS[(method, code.name)] += 1
            return code, exc
        ANSWERS[(method, "OK")] += 1
        return grpc.StatusCode.OK, response

    def ok(self, service: str, method: str, **fields: Any) -> Any:
        mdesc = SERVICES[service].methods_by_name[method]
        request = message_factory.GetMessageClass(mdesc.input_type)(**fields)
        token = ADMIN_TOKEN if service == "AdminService" else self.user_key
        code, answer = self.call(service, method, request, f"Bearer {token}")
        assert code is grpc.StatusCode.OK, f"setup {method}: {answer}"
        return answer

    def learn(self, answer: Any) -> None:
        """Ids the server just made become known values (the latest few of each)."""
        found: list[tuple[str, str]] = []
        session = getattr(answer, "session", None)
        if session is not None and session.session_id:
            found += [("session_id", session.session_id), ("parent_session_id", session.session_id)]
        pack = getattr(answer, "token_pack", None)
        if pack is not None and pack.pack_id:
            found.append(("pack_id", pack.pack_id))
        team = getattr(answer, "team", None)
        if team is not None and team.team_id:
            found += [("team_id", team.team_id), ("to_team_id", team.team_id)]
        for name, value in found:
            ids = self.known[name]
            if value not in ids:
                # The list keeps its length (Hypothesis wants the same choices each
                # time); its second half turns over, the first keeps setup's ids.
                self._learned += 1
                ids[KNOWN_SLOTS // 2 + self._learned % (KNOWN_SLOTS // 2)] = value

    def healthy(self) -> None:
        stub: Any = health_pb2_grpc.HealthStub(self.channel)
        for service in ("", *(s.full_name for s in SERVICES.values())):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _admin(w: World, method: str, **fields: Any) -> Any:
    return w.ok("AdminService", method, **fields)


def _licensing(w: World, method: str, **fields: Any) -> Any:
    return w.ok("LicensingService", method, **fields)


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """One server per store for the module (issue 13: on PostgreSQL the fuzzer found
    an unknown session id holding NUL answered INTERNAL)."""
    pg: PgServer | None = request.getfixturevalue("pg") if request.param == "postgres" else None
    db = pg.create() if pg else tmp_path_factory.mktemp("fuzz") / "tessera.db"
    # Rate limits off: the fuzzer is one fast caller and should reach the servicers.
    srv = ServerThread(db, user_rate_limit=0.0).start()
    channel = grpc.insecure_channel(srv.target)
    w = World(srv, channel)
    try:
        _populate(w)
        yield w
    finally:
        print("\n" + _report(), file=sys.stderr)
        channel.close()
        srv.stop()
        if pg is not None and isinstance(db, str):
            pg.drop(db)
            forget_secrets(db)


def _populate(w: World) -> None:
    """A small world with real ids, so that fuzzed calls also reach deep checks."""
    from tessera_api.tessera.v1 import common_pb2 as pb

    _admin(w, "CreateTeam", team_id="acme", display_name="Acme")
    _admin(w, "CreateTeam", team_id="beta")
    acme_pack = _admin(w, "PurchaseTokens", team_id="acme", tokens=1000, request_id="r1")
    beta_pack = _admin(w, "PurchaseTokens", team_id="beta", tokens=40, request_id="r2")
    every = [pb.PLATFORM_WINDOWS, pb.PLATFORM_MACOS, pb.PLATFORM_LINUX]
    _admin(
        w,
        "UpsertProduct",
        product=pb.Product(product_id="ACAD", daily_rate=10, idle_aware=True, platforms=every),
    )
    _admin(
        w,
        "UpsertProduct",
        product=pb.Product(
            product_id="PLUG",
            daily_rate=2,
            kind=pb.PRODUCT_KIND_PLUGIN,
            host_product_id="ACAD",
            platforms=every,
        ),
    )
    _admin(w, "UpsertProduct", product=pb.Product(product_id="FREE", platforms=every))
    _admin(
        w,
        "ImportUsers",
        team_id="acme",
        users=["Ann <ann@x.io>", "Bob <bob@x.io>"],
        all_products=True,
    )
    _admin(w, "ImportUsers", team_id="beta", users=["ann@x.io"], product_ids=["FREE"])
    _admin(w, "AssignUsers", team_id="acme", users=["Ivy <ivy@x.io>"], product_ids=["ACAD"])
    notes = _admin(w, "ListNotifications", team_id="acme", user_id="ivy@x.io").notifications
    invitation = [n.invitation_token for n in notes if n.invitation_token]
    w.user_key = _admin(w, "IssueUserKey", user_id="ann@x.io").user_key
    w.other_key = _admin(w, "IssueUserKey", user_id="bob@x.io").user_key
    host = _licensing(
        w,
        "Entitle",
        product_id="ACAD",
        product_version="2026",
        platform=pb.PLATFORM_WINDOWS,
        device_id="dev-1",
        request_id="e1",
    ).session
    plugin = _licensing(
        w,
        "Entitle",
        product_id="PLUG",
        product_version="2026",
        platform=pb.PLATFORM_WINDOWS,
        device_id="dev-1",
        parent_session_id=host.session_id,
    ).session
    free = _licensing(
        w,
        "Entitle",
        product_id="FREE",
        product_version="2026.1",
        platform=pb.PLATFORM_LINUX,
        device_id="dev-2",
    ).session
    _licensing(w, "Release", session_id=free.session_id)
    sessions_page = _admin(w, "ListSessions", team_id="acme", include_ended=True, page_size=1)
    ledger_page = _admin(w, "ListLedgerEntries", team_id="acme", page_size=1)

    def b64(text: str) -> str:  # a token as the server makes them, of any kind and position
        return paging.encode(*text.split(":", 1))

    page_tokens = [
        sessions_page.next_page_token,
        ledger_page.next_page_token,
        b64("ledger:-1"),
        b64("ledger:" + "9" * 40),
        b64("ledger:1e9"),
        b64("ledger:"),
        b64("ledger:\x00"),
        b64("sessions:"),
        b64("sessions:zz\x00"),
        b64("sessions:" + "z" * 500),
        b64("other:1"),
        "!!!notbase64!!!",
        "====",
        base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
    ]
    ids = [host.session_id, plugin.session_id, free.session_id]
    w.known = {
        "team_id": ["acme", "beta", "nope"],
        "to_team_id": ["acme", "beta", "nope"],
        "product_id": ["ACAD", "PLUG", "FREE", "NOPE"],
        "host_product_id": ["ACAD", "PLUG", "NOPE"],
        "product_ids": ["ACAD", "PLUG", "FREE", "NOPE"],
        "user_id": ["ann@x.io", "bob@x.io", "ivy@x.io", "ANN@X.IO", "nobody@x.io"],
        "users": [
            "ann@x.io",
            "Bob <bob@x.io>",
            "New Person <new@x.io>",
            "Ivy <ivy@x.io>",
            "not an entry",
            "<>",
            "Name <no-at-sign>",
        ],
        "session_id": ids,
        "parent_session_id": ids,
        "pack_id": [acme_pack.token_pack.pack_id, beta_pack.token_pack.pack_id],
        "device_id": ["dev-1", "dev-2", "dev-3"],
        "product_version": ["2026", "2026.1", "1999", "0", "9" * 30, "2026-beta"],
        "request_id": ["r1", "r2", "e1"],
        "page_token": page_tokens,
        "invitation_token": [*invitation, "tsi_bogus"],
        "display_name": ["Acme"],
    }
    for name, ids in w.known.items():  # each list KNOWN_SLOTS long: see World.learn
        w.known[name] = [ids[i % len(ids)] for i in range(KNOWN_SLOTS)]


# -- hostile values by field type -------------------------------------------------

I64 = (-(2**63), 2**63 - 1)
I32 = (-(2**31), 2**31 - 1)
HOSTILE_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\t\r\n",
    "\x1b[31m",
    "\x7f\x80\x9f",
    "\u202eacme",
    "\ufeff",
    "😀" * 20,
    "Ωμέγα",
    "名前 <名前@例え.テスト>",
    "' OR 1=1 --",
    "'; DROP TABLE ledger; --",
    "%s%s%n{0}{}",
    "${jndi:ldap://x/a}",
    "../../etc/passwd",
    "NaN",
    "-1",
    "9" * 30,
    "tsk_not-a-key",
    "tsi_not-a-token",
    "A <a@b.c>",
    "a@b",
    "@",
    "ACME",
    " acme ",
    "x" * 65,
    "x" * 201,
    "x" * 513,
    "X" * 5000,
]
CONTROL = st.characters(min_codepoint=0, max_codepoint=31) | st.sampled_from("\x7f\u2028\u2029")


@st.composite
def _huge_text(draw: st.DrawFn) -> str:
    """Up to ~100 KB of one repeated piece: cheap to make, expensive to mishandle."""
    piece = draw(st.sampled_from(["x", "A", "é", "😀", "\x00", "ab<c@d.e>", "9", " "]))
    size = draw(st.integers(min_value=1_000, max_value=100_000))
    return piece * max(1, size // len(piece.encode()))


def _text(field_name: str, known: dict[str, list[str]]) -> st.SearchStrategy[str]:
    options: list[st.SearchStrategy[str]] = [
        st.sampled_from(HOSTILE_TEXT),
        st.text(max_size=40),
        st.text(CONTROL, min_size=1, max_size=10),
        _huge_text(),
    ]
    ids = known.get(field_name)
    if ids:
        # Weighted: about half the time a real id, so that calls reach the deeper checks.
        options += [st.sampled_from(ids)] * 3
        options.append(
            st.tuples(
                st.sampled_from(ids), st.sampled_from(["\x00", " ", "\n", "é", "x" * 300])
            ).map(lambda t: t[0] + t[1])
        )
    return st.one_of(options)


def _int(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [
        v for v in (0, 1, -1, 2, 10, 1000, 10**9, 10**9 + 1, 2**31 - 1, 2**32) if lo <= v <= hi
    ]
    return st.one_of(
        st.sampled_from([lo, hi, lo + 1, hi - 1, *edges]),
        st.integers(min_value=max(lo, -1000), max_value=min(hi, 100_000)),
        st.integers(min_value=lo, max_value=hi),
    )


# Timestamp's valid range is 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
TS_MIN, TS_MAX = -62_135_596_800, 253_402_300_799
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, the test clock's start
Y9998 = 253_370_592_000  # 9998-12-30T00:00:00Z, the test clock's latest time
Y9999 = 253_402_214_400  # 9999-12-31T00:00:00Z
DURATION_MAX = 315_576_000_000  # Duration's valid range is +-10,000 years


def _timestamp_fields() -> st.SearchStrategy[dict[str, int]]:
    seconds = st.one_of(
        st.sampled_from(
            [
                *(0, -1, *I64, TS_MIN, TS_MIN - 1, TS_MAX, TS_MAX + 1, T0, T0 + 86_400, T0 - 1),
                *(Y9998 - 1, Y9998, Y9998 + 1, Y9999 - 86_400, Y9999, Y9999 + 1),
            ]
        ),
        st.integers(min_value=TS_MIN, max_value=TS_MAX),
        st.integers(*I64),
    )
    nanos = st.one_of(st.sampled_from([0, 999_999_999, 10**9, -1, *I32]), st.integers(*I32))
    return st.fixed_dictionaries({}, optional={"seconds": seconds, "nanos": nanos})


def _duration_fields() -> st.SearchStrategy[dict[str, int]]:
    seconds = st.one_of(
        st.sampled_from(
            [0, 1, -1, 60, 86_400, *I64, DURATION_MAX, DURATION_MAX + 1, -DURATION_MAX, 10**10]
        ),
        st.integers(min_value=-1000, max_value=10**7),
        st.integers(*I64),
    )
    nanos = st.one_of(st.sampled_from([0, 1, -1, 999_999_999, 10**9, *I32]), st.integers(*I32))
    return st.fixed_dictionaries({}, optional={"seconds": seconds, "nanos": nanos})


def _enum(fd: FieldDescriptor) -> st.SearchStrategy[int]:
    assert fd.enum_type is not None
    declared = [v.number for v in fd.enum_type.values]
    return st.one_of(
        st.sampled_from(declared),
        st.sampled_from([max(declared) + 1, -1, *I32]),
        st.integers(*I32),
    )


SCALARS: dict[int, Callable[[], st.SearchStrategy[Any]]] = {
    FieldDescriptor.TYPE_INT64: lambda: _int(*I64),
    FieldDescriptor.TYPE_SINT64: lambda: _int(*I64),
    FieldDescriptor.TYPE_SFIXED64: lambda: _int(*I64),
    FieldDescriptor.TYPE_INT32: lambda: _int(*I32),
    FieldDescriptor.TYPE_SINT32: lambda: _int(*I32),
    FieldDescriptor.TYPE_SFIXED32: lambda: _int(*I32),
    FieldDescriptor.TYPE_UINT64: lambda: _int(0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: lambda: _int(0, 2**64 - 1),
    FieldDescriptor.TYPE_UINT32: lambda: _int(0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: lambda: _int(0, 2**32 - 1),
    FieldDescriptor.TYPE_BOOL: st.booleans,
    FieldDescriptor.TYPE_DOUBLE: st.floats,
    FieldDescriptor.TYPE_FLOAT: lambda: st.floats(width=32),
    FieldDescriptor.TYPE_BYTES: lambda: st.binary(max_size=64),
}


def _value(fd: FieldDescriptor, known: dict[str, list[str]], depth: int) -> st.SearchStrategy[Any]:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        assert fd.message_type is not None
        return messages(fd.message_type, known, depth + 1)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return _enum(fd)
    if fd.type == FieldDescriptor.TYPE_STRING:
        return _text(fd.name, known)
    return SCALARS[fd.type]()


@st.composite
def _many(draw: st.DrawFn, value: st.SearchStrategy[Any]) -> list[Any]:
    """Many entries (5-300; within the per-request limits or past them), made of a
    few drawn values repeated so that drawing stays cheap."""
    n = draw(st.integers(min_value=5, max_value=300))
    some = draw(st.lists(value, min_size=1, max_size=3))
    return (some * n)[:n]


def _hostile_field(
    fd: FieldDescriptor, known: dict[str, list[str]], depth: int
) -> st.SearchStrategy[Any]:
    value = _value(fd, known, depth)
    if fd.is_repeated:
        few = st.lists(value, max_size=4)
        return st.one_of(few, few, few, _many(value))
    return value


# Plausible numbers by field name: what a well-behaved caller would send.
PLAUSIBLE_INTS: dict[str, tuple[int, int]] = {
    "tokens": (1, 200),
    "daily_rate": (0, 20),
    "min_linux_version": (2020, 2027),
    "page_size": (0, 5),
    "seconds_since_activity": (0, 2000),
    "seconds": (T0 - 86_400, T0 + 40 * 86_400),  # Timestamp: around the test clock
    "nanos": (0, 999_999_999),
}


def _plausible_field(
    fd: FieldDescriptor, known: dict[str, list[str]], depth: int
) -> st.SearchStrategy[Any]:
    value: st.SearchStrategy[Any]
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        assert fd.message_type is not None
        if fd.message_type.full_name == "google.protobuf.Duration":
            value = st.builds(
                message_factory.GetMessageClass(fd.message_type),
                seconds=st.integers(0, 2 * 86_400),
            )
        else:
            value = messages(fd.message_type, known, depth + 1, hostile=0)
    elif fd.type == FieldDescriptor.TYPE_ENUM:
        assert fd.enum_type is not None
        value = st.sampled_from([v.number for v in fd.enum_type.values])
    elif fd.type == FieldDescriptor.TYPE_STRING:
        ids = known.get(fd.name)
        value = st.sampled_from(ids) if ids else st.sampled_from(["x", "Name", "2026"])
    elif fd.type == FieldDescriptor.TYPE_BOOL:
        value = st.booleans()
    elif fd.type in SCALARS and fd.type not in (
        FieldDescriptor.TYPE_DOUBLE,
        FieldDescriptor.TYPE_FLOAT,
        FieldDescriptor.TYPE_BYTES,
    ):
        value = st.integers(*PLAUSIBLE_INTS.get(fd.name, (0, 100)))
    else:
        value = SCALARS[fd.type]()
    if fd.is_repeated:
        return st.lists(value, max_size=3)
    return value


def messages(
    desc: descriptor.Descriptor,
    known: dict[str, list[str]],
    depth: int = 0,
    *,
    hostile: int | None = None,
) -> st.SearchStrategy[message.Message]:
    """A message of type ``desc``. With ``hostile=None`` every field is present or
    not, with hostile values; with ``hostile=k`` the message is what a plausible
    caller would send (real ids, valid enums, small numbers) except for ``k``
    fields with hostile values, so that one bad field meets the deeper checks."""
    cls = message_factory.GetMessageClass(desc)
    if desc.full_name == "google.protobuf.Timestamp" and hostile is None:
        return _timestamp_fields().map(lambda kw: cls(**kw))
    if desc.full_name == "google.protobuf.Duration" and hostile is None:
        return _duration_fields().map(lambda kw: cls(**kw))
    fields = [
        fd for fd in desc.fields if not (depth > 3 and fd.type == FieldDescriptor.TYPE_MESSAGE)
    ]

    def build(values: dict[str, Any]) -> message.Message:
        msg = cls()
        for name, v in values.items():
            fd = desc.fields_by_name[name]
            if fd.is_repeated:
                target = getattr(msg, name)
                if fd.type == FieldDescriptor.TYPE_MESSAGE:
                    for item in v:
                        target.add().CopyFrom(item)
                else:
                    target.extend(v)
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(msg, name).CopyFrom(v)
            else:
                setattr(msg, name, v)
        return msg

    if hostile is None:
        optional = {fd.name: _hostile_field(fd, known, depth) for fd in fields}
        return st.fixed_dictionaries({}, optional=optional).map(build)

    @st.composite
    def plausible(draw: st.DrawFn) -> message.Message:
        bad = set(
            draw(st.lists(st.sampled_from(fields), max_size=hostile, unique=True))
            if fields and hostile
            else []
        )
        values: dict[str, Any] = {}
        for fd in fields:
            if fd in bad:
                values[fd.name] = draw(_hostile_field(fd, known, depth))
            elif fd.type != FieldDescriptor.TYPE_MESSAGE or draw(st.booleans()):
                values[fd.name] = draw(_plausible_field(fd, known, depth))
        return build(values)

    return plausible()


# -- credentials -----------------------------------------------------------------

CREDENTIALS = ["right"] * 10 + ["none", "wrong", "other", "basic", "bare", "blank", "huge"]


def _authorization(w: World, service: str, kind: str) -> str | None:
    right = ADMIN_TOKEN if service == "AdminService" else w.user_key
    return {
        "right": f"Bearer {right}",
        "none": None,
        "wrong": "Bearer tsk_wrong-" + right[-6:],
        # The other service's credential: a user key on AdminService, the admin token
        # on LicensingService.
        "other": f"Bearer {w.user_key if service == 'AdminService' else ADMIN_TOKEN}",
        "basic": "Basic " + right,
        "bare": right,  # no scheme
        "blank": "Bearer    ",  # (a tab or a control character never leaves the client)
        "huge": "Bearer " + "k" * 4000,
    }[kind]


def _expected_refusal(service: str, method: str, kind: str) -> grpc.StatusCode | None:
    """The code a call must get for its credential alone, if it is refused for it."""
    if method in NO_CREDENTIAL or kind == "right":
        return None
    if kind == "other" and service == "AdminService":
        return grpc.StatusCode.PERMISSION_DENIED
    return grpc.StatusCode.UNAUTHENTICATED


# -- judging an answer -----------------------------------------------------------------


def _top_field(path: str) -> str:
    """``product.platforms[0]`` -> ``product``."""
    for i, ch in enumerate(path):
        if ch in ".[":
            return path[:i]
    return path


def judge(
    service: str,
    method: str,
    request: message.Message,
    kind: str,
    code: grpc.StatusCode,
    answer: message.Message | grpc.RpcError,
) -> None:
    what = f"{service}/{method} ({kind} credential) {_show(request)}"
    if request.ByteSize() > MAX_MESSAGE_BYTES:
        # gRPC itself refuses it before any handler runs (server/config.py,
        # max_message_bytes): no tessera details, but never INTERNAL.
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, f"{what}: {code.name}"
        return
    must = _expected_refusal(service, method, kind)
    if must is not None:
        assert code is must, f"{what}: {code.name}, expected {must.name}: {_details(answer)}"
        return
    if code is grpc.StatusCode.OK:
        return
    assert code in ALLOWED, f"{what}: {code.name}: {_details(answer)}"
    assert isinstance(answer, grpc.RpcError)
    status = rpc_status.from_call(answer)  # type: ignore[arg-type]
    assert status is not None, f"{what}: {code.name} without status details: {_details(answer)}"
    infos, bad = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            bad.extend(br.field_violations)
    assert len(infos) == 1, f"{what}: {code.name} without one ErrorInfo"
    assert infos[0].domain == "tessera" and infos[0].reason, f"{what}: {infos[0]}"
    assert "Traceback" not in status.message and "<class " not in status.message, what
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        assert bad, f"{what}: INVALID_ARGUMENT without a BadRequest: {status.message}"
        fields = set(request.DESCRIPTOR.fields_by_name)
        for v in bad:
            assert v.description, f"{what}: violation of {v.field!r} says nothing"
            assert _top_field(v.field) in fields, (
                f"{what}: BadRequest names {v.field!r}, not a field of the request"
            )


class Shown:
    """A drawn request that Hypothesis prints in at most a few lines."""

    def __init__(self, msg: message.Message) -> None:
        self.msg = msg

    def __repr__(self) -> str:
        return _show(self.msg)


def _show(request: message.Message) -> str:
    text = repr(request)
    return text if len(text) < 600 else text[:600] + f"... ({len(text)} chars)"


def _details(answer: object) -> str:
    if isinstance(answer, grpc.RpcError):
        details = answer.details() or ""
        return details[:500]
    return ""


# -- the fuzz tests ------------------------------------------------------------------


def _fuzz_call(
    w: World, data: st.DataObject, service: str, methods: list[str] | None = None
) -> None:
    names = methods or list(SERVICES[service].methods_by_name)
    method = data.draw(st.sampled_from(names), label="method")
    mdesc = SERVICES[service].methods_by_name[method]
    # Half the requests are hostile throughout; half are plausible but for 0-2 fields.
    hostile = data.draw(st.sampled_from([None, None, None, 0, 1, 1, 2]), label="hostile fields")
    strategy = messages(mdesc.input_type, w.known, hostile=hostile)
    request = data.draw(strategy.map(Shown), label="request").msg
    kind = data.draw(st.sampled_from(CREDENTIALS), label="credential")
    code, answer = w.call(service, method, request, _authorization(w, service, kind))
    judge(service, method, request, kind, code, answer)
    if (
        isinstance(answer, admin_service_pb2.IssueUserKeyResponse)
        and answer.user_id.strip().lower() == "ann@x.io"
    ):
        w.user_key = answer.user_key  # a new key replaces the old one
    if code is grpc.StatusCode.OK:
        w.learn(answer)


@FUZZ
@given(data=st.data())
def test_licensing_service_refuses_hostile_requests_clearly(
    world: World, data: st.DataObject
) -> None:
    _fuzz_call(world, data, "LicensingService")


# AdvanceClock last (below): moving the clock by years changes what every other call sees.
ADMIN_METHODS = [m for m in SERVICES["AdminService"].methods_by_name if m != "AdvanceClock"]


@FUZZ
@given(data=st.data())
def test_admin_service_refuses_hostile_requests_clearly(world: World, data: st.DataObject) -> None:
    _fuzz_call(world, data, "AdminService", ADMIN_METHODS)


@FUZZ
@given(data=st.data())
def test_every_rpc_after_hostile_clock_moves(world: World, data: st.DataObject) -> None:
    """AdvanceClock with extreme instants and spans, mixed with every other call,
    so that calls also meet a clock far in the future."""
    service = data.draw(st.sampled_from(sorted(SERVICES)), label="service")
    if service == "AdminService" and data.draw(st.booleans(), label="advance"):
        _fuzz_call(world, data, service, ["AdvanceClock"])
    else:
        _fuzz_call(world, data, service)


def test_server_is_healthy_after_the_fuzzing(world: World) -> None:
    world.healthy()
    code, answer = world.call(
        "AdminService",
        "GetServerInfo",
        admin_service_pb2.GetServerInfoRequest(),
        f"Bearer {ADMIN_TOKEN}",
    )
    assert code is grpc.StatusCode.OK, _details(answer)


# -- undecodable bodies --------------------------------------------------------------

GARBAGE_BODIES = [
    b"\xff\xff\xff",  # corrupt wire format
    b"\x0a\x03\xff\xfe\xfd",  # field 1 (a string everywhere it exists): invalid UTF-8
    b"\x0a\xff\xff\xff\xff\x0f",  # a length far past the end
    b"\x08",  # a varint that never comes
    b"\x0a\x05abc",  # truncated string
    b"\x12\x02\xc0\xaf",  # overlong UTF-8 in field 2
    b"\x0b\x0c",  # start/end group
    b"\xf8\xff\xff\xff\x0f\x01",  # an unknown field number at the top of the range
    b"\x00" * 64,
]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_undecodable_request_bodies_are_invalid_argument(world: World, service: str) -> None:
    for method in SERVICES[service].methods_by_name:
        raw = world.channel.unary_unary(
            f"/{SERVICES[service].full_name}/{method}",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        token = ADMIN_TOKEN if service == "AdminService" else world.user_key
        for body in [*GARBAGE_BODIES, os.urandom(random.randint(1, 300))]:
            SENT[f"{service}/{method}"] += 1
            try:
                raw(body, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
                continue  # some garbage happens to parse (unknown fields are allowed)
            except grpc.RpcError as exc:
                code = exc.code()
                ANSWERS[(method, code.name)] += 1
                assert code in ALLOWED, f"{method} {body!r}: {code.name} {exc.details()}"
                status = rpc_status.from_call(exc)  # type: ignore[arg-type]
                assert status is not None and status.details, f"{method} {body!r}: no details"
    world.healthy()


# -- raw garbage and half-open connections on the port ----------------------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _port(w: World) -> int:
    return int(w.server.server.port)


def _send_raw(port: int, payload: bytes, wait: float = 0.2) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(payload)
            s.settimeout(wait)
            return s.recv(65536)
        except (TimeoutError, ConnectionError):
            return b""


def test_raw_garbage_on_the_port(world: World) -> None:
    port = _port(world)
    rng = random.Random(6)
    payloads = [
        b"",
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"POST /tessera.v1.AdminService/ListTeams HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/grpc\r\nContent-Length: 5\r\n\r\n\x00\x00\x00\x00\x00",
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        H2_PREFACE[:10],  # truncated preface
        H2_PREFACE[:-1],
        H2_PREFACE,  # preface, then silence
        H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",  # an empty SETTINGS frame
        H2_PREFACE + b"\xff\xff\xff\x04\x00\x00\x00\x00\x00",  # SETTINGS claiming 16 MB
        H2_PREFACE + b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x04\xff\xff\xff\xff",
        # SETTINGS, then HEADERS on stream 1 with nonsense HPACK
        H2_PREFACE
        + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        + b"\x00\x00\x08\x01\x05\x00\x00\x00\x01"
        + bytes(rng.randrange(256) for _ in range(8)),
        # DATA on stream 0, a protocol error
        H2_PREFACE
        + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        + b"\x00\x00\x04\x00\x00\x00\x00\x00\x00"
        b"abcd",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS ClientHello start
        b"\r\n" * 1000,
        b"\x00" * 70_000,
    ]
    payloads += [bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096))) for _ in range(40)]
    payloads += [H2_PREFACE + bytes(rng.randrange(256) for _ in range(200)) for _ in range(20)]
    for payload in payloads:
        _send_raw(port, payload)
    world.healthy()
    code, answer = world.call(
        "AdminService", "ListTeams", admin_service_pb2.ListTeamsRequest(), f"Bearer {ADMIN_TOKEN}"
    )
    assert code is grpc.StatusCode.OK, _details(answer)


def test_half_open_connections_do_not_starve_calls(world: World) -> None:
    port = _port(world)
    idle: list[socket.socket] = []
    try:
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i % 3 == 1:
                s.sendall(H2_PREFACE[: 1 + i % 20])  # a preface that never finishes
            elif i % 3 == 2:
                s.sendall(H2_PREFACE)  # a client that never asks for anything
            idle.append(s)
        # Normal calls on fresh connections still go through, promptly.
        start = time.monotonic()
        with grpc.insecure_channel(world.server.target) as channel:
            fresh = World(world.server, channel, world.user_key)
            for _ in range(20):
                code, answer = fresh.call(
                    "AdminService",
                    "ListTeams",
                    admin_service_pb2.ListTeamsRequest(),
                    f"Bearer {ADMIN_TOKEN}",
                    timeout=10,
                )
                assert code is grpc.StatusCode.OK, _details(answer)
            fresh.healthy()
        assert time.monotonic() - start < 20
    finally:
        for s in idle:
            s.close()
    world.healthy()


def test_many_connections_opened_and_dropped_mid_call(world: World) -> None:
    """Clients that send a request's first bytes and vanish."""
    port = _port(world)
    head = (
        H2_PREFACE
        + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        + b"\x00\x00\x40\x01\x04\x00\x00\x00\x01"  # HEADERS (64 bytes promised), never sent
    )
    for _ in range(100):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(head)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    world.healthy()


def test_health_stays_serving_at_the_end(world: World) -> None:
    world.healthy()
