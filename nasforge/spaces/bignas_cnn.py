"""``bignas_cnn``: an elastic MBConv (inverted-residual) network in stages, BigNAS style.

Network, for an arch: resize the input to ``resolution`` (when it differs) -> stem conv-BN-ReLU
-> stages of MBConv blocks -> optional 1x1 head conv-BN-ReLU -> global average pool -> linear.

An MBConv block is: 1x1 expand conv (cin -> mid = cin * expand) -BN-ReLU, kxk depthwise conv
(stride on the first block of a stage) -BN-ReLU, 1x1 project conv (mid -> cout) -BN, plus the
input when the block is not the first of its stage (then cin == cout and stride is 1). Convs
have no bias (BN follows); padding is ``kernel // 2``.

Choices (flat names, smallest value first):
- ``resolution``: input side length;
- ``s{i}.depth``: number of active blocks of stage i (the first ``depth`` blocks run);
- ``s{i}.width``: channel multiplier of stage i (channels = make_divisible(base * width));
- ``s{i}.b{j}.kernel`` / ``s{i}.b{j}.expand``: depthwise kernel and expand ratio of block j.

``canonicalize`` sets kernel/expand of blocks beyond the active depth to their first value,
so archs that build the same network share one key. ``cost`` counts FLOPs as multiply-accumulates
of convolutions and linear layers at batch 1 (BN, activations, pooling, additions and the
resize are not counted) and params as every learnable parameter (conv and linear weights,
linear bias, BN weight and bias; BN running statistics are buffers, not params).
``ops(arch)`` lists the network's operations (resize, stem, each block, head, classifier) as
plain dicts: the keys of a latency lookup table. This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nasforge.core.types import Arch, Scalar
from nasforge.spaces.base import PresetOptions, SearchSpace


class StageOptions(BaseModel):
    """One stage: base output channels, the depth range, and the stride of its first block."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: int = Field(ge=1, description="output channels at width multiplier 1.0")
    min_depth: int = Field(ge=1, description="fewest active blocks")
    max_depth: int = Field(ge=1, description="most active blocks")
    stride: Literal[1, 2] = Field(description="stride of the stage's first block")

    @model_validator(mode="after")
    def _depths(self) -> StageOptions:
        if self.min_depth > self.max_depth:
            raise ValueError("min_depth must not exceed max_depth")
        return self


def _stages(*rows: tuple[int, int, int, int]) -> list[dict[str, int]]:
    return [{"channels": c, "min_depth": lo, "max_depth": hi, "stride": s} for c, lo, hi, s in rows]


#: Default sizes per preset; any option given explicitly overrides the preset's value.
PRESETS: dict[str, dict[str, Any]] = {
    # Tiny and fast: trains in minutes on 2 CPU cores on MNIST-5k; FLOPs span ~10x.
    "mnist": {
        "in_channels": 1,
        "num_classes": 10,
        "input_size": 28,
        "resolutions": [16, 20, 24, 28],
        "stem_channels": 16,
        "stem_stride": 2,
        "stages": _stages((16, 1, 2, 1), (24, 1, 3, 2), (32, 1, 3, 2)),
        "kernels": [3, 5],
        "expands": [2, 3, 4],
        "widths": [0.5, 0.75, 1.0],
        "head_channels": 0,
        "divisor": 4,
    },
    # Realistic sizes (BigNAS / MobileNetV2-like): hundreds of MFLOPs at 192-288 pixels.
    "imagenet": {
        "in_channels": 3,
        "num_classes": 1000,
        "input_size": 224,
        "resolutions": [192, 224, 256, 288],
        "stem_channels": 32,
        "stem_stride": 2,
        "stages": _stages((16, 1, 2, 1), (24, 2, 3, 2), (40, 2, 3, 2), (80, 2, 4, 2), (112, 2, 4, 1),
                          (192, 2, 4, 2), (320, 1, 2, 1)),
        "kernels": [3, 5, 7],
        "expands": [3, 4, 6],
        "widths": [0.75, 1.0, 1.25],
        "head_channels": 1280,
        "divisor": 8,
    },
}


