"""Architecture-routed mixture-of-experts elastic linear layer (Mixture-of-Supernets).

Mixture-of-Supernets (Jawahar et al., 2023) replaces the single shared weight matrix of an elastic
linear layer with ``E`` expert matrices and a small router. The router reads the *architecture*
(not the token or the image) and returns mixing weights; the child's weight is the mixture of
the experts, then sliced to the child's width with the same leading-channel rule as
:class:`nasforge.supernets.layers.DynamicLinear`. Different children therefore get different
(but still shared, smoothly related) weights, which loosens the weight-sharing constraint.
Routing is layer-wise: every :class:`MixtureLinear` owns its router.

API
---
``MixtureLinear(max_in, max_out, *, experts, encoding_dim, router_hidden=16, init_spread=0.1, temperature=0.1)``
    ``experts`` (E >= 1) expert matrices ``(E, max_out, max_in)`` and biases ``(E, max_out)``;
    ``encoding_dim`` is the length of the arch encoding (``space.encode([arch]).shape[1]``);
    ``router_hidden`` is the hidden width of the router MLP
    ``Linear(encoding_dim, H) -> ReLU -> Linear(H, E) -> softmax``. Experts start from one shared
    draw (std ``1/sqrt(max_in)``, as DynamicLinear) plus an independent perturbation of relative
    size ``init_spread``, so at initialisation the mixture is close to a plain dynamic linear.
    ``temperature`` divides the router's logits before the softmax: below 1 the mixtures are
    sharper, so different children lean on different experts and the experts receive different
    gradients (with near-identical experts and soft, similar mixtures they move together and the
    layer stays effectively one matrix; see ``benchmarks/mos_routing.py``). The default 0.1 is what
    ``python -m benchmarks vit_mos`` (b) measured best: at 1.0 the inherited children's gap to the
    same children trained alone was no smaller than plain weight sharing's. The temperature is kept
    in the layer's state (buffer ``router_temperature``), so a checkpoint records the one it was
    trained with.

``mixing_weights(arch_encoding) -> Tensor[E]``
    Softmax router output for one arch; ``arch_encoding`` is a 1-D float vector (tensor, numpy
    array or sequence) of length ``encoding_dim``.

``active_weight(arch_encoding, in_features, out_features) -> (weight, bias)``
    The mixed weight ``sum_e a_e W_e`` sliced to ``[:out_features, :in_features]`` and the mixed
    bias sliced to ``[:out_features]``. Differentiable w.r.t. experts and router.

``forward(x, arch_encoding, in_features=None, out_features=None) -> Tensor``
    ``F.linear`` with the active weight. ``in_features`` defaults to ``x.shape[-1]`` (and must
    equal it when given); ``out_features`` defaults to ``max_out``.

``to_linear(arch_encoding, in_features, out_features) -> nn.Linear``
    Collapse: one ordinary ``nn.Linear(in_features, out_features)`` holding the mixed, sliced
    weight (a detached copy). Its outputs equal ``forward`` for that arch; it carries no router
    and no experts. ``copy_to(linear, arch_encoding)`` writes the same into an existing layer.

With ``E = 1`` the softmax is identically 1 and the layer is exactly a dynamic linear.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

ArchEncoding = torch.Tensor | np.ndarray | Sequence[float]


def as_encoding(arch_encoding: ArchEncoding, *, like: torch.Tensor | None = None) -> torch.Tensor:
    """A 1-D float tensor (on ``like``'s device and dtype when given) from any encoding form."""
    t = torch.as_tensor(np.asarray(arch_encoding, dtype=np.float32)) if not isinstance(
        arch_encoding, torch.Tensor) else arch_encoding
    if t.dim() == 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 1:
        raise ValueError(f"an arch encoding is one 1-D vector, got shape {tuple(t.shape)}")
    if like is not None:
        t = t.to(device=like.device, dtype=like.dtype)
    return t


class MixtureOptions(BaseModel):
    """The ``supernet.options.mixture`` block: Mixture-of-Supernets linears and their routers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experts: int = Field(ge=1, le=64, description="expert weight matrices per linear layer")
    router_hidden: int = Field(default=16, ge=1, le=4096, description="hidden units of each layer's router MLP")
    init_spread: float = Field(default=0.1, ge=0, le=10, description="relative spread of the experts at init")
    router_temperature: float = Field(default=0.1, gt=0, le=10,
                                      description="router logits are divided by this before the softmax "
                                                  "(< 1: sharper mixtures, children lean on different experts; "
                                                  "1.0 left the experts near-identical in benchmarks/mos_routing)")

    def linear(self, max_in: int, max_out: int, encoding_dim: int) -> MixtureLinear:
        return MixtureLinear(max_in, max_out, experts=self.experts, encoding_dim=encoding_dim,
                             router_hidden=self.router_hidden, init_spread=self.init_spread,
                             temperature=self.router_temperature)


class MixtureLinear(nn.Module):
    """Elastic linear layer whose weight is an arch-routed mixture of ``experts`` matrices."""

    def __init__(self, max_in: int, max_out: int, *, experts: int, encoding_dim: int,
                 router_hidden: int = 16, init_spread: float = 0.1, temperature: float = 0.1):
        super().__init__()
        if experts < 1:
            raise ValueError(f"experts must be >= 1, got {experts}")
        if router_hidden < 1:
            raise ValueError(f"router_hidden must be >= 1, got {router_hidden}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        # in the state dict, so a checkpoint says which temperature its experts were trained under
        self.register_buffer("router_temperature", torch.tensor(float(temperature)))
        self.max_in, self.max_out = max_in, max_out
        self.experts, self.encoding_dim = experts, encoding_dim
        std = 1.0 / math.sqrt(max_in)
        base = torch.randn(max_out, max_in) * std
        spread = torch.randn(experts, max_out, max_in) * (std * init_spread)
        self.weight = nn.Parameter(base.unsqueeze(0) + spread)          # (E, out, in)
        self.bias = nn.Parameter(torch.zeros(experts, max_out))         # (E, out)
        self.router = nn.Sequential(
            nn.Linear(encoding_dim, router_hidden), nn.ReLU(), nn.Linear(router_hidden, experts)
        )

    @property
    def temperature(self) -> float:
        return float(self.router_temperature)

    def mixing_weights(self, arch_encoding: ArchEncoding) -> torch.Tensor:
        enc = as_encoding(arch_encoding, like=self.weight)
        if enc.shape[0] != self.encoding_dim:
            raise ValueError(f"arch encoding has {enc.shape[0]} entries, the router expects {self.encoding_dim}")
        return torch.softmax(self.router(enc) / self.router_temperature, dim=-1)

    def active_weight(self, arch_encoding: ArchEncoding, in_features: int,
                      out_features: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not (0 < in_features <= self.max_in and 0 < out_features <= self.max_out):
            raise ValueError(f"({out_features}, {in_features}) does not fit in ({self.max_out}, {self.max_in})")
        a = self.mixing_weights(arch_encoding)
        # Slice first, then mix: only the active block of every expert is touched.
        w = torch.einsum("e,eoi->oi", a, self.weight[:, :out_features, :in_features])
        b = a @ self.bias[:, :out_features]
        return w, b

    def forward(self, x: torch.Tensor, arch_encoding: ArchEncoding, in_features: int | None = None,
                out_features: int | None = None) -> torch.Tensor:
        inp = x.shape[-1]
        if in_features is not None and in_features != inp:
            raise ValueError(f"in_features={in_features} but the input has {inp} features")
        w, b = self.active_weight(arch_encoding, inp, self.max_out if out_features is None else out_features)
        return F.linear(x, w, b)

    @torch.no_grad()
    def copy_to(self, linear: nn.Linear, arch_encoding: ArchEncoding) -> None:
        out, inp = linear.weight.shape
        w, b = self.active_weight(arch_encoding, inp, out)
        linear.weight.copy_(w)
        if linear.bias is not None:
            linear.bias.copy_(b)

    def to_linear(self, arch_encoding: ArchEncoding, in_features: int, out_features: int) -> nn.Linear:
        linear = nn.Linear(in_features, out_features, device=self.weight.device, dtype=self.weight.dtype)
        self.copy_to(linear, arch_encoding)
        return linear

    def extra_repr(self) -> str:
        return (f"max_in={self.max_in}, max_out={self.max_out}, experts={self.experts}, "
                f"encoding_dim={self.encoding_dim}, temperature={self.temperature}")
