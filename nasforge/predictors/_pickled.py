"""Shared save/load for the scikit-learn predictors (pickle of options, seed and fitted models)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from nasforge.predictors.base import Predictor


def save_pickled(pred: Predictor, kind: str, state: dict[str, Any], path: str | Path) -> None:
    payload = {"kind": kind, "options": pred.options.model_dump(mode="json"), "seed": pred.seed, "state": state}
    Path(path).write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))


def load_pickled(cls: type[Predictor], kind: str, path: str | Path) -> tuple[Predictor, dict[str, Any]]:
    """Load a file written by ``save_pickled``. Pickle: load only files nasforge itself wrote."""
    payload = pickle.loads(Path(path).read_bytes())
    if not isinstance(payload, dict) or payload.get("kind") != kind:
        raise ValueError(f"{path} is not a saved {kind} predictor")
    return cls(payload["options"], seed=int(payload["seed"])), payload["state"]
