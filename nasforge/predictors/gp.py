"""``gp``: a Gaussian process regressor for small samples (scikit-learn).

Kernel: constant x Matern(nu=2.5) + constant x linear (dot product) + white noise, hyperparameters
fitted by maximum marginal likelihood with seeded restarts; features standardized, targets normalized.

Why the linear term: with a few dozen children in a one-hot space of ~60 columns, the standardized
points are ~11 apart, and the likelihood of a Matern-only fit often prefers "all noise" (length
scale at its lower bound, one value for every child, Kendall tau 0: 3 of 4 splits of 36 measured
quickstart children, ``tests/predictors/test_gp_small_samples.py``). Accuracy and latency are close
to additive in the choices, which a linear term captures from few points (Bayesian linear
regression); the Matern term models what is left. On noisy targets the fit may still call most of
the spread noise, so the means sit close together, but their order follows the data (tau 0.22-0.39
on the same splits). ``linear: false`` restores the Matern-only kernel.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from nasforge.predictors._pickled import load_pickled, save_pickled
from nasforge.predictors.base import Predictor, PredictorOptions


class GPOptions(PredictorOptions):
    nu: float = Field(default=2.5, description="Matern smoothness (0.5, 1.5, 2.5 or inf)")
    ard: bool = Field(default=False, description="one length scale per feature (slower; for few features)")
    linear: bool = Field(default=True, description="add a linear (dot-product) kernel term: additive effects of the "
                                                   "choices, learned from few samples")
    restarts: int = Field(default=2, ge=0, description="extra optimizer restarts of the hyperparameter fit")
    max_rows: int = Field(default=2000, ge=2, description="fit on at most this many rows (the newest); GP cost is cubic")


class GPPredictor(Predictor):
    Options = GPOptions
    options: GPOptions

    def __init__(self, options: GPOptions | dict[str, Any] | None = None, *, seed: int = 0):
        super().__init__(options, seed=seed)
        self._model: Any = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> GPPredictor:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, DotProduct, Matern, WhiteKernel

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).ravel()
        if X.ndim != 2 or y.shape[0] != X.shape[0] or X.shape[0] == 0:
            raise ValueError(f"fit needs X (n, d) and y (n,) with n >= 1; got {X.shape} and {y.shape}")
        X, y = X[-self.options.max_rows:], y[-self.options.max_rows:]
        self._x_mean = X.mean(axis=0)
        std = X.std(axis=0)
        self._x_std = np.where(std > 1e-12, std, 1.0)
        d = X.shape[1]
        length = np.full(d, np.sqrt(d)) if self.options.ard else float(np.sqrt(d))
        kernel = ConstantKernel(1.0, (1e-3, 1e5)) * Matern(length_scale=length, length_scale_bounds=(1e-2, 1e4),
                                                           nu=self.options.nu)
        if self.options.linear:  # x.x' over d standardized columns is ~d: start the term at ~0.1 of the variance
            kernel = kernel + ConstantKernel(0.1 / d, (1e-6 / d, 1e3)) * DotProduct(sigma_0=1.0, sigma_0_bounds="fixed")
        kernel = kernel + WhiteKernel(1e-2, (1e-9, 1e1))
        self._model = GaussianProcessRegressor(kernel=kernel, normalize_y=True, n_restarts_optimizer=self.options.restarts,
                                               random_state=self.seed)
        with warnings.catch_warnings():  # bounds hit on tiny samples are expected, not actionable
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._model.fit((X - self._x_mean) / self._x_std, y)
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._model is None:
            raise RuntimeError("predict called before fit")
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if X.shape[0] == 0:
            return np.zeros(0), np.zeros(0)
        mean, std = self._model.predict((X - self._x_mean) / self._x_std, return_std=True)
        return np.asarray(mean, dtype=np.float64), np.maximum(np.asarray(std, dtype=np.float64), 0.0)

    def save(self, path: str | Path) -> None:
        if self._model is None:
            raise RuntimeError("save called before fit")
        save_pickled(self, "gp", {"model": self._model, "x_mean": self._x_mean, "x_std": self._x_std}, path)

    @classmethod
    def load(cls, path: str | Path) -> GPPredictor:
        pred, state = load_pickled(cls, "gp", path)
        assert isinstance(pred, GPPredictor)
        pred._model, pred._x_mean, pred._x_std = state["model"], state["x_mean"], state["x_std"]
        return pred
