"""ElasticViT samplers: FLOPs buckets, the adjacent-step FLOPs bound, performance-aware picks, trainer wiring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nasforge.core.errors import JobSpecError
from nasforge.core.spec import DatasetSpec, TrainingSpec
from nasforge.data import load_dataset
from nasforge.spaces.elastic_vit import ElasticViTSpace
from nasforge.supernets.elastic_vit import ElasticViTSupernet
from nasforge.supernets.sampling import ComplexityAwareSampler, FlopsBuckets
from nasforge.supernets.trainer import SandwichSampler, SandwichTrainer, UniformSampler

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def space() -> ElasticViTSpace:
    return ElasticViTSpace({"preset": "mnist"})


def _flops(space, arch) -> float:
    return space.cost(arch)["flops"]


def test_buckets_cover_the_space_and_every_bucket_is_reachable(space):
    b = FlopsBuckets(space, 6)
    assert b.edges[0] == _flops(space, space.smallest()) and b.edges[-1] == _flops(space, space.largest())
    assert np.allclose(b.edges[1:] / b.edges[:-1], b.width_ratio)
    rng = np.random.default_rng(0)
    for _ in range(300):
        f = _flops(space, space.sample(rng))
        lo, hi = b.bounds(b.index(f))
        assert b.edges[0] <= f <= b.edges[-1] and lo <= f <= hi
    sampler = ComplexityAwareSampler(space, 1, options={"buckets": 6, "max_flops_ratio": 2.0})
    for k in range(6):
        arch = sampler.sample_in_bucket(k, rng)
        assert arch is not None, k
        lo, hi = b.bounds(k)
        assert lo <= _flops(space, arch) <= hi and space.validate(arch) == arch


@pytest.mark.parametrize("ratio", [1.4, 2.0])
def test_adjacent_steps_stay_within_the_flops_bound_and_visit_every_bucket(space, ratio):
    sampler = ComplexityAwareSampler(space, 2, include_smallest=True, options={"max_flops_ratio": ratio})
    buckets = sampler.buckets.count  # the default: the fewest buckets no wider than the bound
    assert sampler.buckets.width_ratio <= ratio < FlopsBuckets(space, buckets - 1).width_ratio
    per_chain: list[list[float]] = [[], []]
    for step in range(400):
        archs = sampler.sample_step(step, np.random.default_rng([3, step]))
        assert archs[0] == space.smallest() and len(archs) == 3
        for c, a in enumerate(archs[1:]):
            per_chain[c].append(_flops(space, a))
    for flops in per_chain:
        f = np.array(flops)
        step_ratio = np.maximum(f[1:] / f[:-1], f[:-1] / f[1:])
        assert step_ratio.max() <= ratio * (1 + 1e-12)
        assert step_ratio.max() > 1.0  # it does move
        visited = np.bincount([sampler.buckets.index(x) for x in flops], minlength=buckets)
        assert (visited > 0).all(), visited
    # uniform sampling, for contrast, almost never reaches the cheapest bucket
    rng = np.random.default_rng(0)
    uniform = [sampler.buckets.index(_flops(space, space.sample(rng))) for _ in range(400)]
    assert np.mean(np.array(uniform) == 0) < np.mean(np.array([sampler.buckets.index(x) for x in per_chain[0]]) == 0)


def test_buckets_wider_than_the_bound_are_rejected_naming_the_key(space):
    with pytest.raises(JobSpecError, match=r"sampler_options\.buckets: .*buckets >= \d+"):
        ComplexityAwareSampler(space, 1, options={"buckets": 2, "max_flops_ratio": 1.5})


def _bank_favouring_global_window(space, sampler, n=64):
    """Synthetic training losses: global attention in stage 0 (window 8) is much better than window 4."""
    rng = np.random.default_rng(1)
    for step in range(n):
        arch = space.sample(rng)
        loss = 2.0 - (1.0 if space.validate(arch)["t0.window"] == 8 else 0.0) + 0.05 * rng.standard_normal()
        sampler.observe(step, [space.largest(), arch], [0.1, float(loss)])


def test_performance_aware_trains_the_estimated_best_candidate(space):
    sampler = ComplexityAwareSampler(space, 1, performance=True, options={
        "buckets": 6, "max_flops_ratio": 2.0, "candidates": 6, "min_bank": 8, "exploit": 1.0})
    # before the bank is filled, the first (random) candidate is taken
    first = sampler.sample_step(0, np.random.default_rng(0))[0]
    assert sampler.last_estimate is None
    assert first == space.from_indices(sampler.last_candidates[0])
    _bank_favouring_global_window(space, sampler)
    assert len(sampler.bank) == 64  # only the sampler's own children (the last entry) are banked
    picked_global, any_global = 0, 0
    for step in range(1, 60):
        arch = sampler.sample_step(step, np.random.default_rng([5, step]))[0]
        cands, est = sampler.last_candidates, sampler.last_estimate
        if len(cands) > 1:
            assert est is not None and len(est) == len(cands)
            assert arch == space.from_indices(cands[int(np.argmin(est))])
            windows = [space.from_indices(c)["t0.window"] for c in cands]
            if 8 in windows:
                any_global += 1
                picked_global += arch["t0.window"] == 8
    assert sampler.stats["estimated_picks"] > 30
    assert any_global > 20 and picked_global == any_global


@pytest.mark.parametrize("exploit", [0.0, 0.5])
def test_exploit_below_one_trains_a_random_candidate_on_the_other_steps(space, exploit):
    sampler = ComplexityAwareSampler(space, 1, performance=True, options={
        "buckets": 6, "max_flops_ratio": 2.0, "candidates": 6, "min_bank": 8, "exploit": exploit})
    _bank_favouring_global_window(space, sampler)
    estimated = random_picks = 0
    for step in range(1, 81):
        arch = sampler.sample_step(step, np.random.default_rng([6, step]))[0]
        cands, est = sampler.last_candidates, sampler.last_estimate
        if len(cands) < 2:
            continue
        if est is None:  # an exploring step: the first (random) candidate, nothing estimated
            random_picks += 1
            assert arch == space.from_indices(cands[0])
        else:
            estimated += 1
            assert arch == space.from_indices(cands[int(np.argmin(est))])
    assert sampler.stats["estimated_picks"] == estimated
    if exploit == 0.0:
        assert estimated == 0 and random_picks > 40
    else:
        assert estimated > 15 and random_picks > 15


def test_training_progress_is_not_read_as_an_arch_effect(space):
    """Losses fall as training goes on and the picks drift (window 8 is trained more and more);
    the estimate should see window 8's true advantage (0.2), not the progress made meanwhile."""
    def window_gap(trend_bins: int) -> float:
        sampler = ComplexityAwareSampler(space, 1, performance=True,
                                         options={"buckets": 6, "max_flops_ratio": 2.0, "trend_bins": trend_bins})
        rng = np.random.default_rng(3)
        n = 256
        for step in range(n):
            window = 8 if rng.random() < 0.1 + 0.8 * step / n else 4
            arch = space.sample(rng).replace(**{"t0.window": window})
            loss = 3.0 * np.exp(-4 * step / n) - (0.2 if window == 8 else 0.0) + 0.05 * rng.standard_normal()
            sampler.observe(step, [space.largest(), arch], [0.1, float(loss)])
        probe = space.sample(np.random.default_rng(9))
        pair = [space.to_indices(probe.replace(**{"t0.window": w})) for w in (4, 8)]
        est = sampler.estimate(pair)
        return float(est[0] - est[1])  # > 0: window 8 looks better

    raw, binned = window_gap(1), window_gap(8)
    assert raw > 0.5  # raw losses credit window 8 with the progress made while it was trained more
    assert abs(binned - 0.2) < abs(raw - 0.2) / 3


