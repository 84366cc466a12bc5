"""An in-memory stand-in for the Kubernetes API server, at the project's own wrapper boundary
(``canary.platforms.cluster.ClusterApi``).  A fake, because no API server can run on a test
machine; everything above the boundary (the platform, the controller) is the real code.

It keeps Deployments and HTTPRoutes as dicts, applies strategic-merge patches the way the API
server does for what the platform sends (maps merge; lists of named items merge by name), bumps a
Deployment's generation when its spec changes, and plays the kubelet: a Deployment's rollout
completes on the next read, unless its image is in ``broken_images`` (then no replica becomes
available, as with an image that cannot be pulled).  ``failures`` injects API errors into the next
calls; ``forbidden`` refuses a verb on a resource; ``calls`` records what was done, in order.
A cluster made ``from_manifests`` allows only the verbs the shipped Role grants the controller
(``controller-rbac.yaml``, with the gateway component's HTTPRoute rule): a call the Role does not
allow is refused with a 403, as the API server would.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from canary.platforms.cluster import ClusterError, Conflict, Forbidden, NotFound

KUBE = Path(__file__).resolve().parents[2] / "manifests/kubernetes"
BASE = KUBE / "base"


def shipped_rights() -> set[tuple[str, str]]:
    """(verb, resource) pairs the shipped Role grants the controller, the gateway's rule included."""
    role = next(d for d in yaml.safe_load_all((BASE / "controller-rbac.yaml").read_text()) if d["kind"] == "Role")
    rules = list(role["rules"])
    gateway = yaml.safe_load((KUBE / "components/gateway/kustomization.yaml").read_text())
    rules += [p["value"] for patch in gateway["patches"] if "target" in patch for p in yaml.safe_load(patch["patch"])]
    return {(verb, res) for rule in rules for res in rule["resources"] for verb in rule["verbs"]}


def merge(target: Any, patch: Any) -> Any:
    if isinstance(target, dict) and isinstance(patch, dict):
        out = dict(target)
        for key, value in patch.items():
            out[key] = merge(target.get(key), value) if key in target else copy.deepcopy(value)
        return out
    if isinstance(target, list) and isinstance(patch, list) and all(isinstance(x, dict) and "name" in x for x in patch):
        out_list = [copy.deepcopy(x) for x in target]
        for item in patch:
            at = next(
                (i for i, x in enumerate(out_list) if isinstance(x, dict) and x.get("name") == item["name"]), None
            )
            if at is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[at] = merge(out_list[at], item)
        return out_list
    return copy.deepcopy(patch)


class FakeCluster:
    def __init__(self) -> None:
        self.deployments: dict[str, dict[str, Any]] = {}
        self.routes: dict[str, dict[str, Any]] = {}
        self.broken_images: set[str] = set()
        self.failures: list[ClusterError | Exception] = []
        self.forbidden: set[tuple[str, str]] = set()
        self.allowed: set[tuple[str, str]] | None = None  # None: every verb
        self.calls: list[tuple[str, str, Any]] = []

    @classmethod
    def from_manifests(cls, *services: str) -> FakeCluster:
        """Seeded with the base manifests' Deployments and HTTPRoutes of these services."""
        cluster = cls()
        cluster.allowed = shipped_rights()
        for path in sorted(BASE.rglob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if not isinstance(doc, dict):
                    continue
                app = doc.get("metadata", {}).get("labels", {}).get("app")
                if app not in services:
                    continue
                name = doc["metadata"]["name"]
                if doc["kind"] == "Deployment":
                    cluster.deployments[name] = {**doc, "metadata": {**doc["metadata"], "generation": 1}, "status": {}}
                elif doc["kind"] == "HTTPRoute":
                    cluster.routes[name] = doc
        return cluster

    def _gate(self, verb: str, resource: str, name: str, detail: Any = None) -> None:
        if (verb, resource) in self.forbidden or (self.allowed is not None and (verb, resource) not in self.allowed):
            raise Forbidden(f"403 Forbidden: cannot {verb} {resource}")
        if self.failures:
            raise self.failures.pop(0)
        self.calls.append((verb, f"{resource}/{name}", detail))

    def _kubelet(self, d: dict[str, Any]) -> None:
        replicas = d["spec"].get("replicas", 1)
        images = {c["image"] for c in d["spec"]["template"]["spec"]["containers"]}
        available = 0 if images & self.broken_images else replicas
        d["status"] = {
            "observedGeneration": d["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": available,
            "conditions": []
            if available == replicas
            else [
                {
                    "type": "Available",
                    "status": "False",
                    "reason": "MinimumReplicasUnavailable",
                    "message": "Deployment does not have minimum availability.",
                }
            ],
        }

    # -- ClusterApi --------------------------------------------------------------------------------
    def read_deployment(self, name: str) -> dict[str, Any] | None:
        self._gate("get", "deployments", name)
        d = self.deployments.get(name)
        if d is None:
            return None
        out = copy.deepcopy(d)
        self._kubelet(d)  # the rollout a patch started is seen done from the next read on
        return out

    def create_deployment(self, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        self._gate("create", "deployments", name, body)
        if name in self.deployments:
            raise Conflict(f"409 AlreadyExists: deployments {name}")
        self.deployments[name] = {**copy.deepcopy(body), "status": {}}
        self.deployments[name]["metadata"]["generation"] = 1

    def patch_deployment(self, name: str, patch: dict[str, Any]) -> None:
        self._gate("patch", "deployments", name, patch)
        d = self.deployments.get(name)
        if d is None:
            raise NotFound(f"404 NotFound: deployments {name}")
        merged = merge(d, patch)
        if merged["spec"] != d["spec"]:
            merged["metadata"]["generation"] = d["metadata"]["generation"] + 1
        self.deployments[name] = merged

    def read_route(self, name: str) -> dict[str, Any] | None:
        self._gate("get", "httproutes", name)
        route = self.routes.get(name)
        return copy.deepcopy(route) if route else None

    def patch_route(self, name: str, patch: dict[str, Any]) -> None:
        self._gate("patch", "httproutes", name, patch)
        if name not in self.routes:
            raise NotFound(f"404 NotFound: httproutes {name}")
        route = self.routes[name]
        route["spec"] = {**route["spec"], **copy.deepcopy(patch["spec"])}  # a JSON merge patch: lists replace

    # -- for the tests -----------------------------------------------------------------------------
    def image(self, name: str) -> str:
        return str(self.deployments[name]["spec"]["template"]["spec"]["containers"][0]["image"])

    def replicas(self, name: str) -> int:
        return int(self.deployments[name]["spec"].get("replicas", 1))

    def weights(self, name: str) -> dict[str, int]:
        refs = self.routes[name]["spec"]["rules"][0]["backendRefs"]
        return {r["name"]: r["weight"] for r in refs}
