"""LUT + learned correction: it learns a systematic gap between the LUT sum and end-to-end time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nasforge.predictors.latency import LatencyLUT, LatencyPredictor, distinct_ops, op_key
from nasforge.spaces.bignas_cnn import BigNASCNNSpace


def synthetic_lut(space: BigNASCNNSpace) -> LatencyLUT:
    """Op latency = a fixed function of the op's analytic cost (no timing: deterministic)."""
    from nasforge.spaces.bignas_cnn import op_cost

    table = {op_key(d): 0.02 + 1e-6 * op_cost(d)[0] for d in distinct_ops(space, patience=500)}
    return LatencyLUT(table, device_id="synthetic", space_id=space.id)


@pytest.mark.parametrize("correction", ["ridge", "huber", "gbt"])
def test_correction_learns_overhead_and_scale(correction: str, tmp_path: Path) -> None:
    space = BigNASCNNSpace()
    lut = synthetic_lut(space)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(260)]
    lut_sum = lut.predict(space, archs)
    depth = np.array([len(space.ops(a)) for a in archs])
    measured = 1.15 * lut_sum + 0.03 * depth  # per-module call overhead + a scale error
    plain = np.abs(lut_sum[200:] / measured[200:] - 1)
    pred = LatencyPredictor(lut, correction=correction, seed=0).fit(space, archs[:200], measured[:200])
    mean, std = pred.predict(space, archs[200:])
    err = np.abs(mean / measured[200:] - 1)
    assert np.mean(plain <= 0.10) < 0.5  # the plain sum misses by more than 10% ...
    assert np.mean(err <= 0.10) == 1.0  # ... the corrected prediction does not
    assert np.all(std >= 0)
    pred.save(tmp_path / "lat.pkl")
    again = LatencyPredictor.load(tmp_path / "lat.pkl").predict(space, archs[200:])
    np.testing.assert_array_equal(again[0], mean)


def test_distinct_ops_cover_sampled_archs() -> None:
    space = BigNASCNNSpace()
    keys = {op_key(d) for d in distinct_ops(space, patience=500)}
    rng = np.random.default_rng(9)
    for _ in range(300):
        assert {op_key(d) for d in space.ops(space.sample(rng))} <= keys
