"""Prometheus and Alertmanager as local processes, configured from ``manifests/`` (the shipped files,
with only addresses, token files and intervals replaced): for ``canary up --prometheus``, the tests
and the benchmarks.  The servers are Debian's ``prometheus`` and ``prometheus-alertmanager``
packages (``tests/infra/monitoring.sh`` installs them).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from canary.platforms.processes import free_port, wait_ready_url
from core.errors import DependencyUnavailable

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
INSTALL = "apt-get install prometheus prometheus-alertmanager (tests/infra/monitoring.sh does it)"


def binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise DependencyUnavailable(f"{names[0]} is not installed: {INSTALL}")


class LocalServer:
    """One server process that can be stopped and started again on the same port and data."""

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path) -> None:
        self.name, self.argv, self.port, self.log_path = name, argv, port, log_path
        self.url = f"http://127.0.0.1:{port}"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready_url(f"{self.url}/-/ready", self.popen, timeout_s=60)
        except DependencyUnavailable as exc:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise DependencyUnavailable(f"{self.name} did not start: {exc}\n{tail}") from None

    def stop(self) -> None:
        if self.popen is None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        self.popen = None


def prometheus_config(
    controller_url: str, token_file: Path | None, alertmanager_url: str | None, interval_s: float
) -> dict[str, Any]:
    """The shipped prometheus.yml, pointed at this controller and Alertmanager, at this interval;
    ``token_file`` holds the controller's read token (None: it has none, and answers loopback)."""
    base = MANIFESTS / "prometheus"
    config: dict[str, Any] = yaml.safe_load((base / "prometheus.yml").read_text())
    interval = f"{interval_s:g}s"
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = interval
    config["rule_files"] = [str(base / pattern) for pattern in config["rule_files"]]
    if alertmanager_url:
        config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [urlsplit(alertmanager_url).netloc]
    else:
        del config["alerting"]
    sd = config["scrape_configs"][0]["http_sd_configs"][0]
    sd["url"] = f"{controller_url}/api/targets"
    sd["refresh_interval"] = interval
    if token_file is None:
        del sd["authorization"]
    else:
        sd["authorization"]["credentials_file"] = str(token_file)
    return config


def alertmanager_config(controller_url: str, alert_token_file: Path) -> dict[str, Any]:
    """The shipped alertmanager.yml, its webhook pointed at this controller."""
    config: dict[str, Any] = yaml.safe_load((MANIFESTS / "alertmanager" / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{controller_url}/api/alerts"
            hook["http_config"]["authorization"]["credentials_file"] = str(alert_token_file)
    return config


@contextlib.contextmanager
def _running(name: str, workdir: Path, config: dict[str, Any], argv: list[str]) -> Iterator[LocalServer]:
    """Write ``config`` to WORKDIR/NAME.yml and run the server on a free port until the block ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{name}.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    server = LocalServer(
        name,
        [*argv, f"--config.file={path}", f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        port,
        workdir / f"{name}.log",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def prometheus_server(
    workdir: Path,
    *,
    controller_url: str,
    token_file: Path | None,
    alertmanager_url: str | None = None,
    interval_s: float = 1.0,
) -> contextlib.AbstractContextManager[LocalServer]:
    config = prometheus_config(controller_url, token_file, alertmanager_url, interval_s)
    return _running("prometheus", workdir, config, [binary("prometheus"), f"--storage.tsdb.path={workdir / 'data'}"])


def alertmanager_server(
    workdir: Path, *, controller_url: str, alert_token_file: Path
) -> contextlib.AbstractContextManager[LocalServer]:
    argv = [
        binary("prometheus-alertmanager", "alertmanager"),
        f"--storage.path={workdir / 'data'}",
        "--cluster.listen-address=",  # one Alertmanager: no gossip port
    ]
    return _running("alertmanager", workdir, alertmanager_config(controller_url, alert_token_file), argv)
