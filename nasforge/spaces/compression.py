"""CompressionSpace: per-layer (or per-group) bit-widths and/or sparsity levels. No torch.

The layer table (names, shapes, parameter counts, MACs, group) is plain data in the options,
filled in by layer discovery (``nasforge.compress.discovery``) when a job is built; a user writes
only the level options (``mode``, ``bits``, ``sparsities``, quantizer and pruner settings,
``group_by``, ``skip_first`` / ``skip_last``).

Choices: one per group and knob, ``"bits:GROUP"`` and/or ``"sparsity:GROUP"``. Bits are listed
ascending (cheapest first); sparsities descending (cheapest = most zeros first), so ``largest()``
is the least compressed allocation. A bit-width of 16 or 32 means "not quantized" (float16 /
float32 values).

Costs are exact and match what ``nasforge.compress.export`` writes byte for byte:
``model_bytes`` (packed codes + fp16 scales (+ uint8 zero points) + 1-bit sparsity masks for the
searched layers, plus every other tensor of the state dict as stored), ``avg_bits`` (parameter-
weighted over searched layers), ``sparsity`` (zeros / searched weights), ``bops``
(MACs x weight bits x ``activation_bits``, counting only MACs of kept weights), ``params``
(non-zero searched weights + other parameters) and ``flops`` (MACs).

``level_table()`` gives allocators every group's combined levels and their costs as arrays, so
that DP / ILP / EvoPress never need torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nasforge.core.types import Arch, Scalar
from nasforge.spaces.base import SearchSpace, SpaceOptions

FLOAT_BITS = (16, 32)
QUANT_BITS = (2, 3, 4, 5, 6, 7, 8)
#: cost metrics that are sums over groups (linear in the level choice), usable as allocator budgets
BUDGET_METRICS = ("model_bytes", "avg_bits", "sparsity", "bops", "params")


class LayerInfo(BaseModel):
    """One compressible layer (a Conv or Linear weight) as discovered on the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="module name in the model (named_modules)")
    kind: str = Field(description="conv1d | conv2d | linear")
    shape: list[int] = Field(description="weight shape; dim 0 is the output channel")
    macs: int = Field(ge=0, description="multiply-accumulates of one forward pass at batch size 1")
    group: str = Field(description="group whose choice sets this layer's level")

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))

    @property
    def out_channels(self) -> int:
        return int(self.shape[0])

    @property
    def row_size(self) -> int:
        return self.numel // self.out_channels


