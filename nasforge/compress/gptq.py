"""GPTQ-style calibrated rounding (Frantar et al., 2022), layer-wise, on calibration inputs.

``gptq_quantize(w, hessian, bits, ...)`` quantizes the columns of ``w`` (rows = output channels,
columns = the flattened inputs of one output) one at a time and spreads each column's rounding
error over the columns not yet quantized, weighted by the inverse Hessian ``H = X X^T`` of the
layer's calibration inputs, which lowers the output error ``||W X - Q X||`` against
round-to-nearest. Scales and zero points are fixed up front from ``w`` (per channel or per
group: "static groups"), so the result packs exactly like round-to-nearest codes. With a
keep-mask, pruned weights are forced to zero and their error is compensated the same way.

``layer_hessians(model, layers, calib)`` gathers ``X X^T / n`` for Linear and (groups=1) Conv
layers (conv inputs unfolded to kernel patches).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from nasforge.compress.quant import QuantizedWeight, quantize
from nasforge.spaces.compression import LayerInfo


def layer_hessians(model: nn.Module, layers: Iterable[LayerInfo], calib: torch.Tensor,
                   batch_size: int = 128) -> dict[str, torch.Tensor]:
    """``X X^T / n`` of each layer's inputs over the calibration images (column order of
    ``weight.reshape(out, -1)``). Grouped convolutions are left out."""
    mods = dict(model.named_modules())
    acc: dict[str, torch.Tensor] = {}
    count: dict[str, int] = {}
    handles = []
    for layer in layers:
        mod = mods[layer.name]
        if getattr(mod, "groups", 1) != 1:
            continue

        def hook(m: nn.Module, inp: tuple, out: torch.Tensor, _n: str = layer.name) -> None:
            x = inp[0].detach().float()
            if isinstance(m, nn.Linear):
                cols = x.reshape(-1, x.shape[-1])
            elif isinstance(m, nn.Conv2d):
                if isinstance(m.padding, str):
                    return
                cols = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
                cols = cols.transpose(1, 2).reshape(-1, cols.shape[1])
            else:
                return
            acc[_n] = acc.get(_n, 0) + cols.T @ cols
            count[_n] = count.get(_n, 0) + cols.shape[0]

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            for i in range(0, len(calib), batch_size):
                model(calib[i : i + batch_size])
    finally:
        for h in handles:
            h.remove()
    return {k: v / max(count[k], 1) for k, v in acc.items()}


def gptq_quantize(w: torch.Tensor, hessian: torch.Tensor, bits: int, *, granularity: str = "channel",
                  group_size: int = 128, symmetric: bool = True, mask: torch.Tensor | None = None,
                  damp: float = 0.01) -> QuantizedWeight:
    """Calibrated rounding of ``w`` (see the module docstring); codes on the RTN grid of ``w``."""
    shape = tuple(w.shape)
    W = w.detach().float().reshape(shape[0], -1).clone()
    keep = None if mask is None else mask.reshape(W.shape)
    if keep is not None:
        W = W * keep
    grid = quantize(W, bits, granularity=granularity, group_size=group_size, symmetric=symmetric)
    gs = grid.group_size
    scale = grid.scale.float()
    zero = grid.zero.float() if grid.zero is not None else None
    qmax_sym = 2 ** (bits - 1) - 1
    qmax = 2**bits - 1
    H = hessian.double().clone()
    n = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(n, dtype=H.dtype)
    try:
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).float()
    except RuntimeError:  # numerically singular even after damping: fall back to round-to-nearest
        return quantize(w * keep.reshape(shape) if keep is not None else w, bits, granularity=granularity,
                        group_size=group_size, symmetric=symmetric)
    codes = torch.zeros_like(W, dtype=torch.uint8)
    for i in range(n):
        col = W[:, i]
        s = scale[:, i // gs]
        if zero is None:
            c = torch.clamp(torch.round(col / s), -qmax_sym, qmax_sym) + qmax_sym
            q = (c - qmax_sym) * s
        else:
            z = zero[:, i // gs]
            c = torch.clamp(torch.round(col / s) + z, 0, qmax)
            q = (c - z) * s
        if keep is not None:
            pruned = ~keep[:, i]
            c = torch.where(pruned, torch.full_like(c, qmax_sym) if zero is None else zero[:, i // gs], c)
            q = torch.where(pruned, torch.zeros_like(q), q)
        codes[:, i] = c.to(torch.uint8)
        err = (col - q) / Hinv[i, i]
        if i + 1 < n:
            W[:, i + 1 :] -= err[:, None] * Hinv[i, i + 1 :][None, :]
    return QuantizedWeight(codes.reshape(shape), grid.scale, grid.zero, bits, gs, shape)


__all__ = ["gptq_quantize", "layer_hessians"]
