"""Predictor features derived from the one definition of a space.

``arch_features(space, archs)`` is ``space.encode(archs)`` (one-hot of every choice), optionally
followed by standardized-scale analytic cost proxies from ``space.cost``: ``log1p(flops)`` and
``log1p(params)`` (in that order). Nothing else defines how an arch becomes a feature vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nasforge.core.types import Arch
from nasforge.spaces.base import SearchSpace

#: cost keys appended by ``arch_features(..., with_cost=True)``, in column order
COST_FEATURES: tuple[str, ...] = ("flops", "params")


def cost_matrix(space: SearchSpace, archs: Sequence[Arch]) -> np.ndarray:
    """(n, len(COST_FEATURES)) array of ``log1p`` analytic costs (FLOPs as MACs, params)."""
    if not archs:
        return np.zeros((0, len(COST_FEATURES)), dtype=np.float64)
    costs = space.cost_many(archs)
    return np.stack([np.log1p(np.asarray(costs[k], dtype=np.float64)) for k in COST_FEATURES], axis=1)


def arch_features(space: SearchSpace, archs: Sequence[Arch], *, with_cost: bool = False) -> np.ndarray:
    """Features of ``archs`` as float64 (n, d): ``space.encode`` then, if ``with_cost``, log costs.

    ``d = sum(space.cardinalities) + (2 if with_cost else 0)``.
    """
    X = np.asarray(space.encode(list(archs)), dtype=np.float64)
    if with_cost:
        X = np.concatenate([X, cost_matrix(space, archs)], axis=1)
    return X


def feature_dim(space: SearchSpace, *, with_cost: bool = False) -> int:
    """Width of ``arch_features`` for this space."""
    return int(space.cardinalities.sum()) + (len(COST_FEATURES) if with_cost else 0)