class CompressionSpaceOptions(SpaceOptions):
    mode: Literal["bits", "sparsity", "joint"] = Field(
        default="bits", description="search bit-widths, sparsities, or both per group")
    bits: list[int] = Field(default_factory=lambda: [2, 3, 4, 8],
                            description="allowed weight bit-widths (2..8 quantized; 16/32 = float)")
    sparsities: list[float] = Field(default_factory=lambda: [0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9],
                                    description="allowed sparsity levels (fraction of weights zeroed)")
    fixed_bits: int = Field(default=32, description="bit-width of every layer when mode is 'sparsity'")
    granularity: Literal["channel", "group"] = Field(
        default="channel", description="one scale per output channel, or per group_size weights of a row")
    group_size: int = Field(default=128, ge=8, le=65536, description="weights per scale when granularity=group")
    symmetric: bool = Field(default=True, description="symmetric (no zero point) or asymmetric quantization")
    rounding: Literal["nearest", "gptq"] = Field(
        default="nearest", description="round-to-nearest, or GPTQ-style calibrated rounding on calibration inputs")
    pruning: Literal["magnitude", "nm", "wanda"] = Field(
        default="magnitude",
        description="unstructured |w| pruning, N:M structured (sparsity levels must be 0 or 1-n/m), "
                    "or activation-aware |w|*||x|| (Wanda) on calibration inputs")
    nm: list[int] = Field(default_factory=lambda: [2, 4], description="[N, M]: keep N of every M weights")
    group_by: Literal["layer", "block"] = Field(
        default="layer", description="one choice per layer, or per block (name up to its first numeric part)")
    skip_first: bool = Field(default=False, description="leave the first compressible layer uncompressed")
    skip_last: bool = Field(default=False, description="leave the last compressible layer uncompressed")
    skip: list[str] = Field(default_factory=list, description="layer names (or prefixes) left uncompressed")
    activation_bits: int = Field(default=32, ge=1, le=32, description="activation bits in the BOPs count")
    calibration_images: int = Field(default=256, ge=8, le=1_000_000, description="training images for KL / saliency")
    input_shape: list[int] | None = Field(default=None, description="C, H, W of one input; default: the dataset's")
    # filled by layer discovery --------------------------------------------------------------
    layers: list[LayerInfo] = Field(default_factory=list, description="(filled in by layer discovery)")
    other_bytes: int = Field(default=0, ge=0, description="(filled in) bytes of all other state-dict tensors")
    other_params: int = Field(default=0, ge=0, description="(filled in) parameters outside searched layers")

    @model_validator(mode="after")
    def _check(self) -> CompressionSpaceOptions:
        for b in self.bits + [self.fixed_bits]:
            if b not in QUANT_BITS + FLOAT_BITS:
                raise ValueError(f"bits: {b} is not allowed; use 2..8 (quantized) or 16/32 (float)")
        if len(set(self.bits)) != len(self.bits) or len(set(self.sparsities)) != len(self.sparsities):
            raise ValueError("bits / sparsities: values must be distinct")
        for s in self.sparsities:
            if not 0.0 <= s < 1.0:
                raise ValueError(f"sparsities: {s} must be in [0, 1)")
        if self.mode in ("bits", "joint") and not self.bits:
            raise ValueError("bits: give at least one bit-width")
        if self.mode in ("sparsity", "joint") and not self.sparsities:
            raise ValueError("sparsities: give at least one sparsity level")
        if self.pruning == "nm":
            n, m = self.nm
            if not 0 < n < m:
                raise ValueError(f"nm: need 0 < N < M, got {self.nm}")
            bad = [s for s in self.sparsities if s not in (0.0, 1 - n / m)]
            if bad:
                raise ValueError(f"sparsities: with pruning 'nm' {n}:{m} the levels must be 0 or {1 - n / m}, got {bad}")
        return self


def uniform_levels(arch: Arch) -> dict[str, Scalar] | None:
    """``{"bits": 3}`` (each knob the arch has, ``"bits"`` / ``"sparsity"``) when every group of a
    compression arch has the same value of it; None for a mixed allocation."""
    knobs: dict[str, set[Scalar]] = {}
    for name in arch:
        knob, sep, _ = name.partition(":")
        if not sep or knob not in ("bits", "sparsity"):
            return None
        knobs.setdefault(knob, set()).add(arch[name])
    if not knobs or any(len(v) != 1 for v in knobs.values()):
        return None
    return {k: next(iter(v)) for k, v in sorted(knobs.items())}


def unstructured_zeros(numel: int, sparsity: float) -> int:
    """Weights an unstructured pruner zeroes out of ``numel`` at ``sparsity``: rounded up, so a
    layer at level ``s`` has at least ``s`` of its weights zero and a uniform allocation at ``s``
    meets the constraint ``sparsity >= s`` (rounding down left 64x64 + 64x64 + 64x10 layers at 0.6
    with 0.59986 overall); at least one weight stays."""
    if sparsity <= 0 or numel <= 1:
        return 0
    return min(numel - 1, math.ceil(sparsity * numel - 1e-9))


