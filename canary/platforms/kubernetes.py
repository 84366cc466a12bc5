"""The Kubernetes platform: releases are image tags of two Deployments per service, stable and canary.

Per service (and per queue consumer) the manifests (``manifests/kubernetes``) make a stable and a
canary Deployment (the canary at zero replicas) and a Service per track.  Names, image, tags, port
and HTTPRoute come from the service's catalog entry (``ServiceEntry.kube_*``; by default
``<service>-<track>``, ``IMAGE:RELEASE``, port 8000); the router reaches
``http://<Service of the track>.<namespace>.svc:<port>``.  The controller drives them through the
few calls of :class:`ClusterApi`:

- **start** a canary: its Deployment gets the new image (``IMAGE:RELEASE``, and ``CANARY_RELEASE``)
  and its replicas (created from stable's if it is missing); **start** stable at a release it does
  not run is a promotion: stable's Deployment moves to that image by a rolling update;
- **ready**: the Deployment has rolled out its current generation, every replica updated and
  available (the state machine's deadline then fails a canary that never is);
- **weights**: routers read the controller's route table; with ``traffic="gateway"`` the
  controller also sets the backend weights of the service's Gateway API HTTPRoute;
- **stop** a release: the canary's Deployment scales to zero (stable's is never scaled down);
  after a promotion the canary scales to zero at the end of the watch window (``retire_canary``);
  there is no warm copy of the old release: rolling back after a promotion is a rolling update.

Conflicts (409) and transient errors (429, 5xx, timeouts) are retried with a growing pause;
a refusal (403) is reported with the verb and resource the ServiceAccount may not use.
Only this module imports the ``kubernetes`` client (``KubeApi``, in-cluster or from a kubeconfig);
what a Deployment's dict says is read in ``canary.platforms.deployments``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from canary.catalog import Catalog, KubeRun
from canary.platforms.base import Instance, NotReady
from canary.platforms.cluster import ClusterApi, ClusterError, Conflict, Forbidden, NotFound, Transient
from canary.platforms.deployments import canary_from, release_of, replicas_of, rolled_out

log = logging.getLogger("releasewarden.platform.kubernetes")
T = TypeVar("T")
ATTEMPTS = 6
PORT = 8000
ROUTE_GROUP, ROUTE_VERSION, ROUTE_PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"


class KubernetesPlatform:
    warm_old_release = False  # the old release is not kept running after a promotion

    def __init__(
        self,
        api: ClusterApi,
        *,
        namespace: str = "releasewarden",
        image: str = "releasewarden",
        canary_replicas: int = 1,
        traffic: str = "router",
        retry_pause_s: float = 0.5,
        catalog: Catalog | None = None,
    ) -> None:
        if traffic not in ("router", "gateway"):
            raise ValueError("traffic must be 'router' or 'gateway'")
        self.api = api
        self.namespace = namespace
        self.image = image
        self.canary_replicas = canary_replicas
        self.traffic = traffic
        self.retry_pause_s = retry_pause_s
        self.catalog = catalog if catalog is not None else Catalog({})
        self.services: set[str] = set()

    # -- the platform Protocol ---------------------------------------------------------------------
    async def start(self, service: str, release: str, track: str) -> Instance:
        self.services.add(service)
        name = self._deployment(service, track)
        current = await self._get(name)
        if current is None:
            await self._create(service, track, release)
        elif self._release(service, current) != release or (
            track == "canary" and replicas_of(current) < self.canary_replicas
        ):
            was = self._release(service, current)
            if track == "stable" and was != release:
                log.warning("%s: stable moves from %s to %s (rolling update)", service, was, release)
            replicas = self.canary_replicas if track == "canary" else None
            await self._patch(name, self._release_patch(service, release, replicas))
        return self._instance(service, release, track)

    async def healthy(self, service: str, release: str) -> bool:
        async for _track, d in self._tracks(service):
            if self._release(service, d) == release and replicas_of(d) > 0:
                return rolled_out(d)
        return False

    async def known_releases(self, service: str) -> list[str] | None:
        """The releases the catalog entry lists; None for ``any`` (image tags: the registry is not asked)."""
        try:
            releases = self.catalog.entry_of(service).releases
        except KeyError:
            return None
        return None if releases is None else list(releases)

    async def not_ready(self, service: str, release: str) -> NotReady:
        """Why the Deployment running ``release`` is not ready, in Kubernetes's words (its conditions); a
        Deployment waits for its pods without a deadline of its own: the controller's ends the wait."""
        async for track, d in self._tracks(service):
            if self._release(service, d) == release:
                status = d.get("status", {}) or {}
                words = [
                    f"{c.get('type')}: {c.get('reason', '')} {c.get('message', '')}".strip()
                    for c in status.get("conditions", []) or []
                    if c.get("status") != "True"
                ]
                name = self._deployment(service, track)
                if not replicas_of(d):
                    return NotReady(f"{name} runs {release} at zero replicas")
                available = status.get("availableReplicas", 0) or 0
                ready = f"{name} runs {release}: {available} of {replicas_of(d)} replicas available"
                return NotReady("; ".join([ready, *words]))
        return NotReady(f"no Deployment runs {service} {release}")

    async def stop(self, service: str, release: str) -> None:
        d = await self._get(self._deployment(service, "canary"))
        if d is not None and self._release(service, d) == release and replicas_of(d) > 0:
            await self._scale_canary_to_zero(service)

    async def running(self) -> list[Instance]:
        out = []
        for service in sorted(self.services):
            async for track, d in self._tracks(service):
                if replicas_of(d) > 0:
                    out.append(self._instance(service, self._release(service, d), track))
        return out

    async def set_weight(self, service: str, weight: float) -> None:
        """Gateway API: the service's HTTPRoute sends ``weight`` percent to the canary (per mille)."""
        if self.traffic != "gateway":
            return
        canary = round(weight * 10)
        kube = self._kube(service)
        name = kube.httproute or service if kube is not None else service
        route = await self._call("get", ROUTE_PLURAL, name, lambda: self.api.read_route(name))
        if route is None:
            raise ClusterError(f"HTTPRoute {name} not found in namespace {self.namespace}")
        rules = copy.deepcopy(route.get("spec", {}).get("rules", [{}]))
        port = self._port(service)
        for rule in rules:
            rule["backendRefs"] = [
                {"name": self._service(service, "stable"), "port": port, "weight": 1000 - canary},
                {"name": self._service(service, "canary"), "port": port, "weight": canary},
            ]
        patch = {"spec": {"rules": rules}}
        await self._call("patch", ROUTE_PLURAL, name, lambda: self.api.patch_route(name, patch))

    async def retire_canary(self, service: str) -> None:
        """After a promotion's watch window: the canary's Deployment is no longer needed."""
        await self._scale_canary_to_zero(service)

    async def close(self) -> None:
        """Deployments outlive the controller: a new one takes them over where they are."""

    # -- helpers -----------------------------------------------------------------------------------
    # -- names from the catalog (a service it does not have keeps the manifests' defaults) ---------
    def _kube(self, service: str) -> KubeRun | None:
        return self.catalog.entry_of(service).kubernetes if self._known(service) else None

    def _known(self, service: str) -> bool:
        return service in self.catalog or self.catalog.owner(service) is not None

    def _deployment(self, service: str, track: str) -> str:
        owned = self.catalog.owner(service)
        if owned is not None:
            return owned[0].kube_consumer_deployment(owned[1], track)
        if self._kube(service) is not None:
            return self.catalog[service].kube_deployment(track)
        return f"{service}-{track}"

    def _service(self, service: str, track: str) -> str:
        if self._kube(service) is not None and service in self.catalog:
            return self.catalog[service].kube_service(track)
        return f"{service}-{track}"

    def _port(self, service: str) -> int:
        kube = self._kube(service)
        return kube.port if kube is not None else PORT

    def _image(self, service: str, release: str) -> str:
        if self._kube(service) is not None:
            return self.catalog.entry_of(service).kube_image(release, self.image)
        return f"{self.image}:{release}"

    def _release(self, service: str, d: dict[str, Any]) -> str:
        """The release a Deployment runs: its image tag, mapped back through the entry's ``tags``."""
        tag = release_of(d)
        kube = self._kube(service)
        if kube is not None:
            for release, mapped in kube.tags.items():
                if mapped == tag:
                    return release
        return tag

    def _instance(self, service: str, release: str, track: str) -> Instance:
        url = f"http://{self._service(service, track)}.{self.namespace}.svc:{self._port(service)}"
        return Instance(service, release, track, url)

    async def _get(self, name: str) -> dict[str, Any] | None:
        return await self._call("get", "deployments", name, lambda: self.api.read_deployment(name))

    async def _patch(self, name: str, patch: dict[str, Any]) -> None:
        await self._call("patch", "deployments", name, lambda: self.api.patch_deployment(name, patch))

    async def _tracks(self, service: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(track, Deployment) of the service's canary, then stable, those that exist; each read only
        when the caller asks for it."""
        for track in ("canary", "stable"):
            d = await self._get(self._deployment(service, track))
            if d is not None:
                yield track, d

    def _release_patch(self, service: str, release: str, replicas: int | None) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "template": {
                "metadata": {"labels": {"release": release}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": self._image(service, release),
                            "env": [{"name": "CANARY_RELEASE", "value": release}],
                        }
                    ]
                },
            }
        }
        if replicas is not None:
            spec["replicas"] = replicas
        return {"metadata": {"labels": {"release": release}}, "spec": spec}

    async def _scale_canary_to_zero(self, service: str) -> None:
        try:
            await self._patch(self._deployment(service, "canary"), {"spec": {"replicas": 0}})
        except NotFound:
            return

    async def _create(self, service: str, track: str, release: str) -> None:
        """A missing canary Deployment is made from stable's (same pod spec, the canary's labels)."""
        stable_name, canary_name = self._deployment(service, "stable"), self._deployment(service, "canary")
        if track != "canary":
            raise ClusterError(
                f"Deployment {stable_name} not found in namespace {self.namespace}: apply manifests/kubernetes first"
            )
        stable = await self._get(stable_name)
        if stable is None:
            raise ClusterError(
                f"neither {canary_name} nor {stable_name} exists in namespace {self.namespace}: "
                "apply manifests/kubernetes first"
            )
        body = canary_from(stable, service, release, self._image(service, release), self.canary_replicas)
        body["metadata"]["name"] = canary_name
        try:
            await self._call(
                "create", "deployments", body["metadata"]["name"], lambda: self.api.create_deployment(body)
            )
        except Conflict:  # made meanwhile (another controller, or a retried request): patch it instead
            await self._patch(canary_name, self._release_patch(service, release, self.canary_replicas))

    async def _call(self, verb: str, resource: str, name: str, fn: Callable[[], T]) -> T:
        """Run one API call in a worker thread, retrying what is worth retrying."""
        pause = self.retry_pause_s
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await asyncio.to_thread(fn)
            except Forbidden as exc:
                raise ClusterError(
                    f"Kubernetes refused to {verb} {resource}/{name} in namespace {self.namespace}: {exc} "
                    "(the controller's Role: manifests/kubernetes/base/controller-rbac.yaml)"
                ) from None
            except Conflict:
                if verb == "create" or attempt == ATTEMPTS:
                    raise
            except Transient as exc:
                if attempt == ATTEMPTS:
                    raise ClusterError(
                        f"Kubernetes did not {verb} {resource}/{name} after {ATTEMPTS} tries: {exc}"
                    ) from None
            log.info("%s %s/%s: try %d failed, again in %.1f s", verb, resource, name, attempt, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)
        raise AssertionError("unreachable")


class KubeApi:
    """:class:`ClusterApi` through the ``kubernetes`` client: in-cluster (the ServiceAccount), else
    from a kubeconfig (``KUBECONFIG`` or ``~/.kube/config``)."""

    def __init__(self, namespace: str, kubeconfig: str | None = None, timeout_s: float = 10.0) -> None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        self.namespace = namespace
        self.apps = client.AppsV1Api()
        self.custom = client.CustomObjectsApi()
        self.serialise = client.ApiClient().sanitize_for_serialization
        self.timeout_s = timeout_s

    def _do(self, fn: Callable[[], T]) -> T:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except ApiException as exc:
            message = f"{exc.status} {exc.reason}"
            if exc.status == 404:
                raise NotFound(message) from None
            if exc.status == 409:
                raise Conflict(message) from None
            if exc.status in (401, 403):
                raise Forbidden(message) from None
            if exc.status == 429 or (exc.status or 0) >= 500:
                raise Transient(message) from None
            raise ClusterError(f"{message}: {exc.body}") from None
        except HTTPError as exc:
            raise Transient(f"{type(exc).__name__}: {exc}") from None

    def _read(self, fn: Callable[[], Any]) -> dict[str, Any] | None:
        try:
            value = self._do(fn)
        except NotFound:
            return None
        return dict(value if isinstance(value, dict) else self.serialise(value))  # type: ignore[no-untyped-call]

    def read_deployment(self, name: str) -> dict[str, Any] | None:
        return self._read(
            lambda: self.apps.read_namespaced_deployment(name, self.namespace, _request_timeout=self.timeout_s)
        )

    def create_deployment(self, body: dict[str, Any]) -> None:
        self._do(
            lambda: self.apps.create_namespaced_deployment(
                self.namespace,
                body,  # type: ignore[arg-type]  # the API takes the dict as the JSON body
                _request_timeout=self.timeout_s,
            )
        )

    def patch_deployment(self, name: str, patch: dict[str, Any]) -> None:
        self._do(  # a dict body is sent as a strategic merge patch (containers merge by name)
            lambda: self.apps.patch_namespaced_deployment(name, self.namespace, patch, _request_timeout=self.timeout_s)
        )

    def read_route(self, name: str) -> dict[str, Any] | None:
        return self._read(
            lambda: self.custom.get_namespaced_custom_object(
                ROUTE_GROUP, ROUTE_VERSION, self.namespace, ROUTE_PLURAL, name, _request_timeout=self.timeout_s
            )
        )

    def patch_route(self, name: str, patch: dict[str, Any]) -> None:
        self._do(
            lambda: self.custom.patch_namespaced_custom_object(
                ROUTE_GROUP,
                ROUTE_VERSION,
                self.namespace,
                ROUTE_PLURAL,
                name,
                patch,
                _content_type="application/merge-patch+json",  # custom objects take no strategic merge
                _request_timeout=self.timeout_s,
            )
        )
