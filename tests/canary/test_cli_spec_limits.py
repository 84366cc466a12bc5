"""`canary lint` and `canary release --spec` refuse a spec whose YAML aliases expand past the limit
(the audit's alias bomb: 600 bytes that stand for a billion values) in words, at once: lint in a
process whose memory is bounded (without the guard it grew to gigabytes), release through a real
controller, which refuses it before anything walks it."""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from canary import cli
from canary.stack import admin_token, local_stack
from tests.canary.catalog.test_onboarding import PLAIN

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REFUSED = "(document): more than 100000 values once YAML aliases are expanded"


def with_aliases(spec: str, levels: int) -> str:
    """``spec`` with, in its ``metadata`` (whose fields the schema leaves free), aliases ten to a
    level: 10**levels values."""
    fields = "  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, levels)
    )
    return spec.replace("metadata:\n", "metadata:\n" + fields, 1)


def _at_most_1_gib() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def test_canary_lint_refuses_the_alias_bomb_in_words(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(with_aliases((ROOT / "manifests/rollouts/resizer.yaml").read_text(), 9))
    assert len(bomb.read_bytes()) < 2000
    out = subprocess.run(
        [sys.executable, "-m", "canary.cli", "lint", str(bomb)],
        capture_output=True,
        text=True,
        timeout=120,  # a deadline, not a measure: without the guard it ran out of memory, or hung
        preexec_fn=_at_most_1_gib,
        cwd=ROOT,
    )
    assert (out.returncode, out.stdout.strip(), out.stderr) == (1, f"{bomb}: {REFUSED}", "")


def test_canary_release_and_simulate_refuse_such_a_spec_and_deep_nesting_in_words(tmp_path, capsys):
    """Refused by the command itself, before anything reaches the controller (which refuses them
    too: tests/canary/test_controller_api.py)."""
    shutil.copy(HERE / "catalog" / "plain_service.py", tmp_path / "app.py")
    catalog = tmp_path / "hello.yaml"
    catalog.write_text(PLAIN)
    state = tmp_path / "state"
    token = admin_token(state)
    bomb = with_aliases("apiVersion: releasewarden/v1\nkind: Rollout\nmetadata:\n  name: hello-2\n", 6)
    deep = "spec: " + "[" * 50_000 + "]" * 50_000 + "\n"
    with local_stack(state, None, token, catalog=str(catalog)) as (controller, _router, _app):
        expanded = REFUSED.removeprefix("(document): ")
        for name, text, words in (("bomb", bomb, expanded), ("deep", deep, "not valid YAML")):
            spec = tmp_path / f"{name}.yaml"
            spec.write_text(text)
            argv = ["release", "hello", "--to", "2", "--spec", str(spec), "--catalog", str(catalog)]
            assert cli.main([*argv, "--controller", controller, "--state-dir", str(state)]) == 1
            said = capsys.readouterr().err
            assert said.startswith(f"error: {spec}") and f"(document): {words}" in said, said
            assert cli.main(["lint", str(spec)]) == 1
            assert words in capsys.readouterr().out
            assert cli.main(["simulate", "--scenario", str(spec)]) == 2
            assert f"(document): {words}" in capsys.readouterr().err
        listed = httpx.get(f"{controller}/api/rollouts", headers={"Authorization": f"Bearer {token}"}).json()
        assert listed == {"rollouts": []}
