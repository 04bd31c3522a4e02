"""pooling_mixture: balanced learned routing, routing shared by forward and extract, trains on real data."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
import torch

from nasforge.core.errors import JobSpecError
from nasforge.core.spec import DatasetSpec, TrainingSpec
from nasforge.data import load_dataset
from nasforge.spaces.bignas_cnn import BigNASCNNSpace
from nasforge.spaces.pooling_layout import PoolingLayoutSpace
from nasforge.supernets import SUPERNETS, TRAINERS
from nasforge.supernets.bignas import BigNASSupernet
from nasforge.supernets.pooling_mixture import (
    PoolingMixtureSupernet,
    PoolingMixtureTrainer,
    balanced_assignment,
    paired_standard_error,
    similar_groups,
)

torch.set_num_threads(1)

TINY = {"preset": "mnist", "input_size": 8, "stem_channels": 4, "stem_stride": 1, "num_blocks": 4,
        "num_downsamples": 2}  # 6 layouts, digits-sized


def _sizes(a: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(a, minlength=k)


def _digits_trainer(tmp_path, num_models: int, epochs: float, options: dict):
    """A seeded mixture over the TINY space and its trainer on digits (batch 64, lr 0.1)."""
    data = load_dataset(DatasetSpec(name="digits", seed=0))
    torch.manual_seed(0)
    net = PoolingMixtureSupernet(PoolingLayoutSpace(TINY), {"num_models": num_models})
    spec = TrainingSpec(epochs=epochs, batch_size=64, lr=0.1, warmup_epochs=0.2)
    return data, net, spec, PoolingMixtureTrainer(net, data, spec, seed=0, checkpoint_dir=tmp_path, options=options)


@pytest.mark.parametrize(("L", "K"), [(6, 1), (6, 2), (7, 3), (10, 4), (15, 15), (36, 5)])
def test_balanced_assignment_is_balanced(L, K):
    rng = np.random.default_rng(L * 10 + K)
    a = balanced_assignment(rng.random((L, K)))
    sizes = _sizes(a, K)
    assert sizes.sum() == L and sizes.max() - sizes.min() <= 1 and sizes.min() == L // K


def test_balanced_assignment_is_the_least_loss_balanced_one():
    rng = np.random.default_rng(3)
    for L, K in ((5, 2), (6, 3), (7, 2)):
        loss = rng.random((L, K))
        best = min(
            (c for c in itertools.product(range(K), repeat=L) if np.ptp(_sizes(np.array(c), K)) <= 1),
            key=lambda c: loss[np.arange(L), list(c)].sum(),
        )
        got = balanced_assignment(loss)
        assert loss[np.arange(L), got].sum() == pytest.approx(loss[np.arange(L), list(best)].sum())


def test_balance_overrides_a_unanimous_preference_and_ties_keep_current():
    loss = np.array([[0.1, 0.9]] * 4)  # every layout prefers model 0: only half may have it
    assert _sizes(balanced_assignment(loss), 2).tolist() == [2, 2]
    flat = np.ones((4, 2))
    current = np.array([1, 0, 0, 1])
    assert balanced_assignment(flat, current).tolist() == current.tolist()
    with pytest.raises(ValueError):
        balanced_assignment(np.ones((2, 3)))


def test_reassign_moves_layouts_toward_lower_loss():
    space = PoolingLayoutSpace(TINY)
    net = PoolingMixtureSupernet(space, {"num_models": 2, "assign_seed": 1})
    before = net.routing()
    target = 1 - before  # every layout is better off on the other model
    loss = np.where(np.arange(2)[None, :] == target[:, None], 0.2, 1.0)
    after = net.reassign(loss)
    assert after.tolist() == target.tolist() == net.routing().tolist()
    assert loss[np.arange(6), after].sum() < loss[np.arange(6), before].sum()
    assert [net.route(a) for a in space.layouts()] == target.tolist()


def test_initial_routing_is_balanced_and_seeded():
    space = PoolingLayoutSpace(TINY)
    a = PoolingMixtureSupernet(space, {"num_models": 4, "assign_seed": 0}).routing()
    b = PoolingMixtureSupernet(space, {"num_models": 4, "assign_seed": 0}).routing()
    assert a.tolist() == b.tolist() and np.ptp(_sizes(a, 4)) <= 1
    assert any(PoolingMixtureSupernet(space, {"num_models": 4, "assign_seed": s}).routing().tolist() != a.tolist()
               for s in range(1, 6))
    with pytest.raises(JobSpecError, match="supernet.options.num_models"):
        PoolingMixtureSupernet(space, {"num_models": 7})


def test_forward_and_extract_follow_the_same_routing_and_it_survives_a_checkpoint():
    space = PoolingLayoutSpace(TINY)
    torch.manual_seed(0)
    net = PoolingMixtureSupernet(space, {"num_models": 2}).eval()
    x = torch.randn(5, 1, 8, 8)
    arch = space.layouts()[2]
    k = net.route(arch)
    with torch.no_grad():
        routed = net(x, arch)
        torch.testing.assert_close(net.extract(arch)(x), routed, atol=1e-5, rtol=0)
        torch.testing.assert_close(net(x, arch, model=k), routed)
        other = net(x, arch, model=1 - k)
        assert not torch.allclose(other, routed)  # the two models really hold different weights
        flipped = net.routing()
        flipped[2], flipped[int(np.flatnonzero(flipped == 1 - k)[0])] = 1 - k, k  # swap, still balanced
        net.set_routing(flipped)
        assert net.route(arch) == 1 - k
        torch.testing.assert_close(net(x, arch), other)
        torch.testing.assert_close(net.extract(arch)(x), other, atol=1e-5, rtol=0)
        # the routing is part of the weights: a loaded supernet routes the same way
        fresh = PoolingMixtureSupernet(space, {"num_models": 2, "assign_seed": 5}).eval()
        fresh.load_state_dict(net.state_dict())
        assert fresh.routing().tolist() == flipped.tolist()
        torch.testing.assert_close(fresh(x, arch), other)
    with pytest.raises(ValueError, match="balanced"):
        net.set_routing(np.zeros(6, dtype=np.int64))


def test_loss_matrix_leaves_the_supernet_unchanged():
    space = PoolingLayoutSpace(TINY)
    net = PoolingMixtureSupernet(space, {"num_models": 2}).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    m = net.loss_matrix(torch.randn(20, 1, 8, 8, generator=g), torch.randint(0, 10, (20,), generator=g))
    assert m.shape == (6, 2) and np.isfinite(m).all() and (m > 0).all()
    assert not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_registered_and_trainer_rejects_other_supernets_and_bad_options(tmp_path):
    assert SUPERNETS.get("pooling_mixture") is PoolingMixtureSupernet
    assert TRAINERS.get("pooling_mixture") is PoolingMixtureTrainer
    data = load_dataset(DatasetSpec(name="digits", seed=0))
    spec = TrainingSpec(epochs=1, batch_size=64)
    other = BigNASSupernet(BigNASCNNSpace(BigNASSupernet.contract_config()[0]))
    with pytest.raises(JobSpecError, match="training.trainer"):
        PoolingMixtureTrainer(other, data, spec, seed=0, checkpoint_dir=tmp_path)
    net = PoolingMixtureSupernet(PoolingLayoutSpace(TINY), {"num_models": 2})
    with pytest.raises(JobSpecError, match="training.options.reassign_every"):
        PoolingMixtureTrainer(net, data, spec, seed=0, checkpoint_dir=tmp_path, options={"reassign_every": -1})
    with pytest.raises(JobSpecError, match="training.options.num_random"):
        PoolingMixtureTrainer(net, data, spec, seed=0, checkpoint_dir=tmp_path, options={"num_random": 2})


def test_trains_on_digits_loss_falls_and_routing_is_learned_balanced(tmp_path):
    data = load_dataset(DatasetSpec(name="digits", seed=0))
    space = PoolingLayoutSpace(TINY)
    torch.manual_seed(0)
    net = PoolingMixtureSupernet(space, {"num_models": 2})
    spec = TrainingSpec(epochs=3, batch_size=64, lr=0.1, warmup_epochs=0.2)
    # the learned routing itself: K initializations, exploration, every gain moves a layout
    options = {"layouts_per_step": 2, "reassign_every": 10, "loss_ema": 1.0, "probe_images": 128,
               "explore_fraction": 0.3, "freeze_fraction": 1.0, "eval_images": 200, "calib_images": 128,
               "shared_warmup_fraction": 0.0, "move_margin": 0.0}
    trainer = PoolingMixtureTrainer(net, data, spec, seed=0, checkpoint_dir=tmp_path, options=options)
    probe_start = trainer.probe()
    final = trainer.fit()
    probe_end = trainer.probe()
    L = space.num_layouts
    routed_start = probe_start[np.arange(L), net.routing()].mean()
    routed_end = probe_end[np.arange(L), net.routing()].mean()
    assert routed_end < 0.7 * routed_start  # training on real data lowers the routed layouts' loss
    assert trainer.history[-1]["loss_largest"] < trainer.history[0]["loss_largest"]
    assert final["largest_test_acc"] > 0.3  # 10 classes: chance is 0.1
    assert np.ptp(_sizes(net.routing(), 2)) <= 1
    hist = trainer.layout_sampler.history
    assert len(hist) == trainer.total_steps // 10 - (trainer.total_steps % 10 == 0)
    # with loss_ema=1 each re-solve is optimal for the losses it measured: never worse than staying
    assert all(h["probe_loss_after"] <= h["probe_loss_before"] + 1e-12 for h in hist)
    assert sum(h["moved"] for h in hist) > 0 and sum(h["probe_loss_after"] < h["probe_loss_before"] for h in hist)
    # the checkpoint carries the routing and the running loss matrix
    fresh = PoolingMixtureSupernet(space, {"num_models": 2, "assign_seed": 9})
    again = PoolingMixtureTrainer(fresh, data, spec, seed=0, checkpoint_dir=tmp_path, options=options)
    assert again.fit() == final
    assert fresh.routing().tolist() == net.routing().tolist()
    np.testing.assert_allclose(again.layout_sampler.loss, trainer.layout_sampler.loss)


def test_a_move_cost_keeps_layouts_whose_gain_is_smaller_than_it():
    current = np.array([0, 0, 1, 1])
    # layouts 0 and 2 gain 0.05 by swapping, layouts 1 and 3 gain 0.5
    loss = np.array([[0.50, 0.45], [1.0, 0.5], [0.45, 0.50], [0.5, 1.0]])
    assert balanced_assignment(loss, current).tolist() == [1, 1, 0, 0]  # no cost: every gain moves
    cost = np.full((4, 2), 0.1)
    assert balanced_assignment(loss, current, move_cost=cost).tolist() == [0, 1, 1, 0]  # only the clear gains
    assert balanced_assignment(loss, current, move_cost=np.full((4, 2), 1.0)).tolist() == current.tolist()
    # balance still wins over any cost: with every layout on model 0, two must move
    forced = balanced_assignment(loss, np.zeros(4, dtype=np.int64), move_cost=np.full((4, 2), 5.0))
    assert _sizes(forced, 2).tolist() == [2, 2]
    with pytest.raises(ValueError, match="current"):
        balanced_assignment(loss, move_cost=cost)
    with pytest.raises(ValueError, match="non-negative"):
        balanced_assignment(loss, current, move_cost=-cost)


def test_paired_standard_error_is_that_of_the_per_image_difference():
    rng = np.random.default_rng(0)
    samples = rng.random((3, 2, 50))
    current = np.array([0, 1, 0])
    se = paired_standard_error(samples, current)
    assert se.shape == (3, 2)
    assert se[np.arange(3), current].tolist() == [0.0, 0.0, 0.0]
    diff = samples[1, 0] - samples[1, 1]
    assert se[1, 0] == pytest.approx(diff.std(ddof=1) / np.sqrt(50))
    # a shared per-image offset (an image hard for every model) cancels in the pairing
    shifted = samples + rng.random(50)[None, None, :] * 10
    np.testing.assert_allclose(paired_standard_error(shifted, current), se)
    assert paired_standard_error(samples[:, :, :1], current).tolist() == [[0.0, 0.0]] * 3


def test_loss_matrix_is_the_mean_of_the_per_image_losses():
    space = PoolingLayoutSpace(TINY)
    torch.manual_seed(0)
    net = PoolingMixtureSupernet(space, {"num_models": 2}).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 1, 8, 8, generator=g), torch.randint(0, 10, (12,), generator=g)
    samples = net.loss_samples(x, y)
    assert samples.shape == (6, 2, 12) and (samples > 0).all()
    np.testing.assert_allclose(net.loss_matrix(x, y), samples.mean(axis=2), rtol=1e-6)
    with torch.no_grad():
        net.train()
        arch = space.layouts()[3]
        direct = torch.nn.functional.cross_entropy(net(x, arch, model=1), y, reduction="none")
    np.testing.assert_allclose(samples[3, 1], direct.numpy(), rtol=1e-5)
    # BN normalizes with each batch's statistics, so uneven batches are scored batch by batch
    split = net.loss_samples(x, y, batch_size=5)
    with torch.no_grad():
        first = torch.nn.functional.cross_entropy(net(x[:5], arch, model=1), y[:5], reduction="none")
        last = torch.nn.functional.cross_entropy(net(x[10:], arch, model=1), y[10:], reduction="none")
    np.testing.assert_allclose(split[3, 1, :5], first.numpy(), rtol=1e-5)
    np.testing.assert_allclose(split[3, 1, 10:], last.numpy(), rtol=1e-5)


def test_a_large_move_margin_keeps_the_initial_routing(tmp_path):
    options = {"reassign_every": 4, "loss_ema": 1.0, "probe_images": 64, "explore_fraction": 0.3,
               "freeze_fraction": 1.0, "eval_images": 100, "calib_images": 64, "move_margin": 1e6,
               "shared_warmup_fraction": 0.0}
    data, net, spec, trainer = _digits_trainer(tmp_path, 2, 1, options)
    start = net.routing()
    trainer.fit()
    hist = trainer.layout_sampler.history
    assert len(hist) >= 3 and all(h["moved"] == 0 for h in hist)
    assert net.routing().tolist() == start.tolist()
    with pytest.raises(JobSpecError, match="training.options.move_margin"):
        PoolingMixtureTrainer(net, data, spec, seed=0, checkpoint_dir=tmp_path, options={"move_margin": -1})


def test_a_shared_warmup_trains_model_0_alone_then_copies_it_into_every_model(tmp_path):
    options = {"shared_warmup_fraction": 0.25, "explore_fraction": 0.3, "reassign_every": 2, "probe_images": 32,
               "eval_images": 50, "calib_images": 32}
    data, net, spec, trainer = _digits_trainer(tmp_path, 3, 1, options)
    shared = trainer.shared_steps
    assert shared == round(0.25 * trainer.total_steps) and shared >= 2
    start = [{k: v.clone() for k, v in m.state_dict().items()} for m in net.models]
    X, y = data.train
    for step in range(shared):  # every layout on model 0, exploration or not; no re-assignment yet
        trainer.step = step
        trainer._train_step(X[:64], y[:64])
    assert trainer.layout_sampler.history == []
    for k in (1, 2):
        for name, value in net.models[k].state_dict().items():
            assert torch.equal(value, start[k][name]), name
    assert not torch.equal(net.models[0].stem_conv.weight, start[0]["stem_conv.weight"])
    trainer.split_shared_model()
    p0 = list(net.models[0].parameters())
    for k in (1, 2):
        for name, value in net.models[k].state_dict().items():
            assert torch.equal(value, net.models[0].state_dict()[name]), name
        for a, b in zip(p0, net.models[k].parameters(), strict=True):
            if a in trainer.optimizer.state:  # the momentum too, as a copy of its own
                m_a, m_b = trainer.optimizer.state[a]["momentum_buffer"], trainer.optimizer.state[b]["momentum_buffer"]
                assert torch.equal(m_a, m_b) and m_a.data_ptr() != m_b.data_ptr()
    # from here each layout trains its routed model, and the models part ways
    trainer.step = shared + 1
    trainer._train_step(X[:64], y[:64])
    weights = [m.stem_conv.weight for m in net.models]
    assert sum(not torch.equal(weights[0], w) for w in weights[1:]) >= 1
    with pytest.raises(JobSpecError, match="training.options.shared_warmup_fraction"):
        PoolingMixtureTrainer(net, data, spec, seed=0, checkpoint_dir=tmp_path, options={"shared_warmup_fraction": 1})
    single = PoolingMixtureTrainer(PoolingMixtureSupernet(net.space, {"num_models": 1}), data, spec, seed=0,
                                   checkpoint_dir=tmp_path / "one", options={"shared_warmup_fraction": 0.5})
    assert single.shared_steps == 0  # one model: nothing to share


def test_a_shared_warmup_run_trains_resumes_and_scores(tmp_path):
    options = {"shared_warmup_fraction": 0.4, "explore_fraction": 0.0, "reassign_every": 5, "move_margin": 2.0,
               "probe_images": 64, "eval_images": 100, "calib_images": 64}
    data, net, spec, trainer = _digits_trainer(tmp_path, 2, 2, options)
    space = net.space
    final = trainer.fit()
    assert final["largest_test_acc"] > 0.3
    split, *rest = trainer.layout_sampler.history  # the gradient split at the copy, then re-solves
    assert split["split"] == 1.0 and split["step"] == trainer.shared_steps
    assert all(h["step"] > trainer.shared_steps for h in rest)
    fresh = PoolingMixtureSupernet(space, {"num_models": 2, "assign_seed": 4})
    again = PoolingMixtureTrainer(fresh, data, spec, seed=0, checkpoint_dir=tmp_path, options=options)
    assert again.fit() == final and fresh.routing().tolist() == net.routing().tolist()


def test_a_resumed_run_keeps_the_options_it_was_trained_with(tmp_path):
    """A job started under other trainer defaults resumes with the options its checkpoint records
    (and says so), so it ends where the uninterrupted run does; a checkpoint from before they were
    recorded resumes with a note that says what it cannot know."""
    began = {"shared_warmup_fraction": 0.4, "explore_fraction": 0.0, "reassign_every": 5, "move_margin": 2.0,
             "probe_images": 64, "eval_images": 50, "calib_images": 64}
    _, full_net, _, full = _digits_trainer(tmp_path / "full", 2, 2, began)
    full.fit()

    class Killed(Exception):
        pass

    def kill(epoch, metrics):
        raise Killed

    _, _, _, first = _digits_trainer(tmp_path / "cut", 2, 2, began)
    with pytest.raises(Killed):
        first.fit(on_epoch=kill)
    state_file = tmp_path / "cut" / "epoch-0001" / "state.json"
    legacy = json.loads(state_file.read_text())
    assert legacy["mixture_options"]["shared_warmup_fraction"] == 0.4
    # what a later nasforge's defaults would hand the same job file
    later = {**began, "shared_warmup_fraction": 0.0, "move_margin": 0.0}
    _, net, _, resumed = _digits_trainer(tmp_path / "cut", 2, 2, later)
    assert resumed.mixture_options.shared_warmup_fraction == 0.4 and resumed.mixture_options.move_margin == 2.0
    (note,) = resumed.resume_notes
    assert "shared_warmup_fraction=0.4 (default now 0.0)" in note and "move_margin=2.0 (default now 0.0)" in note
    resumed.fit()
    for (name, a), b in zip(full_net.state_dict().items(), net.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    # nothing differs, nothing noted; a checkpoint without the record gets the note that it lacks it
    assert _digits_trainer(tmp_path / "cut", 2, 2, began)[3].resume_notes == []
    shutil.rmtree(tmp_path / "cut" / "epoch-0002")
    del legacy["mixture_options"]
    state_file.write_text(json.dumps(legacy))
    (note,) = _digits_trainer(tmp_path / "cut", 2, 2, later)[3].resume_notes
    assert "does not record the pooling_mixture trainer's options" in note and "shared_warmup_fraction=0" in note
    # a recorded value this nasforge refuses: the key and the way out, not a crash mid-training
    legacy["mixture_options"] = {**began, "move_margin": -1.0}
    state_file.write_text(json.dumps(legacy))
    with pytest.raises(JobSpecError, match=r"training.options.move_margin: the checkpoint .* move_margin=-1.0"):
        _digits_trainer(tmp_path / "cut", 2, 2, began)


def test_similar_groups_recovers_planted_groups_and_keeps_sizes():
    rng = np.random.default_rng(0)
    L, K = 12, 3
    truth = np.repeat(np.arange(K), L // K)
    S = np.where(truth[:, None] == truth[None, :], 0.8, 0.1) + 0.05 * rng.standard_normal((L, L))
    S = (S + S.T) / 2
    for seed in range(5):
        start = np.random.default_rng(seed).permutation(truth)  # a random balanced start
        out = similar_groups(S, start)
        assert sorted(np.bincount(out, minlength=K)) == sorted(np.bincount(start, minlength=K))
        same = out[:, None] == out[None, :]
        assert (same == (truth[:, None] == truth[None, :])).all()  # the planted grouping, group labels aside
    # uneven sizes are kept; with nothing to gain nothing moves
    start = np.array([0, 0, 1, 1, 2])
    assert similar_groups(np.ones((5, 5)), start).tolist() == start.tolist()
    with pytest.raises(ValueError, match="finite 3x3"):
        similar_groups(np.full((3, 3), np.nan), [0, 1, 2])


def test_gradient_split_groups_by_gradient_similarity_and_leaves_the_supernet_unchanged(tmp_path):
    options = {"shared_warmup_fraction": 0.5, "split": "gradient", "explore_fraction": 0.0, "reassign_every": 0,
               "probe_images": 64}
    data, net, spec, trainer = _digits_trainer(tmp_path, 2, 0.5, options)
    X, y = data.train
    for step in range(trainer.shared_steps):
        trainer.step = step
        trainer._train_step(X[:64], y[:64])
    state = {k: v.clone() for k, v in net.state_dict().items()}
    sim = net.gradient_similarity(X[:64], y[:64])
    L = net.space.num_layouts
    assert sim.shape == (L, L) and np.allclose(np.diag(sim), 1.0) and np.allclose(sim, sim.T)
    assert all(p.grad is None for p in net.parameters())  # zeroed by the optimizer step: untouched since
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    start = net.routing()
    trainer.step = trainer.shared_steps
    trainer._train_step(X[:64], y[:64])  # the split: regroup, then copy model 0 into every model
    (row,) = trainer.layout_sampler.history
    routed = net.routing()
    assert row["split"] == 1.0 and row["moved"] == float((routed != start).sum())
    assert routed.tolist() == similar_groups(sim, start).tolist()
    assert row["similarity_within_after"] >= row["similarity_within_before"]
    with pytest.raises(JobSpecError, match=r"^training.options.split: 'gradient' groups .* set shared_warmup_fraction > 0"):
        PoolingMixtureTrainer(net, data, spec, seed=0, checkpoint_dir=tmp_path / "x",
                              options={"split": "gradient", "shared_warmup_fraction": 0})
    # the default split is moot without a shared start: no error for leaving it out
    cold = PoolingMixtureTrainer(net, data, spec, seed=0, checkpoint_dir=tmp_path / "y",
                                 options={"shared_warmup_fraction": 0})
    assert cold.mixture_options.split == "gradient" and cold.shared_steps == 0
