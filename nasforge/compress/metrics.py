"""Calibration and task metrics of a (compressed) classifier or language model."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def as_logits(out: Any) -> torch.Tensor:
    """The logits in what a model returns: a tensor; the ``logits`` of a mapping or of an output
    object (Hugging Face's ``ModelOutput``); the first item of a tuple or list."""
    if isinstance(out, torch.Tensor):
        return out
    found = out.get("logits") if isinstance(out, Mapping) else getattr(out, "logits", None)
    if isinstance(found, torch.Tensor):
        return found
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    what = f"a mapping with keys {sorted(map(str, out))[:6]}" if isinstance(out, Mapping) else \
        f"a {type(out).__name__}"
    raise TypeError(f"the model returns {what}; nasforge takes its logits: a tensor, a tuple or list whose first "
                    "item is the logits, or a mapping / output object with 'logits'")


@contextmanager
def logits_only(model: nn.Module) -> Iterator[nn.Module]:
    """While inside, ``model(x)`` returns ``as_logits`` of its output (to trace a model that returns a
    mapping or a tuple into a graph with one ``logits`` output); parameter names stay as they are."""
    if "forward" in model.__dict__:
        yield model
        return
    forward = type(model).forward
    model.forward = lambda *args, **kwargs: as_logits(forward(model, *args, **kwargs))  # type: ignore[method-assign]
    try:
        yield model
    finally:
        del model.forward


@torch.inference_mode()
def logits_of(model: nn.Module, X: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([as_logits(model(X[i : i + batch_size])).float() for i in range(0, len(X), batch_size)])


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
