"""A demo product: ``python -m client_sdk.demo --target 127.0.0.1:50051 --admin-token ...``.

With the admin token it first provisions what it needs through AdminService (a team
with tokens, the product ``DEMOCAD`` and its plugin ``DEMOPLUG`` unless the rate sheet
has them, an imported user and a key for them, kept in ``--keys-dir`` for the next run:
issuing another would revoke the one a demo still running holds); with ``--user-key``
it uses that user's key as it is. Then it plays a product: entitles, works for a while,
stops working until the SDK reports it idle, comes back, opens its plugin, and releases
both, printing what happens on the way. Ctrl+C, SIGTERM and SIGHUP (a terminal closed)
stop it the same way: what it opened is released first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc

from client_sdk._retry import RetryPolicy
from client_sdk.admin import MAX_PURCHASE_TOKENS, pages
from client_sdk.client import AsyncClient
from client_sdk.clock import Clock, SystemClock
from client_sdk.errors import TesseraError, Unauthenticated
from client_sdk.models import ChargeState, EndReason, Platform, Session, SessionState
from client_sdk.session import AsyncSessionHandle, EndedCallback, SessionOptions, StateCallback
from client_sdk.transport import TLS, bearer_secret, open_channel, target_problem, tls_problem
from tessera_api.tessera.v1 import admin_service_pb2 as admin_pb
from tessera_api.tessera.v1 import admin_service_pb2_grpc as admin_grpc
from tessera_api.tessera.v1 import common_pb2

ALL_PLATFORMS = [common_pb2.PLATFORM_WINDOWS, common_pb2.PLATFORM_MACOS, common_pb2.PLATFORM_LINUX]
_T = TypeVar("_T")


class Printer:
    def __init__(self, started: datetime, clock_now: Any) -> None:
        self.started = started
        self.now = clock_now

    def __call__(self, text: str) -> None:
        elapsed = (self.now() - self.started).total_seconds()
        print(f"[{elapsed:6.1f}s] {text}", flush=True)


def _when(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC") if t else "-"


#: The longest ``--work`` or ``--idle-after``, in seconds (some 30 years): far longer ones
#: overflow the ``timedelta`` or the ``datetime`` that the demo and the SDK make of them.
MAX_SECONDS = 1e9
#: The server the demo plays without ``--target`` or ``TESSERA_TARGET`` (``make run``'s).
TARGET = "127.0.0.1:50051"


def _number(
    kind: type[int] | type[float], least: float, most: float, *, above: bool = False
) -> Any:
    """An argparse ``type``: a finite number of ``kind``, at least ``least`` (above it) and
    at most ``most``."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (least <= value <= most) or (above and value == least):  # (nan: neither)
            bound = "greater than" if above else "at least"
            raise argparse.ArgumentTypeError(
                f"{text}: must be a number {bound} {least:g} and at most {most:,.0f}"
            )
        return value

    return convert


def _readable(p: argparse.ArgumentParser, flag: str, path: str | None) -> None:
    """A PEM file named on the command line must be there to read now, not be a
    traceback when the channel is made (a PEM given as text is taken as it is)."""
    if path is None or path.lstrip().startswith("-----BEGIN"):  # as ``read_pem``
        return
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        p.error(f"{flag} {path}: {exc.strerror or exc}")


