"""Ranking metrics against scipy and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from nasforge.predictors.metrics import kendall_tau, ranking_report, rmse, spearman_rho, top_k_hit_rate


def brute_force_tau_a(a: np.ndarray, b: np.ndarray) -> float:
    s = 0.0
    pairs = list(itertools.combinations(range(len(a)), 2))
    for i, j in pairs:
        s += np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return s / len(pairs)


@pytest.mark.parametrize("seed", range(5))
def test_kendall_matches_brute_force_without_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=25)
    b = a + rng.normal(scale=0.7, size=25)
    assert kendall_tau(a, b) == pytest.approx(brute_force_tau_a(a, b))


def test_kendall_and_spearman_match_scipy_with_ties() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 5, 40).astype(float)
    b = a + rng.integers(0, 3, 40)
    assert kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic)
    assert spearman_rho(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)


def test_perfect_and_reversed_rankings() -> None:
    a = np.arange(10.0)
    assert kendall_tau(a, a ** 3) == pytest.approx(1.0)
    assert spearman_rho(a, -a) == pytest.approx(-1.0)


def test_constant_prediction_gives_zero_not_nan() -> None:
    a = np.arange(10.0)
    assert kendall_tau(a, np.ones(10)) == 0.0
    assert spearman_rho(a, np.ones(10)) == 0.0


def test_rmse_brute_force() -> None:
    a, b = np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0])
    assert rmse(a, b) == pytest.approx(np.sqrt((0 + 1 + 4) / 3))


def test_top_k_hit_rate() -> None:
    truth = np.array([0.9, 0.8, 0.1, 0.2, 0.7])
    pred = np.array([0.95, 0.1, 0.2, 0.3, 0.9])  # predicted top-2: {0, 4}; true top-2: {0, 1}
    assert top_k_hit_rate(truth, pred, 2) == 0.5
    assert top_k_hit_rate(truth, truth, 3) == 1.0
    # smallest-first (latency): true lowest-2 {2, 3}; predicted lowest-2 {1, 2}
    assert top_k_hit_rate(truth, pred, 2, largest=False) == 0.5
    with pytest.raises(ValueError):
        top_k_hit_rate(truth, pred, 0)


def test_mismatched_lengths_rejected() -> None:
    with pytest.raises(ValueError, match="y_true has 3"):
        kendall_tau(np.zeros(3), np.zeros(4))


def test_report_keys() -> None:
    r = ranking_report(np.arange(20.0), np.arange(20.0), k=5)
    assert r == {"kendall_tau": 1.0, "spearman_rho": 1.0, "rmse": 0.0, "top5_hit_rate": 1.0, "n": 20.0}
