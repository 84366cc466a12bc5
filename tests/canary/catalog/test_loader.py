"""Bad catalog entries are refused, each problem naming file, field and line; good ones load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from canary.catalog import CatalogError, check_file, lint_catalog, load_catalog
from canary.providers.base import ConservationCounters

GOOD = """\
apiVersion: releasewarden/v1
kind: Service
name: plain
stable: "1"
releases: ["1", "2"]
local:
  command: [python, "{catalog_dir}/plain_service.py", --release, "{release}", --port, "{port}"]
  environment:
    TOKEN: "{settings.service_token}"
  health_path: /healthz
kubernetes:
  image: registry.example/plain
hooks:
  before_traffic:
    - name: warm-up
      http: {method: GET, url: "{canary_url}/healthz"}
      timeout_s: 5
      on_failure: rollback
"""


def write(tmp_path: Path, text: str, name: str = "plain.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    entry, problems = check_file(path)
    assert (entry is None) == bool(problems)
    return [str(p).replace(f"{path}:", "x.yaml:") for p in problems]


def test_a_good_entry_loads(tmp_path):
    entry, problems = check_file(write(tmp_path, GOOD))
    assert problems == [] and entry is not None
    assert entry.local is not None and entry.local.process.ready_path == "/healthz"  # defaults to health
    assert entry.defaults.metrics[0].kind == "errors"  # the router's errors, with no metrics of its own


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('--port, "{port}"', '--port, "{prot}"'), "x.yaml:7: local.command[5]: unknown placeholder {prot} (known: "),
        (
            ("  health_path: /healthz", "  health_path: /healthz\n  colour: red"),
            "x.yaml:11: local.colour: unknown field",
        ),
        (("kind: Service", "kind: Service\nowner: me"), "x.yaml:3: owner: unknown field"),
        (
            ("[python,", "[no-such-program-here,"),
            "x.yaml:7: local.command[0]: executable 'no-such-program-here' not found on PATH",
        ),
        (
            ('"{catalog_dir}/plain_service.py", ', '"{settings.admin_token}", '),
            "x.yaml:7: local.command[1]: {settings.admin_token}: a setting may not appear here",
        ),
        (
            ('"{settings.service_token}"', '"{settings.service_tokn}"'),
            "x.yaml:9: local.environment.TOKEN: unknown setting {settings.service_tokn}",
        ),
        (
            ('"{settings.service_token}"', '"{settings.admin_token}"'),
            "x.yaml:9: local.environment.TOKEN: {settings.admin_token} would hand the controller's own secret",
        ),
        (
            ('url: "{canary_url}/healthz"}', 'url: "{canary_url}/healthz", token_setting: alert_token}'),
            "x.yaml:16: hooks.before_traffic[0].http.token_setting: {settings.alert_token} would hand the controller",
        ),
        (
            ('"{settings.service_token}"', '"{settings.db_url}"'),
            "x.yaml:9: local.environment.TOKEN: {settings.db_url} would hand the controller's own secret",
        ),
        (
            ('url: "{canary_url}/healthz"}', 'url: "http://shop:80/x", headers: {A: "Bearer {settings.read_token}"}}'),
            "x.yaml:16: hooks.before_traffic[0].http.headers.A: {settings.read_token} would hand the controller",
        ),
        (('--port, "{port}"', '--db, "{db_url}"'), "x.yaml:7: local.command[5]: {db_url} needs local.database"),
        (('stable: "1"', 'stable: "3"'), "x.yaml:4: stable: '3' is not among releases (1, 2)"),
        (
            ('releases: ["1", "2"]', "releases: [1.0, 2.0]"),
            'x.yaml:5: releases[0]: must be a string: quote it ("1.10")',
        ),
        (('releases: ["1", "2"]', 'releases: ["1", "1"]'), "x.yaml:5: releases: ['1', '1'] has non-unique elements"),
        (('releases: ["1", "2"]', "releases: all"), 'x.yaml:5: releases: must be the releases that exist, or "any"'),
        (
            ("  health_path: /healthz", "  health_path: healthz"),
            "x.yaml:10: local.health_path: 'healthz' does not match",
        ),
        (
            ("  environment:\n", "  commands: {'1': [python]}\n  environment:\n"),
            "x.yaml:6: local: needs exactly one of command or commands",
        ),
        (
            ('      http: {method: GET, url: "{canary_url}/healthz"}\n', ""),
            "x.yaml:15: hooks.before_traffic[0]: needs exactly one of http or command",
        ),
        (
            ('"{canary_url}/healthz"', '"{canary_ur}/healthz"'),
            "x.yaml:16: hooks.before_traffic[0].http.url: unknown placeholder {canary_ur}",
        ),
        (
            ("before_traffic:", "after_rollback:"),
            "x.yaml:18: hooks.after_rollback[0].on_failure: a hook after a rollback cannot roll back: hold",
        ),
        (("before_traffic:", "before_trafic:"), "x.yaml:14: hooks.before_trafic: unknown field"),
        (
            ("      on_failure: rollback", "      on_failure: retry"),
            "x.yaml:18: hooks.before_traffic[0].on_failure: must be one of hold, rollback",
        ),
        (
            ("      timeout_s: 5", "      timeout_s: -1"),
            "x.yaml:17: hooks.before_traffic[0].timeout_s: must be above 0 and at most 3600",
        ),
        (
            ("kubernetes:\n  image: registry.example/plain\n", "kubernetes:\n  tag: 'v{version}'\n"),
            "x.yaml:12: kubernetes.tag: unknown placeholder {version} (known: release)",
        ),
        (
            ("kubernetes:\n  image: registry.example/plain\n", "kubernetes:\n  tags: {'3': v3}\n"),
            "x.yaml:12: kubernetes.tags.3: '3' is not among releases",
        ),
        (("name: plain", "name: Plain Service"), "x.yaml:3: name: 'Plain Service' does not match"),
        (("name: plain\n", ""), "x.yaml:1: (document): 'name': required"),
        (
            ('  command: [python, "{catalog_dir}', '  command: [python, "{catalog_dir'),
            "x.yaml:7: local.command[1]: stray '{'",
        ),
        (('releases: ["1", "2"]', 'releases: ["1", "2"]\nreleases: any'), "x.yaml:6: releases: given twice"),
        (
            ("apiVersion: releasewarden/v1\n", "apiVersion: releasewarden/v1\n  - broken: [\n"),
            "x.yaml:2: (document): not valid YAML",
        ),
        ((GOOD, "- a list\n"), "x.yaml:1: (document): must be an object"),
        (
            ('url: "{canary_url}/healthz"}', 'url: "{canary_url}/healthz", json: {day: 2022-04-13}}'),
            "x.yaml:16: hooks.before_traffic[0].http.json: must be JSON: quote dates and times",
        ),
    ],
)
def test_bad_entries_name_file_field_and_line(tmp_path, change, expected):
    text = GOOD.replace(*change)
    assert text != GOOD
    rendered = problems_of(tmp_path, text)
    assert any(r.startswith(expected) for r in rendered), rendered


def test_commands_per_release_must_match_the_releases(tmp_path):
    text = GOOD.replace(
        '  command: [python, "{catalog_dir}/plain_service.py", --release, "{release}", --port, "{port}"]',
        "  commands:\n    '1': [python, a.py, '{port}']\n    '3': [python, b.py, '{port}']",
    )
    assert problems_of(tmp_path, text) == [
        "x.yaml:7: local.commands: no command for release '2'",
        "x.yaml:9: local.commands.3: '3' is not among releases",
    ]
    assert problems_of(tmp_path, text.replace('releases: ["1", "2"]', "releases: any")) == [
        'x.yaml:7: local.commands: commands per release need a list of releases (not "any")'
    ]


def test_an_executable_path_must_exist_and_be_executable(tmp_path):
    (tmp_path / "server").write_text("#!/bin/sh\n")
    text = GOOD.replace('[python, "{catalog_dir}/plain_service.py"', '["{catalog_dir}/server"')
    assert problems_of(tmp_path, text) == [
        f"x.yaml:7: local.command[0]: '{tmp_path}/server' is not executable"
        " (chmod +x, or start it with its interpreter)"
    ]
    os.chmod(tmp_path / "server", 0o755)
    assert problems_of(tmp_path, text) == []
    missing = GOOD.replace('[python, "{catalog_dir}/plain_service.py"', '["{catalog_dir}/bin/nothing"')
    assert problems_of(tmp_path, missing) == [
        f"x.yaml:7: local.command[0]: executable '{tmp_path}/bin/nothing' does not exist"
    ]


def test_defaults_obey_the_rollout_specs_rules(tmp_path):
    text = GOOD + "defaults:\n  steps: [{weight: 50}, {weight: 10}]\n  metrics: [{name: slow, kind: latency}]\n"
    assert problems_of(tmp_path, text) == [
        "x.yaml:20: defaults.steps[1].weight: must be above the previous step's 50",
        "x.yaml:21: defaults.metrics[0].threshold_ms: required for a latency metric",
    ]
    assert problems_of(tmp_path, GOOD + "defaults:\n  service: other\n") == [
        "x.yaml:20: defaults.service: unknown field"
    ]


def test_one_service_per_file_and_no_bigger_than_a_mebibyte(tmp_path):
    assert problems_of(tmp_path, GOOD + "---\n" + GOOD) == [
        "x.yaml: (document): one service per file: found 2 documents"
    ]
    assert problems_of(tmp_path, "# nothing yet\n") == [
        "x.yaml: (document): empty: a catalog entry is one YAML document"
    ]
    assert problems_of(tmp_path, "? [a]\n: b\n")[0].startswith("x.yaml:1: (document): not valid YAML")
    assert problems_of(tmp_path, GOOD + "#" * (1 << 20)) == ["x.yaml: (file): larger than 1048576 bytes"]
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert [p.message for p in check_file(path)[1]] == ["not UTF-8 text"]


def test_a_catalog_is_directories_and_files_with_unique_names(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    write(one, GOOD)
    write(two, GOOD, "again.yml")
    consumer = GOOD.replace("name: plain", "name: other") + "consumers:\n  - name: plain\n"
    write(tmp_path, consumer, "other.yaml")
    problems = [str(p) for p in lint_catalog([one, two, tmp_path / "other.yaml"])]
    assert problems == [
        f"{two}/again.yml: name: 'plain' is already defined in {one}/plain.yaml",
        f"{tmp_path}/other.yaml: name: 'plain' is already defined in {one}/plain.yaml",
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert [str(p) for p in lint_catalog([empty, tmp_path / "nowhere"])] == [
        f"{empty}: (catalog): no *.yaml catalog entries in this directory",
        f"{tmp_path}/nowhere: (catalog): no such file or directory",
    ]
    with pytest.raises(CatalogError) as refused:
        load_catalog([one, two])
    assert "already defined" in str(refused.value) and len(refused.value.problems) == 1
    assert load_catalog([one]).names == ("plain",)


def test_a_consumer_needs_its_own_name_and_the_services_database_for_db_url(tmp_path):
    text = GOOD + "consumers:\n  - name: plain\n    local: {command: [python, c.py, '{db_url}', '{port}']}\n"
    assert problems_of(tmp_path, text) == [
        "x.yaml:20: consumers[0].name: a consumer needs a name of its own (it runs as a service of its own)",
        "x.yaml:21: consumers[0].local.command[2]: {db_url} needs local.database (the URL of the release's database)",
    ]


@pytest.mark.parametrize("replacement", ["null", "[]", "{}", "7", "'{'", "[{}]"])
def test_any_value_anywhere_gives_problems_not_a_traceback(tmp_path, replacement):
    lines = (GOOD + "consumers:\n  - name: worker\n    local: {command: [python, w.py]}\n").splitlines()
    for i, line in enumerate(lines):
        if ":" not in line:
            continue
        key = line.split(":", 1)[0]
        mutated = "\n".join([*lines[:i], f"{key}: {replacement}", *lines[i + 1 :]]) + "\n"
        path = write(tmp_path, mutated)
        entry, problems = check_file(path)  # never raises
        assert entry is not None or all(p.file == str(path) and p.message for p in problems)


def test_a_release_must_be_told_its_port(tmp_path):
    text = GOOD.replace(', --port, "{port}"', "")
    assert problems_of(tmp_path, text) == [
        "x.yaml:7: local.command: never names {port} (nor does environment): the release cannot know where to listen"
    ]
    assert problems_of(tmp_path, text.replace('TOKEN: "{settings.service_token}"', 'PORT: "{port}"')) == []


def test_a_hook_url_is_http(tmp_path):
    text = GOOD.replace('url: "{canary_url}/healthz"', 'url: "file:///etc/passwd"')
    assert problems_of(tmp_path, text) == [
        "x.yaml:16: hooks.before_traffic[0].http.url: must be an http:// or https:// URL"
        " (or start with {stable_url} or {canary_url})"
    ]


def test_aliases_share_values_but_cannot_explode(tmp_path):
    shared = GOOD.replace("  environment:\n", "  environment: &env\n") + (
        "consumers:\n  - name: worker\n    local: {command: [python, w.py, '{port}'], environment: *env}\n"
    )
    entry, problems = check_file(write(tmp_path, shared))
    assert problems == [] and entry is not None
    assert entry.consumers[0].local is not None
    assert entry.consumers[0].local.environment == {"TOKEN": "{settings.service_token}"}
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    assert problems_of(tmp_path, bomb) == ["x.yaml: (document): more than 100000 values once YAML aliases are expanded"]


WORKER = """\
consumers:
  - name: plain-worker
    local:
      command: [python, worker.py, --port, "{port}"]
      metrics_path: /metrics
    conservation:
      acknowledged: plain_acked_total
      accounted: [plain_done_total, plain_skipped_total]
