"""Balanced mixture of supernets over pooling layouts, its plain children, and its trainer.

Idea (after Roberts et al. / Javan et al., 2023, "balanced mixture of supernets" for the
positions of pooling layers; our own formulation): one weight-sharing supernet over every layout
of a ``pooling_layout`` space suffers from interference, because layouts that downsample at
different depths want different filters from the same shared weights. ``PoolingMixtureSupernet``
holds ``num_models`` (K) independent weight-sharing supernets and a *routing table* that assigns
each layout to exactly one of them; a layout is trained, evaluated and extracted on the model it
is routed to. K = 1 is the plain single-supernet baseline.

The routing table is learned and balanced:
- it starts as a seeded random balanced assignment (each model holds floor(L/K) or ceil(L/K)
  of the L layouts);
- :class:`PoolingMixtureTrainer` explores early (a layout goes to a random model with a
  probability that decays to 0), and every ``reassign_every`` steps measures the loss of every
  layout on every model on fixed training images, keeps a running (EMA) loss matrix, and
  re-solves :func:`balanced_assignment`: the assignment of least total loss among those whose
  model sizes differ by at most one (an exact min-cost assignment, ties keep the current model).
  With ``move_margin`` z > 0, moving a layout costs z standard errors of its paired per-image
  loss difference (:func:`paired_standard_error`), so a layout moves only on a gain the probe
  images agree on rather than on the noise of one measurement. From K separate initializations
  (``python -m benchmarks pooling_margin``, held-out seeds) z = 2 halves the layouts moved but
  leaves ranking and inherited accuracy where z = 0 has them.
- With ``shared_warmup_fraction`` f > 0 every layout first trains weight model 0 for a share f of
  training; model 0 (weights, BN statistics, optimizer state) is then copied into every model,
  and from there each layout trains on the model it is routed to. Each model so starts from
  features learned at the single supernet's full update rate, instead of from its own
  initialization with a 1/K share of the updates.

- With ``split: gradient`` (with a shared warm start) the layouts are regrouped when the warm start
  ends: layouts whose loss gradients on the shared model point the same way (cosine similarity
  over the probe images, :meth:`PoolingMixtureSupernet.gradient_similarity`) share a model, by
  balanced swaps to a local optimum of the within-group similarity (:func:`similar_groups`; after
  few-shot NAS by gradient matching, Hu et al., 2022). The layouts that pull the shared weights
  apart are so the ones that get separate weights; ``split: random`` keeps the seeded grouping.

Defaults: f = 0.3, z = 2 (the exploration share, 0.3, is spent in the shared phase) and
``split: gradient``. On MNIST-5k at equal steps (``pooling_warm`` on seeds 0-2,
``pooling_warm_heldout`` on 3-5) the warm start lifts the mixture's mean inherited accuracy from
0.925 / 0.930 (exploration and learned routing from K initializations, z = 0) to 0.952 / 0.958
and its Kendall tau against standalone training from 0.24 / 0.11 to 0.19 / 0.34 on accuracy and
0.11 / 0.21 to 0.33 / 0.27 on test loss; after the copy no re-solve found a move worth two
standard errors, so the grouping at the copy is the one the mixture keeps. Choosing it by gradient
(``pooling_gradient_split``, seeds 0-5) gives tau 0.31 against 0.26 for the random grouping (test
loss 0.33 against 0.30), the rule set before that run for making it the default; the single
supernet has 0.31 (0.27), so the mixture ties it on accuracy rather than beating it.

The table is a buffer (``assignment``), so it is saved with the weights: a loaded supernet routes
exactly as the trained one did, and ``forward(x, arch)`` equals ``extract(arch)(x)``.

Within one weight model, block ``j`` holds weights for its widest possible width; a layout uses
the leading channels (the dynamic-layer channel rule of ``nasforge.supernets.layers``), and the
conv stride comes from the layout, so no "active subnet" state is kept between calls.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from scipy.optimize import linear_sum_assignment
from torch import nn

from nasforge.core.errors import JobSpecError
from nasforge.core.spec import TrainingSpec
from nasforge.core.types import Arch
from nasforge.spaces.base import SearchSpace
from nasforge.spaces.pooling_layout import LayoutPlan, PoolingLayoutSpace, ResBlockPlan
from nasforge.supernets.base import Supernet, SupernetOptions
from nasforge.supernets.bignas import ConvBNReLU, PoolLinear, _init_plain
from nasforge.supernets.bignas import build_op as build_cnn_op
from nasforge.supernets.layers import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear
from nasforge.supernets.trainer import (
    SandwichOptions,
    SandwichTrainer,
    _seed_of,
    checkpointed_options,
    newest_checkpoint,
    options_error,
)

# ------------------------------------------------------------------------------------------------
# Balanced assignment


def balanced_assignment(loss: np.ndarray, current: Sequence[int] | np.ndarray | None = None,
                        move_cost: np.ndarray | None = None) -> np.ndarray:
    """Assign each of L rows (layouts) to one of K columns (models), balanced, at least total loss.

    Every model receives floor(L/K) or ceil(L/K) layouts; among such assignments the one with the
    smallest sum of ``loss[l, model(l)]`` is returned (exact: a min-cost assignment over model
    slots). Ties are broken in favour of ``current`` (layouts stay where they are). Non-finite
    losses count as larger than every finite one. ``move_cost`` (L, K, non-negative; needs
    ``current``) is added to every entry but a layout's current model: a layout then moves only
    where its loss gain is larger than that cost (or where balance forces it). Returns an int64
    array of length L.
    """
    loss = np.asarray(loss, dtype=np.float64)
    if loss.ndim != 2 or loss.shape[1] < 1:
        raise ValueError(f"loss must be an (layouts, models) matrix, got shape {loss.shape}")
    L, K = loss.shape
    if K > L:
        raise ValueError(f"{K} models cannot each hold a layout: only {L} layouts")
    finite = np.isfinite(loss)
    cost = np.where(finite, loss, (np.nanmax(np.where(finite, loss, np.nan)) if finite.any() else 0.0) + 1.0)
    scale = max(1.0, float(np.abs(cost).max()))
    if current is not None:  # prefer staying among equal-loss choices
        cur = np.asarray(current, dtype=np.int64)
        cost = cost.copy()
        cost[np.arange(L), cur] -= 1e-9 * scale
    if move_cost is not None:
        if current is None:
            raise ValueError("move_cost needs the current assignment")
        extra_cost = np.asarray(move_cost, dtype=np.float64)
        if extra_cost.shape != (L, K) or not np.isfinite(extra_cost).all() or (extra_cost < 0).any():
            raise ValueError(f"move_cost must be a finite, non-negative {L}x{K} matrix")
        extra_cost = extra_cost.copy()
        extra_cost[np.arange(L), cur] = 0.0
        cost = cost + extra_cost
        scale = max(scale, float(np.abs(cost).max()))
    base, extra = divmod(L, K)
    # Columns: ``base`` mandatory slots per model (made very cheap, so all are filled), plus one
    # optional slot per model when L is not a multiple of K (exactly ``extra`` of them get used).
    big = 10.0 * (scale + 1.0) * L
    cols = [np.repeat(np.arange(K), base)]
    bonus = [np.full(K * base, -big)]
    if extra:
        cols.append(np.arange(K))
        bonus.append(np.zeros(K))
    col_model = np.concatenate(cols)
    matrix = cost[:, col_model] + np.concatenate(bonus)[None, :]
    rows, picked = linear_sum_assignment(matrix)
    out = np.empty(L, dtype=np.int64)
    out[rows] = col_model[picked]
    return out


def paired_standard_error(samples: np.ndarray, current: Sequence[int] | np.ndarray) -> np.ndarray:
    """Standard error of each layout's mean loss difference between every model and its current one.

    ``samples``: (L, K, N) per-image losses. Entry (l, k) is std_i(loss[l, k, i] - loss[l, c(l), i])
    / sqrt(N) (sample std; the images are paired, so what the images share cancels); 0 on the
    current model and when N < 2.
    """
    samples = np.asarray(samples, dtype=np.float64)
    L, _, n = samples.shape
    if n < 2:
        return np.zeros(samples.shape[:2])
    cur = np.asarray(current, dtype=np.int64)
    diff = samples - samples[np.arange(L), cur][:, None, :]
    return diff.std(axis=2, ddof=1) / math.sqrt(n)


def initial_assignment(num_layouts: int, num_models: int, seed: int) -> np.ndarray:
    """A seeded random balanced assignment (model sizes differ by at most one)."""
    perm = np.random.default_rng(seed).permutation(num_layouts)
    out = np.empty(num_layouts, dtype=np.int64)
    out[perm] = np.arange(num_layouts) % num_models
    return out


def similar_groups(similarity: np.ndarray, start: Sequence[int] | np.ndarray) -> np.ndarray:
    """A balanced grouping of L items with a large within-group similarity, from ``start``.

    ``similarity``: a symmetric (L, L) matrix (the diagonal is ignored); ``start``: a group per
    item. Swaps two items of different groups, the swap of largest gain first, until no swap raises
    the sum of similarities within groups: a local optimum that keeps ``start``'s group sizes
    (deterministic; ties keep the earlier pair).
    """
    S = np.array(similarity, dtype=np.float64)
    L = S.shape[0]
    if S.shape != (L, L) or not np.isfinite(S).all():
        raise ValueError(f"similarity must be a finite {L}x{L} matrix")
    S = (S + S.T) / 2
    np.fill_diagonal(S, 0.0)
    groups = np.array(start, dtype=np.int64)
    if groups.shape != (L,):
        raise ValueError(f"start must give a group for each of the {L} items")
    K = int(groups.max()) + 1 if L else 0
    scale = max(1.0, float(np.abs(S).max()))
    for _ in range(L * L):  # each swap raises the objective, so this bound is never the one that stops it
        onehot = np.eye(K)[groups]  # (L, K)
        G = S @ onehot  # G[i, g]: similarity of item i to the members of group g
        own = G[np.arange(L), groups]
        # gain of swapping i (group a) and j (group b): i joins b without j, j joins a without i
        gain = (G[:, groups] - own[:, None] - S) + (G[:, groups].T - own[None, :] - S)
        gain[groups[:, None] == groups[None, :]] = -np.inf
        i, j = np.unravel_index(int(np.argmax(gain)), gain.shape)
        if not gain[i, j] > 1e-12 * scale:
            break
        groups[i], groups[j] = groups[j], groups[i]
    return groups


# ------------------------------------------------------------------------------------------------
# Plain child


class BasicBlock(nn.Module):
    """3x3 conv (stride) -BN-ReLU, 3x3 conv -BN, + shortcut (identity or 1x1 conv-BN), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, projection: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))
                                    if projection else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PoolingLayoutChild(nn.Module):
    """A standalone child of the ``pooling_layout`` space: stem -> basic blocks -> pool + linear."""

    def __init__(self, space: PoolingLayoutSpace, arch: Arch):
        super().__init__()
        plan = space.plan(arch)
        self.input_shape = (plan.in_channels, plan.input_size, plan.input_size)
        self.stem = ConvBNReLU(plan.in_channels, plan.stem_channels, 3, plan.stem_stride)
        self.blocks = nn.Sequential(*[BasicBlock(b.cin, b.cout, b.stride, b.projection) for b in plan.blocks])
        self.classifier = PoolLinear(plan.feature_channels, plan.num_classes)
        _init_plain(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blocks(self.stem(x)))


