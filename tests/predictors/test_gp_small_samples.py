"""The GP on a few dozen real measured children: it must rank them, not predict one value for all.

Fixture: ``data/quickstart_children.json``, 300 children of the quickstart space measured by a
random-search job on a 3-epoch supernet (see its ``about``). With the Matern kernel alone, the
likelihood on 36 of them often prefers "all noise" (length scale at its bound, one value for every
child, tau 0); the linear kernel term keeps the additive signal of the choices. (It may still judge
most of the spread to be noise, so its means can be close together: what is checked is the order.)
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from nasforge.predictors.features import arch_features
from nasforge.predictors.gp import GPPredictor
from nasforge.predictors.metrics import kendall_tau
from nasforge.spaces import SPACES

DATA = Path(__file__).parent / "data" / "quickstart_children.json"


def _children() -> tuple[np.ndarray, np.ndarray]:
    d = json.loads(DATA.read_text())
    space = SPACES.get(d["space"])(d["options"])
    assert list(space.choices()) == d["choices"], "the fixture's choice order no longer matches the space"
    archs = [space.from_indices(row) for row in d["indices"]]
    return arch_features(space, archs, with_cost=True), np.asarray(d["accuracy"], dtype=np.float64)


@pytest.mark.parametrize("split", range(4))
def test_gp_ranks_held_out_children_from_36_measured(split: int) -> None:
    X, y = _children()
    idx = np.random.default_rng(split).permutation(len(y))
    train, test = idx[:36], idx[36:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mean, std = GPPredictor(seed=0).fit(X[train], y[train]).predict(X[test])
    assert kendall_tau(y[test], mean) > 0.2  # a constant prediction scores 0
    assert np.all(std > 0)
