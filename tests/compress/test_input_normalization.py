"""A model you compress is scored on the inputs it was trained on (``evaluation.dataset.normalize``).

A model trained on 0..1 pixels scored on nasforge's default standardized inputs loses most of its
accuracy, and every KL and accuracy of the search is then about inputs it never saw."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from nasforge.core.spec import DatasetSpec, JobSpec
from nasforge.data import load_dataset
from nasforge.workers.compression_workload import CompressionWorkload
from tests.compress.helpers import tiny_digits_mlp

torch.set_num_threads(1)


def _trained_on_unit_pixels(path) -> float:
    """Trains a small MLP on digits scaled to 0..1 only; returns its val accuracy there."""
    data = load_dataset(DatasetSpec(name="digits", normalize="unit"))
    model = tiny_digits_mlp(hidden=32, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    X, y = data.train
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    model.eval()
    save_file(model.state_dict(), str(path))
    with torch.no_grad():
        return float((model(data.val[0]).argmax(1) == data.val[1]).float().mean())


def _spec(weights, **dataset) -> JobSpec:
    return JobSpec.model_validate({
        "name": "t", "model": {"source": "tests.compress.helpers:tiny_digits_mlp", "weights": str(weights),
                               "options": {"hidden": 32}},
        "space": {"name": "compression", "options": {"mode": "bits", "bits": [4, 8], "calibration_images": 64}},
        "strategy": {"name": "closed_form"}, "objectives": [{"metric": "kl", "direction": "minimize"}],
        "evaluation": {"dataset": {"name": "digits", **dataset}, "batch_size": 512},
    })


def test_a_model_trained_on_unit_pixels_is_scored_on_them(tmp_path) -> None:
    weights = tmp_path / "cnn.safetensors"
    trained_acc = _trained_on_unit_pixels(weights)
    assert trained_acc > 0.85
    logs: list[str] = []
    right = CompressionWorkload.prepare(_spec(weights, normalize="unit"), tmp_path / "unit", log=logs.append)
    assert right["dense_accuracy"] == pytest.approx(trained_acc, abs=1e-6)
    assert "no normalization (0..1); set evaluation.dataset.normalize to how the model was trained" in logs[0]
    default = CompressionWorkload.prepare(_spec(weights), tmp_path / "std", log=logs.append)
    print("dense accuracy: unit", right["dense_accuracy"], "standardized", default["dense_accuracy"])
    assert default["dense_accuracy"] < trained_acc - 0.1  # what the job scored before the option existed
    assert "the train split's per-channel mean and std" in logs[-1]
