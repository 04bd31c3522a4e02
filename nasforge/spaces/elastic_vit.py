"""``elastic_vit``: a hybrid network, convolutional stem + MBConv stages + transformer stages.

ElasticViT-style space (Tang et al., 2023). Network, for an arch: resize the input to
``resolution`` (when it differs) -> stem conv-BN-ReLU -> conv stages of MBConv blocks (exactly as
in ``bignas_cnn``) -> transformer stages -> LayerNorm -> mean over tokens -> linear.

A transformer stage is: an embedding conv (3x3, stride 1 or 2, no bias) -BN that maps the
feature map to ``dim`` channels, whose ``grid x grid`` positions become tokens; then ``depth``
pre-norm blocks: ``x + proj(attn(LN(x)))`` and ``x + fc2(GELU(fc1(LN(x))))``. Attention has
``heads`` heads of ``head_dim`` each (q, k, v are three linear layers ``dim -> heads*head_dim``,
``proj`` maps back to ``dim``); ``fc1`` has ``make_divisible(dim * mlp_ratio)`` outputs. With a
``window`` smaller than the stage's grid, attention is local: the grid is zero-padded to a
multiple of ``window`` and each token attends only to the real (unpadded) tokens of its own
``window x window`` window; a window at least as large as the grid is global attention.

Choices (flat names, cheapest value first):
- ``resolution``: input side length;
- ``c{i}.depth`` / ``c{i}.width`` / ``c{i}.b{j}.kernel`` / ``c{i}.b{j}.expand``: conv stage i;
- ``t{i}.depth`` / ``t{i}.dim`` / ``t{i}.heads`` / ``t{i}.window``: transformer stage i;
- ``t{i}.b{j}.mlp``: MLP ratio of block j of transformer stage i.

``canonicalize`` resets settings of inactive blocks to their first value and maps a window to the
first listed window with the same effect at the arch's resolution (every window >= the grid is
global attention). ``cost`` follows the project's convention (``count_flops_params``): ``flops``
are multiply-accumulates of convolutions and linear layers at batch 1, ``params`` every learnable
parameter. ``attn_flops`` adds the multiply-accumulates of the attention products (q k^T and the
weighted sum of v, over padded windows) that ``flops`` leaves out. This module imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nasforge.core.types import Arch, Scalar
from nasforge.spaces.base import PresetOptions, SearchSpace
from nasforge.spaces.bignas_cnn import (
    BlockPlan,
    StageOptions,
    conv_out,
    make_divisible,
    op_cost,
    sum_op_costs,
)


class ViTStageOptions(BaseModel):
    """One transformer stage: embedding widths, depth range, heads, windows, embedding stride."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dims: tuple[int, ...] = Field(min_length=1, description="elastic embedding widths (increasing)")
    min_depth: int = Field(ge=1, description="fewest active blocks")
    max_depth: int = Field(ge=1, description="most active blocks")
    stride: Literal[1, 2] = Field(description="stride of the stage's embedding conv")
    heads: tuple[int, ...] = Field(min_length=1, description="elastic number of attention heads (increasing)")
    head_dim: int = Field(ge=1, description="width of one attention head")
    windows: tuple[int, ...] = Field(min_length=1, description="attention window sides (increasing); "
                                     "a window >= the token grid is global attention")

    @model_validator(mode="after")
    def _check(self) -> ViTStageOptions:
        if self.min_depth > self.max_depth:
            raise ValueError("min_depth must not exceed max_depth")
        for name in ("dims", "heads", "windows"):
            values = getattr(self, name)
            if list(values) != sorted(set(values)) or min(values) < 1:
                raise ValueError(f"{name} must be positive and strictly increasing, got {list(values)}")
        return self


def _conv(*rows: tuple[int, int, int, int]) -> list[dict[str, int]]:
    return [{"channels": c, "min_depth": lo, "max_depth": hi, "stride": s} for c, lo, hi, s in rows]


