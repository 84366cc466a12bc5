"""Group specs: the shipped one is valid, the schema is published, and bad groups are refused
with field and line (cycles, unknown members, a member's own rollout spec errors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from canary.catalog.settings import shipped_catalog
from canary.controller.group_spec import SCHEMA, Policy, Promote, check, inline, load_group

ROOT = Path(__file__).resolve().parents[2]
ROLLOUT = "{steps: [{weight: 10}], metrics: [{name: errors, kind: errors}]}"


def group(members: str, policy: str = "dependents", promote: str = "each") -> str:
    return f"""apiVersion: releasewarden/v1
kind: Group
metadata: {{name: g}}
spec:
  policy: {policy}
  promote: {promote}
  members:
{members}"""


def test_the_shipped_group_is_valid_and_the_schema_is_published():
    path = ROOT / "manifests/groups/april-13.yaml"
    g, problems = check(path.read_text(), str(path), path.parent)
    assert problems == [] and g is not None
    assert [m.service for m in g.members] == ["importer", "opens", "resizer"] and g.policy == Policy.INDEPENDENT
    assert g.member("importer").rollout["steps"][0]["weight"] == 5  # read from the member's spec file
    assert json.loads((ROOT / "manifests/group.schema.json").read_text()) == SCHEMA
    again = load_group(inline(g))  # what the CLI sends: the rollouts inline, no file needed
    assert again == g


def test_dependencies_name_members_have_no_cycle_and_wait_for_steps_when_promoting_together():
    text = group(
        f"""    - {{service: importer, release: "1.1", rollout: {ROLLOUT}, after: [resizer]}}
    - {{service: opens, release: "1.1", rollout: {ROLLOUT}, after: [importr]}}
    - {{service: resizer, release: "2.0", rollout: {ROLLOUT}, after: [{{member: importer, step: 1}}]}}"""
    )
    _, problems = check(text, "g.yaml")
    assert [p.render("g.yaml") for p in problems] == [
        "g.yaml:9: spec.members[1].after[0]: no member 'importr' (members: importer, opens, resizer)"
    ]
    _, problems = check(text.replace("importr", "importer"), "g.yaml")
    assert [p.render("g.yaml") for p in problems] == [
        "g.yaml:7: spec.members: the `after:` dependencies go round in a cycle: importer -> resizer -> importer"
    ]
    together = group(
        f"""    - {{service: importer, release: "1.1", rollout: {ROLLOUT}}}
    - {{service: opens, release: "1.1", rollout: {ROLLOUT}, after: [importer]}}""",
        promote="together",
    )
    _, problems = check(together, "g.yaml")
    assert [p.path for p in problems] == ["spec.members[1].after[0]"] and "wait for a step" in problems[0].message
    _, problems = check(together.replace("after: [importer]", "after: [{member: importer, step: 2}]"), "g.yaml")
    assert [p.render("g.yaml") for p in problems] == [
        "g.yaml:9: spec.members[1].after[0]: importer has 1 step(s), not 2"
    ]
    g = load_group(together.replace("after: [importer]", "after: [{member: importer, step: 1}]"))
    assert g.promote == Promote.TOGETHER and g.member("opens").after[0].step == 1


def test_a_members_rollout_errors_name_the_field_and_line_in_the_group_file():
    text = group(
        """    - service: importer
      release: "1.1"
      rollout:
        steps: [{weight: 10}, {weight: 5}]
        metrics: [{name: errors, kind: errors}]
    - {service: importer, release: "1.2", rollout: {steps: [{weight: 10}], metrics: [{name: e, kind: errors}]}}
    - {service: resizer, release: "2.0", rollout: {steps: [{weight: 10}], metrics: [{name: e, kind: errors}]}}"""
    )
    _, problems = check(text, "g.yaml")
    rendered = [p.render("g.yaml") for p in problems]
    assert "g.yaml:11: spec.members[0].rollout.steps[1].weight: must be above the previous step's 10" in rendered
    assert any(r.startswith("g.yaml:13: spec.members[1].name: 'importer' is used twice") for r in rendered)
    _, problems = check(text.replace('release: "2.0",', 'release: "2.0", policy: all,'), "g.yaml")
    assert [p.render("g.yaml") for p in problems] == ["g.yaml:14: spec.members[2].policy: unknown field"]
    _, problems = check("kind: [", "g.yaml")
    assert problems[0].message.startswith("not valid YAML")


def test_the_readme_group_example_is_valid():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Release groups", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    g, problems = check(example, "README", ROOT / "manifests/groups", shipped_catalog())
    assert problems == [] and g is not None
    assert [(a.member, a.step) for m in g.members for a in m.after] == [("importer", 1), ("opens", None)]


def test_aliases_share_members_rollouts_but_cannot_expand_past_the_limit(tmp_path):
    shared = group(
        f"""    - {{service: importer, release: "1.1", rollout: &same {ROLLOUT}}}
    - {{service: opens, release: "1.1", rollout: *same}}"""
    )
    g, problems = check(shared, "g.yaml")
    assert problems == [] and g is not None
    assert load_group(inline(g)) == g  # what the CLI sends (its anchors too) reads back the same
    levels = "  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 5)
    )  # in the metadata, whose fields the schema leaves free: a4 alone is 111,111 values
    _, problems = check(shared.replace("metadata: {name: g}\n", "metadata:\n  name: g\n" + levels), "g.yaml")
    assert [p.render("g.yaml") for p in problems] == [
        "g.yaml: (document): more than 100000 values once YAML aliases are expanded"
    ]


def test_a_member_spec_file_nested_too_deeply_is_a_problem_of_that_member_not_a_recursion_error(tmp_path):
    (tmp_path / "deep.yaml").write_text("spec: " + "[" * 50_000)
    text = group('    - {service: importer, release: "1.1", rollout: deep.yaml}')
    _, problems = check(text, "g.yaml", tmp_path)
    assert [p.render("g.yaml") for p in problems] == [
        f"g.yaml:8: {tmp_path / 'deep.yaml'}:1 (document): not valid YAML: exceeded maximum nesting depth"
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"spec: [1, 2]\n", "spec: a rollout file holds a `spec` mapping (see manifests/rollouts)"),
        (b"just a line of text\n", "spec: a rollout file holds a `spec` mapping (see manifests/rollouts)"),
        (b"spec: {steps: [{weight: 10}]}\n\xff\n", "(file): not UTF-8 text"),
        (b"spec:\n  steps: [{weight: .nan}]\n", "spec.steps[0].weight: must be a finite number"),
    ],
)
def test_a_member_spec_file_that_is_no_rollout_spec_is_a_problem_of_that_member(tmp_path, content, problem):
    """Each was a traceback from `canary lint` and `canary release --group` (a list, a plain string,
    bytes that are not UTF-8), or a NaN that reached the controller."""
    (tmp_path / "member.yaml").write_bytes(content)
    _, problems = check(group('    - {service: importer, release: "1.1", rollout: member.yaml}'), "g.yaml", tmp_path)
    rendered = [p.render("g.yaml") for p in problems]
    assert (
        len(rendered) == 1
        and rendered[0].startswith(f"g.yaml:8: {tmp_path / 'member.yaml'}:")
        and problem in rendered[0]
    )
