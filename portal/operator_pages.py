"""The deployment's pages: the rate sheet (everyone reads it; the operator adds and
changes products) and the operator's admin keys (RULES AD1). A team administrator who opens
them is told in words what is the operator's, as the server refuses it."""

from __future__ import annotations

from typing import Any

import grpc
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response

from client_sdk.errors import NotFound, TesseraError
from portal import present
from portal.pages import (
    REASONS,
    again,
    change,
    confirmation,
    main_part,
    maybe,
    named,
    operator_only,
    passed_on,
    rate_sheet,
    refused,
    violations,
)
from portal.web import Session, form, href, redirect, render, signed_in
from tessera_api.tessera.v1 import common_pb2

PLATFORMS = (
    ("PLATFORM_WINDOWS", "Windows"),
    ("PLATFORM_MACOS", "macOS"),
    ("PLATFORM_LINUX", "Linux"),
)

# -- the rate sheet (RULES P1) --------------------------------------------------------------


async def products(request: Request) -> Response:
    """The rate sheet; ``?edit=ACAD`` (a row's "Change" link) opens the operator's form
    filled with that product as it is, so a change keeps what it does not touch (an
    upsert replaces the whole product). A form sent and refused shows what was typed."""
    session = signed_in(request)
    sheet, error, status = await main_part(rate_sheet(session))
    context: dict[str, Any] = {
        "title": "Rate sheet",
        "products": sheet or [],
        "sheet_error": error,
        "platforms": PLATFORMS,
        "page": "rate_sheet",
    }
    editing = request.query_params.get("edit", "")
    if editing and sheet is not None and not getattr(request.state, "form", None):
        found = next((p for p in sheet if p.product_id == editing), None)
        if found is None:
            context["form_error"] = REASONS["UNKNOWN_PRODUCT"]
            status = 404
        else:
            context["form"] = _filled(found)
            context["editing"] = found
    return render(request, "rate_sheet.html", context, session=session, status=status)


def _filled(product: common_pb2.Product) -> FormData:
    """The product form as the operator would have filled it for ``product``."""
    fields: list[tuple[str, str | UploadFile]] = [
        ("product_id", product.product_id),
        ("display_name", product.display_name),
        ("daily_rate", str(product.daily_rate)),
        ("kind", "plugin" if product.kind == common_pb2.PRODUCT_KIND_PLUGIN else "product"),
        ("host_product_id", product.host_product_id),
        ("min_linux_version", str(product.min_linux_version) if product.min_linux_version else ""),
    ]
    fields += [("platforms", common_pb2.Platform.Name(p)) for p in product.platforms]
    if product.idle_aware:
        fields.append(("idle_aware", "on"))
    # And the product as the page drew it, in hidden fields: the save applies only the
    # fields changed here (``_save_product``), and a refused form carries them on.
    fields += [("shown", "1"), *((f"{SHOWN}{name}", value) for name, value in fields)]
    return FormData(fields)


#: The prefix of the rate sheet's hidden fields that hold the product as its page drew it.
SHOWN = "shown_"

#: The product's fields a Change form may change, each with its words (a plugin's host
#: goes with its kind: one is never applied without the other).
PRODUCT_FIELDS = (
    (("display_name",), "name"),
    (("daily_rate",), "tokens a day"),
    (("kind", "host_product_id"), "kind"),
    (("platforms",), "platforms"),
    (("min_linux_version",), "oldest Linux release"),
    (("idle_aware",), "idle-aware"),
)


#: A blank "Tokens a day" is refused: a free product says 0 (RULES P1), never by omission.
RATE_REQUIRED = "Required: enter the tokens a day (0 for a free product)."


def _product(data: FormData) -> tuple[common_pb2.Product, dict[str, str]]:
    """The product the form describes, and the numbers in it that could not be read, each
    under its field's name (the rest is for the server to refuse by name)."""
    errors: dict[str, str] = {}

    def whole(name: str, limits: tuple[int, int], required: str = "") -> int:
        typed = str(data.get(name, ""))
        if required and not typed.strip():
            errors[name] = required
            return 0
        try:
            return present.whole(typed, limits, empty=0)
        except ValueError as exc:
            errors[name] = str(exc)
            return 0

    plugin = data.get("kind") == "plugin"
    product = common_pb2.Product(
        product_id=str(data.get("product_id", "")).strip(),
        display_name=str(data.get("display_name", "")).strip(),
        daily_rate=whole("daily_rate", present.INT64, RATE_REQUIRED),
        kind=common_pb2.PRODUCT_KIND_PLUGIN if plugin else common_pb2.PRODUCT_KIND_PRODUCT,
        host_product_id=str(data.get("host_product_id", "")).strip() if plugin else "",
        idle_aware=data.get("idle_aware") == "on",
        platforms=[str(p) for p in data.getlist("platforms") if str(p) in dict(PLATFORMS)],
        min_linux_version=whole("min_linux_version", present.INT32),
    )
    return product, errors


