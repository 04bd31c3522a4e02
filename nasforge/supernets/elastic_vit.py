"""ElasticViT supernet over the ``elastic_vit`` space, and its plain children.

The layer sizes of every child come from ``ElasticViTSpace.plan(arch)`` (one source for the
supernet, the plain child and the analytic cost). ``ElasticViTSupernet.forward(x, arch)`` runs the
child ``arch`` on the shared weights (leading-channel rule of ``layers.py``: a child with ``d``
features uses the leading ``d`` rows / columns; ``h`` heads use the leading ``h * head_dim`` q,
k, v outputs). ``extract(arch)`` returns an :class:`ElasticViTChild` of ordinary ``Conv2d`` /
``BatchNorm2d`` / ``LayerNorm`` / ``Linear`` layers holding copies of the weights it uses; both
compute attention with the same :func:`window_attention` (``F.scaled_dot_product_attention``).

Option ``mixture: {experts: E, router_hidden: H}`` makes the transformer linear layers (q, k, v,
proj, fc1, fc2) :class:`~nasforge.supernets.mixture.MixtureLinear` layers routed by the arch
encoding ``space.encode([arch])`` (Mixture-of-Supernets); extraction collapses each into one
``nn.Linear``, so children are identical in structure with or without the mixture.
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
from nasforge.spaces.elastic_vit import ElasticViTSpace, ViTBlockPlan, ViTNetworkPlan, ViTStagePlan
from nasforge.supernets.base import Supernet, SupernetOptions
from nasforge.supernets.bignas import ConvBNReLU, DynamicMBConv, MBConv, Resize, _init_plain
from nasforge.supernets.bignas import build_op as build_cnn_op
from nasforge.supernets.layers import DynamicBatchNorm2d, DynamicConv2d, DynamicLayerNorm, DynamicLinear
from nasforge.supernets.mixture import MixtureLinear, MixtureOptions

# ------------------------------------------------------------------------------------------------
# Attention shared by the supernet and the children


def _key_mask(grid: int, window: int, device: torch.device) -> torch.Tensor:
    """(windows, 1, window*window) bool: which keys of each padded window are real tokens."""
    per_side = -(-grid // window)
    side = per_side * window
    real = torch.arange(side, device=device) < grid
    valid = (real[:, None] & real[None, :]).reshape(per_side, window, per_side, window)
    return valid.permute(0, 2, 1, 3).reshape(per_side * per_side, 1, window * window)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: int, window: int) -> torch.Tensor:
    """Softmax attention of (N, heads, grid*grid, head_dim) tensors, globally or in windows.

    ``window == 0``: every token attends to every token. Otherwise the grid is zero-padded to a
    multiple of ``window`` and each token attends to the real tokens of its ``window x window``
    window (padded keys are masked; padded queries are dropped). Every window holds at least one
    real token, so no softmax row is empty.
    """
    if window == 0:
        return F.scaled_dot_product_attention(q, k, v)
    per_side = -(-grid // window)
    pad = per_side * window - grid

    def split(t: torch.Tensor) -> torch.Tensor:  # (N, h, L, e) -> (N, h, windows, w*w, e)
        t = t.unflatten(2, (grid, grid))
        if pad:
            t = F.pad(t, (0, 0, 0, pad, 0, pad))
        t = t.unflatten(2, (per_side, window)).unflatten(4, (per_side, window))
        return t.permute(0, 1, 2, 4, 3, 5, 6).flatten(4, 5).flatten(2, 3)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v),
                                         attn_mask=_key_mask(grid, window, q.device))
    out = out.unflatten(2, (per_side, per_side)).unflatten(4, (window, window))
    out = out.permute(0, 1, 2, 4, 3, 5, 6).flatten(4, 5).flatten(2, 3)  # (N, h, side, side, e)
    return out[:, :, :grid, :grid].flatten(2, 3)


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.unflatten(-1, (heads, -1)).transpose(1, 2)  # (N, L, h*e) -> (N, h, L, e)


def _merge(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(1, 2).flatten(2)  # (N, h, L, e) -> (N, L, h*e)


# ------------------------------------------------------------------------------------------------
# Plain modules: the children


class Attention(nn.Module):
    """Multi-head (window) self-attention: q, k, v linear layers, attention, output projection."""

    def __init__(self, dim: int, heads: int, head_dim: int, grid: int, window: int):
        super().__init__()
        a = heads * head_dim
        self.heads, self.grid, self.window = heads, grid, window
        self.q, self.k, self.v = nn.Linear(dim, a), nn.Linear(dim, a), nn.Linear(dim, a)
        self.proj = nn.Linear(a, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (_heads(f(x), self.heads) for f in (self.q, self.k, self.v))
        return self.proj(_merge(window_attention(q, k, v, self.grid, self.window)))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(LN(x))`` then ``x + fc2(GELU(fc1(LN(x))))``."""

    def __init__(self, b: ViTBlockPlan):
        super().__init__()
        self.ln1 = nn.LayerNorm(b.dim)
        self.attn = Attention(b.dim, b.heads, b.head_dim, b.grid, b.window)
        self.ln2 = nn.LayerNorm(b.dim)
        self.fc1 = nn.Linear(b.dim, b.hidden)
        self.fc2 = nn.Linear(b.hidden, b.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class ViTStage(nn.Module):
    """Embedding conv-BN on a (N, C, H, W) map, then transformer blocks; returns (N, L, dim) tokens."""

    def __init__(self, st: ViTStagePlan):
        super().__init__()
        self.embed_conv = nn.Conv2d(st.cin, st.dim, 3, st.stride, 1, bias=False)
        self.embed_bn = nn.BatchNorm2d(st.dim)
        self.blocks = nn.Sequential(*[TransformerBlock(b) for b in st.blocks])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.embed_bn(self.embed_conv(x)).flatten(2).transpose(1, 2))


