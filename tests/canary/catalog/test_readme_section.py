"""README.md's "Release your own service": its example entry runs the example service, and its error
example is what lint prints."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from canary.catalog import lint_catalog, load_catalog

HERE = Path(__file__).resolve().parent
README = (HERE.parents[2] / "README.md").read_text()
SECTION = README[README.index("## Release your own service") : README.index("## Prometheus and Alertmanager")]


def _entry() -> str:
    block = re.search(r"   ```yaml\n(.*?)   ```", SECTION, re.S)
    assert block is not None
    return "".join(line[3:] + "\n" for line in block.group(1).splitlines())


def test_the_example_entry_runs_the_example_service(tmp_path):
    shutil.copy(HERE / "plain_service.py", tmp_path / "app.py")
    (tmp_path / "shop.yaml").write_text(_entry())
    entry = load_catalog([tmp_path / "shop.yaml"])["shop"]
    assert entry.local_command("2", 8123, tmp_path)[1:] == [f"{tmp_path}/app.py", "--release", "2", "--port", "8123"]


def test_the_error_example_is_what_lint_prints(tmp_path):
    wrong = _entry().replace('"{port}"', '"{prot}"').replace('stable: "1"', 'stable: "3"')
    (tmp_path / "shop.yaml").write_text(wrong)
    printed = [str(p).replace(f"{tmp_path}/", "") for p in lint_catalog([tmp_path / "shop.yaml"])]
    shown = re.search(r"all the rest at once.*?```\n(.*?)```", SECTION, re.S)
    assert shown is not None and printed == shown.group(1).splitlines()