def build_op(desc: dict[str, Any]) -> nn.Module:
    """One operation of ``PoolingLayoutSpace.ops(arch)`` as a standalone module (fresh weights).

    Input: (N, desc["cin"], desc["input_hw"], desc["input_hw"]).
    """
    if desc["type"] == "basic_block":
        m = BasicBlock(desc["cin"], desc["cout"], desc["stride"], desc["projection"])
        _init_plain(m)
        return m
    return build_cnn_op(desc)


# ------------------------------------------------------------------------------------------------
# One weight-sharing supernet over all layouts


class DynamicBasicBlock(nn.Module):
    """Block position ``j``: widest weights it can need; width and stride come from a ResBlockPlan."""

    def __init__(self, max_in: int, max_out: int):
        super().__init__()
        self.conv1 = DynamicConv2d(max_in, max_out, 3)
        self.bn1 = DynamicBatchNorm2d(max_out)
        self.conv2 = DynamicConv2d(max_out, max_out, 3)
        self.bn2 = DynamicBatchNorm2d(max_out)
        self.proj_conv = DynamicConv2d(max_in, max_out, 1)
        self.proj_bn = DynamicBatchNorm2d(max_out)

    def forward(self, x: torch.Tensor, b: ResBlockPlan) -> torch.Tensor:
        out = F.relu(self.bn1(F.conv2d(x, self.conv1.active_weight(b.cin, b.cout, 3), None, b.stride, 1)))
        out = self.bn2(F.conv2d(out, self.conv2.active_weight(b.cout, b.cout, 3), None, 1, 1))
        if b.projection:
            short = self.proj_bn(F.conv2d(x, self.proj_conv.active_weight(b.cin, b.cout, 1), None, b.stride, 0))
        else:
            short = x
        return F.relu(out + short)

    def copy_to(self, m: BasicBlock, b: ResBlockPlan) -> None:
        self.conv1.copy_to(m.conv1)
        self.bn1.copy_to(m.bn1)
        self.conv2.copy_to(m.conv2)
        self.bn2.copy_to(m.bn2)
        if b.projection:
            assert isinstance(m.shortcut, nn.Sequential)
            self.proj_conv.copy_to(m.shortcut[0])
            self.proj_bn.copy_to(m.shortcut[1])