"""


def test_a_consumers_conservation_counters_are_what_its_service_s_metric_reads(tmp_path):
    catalog = load_catalog(
        [write(tmp_path, GOOD + WORKER + "defaults:\n  metrics: [{name: lost, kind: conservation}]\n")]
    )
    assert catalog.conservation() == {
        "plain": ConservationCounters("plain-worker", "plain_acked_total", ("plain_done_total", "plain_skipped_total"))
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("      metrics_path: /metrics\n", ""), "x.yaml:23: consumers[0].conservation: needs local.metrics_path"),
        (
            ("[plain_done_total,", "[plain_acked_total,"),
            "x.yaml:26: consumers[0].conservation.accounted[0]: is the acknowledged counter",
        ),
        (
            ("acknowledged: plain_acked_total", "acknowledged: plain-acked"),
            "x.yaml:25: consumers[0].conservation.acknowledged: 'plain-acked' does not match",
        ),
        (
            ("acknowledged: plain_acked_total", "acknowledged: x\n      recorded: y"),
            "x.yaml:26: consumers[0].conservation.recorded: unknown field",
        ),
        (
            ("      accounted: [plain_done_total, plain_skipped_total]\n", ""),
            "x.yaml:24: consumers[0].conservation: 'accounted': required",
        ),
        (
            (WORKER, WORKER + WORKER.replace("consumers:\n", "").replace("plain-worker", "plain-other")),
            "x.yaml:31: consumers[1].conservation: consumers[0] has them already",
        ),
        (
            (WORKER[WORKER.index("    conservation:") :], ""),
            "x.yaml:25: defaults.metrics[0].kind: a conservation metric needs consumers[].conservation counters",
        ),
    ],
)
def test_bad_conservation_counters_name_file_field_and_line(tmp_path, change, expected):
    good = GOOD + WORKER + "defaults:\n  metrics: [{name: lost, kind: conservation}]\n"
    text = good.replace(*change)
    assert text != good
    rendered = problems_of(tmp_path, text)
    assert any(r.startswith(expected) for r in rendered), rendered


def test_rollout_specs_and_groups_beside_the_entries_are_linted_as_such_not_as_entries(tmp_path, capsys):
    from canary import cli

    write(tmp_path, GOOD)
    spec = "apiVersion: releasewarden/v1\nkind: Rollout\nspec:\n  service: plain\n  stable: '1'\n  canary: '2'\n"
    write(tmp_path, spec + "  steps: [{weight: 50}]\n  metrics: [{name: errors, kind: errors}]\n", "good-rollout.yaml")
    write(tmp_path, spec + "  steps: [{weight: 50}]\n  metrics: [{name: errors, kind: oops}]\n", "bad-rollout.yml")
    assert load_catalog([tmp_path]).names == ("plain",)  # the specs are not entries
    assert cli.main(["lint", str(tmp_path)]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert f"{tmp_path}: ok" in printed and f"{tmp_path}/good-rollout.yaml: ok" in printed
    assert [line for line in printed if "bad-rollout" in line] == [
        f"{tmp_path}/bad-rollout.yml:8: spec.metrics[0].kind: must be one of "
        "errors, latency, conservation, mirror, query"
    ]
    assert not [line for line in printed if "must be 'Service'" in line]
