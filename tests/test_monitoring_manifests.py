"""manifests/prometheus and manifests/alertmanager, checked by the servers' own tools: promtool
checks the configuration and the rules and runs the rules' unit tests (every alert fires on the data
it is for and stays quiet on healthy data); amtool checks Alertmanager's configuration and where
each kind of alert is routed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from canary.local_monitoring import alertmanager_config, prometheus_config
from tests.conftest import need_monitoring

ROOT = Path(__file__).resolve().parents[1]
PROM, AM = ROOT / "manifests/prometheus", ROOT / "manifests/alertmanager"


@pytest.fixture(autouse=True)
def _tools():
    need_monitoring()


def tool(*argv: str, cwd: Path = ROOT) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def test_promtool_checks_the_shipped_configuration_and_rules():
    assert "SUCCESS" in tool("promtool", "check", "config", str(PROM / "prometheus.yml"))
    out = tool("promtool", "check", "rules", *map(str, sorted((PROM / "rules").glob("*.yml"))))
    assert "SUCCESS: 7 rules found" in out and "SUCCESS: 5 rules found" in out  # alerts, recording rules


def test_promtool_unit_tests_cover_every_alert():
    tests = PROM / "tests/releasewarden.test.yml"
    assert "SUCCESS" in tool("promtool", "test", "rules", str(tests.relative_to(PROM)), cwd=PROM)
    alerts = {
        r["alert"]
        for path in (PROM / "rules").glob("*.alerts.yml")
        for g in yaml.safe_load(path.read_text())["groups"]
        for r in g["rules"]
    }
    tested = {
        t["alertname"] for case in yaml.safe_load(tests.read_text())["tests"] for t in case.get("alert_rule_test", [])
    }
    assert alerts == tested


def test_the_configuration_the_local_stack_writes_is_valid_too(tmp_path):
    token = tmp_path / "token"
    token.write_text("x")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config("http://127.0.0.1:8700", token, "http://127.0.0.1:9093", 1.0)))
    assert "SUCCESS" in tool("promtool", "check", "config", str(config))
    am = tmp_path / "alertmanager.yml"
    am.write_text(yaml.safe_dump(alertmanager_config("http://127.0.0.1:8700", token)))
    assert "SUCCESS" in tool("amtool", "check-config", str(am))


def test_amtool_checks_alertmanager_and_its_routes():
    config = str(AM / "alertmanager.yml")
    assert "SUCCESS" in tool("amtool", "check-config", config)

    def receivers(*labels: str) -> str:
        return tool("amtool", "config", "routes", "test", f"--config.file={config}", *labels).splitlines()[0]

    # a rollback alert goes to the controller at once, and to people too
    assert receivers(
        "alertname=CanaryErrorRatioAboveStable", "rollback=true", "severity=critical", "service=importer"
    ) == ("releasewarden-controller,release-engineers")
    # the controller's own trouble goes to people only: the controller cannot fix itself
    assert receivers("alertname=CanaryControllerDown", "severity=critical") == "release-engineers"
    assert receivers("alertname=RolloutHeld", "severity=warning") == "release-engineers"
