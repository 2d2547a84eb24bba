"""The rate sheet (P1) and what a product accepts (P2, P3)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

from server.domain.errors import (
    InvalidArgument,
    UnsupportedPlatform,
    UnsupportedVersion,
)

# Both matched whole (fullmatch): "$" alone would also let a final line break through.
PRODUCT_ID_RE = re.compile(r"[A-Z0-9]{1,32}")
# P2: a version is a year, or starts with one ("2025", "2025.1", "2025.2.1").
# ASCII digits only: "\d" would take any script's (Arabic-Indic, fullwidth).
# A year, then parts of ASCII letters and digits, each after one of ". -_+": 2025,
# 2025.1, 2025.0.1, 2025 R2, 2025-SP1, 2025.1-beta, 2025.1+build7.
VERSION_RE = re.compile(r"([0-9]{4})(?:[.\- _+][0-9A-Za-z]+)*")
# The year is one the API can name: from 1970, its earliest instant (a Timestamp
# before it is refused everywhere), to 9999, its latest; "0000" is no release.
MIN_VERSION_YEAR = 1970
DEFAULT_MIN_LINUX_VERSION = 2020


class ProductKind(Enum):
    PRODUCT = "PRODUCT"
    PLUGIN = "PLUGIN"


class Platform(Enum):
    WINDOWS = "WINDOWS"
    MACOS = "MACOS"
    LINUX = "LINUX"


@dataclass(slots=True)
class Product:
    product_id: str
    display_name: str
    daily_rate: int
    kind: ProductKind = ProductKind.PRODUCT
    host_product_id: str = ""
    idle_aware: bool = False
    platforms: frozenset[Platform] = field(default_factory=frozenset)
    min_linux_version: int = DEFAULT_MIN_LINUX_VERSION


def validate_product_id(product_id: str, field_name: str = "product_id") -> None:
    if not product_id:
        raise InvalidArgument.field(field_name, "is required")
    if not PRODUCT_ID_RE.fullmatch(product_id):
        raise InvalidArgument.field(
            field_name, "must be 1-32 uppercase letters and digits, like ACAD"
        )


def validate_product(product: Product, existing: dict[str, Product]) -> None:
    """P1: check a product before it joins the rate sheet; raise InvalidArgument."""
    problems: dict[str, str] = {}
    if not product.product_id:
        problems["product.product_id"] = "is required"
    elif not PRODUCT_ID_RE.fullmatch(product.product_id):
        problems["product.product_id"] = "must be 1-32 uppercase letters and digits, like ACAD"
    if product.daily_rate < 0:
        problems["product.daily_rate"] = "must be 0 or more tokens"
    if not product.platforms:
        problems["product.platforms"] = "must name at least one platform"
    if product.min_linux_version < 0 or product.min_linux_version > 9999:
        problems["product.min_linux_version"] = "must be a year such as 2020"
    if product.kind is ProductKind.PLUGIN:
        host = existing.get(product.host_product_id)
        if not product.host_product_id:
            problems["product.host_product_id"] = "is required for a plugin"
        elif product.host_product_id == product.product_id:
            problems["product.host_product_id"] = "a plugin cannot host itself"
        elif host is None:
            problems["product.host_product_id"] = (
                f"names {product.host_product_id!r}, which is not on the rate sheet"
            )
        elif host.kind is not ProductKind.PRODUCT:
            problems["product.host_product_id"] = (
                f"names {product.host_product_id!r}, which is a plugin, not a product"
            )
    elif product.host_product_id:
        problems["product.host_product_id"] = "only a plugin names a host product"
    old = existing.get(product.product_id)
    if (
        old is not None
        and old.kind is ProductKind.PRODUCT
        and product.kind is ProductKind.PLUGIN
        and any(p.host_product_id == old.product_id for p in existing.values())
    ):
        problems["product.kind"] = "this product hosts plugins and cannot become a plugin"
    if problems:
        raise InvalidArgument(problems)


def version_year(version: str) -> int:
    """P2: the year a version starts with; raise InvalidArgument if it has none."""
    m = VERSION_RE.fullmatch(version)
    if m is None or int(m.group(1)) < MIN_VERSION_YEAR:
        raise InvalidArgument.field(
            "product_version",
            f"must be a year from {MIN_VERSION_YEAR} to 9999 such as 2025, or start "
            "with one, then letters and digits after a dot, hyphen, space, underscore "
            "or plus (2025.1, 2025 R2, 2025-SP1)",
        )
    return int(m.group(1))


def check_runs_on(product: Product, platform: Platform, version: str, year: int) -> None:
    """P3: refuse a platform the product does not run on, or too old a Linux version
    (``year``: the version's, ``version_year``)."""
    if platform not in product.platforms:
        raise UnsupportedPlatform(
            f"{product.product_id} does not run on {platform.value}",
            product_id=product.product_id,
            platform=platform.value,
        )
    if platform is Platform.LINUX and year < product.min_linux_version:
        raise UnsupportedVersion(
            f"{product.product_id} {version} is older than the oldest Linux version "
            f"supported ({product.min_linux_version})",
            product_id=product.product_id,
            product_version=version,
            min_linux_version=product.min_linux_version,
        )