def test_state_round_trips_through_json(space):
    a = ComplexityAwareSampler(space, 2, performance=True, options={"buckets": 6, "max_flops_ratio": 2.0})
    _bank_favouring_global_window(space, a, n=20)
    for step in range(5):
        a.sample_step(step, np.random.default_rng([1, step]))
    b = ComplexityAwareSampler(space, 2, performance=True, options={"buckets": 6, "max_flops_ratio": 2.0})
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for step in range(5, 15):
        assert a.sample_step(step, np.random.default_rng([1, step])) == b.sample_step(step, np.random.default_rng([1, step]))


TINY = {
    "preset": "mnist", "input_size": 8, "resolutions": [6, 8], "stem_channels": 8, "stem_stride": 1,
    "conv_stages": [{"channels": 8, "min_depth": 1, "max_depth": 2, "stride": 1}],
    "kernels": [3], "expands": [2, 3], "widths": [0.5, 1.0],
    "vit_stages": [{"dims": [8, 16, 24], "min_depth": 1, "max_depth": 2, "stride": 2, "heads": [1, 2],
                    "head_dim": 8, "windows": [2, 4]}],
    "mlp_ratios": [1.0, 2.0],
}


def _trainer(tmp, data, options, epochs=3):
    torch.manual_seed(0)
    space = ElasticViTSpace(TINY)
    spec = TrainingSpec(epochs=epochs, batch_size=64, lr=0.05, warmup_epochs=0.3)
    return SandwichTrainer(ElasticViTSupernet(space), data, spec, seed=3, checkpoint_dir=tmp,
                           options={"eval_images": 200, "calib_images": 64, **options})


