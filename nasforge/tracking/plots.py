"""Plots of a job for people: the Pareto front of two metrics (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from nasforge.core.types import Candidate, CandidateStatus


def _value(c: Candidate, metric: str) -> float | None:
    v = c.metrics.get(metric)
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def pareto_plot(candidates: Sequence[Candidate], x_metric: str, y_metric: str, path: Path,
                *, title: str | None = None) -> Path:
    """Scatter of every done candidate (``x_metric`` against ``y_metric``) with the Pareto front
    (candidates flagged ``pareto``) highlighted and joined in x order; written as PNG to ``path``.

    Candidates without a finite value for either metric are left out (their number is in the
    legend). Returns ``path``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    done = [c for c in candidates if c.status == CandidateStatus.DONE]
    points = [(c, _value(c, x_metric), _value(c, y_metric)) for c in done]
    plotted = [(c, x, y) for c, x, y in points if x is not None and y is not None]
    missing = len(points) - len(plotted)
    rest = [(x, y) for c, x, y in plotted if not c.pareto]
    front = sorted((x, y) for c, x, y in plotted if c.pareto)

    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    ax = fig.subplots()
    if rest:
        ax.scatter([p[0] for p in rest], [p[1] for p in rest], s=14, c="#9aa5b1", alpha=0.7,
                   label=f"candidates ({len(rest)})")
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], "-o", color="#d1495b", markersize=6,
                linewidth=1.5, label=f"Pareto front ({len(front)})")
    if missing:
        ax.plot([], [], " ", label=f"{missing} without {x_metric}/{y_metric}")
    ax.set_xlabel(x_metric)
    ax.set_ylabel(y_metric)
    ax.set_title(title or f"{y_metric} vs {x_metric}: {len(done)} evaluated")
    ax.grid(True, alpha=0.3)
    if rest or front or missing:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
