"""nasforge.tracking: the job as MLflow runs (batched, never the source of truth), plots, the UI.

Public: :class:`MlflowTracker`, :func:`ensure_tracking_store`, :func:`delete_job_runs`; ``plots.pareto_plot``;
``ui.run_ui``. Importing this package does not import MLflow (it is loaded on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nasforge.tracking.mlflow_tracker import MlflowTracker, delete_job_runs, ensure_tracking_store

__all__ = ["MlflowTracker", "delete_job_runs", "ensure_tracking_store"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from nasforge.tracking import mlflow_tracker

        return getattr(mlflow_tracker, name)
    raise AttributeError(f"module 'nasforge.tracking' has no attribute {name!r}")
