"""Ranking quality of a predictor on held-out candidates: Kendall tau, Spearman rho, RMSE, top-k.

All functions take true and predicted values as 1-D arrays of equal length. Ties follow
scipy's tau-b / average-rank conventions. A constant input (no ranking information) gives
tau = rho = 0 rather than NaN, so the figures can always be logged.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(y_true, dtype=np.float64).ravel()
    b = np.asarray(y_pred, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"y_true has {a.size} values but y_pred has {b.size}")
    return a, b


def kendall_tau(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Kendall's tau-b between truth and prediction (-1..1; 0 when undefined)."""
    a, b = _pair(y_true, y_pred)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    tau = stats.kendalltau(a, b).statistic
    return 0.0 if tau is None or math.isnan(tau) else float(tau)


def spearman_rho(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Spearman's rank correlation (-1..1; 0 when undefined)."""
    a, b = _pair(y_true, y_pred)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    rho = stats.spearmanr(a, b).statistic
    return 0.0 if rho is None or math.isnan(rho) else float(rho)


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error (NaN for empty input)."""
    a, b = _pair(y_true, y_pred)
    if a.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((a - b) ** 2)))


def top_k_hit_rate(y_true: np.ndarray, y_pred: np.ndarray, k: int, *, largest: bool = True) -> float:
    """Share of the true top-``k`` that are also in the predicted top-``k`` (0..1).

    ``largest=True`` ranks high values first (accuracy); ``False`` low values first (latency).
    Ties are broken by position (stable sort), identically for truth and prediction.
    """
    a, b = _pair(y_true, y_pred)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, a.size)
    if k == 0:
        return float("nan")
    sign = -1.0 if largest else 1.0
    true_top = set(np.argsort(sign * a, kind="stable")[:k].tolist())
    pred_top = set(np.argsort(sign * b, kind="stable")[:k].tolist())
    return len(true_top & pred_top) / k


def ranking_report(y_true: np.ndarray, y_pred: np.ndarray, *, k: int = 10, largest: bool = True) -> dict[str, float]:
    """``{"kendall_tau", "spearman_rho", "rmse", "top{k}_hit_rate", "n"}`` for logging."""
    a, b = _pair(y_true, y_pred)
    return {
        "kendall_tau": kendall_tau(a, b),
        "spearman_rho": spearman_rho(a, b),
        "rmse": rmse(a, b),
        f"top{k}_hit_rate": top_k_hit_rate(a, b, k, largest=largest) if a.size else float("nan"),
        "n": float(a.size),
    }