class ElasticViTChild(nn.Module):
    """A standalone child: resize -> stem -> MBConv blocks -> transformer stages -> LN, mean, linear."""

    def __init__(self, space: ElasticViTSpace, arch: Arch):
        super().__init__()
        p = space.plan(arch)
        self.input_shape = (p.in_channels, p.resolution, p.resolution)
        self.resize = Resize(p.resolution)
        self.stem = ConvBNReLU(p.in_channels, p.stem_channels, 3, p.stem_stride)
        self.conv_blocks = nn.Sequential(*[
            MBConv(b.cin, b.cout, b.kernel, b.expand, b.stride, b.residual) for b in p.conv_blocks
        ])
        self.grids = [st.grid for st in p.vit_stages]
        self.stages = nn.ModuleList([ViTStage(st) for st in p.vit_stages])
        self.norm = nn.LayerNorm(p.feature_dim)
        self.classifier = nn.Linear(p.feature_dim, p.num_classes)
        _init_plain(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_blocks(self.stem(self.resize(x)))
        tokens = self.stages[0](x)
        for grid, stage in zip(self.grids[:-1], self.stages[1:], strict=True):
            tokens = stage(tokens_to_map(tokens, grid))
        return ln_pool_linear(self.norm, self.classifier, tokens)


def tokens_to_map(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """(N, L, C) tokens of a ``grid x grid`` map -> (N, C, grid, grid)."""
    return tokens.transpose(1, 2).unflatten(2, (grid, grid))


def ln_pool_linear(norm: nn.Module, classifier: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The child's head on (N, L, C) tokens: LayerNorm, mean over tokens, linear."""
    return classifier(norm(tokens).mean(dim=1))


class TokensToMap(nn.Module):
    """(N, L, C) tokens of a ``grid x grid`` map -> (N, C, grid, grid)."""

    def __init__(self, grid: int):
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tokens_to_map(x, self.grid)


class LNPoolLinear(nn.Module):
    """The child's head on (N, L, C) tokens: LayerNorm, mean over tokens, linear."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ln_pool_linear(self.norm, self.classifier, x)


def build_op(desc: dict[str, Any]) -> nn.Module:
    """One operation of ``ElasticViTSpace.ops(arch)`` as a standalone module (fresh weights).

    Input: (N, desc["input_hw"] ** 2, desc["cin"]) tokens when ``desc["layout"] == "tokens"``,
    else (N, desc["cin"], desc["input_hw"], desc["input_hw"]). The modules are the child's own
    (``ViTStage`` without blocks, ``TransformerBlock``), so the table times what the child runs.
    """
    kind = desc["type"]
    if kind == "vit_embed":
        plan = ViTStagePlan(stage=0, cin=desc["cin"], dim=desc["cout"], stride=desc["stride"],
                            input_hw=desc["input_hw"], grid=desc["output_hw"], blocks=())
        stage = ViTStage(plan)
        return nn.Sequential(TokensToMap(desc["input_hw"]), stage) if desc["layout"] == "tokens" else stage
    if kind == "vit_block":
        m: nn.Module = TransformerBlock(ViTBlockPlan(stage=0, index=0, dim=desc["cin"], heads=desc["heads"],
                                                     head_dim=desc["head_dim"], hidden=desc["hidden"],
                                                     grid=desc["input_hw"], window=desc["window"]))
    elif kind == "ln_pool_linear":
        m = LNPoolLinear(desc["cin"], desc["cout"])
    else:
        return build_cnn_op(desc)
    _init_plain(m)
    return m


# ------------------------------------------------------------------------------------------------
# Supernet

ElasticLinear = DynamicLinear | MixtureLinear


def _linear(layer: ElasticLinear, x: torch.Tensor, out: int, enc: torch.Tensor | None) -> torch.Tensor:
    if isinstance(layer, MixtureLinear):
        assert enc is not None
        return layer(x, enc, out_features=out)
    return layer(x, out)


def _copy_linear(layer: ElasticLinear, linear: nn.Linear, enc: torch.Tensor | None) -> None:
    if isinstance(layer, MixtureLinear):
        assert enc is not None
        layer.copy_to(linear, enc)
    else:
        layer.copy_to(linear)


class DynamicTransformerBlock(nn.Module):
    """Transformer block position whose width, heads, MLP width and window come from a ViTBlockPlan."""

    def __init__(self, max_dim: int, max_attn: int, max_hidden: int, make_linear: Any):
        super().__init__()
        self.ln1 = DynamicLayerNorm(max_dim)
        self.q, self.k, self.v = (make_linear(max_dim, max_attn) for _ in range(3))
        self.proj = make_linear(max_attn, max_dim)
        self.ln2 = DynamicLayerNorm(max_dim)
        self.fc1 = make_linear(max_dim, max_hidden)
        self.fc2 = make_linear(max_hidden, max_dim)

    def forward(self, x: torch.Tensor, b: ViTBlockPlan, enc: torch.Tensor | None) -> torch.Tensor:
        y = self.ln1(x)
        q, k, v = (_heads(_linear(f, y, b.attn_dim, enc), b.heads) for f in (self.q, self.k, self.v))
        x = x + _linear(self.proj, _merge(window_attention(q, k, v, b.grid, b.window)), b.dim, enc)
        y = F.gelu(_linear(self.fc1, self.ln2(x), b.hidden, enc))
        return x + _linear(self.fc2, y, b.dim, enc)

    def copy_to(self, m: TransformerBlock, enc: torch.Tensor | None) -> None:
        self.ln1.copy_to(m.ln1)
        self.ln2.copy_to(m.ln2)
        for mine, theirs in ((self.q, m.attn.q), (self.k, m.attn.k), (self.v, m.attn.v), (self.proj, m.attn.proj),
                             (self.fc1, m.fc1), (self.fc2, m.fc2)):
            _copy_linear(mine, theirs, enc)


class ElasticViTSupernetOptions(SupernetOptions):
    mixture: MixtureOptions | None = Field(
        default=None, description="{experts: E, router_hidden: H}: arch-routed expert weights in transformer linears")
    plan_cache_size: int = Field(default=256, ge=0, description="archs whose layer plan is memoized")


class ElasticViTSupernet(Supernet):
    """Weight-sharing supernet of an ``elastic_vit`` space (see the module docstring)."""

    Options = ElasticViTSupernetOptions
    options: ElasticViTSupernetOptions
    spaces = ("elastic_vit",)
    space: ElasticViTSpace

    def __init__(self, space: SearchSpace, options: ElasticViTSupernetOptions | dict[str, Any] | None = None):
        if not isinstance(space, ElasticViTSpace):
            raise TypeError(f"ElasticViTSupernet serves the elastic_vit space, got {type(space).__name__}")
        super().__init__(space, options)
        o = space.options
        mix = self.options.mixture
        encoding_dim = int(space.cardinalities.sum())

        def make_linear(max_in: int, max_out: int) -> ElasticLinear:
            if mix is None:
                return DynamicLinear(max_in, max_out)
            return mix.linear(max_in, max_out, encoding_dim)

        self.stem_conv = nn.Conv2d(o.in_channels, o.stem_channels, 3, o.stem_stride, 1, bias=False)
        nn.init.kaiming_normal_(self.stem_conv.weight, mode="fan_out", nonlinearity="relu")
        self.stem_bn = nn.BatchNorm2d(o.stem_channels)
        max_e, max_k = max(o.expands), max(o.kernels)
        cin = o.stem_channels
        conv_stages = []
        for i, st in enumerate(o.conv_stages):
            cout = space.conv_channels(i, max(o.widths))
            blocks = []
            for j in range(st.max_depth):
                blocks.append(DynamicMBConv(cin, cout, max_e, max_k, st.stride if j == 0 else 1, residual=j > 0))
                cin = cout
            conv_stages.append(nn.ModuleList(blocks))
        self.conv_stages = nn.ModuleList(conv_stages)
        self.embed_convs = nn.ModuleList()
        self.embed_bns = nn.ModuleList()
        vit_stages = []
        for vt in o.vit_stages:
            dim = max(vt.dims)
            self.embed_convs.append(DynamicConv2d(cin, dim, 3, stride=vt.stride))
            self.embed_bns.append(DynamicBatchNorm2d(dim))
            hidden = space.mlp_hidden(dim, max(o.mlp_ratios))
            vit_stages.append(nn.ModuleList([
                DynamicTransformerBlock(dim, max(vt.heads) * vt.head_dim, hidden, make_linear)
                for _ in range(vt.max_depth)
            ]))
            cin = dim
        self.vit_stages = nn.ModuleList(vit_stages)
        self.norm = DynamicLayerNorm(cin)
        self.classifier = DynamicLinear(cin, o.num_classes)
        self._plans: OrderedDict[Arch, tuple[ViTNetworkPlan, Any]] = OrderedDict()

    # ---- contract -------------------------------------------------------------------------
    @classmethod
    def contract_config(cls) -> tuple[dict[str, Any], dict[str, Any]]:
        """A tiny (space options, supernet options) pair for the supernet contract suite.

        Grids 6/8 then 3/4 with windows that need padding, so masked windows are exercised.
        """
        space = {
            "preset": "mnist", "input_size": 16, "resolutions": [12, 16], "stem_channels": 8,
            "conv_stages": [{"channels": 8, "min_depth": 1, "max_depth": 2, "stride": 1}],
            "kernels": [3, 5], "expands": [2], "widths": [0.5, 1.0],
            "vit_stages": [
                {"dims": [8, 16], "min_depth": 1, "max_depth": 2, "stride": 1, "heads": [1, 2], "head_dim": 4,
                 "windows": [4, 8]},
                {"dims": [16, 24], "min_depth": 1, "max_depth": 1, "stride": 2, "heads": [2], "head_dim": 4,
                 "windows": [2, 4]},
            ],
            "mlp_ratios": [1.0, 2.0],
        }
        return space, {}

    def plan_and_encoding(self, arch: Arch) -> tuple[ViTNetworkPlan, torch.Tensor | None]:
        """(``space.plan(arch)``, the arch encoding the mixture routes on or None), memoized."""
        hit = self._plans.get(arch)
        if hit is None:
            enc = None
            if self.options.mixture is not None:
                enc = torch.from_numpy(self.space.encode([self.space.validate(arch)])[0])
            hit = (self.space.plan(arch), enc)
            if self.options.plan_cache_size:
                self._plans[arch] = hit
                if len(self._plans) > self.options.plan_cache_size:
                    self._plans.popitem(last=False)
        return hit

    def input_shape(self, arch: Arch) -> tuple[int, int, int]:
        p = self.plan_and_encoding(arch)[0]
        return (p.in_channels, p.resolution, p.resolution)

    def forward(self, x: torch.Tensor, arch: Arch, *, dropout: float = 0.0) -> torch.Tensor:
        """Logits of child ``arch`` on ``x`` (N, C, H, W; resized to the arch's resolution).

        ``dropout`` is the rate applied before the classifier in training mode (the trainer
        passes it for the largest child only).
        """
        p, enc = self.plan_and_encoding(arch)
        if enc is not None:
            enc = enc.to(x.device)
        if x.shape[-2] != p.resolution or x.shape[-1] != p.resolution:
            x = F.interpolate(x, size=(p.resolution, p.resolution), mode="bilinear", align_corners=False)
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        for b in p.conv_blocks:
            x = self.conv_stages[b.stage][b.index](x, b)
        tokens = x
        for st in p.vit_stages:
            if st.stage > 0:
                g = p.vit_stages[st.stage - 1].grid
                x = tokens_to_map(tokens, g)
            x = self.embed_bns[st.stage](self.embed_convs[st.stage](x, st.dim, 3))
            tokens = x.flatten(2).transpose(1, 2)
            for b in st.blocks:
                tokens = self.vit_stages[b.stage][b.index](tokens, b, enc)
        feats = self.norm(tokens).mean(dim=1)
        if dropout > 0:
            feats = F.dropout(feats, dropout, self.training)
        return self.classifier(feats)

    @classmethod
    def build_child(cls, space: SearchSpace, arch: Arch) -> ElasticViTChild:
        if not isinstance(space, ElasticViTSpace):
            raise TypeError(f"ElasticViTSupernet serves the elastic_vit space, got {type(space).__name__}")
        return ElasticViTChild(space, arch)

    @torch.no_grad()
    def extract(self, arch: Arch) -> ElasticViTChild:
        """A plain child holding copies of the weights (mixtures collapsed) and BN statistics ``arch`` uses."""
        p, enc = self.plan_and_encoding(arch)
        device = self.stem_conv.weight.device
        if enc is not None:
            enc = enc.to(device)
        child = ElasticViTChild(self.space, arch).to(device)
        child.stem[0].weight.copy_(self.stem_conv.weight)
        child.stem[1].load_state_dict(self.stem_bn.state_dict())
        for b, m in zip(p.conv_blocks, child.conv_blocks, strict=True):
            self.conv_stages[b.stage][b.index].copy_to(m)
        for st, stage in zip(p.vit_stages, child.stages, strict=True):
            self.embed_convs[st.stage].copy_to(stage.embed_conv)
            self.embed_bns[st.stage].copy_to(stage.embed_bn)
            for b, m in zip(st.blocks, stage.blocks, strict=True):
                self.vit_stages[b.stage][b.index].copy_to(m, enc)
        self.norm.copy_to(child.norm)
        self.classifier.copy_to(child.classifier)
        return child.train(self.training)