class LayoutSupernet(nn.Module):
    """One weight model: stem, one DynamicBasicBlock per block position, classifier."""

    def __init__(self, space: PoolingLayoutSpace):
        super().__init__()
        o = space.options
        self.stem_conv = nn.Conv2d(o.in_channels, o.stem_channels, 3, o.stem_stride, 1, bias=False)
        nn.init.kaiming_normal_(self.stem_conv.weight, mode="fan_out", nonlinearity="relu")
        self.stem_bn = nn.BatchNorm2d(o.stem_channels)
        n, d = o.num_blocks, o.num_downsamples
        blocks = []
        for j in range(n):
            # block j is in stage (number of downsamplings at blocks <= j), at most min(j + 1, d)
            max_in = o.stem_channels if j == 0 else space.stage_channels(min(j, d))
            blocks.append(DynamicBasicBlock(max_in, space.stage_channels(min(j + 1, d))))
        self.blocks = nn.ModuleList(blocks)
        self.classifier = DynamicLinear(space.max_channels, o.num_classes)

    def forward(self, x: torch.Tensor, plan: LayoutPlan, dropout: float = 0.0) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        for b in plan.blocks:
            x = self.blocks[b.index](x, b)
        x = x.mean(dim=(2, 3))
        if dropout > 0:
            x = F.dropout(x, dropout, self.training)
        return self.classifier(x)

    @torch.no_grad()
    def copy_to(self, child: PoolingLayoutChild, plan: LayoutPlan) -> None:
        child.stem[0].weight.copy_(self.stem_conv.weight)
        child.stem[1].load_state_dict(self.stem_bn.state_dict())
        for b, m in zip(plan.blocks, child.blocks, strict=True):
            self.blocks[b.index].copy_to(m, b)
        self.classifier.copy_to(child.classifier.linear)


