"""Dynamic layers: centre kernels, leading channels, per-width BN statistics, copy to plain layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nasforge.supernets.layers import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear

torch.set_num_threads(1)


def test_conv_serves_centre_kernel_and_leading_channels():
    torch.manual_seed(0)
    conv = DynamicConv2d(6, 8, 7, stride=2)
    x = torch.randn(2, 4, 9, 9)
    y = conv(x, out_channels=5, kernel=3)
    expected = F.conv2d(x, conv.weight[:5, :4, 2:5, 2:5], None, 2, 1)
    torch.testing.assert_close(y, expected)
    plain = nn.Conv2d(4, 5, 3, 2, 1, bias=False)
    conv.copy_to(plain)
    torch.testing.assert_close(plain(x), y)


def test_depthwise_conv_uses_leading_channels():
    conv = DynamicConv2d(8, 8, 5, depthwise=True)
    x = torch.randn(1, 3, 6, 6)
    y = conv(x, out_channels=3, kernel=5)
    assert y.shape == (1, 3, 6, 6)
    torch.testing.assert_close(y, F.conv2d(x, conv.weight[:3], None, 1, 2, 1, 3))


def test_bn_normalizes_active_width_and_updates_only_its_statistics():
    bn = DynamicBatchNorm2d(6)
    x = torch.randn(16, 4, 3, 3) * 3 + 2
    bn.train()
    y = bn(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    assert torch.all(bn.running_mean[:4] != 0) and torch.all(bn.running_mean[4:] == 0)
    assert torch.all(bn.running_var[4:] == 1)
    bn.eval()
    plain = nn.BatchNorm2d(4)
    bn.copy_to(plain)
    plain.eval()
    torch.testing.assert_close(plain(x), bn(x))


def test_linear_uses_leading_inputs():
    lin = DynamicLinear(10, 3)
    x = torch.randn(2, 6)
    torch.testing.assert_close(lin(x), x @ lin.weight[:, :6].T + lin.bias)
    plain = nn.Linear(6, 3)
    lin.copy_to(plain)
    torch.testing.assert_close(plain(x), lin(x))
