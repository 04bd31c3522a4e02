"""Dynamic layers: one weight tensor at the largest size serves every smaller size.

Channel rule (all layers): a child with ``c`` channels uses the *leading* ``c`` channels (input
and output) of the shared tensors. Kernel rule (convolutions, BigNAS): a ``k x k`` kernel is the
centre ``k x k`` crop of the largest kernel; no transformation matrix.

The active sizes are arguments of ``forward`` (input channels are read from the input tensor),
so no layer keeps an "active subnet" between calls. ``copy_to(plain)`` copies the slice that a
plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.Linear`` of the child's shape needs.

Batch norm and widths (:class:`DynamicBatchNorm2d`): the affine parameters and the running
statistics are shared and sliced to the leading ``c`` channels. In training mode a forward
normalizes with the batch statistics of exactly the active channels of exactly this child, and
updates the leading ``c`` running statistics in place. Those running statistics are therefore a
mixture over every child trained so far and are *not* the statistics of any one child: before a
child is evaluated its BN statistics are recalibrated on training images
(``nasforge.supernets.evaluate.prepare_child``), BigNAS's post-training BN calibration. The
mixture only serves as the starting point that ``extract`` copies; when a single arch is trained
alone (train-from-scratch baselines) the running statistics are exactly that arch's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def centre_crop(weight: torch.Tensor, kernel: int) -> torch.Tensor:
    """The centre ``kernel x kernel`` window of the last two dims of ``weight``."""
    full = weight.shape[-1]
    if kernel > full or (full - kernel) % 2:
        raise ValueError(f"kernel {kernel} cannot be cut from the centre of {full}")
    start = (full - kernel) // 2
    return weight[..., start:start + kernel, start:start + kernel]


class DynamicConv2d(nn.Module):
    """Conv2d (no bias, padding ``kernel // 2``) with elastic in/out channels and kernel.

    ``depthwise=True``: groups == channels; the output channels equal the input channels.
    """

    def __init__(self, max_in: int, max_out: int, max_kernel: int, *, stride: int = 1, depthwise: bool = False):
        super().__init__()
        if depthwise and max_in != max_out:
            raise ValueError("a depthwise conv has as many outputs as inputs")
        self.max_in, self.max_out, self.max_kernel = max_in, max_out, max_kernel
        self.stride, self.depthwise = stride, depthwise
        self.weight = nn.Parameter(torch.empty(max_out, 1 if depthwise else max_in, max_kernel, max_kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def active_weight(self, cin: int, cout: int, kernel: int) -> torch.Tensor:
        if self.depthwise:
            return centre_crop(self.weight[:cin], kernel)
        return centre_crop(self.weight[:cout, :cin], kernel)

    def forward(self, x: torch.Tensor, out_channels: int, kernel: int) -> torch.Tensor:
        cin = x.shape[1]
        cout = cin if self.depthwise else out_channels
        w = self.active_weight(cin, cout, kernel)
        return F.conv2d(x, w, None, self.stride, kernel // 2, 1, cin if self.depthwise else 1)

    @torch.no_grad()
    def copy_to(self, conv: nn.Conv2d) -> None:
        cout, cin_g, k, _ = conv.weight.shape
        cin = conv.in_channels
        conv.weight.copy_(self.active_weight(cin, cout, k))


class DynamicBatchNorm2d(nn.Module):
    """BatchNorm2d over the leading ``c`` channels of shared parameters and statistics.

    See the module docstring for how statistics of different widths are handled.
    """

    def __init__(self, max_channels: int, *, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.max_channels, self.eps, self.momentum = max_channels, eps, momentum
        self.weight = nn.Parameter(torch.ones(max_channels))
        self.bias = nn.Parameter(torch.zeros(max_channels))
        self.register_buffer("running_mean", torch.zeros(max_channels))
        self.register_buffer("running_var", torch.ones(max_channels))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if self.training:
            self.num_batches_tracked.add_(1)
        # Slices of contiguous 1-D buffers are views: F.batch_norm updates them in place.
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            self.training, self.momentum, self.eps)

    @torch.no_grad()
    def copy_to(self, bn: nn.BatchNorm2d) -> None:
        c = bn.num_features
        bn.weight.copy_(self.weight[:c])
        bn.bias.copy_(self.bias[:c])
        bn.running_mean.copy_(self.running_mean[:c])
        bn.running_var.copy_(self.running_var[:c])
        bn.num_batches_tracked.copy_(self.num_batches_tracked)
        bn.eps, bn.momentum = self.eps, self.momentum


class DynamicLinear(nn.Module):
    """Linear layer using the leading ``in`` input features (and leading ``out`` outputs)."""

    def __init__(self, max_in: int, max_out: int):
        super().__init__()
        self.max_in, self.max_out = max_in, max_out
        self.weight = nn.Parameter(torch.empty(max_out, max_in))
        self.bias = nn.Parameter(torch.zeros(max_out))
        nn.init.normal_(self.weight, 0.0, 1.0 / math.sqrt(max_in))

    def forward(self, x: torch.Tensor, out_features: int | None = None) -> torch.Tensor:
        out = self.max_out if out_features is None else out_features
        return F.linear(x, self.weight[:out, : x.shape[-1]], self.bias[:out])

    @torch.no_grad()
    def copy_to(self, linear: nn.Linear) -> None:
        out, inp = linear.weight.shape
        linear.weight.copy_(self.weight[:out, :inp])
        linear.bias.copy_(self.bias[:out])


class DynamicLayerNorm(nn.Module):
    """LayerNorm over the leading ``d`` features (``d`` read from the input's last dim)."""

    def __init__(self, max_features: int, *, eps: float = 1e-5):
        super().__init__()
        self.max_features, self.eps = max_features, eps
        self.weight = nn.Parameter(torch.ones(max_features))
        self.bias = nn.Parameter(torch.zeros(max_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        return F.layer_norm(x, (d,), self.weight[:d], self.bias[:d], self.eps)

    @torch.no_grad()
    def copy_to(self, ln: nn.LayerNorm) -> None:
        d = ln.normalized_shape[-1]
        ln.weight.copy_(self.weight[:d])
        ln.bias.copy_(self.bias[:d])
        ln.eps = self.eps