def zeros_at(layer: LayerInfo, sparsity: float, pruning: str, nm: Sequence[int]) -> int:
    """Number of weights a pruner sets to zero in ``layer`` at ``sparsity`` (the pruners obey this)."""
    if sparsity <= 0:
        return 0
    if pruning == "nm":
        n, m = int(nm[0]), int(nm[1])
        return layer.out_channels * (layer.row_size // m) * (m - n)
    return unstructured_zeros(layer.numel, sparsity)


def scale_groups(layer: LayerInfo, granularity: str, group_size: int) -> int:
    """Number of (scale, zero point) pairs of a quantized layer."""
    if granularity == "channel":
        return layer.out_channels
    return layer.out_channels * math.ceil(layer.row_size / group_size)


def packed_bytes(layer: LayerInfo, bits: int, n_zero: int, *, granularity: str, group_size: int,
                 symmetric: bool) -> int:
    """Bytes of the layer's weight as exported: values of kept weights, scales, zeros, mask."""
    numel = layer.numel
    kept = numel - n_zero
    mask = math.ceil(numel / 8) if n_zero > 0 else 0
    if bits in FLOAT_BITS:
        return kept * bits // 8 + mask
    groups = scale_groups(layer, granularity, group_size)
    return math.ceil(kept * bits / 8) + groups * 2 + (0 if symmetric else groups) + mask


@dataclass(frozen=True)
class LevelTable:
    """Every group's combined levels and their summed costs (plain arrays for allocators).

    ``levels[g]`` lists the choice dicts of group ``g`` (cheapest first); ``cost[metric][g]`` is a
    float array over those levels of the group's additive contribution to ``metric`` in the form
    ``metric = offset[metric] + scale[metric] * sum_g contribution`` (so budgets are linear).
    """

    groups: list[str]
    levels: list[list[dict[str, Scalar]]]
    cost: dict[str, list[np.ndarray]]
    offset: dict[str, float]
    scale: dict[str, float]

    def capacity(self, metric: str, op: str, bound: float) -> tuple[list[np.ndarray], float]:
        """The constraint ``metric op bound`` as ``sum_g resource[g][level] <= capacity``."""
        if metric not in self.cost:
            raise KeyError(metric)
        contrib = self.cost[metric]
        raw = (bound - self.offset[metric]) / self.scale[metric]
        if op in ("<=", "<"):
            return [c.copy() for c in contrib], raw
        # ">=": -sum <= -raw, shifted by each group's max so resources stay non-negative
        maxes = [float(c.max()) for c in contrib]
        return [m - c for c, m in zip(contrib, maxes, strict=True)], sum(maxes) - raw


class CompressionSpace(SearchSpace):
    """Per-group compression levels of one discovered model (see the module docstring)."""

    id = "compression"
    version = 1
    Options = CompressionSpaceOptions

    @property
    def opts(self) -> CompressionSpaceOptions:
        assert isinstance(self.options, CompressionSpaceOptions)
        return self.options

    # ---- structure -------------------------------------------------------------------------
    def groups(self) -> list[str]:
        seen: dict[str, None] = {}
        for layer in self.opts.layers:
            seen.setdefault(layer.group, None)
        return list(seen)

    def group_layers(self, group: str) -> list[LayerInfo]:
        return [layer for layer in self.opts.layers if layer.group == group]

    def bit_values(self) -> tuple[int, ...]:
        return tuple(sorted(self.opts.bits)) if self.opts.mode != "sparsity" else (self.opts.fixed_bits,)

    def sparsity_values(self) -> tuple[float, ...]:
        return tuple(sorted(self.opts.sparsities, reverse=True)) if self.opts.mode != "bits" else (0.0,)

    def build_choices(self) -> dict[str, tuple[Scalar, ...]]:
        out: dict[str, tuple[Scalar, ...]] = {}
        for g in self.groups():
            if self.opts.mode in ("bits", "joint"):
                out[f"bits:{g}"] = self.bit_values()
            if self.opts.mode in ("sparsity", "joint"):
                out[f"sparsity:{g}"] = self.sparsity_values()
        return out

    def layer_levels(self, arch: Arch) -> dict[str, tuple[int, float]]:
        """Layer name -> (bits, sparsity) of ``arch``."""
        out = {}
        for layer in self.opts.layers:
            b = int(arch[f"bits:{layer.group}"]) if self.opts.mode != "sparsity" else self.opts.fixed_bits
            s = float(arch[f"sparsity:{layer.group}"]) if self.opts.mode != "bits" else 0.0
            out[layer.name] = (b, s)
        return out

    def uniform(self, *, bits: int | None = None, sparsity: float | None = None) -> Arch:
        """Every group at the same level (omitted knobs at their least compressed value)."""
        values: dict[str, Scalar] = {}
        for name in self.choices():
            knob = name.split(":", 1)[0]
            if knob == "bits":
                values[name] = max(self.bit_values()) if bits is None else int(bits)
            else:
                values[name] = 0.0 if sparsity is None else float(sparsity)
        return self.make(values)

    # ---- costs -----------------------------------------------------------------------------
    def _layer_costs(self, layer: LayerInfo, bits: int, sparsity: float) -> dict[str, float]:
        o = self.opts
        n_zero = zeros_at(layer, sparsity, o.pruning, o.nm)
        kept = layer.numel - n_zero
        return {
            "model_bytes": packed_bytes(layer, bits, n_zero, granularity=o.granularity,
                                        group_size=o.group_size, symmetric=o.symmetric),
            "bitparams": layer.numel * bits,
            "zeros": n_zero,
            "kept": kept,
            "bops": layer.macs * (kept / layer.numel) * bits * o.activation_bits,
            "macs": layer.macs,
        }

    def searched_params(self) -> int:
        return sum(layer.numel for layer in self.opts.layers)

    def cost(self, arch: Arch) -> dict[str, float]:
        levels = self.layer_levels(arch)
        tot = {"model_bytes": 0.0, "bitparams": 0.0, "zeros": 0.0, "kept": 0.0, "bops": 0.0, "macs": 0.0}
        for layer in self.opts.layers:
            for k, v in self._layer_costs(layer, *levels[layer.name]).items():
                tot[k] += v
        n = max(self.searched_params(), 1)
        return {
            "model_bytes": tot["model_bytes"] + self.opts.other_bytes,
            "avg_bits": tot["bitparams"] / n,
            "sparsity": tot["zeros"] / n,
            "bops": tot["bops"],
            "params": tot["kept"] + self.opts.other_params,
            "flops": tot["macs"],
        }

    def level_table(self) -> LevelTable:
        """Combined (bits x sparsity) levels of every group with additive costs (see LevelTable)."""
        n = max(self.searched_params(), 1)
        groups = self.groups()
        levels: list[list[dict[str, Scalar]]] = []
        cost: dict[str, list[np.ndarray]] = {m: [] for m in BUDGET_METRICS}
        for g in groups:
            lv: list[dict[str, Scalar]] = []
            rows: list[dict[str, float]] = []
            for b in self.bit_values():
                for s in self.sparsity_values():
                    choice: dict[str, Scalar] = {}
                    if self.opts.mode != "sparsity":
                        choice[f"bits:{g}"] = b
                    if self.opts.mode != "bits":
                        choice[f"sparsity:{g}"] = s
                    tot = {"model_bytes": 0.0, "bitparams": 0.0, "zeros": 0.0, "kept": 0.0, "bops": 0.0}
                    for layer in self.group_layers(g):
                        for k, v in self._layer_costs(layer, b, s).items():
                            if k in tot:
                                tot[k] += v
                    lv.append(choice)
                    rows.append(tot)
            # cheapest (fewest bytes) first; ties by fewer bit-params
            order = sorted(range(len(lv)), key=lambda i: (rows[i]["model_bytes"], rows[i]["bitparams"]))
            levels.append([lv[i] for i in order])
            rows = [rows[i] for i in order]
            cost["model_bytes"].append(np.array([r["model_bytes"] for r in rows]))
            cost["avg_bits"].append(np.array([r["bitparams"] for r in rows]))
            cost["sparsity"].append(np.array([r["zeros"] for r in rows]))
            cost["bops"].append(np.array([r["bops"] for r in rows]))
            cost["params"].append(np.array([r["kept"] for r in rows]))
        offset = {"model_bytes": float(self.opts.other_bytes), "avg_bits": 0.0, "sparsity": 0.0, "bops": 0.0,
                  "params": float(self.opts.other_params)}
        scale = {"model_bytes": 1.0, "avg_bits": 1.0 / n, "sparsity": 1.0 / n, "bops": 1.0, "params": 1.0}
        return LevelTable(groups, levels, cost, offset, scale)

    def arch_from_levels(self, table: LevelTable, level_idx: Sequence[int] | np.ndarray) -> Arch:
        """The arch that puts group ``g`` at ``table.levels[g][level_idx[g]]``."""
        values: dict[str, Scalar] = {}
        for g, i in enumerate(level_idx):
            values.update(table.levels[g][int(i)])
        return self.make(values)

    def levels_of(self, table: LevelTable, arch: Arch) -> np.ndarray:
        """Inverse of ``arch_from_levels``."""
        out = np.zeros(len(table.groups), dtype=np.int64)
        for g, lv in enumerate(table.levels):
            want = {k: arch[k] for k in lv[0]}
            out[g] = next(i for i, c in enumerate(lv) if c == want)
        return out