def tokens_request_id(team: str, tokens: int) -> str:
    """The request_id of the demo's purchase: one per team and amount, so that a re-run
    with the same ``--tokens`` buys nothing more (RULES M11 answers with the first
    purchase) and one with another amount is a purchase of its own, not a reuse of the
    first one's id (ALREADY_EXISTS)."""
    return f"demo-{team}-tokens-{tokens}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m client_sdk.demo", description="Play a product against a Tessera server."
    )
    p.add_argument("--target", default=None, help=f"host:port (TESSERA_TARGET; default {TARGET})")
    who = p.add_mutually_exclusive_group()
    who.add_argument(
        "--admin-token",
        help="provision a team, products, a user and their key first (TESSERA_ADMIN_TOKEN)",
    )
    who.add_argument("--user-key", help="(TESSERA_USER_KEY)")
    p.add_argument(
        "--keys-dir",
        type=Path,
        default=Path("var/demo-keys"),
        help="where provisioning keeps the user's key for the next run (owner-only)",
    )
    p.add_argument(
        "--takeover",
        action="store_true",
        help="move the product here from another device that runs it (RULES M9)",
    )
    p.add_argument("--product", default="DEMOCAD")
    p.add_argument("--plugin", default="DEMOPLUG")
    p.add_argument("--version", default="2026")
    p.add_argument("--platform", type=Platform.parse, default=None, help="windows, macos, linux")
    p.add_argument("--device-id", default=None, help="default: this machine's")
    p.add_argument("--team", default="demo", help="the team to provision (with --admin-token)")
    p.add_argument("--user", default="Demo User <demo@example.com>")
    p.add_argument(
        "--tokens",
        type=_number(int, 1, MAX_PURCHASE_TOKENS),
        default=100,
        help="tokens to buy for the team, once per amount (a re-run buys no more)",
    )
    p.add_argument(
        "--work",
        type=_number(float, 0, MAX_SECONDS),
        default=2.0,
        help="seconds of work before going idle",
    )
    p.add_argument(
        "--idle-after",
        type=_number(float, 0, MAX_SECONDS, above=True),
        default=3.0,
        help="seconds without activity before Idle",
    )
    p.add_argument("--tls", action="store_true", help="TLS with the system roots or --root-ca")
    p.add_argument("--root-ca", default=None, help="PEM file of the server's root CA")
    p.add_argument("--client-cert", default=None, help="PEM file, for mutual TLS")
    p.add_argument("--client-key", default=None, help="PEM file, for mutual TLS")
    args = p.parse_args(argv)
    # A flag given beats the environment; a problem is named after where the value came
    # from (the variable, when it is the environment's).
    said = {"target": "--target", "admin_token": "--admin-token", "user_key": "--user-key"}
    if args.target is None:
        args.target = os.environ.get("TESSERA_TARGET")
        said["target"] = "TESSERA_TARGET"
        if args.target is None:
            args.target, said["target"] = TARGET, "--target"
    problem = target_problem(args.target)
    if problem:
        p.error(f"{said['target']} {args.target!r}: {problem}")
    if args.admin_token is None and args.user_key is None:
        args.admin_token = os.environ.get("TESSERA_ADMIN_TOKEN")
        args.user_key = os.environ.get("TESSERA_USER_KEY")
        said["admin_token"], said["user_key"] = "TESSERA_ADMIN_TOKEN", "TESSERA_USER_KEY"
    if not args.admin_token and not args.user_key:
        p.error("give --admin-token (to provision) or --user-key")
    # The one that is used (``play``) must go in a header: a line break in it would be
    # grpc's error on the first call, or a traceback out of the SDK's own check.
    which = "user_key" if args.user_key else "admin_token"
    flag, secret = said[which], getattr(args, which)
    try:
        secret = bearer_secret(flag, secret)
    except ValueError as exc:
        p.error(str(exc))
    if args.user_key:
        args.user_key = secret
    else:
        args.admin_token = secret
    for flag, path in (
        ("--root-ca", args.root_ca),
        ("--client-cert", args.client_cert),
        ("--client-key", args.client_key),
    ):
        _readable(p, flag, path)
    if bool(args.client_cert) != bool(args.client_key):
        p.error("--client-cert and --client-key go together (mutual TLS)")
    problem = _tls_problem(args)
    if problem:
        p.error(problem)
    return args


#: The demo's flag for each file of its TLS (what a refusal names).
TLS_FLAGS = {"root_ca": "--root-ca", "client_cert": "--client-cert", "client_key": "--client-key"}


