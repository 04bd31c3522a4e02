"""Latency prediction: a per-operation lookup table plus a learned end-to-end correction.

- ``op_key(desc)``: the canonical key of one op descriptor (``space.ops(arch)`` entries).
- ``distinct_ops(space)``: every distinct op descriptor of a space, found by sampling archs
  until new ones stop appearing (plus the smallest and largest arch).
- ``LatencyLUT``: op key -> measured latency (ms) on one device profile, read from the JSON file
  that ``nasforge.workers.profile.profile_device`` writes; ``predict`` sums the ops of each arch.
- ``LatencyPredictor``: LUT sum times a learned correction. The correction is a small regressor
  (ridge by default, a Huber-loss linear model that outlier timings cannot drag, or
  gradient-boosted trees) on [log LUT sum, op count, log FLOPs, log params,
  arch encoding] fitted to ``log(measured / LUT sum)`` of archs whose end-to-end latency was
  measured; it absorbs per-call overheads and cache effects that a plain sum misses.

No torch here: the table is plain data, the correction is scikit-learn.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nasforge.core.errors import NasforgeError
from nasforge.core.types import Arch, canonical_json
from nasforge.predictors.features import arch_features
from nasforge.spaces.base import SearchSpace

LUT_FORMAT = "nasforge-latency-lut"
LUT_VERSION = 1


class LatencyTableError(NasforgeError):
    """A latency table is unreadable, for another space, or lacks an operation."""


def op_key(desc: Mapping[str, Any]) -> str:
    """Canonical JSON of an op descriptor: equal descriptors give equal keys."""
    return canonical_json(dict(desc))


def distinct_ops(
    space: SearchSpace, *, max_samples: int = 20000, patience: int = 2000, seed: int = 0
) -> list[dict[str, Any]]:
    """Distinct op descriptors of ``space`` (which must have ``ops(arch)``), in first-seen order.

    Samples archs (seeded) until ``patience`` samples in a row add no new op or ``max_samples``
    is reached; the smallest and largest archs are always included.
    """
    if not callable(getattr(space, "ops", None)):
        raise LatencyTableError(f"space {space.id!r} has no ops(arch): a latency table cannot be built for it")
    rng = np.random.default_rng(seed)
    seen: dict[str, dict[str, Any]] = {}
    archs: list[Arch] = [space.smallest(), space.largest()]
    since_new = 0
    for i in range(max_samples + 2):
        arch = archs[i] if i < 2 else space.sample(rng)
        new = False
        for desc in space.ops(arch):  # type: ignore[attr-defined]
            k = op_key(desc)
            if k not in seen:
                seen[k] = dict(desc)
                new = True
        since_new = 0 if new else since_new + 1
        if since_new >= patience:
            break
    return list(seen.values())


class LatencyLUT:
    """Per-op latencies (ms) measured on one device profile for one space."""

    def __init__(self, table: Mapping[str, float], *, device_id: str, space_id: str,
                 meta: Mapping[str, Any] | None = None):
        self.table = {str(k): float(v) for k, v in table.items()}
        self.device_id = device_id
        self.space_id = space_id
        self.meta = dict(meta or {})

    @classmethod
    def load(cls, path: str | Path) -> LatencyLUT:
        """Read a table written by ``profile_device``; LatencyTableError if it is not one."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise LatencyTableError(f"latency table {path}: cannot read it ({e}); rebuild it with "
                                    f"`nasforge profile-device --space NAME --out {path}`") from None
        if not isinstance(data, dict) or data.get("format") != LUT_FORMAT:
            raise LatencyTableError(f"latency table {path}: not a {LUT_FORMAT} file")
        table = {row["key"]: row["latency_ms"] for row in data["ops"]}
        return cls(table, device_id=str(data["device"]["id"]), space_id=str(data["space"]["id"]),
                   meta={k: v for k, v in data.items() if k != "ops"})

    def op_latency(self, desc: Mapping[str, Any]) -> float:
        k = op_key(desc)
        try:
            return self.table[k]
        except KeyError:
            raise LatencyTableError(
                f"latency table for device {self.device_id} has no entry for op {k}; rebuild it with "
                f"`nasforge profile-device --space {self.space_id}` (the space may have changed)"
            ) from None

    def sum_ops(self, ops: Sequence[Mapping[str, Any]]) -> float:
        return float(sum(self.op_latency(d) for d in ops))

    def predict(self, space: SearchSpace, archs: Sequence[Arch]) -> np.ndarray:
        """Sum of op latencies (ms) per arch, shape (n,)."""
        if space.id != self.space_id:
            raise LatencyTableError(f"latency table was built for space {self.space_id!r}, not {space.id!r}")
        return np.array([self.sum_ops(space.ops(a)) for a in archs], dtype=np.float64)  # type: ignore[attr-defined]