async def _save_product(request: Request, session: Session, data: FormData) -> Response:
    """UpsertProduct, which replaces the whole product. A Change form (``?edit=``) says
    how its page drew the product (``_shown``): only the fields changed on it are
    applied, on top of the product as the rate sheet holds it now, so a field another
    operator changed since (a new rate, P1) stays, unless this form changed it too (the
    last change wins). A form that does not say (the blank one, an older page, a form
    posted by hand) is the whole product, as typed."""
    product, errors = _product(data)
    if errors:
        return await again(request, session, products, errors)
    shown = _shown(data)
    now: common_pb2.Product | None = None
    if shown is not None and shown.product_id == product.product_id:
        try:
            sheet = await rate_sheet(session)
        except TesseraError as exc:
            passed_on(exc)
            return await again(request, session, products, {}, exc)
        now = next((p for p in sheet if p.product_id == product.product_id), None)
    if shown is None or now is None:
        return await change(
            request,
            session,
            products,
            session.client.upsert_product(product),
            f"Product {product.product_id} saved.",
            "/products",
        )
    changed = [(names, words) for names, words in PRODUCT_FIELDS if _differ(product, shown, names)]
    if not changed:
        session.flash.append(f"Product {product.product_id}: nothing changed.")
        return redirect("/products")
    saved = common_pb2.Product()
    saved.CopyFrom(now)
    for names, _ in changed:
        for name in names:
            saved.ClearField(name)
        saved.MergeFrom(common_pb2.Product(**{n: getattr(product, n) for n in names}))
    return await change(
        request,
        session,
        products,
        session.client.upsert_product(saved),
        f"Product {product.product_id} saved. Changed: {', '.join(w for _, w in changed)}.",
        "/products",
    )


def _shown(data: FormData) -> common_pb2.Product | None:
    """The product as a Change form's page drew it (its hidden ``shown_`` fields, read as
    the form is), or None for a form without them or with one that cannot be read."""
    if data.get("shown") != "1":
        return None
    drawn = FormData([(k[len(SHOWN) :], v) for k, v in data.multi_items() if k.startswith(SHOWN)])
    product, errors = _product(drawn)
    return None if errors else product


def _differ(one: common_pb2.Product, other: common_pb2.Product, names: tuple[str, ...]) -> bool:
    """Whether the two products differ in any of the fields ``names`` (platforms in any
    order)."""
    return any(
        sorted(getattr(one, n)) != sorted(getattr(other, n))
        if n == "platforms"
        else getattr(one, n) != getattr(other, n)
        for n in names
    )


save_product = form(_save_product)


# -- admin keys (the operator's: RULES AD1) ------------------------------------------------


async def admin_keys(request: Request) -> Response:
    session = signed_in(request)
    keys, error, status = await main_part(session.client.list_admin_keys())
    context: dict[str, Any] = {
        "title": "Admin keys",
        "keys": keys or [],
        "keys_error": error,
        "teams": (await maybe(session.client.all_teams()))[0] or [],
        "created": getattr(request.state, "created", None),
        "page": "admin_keys",
    }
    return render(request, "admin_keys.html", context, session=session, status=status)


async def _create_key(request: Request, session: Session, data: FormData) -> Response:
    """The new key's secret is shown on this answer only (never kept, never redirected)."""
    try:
        made = await session.client.create_admin_key(
            str(data.get("display_name", "")).strip(), [str(t) for t in data.getlist("team_ids")]
        )
    except TesseraError as exc:
        passed_on(exc)
        return await again(request, session, admin_keys, violations(exc), exc)
    request.state.created = made
    request.state.form = {}
    return await admin_keys(request)


create_key = form(_create_key)


async def confirm_revoke(request: Request) -> Response:
    session = signed_in(request)
    key_id = named(request, "key")
    if not session.operator:  # its form would be refused: nothing is asked
        return refused(request, session, operator_only())
    try:  # a key that is not one (an edited link) is not asked about
        keys = await session.client.list_admin_keys()
    except TesseraError as exc:
        passed_on(exc)
        return refused(request, session, exc)
    if all(k.admin_key_id != key_id for k in keys):  # as the server would refuse it
        unknown = NotFound(code=grpc.StatusCode.NOT_FOUND, reason="UNKNOWN_ADMIN_KEY")
        return refused(request, session, unknown)
    context = confirmation(
        f"Revoke admin key {key_id}?",
        "It stops working at once: whoever holds it is signed out of the portal.",
        (href("/admin-keys/revoke", key=key_id), "Revoke key"),
        "/admin-keys",
    )
    return render(request, "confirm.html", context, session=session)


async def _revoke(request: Request, session: Session, data: FormData) -> Response:
    key_id = named(request, "key")
    return await change(
        request,
        session,
        admin_keys,
        session.client.revoke_admin_key(key_id),
        f"Admin key {key_id} revoked.",
        "/admin-keys",
    )


revoke_key = form(_revoke)
