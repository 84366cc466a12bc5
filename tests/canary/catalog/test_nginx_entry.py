"""A real server no one here wrote, from a catalog entry alone: nginx from Debian, two
configurations as two releases (nginx/shop.yaml); release 2 answers 500 on /checkout."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from canary.catalog import lint_catalog, load_catalog
from core.settings import Settings
from tests.canary.catalog.running import free_port, running

ENTRY = Path(__file__).resolve().parent / "nginx" / "shop.yaml"


def test_the_nginx_entry_lints_clean():
    assert lint_catalog([ENTRY]) == []


def test_nginx_releases_run_from_the_entry(tmp_path):
    if not shutil.which("nginx"):
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed (Debian package nginx)")
        pytest.skip("nginx is not installed (Debian package nginx)")
    shop = load_catalog([ENTRY])["shop"]
    answers = {}
    for release in ("1", "2"):
        port = free_port()
        launch = shop.local_launch(release, port=port, state_dir=tmp_path, settings=Settings())
        with running(launch, port, tmp_path / f"{release}.log") as url:
            answers[release] = (httpx.get(f"{url}/checkout").status_code, httpx.get(f"{url}/").text)
    assert answers == {"1": (200, "shop release 1\n"), "2": (500, "shop release 2\n")}
