"""Where releases run, behind one Protocol (``base.Platform``): local processes, or Kubernetes
Deployments; :func:`make_platform` picks one from the settings."""

from __future__ import annotations

from pathlib import Path

from canary.platforms.base import Platform
from core.errors import ConfigError
from core.settings import Settings


def make_platform(settings: Settings, public_url: str) -> Platform:
    if settings.platform == "kubernetes":
        from canary.platforms.kubernetes import KubeApi, KubernetesPlatform  # its client only here

        return KubernetesPlatform(
            KubeApi(settings.kubernetes_namespace),
            namespace=settings.kubernetes_namespace,
            image=settings.kubernetes_image,
            canary_replicas=settings.kubernetes_canary_replicas,
            traffic=settings.traffic,
        )
    if settings.platform != "local":
        raise ConfigError(f"unknown platform {settings.platform!r}: local or kubernetes")
    from canary.platforms.local import LocalPlatform

    state = Path(settings.state_dir)
    return LocalPlatform(
        state,
        {name: f"sqlite:///{state / name}.db" for name in ("importer", "opens", "resizer")},
        env={
            "CANARY_ADMIN_TOKEN": settings.admin_token,
            "CANARY_TABLE_TOKEN": settings.admin_token,
            "CANARY_ROUTE_TABLE": f"{public_url}/api/routes",
        },
    )
