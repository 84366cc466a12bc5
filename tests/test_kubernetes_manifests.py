"""manifests/kubernetes: every overlay builds with `kubectl kustomize`, and every object validates
against the Kubernetes schemas of the version the README names (kubernetes-validate, strict: an
unknown field is an error).  Gateway API objects (CRDs, no schema there) are checked by hand.
Beyond the schemas: what the platform and the controller rely on (names, labels, the container
called ``app``, probes, the Role's exact rights, the image the controller sets)."""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from core.scoped_tokens import scoped_token

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "manifests/kubernetes"
KUBERNETES_VERSION = "1.31.0"  # the README's "Kubernetes 1.31"
OVERLAYS = ["local", "production", "production-gateway", "your-service"]
APPS = ["importer", "opens", "opens-processor", "resizer"]


def need_kubectl() -> None:
    if shutil.which("kubectl"):
        return
    if os.environ.get("CI"):
        pytest.fail("kubectl (with its built-in kustomize) is not installed")
    pytest.skip("kubectl is not installed")


@functools.cache
def built(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(KUBE / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def app_container(deployment: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "app")


@pytest.fixture(autouse=True)
def _kubectl():
    need_kubectl()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_builds_and_every_object_validates(overlay):
    docs = built(overlay)
    for doc in docs:
        if doc["apiVersion"].startswith("gateway.networking.k8s.io/"):
            assert doc["kind"] in ("Gateway", "HTTPRoute") and doc["metadata"]["namespace"] == "releasewarden"
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "releasewarden", doc["metadata"]


def test_the_readme_names_the_kubernetes_version_validated_here():
    assert f"Kubernetes {KUBERNETES_VERSION.rsplit('.', 1)[0]}" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_runs_stable_and_canary_the_way_the_platform_drives_them(overlay):
    docs = built(overlay)
    for app in APPS:
        for track in ("stable", "canary"):
            d = find(docs, "Deployment", f"{app}-{track}")
            assert d["spec"]["selector"]["matchLabels"] == {"app": app, "track": track}
            pod = d["spec"]["template"]
            assert pod["metadata"]["labels"]["release"] == app_container(d)["image"].rsplit(":", 1)[1]
            assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
            c = app_container(d)
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
            env = {e["name"]: e for e in c["env"]}
            assert env["CANARY_TRACK"]["value"] == track and env["CANARY_HOST"]["value"] == "0.0.0.0"
            assert env["CANARY_DB_URL"]["valueFrom"]["secretKeyRef"]["name"] == "releasewarden"
            svc = find(docs, "Service", f"{app}-{track}")
            assert svc["spec"]["selector"] == {"app": app, "track": track}
        assert find(docs, "Deployment", f"{app}-canary")["spec"]["replicas"] == 0  # until a rollout starts it
        assert (
            find(docs, "PodDisruptionBudget", f"{app}-stable")["spec"]["selector"]["matchLabels"]["track"] == "stable"
        )
    router = find(docs, "Deployment", "router")
    assert router["spec"]["replicas"] >= 2 and "http://controller:8700/api/routes" in app_container(router)["command"]


def secret_keys(deployment: dict[str, Any]) -> dict[str, str]:
    """Environment variable -> the key of Secret releasewarden it takes."""
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for c in deployment["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_release_holds_a_token_that_commands_the_controller(overlay):
    docs = built(overlay)
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    releases = [d for d in deployments if "track" in d["spec"]["selector"]["matchLabels"]]
    assert len(releases) >= 2 * len(APPS)
    for d in releases:  # canaries included: one under judgment could promote itself
        keys = set(secret_keys(d).values())
        # nor the roles' secrets, from which every service's own token is derived
        assert not {"admin-token", "alert-token", "table-token", "service-token"} & keys, d["metadata"]["name"]
        service = d["metadata"]["labels"].get("app", d["metadata"]["name"]).split("-")[0]
        assert {k for k in keys if k.endswith(("-service-token", "-table-token"))} <= {
            f"{service}-service-token",
            f"{service}-table-token",
        }, d["metadata"]["name"]
    consumer = secret_keys(find(docs, "Deployment", "opens-processor-canary"))
    assert consumer["CANARY_TABLE_TOKEN"] == "opens-table-token"
    assert consumer["CANARY_ADMIN_TOKEN"] == "opens-service-token"
    # a router's confirmations hold every rollout: it reads the table with the admin token
    assert secret_keys(find(docs, "Deployment", "router"))["CANARY_TABLE_TOKEN"] == "admin-token"
    for app in ("importer", "resizer", "opens"):  # they read no table
        assert "CANARY_TABLE_TOKEN" not in secret_keys(find(docs, "Deployment", f"{app}-canary"))
    controller = secret_keys(find(docs, "Deployment", "controller"))
    assert controller["CANARY_TABLE_TOKEN"] == "table-token" and controller["CANARY_SERVICE_TOKEN"] == "service-token"
    secrets = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "releasewarden"]
    if secrets:  # the local overlay makes it: every key a pod names is there
        data = {k: base64.b64decode(v).decode() for k, v in secrets[0]["data"].items()}
        named = {key for d in deployments for key in secret_keys(d).values()}
        assert named <= set(data), named - set(data)
        for key in (k for k in data if k.endswith(("-service-token", "-table-token"))):
            service, _, role = key.partition("-")  # each service's own: derived as the controller derives it
            setting = role.replace("-", "_")
            assert data[key] == scoped_token(data[role], setting, service), key


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_controller_may_do_exactly_what_it_needs_and_sets_the_image_its_deployments_use(overlay):
    docs = built(overlay)
    role = find(docs, "Role", "releasewarden-controller")
    rights = {(res, verb) for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"]}
    wanted = {("deployments", v) for v in ("get", "patch", "create")}  # create: a missing canary's
    if overlay.endswith("gateway"):
        wanted |= {("httproutes", "get"), ("httproutes", "patch")}
    assert rights == wanted
    binding = find(docs, "RoleBinding", "releasewarden-controller")
    controller = find(docs, "Deployment", "controller")
    pod = controller["spec"]["template"]["spec"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    env = {e["name"]: e.get("value") for e in app_container(controller)["env"]}
    assert env["CANARY_PLATFORM"] == "kubernetes"
    assert env["CANARY_TRAFFIC"] == ("gateway" if overlay.endswith("gateway") else "router")
    images = {app_container(find(docs, "Deployment", f"{a}-stable"))["image"].rsplit(":", 1)[0] for a in APPS}
    assert images == {env["CANARY_KUBERNETES_IMAGE"]}


def test_the_gateway_routes_split_between_the_track_services():
    docs = built("production-gateway")
    for app in ("importer", "opens", "resizer"):
        route = find(docs, "HTTPRoute", app)
        refs = route["spec"]["rules"][0]["backendRefs"]
        assert [r["name"] for r in refs] == [f"{app}-stable", f"{app}-canary"]
        assert [r["weight"] for r in refs] == [1000, 0]
        for ref in refs:
            find(docs, "Service", ref["name"])
        assert route["spec"]["parentRefs"][0]["name"] == find(docs, "Gateway", "releasewarden")["metadata"]["name"]


def test_every_command_in_the_manifests_is_a_module_of_the_project():
    for doc in built("local"):
        if doc["kind"] != "Deployment":
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            command = c.get("command", [])
            if command[:2] == ["python", "-m"]:
                assert importlib.util.find_spec(command[2]) is not None, command


def test_prometheus_in_the_cluster_has_a_valid_configuration_and_the_same_rules(tmp_path):
    """Debian's Prometheus is built without Kubernetes discovery, so promtool checks everything else
    of the in-cluster configuration: its pod discovery is swapped for a static target here."""
    from tests.conftest import need_monitoring

    need_monitoring()
    config = yaml.safe_load((ROOT / "manifests/prometheus/kubernetes.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"own_namespace": True}}]
    job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["127.0.0.1:8000"]}]
    for rules in (ROOT / "manifests/prometheus/rules").glob("*.yml"):
        shutil.copy(rules, tmp_path / rules.name)
    config["rule_files"] = [str(tmp_path / Path(p).name) for p in config["rule_files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    generated = next(
        d for d in built("local") if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("prometheus-config")
    )
    assert set(generated["data"]) == {"prometheus.yml", "releasewarden.rules.yml", "releasewarden.alerts.yml"}


def test_a_users_service_is_added_by_a_component_and_driven_from_its_catalog_entry():
    """components/your-service: two Deployments, two Services and the catalog entry mounted into the
    controller; the platform, reading that entry, drives the Deployments the component makes."""
    import asyncio

    from canary.catalog import load_catalog
    from canary.platforms.kubernetes import KubernetesPlatform
    from tests.canary.fake_cluster import FakeCluster

    component = KUBE / "components/your-service"
    catalog = load_catalog([component / "catalog/web.yaml"])
    web = catalog["web"]
    docs = built("your-service")
    for track in ("stable", "canary"):
        deployment = find(docs, "Deployment", web.kube_deployment(track))
        assert deployment["spec"]["template"]["metadata"]["labels"]["track"] == track
        assert app_container(deployment)["image"].startswith("registry.example.com/web:")
        service = find(docs, "Service", web.kube_service(track))
        assert service["spec"]["ports"][0]["port"] == web.kubernetes.port
    controller = app_container(find(docs, "Deployment", "controller"))
    paths = next(e["value"] for e in controller["env"] if e["name"] == "CANARY_CATALOG").split(",")
    mounts = {m["mountPath"] for m in controller["volumeMounts"]}
    assert "/etc/releasewarden/catalog" in paths and "/etc/releasewarden/catalog" in mounts
    assert "/app/manifests/services" in paths  # the shipped entries stay
    configmap = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("releasewarden-catalog")
    )
    assert configmap["data"]["web.yaml"] == (component / "catalog/web.yaml").read_text()

    cluster = FakeCluster()
    for d in docs:
        if d["kind"] == "Deployment" and d["metadata"]["labels"].get("app") == "web":
            cluster.deployments[d["metadata"]["name"]] = {
                **d,
                "metadata": {**d["metadata"], "generation": 1},
                "status": {},
            }
    platform = KubernetesPlatform(cluster, namespace="releasewarden", retry_pause_s=0.001, catalog=catalog)
    instance = asyncio.run(platform.start("web", "2.4", "canary"))
    assert cluster.image("web-canary") == "registry.example.com/web:2.4" and cluster.replicas("web-canary") == 1
    assert instance.url == "http://web-canary.releasewarden.svc:8080"
    assert asyncio.run(platform.known_releases("web")) is None  # releases: any


@pytest.mark.parametrize("overlay", ["local", "production"])
def test_the_monitoring_component_ships_the_grafana_dashboard_labelled_for_grafana_s_sidecar(overlay):
    maps = [
        d
        for d in built(overlay)
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("grafana-dashboard-releasewarden")
    ]
    assert len(maps) == 1
    assert maps[0]["metadata"]["labels"]["grafana_dashboard"] == "1"  # what the sidecar looks for
    shipped = json.loads((ROOT / "manifests/grafana/releasewarden.json").read_text())
    assert json.loads(maps[0]["data"]["releasewarden.json"]) == shipped
