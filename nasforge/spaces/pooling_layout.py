"""``pooling_layout``: where the downsampling layers sit in a ResNet-20-style network.

Network, for an arch: stem 3x3 conv-BN-ReLU (stride ``stem_stride``) -> ``num_blocks`` basic
residual blocks -> global average pool -> linear. A basic block is 3x3 conv (stride s) -BN-ReLU,
3x3 conv -BN, plus a shortcut, then ReLU. Exactly ``num_downsamples`` blocks downsample: their
first conv has stride 2 and, with ``widen`` (ResNet's rule), they double the channels. The
shortcut is the identity, or a 1x1 conv (stride s) -BN where the block downsamples or changes
width. Convs have no bias; padding is ``kernel // 2``. ResNet-20 is the ``resnet20`` preset with
the layout ``pool0=3, pool1=6`` (3 stages x 3 blocks).

Choices (flat names): ``pool{i}`` is the index of the block holding the i-th downsampling,
``i`` in ``0 .. num_downsamples-1``; its allowed values are ``i .. num_blocks-num_downsamples+i``
(the positions the i-th of a sorted layout can take). ``canonicalize`` sorts the positions and
pushes collisions to the next free block, so every vector of allowed values maps to one valid
layout (positions strictly increasing) and the C(num_blocks, num_downsamples) layouts each have
one key. ``layouts()`` enumerates them (the space is small); ``sample`` draws uniformly from
them. ``cost`` counts FLOPs as multiply-accumulates of convolutions and the linear layer at
batch 1 (BN, activations, pooling and additions not counted) and params as every learnable
parameter (BN running statistics are buffers). This module imports no torch.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from nasforge.core.types import Arch, Scalar
from nasforge.spaces.base import PresetOptions, SearchSpace
from nasforge.spaces.bignas_cnn import op_cost, sum_op_costs

#: refuse spaces with more layouts than this (``layouts()`` enumerates them all)
MAX_LAYOUTS = 100_000

#: Default sizes per preset; any option given explicitly overrides the preset's value.
PRESETS: dict[str, dict[str, Any]] = {
    # Tiny: 6 blocks, 2 downsamplings (15 layouts) on MNIST-5k, seconds per epoch on 2 CPU cores.
    "mnist": {"in_channels": 1, "num_classes": 10, "input_size": 28, "stem_channels": 8, "stem_stride": 2,
              "num_blocks": 6, "num_downsamples": 2, "widen": True},
    # The real thing: ResNet-20 on 32x32 RGB (CIFAR-10 shaped), 9 blocks, 2 downsamplings (36 layouts).
    "resnet20": {"in_channels": 3, "num_classes": 10, "input_size": 32, "stem_channels": 16, "stem_stride": 1,
                 "num_blocks": 9, "num_downsamples": 2, "widen": True},
}


class PoolingLayoutOptions(PresetOptions):
    """Sizes of the space. ``preset`` fills every option not given explicitly."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = PRESETS

    preset: Literal["mnist", "resnet20"] = Field(default="mnist", description="mnist (tiny) | resnet20 (real)")
    in_channels: int = Field(ge=1, description="image channels (1 for MNIST)")
    num_classes: int = Field(ge=2, description="classes of the dataset")
    input_size: int = Field(ge=2, description="side of the (square) images the data loader yields")
    stem_channels: int = Field(ge=1, description="channels of the stem and of the first stage")
    stem_stride: Literal[1, 2] = Field(description="stride of the stem conv")
    num_blocks: int = Field(ge=1, le=256, description="basic residual blocks in the network")
    num_downsamples: int = Field(ge=1, description="blocks that downsample (stride 2); their positions are searched")
    widen: bool = Field(description="a downsampling block doubles the channels (ResNet's rule)")

    @model_validator(mode="after")
    def _check(self) -> PoolingLayoutOptions:
        if self.num_downsamples > self.num_blocks:
            raise ValueError(f"num_downsamples ({self.num_downsamples}) must not exceed num_blocks ({self.num_blocks})")
        if math.comb(self.num_blocks, self.num_downsamples) > MAX_LAYOUTS:
            raise ValueError(f"C(num_blocks, num_downsamples) layouts exceed {MAX_LAYOUTS}; use fewer blocks")
        return self


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output side of a conv with padding ``kernel // 2``."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclass(frozen=True)
class ResBlockPlan:
    """One basic residual block of a child."""

    index: int
    stage: int
    cin: int
    cout: int
    stride: int
    projection: bool
    input_hw: int
    output_hw: int


