"""The incident's three services as catalog entries: they load, and they describe exactly what runs
today (commands, health paths, the opens processor as a consumer, the Kubernetes objects of
manifests/kubernetes, the default rollouts of manifests/rollouts, the re-processing hook)."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import sys
from pathlib import Path

import pytest
import yaml

from canary.catalog import HookContext, Moment, OnFailure, load_catalog, run_hook
from canary.catalog.schema import SCHEMA
from canary.controller.spec import load_spec
from canary.providers.base import ConservationCounters
from core.scoped_tokens import scoped_token
from core.settings import Settings
from tests.canary.catalog.running import free_port, running

ROOT = Path(__file__).resolve().parents[3]
SERVICES = ROOT / "manifests/services"
NAMES = ["importer", "opens", "resizer"]


@pytest.fixture(scope="module")
def catalog():
    return load_catalog([SERVICES])


def test_published_schema_matches_the_code():
    assert json.loads((ROOT / "manifests/service.schema.json").read_text()) == SCHEMA


def test_the_catalog_holds_the_three_services(catalog):
    assert catalog.names == tuple(NAMES)
    assert catalog["resizer"].releases == ("1.0", "2.0", "2.1")
    assert all(catalog[n].stable == "1.0" for n in NAMES)
    assert not catalog["importer"].knows_release("9.9")


@pytest.mark.parametrize("name", NAMES)
def test_local_command_is_the_one_the_platform_runs(catalog, name, tmp_path):
    settings = Settings(admin_token="admin", table_token="tbl", service_token="svc")
    launch = catalog[name].local_launch(
        "1.1" if name != "resizer" else "2.0",
        port=8123,
        state_dir=tmp_path,
        track="canary",
        route_table="http://127.0.0.1:8700/api/routes",
        settings=settings,
    )
    release = "1.1" if name != "resizer" else "2.0"
    assert launch.argv == (
        sys.executable, "-m", f"services.{name}", "--release", release, "--port", "8123",
        "--db", f"sqlite:///{tmp_path / name}.db", "--state-dir", str(tmp_path),
    )  # fmt: skip
    assert launch.environment == {
        "CANARY_TRACK": "canary",
        # its own admin endpoints: never the controller's admin token, nor its service token, from
        # which each service's own is derived (an importer's could not mint the opens' tokens)
        "CANARY_ADMIN_TOKEN": scoped_token("svc", "service_token", name),
    }  # and no table token: only a queue consumer reads the route table
    assert launch.environment["CANARY_ADMIN_TOKEN"] not in ("svc", scoped_token("svc", "service_token", "other"))
    assert (launch.health_path, launch.ready_path, launch.ready_timeout_s) == ("/healthz", "/readyz", 30.0)
    assert catalog[name].local is not None and catalog[name].local.process.metrics_path == "/metrics"


def test_the_opens_processor_is_a_consumer_sharing_the_opens_database(catalog, tmp_path):
    opens = catalog["opens"]
    (processor,) = opens.consumers
    assert processor.name == "opens-processor"
    assert catalog.owner("opens-processor") == (opens, processor)
    launch = opens.local_launch("1.2", port=9000, state_dir=tmp_path, settings=Settings(), consumer=processor)
    assert launch.argv[:3] == (sys.executable, "-m", "services.opens.processor")
    assert launch.argv[launch.argv.index("--db") + 1] == f"sqlite:///{tmp_path / 'opens'}.db"
    assert launch.argv[launch.argv.index("--release") + 1] == "1.2"
    assert catalog["importer"].consumers == () and catalog["resizer"].consumers == ()
    # the lost-opens metric reads the processor's counters, as the entry (and README) name them
    assert catalog.conservation() == {
        "opens": ConservationCounters(
            "opens-processor",
            "opens_events_acknowledged_total",
            ("opens_recorded_total", "opens_events_filtered_total"),
            "/metrics",
        )
    }


@pytest.mark.parametrize("name", NAMES)
def test_default_rollouts_are_the_shipped_specs(catalog, name):
    shipped = load_spec((ROOT / f"manifests/rollouts/{name}.yaml").read_text())
    assert catalog[name].rollout_spec(shipped.canary) == shipped


def _kube_objects() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / "manifests/kubernetes").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and "metadata" in doc and "kind" in doc:
                found.setdefault(doc["kind"], set()).add(doc["metadata"]["name"])
    return found


@pytest.mark.parametrize("name", NAMES)
def test_kubernetes_names_are_the_manifests_objects(catalog, name):
    objects, entry = _kube_objects(), catalog[name]
    for track in ("stable", "canary"):
        assert entry.kube_deployment(track) in objects["Deployment"]
        assert entry.kube_service(track) in objects["Service"]
        for consumer in entry.consumers:
            assert entry.kube_consumer_deployment(consumer, track) in objects["Deployment"]
    assert entry.kubernetes is not None and entry.kubernetes.httproute in objects["HTTPRoute"]
    assert entry.kube_image("1.1", "releasewarden") == "releasewarden:1.1"  # the platform's image setting


def test_opens_reprocessing_is_its_after_rollback_hook(catalog):
    (hook,) = catalog["opens"].hooks
    assert (hook.moment, hook.on_failure, hook.timeout_s) == (Moment.AFTER_ROLLBACK, OnFailure.HOLD, 30.0)
    assert catalog["opens"].hooks_at(Moment.BEFORE_TRAFFIC) == ()
    assert catalog["importer"].hooks == () and catalog["resizer"].hooks == ()


@pytest.mark.anyio
async def test_opens_runs_from_its_entry_and_its_hook_reprocesses(catalog, tmp_path):
    """The real opens service and its processor, started from the entry alone; then the hook asks
    stable to re-process a canary's events, with the service token, and is answered."""
    opens, settings = catalog["opens"], Settings(admin_token="admin", service_token="hook-token", token_secret="s")
    with contextlib.ExitStack() as stack:
        urls = []
        for consumer in [None, *opens.consumers]:
            port = free_port()
            args = {"port": port, "state_dir": tmp_path, "settings": settings}
            launch = opens.local_launch("1.0", consumer=consumer, **args)
            urls.append(stack.enter_context(running(launch, port, tmp_path / f"{port}.log")))
        (hook,) = opens.hooks
        context = HookContext("opens", "1.0", "1.1", urls[0], "", "r-1", Moment.AFTER_ROLLBACK, settings)
        result = await run_hook(hook, context)
        assert result.ok, result.reason
        assert result.json()["events_handed_back"] == 0  # a fresh database: nothing to hand back
        wrong = await run_hook(
            hook, dataclasses.replace(context, settings=Settings(admin_token="hook-token", service_token="x"))
        )
        assert not wrong.ok and wrong.status == 401 and "reprocess-canary-events" in wrong.reason
        # what to check: the service's token is the controller's, derived for it
        assert "python -m core.scoped_tokens opens service_token" in wrong.reason