class BigNASCNNOptions(PresetOptions):
    """Sizes of the space. ``preset`` fills every option not given explicitly."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = PRESETS

    preset: Literal["mnist", "imagenet"] = Field(default="mnist", description="mnist (tiny) | imagenet (realistic)")
    in_channels: int = Field(ge=1, description="image channels (1 for MNIST)")
    num_classes: int = Field(ge=2, description="classes of the dataset")
    input_size: int = Field(ge=4, description="side of the images the data loader yields")
    resolutions: tuple[int, ...] = Field(min_length=1, description="elastic input resolutions")
    stem_channels: int = Field(ge=1, description="channels of the stem conv")
    stem_stride: Literal[1, 2] = Field(description="stride of the stem conv")
    stages: tuple[StageOptions, ...] = Field(min_length=1, description="stages, first to last")
    kernels: tuple[int, ...] = Field(min_length=1, description="depthwise kernel sizes (odd)")
    expands: tuple[int, ...] = Field(min_length=1, description="expand ratios of MBConv blocks")
    widths: tuple[float, ...] = Field(min_length=1, description="per-stage channel multipliers")
    head_channels: int = Field(ge=0, description="1x1 head conv channels before pooling; 0 = no head conv")
    divisor: int = Field(ge=1, description="channel counts are rounded to multiples of this")

    @model_validator(mode="after")
    def _check(self) -> BigNASCNNOptions:
        for name in ("resolutions", "kernels", "expands", "widths"):
            values = getattr(self, name)
            if list(values) != sorted(set(values)):
                raise ValueError(f"{name} must be strictly increasing (smallest first), got {list(values)}")
        if any(k % 2 == 0 or k < 1 for k in self.kernels):
            raise ValueError(f"kernels must be odd, got {list(self.kernels)}")
        if any(e < 1 for e in self.expands) or any(w <= 0 for w in self.widths):
            raise ValueError("expands must be >= 1 and widths > 0")
        return self


def make_divisible(value: float, divisor: int) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``divisor``, never below 90%)."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if out < 0.9 * value:
        out += divisor
    return int(out)


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output side of a conv with padding ``kernel // 2``."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclass(frozen=True)
class BlockPlan:
    """One active MBConv block of a child."""

    stage: int
    index: int
    cin: int
    cout: int
    mid: int
    kernel: int
    expand: int
    stride: int
    residual: bool
    input_hw: int
    output_hw: int


@dataclass(frozen=True)
class NetworkPlan:
    """Every layer size of one child: the single source the supernet, the child and cost share."""

    in_channels: int
    input_size: int
    resolution: int
    stem_channels: int
    stem_stride: int
    stem_hw: int
    blocks: tuple[BlockPlan, ...]
    head_cin: int
    head_channels: int
    head_hw: int
    num_classes: int

    @property
    def feature_channels(self) -> int:
        """Channels entering the classifier."""
        return self.head_channels or self.head_cin


class BigNASCNNSpace(SearchSpace):
    """The elastic MBConv space (see the module docstring)."""

    id = "bignas_cnn"
    version = 1
    Options = BigNASCNNOptions
    options: BigNASCNNOptions

    # ---- choices --------------------------------------------------------------------------
    def build_choices(self) -> dict[str, tuple[Scalar, ...]]:
        o = self.options
        ch: dict[str, tuple[Scalar, ...]] = {"resolution": tuple(o.resolutions)}
        for i, st in enumerate(o.stages):
            ch[f"s{i}.depth"] = tuple(range(st.min_depth, st.max_depth + 1))
            ch[f"s{i}.width"] = tuple(o.widths)
            for j in range(st.max_depth):
                ch[f"s{i}.b{j}.kernel"] = tuple(o.kernels)
                ch[f"s{i}.b{j}.expand"] = tuple(o.expands)
        return ch

    def canonicalize(self, arch: Arch) -> Arch:
        changes: dict[str, Scalar] = {}
        for i, st in enumerate(self.options.stages):
            depth = int(arch[f"s{i}.depth"])
            for j in range(depth, st.max_depth):
                for part, first in (("kernel", self.options.kernels[0]), ("expand", self.options.expands[0])):
                    name = f"s{i}.b{j}.{part}"
                    if arch[name] != first:
                        changes[name] = first
        return arch.replace(**changes) if changes else arch

    # ---- structure ------------------------------------------------------------------------
    def stage_channels(self, stage: int, width: float) -> int:
        return make_divisible(self.options.stages[stage].channels * width, self.options.divisor)

    def plan(self, arch: Arch) -> NetworkPlan:
        """Every layer size of the child ``arch`` (validated first)."""
        arch = self.validate(arch)
        o = self.options
        res = int(arch["resolution"])
        hw = conv_out(res, 3, o.stem_stride)
        stem_hw = hw
        cin = o.stem_channels
        blocks = []
        for i, st in enumerate(o.stages):
            cout = self.stage_channels(i, float(arch[f"s{i}.width"]))
            for j in range(int(arch[f"s{i}.depth"])):
                k = int(arch[f"s{i}.b{j}.kernel"])
                e = int(arch[f"s{i}.b{j}.expand"])
                stride = st.stride if j == 0 else 1
                out_hw = conv_out(hw, k, stride)
                blocks.append(BlockPlan(stage=i, index=j, cin=cin, cout=cout, mid=cin * e, kernel=k, expand=e,
                                        stride=stride, residual=j > 0, input_hw=hw, output_hw=out_hw))
                cin, hw = cout, out_hw
        return NetworkPlan(in_channels=o.in_channels, input_size=o.input_size, resolution=res,
                           stem_channels=o.stem_channels, stem_stride=o.stem_stride, stem_hw=stem_hw,
                           blocks=tuple(blocks), head_cin=cin, head_channels=o.head_channels, head_hw=hw,
                           num_classes=o.num_classes)

    def ops(self, arch: Arch) -> list[dict[str, Any]]:
        """The child's operations in order, as plain dicts (latency lookup-table keys).

        Each dict has ``type`` and the sizes that determine its cost and latency:
        - ``resize``: cin, input_hw, output_hw (only when resolution != input_size);
        - ``conv_bn_relu``: cin, cout, kernel, stride, input_hw, output_hw (stem and head);
        - ``mbconv``: cin, cout, kernel, expand, stride, residual, input_hw, output_hw;
        - ``pool_linear``: cin, cout (classes), input_hw, output_hw=1.
        Spatial sizes are square sides. ``nasforge.supernets.bignas.build_op(desc)`` builds each
        one as a standalone module taking (N, cin, input_hw, input_hw).
        """
        p = self.plan(arch)
        ops: list[dict[str, Any]] = []
        if p.resolution != p.input_size:
            ops.append({"type": "resize", "cin": p.in_channels, "input_hw": p.input_size, "output_hw": p.resolution})
        ops.append({"type": "conv_bn_relu", "cin": p.in_channels, "cout": p.stem_channels, "kernel": 3,
                    "stride": p.stem_stride, "input_hw": p.resolution, "output_hw": p.stem_hw})
        for b in p.blocks:
            ops.append({"type": "mbconv", "cin": b.cin, "cout": b.cout, "kernel": b.kernel, "expand": b.expand,
                        "stride": b.stride, "residual": b.residual, "input_hw": b.input_hw,
                        "output_hw": b.output_hw})
        if p.head_channels:
            ops.append({"type": "conv_bn_relu", "cin": p.head_cin, "cout": p.head_channels, "kernel": 1,
                        "stride": 1, "input_hw": p.head_hw, "output_hw": p.head_hw})
        ops.append({"type": "pool_linear", "cin": p.feature_channels, "cout": p.num_classes,
                    "input_hw": p.head_hw, "output_hw": 1})
        return ops

    # ---- cost -----------------------------------------------------------------------------
    def cost(self, arch: Arch) -> dict[str, float]:
        return sum_op_costs(self.ops(arch), op_cost)


def sum_op_costs(ops: list[dict[str, Any]], cost_of: Callable[[dict[str, Any]], tuple[int, int]]) -> dict[str, float]:
    """A space's ``cost`` as the sum of its ops' (flops, params); ``bytes`` = fp32 weights."""
    flops = params = 0
    for op in ops:
        f, n = cost_of(op)
        flops, params = flops + f, params + n
    return {"flops": float(flops), "params": float(params), "bytes": float(4 * params)}


def op_cost(op: dict[str, Any]) -> tuple[int, int]:
    """(MACs, params) of one op descriptor from :meth:`BigNASCNNSpace.ops`."""
    kind = op["type"]
    if kind == "resize":
        return 0, 0
    out_area = op["output_hw"] ** 2
    if kind == "conv_bn_relu":
        w = op["cout"] * op["cin"] * op["kernel"] ** 2
        return w * out_area, w + 2 * op["cout"]
    if kind == "mbconv":
        cin, cout, k = op["cin"], op["cout"], op["kernel"]
        mid = cin * op["expand"]
        in_area = op["input_hw"] ** 2
        expand_w, dw_w, proj_w = cin * mid, mid * k * k, mid * cout
        flops = expand_w * in_area + dw_w * out_area + proj_w * out_area
        return flops, expand_w + dw_w + proj_w + 2 * (mid + mid + cout)
    if kind == "pool_linear":
        return op["cin"] * op["cout"], op["cin"] * op["cout"] + op["cout"]
    raise ValueError(f"unknown op type {kind!r}")
