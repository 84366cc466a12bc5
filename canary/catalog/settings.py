"""Which catalog a process reads: ``settings.catalog`` (``CANARY_CATALOG``, ``--catalog``), comma-
separated paths, or the shipped ``manifests/services/`` when empty.  The controller, the platforms
and the CLI all load it through :func:`catalog_for`, so they agree on the services there are.
"""

from __future__ import annotations

import functools
from pathlib import Path

from canary.catalog.entry import Catalog
from canary.catalog.loader import load_catalog
from core.settings import Settings

SHIPPED = Path(__file__).resolve().parents[2] / "manifests" / "services"


def catalog_paths(setting: str) -> tuple[str, ...]:
    paths = tuple(p.strip() for p in setting.split(",") if p.strip())
    return paths or (str(SHIPPED),)


def catalog_for(settings: Settings) -> Catalog:
    """The catalog of ``settings``; raises ``CatalogError`` (file, field, line) if it is wrong."""
    return load_catalog(catalog_paths(settings.catalog))


@functools.cache
def shipped_catalog() -> Catalog:
    """The incident's three services (tests, benchmarks and the replay start them by name)."""
    return load_catalog([SHIPPED])
