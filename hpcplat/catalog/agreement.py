"""How the metrics of a rerun agree with the original run's (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MetricAgreement:
    name: str
    common_steps: int
    only_original: int
    only_rerun: int
    bit_exact: bool
    """Every common step has the identical float (and no step is missing on either side)."""
    max_abs_diff: float
    max_rel_diff: float

    def __str__(self) -> str:
        if self.common_steps == 0:
            return f"{self.name}: no common steps ({self.only_original} original, {self.only_rerun} rerun)"
        if self.bit_exact:
            return f"{self.name}: bit-exact over {self.common_steps} steps"
        text = (
            f"{self.name}: differs over {self.common_steps} common steps "
            f"(max |diff| {self.max_abs_diff:.3g}, max relative {self.max_rel_diff:.3g})"
        )
        if self.only_original or self.only_rerun:
            text += f"; steps only in original: {self.only_original}, only in rerun: {self.only_rerun}"
        return text


def agreement(
    original: Mapping[str, Sequence[tuple[int, float]]], rerun: Mapping[str, Sequence[tuple[int, float]]]
) -> list[MetricAgreement]:
    result = []
    for name in sorted(set(original) | set(rerun)):
        a = dict(original.get(name, ()))
        b = dict(rerun.get(name, ()))
        common = sorted(a.keys() & b.keys())
        abs_diffs = [abs(a[s] - b[s]) for s in common]
        rel_diffs = [abs(a[s] - b[s]) / max(abs(a[s]), abs(b[s])) for s in common if a[s] != b[s]]
        only_a, only_b = len(a.keys() - b.keys()), len(b.keys() - a.keys())
        result.append(
            MetricAgreement(
                name=name,
                common_steps=len(common),
                only_original=only_a,
                only_rerun=only_b,
                bit_exact=bool(common) and not only_a and not only_b and all(a[s] == b[s] for s in common),
                max_abs_diff=max(abs_diffs, default=0.0),
                max_rel_diff=max(rel_diffs, default=0.0),
            )
        )
    return result