def test_trainer_picks_the_sampler_from_options(tmp_path):
    data = load_dataset(DatasetSpec(name="digits", seed=0))
    assert isinstance(_trainer(tmp_path / "a", data, {}).sampler, SandwichSampler)
    assert isinstance(_trainer(tmp_path / "b", data, {"sampling": "uniform"}).sampler, UniformSampler)
    t = _trainer(tmp_path / "c", data, {"sampler": "performance", "num_random": 2,
                                        "sampler_options": {"buckets": 4, "max_flops_ratio": 3.0}})
    assert isinstance(t.sampler, ComplexityAwareSampler) and t.sampler.performance
    assert t.sampler.count == 2 and t.sampler.include_smallest
    with pytest.raises(JobSpecError, match=r"training\.options\.sampler_options\.bogus"):
        _trainer(tmp_path / "d", data, {"sampler_options": {"bogus": 1}})
    with pytest.raises(JobSpecError, match=r"training\.options\.sampler"):
        _trainer(tmp_path / "e", data, {"sampler": "best"})


def test_performance_sampling_trains_on_digits_loss_goes_down_and_checkpoints_the_bank(tmp_path):
    data = load_dataset(DatasetSpec(name="digits", seed=0))
    t = _trainer(tmp_path, data, {"sampling": "uniform", "sampler": "performance",
                                  "sampler_options": {"buckets": 4, "max_flops_ratio": 3.0, "min_bank": 8}},
                 epochs=5)  # 110 single-path steps: at 66 the largest child sat at 0.30 on one CPU, the bar itself
    metrics = t.fit()
    losses = [h["loss_largest"] for h in t.history]  # single-path: the sampled child's loss
    assert losses[-1] < losses[0] - 0.3, losses
    assert metrics["largest_val_acc"] > 0.3 and metrics["smallest_val_acc"] > 0.3, metrics
    assert t.sampler.stats["estimated_picks"] > 0
    state = json.loads(sorted(tmp_path.glob("epoch-*"))[-1].joinpath("state.json").read_text())
    assert len(state["sampler"]["bank"]) == min(t.total_steps, t.sampler.options.bank_size)
