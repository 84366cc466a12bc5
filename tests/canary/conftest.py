"""Fixtures of the canary tests: ``exporter``, a real Prometheus scraping the router's counters
(tests.canary.prometheus_world)."""

from __future__ import annotations

from pathlib import Path

import pytest

from canary.local_monitoring import prometheus_server
from core.serve import serve_in_thread
from tests.canary.prometheus_world import Exporter
from tests.conftest import need_monitoring


@pytest.fixture
def exporter(tmp_path: Path):
    need_monitoring()
    exp = Exporter()
    with serve_in_thread(exp.app()) as url:
        exp.url = url
        token = tmp_path / "token"
        token.write_text("t0ken")
        with prometheus_server(tmp_path / "prometheus", controller_url=url, token_file=token) as prom:
            yield exp, prom
