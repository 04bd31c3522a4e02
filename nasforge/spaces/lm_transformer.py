"""``lm_transformer``: a small causal transformer language model with elastic sizes.

Network, for an arch, on a token sequence of length ``L <= context``: token embedding + learned
position embedding (width ``embed_dim``) -> ``depth`` pre-norm blocks -> LayerNorm -> linear
head to ``vocab_size`` logits per position. A block is ``x + proj(attn(LN(x)))`` then
``x + fc2(gelu(fc1(LN(x))))``; attention is causal multi-head with ``heads`` heads of
``head_dim`` features each (q, k, v are separate ``embed_dim -> heads * head_dim`` linears, the
projection maps back to ``embed_dim``), and the MLP has ``embed_dim * mlp_ratio`` hidden units.

Choices (smallest first): ``depth``; ``embed_dim`` (shared by every block); per block position
``l{i}``: ``l{i}.heads`` and ``l{i}.mlp_ratio``. ``canonicalize`` sets the choices of blocks
beyond ``depth`` to their first value.

``cost`` is for one sequence of ``context`` tokens (the child's ``input_shape``):
``flops`` = multiply-accumulates of the linear layers (q, k, v, proj, fc1, fc2, head) over all
positions, the counting convention of the other spaces (embedding look-ups, LayerNorm,
activations, softmax and the attention matmuls are not in it); ``attention_flops`` = the
multiply-accumulates of ``Q K^T`` and ``A V`` (full L x L, not halved for the causal mask),
reported separately; ``params`` = every learnable parameter (embeddings, LayerNorm, weights,
biases); ``bytes`` = 4 * params. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, field_validator

from nasforge.core.types import Arch, Scalar
from nasforge.spaces.base import SearchSpace, SpaceOptions


class LMTransformerOptions(SpaceOptions):
    """Sizes of the language-model space."""

    vocab_size: int = Field(default=256, ge=2, description="token vocabulary (256: byte-level text)")
    context: int = Field(default=64, ge=1, description="longest token sequence (position embeddings)")
    head_dim: int = Field(default=16, ge=1, description="features per attention head")
    depths: list[int] = Field(default=[2, 3, 4], description="elastic number of blocks")
    embed_dims: list[int] = Field(default=[32, 48, 64], description="elastic embedding width")
    heads: list[int] = Field(default=[1, 2, 4], description="elastic attention heads per block")
    mlp_ratios: list[int] = Field(default=[2, 3, 4], description="elastic MLP hidden width / embedding width")

    @field_validator("depths", "embed_dims", "heads", "mlp_ratios")
    @classmethod
    def _positive_increasing(cls, v: list[int]) -> list[int]:
        if not v or any(x < 1 for x in v) or sorted(set(v)) != v:
            raise ValueError("must be a non-empty, strictly increasing list of positive integers")
        return v


@dataclass(frozen=True)
class LayerPlan:
    heads: int
    mlp_ratio: int


@dataclass(frozen=True)
class LMPlan:
    """Layer sizes of one child."""

    vocab_size: int
    context: int
    head_dim: int
    embed_dim: int
    layers: tuple[LayerPlan, ...]


class LMTransformerSpace(SearchSpace):
    id = "lm_transformer"
    version = 1
    Options = LMTransformerOptions
    options: LMTransformerOptions

    @property
    def max_depth(self) -> int:
        return max(self.options.depths)

    def build_choices(self) -> dict[str, tuple[Scalar, ...]]:
        o = self.options
        ch: dict[str, tuple[Scalar, ...]] = {"depth": tuple(o.depths), "embed_dim": tuple(o.embed_dims)}
        for i in range(self.max_depth):
            ch[f"l{i}.heads"] = tuple(o.heads)
            ch[f"l{i}.mlp_ratio"] = tuple(o.mlp_ratios)
        return ch

    def canonicalize(self, arch: Arch) -> Arch:
        changes: dict[str, Scalar] = {}
        for i in range(int(arch["depth"]), self.max_depth):
            for part, first in (("heads", self.options.heads[0]), ("mlp_ratio", self.options.mlp_ratios[0])):
                if arch[f"l{i}.{part}"] != first:
                    changes[f"l{i}.{part}"] = first
        return arch.replace(**changes) if changes else arch

    def plan(self, arch: Arch) -> LMPlan:
        o = self.options
        layers = tuple(LayerPlan(int(arch[f"l{i}.heads"]), int(arch[f"l{i}.mlp_ratio"]))
                       for i in range(int(arch["depth"])))
        return LMPlan(o.vocab_size, o.context, o.head_dim, int(arch["embed_dim"]), layers)

    def cost(self, arch: Arch) -> dict[str, float]:
        p = self.plan(arch)
        d, V, L = p.embed_dim, p.vocab_size, p.context
        macs = d * V                                     # head, per position
        attn = 0
        params = V * d + L * d + 2 * d + d * V + V       # embeddings, final LN, head
        for layer in p.layers:
            hh, m = layer.heads * p.head_dim, d * layer.mlp_ratio
            macs += 3 * d * hh + hh * d + d * m + m * d
            attn += 2 * L * L * hh
            params += 2 * d + 3 * (d * hh + hh) + (hh * d + d) + 2 * d + (d * m + m) + (m * d + d)
        return {"flops": float(L * macs), "params": float(params), "bytes": float(4 * params),
                "attention_flops": float(attn)}
