"""The Kubernetes platform against the in-memory API server of ``fake_cluster`` (a fake at our own
wrapper boundary: no API server can run on a test machine), seeded from the real base manifests.
Proven here: the calls the platform makes and what it does with the answers; not proven: that a
real API server answers the same (see runbooks/procedures/run-on-kubernetes.md for a real cluster)."""

from __future__ import annotations

import asyncio

import pytest

from canary.controller import machine
from canary.controller.engine import Controller
from canary.controller.store import Store, metadata
from canary.platforms.cluster import ClusterError, Conflict, Transient
from canary.platforms.kubernetes import KubernetesPlatform
from canary.providers.base import Counts, MetricQuery, TrackCounts
from core.db import create_schema, make_engine
from tests.canary.fake_cluster import FakeCluster


def platform(cluster: FakeCluster, **kw) -> KubernetesPlatform:
    return KubernetesPlatform(cluster, namespace="releasewarden", retry_pause_s=0.001, **kw)


def run(coro):
    return asyncio.run(coro)


def becomes_ready(p: KubernetesPlatform, service: str, release: str) -> bool:
    """The fake kubelet completes a rollout between two reads, as a real one does in time."""
    return any(run(p.healthy(service, release)) for _ in range(3))


def test_a_canary_gets_the_new_image_and_its_replicas_and_stops_by_scaling_to_zero():
    cluster = FakeCluster.from_manifests("importer")
    p = platform(cluster, canary_replicas=2)
    instance = run(p.start("importer", "1.1", "canary"))
    assert instance.url == "http://importer-canary.releasewarden.svc:8000" and instance.track == "canary"
    assert cluster.image("importer-canary") == "releasewarden:1.1" and cluster.replicas("importer-canary") == 2
    env = cluster.deployments["importer-canary"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "CANARY_RELEASE", "value": "1.1"} in env
    assert any(e["name"] == "CANARY_DB_URL" for e in env)  # the rest of the pod spec is kept
    assert becomes_ready(p, "importer", "1.1")
    calls = len(cluster.calls)
    run(p.start("importer", "1.1", "canary"))  # again (a controller applying its state after a crash)
    assert [c[0] for c in cluster.calls[calls:]] == ["get"]  # nothing patched twice
    run(p.stop("importer", "1.1"))
    assert cluster.replicas("importer-canary") == 0 and not run(p.healthy("importer", "1.1"))
    assert cluster.replicas("importer-stable") == 2  # stable is never scaled down


def test_promotion_is_a_rolling_update_of_stable_and_a_canary_that_never_comes_up_says_why():
    cluster = FakeCluster.from_manifests("importer")
    p = platform(cluster)
    run(p.start("importer", "1.2", "canary"))
    run(p.start("importer", "1.2", "stable"))  # promote
    assert cluster.image("importer-stable") == "releasewarden:1.2"
    assert cluster.deployments["importer-stable"]["metadata"]["generation"] == 2
    assert becomes_ready(p, "importer", "1.2")
    run(p.retire_canary("importer"))
    assert cluster.replicas("importer-canary") == 0

    cluster.broken_images.add("releasewarden:1.1")
    run(p.start("importer", "1.1", "canary"))
    for _ in range(3):
        assert not run(p.healthy("importer", "1.1"))
    why = run(p.not_ready("importer", "1.1")).reason
    assert why.startswith("importer-canary runs 1.1: 0 of 1 replicas available") and "MinimumReplicasUnavailable" in why


def test_conflicts_and_transient_errors_are_retried_and_a_refusal_names_verb_and_resource():
    cluster = FakeCluster.from_manifests("importer")
    p = platform(cluster)
    cluster.failures = [Transient("503 Service Unavailable"), Conflict("409 Conflict"), Transient("timeout")]
    run(p.start("importer", "1.1", "canary"))
    assert cluster.image("importer-canary") == "releasewarden:1.1"
    cluster.forbidden.add(("patch", "deployments"))
    with pytest.raises(ClusterError) as refused:
        run(p.start("importer", "1.2", "canary"))
    words = str(refused.value)
    assert "refused to patch deployments/importer-canary in namespace releasewarden" in words
    assert "controller-rbac.yaml" in words
    cluster.forbidden.clear()
    cluster.failures = [Transient("503")] * 10
    with pytest.raises(ClusterError, match="did not get deployments/importer-canary after 6 tries"):
        run(p.healthy("importer", "1.1"))


def test_a_missing_canary_deployment_is_made_from_stable_s():
    cluster = FakeCluster.from_manifests("resizer")
    del cluster.deployments["resizer-canary"]
    p = platform(cluster)
    run(p.start("resizer", "2.1", "canary"))
    made = cluster.deployments["resizer-canary"]
    assert made["spec"]["selector"]["matchLabels"] == {"app": "resizer", "track": "canary"}
    assert made["spec"]["template"]["metadata"]["labels"]["track"] == "canary"
    assert cluster.image("resizer-canary") == "releasewarden:2.1"
    assert made["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_gateway_weights_are_set_on_the_httproute_per_mille():
    cluster = FakeCluster.from_manifests("importer")
    cluster.routes["importer"] = {
        "spec": {"parentRefs": [{"name": "releasewarden"}], "rules": [{"backendRefs": []}]}
    }  # the gateway component's route (not in the base)
    run(platform(cluster, traffic="gateway").set_weight("importer", 5.0))
    assert cluster.weights("importer") == {"importer-stable": 950, "importer-canary": 50}
    run(platform(cluster, traffic="router").set_weight("importer", 50.0))  # routers read the table
    assert cluster.weights("importer") == {"importer-stable": 950, "importer-canary": 50}


class Healthy:
    """A metric provider that sees a healthy canary: the controller's side of a rollout on a cluster
    (the real providers read the router or Prometheus, which a fake cluster has not got)."""

    def __init__(self) -> None:
        self.n = 0

    async def cumulative(self, query: MetricQuery) -> TrackCounts:
        self.n += 100
        return TrackCounts(Counts(self.n, 0), Counts(self.n, 0))


SPEC = """
apiVersion: releasewarden/v1
kind: Rollout
spec:
  service: importer
  stable: "1.0"
  canary: "1.2"
  steps:
    - {weight: 50, min_requests: 10, min_seconds: 0, max_seconds: 600}
  metrics:
    - {name: errors, kind: errors, rate_floor: 0.5}
  watch: {seconds: 0}
"""


def test_the_controller_promotes_on_a_cluster_and_a_restarted_one_keeps_the_promoted_release(tmp_path):
    cluster = FakeCluster.from_manifests("importer")
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    create_schema(engine, metadata)
    store = Store(engine)
    clock = [1000.0]

    def controller() -> Controller:
        return Controller(store, platform(cluster), Healthy(), {"importer": "1.0"}, clock=lambda: clock[0])

    async def rollout() -> machine.Rollout:
        c = controller()
        await c.start_stable()
        r = store.create(SPEC, clock[0])
        for _ in range(40):
            clock[0] += 1.0
            await c.tick()
            r = store.get(r.id)
            if r.phase in machine.TERMINAL:
                break
        return r

    done = run(rollout())
    assert done.phase == machine.SUCCEEDED, done.reason
    assert cluster.image("importer-stable") == "releasewarden:1.2"
    assert cluster.replicas("importer-canary") == 0  # retired after the watch window

    async def restart() -> None:
        await controller().start_stable()  # told "importer 1.0" at start, as after a reboot

    run(restart())
    assert cluster.image("importer-stable") == "releasewarden:1.2"  # not rolled back by a restart
