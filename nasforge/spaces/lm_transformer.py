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
biases); ``bytes`` = 4 * params. ``cost`` is the sum over ``ops(arch)``, the op list a latency
table (``nasforge profile-device --space lm_transformer``) is built from. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from nasforge.core.types import Arch, Scalar
from nasforge.spaces.base import SearchSpace, SpaceOptions
from nasforge.spaces.bignas_cnn import sum_op_costs


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

    def ops(self, arch: Arch) -> list[dict[str, Any]]:
        """The child's operations in order, as plain dicts (latency lookup-table keys), all for one
        sequence of ``seq`` (= ``context``) tokens:

        - ``lm_embed``: vocab, cout (= embed_dim), seq; layout ``ids``: takes (N, seq) int64 token
          ids, returns (N, seq, cout) token + position embeddings;
        - ``lm_block``: cin = cout = embed_dim, heads, head_dim, hidden (MLP units), seq; one
          pre-norm causal attention + MLP block;
        - ``lm_head``: cin (= embed_dim), cout (= vocab), seq: final LayerNorm and the logits linear.

        ``layout`` ``sequence`` ops take (N, seq, cin) features.
        ``nasforge.supernets.lm_transformer.build_op(desc)`` builds each one as a standalone module.
        """
        p = self.plan(arch)
        d, L = p.embed_dim, p.context
        ops: list[dict[str, Any]] = [{"type": "lm_embed", "vocab": p.vocab_size, "cout": d, "seq": L, "layout": "ids"}]
        for layer in p.layers:
            ops.append({"type": "lm_block", "cin": d, "cout": d, "heads": layer.heads, "head_dim": p.head_dim,
                        "hidden": d * layer.mlp_ratio, "seq": L, "layout": "sequence"})
        ops.append({"type": "lm_head", "cin": d, "cout": p.vocab_size, "seq": L, "layout": "sequence"})
        return ops

    def cost(self, arch: Arch) -> dict[str, float]:
        ops = self.ops(arch)
        attn = sum(2 * op["seq"] ** 2 * op["heads"] * op["head_dim"] for op in ops if op["type"] == "lm_block")
        return {**sum_op_costs(ops, lm_op_cost), "attention_flops": float(attn)}


def lm_op_cost(op: dict[str, Any]) -> tuple[int, int]:
    """(MACs, params) of one op descriptor from :meth:`LMTransformerSpace.ops` (attention products excluded)."""
    kind, L = op["type"], op["seq"]
    if kind == "lm_embed":
        return 0, (op["vocab"] + L) * op["cout"]
    if kind == "lm_block":
        d, a, m = op["cin"], op["heads"] * op["head_dim"], op["hidden"]
        macs = 3 * d * a + a * d + d * m + m * d
        return L * macs, 2 * d + 3 * (d * a + a) + (a * d + d) + 2 * d + (d * m + m) + (m * d + d)
    if kind == "lm_head":
        d, v = op["cin"], op["cout"]
        return L * d * v, 2 * d + d * v + v
    raise ValueError(f"unknown lm_transformer op type {kind!r}")
