"""Rollout specs: the shipped examples lint clean, bad specs are refused naming field and line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from canary.controller.spec import OnInconclusive, SpecError, check, load_spec, rule_alerts
from canary.controller.spec_schema import SCHEMA

ROOT = Path(__file__).resolve().parents[2]
GOOD = (ROOT / "manifests/rollouts/resizer.yaml").read_text()


@pytest.mark.parametrize("name", ["importer", "opens", "resizer"])
def test_shipped_specs_are_valid(name):
    spec = load_spec((ROOT / f"manifests/rollouts/{name}.yaml").read_text())
    assert spec.service == name and spec.steps and spec.metrics
    weights = [s.weight for s in spec.steps]
    assert weights == sorted(weights)


def test_published_schema_matches_the_code():
    assert json.loads((ROOT / "manifests/rollout.schema.json").read_text()) == SCHEMA


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("    - {weight: 25, min_requests: 1000, min_seconds: 60}", "    - {weight: 125}"),
            "spec.steps[2].weight: must be above 0 and below 100",
        ),
        (  # at 100% there is no stable to compare with: the judge would see nothing and promote
            ("    - {weight: 25, min_requests: 1000, min_seconds: 60}", "    - {weight: 100}"),
            "spec.steps[2].weight: must be above 0 and below 100",
        ),
        (  # NaN passes every minimum and maximum; it wedged every tick of the controller
            ("    - {weight: 25, min_requests: 1000, min_seconds: 60}", "    - {weight: .nan}"),
            "spec.steps[2].weight: must be a finite number",
        ),
        (("    max_seconds: 600", "    max_seconds: .inf"), "spec.mirror.max_seconds: must be a finite number"),
        (("  service: resizer", "  service: resizer\n  service: opens"), "spec.service: given twice"),
        (
            (
                "    - {weight: 1, min_requests: 200, min_seconds: 60}",
                "    - {weight: 1, min_seconds: 60, max_seconds: 30}",
            ),
            "spec.steps[0].min_seconds: 60 is longer than max_seconds (30): the phase could never pass",
        ),
        (
            ("    min_seconds: 30", "    min_seconds: 900"),
            "spec.mirror.min_seconds: 900 is longer than max_seconds (600)",
        ),
        (('  canary: "2.0"', '  canary: "1.0"'), "spec.canary: must differ from spec.stable"),
        (
            ("    - {weight: 5, min_requests: 500, min_seconds: 60}", "    - {weight: 0.5}"),
            "spec.steps[1].weight: must be above the previous step's 1",
        ),
        (("kind: latency, threshold_ms: 1000", "kind: latency"), "spec.metrics[1].threshold_ms: required"),
        (
            ("  service: resizer", "  service: Printer!"),
            "spec.service: 'Printer!' does not match '^[a-z0-9][a-z0-9-]{0,39}$'",
        ),
        (("  failover: true\n", ""), None),
        (
            ("  sticky: {header: X-Account-Id}", "  sticky: {header: X-Account-Id}\n  colour: red"),
            "spec.colour: unknown field",
        ),
        (("    pixel_tolerance: 8", "    pixel_tolerance: lots"), "spec.mirror.pixel_tolerance: must be a number"),
        (("    baseline: none", "    baseline: stable"), None),
        (("    baseline: none", "    baseline: twice"), "spec.mirror.baseline: must be one of none, stable"),
        (("  sticky: {header: X-Account-Id}", "  sticky: {header: X-Account-Id, history_seconds: 120}"), None),
        (
            ("  sticky: {header: X-Account-Id}", "  sticky: {header: X-Account-Id, history_seconds: 7200}"),
            "spec.sticky.history_seconds: must be between 0 and 3600",
        ),
        (
            ("  sticky: {header: X-Account-Id}", "  sticky: {header: X-Account-Id, cookie: session}"),
            "spec.sticky: needs one key of header, cookie or path_param",
        ),
        (
            ("  sticky: {header: X-Account-Id}", "  sticky: {history_seconds: 60}"),
            "spec.sticky: needs one key of header, cookie or path_param",
        ),
        (("  sticky: {header: X-Account-Id}", "  sticky: none"), None),  # consumers that send no key
        (("  sticky: {header: X-Account-Id}", "  sticky: {header: ''}"), "spec.sticky.header: '' should be non-empty"),
        (("  sticky: {header: X-Account-Id}", "  sticky: {}"), "spec.sticky: needs one key of header"),
        (("  sticky: {header: X-Account-Id}", "  sticky: X-Account-Id"), "spec.sticky: needs none (each request"),
    ],
)
def test_bad_specs_name_the_field_and_line(change, expected):
    text = GOOD.replace(*change)
    assert text != GOOD or expected is None
    _, problems = check(text, "r.yaml")
    if expected is None:
        assert problems == []
        return
    rendered = [p.render("r.yaml") for p in problems]
    hit = [r for r in rendered if expected in r]
    assert hit, rendered
    line = int(hit[0].split(":")[1])
    needle = change[1].strip().splitlines()[-1]
    assert needle.split(":")[0] in text.splitlines()[line - 1]  # the line points at the field


def test_not_yaml_and_missing_fields():
    _, problems = check("spec: [unclosed", "x.yaml")
    assert problems[0].message.startswith("not valid YAML") and problems[0].line == 1
    with pytest.raises(SpecError) as err:
        load_spec("apiVersion: releasewarden/v1\nkind: Rollout\nspec: {service: opens}\n", "y.yaml")
    text = str(err.value)
    assert "y.yaml:3: spec: 'stable': required" in text and "'steps': required" in text


def test_canary_lint_command(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace('  canary: "2.0"', '  canary: "1.0"'))
    out = subprocess.run(
        [sys.executable, "-m", "canary.cli", "lint", str(ROOT / "manifests/rollouts/opens.yaml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert f"{bad}:9: spec.canary: must differ from spec.stable" in out.stdout
    assert "opens.yaml: ok" in out.stdout


def test_lost_data_has_no_tolerance():
    opens = (ROOT / "manifests/rollouts/opens.yaml").read_text()
    old = "kind: conservation, min_regression: 2"
    assert old in opens
    _, problems = check(opens.replace(old, "kind: conservation, tolerance: 0.01, min_regression: 2"), "o.yaml")
    assert [p.message for p in problems] == ["a conservation metric counts lost data: it has no tolerance"]
    assert problems[0].path.endswith(".tolerance") and problems[0].line


RULES = ROOT / "manifests/prometheus/rules"


@pytest.mark.parametrize("name", ["importer", "opens", "resizer"])
def test_shipped_specs_name_only_alerts_that_exist_and_roll_back(name):
    text = (ROOT / f"manifests/rollouts/{name}.yaml").read_text()
    assert check(text, name, rule_alerts(RULES))[1] == []
    assert load_spec(text).alerts  # each names the alerts that roll it back


def test_an_alert_that_does_not_exist_or_never_reaches_the_controller_is_refused_with_its_line():
    text = GOOD.replace(
        "alerts: [ResizerDatabaseErrors]", "alerts: [ProcessorAcknowledgesWithoutRecording, RouterFailovers]"
    )
    problems = check(text, "r.yaml", rule_alerts(RULES))[1]
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "alerts:" in t)
    assert [(p.path, p.line) for p in problems] == [("spec.alerts[0]", line), ("spec.alerts[1]", line)]
    assert "no alert 'ProcessorAcknowledgesWithoutRecording'" in problems[0].message
    assert "OpensAcknowledgedWithoutRecording" in problems[0].message  # names those that would do
    assert 'not labelled rollback="true"' in problems[1].message


def test_on_inconclusive_and_the_watch_holdback_are_read_and_checked():
    spec = load_spec(GOOD.replace("  sticky:", "  on_inconclusive: rollback\n  sticky:"))
    assert spec.on_inconclusive == OnInconclusive.ROLLBACK and spec.watch_holdback == 5
    assert load_spec(GOOD).on_inconclusive == OnInconclusive.PAUSE  # the default: a person decides
    problems = check(GOOD.replace("  sticky:", "  on_inconclusive: retry\n  sticky:"), "r.yaml")[1]
    assert [p.message for p in problems] == ["must be one of pause, rollback, promote"]
    problems = check(GOOD.replace("holdback: 5", "holdback: 80"), "r.yaml")[1]
    assert [p.path for p in problems] == ["spec.watch.holdback"]


def test_a_service_name_longer_than_the_store_keeps_is_refused_by_the_spec_and_the_catalog():
    from canary.catalog.schema import SCHEMA as CATALOG
    from canary.controller.spec_schema import SERVICE_NAME_MAX
    from canary.controller.store import rollouts

    assert rollouts.c.service.type.length == SERVICE_NAME_MAX  # what PostgreSQL would refuse past
    longest, over = "a" * SERVICE_NAME_MAX, "a" * (SERVICE_NAME_MAX + 1)
    spec = (ROOT / "manifests/rollouts/importer.yaml").read_text()
    load_spec(spec.replace("service: importer", f"service: {longest}"))
    with pytest.raises(SpecError, match=r"spec\.service"):
        load_spec(spec.replace("service: importer", f"service: {over}"))
    import re

    pattern = re.compile(CATALOG["properties"]["name"]["pattern"])
    assert pattern.match(longest) and not pattern.match(over)


def aliases(levels: int, name: str = "a") -> str:
    """Lines of ``metadata`` (whose fields the schema leaves free) with aliases ten to a level: the
    last one stands for 10**levels values, in a few hundred bytes."""
    out = f"  {name}0: &{name}0 [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, levels):
        out += f"  {name}{i}: &{name}{i} [{', '.join([f'*{name}{i - 1}'] * 10)}]\n"
    return out


def with_metadata(spec: str, fields: str) -> str:
    return spec.replace("metadata:\n", "metadata:\n" + fields, 1)


def test_aliases_share_values_but_cannot_expand_past_the_limit():
    shared = load_spec(with_metadata(GOOD, "  steps: &s [1, 2]\n  again: *s\n"))  # a few aliases are fine
    assert shared.service == "resizer"
    for fields in (
        aliases(5),  # 111,110 values, counted before anything walks them (the audit's 9 levels: in
        # test_cli_spec_limits, in a process of bounded memory)
        "  a0: &a0 {x: 1, y: 2}\n"  # merge keys count as the aliases they name
        + "".join(f"  a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * 10)}]}}\n" for i in range(1, 6)),
        "  loop: &loop [*loop]\n",  # an alias inside its own anchor: endless
    ):
        _, problems = check(with_metadata(GOOD, fields), "r.yaml")
        assert [p.render("r.yaml") for p in problems] == [
            "r.yaml: (document): more than 100000 values once YAML aliases are expanded"
        ]


def test_a_spec_nested_too_deeply_is_refused_naming_where_not_with_a_recursion_error():
    for deep, line in (("[" * 50_000, 5), ("{a: " * 20_000, 5), ("\n    " + "- " * 5_000 + "x", 6)):
        _, problems = check(with_metadata(GOOD, f"  deep: {deep}\n"), "r.yaml")
        assert [p.render("r.yaml") for p in problems] == [
            f"r.yaml:{line}: (document): not valid YAML: exceeded maximum nesting depth"
        ]
    _, problems = check(with_metadata(GOOD, "  deep: " + "[" * 40 + "]" * 40 + "\n"), "r.yaml")
    assert [p.render("r.yaml") for p in problems] == [
        f"r.yaml:5: metadata.deep{'[0]' * 31}: nested deeper than 32 levels"
    ]
    assert check(with_metadata(GOOD, "  deep: " + "[" * 30 + "]" * 30 + "\n"), "r.yaml")[1] == []
