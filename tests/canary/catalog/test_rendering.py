"""Entries rendered into what the platforms run: argv, environment, Deployment names, image tags,
and the default rollout; and a service no one here knew, started from a catalog file alone."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import httpx
import pytest

from canary.catalog import load_catalog
from canary.controller.spec import Metric, Step
from core.settings import Settings
from tests.canary.catalog.running import free_port, running

HERE = Path(__file__).resolve().parent

PLAIN = """\
apiVersion: releasewarden/v1
kind: Service
name: plain
stable: "1"
releases: ["1", "2"]
local:
  command: [python, plain_service.py, --release, "{release}", --port, "{port}"]
  working_dir: "{catalog_dir}"
  health_path: /healthz
  ready_timeout_s: 10
"""

ANY = """\
apiVersion: releasewarden/v1
kind: Service
name: web
stable: v7
releases: any
kubernetes:
  deployments: {stable: web-live, canary: web-next}
  image: registry.example/web
  tag: "build-{release}"
  tags: {v7: legacy-7}
  service: "web-{track}-svc"
defaults:
  steps: [{weight: 10, min_requests: 30}]
  metrics: [{name: slow, kind: latency, threshold_ms: 250}]
  watch: {seconds: 60}
"""


def catalog_of(tmp_path: Path, **texts: str):
    for name, text in texts.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    return load_catalog([tmp_path])


def test_commands_per_release_literal_braces_and_working_dir(tmp_path):
    text = PLAIN.replace(
        '  command: [python, plain_service.py, --release, "{release}", --port, "{port}"]',
        "  commands:\n    '1': [python, old.py, '{port}']\n"
        "    '2': [python, new.py, '{{literal}}', '{state_dir}/x', '{port}']",
    )
    entry = catalog_of(tmp_path, plain=text)["plain"]
    assert entry.local_command("1", 81, tmp_path / "s") == [sys.executable, "old.py", "81"]
    assert entry.local_command("2", 82, tmp_path / "s") == [
        sys.executable,
        "new.py",
        "{literal}",
        f"{tmp_path}/s/x",
        "82",
    ]
    launch = entry.local_launch("2", port=82, state_dir=tmp_path, settings=Settings())
    assert launch.working_dir == tmp_path and launch.environment == {}
    assert (launch.health_path, launch.ready_path, launch.ready_timeout_s) == ("/healthz", "/healthz", 10.0)
    with pytest.raises(LookupError, match="plain has no kubernetes section"):
        entry.kube_deployment("canary")


def test_kubernetes_names_images_and_any_release(tmp_path):
    web = catalog_of(tmp_path, web=ANY)["web"]
    assert web.knows_release("anything-at-all") and web.releases is None
    assert (web.kube_deployment("stable"), web.kube_deployment("canary")) == ("web-live", "web-next")
    assert web.kube_deployment("baseline") == "web-baseline"  # the name template, where none is named
    assert web.kube_service("canary") == "web-canary-svc"
    assert web.kube_image("v8", "ignored") == "registry.example/web:build-v8"
    assert web.kube_image("v7", "ignored") == "registry.example/web:legacy-7"
    assert web.kubernetes is not None and (web.kubernetes.port, web.kubernetes.httproute) == (8000, None)
    with pytest.raises(LookupError, match="web has no local section"):
        web.local_command("v8", 1, tmp_path)


def test_default_rollouts(tmp_path):
    catalog = catalog_of(tmp_path, web=ANY, plain=PLAIN)
    web = catalog["web"].rollout_spec("v8")
    assert (web.name, web.service, web.stable, web.canary) == ("web-v8", "web", "v7", "v8")
    assert web.steps == (Step(10, min_requests=30),) and web.metrics == (Metric("slow", "latency", threshold_ms=250),)
    assert web.watch_seconds == 60 and web.sticky == {"header": "X-Account-Id"} and web.failover
    plain = catalog["plain"].rollout_spec("2", stable="1")
    assert [s.weight for s in plain.steps] == [5, 25, 50] and [m.kind for m in plain.metrics] == ["errors"]
    # consumers that send no key: the entry's defaults route each request by itself, and the spec
    # they make says so (as `sticky: none`, which a rollout spec takes too)
    catalog = catalog_of(tmp_path, plain=PLAIN + "defaults:\n  sticky: none\n")
    assert catalog["plain"].rollout_document("2")["spec"]["sticky"] == "none"
    assert catalog["plain"].rollout_spec("2").sticky == {}


def test_an_unknown_service_names_the_ones_there_are(tmp_path):
    catalog = catalog_of(tmp_path, web=ANY, plain=PLAIN)
    with pytest.raises(KeyError, match=r"unknown service 'shop' \(the catalog has: plain, web\)"):
        catalog["shop"]
    assert "web" in catalog and catalog.owner("nobody") is None


def test_a_service_no_one_here_wrote_runs_from_its_catalog_file(tmp_path):
    """plain_service.py (the standard library, no ``core``) beside a catalog file written here:
    both releases start from the entry alone; 2 fails three requests in ten, 1 none."""
    shutil.copy(HERE / "plain_service.py", tmp_path / "plain_service.py")
    entry = catalog_of(tmp_path, plain=PLAIN)["plain"]
    failed = {}
    for release in ("1", "2"):
        port = free_port()
        launch = entry.local_launch(release, port=port, state_dir=tmp_path, settings=Settings())
        with running(launch, port, tmp_path / f"{release}.log") as url, httpx.Client(base_url=url) as client:
            failed[release] = sum(client.get(f"/work/{i}").status_code == 500 for i in range(50))
    assert failed == {"1": 0, "2": 15}