def _tls_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the PEM files given (None: nothing), named by their flags
    (``transport.tls_problem``): they were a traceback (a ``ValueError`` naming
    ``root_ca``) when the channel was made."""
    tls = _tls(args)
    return tls_problem(tls, TLS_FLAGS) if isinstance(tls, TLS) else None


def _tls(args: argparse.Namespace) -> TLS | bool:
    if args.root_ca or args.client_cert or args.client_key:
        return TLS(root_ca=args.root_ca, client_cert=args.client_cert, client_key=args.client_key)
    return bool(args.tls)


async def provision(args: argparse.Namespace, say: Printer) -> str:
    """Everything the demo needs, through AdminService; returns the user's key."""
    channel = open_channel(args.target, _tls(args))
    stub: Any = admin_grpc.AdminServiceStub(channel)
    md = (("authorization", f"Bearer {args.admin_token}"),)

    async def call(method: str, request: Any, *, exists_ok: bool = False) -> Any:
        try:
            return await getattr(stub, method)(request, metadata=md, timeout=10)
        except grpc.aio.AioRpcError as exc:
            if exists_ok and exc.code() is grpc.StatusCode.ALREADY_EXISTS:
                return None
            raise

    try:
        info = await call("GetServerInfo", admin_pb.GetServerInfoRequest())
        clock = "test clock" if info.test_clock else "real clock"
        say(f"server {info.version} at {args.target}, {clock}, now {info.now.ToJsonString()}")
        await call(
            "CreateTeam",
            admin_pb.CreateTeamRequest(team_id=args.team, display_name="Demo team"),
            exists_ok=True,
        )
        pack = await call(
            "PurchaseTokens",
            admin_pb.PurchaseTokensRequest(
                team_id=args.team,
                tokens=args.tokens,
                request_id=tokens_request_id(args.team, args.tokens),
            ),
        )
        sheet = await _product_ids(call)
        for product in (
            common_pb2.Product(
                product_id=args.product,
                display_name="Demo CAD",
                daily_rate=10,
                kind=common_pb2.PRODUCT_KIND_PRODUCT,
                idle_aware=True,
                platforms=ALL_PLATFORMS,
            ),
            common_pb2.Product(
                product_id=args.plugin,
                display_name="Demo plugin",
                daily_rate=2,
                kind=common_pb2.PRODUCT_KIND_PLUGIN,
                host_product_id=args.product,
                platforms=ALL_PLATFORMS,
            ),
        ):
            if product.product_id in sheet:  # the operator's: played as the sheet has it
                say(f"product {product.product_id} is on the rate sheet already: left as it is")
                continue
            await call("UpsertProduct", admin_pb.UpsertProductRequest(product=product))
        members = await call(
            "ImportUsers",
            admin_pb.ImportUsersRequest(team_id=args.team, users=[args.user], all_products=True),
            exists_ok=True,
        )
        user_id = members.members[0].user_id if members else _email(args.user)
        kept = _key_file(args, user_id)
        key = await _kept_key(args, kept)
        how = f"the key kept in {kept}"
        if key is None:  # none yet, or this server does not know it: a new one
            issued = await call("IssueUserKey", admin_pb.IssueUserKeyRequest(user_id=user_id))
            key = str(issued.user_key)
            how = _keep(kept, key)
        team = (await call("GetTeam", admin_pb.GetTeamRequest(team_id=args.team))).team
        say(
            f"provisioned team {args.team!r} ({team.available_tokens} tokens available; "
            f"pack {pack.token_pack.pack_id}), products {args.product} and plugin {args.plugin}, "
            f"user {user_id} with {how}"
        )
        return key
    finally:
        await channel.close()


async def _product_ids(call: Callable[..., Awaitable[Any]]) -> set[str]:
    """The ids on the rate sheet."""
    listed = pages(
        lambda token: call(
            "ListProducts", admin_pb.ListProductsRequest(page_size=1000, page_token=token)
        ),
        lambda page: page.products,
    )
    return {p.product_id async for p in listed}


def _key_file(args: argparse.Namespace, user_id: str) -> Path:
    """Where the key of ``user_id`` on this server is kept: a server each (two servers'
    keys in one file would issue each other's away, revoking a running demo's)."""

    def safe(text: str) -> str:
        return "".join(ch if ch.isalnum() or ch in "@.-_" else "_" for ch in text)

    return Path(args.keys_dir) / safe(args.target) / f"{safe(user_id)}.key"


