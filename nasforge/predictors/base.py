"""Predictor: features -> (mean, std) of a metric.

Contract (tests/predictors/test_predictor_contract.py runs it for every registered predictor):
``fit(X, y)`` on float arrays (n, d) and (n,); ``predict(X)`` returns two float arrays (n,)
(``std`` >= 0; 0 where the model has no notion of spread); ``save(path)`` then ``load(path)``
gives identical predictions; same seed -> same predictions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict


class PredictorOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Predictor(ABC):
    Options: ClassVar[type[PredictorOptions]] = PredictorOptions

    def __init__(self, options: PredictorOptions | Mapping[str, Any] | None = None, *, seed: int = 0):
        if options is None or isinstance(options, Mapping):
            options = self.Options.model_validate(dict(options or {}))
        self.options = options
        self.seed = seed

    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray) -> Predictor: ...

    @abstractmethod
    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    @abstractmethod
    def save(self, path: str | Path) -> None: ...

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path) -> Predictor: ...
