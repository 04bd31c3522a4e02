"""Evaluating children: BN recalibration, accuracy, and a hook-based FLOPs / params counter.

These work on any plain ``nn.Module`` (not only BigNAS children).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasforge.core.types import Arch


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Recompute every BatchNorm's running statistics on ``images``; returns ``model`` (in place).

    The images go through the model in batches of ``batch_size`` in order, with BN layers in
    training mode (normalizing by batch statistics, as during training) and every other module in
    eval mode (no dropout). Each BN's running mean / variance are replaced by the exact mean and
    unbiased variance of all its inputs over all images (accumulated in float64, not a momentum
    average), so the result depends only on the weights, the images and ``batch_size``
    (deterministic). Afterwards the model is in eval mode. No images or no BN layers (e.g. a
    LayerNorm transformer): the model is unchanged and nothing runs.
    """
    bns = _bn_layers(model)
    if images.shape[0] == 0 or not bns:
        return model.eval()
    sums: dict[int, list[Any]] = {}

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].detach().to(torch.float64)
        dims = [0] + list(range(2, x.dim()))
        acc = sums.setdefault(id(module), [0.0, 0.0, 0])
        acc[0] = acc[0] + x.sum(dim=dims)
        acc[1] = acc[1] + (x * x).sum(dim=dims)
        acc[2] += x.numel() // x.shape[1]

    handles = [bn.register_forward_pre_hook(hook) for bn in bns]
    was_training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        for bn in bns:
            bn.train()
        device = next((p.device for p in model.parameters()), images.device)
        saved = [(bn.momentum, bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
                 for bn in bns if bn.track_running_stats]
        for start in range(0, images.shape[0], batch_size):
            model(images[start:start + batch_size].to(device))
        for bn, (_, mean0, var0, nbt0) in zip([b for b in bns if b.track_running_stats], saved, strict=True):
            acc = sums.get(id(bn))
            if acc is None:  # BN not reached by this model's forward
                bn.running_mean.copy_(mean0)
                bn.running_var.copy_(var0)
                bn.num_batches_tracked.copy_(nbt0)
                continue
            s, sq, n = acc
            mean = s / n
            var = (sq - n * mean * mean) / max(n - 1, 1)
            bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
            bn.running_var.copy_(var.clamp_min(0).to(bn.running_var.dtype))
            bn.num_batches_tracked.copy_(nbt0 + 1)
    finally:
        for h in handles:
            h.remove()
        for m, flag in was_training.items():
            m.training = flag
    return model.eval()


def prepare_child(supernet: Any, arch: Arch, calib_images: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """``supernet.extract(arch)``, BN-recalibrated on ``calib_images``, in eval mode (a plain module)."""
    model = supernet.extract(arch)
    recalibrate_bn(model, calib_images, batch_size)
    return model.eval()


@torch.no_grad()
def evaluate_classifier(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Top-1 ``accuracy`` (0..1) and mean cross-entropy ``loss`` of ``model`` on (X, y).

    Sequence outputs (logits (N, L, V) with targets (N, L), e.g. a language model's next-token
    predictions) count every position as one prediction: per-token accuracy and cross-entropy,
    averaged over all N * L positions.

    Puts the model in eval mode (and leaves it there). Inputs are moved to the model's device.
    """
    model.eval()
    device = next((p.device for p in model.parameters()), X.device)
    correct = 0
    loss = 0.0
    n = int(X.shape[0])
    if n == 0:
        return {"accuracy": float("nan"), "loss": float("nan")}
    for start in range(0, n, batch_size):
        xb = X[start:start + batch_size].to(device)
        yb = y[start:start + batch_size].to(device)
        logits = model(xb)
        if logits.dim() > 2:
            logits, yb = logits.reshape(-1, logits.shape[-1]), yb.reshape(-1)
        correct += int((logits.argmax(dim=1) == yb).sum())
        loss += float(F.cross_entropy(logits.float(), yb, reduction="sum"))
    total = n * (int(y[0].numel()) if y.dim() > 1 else 1)
    return {"accuracy": correct / total, "loss": loss / total}


@torch.no_grad()
def count_flops_params(model: nn.Module, input_shape: tuple[int, ...],
                       input_dtype: torch.dtype | None = None) -> dict[str, float]:
    """FLOPs and params of ``model`` for one input of shape ``input_shape`` (C, H, W), or (L,).

    ``input_dtype`` is the dtype of the (all-zero) probe input: default the model's parameter
    dtype; ``torch.long`` for token models (zeros are valid token ids).

    ``flops`` counts multiply-accumulates of ``nn.Conv*`` and ``nn.Linear`` layers at batch 1
    (from the shapes seen by forward hooks); BN, activations, pooling and additions are not
    counted (the same convention as the spaces' analytic ``cost``). ``params`` counts every
    parameter (buffers excluded). The model's training flags are restored.
    """
    flops = 0

    def conv_hook(m: nn.modules.conv._ConvNd, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal flops
        per_out = (m.in_channels // m.groups) * int(torch.tensor(m.kernel_size).prod())
        flops += out[0].numel() * per_out

    def linear_hook(m: nn.Linear, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal flops
        flops += (out[0].numel() // m.out_features) * m.in_features * m.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        p = next(model.parameters(), None)
        dtype = input_dtype or (p.dtype if p is not None else torch.float32)
        x = torch.zeros(1, *input_shape, device=p.device if p is not None else "cpu", dtype=dtype)
        model(x)
    finally:
        for h in handles:
            h.remove()
        for m, flag in was_training.items():
            m.training = flag
    params = sum(p.numel() for p in model.parameters())
    return {"flops": float(flops), "params": float(params)}
