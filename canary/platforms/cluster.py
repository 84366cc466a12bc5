"""The few Kubernetes API calls the Kubernetes platform makes, as a Protocol: the project's own
wrapper boundary.  ``canary.platforms.kubernetes.KubeApi`` implements it with the ``kubernetes``
client; the tests implement it in memory (no API server can run on a test machine).

Objects go in and out as plain dicts (as the API serialises them).  Failures are raised as the
errors below, never as the client's exceptions, so the platform's retry and reporting logic is the
same whoever is behind the boundary.
"""

from __future__ import annotations

from typing import Any, Protocol

from core.errors import DependencyUnavailable, ReleaseWardenError


class ClusterError(ReleaseWardenError):
    """An answer from the API server the platform cannot retry its way out of."""


class Conflict(ClusterError):
    """409: the object changed meanwhile (or already exists): read again and retry."""


class Forbidden(ClusterError):
    """403: the controller's ServiceAccount may not do this; the message names verb and resource."""


class NotFound(ClusterError):
    """404."""


class Transient(DependencyUnavailable):
    """429, 5xx, a timeout or a refused connection: worth another try after a pause."""


class ClusterApi(Protocol):
    def read_deployment(self, name: str) -> dict[str, Any] | None: ...

    def create_deployment(self, body: dict[str, Any]) -> None: ...

    def patch_deployment(self, name: str, patch: dict[str, Any]) -> None: ...

    def read_route(self, name: str) -> dict[str, Any] | None: ...

    def patch_route(self, name: str, patch: dict[str, Any]) -> None: ...
