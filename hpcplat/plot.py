"""Plots of metric series: a PNG (matplotlib, imported only here and only when asked) and a plain
text plot for the terminal (no dependency)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from hpcplat.errors import HpcplatError

Series = Sequence[tuple[float, float]]


def _fmt(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


def text_plot(points: Series, *, width: int = 72, height: int = 16, title: str = "") -> str:
    """The series as characters: one column per x bin (its mean value), y axis labels on the left.

    A series of one point or with all values equal still draws (a flat line).
    """
    if not points:
        return f"{title}\n(no points)" if title else "(no points)"
    width = max(width, 10)
    height = max(height, 3)
    xs = [float(x) for x, _ in points]
    ys = [float(y) for _, y in points]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    if y_hi == y_lo:
        pad = abs(y_hi) * 0.05 or 1.0
        y_lo, y_hi = y_lo - pad, y_hi + pad
    sums = [0.0] * width
    counts = [0] * width
    span = (x_hi - x_lo) or 1.0
    for x, y in zip(xs, ys, strict=True):
        col = min(int((x - x_lo) / span * (width - 1) + 0.5), width - 1)
        sums[col] += y
        counts[col] += 1
    grid = [[" "] * width for _ in range(height)]
    previous: int | None = None
    for col in range(width):
        if not counts[col]:
            continue
        mean = sums[col] / counts[col]
        row = height - 1 - round((mean - y_lo) / (y_hi - y_lo) * (height - 1))
        row = min(max(row, 0), height - 1)
        if previous is not None and abs(row - previous) > 1:
            step = 1 if row > previous else -1
            for between in range(previous + step, row, step):
                if grid[between][col] == " ":
                    grid[between][col] = "|"
        grid[row][col] = "*"
        previous = row
    labels = {0: _fmt(y_hi), height - 1: _fmt(y_lo), (height - 1) // 2: _fmt((y_hi + y_lo) / 2)}
    margin = max(len(v) for v in labels.values())
    lines = [title] if title else []
    for i, row_chars in enumerate(grid):
        lines.append(f"{labels.get(i, ''):>{margin}} |{''.join(row_chars)}")
    lines.append(" " * margin + " +" + "-" * width)
    left, right = _fmt(x_lo), _fmt(x_hi)
    lines.append(" " * (margin + 2) + left + " " * max(width - len(left) - len(right), 1) + right)
    return "\n".join(lines)


def png_plot(
    series: Mapping[str, Series],
    path: str | Path,
    *,
    title: str = "",
    xlabel: str = "step",
    ylabel: str = "",
) -> Path:
    """Write a PNG of one or more named series; needs matplotlib (the ``train`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise HpcplatError(
            "matplotlib is not installed, so no PNG can be written",
            hint="pip install 'hpcplat[train]' (or matplotlib), or use --no-png for the terminal plot only",
        ) from exc
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        for label, points in series.items():
            finite = [(x, y) for x, y in points if math.isfinite(y)]
            ax.plot([x for x, _ in finite], [y for _, y in finite], label=label, linewidth=1.2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        if len(series) > 1:
            ax.legend()
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(target, format="png")
    finally:
        plt.close(fig)
    return target