async def _kept_key(args: argparse.Namespace, path: Path) -> str | None:
    """The key a run before kept for this user, if this server still takes it."""
    try:
        key = path.read_text().strip()
        bearer_secret("kept key", key)
    except (OSError, ValueError):
        return None
    async with AsyncClient(
        args.target, key, tls=_tls(args), retry=RetryPolicy(max_attempts=1)
    ) as c:
        try:
            await c.list_my_products()
        except Unauthenticated:  # issued again since (or the server's data is another's)
            return None
        except TesseraError:  # not a refusal of the key: the provisioning's calls say more
            return key
    return key


def _keep(path: Path, key: str) -> str:
    """Keep ``key`` in ``path``, readable by this user alone; says where (or why not)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(fd, 0o600)  # (a file there already keeps its mode otherwise)
            f.write(key + "\n")
    except OSError as exc:
        return f"a new key (not kept: {exc.strerror or exc}; the next run issues another)"
    return f"a new key, kept in {path}"


def _email(entry: str) -> str:
    return entry.rsplit("<", 1)[-1].rstrip(">").strip().lower()


def _describe(s: Session) -> str:
    return (
        f"session {s.session_id}: {s.state.name.lower()}, team {s.team_id}, "
        f"{s.coverage.name.lower()} at {s.daily_rate} tokens/day, charge {s.charge_state.name.lower()}"
    )


async def _work(clock: Clock, handle: AsyncSessionHandle, seconds: float) -> None:
    """The user does something meaningful every quarter of a second."""
    until = clock.now() + timedelta(seconds=seconds)
    while clock.now() < until and not handle.ended:
        handle.touch()
        await clock.sleep(min(0.25, seconds))


async def _wait_for(
    clock: Clock, handle: AsyncSessionHandle, state: SessionState, timeout: float
) -> bool:
    async def reached() -> None:  # (or it never will: ended, or the server not answering)
        while handle.state is not state and not handle.ended and handle.online:
            await clock.sleep(0.05)

    try:
        await asyncio.wait_for(reached(), timeout)
    except TimeoutError:
        return False
    return handle.state is state


async def _goes_on(
    clock: Clock,
    s: AsyncSessionHandle,
    state: SessionState,
    timeout: float,
    what: str,
    guess: str,
    say: Printer,
) -> bool:
    """Whether the demo goes on once ``s`` reached ``state`` (or did not, said why with
    ``guess`` unless the server does not answer): not once the session has ended
    (``ended`` said why)."""
    if await _wait_for(clock, s, state, timeout):
        return True
    if s.ended:
        return False
    why = ": the server does not answer" if not s.online else f" ({guess})"
    say(f"the session did not {what}{why}")
    return True


async def _play(
    args: argparse.Namespace,
    clock: Clock,
    s: AsyncSessionHandle,
    ended: EndedCallback,
    state: StateCallback,
    release: Callable[[AsyncSessionHandle], Awaitable[None]],
    say: Printer,
) -> None:
    """What the user does with the product ``s`` and its plugin."""
    say(f"entitled {args.product} {args.version}: {_describe(s.session)}")
    lease_end = s.lease.lease_expire_time if s.lease else None
    say(
        f"grace ends {_when(s.session.grace_end_time)}, signed lease "
        f"(key {s.lease.key_id if s.lease else '-'}, verified) ends "
        f"{_when(lease_end)}, {s.session.team_available_tokens} tokens left"
    )
    say(f"working for {args.work:g}s (touching on every action)")
    await _work(clock, s, args.work)
    if s.ended:  # (``ended`` said why)
        return
    say(f"the user stops; the SDK calls Idle after {args.idle_after:g}s without activity")
    idle = (SessionState.IDLE, args.idle_after + 10, "go idle", "is the product idle-aware?")
    if not await _goes_on(clock, s, *idle, say):
        return
    say("the user is back: touch()")
    s.touch()
    back = (SessionState.ACTIVE, 10, "come back", "a test clock that stands still?")
    if not await _goes_on(clock, s, *back, say):
        return
    async with s.plugin(args.plugin, on_ended=ended, on_state_changed=state) as p:
        try:
            say(f"opened plugin {args.plugin}: {_describe(p.session)}")
            say(f"plugin bound to host {p.session.parent_session_id}")
            await _work(clock, p, args.work)  # a plugin's activity is its host's too
        finally:
            await release(p)


async def play(args: argparse.Namespace) -> int:
    options = SessionOptions(idle_threshold=timedelta(seconds=args.idle_after))
    clock = SystemClock()
    say = Printer(clock.now(), clock.now)
    key = args.user_key or await provision(args, say)
    async with AsyncClient(
        args.target,
        key,
        tls=_tls(args),
        clock=clock,
        device_id=args.device_id,
        platform=args.platform,
        session_options=options,
    ) as client:
        # Products whose end by Release the demo reports itself, once the Release answered:
        # the SDK ends a handle whose Release failed all the same (RELEASE_UNCONFIRMED).
        releasing: set[str] = set()
        failed: list[str] = []
        by_release = (EndReason.RELEASED, EndReason.RELEASE_UNCONFIRMED)

        def ended(reason: EndReason, s: Session) -> None:
            if reason in by_release and s.product_id in releasing:
                return
            say(f"{s.product_id} ended: {reason.name.lower()}")

        def state(old: SessionState, new: SessionState, s: Session) -> None:
            say(f"{s.product_id} is now {new.name.lower()} (was {old.name.lower()})")

        def charge(old: ChargeState, new: ChargeState, s: Session) -> None:
            say(f"{s.product_id} charge state: {old.name.lower()} -> {new.name.lower()}")

        def lease(s: Session, left: timedelta) -> None:
            say(f"{s.product_id} is offline and its lease ends in {left}: reconnect soon")

        async def release(handle: AsyncSessionHandle) -> None:
            """Release ``handle`` and say what came of it: within the options'
            ``release_timeout``, as leaving the block would (the product is closing)."""
            if handle.ended:  # the server ended it already (``ended`` said why)
                await handle.release()
                return
            releasing.add(handle.product_id)
            say(f"releasing {handle.product_id}")
            try:
                session = await handle.release(timeout=options.release_timeout)
            except TesseraError as exc:
                failed.append(handle.product_id)
                say(
                    f"{handle.product_id}: Release failed ({type(exc).__name__}: {exc}); "
                    "the server still counts the session live until it times out"
                )
                return
            say(f"{handle.product_id} ended: {session.end_reason.name.lower()}")
            say(f"released {handle.product_id}: {_describe(session)}")

        say(f"device {client.device_id}, platform {client.platform.name.lower()}")
        try:
            async with client.session(
                args.product,
                args.version,
                takeover=args.takeover,
                on_ended=ended,
                on_state_changed=state,
                on_charge_state_changed=charge,
                on_lease_expiring=lease,
            ) as s:
                try:
                    await _play(args, clock, s, ended, state, release, say)
                finally:
                    await release(s)
        except TesseraError as exc:
            say(f"refused: {type(exc).__name__}: {exc}")
            return 2
        if failed:
            return 2
    return 0


async def _stoppable(work: Coroutine[Any, Any, _T], stopped: list[int]) -> _T:
    """``work``, cancelled by SIGTERM or SIGHUP as Ctrl+C cancels it (what it opened is
    released on the way out); the signal is added to ``stopped``."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def stop(signum: int) -> None:
        stopped.append(signum)
        if task is not None:
            task.cancel()

    # Windows has no SIGHUP, and its event loop takes no signal handlers: there Ctrl+C
    # (KeyboardInterrupt) is the one way to stop, as main() handles it.
    signals: list[int] = []
    for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if signum is None:
            continue
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop, signum)
            signals.append(signum)
    try:
        return await work
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stopped: list[int] = []
    try:
        return asyncio.run(_stoppable(play(args), stopped))
    except grpc.aio.AioRpcError as exc:  # only the admin calls of the provisioning step
        print(f"provisioning failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:
        if not stopped:
            raise
        return 128 + stopped[0]  # as a shell says a process ended by that signal


if __name__ == "__main__":
    sys.exit(main())
