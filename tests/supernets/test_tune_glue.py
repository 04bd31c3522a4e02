"""Ray Tune glue: train-from-scratch baseline, standalone trials with ASHA, recipe tuning."""

from __future__ import annotations

import pytest
import torch

from nasforge.core.spec import DatasetSpec, TrainingSpec
from nasforge.data import load_dataset
from nasforge.spaces.bignas_cnn import BigNASCNNSpace
from nasforge.workers.tune import run_standalone_trials, train_standalone, tune_supernet_recipe

torch.set_num_threads(1)

TINY = {
    "preset": "mnist", "input_size": 8, "resolutions": [6, 8], "stem_channels": 8, "stem_stride": 1,
    "stages": [{"channels": 8, "min_depth": 1, "max_depth": 2, "stride": 1},
               {"channels": 16, "min_depth": 1, "max_depth": 2, "stride": 2}],
    "kernels": [3, 5], "expands": [2, 3], "widths": [0.5, 1.0],
}
DIGITS = DatasetSpec(name="digits", seed=0)


@pytest.mark.slow
def test_train_standalone_learns_and_is_deterministic():
    space = BigNASCNNSpace(TINY)
    data = load_dataset(DIGITS)
    spec = TrainingSpec(epochs=1, batch_size=64, lr=0.1, warmup_epochs=0.2)
    arch = space.smallest()
    a = train_standalone(space, arch, data, spec, seed=0)
    b = train_standalone(space, arch, data, spec, seed=0)
    assert a["accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert a["accuracy"] == b["accuracy"] and a["val_accuracy"] == b["val_accuracy"]
    assert a["flops"] == space.cost(arch)["flops"]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_standalone_trials_and_recipe_tuning_under_ray_tune(ray_local, tmp_path):
    from ray import tune

    space = BigNASCNNSpace(TINY)
    spec = TrainingSpec(epochs=0.3, batch_size=64, lr=0.1, warmup_epochs=0.1)
    archs = [space.smallest(), space.largest()]
    rows = run_standalone_trials(space, archs, DIGITS, spec, seed=0, asha=True, storage_path=tmp_path / "a")
    assert [r["arch_key"] for r in rows] == [a.key() for a in archs]
    for r in rows:
        assert "error" not in r, r
        assert 0 <= r["val_accuracy"] <= 1 and 0 <= r["accuracy"] <= 1
    assert rows[0]["flops"] < rows[1]["flops"]

    trials = tune_supernet_recipe(space=space, supernet_name="bignas", dataset=DIGITS, training=spec,
                                  param_space={"lr": tune.grid_search([0.05, 0.2]), "num_random": 1},
                                  asha=True, storage_path=tmp_path / "b")
    assert sorted(t["lr"] for t in trials) == [0.05, 0.2]
    assert all("error" not in t and 0 <= t["mean_val_acc"] <= 1 for t in trials)
    assert trials[0]["mean_val_acc"] >= trials[1]["mean_val_acc"]