# ------------------------------------------------------------------------------------------------
# The mixture


class PoolingMixtureOptions(SupernetOptions):
    num_models: int = Field(default=2, ge=1, le=64, description="K weight models; 1 = a single supernet")
    assign_seed: int = Field(default=0, description="seed of the initial random balanced assignment")


class PoolingMixtureSupernet(Supernet):
    """K weight-sharing supernets over a ``pooling_layout`` space, layouts routed by a balanced table."""

    Options = PoolingMixtureOptions
    spaces = ("pooling_layout",)
    trainers = ("pooling_mixture",)
    space: PoolingLayoutSpace
    options: PoolingMixtureOptions
    assignment: torch.Tensor

    def __init__(self, space: SearchSpace, options: PoolingMixtureOptions | dict[str, Any] | None = None):
        if not isinstance(space, PoolingLayoutSpace):
            raise TypeError(f"PoolingMixtureSupernet serves the pooling_layout space, got {type(space).__name__}")
        super().__init__(space, options)
        self.check_space(space, self.options)
        K, L = self.options.num_models, space.num_layouts
        self.models = nn.ModuleList([LayoutSupernet(space) for _ in range(K)])
        self.register_buffer("assignment", torch.from_numpy(initial_assignment(L, K, self.options.assign_seed)))
        self._plans: dict[Arch, LayoutPlan] = {}

    @classmethod
    def check_space(cls, space: SearchSpace, options: SupernetOptions) -> None:
        K, L = getattr(options, "num_models", 1), getattr(space, "num_layouts", 0)
        if K > L:
            raise JobSpecError(f"supernet.options.num_models: {K} models but the space has only {L} layouts; "
                               f"use at most {L}")

    @classmethod
    def contract_config(cls) -> tuple[dict[str, Any], dict[str, Any]]:
        """A tiny (space options, supernet options) pair for the supernet contract suite."""
        space = {"preset": "mnist", "input_size": 12, "stem_channels": 4, "stem_stride": 1, "num_blocks": 4,
                 "num_downsamples": 2}
        return space, {"num_models": 3}

    @property
    def num_models(self) -> int:
        return len(self.models)

    def plan(self, arch: Arch) -> LayoutPlan:
        plan = self._plans.get(arch)
        if plan is None:
            plan = self._plans[arch] = self.space.plan(arch)
        return plan

    def input_shape(self, arch: Arch) -> tuple[int, int, int]:
        o = self.space.options
        return (o.in_channels, o.input_size, o.input_size)

    # ---- routing --------------------------------------------------------------------------
    def route(self, arch: Arch) -> int:
        """The weight model that layout ``arch`` is assigned to."""
        return int(self.assignment[self.space.layout_index(arch)])

    def routing(self) -> np.ndarray:
        """The routing table: model of each layout, in the order of ``space.layouts()``."""
        return self.assignment.detach().cpu().numpy().copy()

    @torch.no_grad()
    def set_routing(self, assignment: Sequence[int] | np.ndarray) -> None:
        """Replace the routing table (length L, values in 0..K-1, sizes balanced within one)."""
        a = np.asarray(assignment, dtype=np.int64)
        L, K = self.space.num_layouts, self.num_models
        if a.shape != (L,) or a.min() < 0 or a.max() >= K:
            raise ValueError(f"routing must be {L} model indices in 0..{K - 1}")
        sizes = np.bincount(a, minlength=K)
        if sizes.max() - sizes.min() > 1:
            raise ValueError(f"routing is not balanced: model sizes {sizes.tolist()}")
        self.assignment.copy_(torch.from_numpy(a))

    def reassign(self, loss: np.ndarray, move_cost: np.ndarray | None = None) -> np.ndarray:
        """Re-solve the routing from an (L, K) loss matrix (:func:`balanced_assignment`, with an
        optional (L, K) cost of moving); returns it."""
        new = balanced_assignment(loss, current=self.routing(), move_cost=move_cost)
        self.set_routing(new)
        return new

    def loss_matrix(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Mean cross-entropy of every layout (rows, ``space.layouts()`` order) on every model (columns).

        BN normalizes with batch statistics (as in training) but no running statistic changes:
        measuring leaves the supernet exactly as it was.
        """
        return self.loss_samples(x, y, batch_size).mean(axis=2)

    @torch.no_grad()
    def loss_samples(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Cross-entropy of every layout on every model for every image: an (L, K, N) array.

        Measured as :meth:`loss_matrix` (its mean over images); the per-image values let a caller
        tell a real difference between two models from the spread of the images.
        """
        out = np.zeros((self.space.num_layouts, self.num_models, x.shape[0]))
        with self._measuring():
            for i, arch in enumerate(self.space.layouts()):
                plan = self.plan(arch)
                for k, model in enumerate(self.models):
                    for s in range(0, x.shape[0], batch_size):
                        logits = model(x[s:s + batch_size], plan)
                        out[i, k, s:s + batch_size] = F.cross_entropy(
                            logits, y[s:s + batch_size], reduction="none").double().cpu().numpy()
        return out

    @contextmanager
    def _measuring(self) -> Iterator[None]:
        """Training mode (BN normalizes with batch statistics) with every running statistic and the
        mode put back afterwards: a measurement leaves the supernet exactly as it was."""
        saved = {k: v.clone() for k, v in self.named_buffers() if k != "assignment"}
        was_training = self.training
        self.train()
        try:
            yield
        finally:
            buffers = dict(self.named_buffers())
            for name, value in saved.items():
                buffers[name].copy_(value)
            self.train(was_training)

    def gradient_similarity(self, x: torch.Tensor, y: torch.Tensor, model: int = 0) -> np.ndarray:
        """Cosine similarity of the layouts' loss gradients on weight model ``model``: an (L, L) array.

        Each layout's mean cross-entropy on ``x, y`` is differentiated with respect to every weight
        of the model (BN with batch statistics, as in training); the supernet, its BN statistics
        and any ``.grad`` are left as they were.
        """
        net = self.models[model]
        params = [p for p in net.parameters() if p.requires_grad]
        rows = []
        with self._measuring():
            for arch in self.space.layouts():
                loss = F.cross_entropy(net(x, self.plan(arch)), y)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                  for g, p in zip(grads, params, strict=True)])
                rows.append(flat / flat.norm().clamp_min(1e-12))
        g = torch.stack(rows).double()
        return (g @ g.T).cpu().numpy()

    # ---- contract -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, arch: Arch, *, model: int | None = None, dropout: float = 0.0) -> torch.Tensor:
        """Logits of layout ``arch`` on its routed model (or on weight model ``model`` when given).

        ``dropout`` is the rate before the classifier in training mode (children have none).
        """
        k = self.route(arch) if model is None else int(model)
        return self.models[k](x, self.plan(arch), dropout)

    @classmethod
    def build_child(cls, space: SearchSpace, arch: Arch) -> PoolingLayoutChild:
        if not isinstance(space, PoolingLayoutSpace):
            raise TypeError(f"PoolingMixtureSupernet serves the pooling_layout space, got {type(space).__name__}")
        return PoolingLayoutChild(space, arch)

    @torch.no_grad()
    def extract(self, arch: Arch, *, model: int | None = None) -> PoolingLayoutChild:
        """A plain child holding copies of the weights and BN statistics of ``arch`` on its routed model."""
        k = self.route(arch) if model is None else int(model)
        child = PoolingLayoutChild(self.space, arch).to(self.assignment.device)
        self.models[k].copy_to(child, self.plan(arch))
        return child.train(self.training)


