"""Weight-sharing supernet of the ``lm_transformer`` space, optionally Mixture-of-Supernets.

``LMTransformerSupernet.forward(tokens, arch)`` runs child ``arch`` on int64 token ids (N, L),
``L <= context``, and returns next-token logits (N, L, vocab_size). Shared weights follow the
leading-channel rule of :mod:`nasforge.supernets.layers`: a child of width ``d`` uses the leading
``d`` embedding features, the leading LayerNorm parameters, and the leading rows / columns of
every linear layer; a block with ``h`` heads uses the leading ``h * head_dim`` q/k/v features
(whole heads). Attention is ``F.scaled_dot_product_attention(..., is_causal=True)``.

Options: ``mixture: {experts: E, router_hidden: H}`` makes every linear layer (q, k, v, proj,
fc1, fc2 of each block and the head) a :class:`~nasforge.supernets.mixture.MixtureLinear`
routed by the arch's one-hot encoding (``space.encode``), each layer with its own router
(Mixture-of-Supernets, layer-wise routing). Without ``mixture`` every linear is a plain
:class:`~nasforge.supernets.layers.DynamicLinear` (plain weight sharing). Embeddings and
LayerNorms are shared in both cases.

``extract(arch)`` returns an :class:`LMChild` of ordinary ``nn.Embedding`` / ``nn.LayerNorm`` /
``nn.Linear`` layers (the mixtures collapsed for that arch: no experts, no router) whose logits
equal ``forward``; ``build_child`` builds the same layout with fresh weights.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from nasforge.core.types import Arch
from nasforge.spaces.base import SearchSpace
from nasforge.spaces.lm_transformer import LayerPlan, LMPlan, LMTransformerSpace
from nasforge.supernets.base import Supernet, SupernetOptions
from nasforge.supernets.layers import DynamicLinear
from nasforge.supernets.mixture import MixtureLinear, MixtureOptions

# ------------------------------------------------------------------------------------------------
# Plain child


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.q, self.k, self.v = nn.Linear(dim, inner), nn.Linear(dim, inner), nn.Linear(dim, inner)
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(attend(self.q(x), self.k(x), self.v(x), self.heads, self.head_dim))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """Causal multi-head attention of (N, L, heads*head_dim) projections -> (N, L, heads*head_dim)."""
    n, length, _ = q.shape

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(n, length, heads, head_dim).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=True)
    return out.transpose(1, 2).reshape(n, length, heads * head_dim)


class LMBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, mlp_ratio: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, head_dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mlp_ratio)
        self.fc2 = nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


def _init_plain(model: nn.Module) -> None:
    """Fresh weights of a plain LM module: linears N(0, 1/fan_in) with zero bias, embeddings N(0, 0.02)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 1.0 / m.in_features ** 0.5)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)


def embed(tok_emb: nn.Embedding, pos_emb: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
    """Token plus position embeddings of (N, L) ids: (N, L, embed_dim)."""
    pos = torch.arange(tokens.shape[1], device=tokens.device)
    return tok_emb(tokens) + pos_emb(pos)


class LMChild(nn.Module):
    """A standalone language model: (N, L) int64 tokens -> (N, L, vocab_size) logits."""

    def __init__(self, space: LMTransformerSpace, arch: Arch):
        super().__init__()
        p = space.plan(arch)
        self.input_shape = (p.context,)
        self.tok_emb = nn.Embedding(p.vocab_size, p.embed_dim)
        self.pos_emb = nn.Embedding(p.context, p.embed_dim)
        self.blocks = nn.Sequential(*[LMBlock(p.embed_dim, b.heads, p.head_dim, b.mlp_ratio) for b in p.layers])
        self.ln_f = nn.LayerNorm(p.embed_dim)
        self.head = nn.Linear(p.embed_dim, p.vocab_size)
        _init_plain(self)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln_f(self.blocks(embed(self.tok_emb, self.pos_emb, tokens))))


