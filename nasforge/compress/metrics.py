"""Calibration and task metrics of a (compressed) classifier or language model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


@torch.inference_mode()
def logits_of(model: nn.Module, X: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(X[i : i + batch_size]).float() for i in range(0, len(X), batch_size)])


def kl_divergence(ref_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean over samples of KL(p_ref || p) of the softmax outputs (nats; 0 when equal)."""
    ref = F.log_softmax(ref_logits.float(), dim=-1)
    got = F.log_softmax(logits.float(), dim=-1)
    return float((ref.exp() * (ref - got)).sum(-1).mean().clamp_min(0.0))


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Share of correct argmax predictions: per image, or per token for (N, L, V) language-model logits."""
    return float((logits.argmax(-1) == y).float().mean())


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Mean cross-entropy (nats) per image, or per token for (N, L, V) logits and (N, L) targets."""
    return float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1)))
