"""Where releases run, behind one Protocol (``base.Platform``): local processes, or Kubernetes
Deployments; :func:`make_platform` picks one from the settings."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from canary.catalog import Catalog
from canary.catalog.settings import catalog_for
from canary.platforms.base import Platform
from core.errors import ConfigError
from core.settings import Settings


def make_platform(
    settings: Settings, public_url: str, catalog: Catalog | None = None, withheld: Collection[str] = ()
) -> Platform:
    """``withheld``: values no local release may inherit (``LocalPlatform``)."""
    if settings.platform == "kubernetes":
        from canary.platforms.kubernetes import KubeApi, KubernetesPlatform  # its client only here

        return KubernetesPlatform(
            KubeApi(settings.kubernetes_namespace),
            namespace=settings.kubernetes_namespace,
            image=settings.kubernetes_image,
            canary_replicas=settings.kubernetes_canary_replicas,
            traffic=settings.traffic,
            catalog=catalog or catalog_for(settings),
        )
    if settings.platform != "local":
        raise ConfigError(f"unknown platform {settings.platform!r}: local or kubernetes")
    from canary.platforms.local import LocalPlatform

    return LocalPlatform(
        Path(settings.state_dir),
        catalog or catalog_for(settings),
        settings,
        route_table=f"{public_url}/api/routes",
        withheld=withheld,
    )
