"""A service as the framework knows it: a :class:`ServiceEntry` per service, a :class:`Catalog` of them.

The platforms, the controller and the CLI read entries through these methods (how a release is
launched, its Deployments and image, its consumers and hooks, the rollout its defaults make); none
of them names a service.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from canary.catalog import templates
from canary.catalog.model import Consumer, Hook, KubeRun, Launch, LocalRun, Moment, RolloutDefaults
from canary.controller.spec import NO_STICKY, Metric, RolloutSpec, Step, load_spec
from canary.providers.base import ConservationCounters
from core.settings import Settings


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    stable: str  # the release that runs first, before any rollout
    releases: tuple[str, ...] | None  # None: any release (an image tag, say)
    source: Path  # the catalog file
    local: LocalRun | None = None
    kubernetes: KubeRun | None = None
    consumers: tuple[Consumer, ...] = ()
    hooks: tuple[Hook, ...] = ()
    defaults: RolloutDefaults = field(default_factory=RolloutDefaults)

    @property
    def catalog_dir(self) -> Path:
        return self.source.resolve().parent

    @property
    def runs_as(self) -> tuple[str, ...]:
        """The names a platform runs for each release: the service, then its consumers."""
        return (self.name, *(c.name for c in self.consumers))

    def knows_release(self, release: str) -> bool:
        return self.releases is None or release in self.releases

    def unknown_release(self, release: str) -> str | None:
        """Why ``release`` cannot be released (the entry does not list it), in words; None if it can."""
        if self.knows_release(release):
            return None
        return f"{self.name} has no release {release!r} (its catalog entry lists {', '.join(self.releases or ())})"

    def hooks_at(self, moment: Moment) -> tuple[Hook, ...]:
        return tuple(h for h in self.hooks if h.moment is moment)

    # -- local -------------------------------------------------------------------------------------
    def local_db_url(self, state_dir: Path) -> str | None:
        if self.local is None or self.local.database is None:
            return None
        return templates.render(self.local.database, {"service": self.name, "state_dir": str(state_dir)})

    def _values(
        self, release: str, port: int, state_dir: Path, db_url: str | None, track: str, route_table: str
    ) -> dict[str, str]:
        db = db_url if db_url is not None else self.local_db_url(state_dir)
        values = {
            "service": self.name,
            "release": release,
            "port": str(port),
            "state_dir": str(state_dir),
            "track": track,
            "route_table": route_table,
            "catalog_dir": str(self.catalog_dir),
        }
        if db is not None:
            values["db_url"] = db
        return values

    def local_launch(
        self,
        release: str,
        *,
        port: int,
        state_dir: Path,
        settings: Settings,
        consumer: Consumer | None = None,
        track: str = "stable",
        route_table: str = "",
        db_url: str | None = None,
    ) -> Launch:
        """The process that runs ``release`` on this machine, or with ``consumer`` that consumer's
        process beside it (it shares the service's database: ``db_url`` defaults to the entry's
        ``local.database``)."""
        if consumer is None:
            if self.local is None:
                raise LookupError(f"{self.name} has no local section: it runs only on Kubernetes")
            process = self.local.process
        elif consumer.local is None:
            raise LookupError(f"consumer {consumer.name} of {self.name} has no local command")
        else:
            process = consumer.local
        return process.render(self._values(release, port, state_dir, db_url, track, route_table), settings)

    def local_command(self, release: str, port: int, state_dir: Path, db_url: str | None = None) -> list[str]:
        return list(self.local_launch(release, port=port, state_dir=state_dir, settings=Settings(), db_url=db_url).argv)

    # -- Kubernetes --------------------------------------------------------------------------------
    def _kube(self) -> KubeRun:
        if self.kubernetes is None:
            raise LookupError(f"{self.name} has no kubernetes section: it runs only locally")
        return self.kubernetes

    def kube_deployment(self, track: str) -> str:
        k = self._kube()
        return k.deployments.get(track) or templates.render(k.deployment, {"service": self.name, "track": track})

    def kube_consumer_deployment(self, consumer: Consumer, track: str) -> str:
        values = {"service": self.name, "consumer": consumer.name, "track": track}
        return templates.render(consumer.deployment, values)

    def kube_service(self, track: str) -> str:
        return templates.render(self._kube().service, {"service": self.name, "track": track})

    def kube_image(self, release: str, default_image: str) -> str:
        """``IMAGE:TAG`` for ``release``; the image is the platform's setting unless the entry names one."""
        k = self._kube()
        tag = k.tags.get(release) or templates.render(k.tag, {"release": release})
        return f"{k.image or default_image}:{tag}"

    # -- rollouts ----------------------------------------------------------------------------------
    def rollout_document(self, canary: str, stable: str | None = None) -> dict[str, Any]:
        """The rollout spec these defaults make, as a document (``canary.controller.spec``'s shape):
        a spec file given with ``canary release`` is merged over its ``spec`` before it is checked."""
        d = self.defaults
        spec: dict[str, Any] = {
            "service": self.name,
            "stable": stable or self.stable,
            "canary": canary,
            "steps": [_set(s) for s in d.steps],
            "metrics": [_set(m) for m in d.metrics],
            "failover": d.failover,
            "sticky": dict(d.sticky) if d.sticky else NO_STICKY,
            "alerts": list(d.alerts),
            "watch": {"seconds": d.watch_seconds, "holdback": d.watch_holdback},
        }
        if d.on_inconclusive is not None:
            spec["on_inconclusive"] = d.on_inconclusive
        if d.mirror is not None:
            spec["mirror"] = dict(d.mirror)
        return {
            "apiVersion": "releasewarden/v1",
            "kind": "Rollout",
            "metadata": {"name": f"{self.name}-{canary}"},
            "spec": spec,
        }

    def rollout_spec(self, canary: str, stable: str | None = None) -> RolloutSpec:
        """The rollout of ``canary`` from this entry's defaults (what ``canary release`` does without
        a spec file): its document, read by the rollout spec's own loader."""
        text = yaml.safe_dump(self.rollout_document(canary, stable), sort_keys=False)
        return load_spec(text, f"catalog entry {self.name}")


