"""MixtureLinear: collapse equals forward, gradients reach experts and router, E=1 is a dynamic linear."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nasforge.supernets.layers import DynamicLinear
from nasforge.supernets.mixture import MixtureLinear

torch.set_num_threads(1)


def _enc(dim: int, hot: list[int]) -> np.ndarray:
    e = np.zeros(dim, dtype=np.float32)
    e[hot] = 1.0
    return e


def test_to_linear_equals_forward_for_every_width():
    torch.manual_seed(0)
    layer = MixtureLinear(12, 10, experts=4, encoding_dim=6, router_hidden=8)
    with torch.no_grad():
        layer.bias.normal_()
    for hot, (cin, cout) in [([0, 3], (12, 10)), ([1, 4], (5, 7)), ([2, 5], (8, 3))]:
        enc = _enc(6, hot)
        x = torch.randn(3, 2, cin)
        plain = layer.to_linear(enc, cin, cout)
        assert type(plain) is nn.Linear and plain.weight.shape == (cout, cin)
        assert not any(isinstance(m, MixtureLinear) for m in plain.modules())
        with torch.no_grad():
            torch.testing.assert_close(plain(x), layer(x, enc, cin, cout), atol=1e-6, rtol=0)


def test_different_archs_get_different_weights():
    torch.manual_seed(0)
    layer = MixtureLinear(6, 6, experts=3, encoding_dim=4)
    a = layer.mixing_weights(_enc(4, [0]))
    b = layer.mixing_weights(_enc(4, [3]))
    torch.testing.assert_close(a.sum(), torch.tensor(1.0))
    assert not torch.allclose(a, b)
    wa, _ = layer.active_weight(_enc(4, [0]), 6, 6)
    wb, _ = layer.active_weight(_enc(4, [3]), 6, 6)
    assert not torch.allclose(wa, wb)


def test_gradients_reach_experts_and_router():
    torch.manual_seed(0)
    layer = MixtureLinear(8, 8, experts=3, encoding_dim=5, router_hidden=4)
    x = torch.randn(4, 6)
    layer(x, _enc(5, [1, 2]), out_features=5).pow(2).sum().backward()
    assert layer.weight.grad is not None
    # only the active block of each expert gets a gradient, and every expert gets one
    assert torch.all(layer.weight.grad[:, :5, :6].abs().sum(dim=(1, 2)) > 0)
    assert torch.all(layer.weight.grad[:, 5:, :] == 0) and torch.all(layer.weight.grad[:, :, 6:] == 0)
    assert layer.bias.grad is not None and torch.all(layer.bias.grad[:, :5].abs() > 0)
    for p in layer.router.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_single_expert_is_a_dynamic_linear():
    torch.manual_seed(0)
    layer = MixtureLinear(9, 7, experts=1, encoding_dim=3)
    dyn = DynamicLinear(9, 7)
    with torch.no_grad():
        layer.bias.normal_()
        dyn.weight.copy_(layer.weight[0])
        dyn.bias.copy_(layer.bias[0])
    x = torch.randn(5, 4)
    for enc in (_enc(3, [0]), _enc(3, [1, 2])):
        torch.testing.assert_close(layer.mixing_weights(enc), torch.ones(1))
        torch.testing.assert_close(layer(x, enc, out_features=6), dyn(x, out_features=6))


def test_bad_sizes_and_encodings_are_rejected():
    layer = MixtureLinear(4, 4, experts=2, encoding_dim=3)
    with pytest.raises(ValueError, match="does not fit"):
        layer(torch.randn(1, 4), _enc(3, [0]), out_features=5)
    with pytest.raises(ValueError, match="in_features"):
        layer(torch.randn(1, 4), _enc(3, [0]), in_features=3)
    with pytest.raises(ValueError, match="encoding"):
        layer(torch.randn(1, 4), _enc(2, [0]))
    with pytest.raises(ValueError, match="experts"):
        MixtureLinear(4, 4, experts=0, encoding_dim=3)
