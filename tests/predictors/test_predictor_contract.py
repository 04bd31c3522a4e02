"""The Predictor contract, run against every registered predictor (small and fast settings)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nasforge.predictors import PREDICTORS
from nasforge.predictors.base import Predictor

#: small settings per predictor so the whole suite runs in seconds on a loaded 2-core machine
FAST: dict[str, dict[str, Any]] = {
    "mlp_ensemble": {"members": 3, "hidden": 16, "epochs": 60, "max_steps": 200},
    "gbt": {"members": 3, "n_estimators": 40},
    "gp": {"restarts": 0},
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One-hot-like binary features and a learnable, mostly additive target with mild noise."""
    rng = np.random.default_rng(seed)
    X = (rng.random((n, 12)) < 0.5).astype(np.float64)
    w = np.linspace(-1.0, 1.5, 12)
    y = X @ w + 0.5 * X[:, 0] * X[:, 1] + rng.normal(0, 0.05, n)
    return X, y


def make(name: str, seed: int = 0) -> Predictor:
    return PREDICTORS.get(name)(FAST.get(name, {}), seed=seed)


@pytest.fixture(params=PREDICTORS.names())
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_registered_predictor_has_fast_settings(name: str) -> None:
    assert name in FAST, f"add small settings for {name!r} to FAST"


def test_fit_predict_shapes_and_nonnegative_std(name: str) -> None:
    X, y = synthetic(80, 0)
    pred = make(name).fit(X[:60], y[:60])
    mean, std = pred.predict(X[60:])
    assert mean.shape == (20,) and std.shape == (20,)
    assert mean.dtype.kind == "f" and std.dtype.kind == "f"
    assert np.all(np.isfinite(mean)) and np.all(std >= 0)
    m0, s0 = pred.predict(X[:0])
    assert m0.shape == (0,) and s0.shape == (0,)


def test_save_load_gives_identical_predictions(name: str, tmp_path: Any) -> None:
    X, y = synthetic(60, 1)
    pred = make(name).fit(X[:40], y[:40])
    pred.save(tmp_path / "p.bin")
    loaded = type(pred).load(tmp_path / "p.bin")
    for a, b in zip(pred.predict(X[40:]), loaded.predict(X[40:]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.options == pred.options and loaded.seed == pred.seed


def test_same_seed_same_predictions(name: str) -> None:
    X, y = synthetic(60, 2)
    a = make(name, seed=3).fit(X[:40], y[:40]).predict(X[40:])
    b = make(name, seed=3).fit(X[:40], y[:40]).predict(X[40:])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_better_than_a_constant_on_a_learnable_target(name: str) -> None:
    X, y = synthetic(200, 3)
    mean, _ = make(name).fit(X[:150], y[:150]).predict(X[150:])
    constant_mse = float(np.mean((y[150:] - y[:150].mean()) ** 2))
    mse = float(np.mean((y[150:] - mean) ** 2))
    assert mse < 0.25 * constant_mse, (mse, constant_mse)


def test_unknown_option_is_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        PREDICTORS.get(name)({"no_such_option": 1})


def test_predict_before_fit_raises(name: str) -> None:
    with pytest.raises(RuntimeError):
        make(name).predict(np.zeros((2, 12)))
