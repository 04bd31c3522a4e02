"""Peak memory of one forward pass: counted from the tensors the pass really allocates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nasforge.workers.memory import MIB, measure_peak_memory, weight_bytes

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _mlp(depth: int, width: int = 256, inplace: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU(inplace=inplace)]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def test_peak_is_two_live_activations_of_a_chain() -> None:
    """In a chain the most held at once is a layer's input and its output: 2 x (batch x width)."""
    model, x = _mlp(3), torch.randn(8, 256)
    got = measure_peak_memory(model, x)
    act = 8 * 256 * 4
    assert got["activation_peak_mb"] * MIB == 2 * act
    assert got["weight_mb"] * MIB == sum(p.numel() * 4 for p in model.parameters())
    assert got["peak_memory_mb"] * MIB == pytest.approx(got["weight_mb"] * MIB + x.numel() * 4 + 2 * act)


def test_freed_tensors_leave_the_count() -> None:
    """A deeper chain of the same width holds no more at once, and twice the batch holds twice as much."""
    shallow = measure_peak_memory(_mlp(2), torch.randn(8, 256))["activation_peak_mb"]
    deep = measure_peak_memory(_mlp(12), torch.randn(8, 256))["activation_peak_mb"]
    double = measure_peak_memory(_mlp(2), torch.randn(16, 256))["activation_peak_mb"]
    assert deep == shallow
    assert double == 2 * shallow


def test_views_and_in_place_results_are_counted_once() -> None:
    """relu_ writes into its input and view shares its storage: no new bytes."""
    class ViewInPlace(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x * 2  # the one new tensor
            y = y.view(-1).relu_().view(x.shape)
            return y.t()

    got = measure_peak_memory(ViewInPlace(), torch.randn(64, 32))
    assert got["activation_peak_mb"] * MIB == 64 * 32 * 4
    inplace, plain = measure_peak_memory(_mlp(3, inplace=True), torch.randn(8, 256)), \
        measure_peak_memory(_mlp(3), torch.randn(8, 256))
    assert inplace["activation_peak_mb"] <= plain["activation_peak_mb"]


def test_shared_weights_count_once() -> None:
    lin = nn.Linear(64, 64)
    tied = nn.Sequential(lin, nn.ReLU(), lin)
    assert weight_bytes(tied) == weight_bytes(lin) == (64 * 64 + 64) * 4


def test_supernet_child_memory_grows_with_the_child(tmp_path: Path) -> None:
    """Every supernet candidate carries peak_memory_mb; the largest child needs more than the smallest."""
    from nasforge.workers.supernet_workload import SupernetWorkload
    from tests.workers.quickstart_workload import quickstart_workload

    wl, space = quickstart_workload(tmp_path, bn_recalibration_images=16, max_images=32,
                                    latency={"enabled": False, "batch_size": 4})
    small, large = wl.evaluate(space.smallest()), wl.evaluate(space.largest())
    assert "peak_memory_mb" in SupernetWorkload.metrics(wl.spec)[0]
    assert 0 < small["peak_memory_mb"] < large["peak_memory_mb"]
    assert small["activation_peak_mb"] < large["activation_peak_mb"]
    # weights as stored (model_bytes, BN statistics included) are what the pass holds as weights
    assert large["weight_mb"] * MIB == pytest.approx(large["model_bytes"], rel=0.01)
    # the figure is measured, not timed: the same on every pass
    assert wl.evaluate(space.largest())["peak_memory_mb"] == large["peak_memory_mb"]
