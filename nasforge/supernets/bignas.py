"""BigNAS elastic CNN supernet over the ``bignas_cnn`` space, its plain children, and ``build_op``.

The layer sizes of every child come from ``BigNASCNNSpace.plan(arch)`` (one source for the
supernet, the plain child and the analytic cost). ``BigNASSupernet.forward(x, arch)`` runs the
child ``arch`` on the shared weights; ``extract(arch)`` returns a :class:`BigNASChild` made of
ordinary ``Conv2d`` / ``BatchNorm2d`` / ``Linear`` layers holding copies of the weights it uses.

Recipe details built in here: the last BN of every residual block starts with gamma = 0 (the
block starts as the identity); dropout before the classifier is an argument of ``forward``
(the trainer passes it for the largest child only); children contain no dropout.
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
from nasforge.spaces.bignas_cnn import BigNASCNNSpace, BlockPlan
from nasforge.supernets.base import Supernet, SupernetOptions
from nasforge.supernets.layers import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear

# ------------------------------------------------------------------------------------------------
# Plain modules: the children and the single operations of a latency lookup table


class Resize(nn.Module):
    """Bilinear resize to ``size x size`` (no-op when the input already has that size)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] == self.size and x.shape[-1] == self.size:
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Sequential):
    """Conv2d (no bias, padding kernel//2) -> BatchNorm2d -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=False))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -BN-ReLU, kxk depthwise -BN-ReLU, 1x1 project -BN (+ input)."""

    def __init__(self, cin: int, cout: int, kernel: int, expand: int, stride: int, residual: bool):
        super().__init__()
        mid = cin * expand
        self.residual = bool(residual)
        self.expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(mid)
        self.dw_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self.dw_bn = nn.BatchNorm2d(mid)
        self.project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.expand_bn(self.expand_conv(x)))
        out = F.relu(self.dw_bn(self.dw_conv(out)))
        out = self.project_bn(self.project_conv(out))
        return out + x if self.residual else out


class PoolLinear(nn.Module):
    """Global average pool -> Linear."""

    def __init__(self, cin: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean(dim=(2, 3)))


class BigNASChild(nn.Module):
    """A standalone child: resize -> stem -> MBConv blocks -> head -> pool + linear."""

    def __init__(self, space: BigNASCNNSpace, arch: Arch):
        super().__init__()
        plan = space.plan(arch)
        self.input_shape = (plan.in_channels, plan.resolution, plan.resolution)
        self.resize = Resize(plan.resolution)
        self.stem = ConvBNReLU(plan.in_channels, plan.stem_channels, 3, plan.stem_stride)
        self.blocks = nn.Sequential(*[
            MBConv(b.cin, b.cout, b.kernel, b.expand, b.stride, b.residual) for b in plan.blocks
        ])
        self.head = ConvBNReLU(plan.head_cin, plan.head_channels, 1) if plan.head_channels else nn.Identity()
        self.classifier = PoolLinear(plan.feature_channels, plan.num_classes)
        _init_plain(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.blocks(self.stem(self.resize(x)))))


def _init_plain(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 1.0 / m.in_features ** 0.5)
            nn.init.zeros_(m.bias)
        elif isinstance(m, MBConv) and m.residual:
            nn.init.zeros_(m.project_bn.weight)


def build_op(desc: dict[str, Any]) -> nn.Module:
    """One operation of ``BigNASCNNSpace.ops(arch)`` as a standalone module (fresh weights).

    Input: (N, desc["cin"], desc["input_hw"], desc["input_hw"]).
    """
    kind = desc["type"]
    if kind == "resize":
        return Resize(desc["output_hw"])
    if kind == "conv_bn_relu":
        return ConvBNReLU(desc["cin"], desc["cout"], desc["kernel"], desc["stride"])
    if kind == "mbconv":
        m = MBConv(desc["cin"], desc["cout"], desc["kernel"], desc["expand"], desc["stride"], desc["residual"])
        _init_plain(m)
        return m
    if kind == "pool_linear":
        return PoolLinear(desc["cin"], desc["cout"])
    raise ValueError(f"unknown op type {kind!r}; known: resize, conv_bn_relu, mbconv, pool_linear")


# ------------------------------------------------------------------------------------------------
# Supernet


class DynamicMBConv(nn.Module):
    """MBConv block position whose channels, kernel and expand ratio come from a BlockPlan."""

    def __init__(self, max_in: int, max_out: int, max_expand: int, max_kernel: int, stride: int, residual: bool):
        super().__init__()
        mid = max_in * max_expand
        self.residual = residual
        self.expand_conv = DynamicConv2d(max_in, mid, 1)
        self.expand_bn = DynamicBatchNorm2d(mid)
        self.dw_conv = DynamicConv2d(mid, mid, max_kernel, stride=stride, depthwise=True)
        self.dw_bn = DynamicBatchNorm2d(mid)
        self.project_conv = DynamicConv2d(mid, max_out, 1)
        self.project_bn = DynamicBatchNorm2d(max_out)
        if residual:
            nn.init.zeros_(self.project_bn.weight)

    def forward(self, x: torch.Tensor, b: BlockPlan) -> torch.Tensor:
        out = F.relu(self.expand_bn(self.expand_conv(x, b.mid, 1)))
        out = F.relu(self.dw_bn(self.dw_conv(out, b.mid, b.kernel)))
        out = self.project_bn(self.project_conv(out, b.cout, 1))
        return out + x if b.residual else out

    def copy_to(self, m: MBConv) -> None:
        for name in ("expand_conv", "expand_bn", "dw_conv", "dw_bn", "project_conv", "project_bn"):
            getattr(self, name).copy_to(getattr(m, name))