#: Default sizes per preset; any option given explicitly overrides the preset's value.
PRESETS: dict[str, dict[str, Any]] = {
    # Tiny: trains on 2 CPU cores on MNIST-5k in minutes; FLOPs of the largest child ~25x the smallest.
    "mnist": {
        "in_channels": 1,
        "num_classes": 10,
        "input_size": 28,
        "resolutions": [16, 20, 24, 28],
        "stem_channels": 16,
        "stem_stride": 2,
        "conv_stages": _conv((16, 1, 2, 1), (24, 1, 2, 2)),
        "kernels": [3],
        "expands": [2, 4],
        "widths": [0.5, 1.0],
        "vit_stages": [
            {"dims": [32, 48, 64], "min_depth": 1, "max_depth": 2, "stride": 1, "heads": [1, 2, 4],
             "head_dim": 8, "windows": [4, 8]},
            {"dims": [48, 64, 96], "min_depth": 1, "max_depth": 2, "stride": 2, "heads": [2, 4],
             "head_dim": 8, "windows": [4]},
        ],
        "mlp_ratios": [1.0, 2.0, 3.0],
        "divisor": 4,
    },
    # Realistic sizes (ElasticViT / LeViT-like): up to ~1 GFLOP at 224-256 pixels.
    "imagenet": {
        "in_channels": 3,
        "num_classes": 1000,
        "input_size": 224,
        "resolutions": [128, 160, 192, 224, 256],
        "stem_channels": 24,
        "stem_stride": 2,
        "conv_stages": _conv((24, 1, 2, 1), (32, 2, 3, 2), (48, 2, 3, 2)),
        "kernels": [3, 5],
        "expands": [3, 4, 6],
        "widths": [0.75, 1.0, 1.25],
        "vit_stages": [
            {"dims": [96, 128, 160], "min_depth": 1, "max_depth": 4, "stride": 2, "heads": [4, 6, 8],
             "head_dim": 16, "windows": [7, 16]},
            {"dims": [160, 192, 256], "min_depth": 1, "max_depth": 5, "stride": 2, "heads": [6, 8, 12],
             "head_dim": 16, "windows": [4, 8]},
            {"dims": [256, 320, 384], "min_depth": 1, "max_depth": 4, "stride": 2, "heads": [8, 12, 16],
             "head_dim": 16, "windows": [4]},
        ],
        "mlp_ratios": [2.0, 3.0, 4.0],
        "divisor": 8,
    },
}


