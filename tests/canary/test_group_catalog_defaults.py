"""A group member without its own rollout takes its catalog entry's default rollout, not a file in
``manifests/rollouts/``: checked on the spec, through ``canary lint``, and through ``canary release
--group`` against a real controller running a service the shipped manifests have never heard of."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest
import yaml

from benchmarks.up_stack import until
from canary import cli
from canary.catalog import load_catalog
from canary.controller.group_spec import check
from canary.stack import admin_token, local_stack
from tests.canary.catalog.test_onboarding import HERE, PLAIN
from tests.conftest import wait_for_rollout
from tests.test_group_end_to_end import member

ROOT = Path(__file__).resolve().parents[2]
# the plain service's entry (tests/canary/catalog/test_onboarding.py): one step at 50 %, errors only
ENTRY_STEPS = [{"weight": 50, "min_requests": 40, "min_seconds": 1, "max_seconds": 90}]
GROUP = """apiVersion: releasewarden/v1
kind: Group
metadata: {name: hello-group}
spec:
  members:
    - {service: hello, release: "2"}
"""


def catalog_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "catalog"
    folder.mkdir()
    shutil.copy(HERE / "plain_service.py", folder / "app.py")
    (folder / "hello.yaml").write_text(PLAIN)
    return folder


def test_a_member_without_a_rollout_takes_its_catalog_entrys_defaults(tmp_path):
    assert not (ROOT / "manifests/rollouts/hello.yaml").exists()
    catalog = load_catalog([catalog_dir(tmp_path)])
    g, problems = check(GROUP, "g.yaml", tmp_path, catalog)
    assert problems == [] and g is not None
    rollout = g.member("hello").rollout
    assert rollout["steps"] == ENTRY_STEPS
    assert [m["name"] for m in rollout["metrics"]] == ["errors"] and rollout["watch"]["seconds"] == 2
    assert "service" not in rollout and "canary" not in rollout  # the member says those
    spec = yaml.safe_load(g.member("hello").rollout_text("hello-group", "1"))["spec"]
    assert (spec["service"], spec["stable"], spec["canary"], spec["steps"]) == ("hello", "1", "2", ENTRY_STEPS)

    two = GROUP + '    - {service: nope, release: "1"}\n'
    _, problems = check(two, "g.yaml", tmp_path, catalog)
    assert [p.render("g.yaml") for p in problems] == [
        "g.yaml:7: spec.members[1].service: no service 'nope' in the catalog (it has: hello): "
        "give the member a rollout, or the catalog an entry"
    ]
    # a release the entry does not list is named at lint time, as `canary release --group` would
    _, problems = check(GROUP.replace('release: "2"', 'release: "9"'), "g.yaml", tmp_path, catalog)
    assert [p.render("g.yaml") for p in problems] == [
        "g.yaml:6: spec.members[0].release: hello has no release '9' (its catalog entry lists 1, 2, 3)"
    ]
    _, problems = check(GROUP, "group")  # as the API takes groups: rollouts inline, no catalog there
    assert [p.path for p in problems] == ["spec.members[0].rollout"] and "required here" in problems[0].message


def test_lint_reads_the_members_defaults_from_the_catalog_it_is_given(tmp_path, capsys):
    catalog = catalog_dir(tmp_path)
    path = tmp_path / "group.yaml"
    path.write_text(GROUP)
    assert cli.main(["lint", "--catalog", str(catalog), str(path)]) == 0
    assert f"{path}: ok" in capsys.readouterr().out
    path.write_text(GROUP.replace("kind: Group", "kind: group"))  # misspelt: named, not linted as a rollout
    assert cli.main(["lint", "--catalog", str(catalog), str(path)]) == 1
    assert capsys.readouterr().out.splitlines()[1:] == [
        f"{path}: kind: must be 'Group' (a document with spec.members is a group), not 'group'"
    ]
    path.write_text(GROUP)
    assert cli.main(["lint", str(path)]) == 1  # the shipped catalog has no hello
    assert "spec.members[0].service: no service 'hello' in the catalog (it has: importer, opens, resizer)" in (
        capsys.readouterr().out
    )


@pytest.mark.timeout(300)
def test_canary_release_group_sends_the_catalog_defaults_to_a_real_controller(tmp_path, capsys):
    catalog = catalog_dir(tmp_path)
    path = tmp_path / "group.yaml"
    path.write_text(GROUP)
    state = tmp_path / "state"
    token = admin_token(state)
    auth = {"Authorization": f"Bearer {token}"}
    with local_stack(state, None, token, catalog=str(catalog)) as (controller, _router, _):
        args = ["--controller", controller, "--state-dir", str(state)]
        assert cli.main(["release", "--group", str(path), "--catalog", str(catalog), *args]) == 0
        printed = re.search(r"^group (\S+) \(hello-group", capsys.readouterr().out, re.M)
        assert printed is not None

        def rollout() -> dict | None:
            g = httpx.get(f"{controller}/api/groups/{printed.group(1)}", headers=auth, timeout=10).json()
            found: dict | None = member(g, "hello").get("rollout")
            return found

        until(rollout, 30, step=0.2)
        rid = rollout()["id"]  # type: ignore[index]
        r = wait_for_rollout(controller, rid, lambda r: r["phase"] == "progressing", auth, 60)
        assert (r["steps"], r["weight"]) == (1, 50)  # the entry's one step at 50 %, not a shipped spec file
        assert cli.main(["abort", "hello-group", *args]) == 0
        r = wait_for_rollout(controller, rid, lambda r: r["phase"] == "rolled_back", auth, 60)
        assert r["decided_by"] == "person"