# ------------------------------------------------------------------------------------------------
# Trainer


class PoolingMixtureTrainerOptions(BaseModel):
    """``training.options`` of the ``pooling_mixture`` trainer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layouts_per_step: int = Field(default=2, ge=1, le=64, description="layouts trained per step (distinct, uniform)")
    explore_fraction: float = Field(
        default=0.3, ge=0, le=1,
        description="share of training during which a layout may go to a random model (probability 1 -> 0); "
                    "moot where shared_warmup_fraction covers it, as by default")
    reassign_every: int = Field(default=25, ge=0, description="steps between balanced re-assignments; 0 = never")
    freeze_fraction: float = Field(default=0.8, ge=0, le=1, description="no re-assignment after this share of training")
    probe_images: int = Field(default=256, ge=1, description="training images whose losses drive the assignment")
    loss_ema: float = Field(default=0.5, gt=0, le=1, description="weight of the newest probe loss in the running matrix")
    shared_warmup_fraction: float = Field(
        default=0.3, ge=0, lt=1,
        description="train one shared weight model on every layout for this share of training, then copy its weights "
                    "and optimizer state into all K models before layouts train on their routed ones (0: the K "
                    "models train from their own initializations)")
    split: Literal["random", "gradient"] = Field(
        default="gradient",
        description="which layouts share a model when the shared warm start ends: gradient (layouts whose loss "
                    "gradients on the shared model point the same way, after few-shot NAS by gradient matching) or "
                    "random (the seeded random balanced assignment); moot without a shared warm start")
    move_margin: float = Field(
        default=2.0, ge=0,
        description="a layout moves to another model only if its running probe loss there is lower by more than this "
                    "many standard errors of the per-image loss difference (0: any gain moves it)")
    label_smoothing: float = Field(default=0.1, ge=0, lt=1, description="label smoothing")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout before the classifier while training")
    final_lr_fraction: float = Field(default=0.05, gt=0, le=1, description="constant LR at the end, as a fraction of lr")
    decay_end_fraction: float = Field(default=0.85, gt=0, le=1, description="share of training after which LR is constant")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD (Nesterov) momentum")
    eval_images: int = Field(default=500, ge=1, description="validation images scored after each epoch")
    calib_images: int = Field(default=256, ge=1, description="training images for BN recalibration before scoring")
    threads: int | None = Field(default=None, ge=1, le=256, description="torch CPU threads while training")

    @model_validator(mode="after")
    def _split_needs_a_shared_start(self) -> PoolingMixtureTrainerOptions:
        if self.split == "gradient" and self.shared_warmup_fraction <= 0 and "split" in self.model_fields_set:
            raise ValueError("split: 'gradient' groups layouts by their gradients on the shared model, which only "
                             "a shared warm start trains; set shared_warmup_fraction > 0 (e.g. 0.3) or split: random")
        return self


class LayoutSampler:
    """``count`` distinct layouts per step, uniform; holds the running loss matrix (checkpointed)."""

    def __init__(self, space: PoolingLayoutSpace, count: int, num_models: int):
        self.layouts = space.layouts()
        self.count = min(count, len(self.layouts))
        self.loss = np.full((len(self.layouts), num_models), np.nan)
        self.history: list[dict[str, float]] = []

    def sample_step(self, step: int, rng: np.random.Generator) -> list[Arch]:
        return [self.layouts[int(i)] for i in rng.choice(len(self.layouts), size=self.count, replace=False)]

    def state_dict(self) -> dict[str, Any]:
        return {"loss": [[None if not math.isfinite(v) else float(v) for v in row] for row in self.loss],
                "history": self.history}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.loss = np.array([[np.nan if v is None else v for v in row] for row in state["loss"]], dtype=np.float64)
        self.history = list(state.get("history", []))


class PoolingMixtureTrainer(SandwichTrainer):
    """Trains a :class:`PoolingMixtureSupernet`: routed layouts from the labels, learned balanced routing.

    One step: ``layouts_per_step`` distinct layouts, each on its routed model (while exploring,
    on a uniformly random model with probability decaying linearly from 1 to 0 over
    ``explore_fraction`` of training), cross-entropy with label smoothing, gradients summed, weight
    decay, one SGD (Nesterov) update. Every ``reassign_every`` steps (until ``freeze_fraction`` of
    training) the loss of every layout on every model is measured on ``probe_images`` training
    images, folded into the running matrix (EMA ``loss_ema``) and the routing is re-solved with
    :func:`balanced_assignment` (each move charged ``move_margin`` paired standard errors);
    ``sampler.history`` records each re-assignment (step, layouts moved, total probe loss of the
    old and new routing). Schedule, seeding, checkpoints and resume are the sandwich trainer's.
    """

    Options = PoolingMixtureTrainerOptions  # type: ignore[assignment]

    def __init__(self, supernet: Supernet, data: Any, spec: TrainingSpec, *, seed: int, checkpoint_dir: Any,
                 options: PoolingMixtureTrainerOptions | Mapping[str, Any] | None = None,
                 device: torch.device | str | None = None):
        if not isinstance(supernet, PoolingMixtureSupernet):
            raise JobSpecError(f"training.trainer: the pooling_mixture trainer trains the pooling_mixture supernet, "
                               f"not {type(supernet).__name__}")
        if options is None or isinstance(options, Mapping):
            try:
                options = PoolingMixtureTrainerOptions.model_validate(dict(options or {}))
            except ValidationError as e:
                raise options_error(e) from None
        assert isinstance(options, PoolingMixtureTrainerOptions)
        given: PoolingMixtureTrainerOptions = options
        o, note = checkpointed_options(checkpoint_dir, given, "mixture_options")
        self.resume_notes = [note] if note else []
        newest = newest_checkpoint(checkpoint_dir)
        if newest is not None and "mixture_options" not in newest[1] and newest[1]["step"] < newest[1]["total_steps"]:
            self.resume_notes.append(
                "training.options: the checkpoint does not record the pooling_mixture trainer's options (written "
                "before nasforge kept them); resuming with this nasforge's options, shared_warmup_fraction="
                f"{o.shared_warmup_fraction:g}, move_margin={o.move_margin:g} and split={o.split}, where a job started "
                "on an earlier version may have trained with 0, 0 and random; delete the job and submit it anew for "
                "one recipe throughout")
        sandwich = SandwichOptions(
            sampling="sandwich", num_random=0, inplace_distill=False, dropout=o.dropout,
            label_smoothing=o.label_smoothing, final_lr_fraction=o.final_lr_fraction,
            decay_end_fraction=o.decay_end_fraction, momentum=o.momentum, eval_images=o.eval_images,
            calib_images=o.calib_images, threads=o.threads)
        self.mixture_options = o
        sampler = LayoutSampler(supernet.space, o.layouts_per_step, supernet.num_models)
        super().__init__(supernet, data, spec, seed=seed, checkpoint_dir=checkpoint_dir, options=sandwich,
                         arch_sampler=sampler, device=device)
        self.net: PoolingMixtureSupernet = supernet
        self.layout_sampler = sampler

    def checkpoint_options(self) -> dict[str, Any]:
        return {**super().checkpoint_options(), "mixture_options": self.mixture_options.model_dump(mode="json")}

    def explore_probability(self, step: int) -> float:
        span = self.mixture_options.explore_fraction * self.total_steps
        return 0.0 if span <= 0 else max(0.0, 1.0 - step / span)

    def probe_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``probe_images`` training images (and labels) that routing decisions are measured on."""
        n = self.mixture_options.probe_images
        return self.data.train[0][:n].to(self.device), self.data.train[1][:n].to(self.device)

    def probe_samples(self) -> np.ndarray:
        """The (L, K, N) per-image losses on the N probe images (the supernet is left unchanged)."""
        return self.net.loss_samples(*self.probe_batch())

    def probe(self) -> np.ndarray:
        """The (L, K) loss matrix on the probe images (the supernet is left unchanged)."""
        return self.probe_samples().mean(axis=2)

    def reassign(self) -> dict[str, float]:
        """Measure, fold into the running loss matrix, re-solve the routing; returns the history row."""
        samples = self.probe_samples()
        measured = samples.mean(axis=2)
        old = self.net.routing()
        rows = np.arange(len(old))
        run = self.layout_sampler.loss
        a = self.mixture_options.loss_ema
        self.layout_sampler.loss = np.where(np.isfinite(run), (1 - a) * run + a * measured, measured)
        move_cost = None
        if self.mixture_options.move_margin > 0:
            move_cost = self.mixture_options.move_margin * paired_standard_error(samples, old)
        new = self.net.reassign(self.layout_sampler.loss, move_cost=move_cost)
        row = {"step": float(self.step), "moved": float((old != new).sum()),
               "probe_loss_before": float(measured[rows, old].mean()),
               "probe_loss_after": float(measured[rows, new].mean())}
        self.layout_sampler.history.append(row)
        return row

    @property
    def shared_steps(self) -> int:
        """Steps during which every layout trains weight model 0 (``shared_warmup_fraction``)."""
        if self.net.num_models == 1:
            return 0
        return int(round(self.mixture_options.shared_warmup_fraction * self.total_steps))

    def gradient_split(self) -> dict[str, float]:
        """Route layouts whose loss gradients on the shared model 0 agree to the same model
        (:func:`similar_groups` on :meth:`PoolingMixtureSupernet.gradient_similarity` over the probe
        images, from the current routing); returns the history row it records."""
        similarity = self.net.gradient_similarity(*self.probe_batch(), model=0)
        old = self.net.routing()
        new = similar_groups(similarity, old)
        self.net.set_routing(new)
        others = ~np.eye(len(new), dtype=bool)

        def within(groups: np.ndarray) -> float:
            pairs = (groups[:, None] == groups[None, :]) & others
            return float(similarity[pairs].mean()) if pairs.any() else float("nan")

        row = {"step": float(self.step), "moved": float((old != new).sum()), "split": 1.0,
               "similarity_within_before": within(old), "similarity_within_after": within(new),
               "similarity_mean": float(similarity[others].mean())}
        self.layout_sampler.history.append(row)
        return row

    @torch.no_grad()
    def split_shared_model(self) -> None:
        """Copy weight model 0 (weights, BN statistics, optimizer state) into every other model."""
        source = self.net.models[0]
        params = list(source.parameters())
        state = source.state_dict()
        for model in self.net.models[1:]:
            model.load_state_dict(state)
            for p_src, p_dst in zip(params, model.parameters(), strict=True):
                moments = self.optimizer.state.get(p_src)
                if moments:
                    self.optimizer.state[p_dst] = {k: v.clone() if torch.is_tensor(v) else v for k, v in moments.items()}
                else:
                    self.optimizer.state.pop(p_dst, None)

    def _train_step(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        o = self.mixture_options
        shared = self.shared_steps
        if shared and self.step == shared:
            if o.split == "gradient":
                self.gradient_split()
            self.split_shared_model()
        if (o.reassign_every and self.step > shared and self.step % o.reassign_every == 0
                and self.step < o.freeze_fraction * self.total_steps and self.net.num_models > 1):
            self.reassign()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(self.step)
        torch.manual_seed(_seed_of(self.seed, self.step, 1))
        rng = np.random.default_rng([self.seed, self.step, 2])
        explore = self.explore_probability(self.step)
        losses = []
        for arch in self.layout_sampler.sample_step(self.step, rng):
            go_random = rng.random() < explore
            model = int(rng.integers(self.net.num_models)) if go_random else None
            if self.step < shared:
                model = 0
            logits = self.net(xb, arch, model=model, dropout=o.dropout)
            loss = F.cross_entropy(logits, yb, label_smoothing=o.label_smoothing)
            loss.backward()
            losses.append(float(loss.detach()))
        self._optimizer_step()
        self.step += 1
        return float(np.mean(losses))