class LMEmbed(nn.Module):
    """The child's input op on its own (``lm_embed``): ids (N, L) -> embeddings (N, L, dim)."""

    def __init__(self, vocab: int, context: int, dim: int):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, dim)
        self.pos_emb = nn.Embedding(context, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return embed(self.tok_emb, self.pos_emb, tokens)


def build_op(desc: dict[str, Any]) -> nn.Module:
    """One operation of ``LMTransformerSpace.ops(arch)`` as a standalone module (fresh weights).

    Input: (N, desc["seq"]) int64 ids for ``lm_embed`` (layout ``ids``), else (N, desc["seq"],
    desc["cin"]) features. The child's own modules and functions (``embed``, ``LMBlock``,
    ``nn.LayerNorm`` + ``nn.Linear``), so the table times what the child runs.
    """
    kind = desc["type"]
    m: nn.Module
    if kind == "lm_embed":
        m = LMEmbed(desc["vocab"], desc["seq"], desc["cout"])
    elif kind == "lm_block":
        d = desc["cin"]
        if desc["hidden"] % d:
            raise ValueError(f"lm_block hidden {desc['hidden']} is not a multiple of its width {d}")
        m = LMBlock(d, desc["heads"], desc["head_dim"], desc["hidden"] // d)
    elif kind == "lm_head":
        m = nn.Sequential(nn.LayerNorm(desc["cin"]), nn.Linear(desc["cin"], desc["cout"]))
    else:
        raise ValueError(f"unknown lm_transformer op type {kind!r}")
    _init_plain(m)
    return m


# ------------------------------------------------------------------------------------------------
# Supernet


class LMTransformerSupernetOptions(SupernetOptions):
    mixture: MixtureOptions | None = Field(
        default=None, description="Mixture-of-Supernets: {experts, router_hidden}; absent = plain weight sharing")


class _ElasticLinear(nn.Module):
    """One elastic linear position: a DynamicLinear, or a MixtureLinear when a mixture is set."""

    def __init__(self, max_in: int, max_out: int, mixture: MixtureOptions | None, encoding_dim: int):
        super().__init__()
        self.layer: DynamicLinear | MixtureLinear
        if mixture is None:
            self.layer = DynamicLinear(max_in, max_out)
        else:
            self.layer = mixture.linear(max_in, max_out, encoding_dim)

    def forward(self, x: torch.Tensor, enc: torch.Tensor, out: int) -> torch.Tensor:
        if isinstance(self.layer, MixtureLinear):
            return self.layer(x, enc, out_features=out)
        return self.layer(x, out_features=out)

    def copy_to(self, linear: nn.Linear, enc: torch.Tensor) -> None:
        if isinstance(self.layer, MixtureLinear):
            self.layer.copy_to(linear, enc)
        else:
            self.layer.copy_to(linear)


class _DynamicLayerNorm(nn.Module):
    def __init__(self, max_dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(max_dim))
        self.bias = nn.Parameter(torch.zeros(max_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        return F.layer_norm(x, (d,), self.weight[:d], self.bias[:d], self.eps)

    @torch.no_grad()
    def copy_to(self, ln: nn.LayerNorm) -> None:
        d = ln.normalized_shape[0]
        ln.weight.copy_(self.weight[:d])
        ln.bias.copy_(self.bias[:d])
        ln.eps = self.eps


class _DynamicBlock(nn.Module):
    def __init__(self, max_dim: int, max_inner: int, max_mlp: int, mixture: MixtureOptions | None, enc_dim: int):
        super().__init__()
        self.ln1 = _DynamicLayerNorm(max_dim)
        self.q = _ElasticLinear(max_dim, max_inner, mixture, enc_dim)
        self.k = _ElasticLinear(max_dim, max_inner, mixture, enc_dim)
        self.v = _ElasticLinear(max_dim, max_inner, mixture, enc_dim)
        self.proj = _ElasticLinear(max_inner, max_dim, mixture, enc_dim)
        self.ln2 = _DynamicLayerNorm(max_dim)
        self.fc1 = _ElasticLinear(max_dim, max_mlp, mixture, enc_dim)
        self.fc2 = _ElasticLinear(max_mlp, max_dim, mixture, enc_dim)

    def forward(self, x: torch.Tensor, b: LayerPlan, head_dim: int, enc: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        inner = b.heads * head_dim
        h = self.ln1(x)
        a = attend(self.q(h, enc, inner), self.k(h, enc, inner), self.v(h, enc, inner), b.heads, head_dim)
        x = x + self.proj(a, enc, d)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x), enc, d * b.mlp_ratio)), enc, d)

    def copy_to(self, m: LMBlock, enc: torch.Tensor) -> None:
        self.ln1.copy_to(m.ln1)
        self.ln2.copy_to(m.ln2)
        for name in ("q", "k", "v", "proj"):
            getattr(self, name).copy_to(getattr(m.attn, name), enc)
        self.fc1.copy_to(m.fc1, enc)
        self.fc2.copy_to(m.fc2, enc)


class LMTransformerSupernet(Supernet):
    """Elastic causal transformer LM; Mixture-of-Supernets when ``options.mixture`` is set."""

    Options = LMTransformerSupernetOptions
    spaces = ("lm_transformer",)
    input_kind = "tokens"
    space: LMTransformerSpace
    options: LMTransformerSupernetOptions

    def __init__(self, space: SearchSpace, options: LMTransformerSupernetOptions | dict[str, Any] | None = None):
        if not isinstance(space, LMTransformerSpace):
            raise TypeError(f"LMTransformerSupernet serves the lm_transformer space, got {type(space).__name__}")
        super().__init__(space, options)
        o = space.options
        mix = self.options.mixture
        enc_dim = int(space.cardinalities.sum())
        max_d, max_inner = max(o.embed_dims), max(o.heads) * o.head_dim
        max_mlp = max_d * max(o.mlp_ratios)
        self.tok_emb = nn.Parameter(torch.randn(o.vocab_size, max_d) * 0.02)
        self.pos_emb = nn.Parameter(torch.randn(o.context, max_d) * 0.02)
        self.blocks = nn.ModuleList([_DynamicBlock(max_d, max_inner, max_mlp, mix, enc_dim)
                                     for _ in range(space.max_depth)])
        self.ln_f = _DynamicLayerNorm(max_d)
        self.head = _ElasticLinear(max_d, o.vocab_size, mix, enc_dim)
        self._cache: OrderedDict[Arch, tuple[LMPlan, torch.Tensor]] = OrderedDict()

    @classmethod
    def contract_config(cls) -> tuple[dict[str, Any], dict[str, Any]]:
        """A tiny (space options, supernet options) pair for the supernet contract suite."""
        space = {"vocab_size": 40, "context": 12, "head_dim": 4, "depths": [1, 2], "embed_dims": [8, 12],
                 "heads": [1, 2], "mlp_ratios": [1, 2]}
        return space, {"mixture": {"experts": 3, "router_hidden": 6}}

    def _plan(self, arch: Arch) -> tuple[LMPlan, torch.Tensor]:
        """(plan, arch encoding), memoized per arch (a pure cache)."""
        hit = self._cache.get(arch)
        if hit is None:
            hit = (self.space.plan(arch), torch.from_numpy(self.space.encode([arch])[0]))
            self._cache[arch] = hit
            if len(self._cache) > 256:
                self._cache.popitem(last=False)
        return hit

    def input_shape(self, arch: Arch) -> tuple[int, ...]:
        return (self.space.options.context,)

    def example_input(self, arch: Arch, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        o = self.space.options
        return torch.randint(0, o.vocab_size, (n, o.context), generator=generator)

    def forward(self, x: torch.Tensor, arch: Arch, *, dropout: float = 0.0) -> torch.Tensor:
        """Next-token logits (N, L, vocab_size) of child ``arch`` on token ids ``x`` (N, L).

        ``dropout`` is applied to the final hidden states in training mode (the trainer passes it
        for the largest child only).
        """
        p, enc = self._plan(arch)
        enc = enc.to(self.tok_emb.device)
        d, length = p.embed_dim, x.shape[1]
        if length > p.context:
            raise ValueError(f"sequence of {length} tokens is longer than the context ({p.context})")
        h = F.embedding(x, self.tok_emb[:, :d]) + self.pos_emb[:length, :d]
        for i, b in enumerate(p.layers):
            h = self.blocks[i](h, b, p.head_dim, enc)
        h = self.ln_f(h)
        if dropout > 0:
            h = F.dropout(h, dropout, self.training)
        return self.head(h, enc, p.vocab_size)

    @classmethod
    def build_child(cls, space: SearchSpace, arch: Arch) -> LMChild:
        if not isinstance(space, LMTransformerSpace):
            raise TypeError(f"LMTransformerSupernet serves the lm_transformer space, got {type(space).__name__}")
        return LMChild(space, arch)

    @torch.no_grad()
    def extract(self, arch: Arch) -> LMChild:
        """A plain LM holding copies of the (collapsed) weights ``arch`` uses."""
        p, enc = self._plan(arch)
        device = self.tok_emb.device
        enc = enc.to(device)
        child = LMChild(self.space, arch).to(device)
        d = p.embed_dim
        child.tok_emb.weight.copy_(self.tok_emb[:, :d])
        child.pos_emb.weight.copy_(self.pos_emb[:, :d])
        for i, m in enumerate(child.blocks):
            self.blocks[i].copy_to(m, enc)
        self.ln_f.copy_to(child.ln_f)
        self.head.copy_to(child.head, enc)
        return child.train(self.training)
