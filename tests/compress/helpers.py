"""Small real models and synthetic compression spaces shared by the compression tests."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from nasforge.core.types import Arch, EvalResult
from nasforge.spaces.compression import CompressionSpace, LayerInfo


class TinyDigitsCNN(nn.Module):
    """8x8x1 digits -> 10 logits: two convs, one linear (seeded init)."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.fc = nn.Linear(2 * width * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.relu(self.conv2(x)).flatten(1))


def tiny_digits_cnn(width: int = 8, seed: int = 0) -> TinyDigitsCNN:
    """Factory loaded by import path in the workload tests."""
    torch.manual_seed(seed)
    return TinyDigitsCNN(width)


def tiny_digits_mlp(hidden: int = 32, seed: int = 0) -> nn.Sequential:
    """8x8 digits -> 10 logits through one hidden layer, no normalization layer: unlike the CNN's
    BatchNorm, nothing in it absorbs a change in how its inputs are scaled."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def synthetic_space(sizes: list[int], mode: str = "bits", **opts: object) -> CompressionSpace:
    """A CompressionSpace over linear layers of the given row counts (64 inputs each)."""
    layers = [LayerInfo(name=f"l{i}", kind="linear", shape=[int(n), 64], macs=int(n) * 64, group=f"l{i}")
              for i, n in enumerate(sizes)]
    return CompressionSpace({"mode": mode, "layers": layers, "other_bytes": 100, "other_params": 10, **opts})


def synthetic_kl(space: CompressionSpace, arch: Arch, seed: int = 0) -> float:
    """Additive per-layer distortion c_g * 4**-bits * (1 + 3 * sparsity**2) (positive, layer specific)."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.1, 5.0, size=len(space.opts.layers))
    total = 0.0
    for i, layer in enumerate(space.opts.layers):
        b, s = space.layer_levels(arch)[layer.name]
        total += c[i] * (4.0 ** -min(b, 16)) * (1 + 3 * s**2) + c[i] * s**2
    return total


def synthetic_eval(space: CompressionSpace, archs: list[Arch], seed: int = 0) -> list[EvalResult]:
    out = []
    for a in archs:
        m = dict(space.cost(a))
        m["kl"] = synthetic_kl(space, a, seed)
        out.append(EvalResult(a.key(), m))
    return out


def log_uniform_sizes(rng: np.random.Generator, n: int) -> list[int]:
    return [int(math.exp(x)) for x in rng.uniform(math.log(4), math.log(64), size=n)]


class _Outputs(nn.Module):
    """``tiny_digits_mlp`` returning its logits the way other libraries' models do."""

    def __init__(self, kind: str, hidden: int):
        super().__init__()
        self.kind = kind
        self.net = tiny_digits_mlp(hidden)

    def forward(self, x: torch.Tensor) -> object:
        logits = self.net(x)
        if self.kind == "mapping":  # like a Hugging Face ModelOutput
            return {"logits": logits, "hidden": logits.detach()}
        if self.kind == "tuple":  # (logits, auxiliary)
            return logits, logits.detach()
        return {"scores": logits}  # no logits to find


def mlp_with_outputs(kind: str = "mapping", hidden: int = 32) -> nn.Module:
    return _Outputs(kind, hidden)
