"""What a Deployment (as the API serialises it, a plain dict) says to the Kubernetes platform: the
release its app container runs, its replicas, whether it has rolled out; and the canary's
Deployment made from stable's."""

from __future__ import annotations

import copy
from typing import Any


def containers(d: dict[str, Any]) -> list[dict[str, Any]]:
    return list(d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []))


def release_of(d: dict[str, Any]) -> str:
    """The release a Deployment runs: its app container's image tag."""
    app = next((c for c in containers(d) if c.get("name") == "app"), None)
    image = str((app or {}).get("image", ""))
    return image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""


def replicas_of(d: dict[str, Any]) -> int:
    return int(d.get("spec", {}).get("replicas", 1) or 0)


def rolled_out(d: dict[str, Any]) -> bool:
    status, want = d.get("status", {}) or {}, replicas_of(d)
    return (
        int(status.get("observedGeneration", 0) or 0) >= int(d.get("metadata", {}).get("generation", 0) or 0)
        and int(status.get("updatedReplicas", 0) or 0) >= want
        and int(status.get("availableReplicas", 0) or 0) >= want
        and int(status.get("replicas", 0) or 0) <= want  # old pods of a rolling update are gone
    )


def canary_from(stable: dict[str, Any], service: str, release: str, image: str, replicas: int) -> dict[str, Any]:
    spec = copy.deepcopy(stable["spec"])
    labels = {"app": service, "track": "canary"}
    spec["selector"] = {"matchLabels": labels}
    spec["replicas"] = replicas
    spec["template"].setdefault("metadata", {})["labels"] = {
        **spec["template"].get("metadata", {}).get("labels", {}),
        **labels,
        "release": release,
    }
    for c in spec["template"]["spec"]["containers"]:
        if c.get("name") == "app":
            c["image"] = image
            c["env"] = [e for e in c.get("env", []) if e.get("name") not in ("CANARY_RELEASE", "CANARY_TRACK")] + [
                {"name": "CANARY_RELEASE", "value": release},
                {"name": "CANARY_TRACK", "value": "canary"},
            ]
    meta = stable.get("metadata", {})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{service}-canary",
            "namespace": meta.get("namespace"),
            "labels": {**meta.get("labels", {}), **labels, "release": release},
        },
        "spec": spec,
    }
