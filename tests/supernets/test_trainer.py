"""SandwichTrainer: schedule, sampling hooks, checkpoints, kill/resume, loading for workers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from nasforge.core.errors import NasforgeError
from nasforge.core.spec import DatasetSpec, TrainingSpec
from nasforge.data import load_dataset
from nasforge.spaces.bignas_cnn import BigNASCNNSpace
from nasforge.supernets.bignas import BigNASSupernet
from nasforge.supernets.trainer import (
    CheckpointError,
    SandwichTrainer,
    latest_weights,
    load_trained_supernet,
    lr_at,
)

torch.set_num_threads(1)

TINY = {
    "preset": "mnist", "input_size": 8, "resolutions": [6, 8], "stem_channels": 8, "stem_stride": 1,
    "stages": [{"channels": 8, "min_depth": 1, "max_depth": 2, "stride": 1},
               {"channels": 16, "min_depth": 1, "max_depth": 2, "stride": 2}],
    "kernels": [3, 5], "expands": [2, 3], "widths": [0.5, 1.0],
}
SPEC = TrainingSpec(epochs=2, batch_size=64, lr=0.1, warmup_epochs=0.3)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DatasetSpec(name="digits", seed=0))


def _trainer(tmp, data, options=None, **kw):
    torch.manual_seed(0)
    space = BigNASCNNSpace(TINY)
    return SandwichTrainer(BigNASSupernet(space), data, SPEC, seed=7, checkpoint_dir=tmp,
                           options={"num_random": 1, **(options or {})}, **kw)


def test_lr_schedule_warms_up_decays_then_stays_constant():
    lrs = [lr_at(s, 100, 0.1, 10, 0.05, 0.8) for s in range(100)]
    assert lrs[0] < lrs[5] < lrs[9] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lrs[10:80], lrs[11:80], strict=False))
    assert lrs[80:] == [pytest.approx(0.005)] * 20


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_weights(tmp_path, digits):
    full = _trainer(tmp_path / "a", digits)
    metrics = full.fit()
    assert metrics["largest_val_acc"] > 0.5 and metrics["steps"] == full.total_steps

    class Killed(Exception):
        pass

    def kill_after_first(epoch, m):
        raise Killed

    first = _trainer(tmp_path / "b", digits)
    with pytest.raises(Killed):
        first.fit(on_epoch=kill_after_first)
    state = json.loads((tmp_path / "b" / "epoch-0001" / "state.json").read_text())
    assert state["epoch"] == 1 and state["step"] == first.steps_per_epoch

    second = _trainer(tmp_path / "b", digits)  # a new process would build a fresh trainer like this
    second.resume()
    assert second.epoch == 1 and second.step == first.steps_per_epoch
    second.fit()
    for (k, v1), v2 in zip(full.supernet.state_dict().items(), second.supernet.state_dict().values(), strict=True):
        torch.testing.assert_close(v1, v2, atol=1e-6, rtol=0, msg=k)
    # finished: fit returns the stored metrics without training again
    third = _trainer(tmp_path / "b", digits)
    again = third.fit()
    assert again["largest_val_acc"] == pytest.approx(metrics["largest_val_acc"])
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["epoch-0001", "epoch-0002"]

    loaded = load_trained_supernet(full.space, "bignas", {}, tmp_path / "a")
    x = digits.val[0][:5]
    arch = full.space.smallest()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, arch), full.supernet.eval()(x, arch))
    assert not loaded.training
    # a worker on another node: the driver's weights file, as bytes, and no folder of its own
    weights = latest_weights(tmp_path / "a")
    # what a user may point supernet.checkpoint at: the trainer's folder, one epoch of it, the file,
    # or the job's folder holding it as `supernet` (the last two were refused as holding no supernet)
    job = tmp_path / "jobs" / "J"
    job.mkdir(parents=True)
    shutil.copytree(tmp_path / "a", job / "supernet")
    assert latest_weights(job) == job / "supernet" / weights.parent.name / "model.safetensors"
    assert latest_weights(weights.parent) == weights == latest_weights(weights)
    with pytest.raises(CheckpointError, match="no trained supernet in"):
        latest_weights(tmp_path / "jobs")
    shipped = load_trained_supernet(full.space, "bignas", {}, tmp_path / "not-on-this-node",
                                    weights=(str(weights), weights.read_bytes()))
    with torch.no_grad():
        torch.testing.assert_close(shipped(x, arch), full.supernet.eval()(x, arch))
    with pytest.raises(CheckpointError, match=f"{weights} cannot be read as safetensors"):
        load_trained_supernet(full.space, "bignas", {}, tmp_path / "a", weights=(str(weights), b"not safetensors"))


def test_custom_sampler_is_used_and_observed(tmp_path, digits):
    space = BigNASCNNSpace(TINY)
    picked = space.sample(np.random.default_rng(1))

    class Recorder:
        def __init__(self):
            self.steps, self.observed = [], []

        def sample_step(self, step, rng):
            self.steps.append(step)
            return [picked]

        def observe(self, step, archs, losses):
            self.observed.append((step, archs, losses))

    rec = Recorder()
    trainer = SandwichTrainer(BigNASSupernet(space), digits, TrainingSpec(epochs=0.1, batch_size=64), seed=0,
                              checkpoint_dir=tmp_path, options={}, arch_sampler=rec)
    trainer.fit()
    assert rec.steps == list(range(trainer.total_steps))
    step, archs, losses = rec.observed[0]
    assert archs == [space.largest(), picked] and len(losses) == 2 and all(np.isfinite(losses))


def test_uniform_sampling_trains_one_child_per_step(tmp_path, digits):
    trainer = _trainer(tmp_path, digits, {"sampling": "uniform"})
    seen = []
    orig = trainer.sampler.sample_step
    trainer.sampler.sample_step = lambda step, rng: seen.append(orig(step, rng)) or seen[-1]
    trainer.total_steps = 3
    trainer.fit()
    assert [len(s) for s in seen] == [1, 1, 1] and not trainer.train_largest


def test_bad_inputs(tmp_path, digits):
    with pytest.raises(NasforgeError, match="training.options.num_random"):
        _trainer(tmp_path, digits, {"num_random": -1})
    with pytest.raises(NasforgeError, match="training.options"):
        _trainer(tmp_path, digits, {"temperature": 2})
    space = BigNASCNNSpace({**TINY, "num_classes": 3})
    with pytest.raises(NasforgeError, match="space.options.num_classes"):
        SandwichTrainer(BigNASSupernet(space), digits, SPEC, seed=0, checkpoint_dir=tmp_path)
    with pytest.raises(NasforgeError, match="supernet.checkpoint"):
        load_trained_supernet(BigNASCNNSpace(TINY), "bignas", {}, tmp_path / "nothing")


def test_a_checkpoint_scored_on_other_data_or_another_split_is_warned_about(tmp_path) -> None:
    import warnings

    from nasforge.core.errors import NasforgeWarning
    from nasforge.core.spec import JobSpec
    from nasforge.workers.supernet_workload import _warn_other_data

    base = {"name": "t", "space": {"name": "bignas_cnn"}, "supernet": {"name": "bignas"},
            "strategy": {"name": "random"}, "objectives": [{"metric": "accuracy", "direction": "maximize"}],
            "evaluation": {"dataset": {"name": "digits"}}}
    job = tmp_path / "jobs" / "trainer-job"
    (job / "supernet" / "epoch-0002").mkdir(parents=True)
    (job / "job.json").write_text(json.dumps(JobSpec.model_validate(base).to_dict()))
    weights = job / "supernet" / "epoch-0002" / "model.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same data and split: nothing to say
        _warn_other_data(JobSpec.model_validate(base), weights)
    for dataset, says in (({"name": "mnist5k"}, "name 'digits' -> 'mnist5k'"),
                          ({"name": "digits", "seed": 3}, "seed 0 -> 3")):
        spec = JobSpec.model_validate({**base, "evaluation": {"dataset": dataset}})
        with pytest.warns(NasforgeWarning, match=f"trained by job trainer-job on other data or another split \\({says}\\)"):
            _warn_other_data(spec, weights)


def test_a_resume_keeps_the_recorded_options_over_changed_defaults(tmp_path, digits):
    began = _trainer(tmp_path, digits, {"label_smoothing": 0.2, "sampler": "complexity"})
    began.save_checkpoint()
    state = json.loads((tmp_path / "epoch-0000" / "state.json").read_text())
    state["options"]["retired_option"] = 1  # an option a later nasforge dropped is ignored
    (tmp_path / "epoch-0000" / "state.json").write_text(json.dumps(state))
    later = _trainer(tmp_path, digits, {"label_smoothing": 0.0})
    assert later.options.label_smoothing == 0.2 and later.options.sampler == "complexity"
    assert type(later.sampler).__name__ == "ComplexityAwareSampler"  # built from the recorded options
    (note,) = later.resume_notes
    assert note.startswith("training.options: resuming epoch-0000 with the options it was trained with: ")
    assert "label_smoothing=0.2 (default now 0.0)" in note and "sampler='complexity' (default now 'uniform')" in note
    assert _trainer(tmp_path / "fresh", digits, {"label_smoothing": 0.0}).resume_notes == []
