"""examples/models/mnist_cnn.py: the user model of examples/compress.yaml."""

from __future__ import annotations

import torch

from examples.models.mnist_cnn import trained_mnist_cnn, weights_path


def test_same_seed_same_trained_model_whatever_the_process_drew_before(tmp_path, monkeypatch) -> None:
    """Two jobs may train the example model at once, each after its own random draws; the seed
    option alone decides the weights (it once seeded the training order but not the initial weights)."""
    states = []
    for i, draws in enumerate((1, 1000)):
        monkeypatch.setenv("NASFORGE_HOME", str(tmp_path / f"home{i}"))
        torch.randn(draws)
        states.append(trained_mnist_cnn(seed=0, epochs=1).state_dict())
        assert weights_path(0, 1).is_file()
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path / "home0"))
    loaded = trained_mnist_cnn(seed=0, epochs=1).state_dict()  # the second call loads the file
    assert all(torch.equal(loaded[k], states[0][k]) for k in loaded)