def test_a_platform_launches_services_and_consumers_by_name(catalog, tmp_path):
    settings = Settings()
    assert catalog["opens"].runs_as == ("opens", "opens-processor")
    processor = catalog.launch("opens-processor", "1.1", port=1, state_dir=tmp_path, settings=settings, track="canary")
    assert processor.argv[2] == "services.opens.processor" and processor.environment["CANARY_TRACK"] == "canary"
    assert catalog.launch("resizer", "2.1", port=2, state_dir=tmp_path, settings=settings).argv[2] == "services.resizer"
    with pytest.raises(KeyError, match="unknown service 'printer'"):
        catalog.launch("printer", "1", port=3, state_dir=tmp_path, settings=settings)


@pytest.mark.parametrize("name", NAMES)
def test_the_default_rollout_as_a_document_is_a_valid_spec_to_override(catalog, name):
    entry = catalog[name]
    document = entry.rollout_document("1.2" if name != "resizer" else "2.1")
    assert load_spec(yaml.safe_dump(document)) == entry.rollout_spec(document["spec"]["canary"])
    document["spec"].update({"steps": [{"weight": 50}], "watch": {"seconds": 5}})  # a spec file's overrides
    overridden = load_spec(yaml.safe_dump(document))
    assert [s.weight for s in overridden.steps] == [50] and overridden.watch_seconds == 5
    assert overridden.metrics == entry.defaults.metrics


@pytest.mark.parametrize("name", NAMES)
def test_releases_are_the_ones_the_service_knows(catalog, name):
    known = importlib.import_module(f"services.{name}").RELEASES
    assert catalog[name].releases == tuple(known) and catalog[name].stable == known[0]


def test_the_kubernetes_port_is_the_services_port(catalog):
    ports = {}
    for path in (ROOT / "manifests/kubernetes/base").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Service":
                ports[doc["metadata"]["name"]] = {p["port"] for p in doc["spec"]["ports"]}
    for name in NAMES:
        entry = catalog[name]
        assert entry.kubernetes is not None
        assert all(ports[entry.kube_service(t)] == {entry.kubernetes.port} for t in ("stable", "canary"))
