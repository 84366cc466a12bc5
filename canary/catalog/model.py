"""The parts of a catalog entry: how a release runs locally (:class:`LocalRun`) and on Kubernetes
(:class:`KubeRun`), the queue consumers beside each release (:class:`Consumer`), the hooks run at a
rollout's named moments (:class:`Hook`), and the defaults of its rollouts.  ``catalog.entry``
puts them together in a ``ServiceEntry``; the loader (``catalog.loader``) builds them from YAML
and has checked every template, so rendering here only fills in values.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canary.catalog import templates
from canary.controller.spec import Metric, Step
from canary.controller.spec_schema import DEFAULT_STICKY
from canary.providers.base import ConservationCounters
from core.settings import Settings

PYTHON_NAMES = ("python", "python3")  # run with the interpreter running the framework


class Moment(enum.StrEnum):
    BEFORE_TRAFFIC = "before_traffic"  # the canary is ready, no traffic yet (nor mirrored)
    AFTER_ROLLBACK = "after_rollback"  # traffic is back on stable
    AFTER_PROMOTION = "after_promotion"  # the canary is the new stable


class OnFailure(enum.StrEnum):
    HOLD = "hold"  # the rollout waits for a person
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Launch:
    """One local process, ready to start: its argv, its own environment (added to the platform's),
    where it runs, and how the platform knows it is up."""

    argv: tuple[str, ...]
    environment: Mapping[str, str]
    working_dir: Path | None
    health_path: str
    ready_path: str
    ready_timeout_s: float


@dataclass(frozen=True)
class ProcessTemplate:
    """How a local process starts: one command template for every release, or one per release."""

    command: tuple[str, ...] | None = None
    commands: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    health_path: str = "/healthz"
    ready_path: str = "/healthz"
    ready_timeout_s: float = 30.0
    metrics_path: str | None = None  # Prometheus text exposition, if the process has one

    def argv_template(self, release: str) -> tuple[str, ...]:
        if release in self.commands:
            return self.commands[release]
        if self.command is None:
            raise KeyError(f"no command for release {release!r} (known: {', '.join(self.commands)})")
        return self.command

    def render(self, values: Mapping[str, str], settings: Settings) -> Launch:
        argv = [templates.render(a, values) for a in self.argv_template(values["release"])]
        if argv and argv[0] in PYTHON_NAMES:
            argv[0] = sys.executable
        env = {k: templates.render(v, values, settings) for k, v in self.environment.items()}
        cwd = Path(templates.render(self.working_dir, values)) if self.working_dir else None
        return Launch(tuple(argv), env, cwd, self.health_path, self.ready_path, self.ready_timeout_s)


@dataclass(frozen=True)
class LocalRun:
    process: ProcessTemplate
    database: str | None = None  # the release's database URL, a template of {state_dir} and {service}


@dataclass(frozen=True)
class KubeRun:
    """Two Deployments (or more tracks) per service; a release is an image tag."""

    deployment: str = "{service}-{track}"  # name template, unless ``deployments`` names a track
    deployments: Mapping[str, str] = field(default_factory=dict)
    image: str | None = None  # None: the platform's image setting
    tag: str = "{release}"
    tags: Mapping[str, str] = field(default_factory=dict)  # release -> tag, where they differ
    port: int = 8000
    service: str = "{service}-{track}"  # the Service carrying a track's traffic
    httproute: str | None = None  # the Gateway API HTTPRoute whose backend weights split traffic


@dataclass(frozen=True)
class Consumer:
    """A queue consumer beside each release (its own process or Deployment), taking the release's
    share of the queue from the route table of the service it belongs to."""

    name: str  # unique in the catalog: the platform runs it as a service of its own
    local: ProcessTemplate | None = None
    deployment: str = "{consumer}-{track}"
    conservation: ConservationCounters | None = None  # what the service's conservation metric reads


@dataclass(frozen=True)
class HttpCall:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None  # a JSON body, its strings templates
    token_setting: str | None = None  # sent as ``Authorization: Bearer <that setting>``


@dataclass(frozen=True)
class CommandCall:
    command: tuple[str, ...]
    environment: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None


@dataclass(frozen=True)
class Hook:
    name: str
    moment: Moment
    action: HttpCall | CommandCall
    timeout_s: float = 10.0
    on_failure: OnFailure = OnFailure.HOLD


@dataclass(frozen=True)
class RolloutDefaults:
    """The rollout spec's fields other than service and releases (``canary release`` without a spec)."""

    steps: tuple[Step, ...] = (Step(5), Step(25), Step(50))
    metrics: tuple[Metric, ...] = (Metric("errors", "errors"),)
    mirror: Mapping[str, Any] | None = None
    failover: bool = True
    sticky: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_STICKY))  # {}: sticky: none
    alerts: tuple[str, ...] = ()
    watch_seconds: float = 600.0
    watch_holdback: float = 0.0  # percent the old release keeps during the watch
    on_inconclusive: str | None = None  # None: the rollout spec's own default
