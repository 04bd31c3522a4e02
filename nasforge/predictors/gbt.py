"""``gbt``: a bagged ensemble of gradient-boosted regression trees (scikit-learn).

Each member is a ``GradientBoostingRegressor`` fitted on its own bootstrap resample with its own
seed; ``predict`` returns the members' mean and their std (ddof 0) as the spread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from nasforge.predictors._pickled import load_pickled, save_pickled
from nasforge.predictors.base import Predictor, PredictorOptions


class GBTOptions(PredictorOptions):
    members: int = Field(default=5, ge=1, description="bagged boosting models (spread = their std)")
    n_estimators: int = Field(default=200, ge=1, description="trees per member")
    max_depth: int = Field(default=3, ge=1, description="depth of each tree")
    learning_rate: float = Field(default=0.05, gt=0, description="shrinkage")
    subsample: float = Field(default=0.8, gt=0, le=1, description="row share per tree (stochastic boosting)")
    bootstrap: bool = Field(default=True, description="each member fits a bootstrap resample of the rows")


class GBTPredictor(Predictor):
    Options = GBTOptions
    options: GBTOptions

    def __init__(self, options: GBTOptions | dict[str, Any] | None = None, *, seed: int = 0):
        super().__init__(options, seed=seed)
        self._members: list[Any] = []

    def fit(self, X: np.ndarray, y: np.ndarray) -> GBTPredictor:
        from sklearn.ensemble import GradientBoostingRegressor

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).ravel()
        if X.ndim != 2 or y.shape[0] != X.shape[0] or X.shape[0] == 0:
            raise ValueError(f"fit needs X (n, d) and y (n,) with n >= 1; got {X.shape} and {y.shape}")
        o = self.options
        rng = np.random.default_rng(self.seed)
        n = X.shape[0]
        self._members = []
        for m in range(o.members):
            rows = rng.integers(0, n, n) if (o.bootstrap and o.members > 1 and n > 1) else np.arange(n)
            model = GradientBoostingRegressor(
                n_estimators=o.n_estimators, max_depth=o.max_depth, learning_rate=o.learning_rate,
                subsample=o.subsample, random_state=int(self.seed * 1000 + m),
            )
            model.fit(X[rows], y[rows])
            self._members.append(model)
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self._members:
            raise RuntimeError("predict called before fit")
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if X.shape[0] == 0:
            return np.zeros(0), np.zeros(0)
        out = np.stack([m.predict(X) for m in self._members])
        return out.mean(axis=0), out.std(axis=0)

    def save(self, path: str | Path) -> None:
        if not self._members:
            raise RuntimeError("save called before fit")
        save_pickled(self, "gbt", {"members": self._members}, path)

    @classmethod
    def load(cls, path: str | Path) -> GBTPredictor:
        pred, state = load_pickled(cls, "gbt", path)
        assert isinstance(pred, GBTPredictor)
        pred._members = list(state["members"])
        return pred
