"""A sweep's objective and the ranking of its trials.

The objective is a metric the trials log with :mod:`hpcplat.track` (or, for array sweeps without a
catalog, a key of the JSON they write to ``$HPCPLAT_RESULT_FILE``), a direction (``min``/``max``)
and how a trial's series becomes one number: ``final`` (the value at the last step logged) or
``best`` (the lowest value for ``min``, the highest for ``max``).

:func:`rank` orders trials by it and sums the trial-hours (allocated time) and GPU-hours they used,
and what running the pruned trials to the end would have cost.
"""

from __future__ import annotations

import enum
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpcplat.errors import UsageError

_METRIC = re.compile(r"[A-Za-z_][A-Za-z0-9_./\-]{0,199}\Z")


class Aggregate(enum.Enum):
    FINAL = "final"
    BEST = "best"


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str = "min"
    """``min`` or ``max``."""
    aggregate: Aggregate = Aggregate.FINAL

    def __post_init__(self) -> None:
        if not _METRIC.match(self.metric):
            raise UsageError(
                f"objective: {self.metric!r} is not a metric name",
                hint="name the metric the trials log with hpcplat.track, e.g. --objective loss:min",
            )
        if self.direction not in ("min", "max"):
            raise UsageError(
                f"objective: direction {self.direction!r} must be min or max", hint="e.g. --objective acc:max"
            )

    @classmethod
    def parse(cls, text: str) -> Objective:
        """``METRIC[:min|max[:final|best]]``, e.g. ``loss:min:best``."""
        metric, _, rest = text.partition(":")
        direction, _, aggregate = rest.partition(":")
        return cls.from_dict({"metric": metric, "direction": direction or "min", "aggregate": aggregate})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Objective:
        aggregate_text = str(data.get("aggregate") or "final")
        try:
            aggregate = Aggregate(aggregate_text)
        except ValueError:
            raise UsageError(
                f"objective: unknown aggregate {aggregate_text!r}; allowed: final, best",
                hint="final: the value at the last step; best: the best value over all steps",
            ) from None
        return cls(str(data.get("metric") or ""), str(data.get("direction") or "min"), aggregate)

    def to_dict(self) -> dict[str, str]:
        return {"metric": self.metric, "direction": self.direction, "aggregate": self.aggregate.value}

    def __str__(self) -> str:
        return f"{self.metric}:{self.direction}:{self.aggregate.value}"

    @property
    def maximize(self) -> bool:
        return self.direction == "max"

    def value(self, series: Sequence[tuple[int, float]]) -> float | None:
        """The trial's objective from its (step, value) series; ``None`` when it logged nothing."""
        if not series:
            return None
        if self.aggregate is Aggregate.FINAL:
            return max(series, key=lambda p: p[0])[1]
        values = [v for _, v in series]
        return max(values) if self.maximize else min(values)

    def better(self, a: float, b: float) -> bool:
        return a > b if self.maximize else a < b


@dataclass
class TrialRow:
    """One trial (or point of an array sweep) as ``sweep results`` shows it."""

    number: int
    params: dict[str, Any]
    state: str
    """``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING`` (array sweeps: the Slurm state)."""
    run_id: str = ""
    job_id: str = ""
    value: float | None = None
    steps: int = 0
    """How many steps the trial logged the metric for."""
    elapsed_s: float = 0.0
    """Allocated time (Slurm elapsed, summed over requeues)."""
    restarts: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class Ranking:
    objective: Objective
    trials: list[TrialRow]
    """Trials with a value first, best first; then the others by number."""
    gpus_per_trial: int = 0
    max_steps: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> TrialRow | None:
        return self.trials[0] if self.trials and self.trials[0].value is not None else None

    def count(self, state: str) -> int:
        return sum(1 for t in self.trials if t.state == state)

    def full_run_s(self) -> float:
        """Trial-seconds had every pruned trial run to the end: the median time of the trials that
        completed, else the pruned trial's time scaled from the steps it reached to ``max_steps``."""
        finished = [t.elapsed_s for t in self.trials if t.state == "COMPLETE" and t.elapsed_s > 0]
        typical = statistics.median(finished) if finished else None
        total = 0.0
        for t in self.trials:
            if t.state != "PRUNED":
                total += t.elapsed_s
            elif typical is not None:
                total += max(typical, t.elapsed_s)
            elif self.max_steps and t.steps:
                total += t.elapsed_s * max(1.0, self.max_steps / t.steps)
            else:
                total += t.elapsed_s
        return total

    def summary(self) -> dict[str, Any]:
        used_s = sum(t.elapsed_s for t in self.trials)
        full_s = self.full_run_s()
        gpus = self.gpus_per_trial
        return {
            "trials": len(self.trials),
            "completed": self.count("COMPLETE"),
            "pruned": self.count("PRUNED"),
            "failed": self.count("FAIL"),
            "running": self.count("RUNNING"),
            "trial_hours_used": used_s / 3600,
            "trial_hours_full": full_s / 3600,
            "trial_hours_saved": (full_s - used_s) / 3600,
            "gpu_hours_used": used_s * gpus / 3600,
            "gpu_hours_full": full_s * gpus / 3600,
            "gpu_hours_saved": (full_s - used_s) * gpus / 3600,
        }

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "objective": self.objective.to_dict(),
            "best": best.to_dict() if best else None,
            **self.summary(),
            **self.extra,
            "ranked": [t.to_dict() for t in self.trials],
        }


def rank(
    objective: Objective,
    trials: Sequence[TrialRow],
    *,
    gpus_per_trial: int = 0,
    max_steps: int | None = None,
) -> Ranking:
    """Trials with a finite value ordered best first (ties by number), then the rest by number."""
    valued = [t for t in trials if t.value is not None and math.isfinite(t.value)]
    others = [t for t in trials if t not in valued]
    sign = -1.0 if objective.maximize else 1.0
    valued.sort(key=lambda t: (sign * (t.value or 0.0), t.number))
    others.sort(key=lambda t: t.number)
    return Ranking(objective, [*valued, *others], gpus_per_trial=gpus_per_trial, max_steps=max_steps)