class LatencyPredictor:
    """``LUT sum x exp(correction(features))``; ``fit`` on measured end-to-end latencies.

    ``predict`` returns (mean, std) in ms; ``std`` is the residual spread of the correction on its
    training rows times the prediction (0 before fit: the plain LUT sum is returned).
    """

    def __init__(self, lut: LatencyLUT, *, correction: Literal["ridge", "huber", "gbt", "none"] = "ridge",
                 seed: int = 0):
        if correction not in ("ridge", "huber", "gbt", "none"):
            raise ValueError(f"correction must be ridge, huber, gbt or none, got {correction!r}")
        self.lut = lut
        self.correction = correction
        self.seed = seed
        self._model: Any = None
        self._resid_std = 0.0

    def features(self, space: SearchSpace, archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray]:
        """(LUT sums (n,), correction features (n, d))."""
        lut_sum = self.lut.predict(space, archs)
        n_ops = np.array([len(space.ops(a)) for a in archs], dtype=np.float64)  # type: ignore[attr-defined]
        F = np.concatenate([np.log(lut_sum)[:, None], n_ops[:, None],
                            arch_features(space, archs, with_cost=True)], axis=1)
        return lut_sum, F

    def fit(self, space: SearchSpace, archs: Sequence[Arch], measured_ms: np.ndarray) -> LatencyPredictor:
        measured = np.asarray(measured_ms, dtype=np.float64).ravel()
        if len(archs) != measured.size or measured.size == 0 or np.any(measured <= 0):
            raise ValueError("fit needs one positive measured latency per arch")
        lut_sum, F = self.features(space, archs)
        target = np.log(measured) - np.log(lut_sum)
        if self.correction == "none":
            self._model = ("none", float(np.median(target)))
        elif self.correction == "ridge":
            from sklearn.linear_model import RidgeCV
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            self._model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))).fit(F, target)
        elif self.correction == "huber":
            from sklearn.linear_model import HuberRegressor
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            self._model = make_pipeline(StandardScaler(), HuberRegressor(alpha=1.0, max_iter=1000)).fit(F, target)
        else:
            from sklearn.ensemble import GradientBoostingRegressor

            self._model = GradientBoostingRegressor(n_estimators=200, max_depth=3, learning_rate=0.05,
                                                    subsample=0.8, random_state=self.seed).fit(F, target)
        self._resid_std = float(np.std(target - self._correct(F)))
        return self

    def _correct(self, F: np.ndarray) -> np.ndarray:
        if self._model is None:
            return np.zeros(F.shape[0])
        if isinstance(self._model, tuple):
            return np.full(F.shape[0], self._model[1])
        return np.asarray(self._model.predict(F), dtype=np.float64)

    def predict(self, space: SearchSpace, archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray]:
        if not archs:
            return np.zeros(0), np.zeros(0)
        lut_sum, F = self.features(space, archs)
        mean = lut_sum * np.exp(self._correct(F))
        return mean, mean * self._resid_std

    def save(self, path: str | Path) -> None:
        state = {"kind": "latency_predictor", "table": self.lut.table, "device_id": self.lut.device_id,
                 "space_id": self.lut.space_id, "meta": self.lut.meta, "correction": self.correction,
                 "seed": self.seed, "model": self._model, "resid_std": self._resid_std}
        Path(path).write_bytes(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        state = pickle.loads(Path(path).read_bytes())
        if not isinstance(state, dict) or state.get("kind") != "latency_predictor":
            raise LatencyTableError(f"{path} is not a saved latency predictor")
        lut = LatencyLUT(state["table"], device_id=state["device_id"], space_id=state["space_id"], meta=state["meta"])
        self = cls(lut, correction=state["correction"], seed=state["seed"])
        self._model, self._resid_std = state["model"], state["resid_std"]
        return self