class BigNASSupernetOptions(SupernetOptions):
    plan_cache_size: int = Field(default=256, ge=0, description="archs whose layer plan is memoized")


class BigNASSupernet(Supernet):
    """Weight-sharing supernet of a ``bignas_cnn`` space (see the module docstring)."""

    Options = BigNASSupernetOptions
    spaces = ("bignas_cnn",)
    space: BigNASCNNSpace

    def __init__(self, space: SearchSpace, options: BigNASSupernetOptions | dict[str, Any] | None = None):
        if not isinstance(space, BigNASCNNSpace):
            raise TypeError(f"BigNASSupernet serves the bignas_cnn space, got {type(space).__name__}")
        super().__init__(space, options)
        o = space.options
        self.stem_conv = nn.Conv2d(o.in_channels, o.stem_channels, 3, o.stem_stride, 1, bias=False)
        nn.init.kaiming_normal_(self.stem_conv.weight, mode="fan_out", nonlinearity="relu")
        self.stem_bn = nn.BatchNorm2d(o.stem_channels)
        max_e, max_k = max(o.expands), max(o.kernels)
        cin = o.stem_channels
        stages = []
        for i, st in enumerate(o.stages):
            cout = space.stage_channels(i, max(o.widths))
            blocks = []
            for j in range(st.max_depth):
                blocks.append(DynamicMBConv(cin, cout, max_e, max_k, st.stride if j == 0 else 1, residual=j > 0))
                cin = cout
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)
        if o.head_channels:
            self.head_conv: DynamicConv2d | None = DynamicConv2d(cin, o.head_channels, 1)
            self.head_bn: nn.BatchNorm2d | None = nn.BatchNorm2d(o.head_channels)
            feat = o.head_channels
        else:
            self.head_conv, self.head_bn, feat = None, None, cin
        self.classifier = DynamicLinear(feat, o.num_classes)
        self._plans: OrderedDict[Arch, Any] = OrderedDict()

    # ---- contract -------------------------------------------------------------------------
    @classmethod
    def contract_config(cls) -> tuple[dict[str, Any], dict[str, Any]]:
        """A tiny (space options, supernet options) pair for the supernet contract suite."""
        space = {
            "preset": "mnist", "input_size": 16, "resolutions": [12, 16], "stem_channels": 8,
            "stages": [{"channels": 8, "min_depth": 1, "max_depth": 2, "stride": 1},
                       {"channels": 12, "min_depth": 1, "max_depth": 2, "stride": 2}],
            "kernels": [3, 5], "expands": [2, 3], "widths": [0.5, 1.0], "head_channels": 16,
        }
        return space, {}

    def plan(self, arch: Arch) -> Any:
        """``space.plan(arch)``, memoized (a pure cache: it never changes what forward computes)."""
        plan = self._plans.get(arch)
        if plan is None:
            plan = self.space.plan(arch)
            if self.options.plan_cache_size:
                self._plans[arch] = plan
                if len(self._plans) > self.options.plan_cache_size:
                    self._plans.popitem(last=False)
        return plan

    def input_shape(self, arch: Arch) -> tuple[int, int, int]:
        p = self.plan(arch)
        return (p.in_channels, p.resolution, p.resolution)

    def forward(self, x: torch.Tensor, arch: Arch, *, dropout: float = 0.0) -> torch.Tensor:
        """Logits of child ``arch`` on ``x`` (N, C, H, W; resized to the arch's resolution).

        ``dropout`` is the rate applied before the classifier in training mode (the trainer
        passes it for the largest child only).
        """
        p = self.plan(arch)
        if x.shape[-2] != p.resolution or x.shape[-1] != p.resolution:
            x = F.interpolate(x, size=(p.resolution, p.resolution), mode="bilinear", align_corners=False)
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        for b in p.blocks:
            x = self.stages[b.stage][b.index](x, b)
        if self.head_conv is not None and self.head_bn is not None:
            x = F.relu(self.head_bn(self.head_conv(x, p.head_channels, 1)))
        x = x.mean(dim=(2, 3))
        if dropout > 0:
            x = F.dropout(x, dropout, self.training)
        return self.classifier(x)

    @classmethod
    def build_child(cls, space: SearchSpace, arch: Arch) -> BigNASChild:
        if not isinstance(space, BigNASCNNSpace):
            raise TypeError(f"BigNASSupernet serves the bignas_cnn space, got {type(space).__name__}")
        return BigNASChild(space, arch)

    @torch.no_grad()
    def extract(self, arch: Arch) -> BigNASChild:
        """A plain child holding copies of the weights and BN statistics ``arch`` uses."""
        p = self.plan(arch)
        child = BigNASChild(self.space, arch).to(self.stem_conv.weight.device)
        child.stem[0].weight.copy_(self.stem_conv.weight)
        child.stem[1].load_state_dict(self.stem_bn.state_dict())
        for b, m in zip(p.blocks, child.blocks, strict=True):
            self.stages[b.stage][b.index].copy_to(m)
        if self.head_conv is not None and self.head_bn is not None:
            self.head_conv.copy_to(child.head[0])
            child.head[1].load_state_dict(self.head_bn.state_dict())
        self.classifier.copy_to(child.classifier.linear)
        return child.train(self.training)
