"""Pruners: keep-masks for one weight tensor.

- ``magnitude_mask(w, sparsity)``: unstructured; zeroes exactly ``ceil(sparsity * numel)``
  weights (``unstructured_zeros``: at least one kept) of smallest ``|w|`` (``score`` replaces ``|w|`` when given, e.g. Wanda saliency).
- ``nm_mask(w, n, m)``: N:M structured along each row (dim 0 = output channel): in every run
  of ``m`` consecutive input weights the ``n`` of largest score are kept; a tail shorter than
  ``m`` is kept whole. The zero counts equal ``nasforge.spaces.compression.zeros_at``.
- ``wanda_score(w, input_norm)``: |w| x ||x_j||_2 of the input feature each weight multiplies
  (activation-aware saliency, Sun et al. 2023), from calibration inputs.
"""

from __future__ import annotations

import torch

from nasforge.spaces.compression import unstructured_zeros


def magnitude_mask(w: torch.Tensor, sparsity: float, score: torch.Tensor | None = None) -> torch.Tensor:
    """Bool mask (True = kept) with exactly ``unstructured_zeros(numel, sparsity)`` False entries."""
    n_zero = unstructured_zeros(w.numel(), sparsity)
    mask = torch.ones(w.numel(), dtype=torch.bool)
    if n_zero > 0:
        s = (w.detach().abs() if score is None else score).reshape(-1).float()
        idx = torch.argsort(s, stable=True)[:n_zero]
        mask[idx] = False
    return mask.reshape(w.shape)


def nm_mask(w: torch.Tensor, n: int, m: int, score: torch.Tensor | None = None) -> torch.Tensor:
    """Bool mask keeping ``n`` of every ``m`` consecutive weights of each row (see module doc)."""
    out = w.shape[0]
    s = (w.detach().abs() if score is None else score).reshape(out, -1).float()
    row = s.shape[1]
    full = (row // m) * m
    mask = torch.ones(out, row, dtype=torch.bool)
    if full:
        blocks = s[:, :full].reshape(out, -1, m)
        drop = torch.argsort(blocks, dim=2, stable=True)[:, :, : m - n]
        bm = torch.ones_like(blocks, dtype=torch.bool)
        bm.scatter_(2, drop, False)
        mask[:, :full] = bm.reshape(out, full)
    return mask.reshape(w.shape)


def wanda_score(w: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """|w| scaled by the L2 norm of the input feature each weight reads.

    ``input_norm`` has one entry per input feature of a Linear (in_features) or per input
    channel of a Conv (in_channels / groups; every kernel position of a channel shares it).
    """
    a = w.detach().abs().float()
    if w.dim() == 2:
        return a * input_norm[None, :]
    shape = [1, -1] + [1] * (w.dim() - 2)
    return a * input_norm.reshape(shape)
