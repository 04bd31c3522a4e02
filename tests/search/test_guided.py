"""Predictor-guided search on the torch-free toy space: determinism, resume, report, and that it
finds a better measured front than uniform random sampling with the same number of evaluations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toy import ToySpace, toy_metrics  # noqa: E402

from nasforge.core.types import Arch, Direction, EvalResult, Objective  # noqa: E402
from nasforge.search import STRATEGIES  # noqa: E402
from nasforge.search.guided import PredictorGuidedSearch  # noqa: E402
from nasforge.search.pareto import hypervolume  # noqa: E402

OBJECTIVES = [Objective("accuracy", Direction.MAXIMIZE), Objective("latency_ms", Direction.MINIMIZE)]
FAST = {"predictor": "gp", "predictor_options": {"restarts": 0},
        "population": 48, "generations": 8}


def evaluate(archs: list[Arch]) -> list[EvalResult]:
    """The toy objective, computed for real; ``mode=raise`` archs fail like a broken evaluation."""
    return [EvalResult(a.key(), error="toy failure") if a["mode"] == "raise" else EvalResult(a.key(), toy_metrics(a))
            for a in archs]


def hypervolume_2d(points: list[tuple[float, float]], ref: tuple[float, float] = (0.0, 12.0)) -> float:
    """Area dominated by (accuracy up, latency down) points and bounded by ``ref``."""
    if not points:
        return 0.0
    F = np.array([(-a, lat) for a, lat in points])
    return hypervolume(F, np.array([-ref[0], ref[1]]))


def run(strategy: PredictorGuidedSearch, rounds: int, n: int) -> tuple[list[list[Arch]], list[tuple[float, float]]]:
    asked, points = [], []
    for _ in range(rounds):
        archs = strategy.ask(n)
        results = evaluate(archs)
        points += [(r.metrics["accuracy"], r.metrics["latency_ms"]) for r in results if r.ok]
        strategy.tell(archs, results)
        asked.append(archs)
    return asked, points


def make(seed: int = 0, **opts: Any) -> PredictorGuidedSearch:
    return PredictorGuidedSearch(ToySpace(), objectives=OBJECTIVES, seed=seed, options={**FAST, **opts})


def test_registered_and_import_does_not_pull_torch() -> None:
    assert STRATEGIES.get("guided") is PredictorGuidedSearch
    code = "import sys, nasforge.search.guided; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_same_seed_same_asks_and_canonical_unique_archs() -> None:
    a, _ = run(make(seed=1), rounds=3, n=8)
    b, _ = run(make(seed=1), rounds=3, n=8)
    assert a == b
    space = ToySpace()
    keys = [x.key() for r in a for x in r]
    assert len(keys) == len(set(keys)) == 24
    assert all(space.validate(x) == x for r in a for x in r)


def test_report_scores_newest_results_before_refit() -> None:
    s = make()
    s.tell(archs := s.ask(10), evaluate(archs))
    assert s.report() == {}  # no predictor existed before the first results
    archs = s.ask(10)
    results = evaluate(archs)
    ok = [(a, r) for a, r in zip(archs, results, strict=True) if r.ok]
    means, _ = s.predict_metrics([a for a, _ in ok])  # the predictor as it was before this tell
    s.tell(archs, results)
    rep = s.report()
    from nasforge.predictors.metrics import kendall_tau

    truth = np.array([r.metrics["accuracy"] for _, r in ok])
    assert rep["accuracy_kendall_tau"] == pytest.approx(kendall_tau(truth, means["accuracy"]))
    assert rep["accuracy_n"] == len(ok)
    assert {"latency_ms_kendall_tau", "latency_ms_spearman_rho", "latency_ms_rmse"} <= set(rep)


def test_job_report_pools_every_prediction_made_before_its_measurement() -> None:
    import json

    from nasforge.predictors.metrics import kendall_tau

    s = make(seed=3)
    assert s.summary() == ""
    s.tell(archs := s.ask(8), evaluate(archs))  # no predictor yet: nothing to pool
    truth, pred = [], []
    for _ in range(3):
        archs = s.ask(8)
        results = evaluate(archs)
        ok = [(a, r) for a, r in zip(archs, results, strict=True) if r.ok]
        means, _ = s.predict_metrics([a for a, _ in ok])
        truth += [r.metrics["accuracy"] for _, r in ok]
        pred += list(means["accuracy"])
        s.tell(archs, results)
    rep = s.report()
    assert rep["job_accuracy_n"] == len(truth)
    assert rep["job_accuracy_kendall_tau"] == pytest.approx(kendall_tau(np.array(truth), np.array(pred)))
    line = s.summary()
    assert line.startswith("predictors, each candidate predicted before it was measured: accuracy Kendall tau ")
    assert f"({len(truth)} candidates)" in line and "latency_ms Kendall tau" in line
    resumed = make(seed=3)
    resumed.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert resumed.report()["job_accuracy_n"] == len(truth)


def test_state_dict_resume_continues_exactly() -> None:
    import json

    first = make(seed=2)
    run(first, rounds=2, n=8)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = make(seed=2)
    resumed.load_state_dict(state)
    assert first.ask(8) == resumed.ask(8)


def test_pretrain_needs_a_pretrainable_predictor() -> None:
    from nasforge.core.errors import NasforgeError

    with pytest.raises(NasforgeError, match="pretrain"):
        make(predictor="gbt", pretrain=True)


@pytest.mark.slow
def test_beats_random_sampling_with_equal_real_evaluations() -> None:
    """Mean hypervolume over 3 seeds, 50 real evaluations each (best possible on this toy: 7.48)."""
    space = ToySpace()
    guided_hv, random_hv = [], []
    for seed in range(3):
        _, guided = run(make(seed=seed), rounds=5, n=10)
        rng = np.random.default_rng(seed)
        rand = evaluate([space.sample(rng) for _ in range(50)])
        random_pts = [(r.metrics["accuracy"], r.metrics["latency_ms"]) for r in rand if r.ok]
        guided_hv.append(hypervolume_2d(guided))
        random_hv.append(hypervolume_2d(random_pts))
    assert np.mean(guided_hv) > np.mean(random_hv) + 0.2, (guided_hv, random_hv)


# ---- a latency table predicts latency_ms --------------------------------------------------------
def _table_file(tmp_path: Path) -> tuple[Any, Path, Any]:
    """A latency table file in the profile-device format whose op latencies are a fixed function
    of the op's analytic cost (deterministic, no timing), and a 'measured' latency = table sum
    with a per-op overhead and a scale error the correction has to learn."""
    import json

    from nasforge.predictors.latency import LUT_FORMAT, LUT_VERSION, LatencyLUT, distinct_ops, op_key
    from nasforge.spaces.bignas_cnn import BigNASCNNSpace, op_cost

    space = BigNASCNNSpace()
    ops = [{"key": op_key(d), "op": d, "latency_ms": 0.02 + 1e-6 * op_cost(d)[0]} for d in distinct_ops(space, patience=500)]
    path = tmp_path / "lut.json"
    path.write_text(json.dumps({"format": LUT_FORMAT, "version": LUT_VERSION, "space": space.describe(),
                                "device": {"id": "synthetic"}, "ops": ops}))
    lut = LatencyLUT.load(path)

    def measure(archs: list[Arch], device: str = "synthetic") -> list[EvalResult]:
        out = []
        for a in archs:
            idx = space.to_indices(a)
            lat = 1.15 * float(lut.predict(space, [a])[0]) + 0.03 * len(space.ops(a))
            out.append(EvalResult(a.key(), {"accuracy": float(idx.sum()) / 40 - 0.01 * float(idx[0]),
                                            "latency_ms": lat}, device={"id": device}))
        return out

    return space, path, measure


def test_latency_table_predicts_latency_and_reports_its_error(tmp_path: Path) -> None:
    space, path, measure = _table_file(tmp_path)
    s = PredictorGuidedSearch(space, objectives=OBJECTIVES, seed=0,
                              options={**FAST, "latency_table": str(path), "latency_correction": "ridge"})
    assert "latency_ms" not in s._predictors and "latency_ms" in s._latency
    for _ in range(4):
        archs = s.ask(12)
        s.tell(archs, measure(archs))
    rep = s.report()
    # the table's corrected sum, refitted on 36 measured latencies, predicts the next 12 within 10%
    assert rep["latency_ms_within_10pct"] == 1.0
    assert rep["latency_ms_kendall_tau"] > 0.8
    assert rep["latency_table_device_match"] == 1.0
    archs = s.ask(4)
    s.tell(archs, measure(archs, device="another-machine"))  # timed elsewhere: flagged in the report
    assert s.report()["latency_table_device_match"] == 0.0


def test_latency_table_errors_name_the_key(tmp_path: Path) -> None:
    from nasforge.core.errors import JobSpecError

    space, path, _ = _table_file(tmp_path)
    with pytest.raises(JobSpecError, match="strategy.options.latency_table.*profile-device"):
        PredictorGuidedSearch(space, objectives=OBJECTIVES, options={**FAST, "latency_table": str(tmp_path / "no.json")})
    with pytest.raises(JobSpecError, match="strategy.options.latency_table.*built for space"):
        PredictorGuidedSearch(ToySpace(), objectives=OBJECTIVES, options={**FAST, "latency_table": str(path)})


def test_latency_table_for_other_space_options_is_refused(tmp_path: Path) -> None:
    from nasforge.core.errors import JobSpecError
    from nasforge.spaces.bignas_cnn import BigNASCNNSpace

    _, path, _ = _table_file(tmp_path)  # built for the default options
    other = BigNASCNNSpace({"preset": "imagenet"})
    with pytest.raises(JobSpecError, match="does not cover this space's options.*--options"):
        PredictorGuidedSearch(other, objectives=OBJECTIVES, options={**FAST, "latency_table": str(path)})
