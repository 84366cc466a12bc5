"""Simulated traffic for comparing rollback policies: scenarios and their per-second counts.

A scenario (usually a YAML file, see ``benchmarks/scenarios/``) describes the traffic: total rate,
the canary's share (constant or steps), the bad-event rates of both tracks, when the canary's
fault begins, and bursts where a shared dependency fails both tracks together.  ``traffic`` draws
per-second counts for many runs at once (Poisson arrivals, binomial split and failures).

Optional fields (all documented in ``benchmarks/scenarios/README.md``):

- ``customers: {count, traffic_spread, error_spread, history}``: sticky routing by customer.
  Request rates spread lognormally (sigma ``traffic_spread``), bad-rate multipliers have mean 1
  and coefficient of variation ``error_spread``, the same on both releases; each run draws its own
  customers and its own salt (buckets); ``history`` seconds (default 600) of stable-only traffic
  are counted per bucket group before the canary takes traffic (open loop; with ``rollout:`` the
  controller has only its pending phase, which the spec's ``sticky.history_seconds`` may extend).
- ``restarts: [seconds, ...]``: the controller restarts; the judge's state goes through
  ``to_dict``/JSON/``from_dict`` there.
- ``metrics: N``: N independent metrics with the scenario's rates, judged together.
- ``rollout: {spec: FILE} | {steps, metrics, on_inconclusive, alpha}``: closed loop, the canary's
  share follows the state machine (steps' weights, bakes, ``max_seconds``); ``canary_share`` is
  then ignored.
- ``latency: {stable: {median, sigma}, canary: {median, sigma}, threshold_ms}``: lognormal
  per-request latency (ms) per track; adds a latency metric judged on the whole histogram.
- ``faulty_metrics: [NAME, ...]``: with a ``rollout:`` whose spec has several metrics, the ones
  the canary's fault shows in (the others have the baseline rate on both tracks); default all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


class ScenarioError(ValueError):
    """A scenario field that cannot be used; the message names the field."""


class SpecProblem(Protocol):
    """What a rollout spec check refuses: the field, as ``canary lint`` names it (``spec.steps[0].weight``)."""

    @property
    def path(self) -> str: ...

    @property
    def message(self) -> str: ...


CheckSpec = Callable[[dict[str, Any]], Sequence[SpecProblem]]
"""A rollout's ``spec:`` mapping -> what the controller's spec check (``canary lint``) refuses in it.
The command line hands in ``canary.controller.spec.check``, which this pure module cannot import."""

# a scenario's rollout is simulated: it releases no service, and may set the rollout's alpha itself
SIMULATED_RELEASE = {"service": "simulated", "stable": "stable", "canary": "canary"}
SIMULATION_ONLY = ("alpha",)


FIELDS = (
    "name",
    "duration",
    "rate",
    "canary_share",
    "baseline_error_rate",
    "canary_error_rate",
    "onset",
    "bursts",
    "runs",
    "seed",
    "objective",
    "customers",
    "restarts",
    "metrics",
    "rollout",
    "latency",
    "faulty_metrics",
)


@dataclass(frozen=True)
class Burst:
    start: float
    duration: float
    error_rate: float


@dataclass(frozen=True)
class Customers:
    count: int = 1000
    traffic_spread: float = 1.0
    error_spread: float = 1.0
    history: float = 600.0


@dataclass(frozen=True)
class Latency:
    stable_median: float
    stable_sigma: float
    canary_median: float
    canary_sigma: float
    threshold_ms: float = 1000.0


@dataclass(frozen=True)
class Scenario:
    name: str
    duration: int
    rate: float
    canary_share: tuple[tuple[float, float], ...]  # (from second, share) steps
    baseline_error_rate: float
    canary_error_rate: float
    onset: float = 0.0
    bursts: tuple[Burst, ...] = ()
    runs: int = 400
    seed: int = 1
    objective: float | None = None
    customers: Customers | None = None
    restarts: tuple[float, ...] = ()
    metrics: int = 1
    rollout: dict[str, Any] | None = None  # the rollout's spec mapping (closed loop)
    latency: Latency | None = None
    faulty_metrics: tuple[str, ...] | None = None  # None: the fault shows in every metric

    def canary_rate_for(self, metric: str) -> float:
        """The canary's bad rate in ``metric`` (before any burst)."""
        shows = self.faulty_metrics is None or metric in self.faulty_metrics
        return self.canary_error_rate if shows else self.baseline_error_rate

    @property
    def healthy(self) -> bool:
        """The canary is no worse than stable: any rollback is a false one."""
        slower = self.latency is not None and self.latency.canary_median > self.latency.stable_median
        return self.canary_error_rate <= self.baseline_error_rate and not slower

    def share_at(self, seconds: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        share = np.zeros_like(seconds)
        for start, value in self.canary_share:
            share = np.where(seconds >= start, value, share)
        return share

    @classmethod
    def from_dict(
        cls, data: Any, read_spec: Callable[[str], Any] | None = None, check_spec: CheckSpec | None = None
    ) -> Scenario:
        """``read_spec`` reads ``rollout.spec`` (a path) into its mapping; the caller does the I/O.
        With ``check_spec``, ``rollout:`` (inline, or the spec file with its overrides) must also pass
        the controller's spec check, as ``canary lint`` runs it; without, only what the judge reads
        is checked (``JudgeSpec``).

        Every mapping refuses a field it does not know, and a count (``duration``, ``runs``,
        ``seed``, ``metrics``, ``customers.count``) is a whole number: errors name the field."""
        if not isinstance(data, dict):
            raise ScenarioError("a scenario is a mapping of fields (name, duration, rate, ...)")
        _known_fields(data, FIELDS)
        duration = _integer(data, "duration", 1, 7 * 86400)
        share_raw = data.get("canary_share", 0.05)
        if isinstance(share_raw, list):
            steps = []
            for i, step in enumerate(share_raw):
                if not (isinstance(step, list | tuple) and len(step) == 2):
                    raise ScenarioError(f"canary_share[{i}]: must be [second, share]")
                steps.append(
                    (
                        _check(f"canary_share[{i}][0]", step[0], 0, duration),
                        _check(f"canary_share[{i}][1]", step[1], 0, 1),
                    )
                )
            share = tuple(sorted(steps))
        else:
            share = ((0.0, _check("canary_share", share_raw, 0, 1)),)
        bursts = []
        for i, b in enumerate(data.get("bursts") or []):
            if not isinstance(b, dict):
                raise ScenarioError(f"bursts[{i}]: must be a mapping with start, duration, error_rate")
            _known_fields(b, ("start", "duration", "error_rate"), f"bursts[{i}].")
            bursts.append(
                Burst(
                    _number(b, "start", 0, duration, f"bursts[{i}]."),
                    _number(b, "duration", 0, duration, f"bursts[{i}]."),
                    _number(b, "error_rate", 0, 1, f"bursts[{i}]."),
                )
            )
        objective = data.get("objective")
        rollout = _rollout(data.get("rollout"), read_spec, check_spec)
        customers = _customers(data.get("customers"))
        if rollout is not None and customers is not None:
            if rollout.get("sticky") == "none":  # the world routes by customer: the spec must say so
                raise ScenarioError(
                    "rollout.sticky: none routes each request by itself, and customers: routes by customer; "
                    "leave out one of them"
                )
            if "history" in data["customers"]:
                raise ScenarioError(
                    "customers.history: open loop only; with rollout: the history is what the spec's "
                    "sticky.history_seconds waits for in pending"
                )
            customers = dataclasses.replace(customers, history=0.0)
        return cls(
            name=str(data.get("name", "scenario")),
            duration=duration,
            rate=_number(data, "rate", 0.001, 1e6),
            canary_share=share,
            baseline_error_rate=_number(data, "baseline_error_rate", 0, 1),
            canary_error_rate=_number(data, "canary_error_rate", 0, 1),
            onset=_number(data, "onset", 0, duration, default=0.0),
            bursts=tuple(bursts),
            runs=_integer(data, "runs", 1, 1_000_000, default=400),
            seed=_integer(data, "seed", 0, 2**32 - 1, default=1),
            objective=None if objective is None else _check("objective", objective, 0, 1),
            customers=customers,
            restarts=tuple(_check(f"restarts[{i}]", v, 0, duration) for i, v in enumerate(_list(data, "restarts"))),
            metrics=_integer(data, "metrics", 1, 20, default=1),
            rollout=rollout,
            latency=_latency(data.get("latency")),
            faulty_metrics=_faulty_metrics(data.get("faulty_metrics"), rollout),
        )


def _list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise ScenarioError(f"{key}: must be a list")
    return value


def _customers(raw: Any) -> Customers | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ScenarioError("customers: must be a mapping with count, traffic_spread, error_spread")
    _known_fields(raw, ("count", "traffic_spread", "error_spread", "history"), "customers.")
    return Customers(
        count=_integer(raw, "count", 1, 1_000_000, "customers.", 1000),
        traffic_spread=_number(raw, "traffic_spread", 0, 5, "customers.", 1.0),
        error_spread=_number(raw, "error_spread", 0, 20, "customers.", 1.0),
        history=_number(raw, "history", 0, 86400, "customers.", 600.0),
    )


def _faulty_metrics(raw: Any, rollout: dict[str, Any] | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    names = [str(m["name"]) for m in (rollout or {}).get("metrics") or [] if isinstance(m, dict) and "name" in m]
    if not names:
        raise ScenarioError("faulty_metrics: needs a rollout: whose spec names its metrics")
    if not isinstance(raw, list) or not raw or not all(isinstance(v, str) for v in raw):
        raise ScenarioError("faulty_metrics: must be a non-empty list of metric names")
    unknown = [v for v in raw if v not in names]
    if unknown:
        raise ScenarioError(f"faulty_metrics: {unknown[0]!r} is not a metric of the rollout ({', '.join(names)})")
    return tuple(raw)


def _latency(raw: Any) -> Latency | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("stable"), dict) or not isinstance(raw.get("canary"), dict):
        raise ScenarioError("latency: must be a mapping with stable: {median, sigma} and canary: {median, sigma}")
    _known_fields(raw, ("stable", "canary", "threshold_ms"), "latency.")
    s, c = raw["stable"], raw["canary"]
    _known_fields(s, ("median", "sigma"), "latency.stable.")
    _known_fields(c, ("median", "sigma"), "latency.canary.")
    return Latency(
        stable_median=_number(s, "median", 0.001, 1e6, "latency.stable."),
        stable_sigma=_number(s, "sigma", 0, 5, "latency.stable.", 0.5),
        canary_median=_number(c, "median", 0.001, 1e6, "latency.canary."),
        canary_sigma=_number(c, "sigma", 0, 5, "latency.canary.", 0.5),
        threshold_ms=_number(raw, "threshold_ms", 0.001, 1e7, "latency.", 1000.0),
    )


def _rollout(raw: Any, read_spec: Callable[[str], Any] | None, check_spec: CheckSpec | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ScenarioError("rollout: must be a mapping with spec: FILE or steps/metrics/on_inconclusive")
    if "spec" in raw:
        if read_spec is None:
            raise ScenarioError("rollout.spec: a spec file cannot be read here")
        try:
            loaded = read_spec(str(raw["spec"]))
        except (OSError, ValueError) as exc:
            raise ScenarioError(f"rollout.spec: cannot read {raw['spec']}: {exc}") from None
        spec = loaded.get("spec", loaded) if isinstance(loaded, dict) else loaded
        if not isinstance(spec, dict):
            raise ScenarioError("rollout.spec: not a rollout manifest")
        merged = dict(spec)
        merged.update({k: v for k, v in raw.items() if k != "spec"})
        return _valid_rollout(merged, check_spec)
    return _valid_rollout(dict(raw), check_spec)


def _valid_rollout(spec: dict[str, Any], check_spec: CheckSpec | None) -> dict[str, Any]:
    from canary.analysis.spec import JudgeSpec, SpecError

    if check_spec is not None:
        released = {**SIMULATED_RELEASE, **{k: v for k, v in spec.items() if k not in SIMULATION_ONLY}}
        problems = check_spec(released)
        if problems:
            where = problems[0].path
            field = "rollout" + where.removeprefix("spec") if where.startswith("spec") else f"rollout: {where}"
            raise ScenarioError(f"{field}: {problems[0].message}")
    try:
        JudgeSpec.from_mapping(spec)
    except SpecError as exc:
        raise ScenarioError(f"rollout: {exc}") from None
    return spec


def _known_fields(raw: dict[str, Any], known: tuple[str, ...], prefix: str = "") -> None:
    """Every mapping of a scenario refuses a field it does not know (a typo is not a default)."""
    unknown = sorted(str(k) for k in set(raw) - set(known))
    if unknown:
        raise ScenarioError(f"{prefix}{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")


def _integer(data: dict[str, Any], key: str, lo: int, hi: int, prefix: str = "", default: int | None = None) -> int:
    """A count: a whole number (``2.0`` is 2, as JSON schema's integer), never a fraction cut short."""
    value = _number(data, key, lo, hi, prefix, None if default is None else float(default))
    if not value.is_integer():
        raise ScenarioError(f"{prefix}{key}: must be a whole number, got {data[key]!r}")
    return int(value)


def _check(field: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{field}: must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise ScenarioError(f"{field}: must be between {lo:g} and {hi:g}, got {value!r}")
    return float(value)


def _number(
    data: dict[str, Any], key: str, lo: float, hi: float, prefix: str = "", default: float | None = None
) -> float:
    if key not in data:
        if default is None:
            raise ScenarioError(f"{prefix}{key}: required")
        return default
    return _check(prefix + key, data[key], lo, hi)


@dataclass
class Traffic:
    """Per-second counts, shape (runs, seconds)."""

    canary_n: IntArray
    canary_bad: IntArray
    stable_n: IntArray
    stable_bad: IntArray


def traffic(scenario: Scenario, runs: int, rng: np.random.Generator) -> Traffic:
    t = np.arange(scenario.duration, dtype=np.float64)
    share = scenario.share_at(t)
    total = rng.poisson(scenario.rate, size=(runs, scenario.duration))
    canary_n = rng.binomial(total, share)
    stable_n = total - canary_n
    base = np.full_like(t, scenario.baseline_error_rate)
    canary_rate = np.where(t >= scenario.onset, scenario.canary_error_rate, scenario.baseline_error_rate)
    for b in scenario.bursts:
        during = (t >= b.start) & (t < b.start + b.duration)
        base = np.where(during, 1 - (1 - base) * (1 - b.error_rate), base)
        canary_rate = np.where(during, 1 - (1 - canary_rate) * (1 - b.error_rate), canary_rate)
    return Traffic(
        canary_n=canary_n,
        canary_bad=rng.binomial(canary_n, canary_rate),
        stable_n=stable_n,
        stable_bad=rng.binomial(stable_n, base),
    )