class ElasticViTOptions(PresetOptions):
    """Sizes of the space. ``preset`` fills every option not given explicitly."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = PRESETS

    preset: Literal["mnist", "imagenet"] = Field(default="mnist", description="mnist (tiny) | imagenet (realistic)")
    in_channels: int = Field(ge=1, description="image channels (1 for MNIST)")
    num_classes: int = Field(ge=2, description="classes of the dataset")
    input_size: int = Field(ge=4, description="side of the images the data loader yields")
    resolutions: tuple[int, ...] = Field(min_length=1, description="elastic input resolutions")
    stem_channels: int = Field(ge=1, description="channels of the stem conv")
    stem_stride: Literal[1, 2] = Field(description="stride of the stem conv")
    conv_stages: tuple[StageOptions, ...] = Field(description="MBConv stages before the transformer (may be empty)")
    kernels: tuple[int, ...] = Field(min_length=1, description="depthwise kernel sizes of MBConv blocks (odd)")
    expands: tuple[int, ...] = Field(min_length=1, description="expand ratios of MBConv blocks")
    widths: tuple[float, ...] = Field(min_length=1, description="channel multipliers of conv stages")
    vit_stages: tuple[ViTStageOptions, ...] = Field(min_length=1, description="transformer stages, first to last")
    mlp_ratios: tuple[float, ...] = Field(min_length=1, description="MLP hidden width / embedding width")
    divisor: int = Field(ge=1, description="channel counts are rounded to multiples of this")

    @model_validator(mode="after")
    def _check(self) -> ElasticViTOptions:
        for name in ("resolutions", "kernels", "expands", "widths", "mlp_ratios"):
            values = getattr(self, name)
            if list(values) != sorted(set(values)):
                raise ValueError(f"{name} must be strictly increasing (smallest first), got {list(values)}")
        if any(k % 2 == 0 or k < 1 for k in self.kernels):
            raise ValueError(f"kernels must be odd, got {list(self.kernels)}")
        if any(e < 1 for e in self.expands) or any(w <= 0 for w in self.widths) or min(self.mlp_ratios) <= 0:
            raise ValueError("expands must be >= 1, widths and mlp_ratios > 0")
        return self


@dataclass(frozen=True)
class ViTBlockPlan:
    """One active transformer block."""

    stage: int
    index: int
    dim: int
    heads: int
    head_dim: int
    hidden: int
    grid: int
    window: int  # 0: global attention, else the window side (smaller than grid)

    @property
    def attn_dim(self) -> int:
        return self.heads * self.head_dim


@dataclass(frozen=True)
class ViTStagePlan:
    """One transformer stage: its embedding conv and its active blocks."""

    stage: int
    cin: int
    dim: int
    stride: int
    input_hw: int
    grid: int
    blocks: tuple[ViTBlockPlan, ...]


@dataclass(frozen=True)
class ViTNetworkPlan:
    """Every layer size of one child: the single source the supernet, the child and cost share."""

    in_channels: int
    input_size: int
    resolution: int
    stem_channels: int
    stem_stride: int
    stem_hw: int
    conv_blocks: tuple[BlockPlan, ...]
    vit_stages: tuple[ViTStagePlan, ...]
    num_classes: int

    @property
    def feature_dim(self) -> int:
        return self.vit_stages[-1].dim


def effective_window(window: int, grid: int) -> int:
    """0 (global attention) when ``window`` covers the whole grid, else ``window``."""
    return 0 if window >= grid else int(window)


def attention_macs(op: dict[str, Any]) -> int:
    """MACs of q k^T and attn @ v of one ``vit_block`` op at batch 1 (padded windows included)."""
    grid, window = op["input_hw"], op["window"]
    if window == 0:
        tokens_sq = grid ** 4
    else:
        per_side = -(-grid // window)
        tokens_sq = per_side * per_side * window ** 4
    return 2 * op["heads"] * op["head_dim"] * tokens_sq


class ElasticViTSpace(SearchSpace):
    """The hybrid conv + transformer space (see the module docstring)."""

    id = "elastic_vit"
    version = 1
    Options = ElasticViTOptions
    options: ElasticViTOptions

    # ---- choices --------------------------------------------------------------------------
    def build_choices(self) -> dict[str, tuple[Scalar, ...]]:
        o = self.options
        ch: dict[str, tuple[Scalar, ...]] = {"resolution": tuple(o.resolutions)}
        for i, st in enumerate(o.conv_stages):
            ch[f"c{i}.depth"] = tuple(range(st.min_depth, st.max_depth + 1))
            ch[f"c{i}.width"] = tuple(o.widths)
            for j in range(st.max_depth):
                ch[f"c{i}.b{j}.kernel"] = tuple(o.kernels)
                ch[f"c{i}.b{j}.expand"] = tuple(o.expands)
        for i, vt in enumerate(o.vit_stages):
            ch[f"t{i}.depth"] = tuple(range(vt.min_depth, vt.max_depth + 1))
            ch[f"t{i}.dim"] = tuple(vt.dims)
            ch[f"t{i}.heads"] = tuple(vt.heads)
            ch[f"t{i}.window"] = tuple(vt.windows)
            for j in range(vt.max_depth):
                ch[f"t{i}.b{j}.mlp"] = tuple(o.mlp_ratios)
        return ch

    def _grids(self, resolution: int) -> list[int]:
        """Token grid side of every transformer stage at ``resolution``."""
        o = self.options
        hw = conv_out(resolution, 3, o.stem_stride)
        for st in o.conv_stages:
            hw = conv_out(hw, o.kernels[0], st.stride)  # padding k//2: the side does not depend on k
        grids = []
        for vt in o.vit_stages:
            hw = conv_out(hw, 3, vt.stride)
            grids.append(hw)
        return grids

    def canonicalize(self, arch: Arch) -> Arch:
        o = self.options
        changes: dict[str, Scalar] = {}

        def reset(name: str, first: Scalar) -> None:
            if arch[name] != first:
                changes[name] = first

        for i, st in enumerate(o.conv_stages):
            for j in range(int(arch[f"c{i}.depth"]), st.max_depth):
                reset(f"c{i}.b{j}.kernel", o.kernels[0])
                reset(f"c{i}.b{j}.expand", o.expands[0])
        grids = self._grids(int(arch["resolution"]))
        for i, vt in enumerate(o.vit_stages):
            for j in range(int(arch[f"t{i}.depth"]), vt.max_depth):
                reset(f"t{i}.b{j}.mlp", o.mlp_ratios[0])
            eff = effective_window(int(arch[f"t{i}.window"]), grids[i])
            reset(f"t{i}.window", next(w for w in vt.windows if effective_window(w, grids[i]) == eff))
        return arch.replace(**changes) if changes else arch

    # ---- structure ------------------------------------------------------------------------
    def conv_channels(self, stage: int, width: float) -> int:
        return make_divisible(self.options.conv_stages[stage].channels * width, self.options.divisor)

    def mlp_hidden(self, dim: int, ratio: float) -> int:
        return make_divisible(dim * ratio, self.options.divisor)

    def plan(self, arch: Arch) -> ViTNetworkPlan:
        """Every layer size of the child ``arch`` (validated first)."""
        arch = self.validate(arch)
        o = self.options
        res = int(arch["resolution"])
        hw = conv_out(res, 3, o.stem_stride)
        stem_hw = hw
        cin = o.stem_channels
        conv_blocks = []
        for i, st in enumerate(o.conv_stages):
            cout = self.conv_channels(i, float(arch[f"c{i}.width"]))
            for j in range(int(arch[f"c{i}.depth"])):
                k, e = int(arch[f"c{i}.b{j}.kernel"]), int(arch[f"c{i}.b{j}.expand"])
                stride = st.stride if j == 0 else 1
                out_hw = conv_out(hw, k, stride)
                conv_blocks.append(BlockPlan(stage=i, index=j, cin=cin, cout=cout, mid=cin * e, kernel=k, expand=e,
                                             stride=stride, residual=j > 0, input_hw=hw, output_hw=out_hw))
                cin, hw = cout, out_hw
        stages = []
        for i, vt in enumerate(o.vit_stages):
            dim, heads = int(arch[f"t{i}.dim"]), int(arch[f"t{i}.heads"])
            grid = conv_out(hw, 3, vt.stride)
            window = effective_window(int(arch[f"t{i}.window"]), grid)
            blocks = tuple(
                ViTBlockPlan(stage=i, index=j, dim=dim, heads=heads, head_dim=vt.head_dim,
                             hidden=self.mlp_hidden(dim, float(arch[f"t{i}.b{j}.mlp"])), grid=grid, window=window)
                for j in range(int(arch[f"t{i}.depth"]))
            )
            stages.append(ViTStagePlan(stage=i, cin=cin, dim=dim, stride=vt.stride, input_hw=hw, grid=grid,
                                       blocks=blocks))
            cin, hw = dim, grid
        return ViTNetworkPlan(in_channels=o.in_channels, input_size=o.input_size, resolution=res,
                              stem_channels=o.stem_channels, stem_stride=o.stem_stride, stem_hw=stem_hw,
                              conv_blocks=tuple(conv_blocks), vit_stages=tuple(stages), num_classes=o.num_classes)

    def ops(self, arch: Arch) -> list[dict[str, Any]]:
        """The child's operations in order, as plain dicts (latency lookup-table keys).

        The ``bignas_cnn`` op types (``resize``, ``conv_bn_relu`` for the stem, ``mbconv``) plus:
        - ``vit_embed``: cin, cout (= dim), stride, input_hw, output_hw (= grid), layout: the
          embedding conv-BN of a transformer stage and the reshape of its output to tokens;
        - ``vit_block``: cin = cout = dim, heads, head_dim, hidden, window (0: global), input_hw
          = output_hw = grid; one pre-norm attention + MLP block;
        - ``ln_pool_linear``: cin (= last dim), cout (classes), input_hw (= last grid),
          output_hw = 1: the final LayerNorm, mean over tokens and classifier.
        ``layout`` is ``tokens`` when the op takes (N, input_hw**2, cin) tokens; ops without it take
        a (N, cin, input_hw, input_hw) map. ``nasforge.supernets.elastic_vit.build_op(desc)``
        builds each one as a standalone module.
        """
        p = self.plan(arch)
        ops: list[dict[str, Any]] = []
        if p.resolution != p.input_size:
            ops.append({"type": "resize", "cin": p.in_channels, "input_hw": p.input_size, "output_hw": p.resolution})
        ops.append({"type": "conv_bn_relu", "cin": p.in_channels, "cout": p.stem_channels, "kernel": 3,
                    "stride": p.stem_stride, "input_hw": p.resolution, "output_hw": p.stem_hw})
        for b in p.conv_blocks:
            ops.append({"type": "mbconv", "cin": b.cin, "cout": b.cout, "kernel": b.kernel, "expand": b.expand,
                        "stride": b.stride, "residual": b.residual, "input_hw": b.input_hw,
                        "output_hw": b.output_hw})
        for st in p.vit_stages:
            ops.append({"type": "vit_embed", "cin": st.cin, "cout": st.dim, "stride": st.stride,
                        "input_hw": st.input_hw, "output_hw": st.grid, "layout": "tokens" if st.stage else "map"})
            for blk in st.blocks:
                ops.append({"type": "vit_block", "cin": blk.dim, "cout": blk.dim, "heads": blk.heads,
                            "head_dim": blk.head_dim, "hidden": blk.hidden, "window": blk.window,
                            "input_hw": blk.grid, "output_hw": blk.grid, "layout": "tokens"})
        last = p.vit_stages[-1]
        ops.append({"type": "ln_pool_linear", "cin": p.feature_dim, "cout": p.num_classes, "input_hw": last.grid,
                    "output_hw": 1, "layout": "tokens"})
        return ops

    # ---- cost -----------------------------------------------------------------------------
    def cost(self, arch: Arch) -> dict[str, float]:
        ops = self.ops(arch)
        attn = sum(attention_macs(op) for op in ops if op["type"] == "vit_block")
        return {**sum_op_costs(ops, vit_op_cost), "attn_flops": float(attn)}


def vit_op_cost(op: dict[str, Any]) -> tuple[int, int]:
    """(MACs, params) of one op descriptor from :meth:`ElasticViTSpace.ops` (attention products excluded)."""
    kind = op["type"]
    if kind == "vit_embed":
        w = op["cout"] * op["cin"] * 9
        return w * op["output_hw"] ** 2, w + 2 * op["cout"]
    if kind == "vit_block":
        d, a, m = op["cin"], op["heads"] * op["head_dim"], op["hidden"]
        tokens = op["input_hw"] ** 2
        flops = tokens * (3 * d * a + a * d + d * m + m * d)
        return flops, 3 * (d * a + a) + (a * d + d) + (d * m + m) + (m * d + d) + 4 * d
    if kind == "ln_pool_linear":
        d, c = op["cin"], op["cout"]
        return d * c, 2 * d + d * c + c
    return op_cost(op)