def _set(part: Step | Metric) -> dict[str, Any]:
    """A step's or metric's fields that are set (a spec leaves the others out)."""
    return {k: v for k, v in dataclasses.asdict(part).items() if v is not None}


@dataclass(frozen=True)
class Catalog:
    entries: Mapping[str, ServiceEntry]

    def __getitem__(self, name: str) -> ServiceEntry:
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(sorted(self.entries)) or "none"
            raise KeyError(f"unknown service {name!r} (the catalog has: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.entries))

    def launch(
        self,
        name: str,
        release: str,
        *,
        port: int,
        state_dir: Path,
        settings: Settings,
        track: str = "stable",
        route_table: str = "",
        db_url: str | None = None,
    ) -> Launch:
        """The local process of ``name`` (a service, or a consumer by its own name) at ``release``."""
        owned = self.owner(name)
        entry, consumer = owned if owned is not None else (self[name], None)
        return entry.local_launch(
            release,
            port=port,
            state_dir=state_dir,
            settings=settings,
            consumer=consumer,
            track=track,
            route_table=route_table,
            db_url=db_url,
        )

    def entry_of(self, name: str) -> ServiceEntry:
        """The entry that runs ``name``: the service itself, or the one a consumer belongs to."""
        owned = self.owner(name)
        return owned[0] if owned is not None else self[name]

    def conservation(self) -> dict[str, ConservationCounters]:
        """Per service, the counters its conservation metric reads (its consumer's, where one has them):
        what the metric providers are made with."""
        return {
            name: c.conservation for name, e in self.entries.items() for c in e.consumers if c.conservation is not None
        }

    def consumers_of(self, service: str) -> tuple[str, ...]:
        """The names of the queue consumers that run beside each release of ``service``."""
        return tuple(c.name for c in self.entries[service].consumers) if service in self.entries else ()

    def owner(self, consumer_name: str) -> tuple[ServiceEntry, Consumer] | None:
        """The entry a consumer belongs to, by the consumer's name (platforms run consumers by name)."""
        for entry in self.entries.values():
            for c in entry.consumers:
                if c.name == consumer_name:
                    return entry, c
        return None
