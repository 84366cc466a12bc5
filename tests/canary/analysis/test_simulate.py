"""The simulator and `canary simulate`: policies on the same traffic, output shapes, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from canary.analysis import simulate
from canary.analysis.scenario import Scenario, ScenarioError

BASE = {
    "name": "t",
    "duration": 900,
    "rate": 100,
    "canary_share": 0.05,
    "baseline_error_rate": 0.001,
    "canary_error_rate": 0.5,
    "runs": 100,
    "seed": 3,
}


def test_total_break_flagger_needs_five_intervals_we_need_seconds():
    result = simulate.run(Scenario.from_dict(BASE))
    seq, flagger = result["policies"]["sequential"], result["policies"]["flagger"]
    assert seq["rolled_back_share"] == 1.0 and seq["ttr_p90_s"] <= 10
    assert flagger["ttr_median_s"] == 300.0  # interval 1m x threshold 5
    assert flagger["failed_median"] > 20 * seq["failed_median"]
    assert seq["false_rollback_rate"] is None


def test_flagger_rolls_back_an_idle_canary_we_do_not():
    idle = {**BASE, "canary_share": 0.0, "canary_error_rate": 0.001}
    result = simulate.run(Scenario.from_dict(idle))
    assert result["policies"]["flagger"]["rolled_back_share"] == 1.0
    assert result["policies"]["sequential"]["rolled_back_share"] == 0.0
    assert result["policies"]["sequential"]["false_rollback_upper95"] < 0.05


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rate": -1}, "rate: must be between"),
        ({"canary_share": [[0, 2]]}, "canary_share[0][1]: must be between"),
        ({"bursts": [{"start": 1}]}, "bursts[0].duration: required"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"duration": "long"}, "duration: must be a number"),
    ],
)
def test_scenario_errors_name_the_field(change, message):
    with pytest.raises(ScenarioError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Scenario.from_dict({**BASE, **change})


def test_cli_json_and_errors(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: cli\nduration: 300\nrate: 50\ncanary_share: 0.1\n"
        "baseline_error_rate: 0.001\ncanary_error_rate: 0.3\nruns: 20\nseed: 1\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "canary.cli",
            "simulate",
            "--scenario",
            str(path),
            "--json",
            "--policy",
            "sequential",
            "--policy",
            "flagger",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["scenario"] == "cli" and set(data["policies"]) == {"sequential", "flagger"}
    assert set(data["policies"]["sequential"]) == {
        "rolled_back_share",
        "ttr_median_s",
        "ttr_p90_s",
        "failed_median",
        "failed_p90",
        "failed_mean",
        "false_rollback_rate",
        "false_rollback_upper95",
    }
    bad = subprocess.run(
        [sys.executable, "-m", "canary.cli", "simulate", "--scenario", str(path), "--policy", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown policy 'nope'")


def test_cli_closed_loop_rollout_from_a_spec_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: closed\nduration: 600\nrate: 100\nbaseline_error_rate: 0.005\ncanary_error_rate: 0.005\n"
        "rollout: {spec: manifests/rollouts/opens.yaml}\nruns: 20\nseed: 1\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "canary.cli", "simulate", "--scenario", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    seq = json.loads(out.stdout)["policies"]["sequential"]
    assert {"promoted_share", "inconclusive_share", "missed_share", "false_rollback_rate"} <= set(seq)
    assert seq["false_rollback_rate"] == 0.0 and seq["missed_share"] is None
    assert seq["promoted_share"] + seq["inconclusive_share"] >= 0.9


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"customers": {"count": 0}}, "customers.count: must be between"),
        ({"customers": {"colour": 1}}, "customers.colour: unknown field"),
        ({"restarts": [5000]}, "restarts[0]: must be between"),
        ({"latency": {"stable": {"median": 80}}}, "latency: must be a mapping"),
        ({"rollout": {"steps": [{"weight": 5}, {"weight": 1}]}}, "weights must rise"),
        ({"faulty_metrics": ["errors"]}, "faulty_metrics: needs a rollout"),
        (
            {"faulty_metrics": ["slow"], "rollout": {"steps": [{"weight": 5}], "metrics": [{"name": "errors"}]}},
            "faulty_metrics: 'slow' is not a metric of the rollout",
        ),
        (
            {"customers": {"count": 10}, "rollout": {"steps": [{"weight": 5}], "sticky": "none"}},
            "rollout.sticky: none routes each request by itself, and customers: routes by customer",
        ),
    ],
)
def test_new_scenario_fields_name_the_field(change, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        scenario = Scenario.from_dict({**BASE, **change})
        simulate.run(scenario, runs=2)


def _simulate(tmp_path, capsys, text: str, *argv: str) -> tuple[int, str, str]:
    """``canary simulate`` in this process on a scenario file: (exit code, stdout, stderr)."""
    from canary import cli

    path = tmp_path / "s.yaml"
    path.write_text(text)
    code = cli.main(["simulate", "--scenario", str(path), *argv])
    out, err = capsys.readouterr()
    return code, out, err


SHORT = "duration: 60\nrate: 10\nbaseline_error_rate: 0.001\ncanary_error_rate: 0.05\nruns: 5\n"


@pytest.mark.parametrize("duration", [1, 60, 299])
def test_a_scenario_shorter_than_a_policys_interval_runs_and_that_policy_never_decides(tmp_path, capsys, duration):
    code, out, err = _simulate(tmp_path, capsys, SHORT.replace("60", str(duration)), "--json")
    assert (code, err) == (0, "")
    policies = json.loads(out)["policies"]
    assert set(policies) == {"sequential", "flagger", "argo", "argo-tight"}
    argo = policies["argo"]  # every 5 minutes: not one whole interval
    assert argo["rolled_back_share"] == 0.0 and argo["ttr_median_s"] is None and argo["failed_median"] is None
    if duration < 60:
        assert all(policies[p]["rolled_back_share"] == 0.0 for p in ("flagger", "argo-tight"))


def test_argo_alone_on_a_one_minute_scenario(tmp_path, capsys):
    code, out, err = _simulate(tmp_path, capsys, SHORT, "--policy", "argo")
    assert (code, err) == (0, "")
    assert out.splitlines()[2].split()[:3] == ["argo", "0.0%", "-"]


LATENCY = "latency: {stable: {median: 80}, canary: {median: 80}, threshold_ms: 1000}\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (LATENCY.replace("threshold_ms: 1000", "threshold_ms: 1, extra: 2"), "latency.extra: unknown field"),
        (LATENCY.replace("{median: 80}, canary", "{median: 80, foo: 1}, canary"), "latency.stable.foo: unknown field"),
        (LATENCY.replace("canary: {median: 80}", "canary: {median: 80, sigmaa: 1}"), "latency.canary.sigmaa: unknown"),
        ("bursts: [{start: 0, duration: 10, error_rate: 0.5, colour: red}]", "bursts[0].colour: unknown field"),
        ("metrics: 2.7", "metrics: must be a whole number, got 2.7"),
        ("customers: {count: 1.5}", "customers.count: must be a whole number, got 1.5"),
        ("runs: 4.5", "runs: must be a whole number, got 4.5"),
        ("seed: 0.5", "seed: must be a whole number, got 0.5"),
    ],
)
def test_every_scenario_mapping_refuses_unknown_fields_and_counts_are_whole(tmp_path, capsys, extra, message):
    base = SHORT.replace("runs: 5\n", "") if extra.startswith("runs:") else SHORT  # a key given twice is refused
    code, out, err = _simulate(tmp_path, capsys, base + extra + "\n", "--policy", "sequential")
    path = tmp_path / "s.yaml"
    assert (code, out) == (2, "") and err.startswith(f"error: {path}: {message}"), err
    assert len(err.splitlines()) == 1


def test_a_duration_is_whole_and_a_whole_float_is_a_whole_number(tmp_path, capsys):
    code, _out, err = _simulate(tmp_path, capsys, SHORT.replace("60", "60.5"), "--policy", "sequential")
    assert (code, err) == (2, f"error: {tmp_path / 's.yaml'}: duration: must be a whole number, got 60.5\n")
    code, _out, err = _simulate(tmp_path, capsys, SHORT + "metrics: 2.0\n" + LATENCY, "--policy", "sequential")
    assert (code, err) == (0, "")


STEPS = "steps: [{weight: 5}], "
ERRORS = "metrics: [{name: errors, kind: errors}]"


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        (STEPS + ERRORS + ", bogus_field: 1", "rollout.bogus_field: unknown field"),
        (STEPS + "metrics: [{name: errors, kind: nope}]", "rollout.metrics[0].kind: must be one of errors, latency"),
        (STEPS + "metrics: [{name: slow, kind: latency}]", "rollout.metrics[0].threshold_ms: required for a latency"),
        ("steps: [{weight: 5, max_seconds: 0}], " + ERRORS, "rollout.steps[0].max_seconds: must be above 0"),
        ("steps: [{weight: 5, min_requests: 2.5}], " + ERRORS, "rollout.steps[0].min_requests: must be an integer"),
        (STEPS + ERRORS + ", sticky: {header: X-Account-Id, oops: 1}", "rollout.sticky.oops: unknown field"),
    ],
)
def test_an_inline_rollout_is_refused_where_canary_lint_refuses_the_spec(tmp_path, capsys, rollout, message):
    from canary import cli

    manifest = tmp_path / "spec.yaml"
    manifest.write_text(
        "apiVersion: releasewarden/v1\nkind: Rollout\nmetadata: {name: t}\n"
        f"spec: {{service: t, stable: '1', canary: '2', {rollout}}}\n"
    )
    assert cli.main(["lint", str(manifest)]) == 1
    assert message.removeprefix("rollout") in capsys.readouterr().out
    for written in (rollout, f"spec: {manifest}"):
        code, out, err = _simulate(tmp_path, capsys, SHORT + f"rollout: {{{written}}}\n")
        assert (code, out) == (2, "") and err.startswith(f"error: {tmp_path / 's.yaml'}: {message}"), err
        assert len(err.splitlines()) == 1


def test_an_inline_rollout_that_lint_would_accept_runs_with_its_alpha(tmp_path, capsys):
    rollout = "rollout: {steps: [{weight: 5, max_seconds: 30}], metrics: [{name: errors, kind: errors}], alpha: 0.02}\n"
    code, out, err = _simulate(tmp_path, capsys, SHORT + rollout, "--json")
    assert (code, err) == (0, "")
    assert set(json.loads(out)["policies"]) == {"sequential"}
