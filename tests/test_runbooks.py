"""The runbooks a person follows at 3 a.m.: every alert links an existing page, every page says what
it means, how to confirm, what to do and how to know it worked, and every `canary` command on them
is a real command of the CLI (parsed by the CLI's own parser, and its ``--help`` run)."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from canary.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
RUNBOOKS = ROOT / "runbooks"
PAGES = sorted(RUNBOOKS.rglob("*.md"))
PROCEDURES = (
    "start-a-rollout",
    "promote-by-hand",
    "abort",
    "recover-a-stuck-rollout",
    "metrics-source-down",
    "replay-opens-after-a-rollback",
    "resume-after-a-controller-crash",
    "run-on-kubernetes",
)


def alert_rules() -> list[dict]:
    rules = []
    for path in sorted((ROOT / "manifests/prometheus/rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [r for r in group["rules"] if "alert" in r]
    return rules


def commands() -> list[tuple[str, str]]:
    """(page, command) for every `canary ...` in a shell block or an inline code span."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in re.findall(r"```sh\n(.*?)```", text, re.S):
            found += [(page.name, line.strip()) for line in block.splitlines() if line.strip().startswith("canary ")]
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        found += [(page.name, span) for span in re.findall(r"`(canary [^`]+)`", prose)]
    return found


def test_every_alert_links_its_runbook_page_which_exists():
    rules = alert_rules()
    assert len(rules) == 7
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        page = ROOT / url
        assert page.is_file(), (rule["alert"], url)
        assert page.read_text().startswith(f"# {rule['alert']}\n"), url
        assert rule["labels"]["severity"] in ("critical", "warning") and rule["annotations"]["summary"]


def test_every_procedure_has_its_page_and_the_index_links_every_page():
    index = (RUNBOOKS / "README.md").read_text()
    for name in PROCEDURES:
        assert (RUNBOOKS / "procedures" / f"{name}.md").is_file(), name
    for page in PAGES:
        if page.name != "README.md":
            assert f"({page.relative_to(RUNBOOKS)})" in index, page
    for link in re.findall(r"\]\(([^)#]+\.md)\)", "".join(p.read_text() for p in PAGES)):
        assert any((p.parent / link).resolve().is_file() for p in PAGES), link


@pytest.mark.parametrize("page", [p for p in PAGES if p.name != "README.md"], ids=lambda p: p.stem)
def test_every_page_says_what_how_to_confirm_what_to_do_and_how_to_know_it_worked(page):
    headings = re.findall(r"^## (.+)$", page.read_text(), re.M)
    assert headings[0] in ("What it means", "When"), headings
    assert any(h.startswith("Do") for h in headings), headings
    assert headings[-1] == "It worked when", headings
    assert "```sh" in page.read_text()  # the exact commands, not a description of them


def test_every_canary_command_in_a_runbook_is_a_real_command():
    found = commands()
    assert len(found) > 20
    parser = build_parser()
    for page, command in found:
        argv = shlex.split(command)[1:]
        with contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"{page}: `{command}` is not a command of the CLI: {err.getvalue().strip()}")
    for sub in sorted({shlex.split(c)[1] for _, c in found}):
        out = subprocess.run([sys.executable, "-m", "canary.cli", sub, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.startswith(f"usage: canary {sub}"), (sub, out.stderr)
