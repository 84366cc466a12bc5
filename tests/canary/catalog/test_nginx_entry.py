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


@pytest.mark.anyio
async def test_a_restarted_controller_adopts_nginx_started_through_a_shell_that_execs_it(tmp_path):
    """The entry's command is ``sh -c '... exec nginx ...'``: once exec'd, nginx's command line is
    not the one started (nginx even rewrites its title), so the record names it by pid and start
    time; a new controller takes the same process over instead of starting another."""
    if not shutil.which("nginx"):
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed (Debian package nginx)")
        pytest.skip("nginx is not installed (Debian package nginx)")
    from canary.platforms.local import LocalPlatform
    from canary.platforms.processes import pid_alive

    catalog = load_catalog([ENTRY])
    first = LocalPlatform(tmp_path, catalog)
    try:
        started = await first.start("shop", "1", "stable")
        pid = first.entries[("shop", "1")].proc.pid
    finally:
        first._supervisor.cancel()  # the controller dies: nothing is stopped
    second = LocalPlatform(tmp_path, catalog)
    try:
        again = await second.start("shop", "1", "stable")
        assert [(i.release, i.url) for i in second.adopted] == [("1", started.url)]
        assert again.url == started.url and second.entries[("shop", "1")].proc.pid == pid
        assert httpx.get(f"{again.url}/").text == "shop release 1\n"
    finally:
        await second.close()
    assert not pid_alive(pid)  # a stop is a stop: the adopted nginx ends too