@dataclass(frozen=True)
class LayoutPlan:
    """Every layer size of one child: the single source the supernet, the child and cost share."""

    in_channels: int
    input_size: int
    stem_channels: int
    stem_stride: int
    stem_hw: int
    blocks: tuple[ResBlockPlan, ...]
    feature_channels: int
    num_classes: int
    positions: tuple[int, ...]


class PoolingLayoutSpace(SearchSpace):
    """Positions of the downsampling blocks of a ResNet-style network (see the module docstring)."""

    id = "pooling_layout"
    version = 1
    Options = PoolingLayoutOptions
    options: PoolingLayoutOptions

    def __init__(self, options: PoolingLayoutOptions | dict[str, Any] | None = None):
        super().__init__(options)
        self._layouts: list[Arch] | None = None
        self._index: dict[tuple[int, ...], int] | None = None

    # ---- choices --------------------------------------------------------------------------
    def build_choices(self) -> dict[str, tuple[Scalar, ...]]:
        n, d = self.options.num_blocks, self.options.num_downsamples
        return {f"pool{i}": tuple(range(i, n - d + i + 1)) for i in range(d)}

    def canonicalize(self, arch: Arch) -> Arch:
        d = self.options.num_downsamples
        raw = sorted(int(arch[f"pool{i}"]) for i in range(d))
        fixed: list[int] = []
        for p in raw:  # sorted, so the i-th value is at most num_blocks - d + i: no overflow
            fixed.append(max(p, fixed[-1] + 1) if fixed else p)
        changes: dict[str, Scalar] = {f"pool{i}": p for i, p in enumerate(fixed) if arch[f"pool{i}"] != p}
        return arch.replace(**changes) if changes else arch

    def positions(self, arch: Arch) -> tuple[int, ...]:
        """The (sorted, distinct) indices of the downsampling blocks of ``arch``."""
        arch = self.validate(arch)
        return tuple(int(arch[f"pool{i}"]) for i in range(self.options.num_downsamples))

    def layout_name(self, arch: Arch) -> str:
        """Stage sizes, e.g. ``3-3-3`` for ResNet-20's layout (blocks before, between, after downsamplings)."""
        pos = self.positions(arch)
        edges = [0, *pos, self.options.num_blocks]
        return "-".join(str(b - a) for a, b in itertools.pairwise(edges))

    def layouts(self) -> list[Arch]:
        """Every layout once (canonical archs), in lexicographic order of their positions."""
        if self._layouts is None:
            n, d = self.options.num_blocks, self.options.num_downsamples
            self._layouts = [Arch(self.id, self.version, {f"pool{i}": p for i, p in enumerate(c)})
                             for c in itertools.combinations(range(n), d)]
            self._index = {tuple(int(a[f"pool{i}"]) for i in range(d)): j for j, a in enumerate(self._layouts)}
        return list(self._layouts)

    def layout_index(self, arch: Arch) -> int:
        """Position of ``arch``'s layout in :meth:`layouts` (0 .. num_layouts-1)."""
        self.layouts()
        assert self._index is not None
        return self._index[self.positions(arch)]

    @property
    def num_layouts(self) -> int:
        return math.comb(self.options.num_blocks, self.options.num_downsamples)

    def sample(self, rng: np.random.Generator) -> Arch:
        """A layout drawn uniformly from :meth:`layouts`."""
        layouts = self.layouts()
        return layouts[int(rng.integers(len(layouts)))]

    def largest(self) -> Arch:
        """The layout with the most FLOPs (ties: the first in :meth:`layouts`)."""
        return max(self.layouts(), key=lambda a: self.cost(a)["flops"])

    def smallest(self) -> Arch:
        """The layout with the fewest FLOPs (ties: the first in :meth:`layouts`)."""
        return min(self.layouts(), key=lambda a: self.cost(a)["flops"])

    # ---- structure ------------------------------------------------------------------------
    def stage_channels(self, stage: int) -> int:
        o = self.options
        return o.stem_channels * 2 ** stage if o.widen else o.stem_channels

    @property
    def max_channels(self) -> int:
        return self.stage_channels(self.options.num_downsamples)

    def plan(self, arch: Arch) -> LayoutPlan:
        """Every layer size of the child ``arch`` (validated first)."""
        o = self.options
        pos = self.positions(arch)
        hw = conv_out(o.input_size, 3, o.stem_stride)
        stem_hw = hw
        cin, stage = o.stem_channels, 0
        blocks = []
        for j in range(o.num_blocks):
            stride = 1
            if j in pos:
                stage, stride = stage + 1, 2
            cout = self.stage_channels(stage)
            out_hw = conv_out(hw, 3, stride)
            blocks.append(ResBlockPlan(index=j, stage=stage, cin=cin, cout=cout, stride=stride,
                                       projection=stride != 1 or cin != cout, input_hw=hw, output_hw=out_hw))
            cin, hw = cout, out_hw
        return LayoutPlan(in_channels=o.in_channels, input_size=o.input_size, stem_channels=o.stem_channels,
                          stem_stride=o.stem_stride, stem_hw=stem_hw, blocks=tuple(blocks), feature_channels=cin,
                          num_classes=o.num_classes, positions=pos)

    def ops(self, arch: Arch) -> list[dict[str, Any]]:
        """The child's operations in order, as plain dicts (latency lookup-table keys).

        - ``conv_bn_relu``: the stem (cin, cout, kernel 3, stride, input_hw, output_hw);
        - ``basic_block``: cin, cout, stride, projection, input_hw, output_hw;
        - ``pool_linear``: cin (features), cout (classes), input_hw, output_hw = 1.
        Every op takes a (N, cin, input_hw, input_hw) map;
        ``nasforge.supernets.pooling_mixture.build_op(desc)`` builds each one as a standalone module.
        """
        p = self.plan(arch)
        ops: list[dict[str, Any]] = [{"type": "conv_bn_relu", "cin": p.in_channels, "cout": p.stem_channels,
                                      "kernel": 3, "stride": p.stem_stride, "input_hw": p.input_size,
                                      "output_hw": p.stem_hw}]
        for b in p.blocks:
            ops.append({"type": "basic_block", "cin": b.cin, "cout": b.cout, "stride": b.stride,
                        "projection": b.projection, "input_hw": b.input_hw, "output_hw": b.output_hw})
        head_hw = p.blocks[-1].output_hw if p.blocks else p.stem_hw
        ops.append({"type": "pool_linear", "cin": p.feature_channels, "cout": p.num_classes, "input_hw": head_hw,
                    "output_hw": 1})
        return ops

    # ---- cost -----------------------------------------------------------------------------
    def cost(self, arch: Arch) -> dict[str, float]:
        return sum_op_costs(self.ops(arch), layout_op_cost)


def layout_op_cost(op: dict[str, Any]) -> tuple[int, int]:
    """(MACs, params) of one op descriptor from :meth:`PoolingLayoutSpace.ops`."""
    if op["type"] == "basic_block":
        cin, cout, proj_on = op["cin"], op["cout"], op["projection"]
        conv1, conv2 = cout * cin * 9, cout * cout * 9
        proj = cout * cin if proj_on else 0
        return (conv1 + conv2 + proj) * op["output_hw"] ** 2, conv1 + conv2 + proj + 2 * cout * (3 if proj_on else 2)
    return op_cost(op)
