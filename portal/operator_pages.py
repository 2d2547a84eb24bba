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
from portal.web import Session, form, href, render, signed_in
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
    return FormData(fields)


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
    product, errors = _product(data)
    if errors:
        return await again(request, session, products, errors)
    return await change(
        request,
        session,
        products,
        session.client.upsert_product(product),
        f"Product {product.product_id} saved.",
        "/products",
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
