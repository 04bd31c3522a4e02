"""ElasticViT's arch samplers for supernet training: complexity-aware and performance-aware.

Both implement the trainer's ``ArchSampler`` protocol (``sample_step`` / ``observe`` /
``state_dict`` / ``load_state_dict``) and use only the generator the trainer passes (seeded by
(seed, step)) plus their JSON state, so training stays deterministic and resumable.

- :class:`FlopsBuckets`: ``buckets`` intervals of equal width in log-FLOPs from the smallest
  child's FLOPs to the largest's. FLOPs (``space.cost(arch)["flops"]``) never decrease when a
  choice takes a later (larger) value, so every child of the space falls in one bucket.
- :class:`ComplexityAwareSampler`: keeps ``count`` chains. At each step a chain moves its
  target bucket by -1, 0 or +1 (a lazy random walk that visits every bucket equally often in the
  long run) and draws a child in that bucket whose FLOPs differ from the chain's previous child
  by at most a factor ``max_flops_ratio``; so children trained at adjacent steps have similar
  complexity, while all complexities are covered. A draw starts from the previous child, mutates
  it, then moves single choices one value up or down until the FLOPs land in the allowed band;
  when no draw lands there the chain keeps its previous child (the bound still holds).
- performance-aware (``performance=True``): draws ``candidates`` children per step and chain in
  the same band and trains the one with the lowest estimated loss. The estimate is a ridge
  regression on the one-hot arch encoding, fitted on a memory bank of the ``bank_size`` most
  recent (arch, training loss, step) triples that ``observe`` records; with fewer than
  ``min_bank`` entries the first candidate (a random one) is taken. Losses fall as training goes
  on, so the regression also has one indicator per time bin (``trend_bins`` bins of equal count
  over the bank's steps): the progress made while a child was trained is absorbed there instead
  of being credited to its choices (which matters most when the picks themselves drift).
  Picking greedily feeds on itself (what is trained more shows a lower loss and is picked more),
  so a step takes the estimated best only with probability ``exploit`` and a random candidate of
  the band otherwise. The default, 0.5, is ElasticViT's own: its public training code draws the
  child from its memory bank of best children on half of the steps and explores on the others
  (``benchmarks/vit_mos`` part (a) measured the greedy ``exploit: 1`` too: it starves a choice it
  once disfavoured, and which one depends on the seed: resolution 24 on 4-12% of the steps on
  seeds 0-3, resolution 20 on 3% on seed 4, against uniform sampling's 25%).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nasforge.core.errors import JobSpecError
from nasforge.core.types import Arch
from nasforge.spaces.base import SearchSpace


class SamplerOptions(BaseModel):
    """``training.options.sampler_options``: settings of the complexity / performance samplers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    buckets: int | None = Field(default=None, ge=1, le=256, description="FLOPs buckets (log-spaced) covering the "
                                "space; default: the fewest whose width is within max_flops_ratio")
    max_flops_ratio: float = Field(default=1.5, gt=1, le=1000,
                                   description="bound on the FLOPs ratio of children sampled at adjacent steps")
    candidates: int = Field(default=4, ge=1, le=64, description="performance-aware: candidates drawn per bucket")
    bank_size: int = Field(default=256, ge=2, le=100_000, description="performance-aware: (arch, loss) pairs kept")
    min_bank: int = Field(default=16, ge=1, description="performance-aware: pairs needed before the estimate is used")
    ridge: float = Field(default=1.0, gt=0, description="performance-aware: L2 penalty of the loss regression")
    mutation: float = Field(default=0.2, ge=0, le=1, description="per-choice resample probability of a draw")
    trend_bins: int = Field(default=8, ge=1, le=256, description="performance-aware: time bins of the loss "
                            "regression that absorb training progress (1: none)")
    exploit: float = Field(default=0.5, ge=0, le=1, description="performance-aware: probability that a step "
                           "trains the best-estimated candidate; otherwise a random candidate of the same band "
                           "(choices the estimate disfavours keep getting trained; 0.5 as in ElasticViT, which "
                           "trains from its bank of best children on half of the steps)")

    @model_validator(mode="after")
    def _bank(self) -> SamplerOptions:
        if self.min_bank > self.bank_size:
            raise ValueError(f"min_bank ({self.min_bank}) must not exceed bank_size ({self.bank_size})")
        return self


class FlopsBuckets:
    """Log-spaced FLOPs intervals from the smallest child's FLOPs to the largest's."""

    def __init__(self, space: SearchSpace, buckets: int):
        self.low = float(space.cost(space.smallest())["flops"])
        self.high = float(space.cost(space.largest())["flops"])
        if not 0 < self.low <= self.high:
            raise ValueError(f"space {space.id}: FLOPs of the smallest/largest child are {self.low}/{self.high}")
        self.count = int(buckets)
        self.edges = np.exp(np.linspace(math.log(self.low), math.log(self.high), self.count + 1))
        self.edges[0], self.edges[-1] = self.low, self.high

    @property
    def width_ratio(self) -> float:
        """FLOPs ratio between the two edges of every bucket."""
        return (self.high / self.low) ** (1.0 / self.count)

    def index(self, flops: float) -> int:
        """The bucket holding ``flops`` (values outside the range are clipped to the end buckets)."""
        return int(np.clip(np.searchsorted(self.edges, flops, side="right") - 1, 0, self.count - 1))

    def bounds(self, bucket: int) -> tuple[float, float]:
        return float(self.edges[bucket]), float(self.edges[bucket + 1])


class ComplexityAwareSampler:
    """Complexity-aware (and optionally performance-aware) sampling; see the module docstring.

    ``sample_step`` returns ``[smallest] + count children`` when ``include_smallest`` (the
    sandwich rule), else the ``count`` children. ``stats`` counts draws that fell back to the
    previous child.
    """

    def __init__(self, space: SearchSpace, count: int, *, include_smallest: bool = False,
                 options: SamplerOptions | dict[str, Any] | None = None, performance: bool = False,
                 where: str = "training.options.sampler_options"):
        if options is None or isinstance(options, dict):
            options = SamplerOptions.model_validate(dict(options or {}))
        self.space, self.count, self.options = space, int(count), options
        self.include_smallest, self.performance = include_smallest, performance
        self.smallest = space.smallest()
        low, high = float(space.cost(self.smallest)["flops"]), float(space.cost(space.largest())["flops"])
        need = max(1, math.ceil(math.log(high / low) / math.log(options.max_flops_ratio) - 1e-9)) if low > 0 else 1
        self.buckets = FlopsBuckets(space, options.buckets or need)
        if self.buckets.width_ratio > options.max_flops_ratio * (1 + 1e-9):
            raise JobSpecError(
                f"{where}.buckets: {options.buckets} buckets are {self.buckets.width_ratio:.3g}x wide in FLOPs, more "
                f"than max_flops_ratio {options.max_flops_ratio}; use buckets >= {need} or a larger max_flops_ratio"
            )
        self._card = space.cardinalities
        self._flops_cache: dict[tuple[int, ...], float] = {}
        self.chains: list[list[int] | None] = [None] * self.count
        self.bank: deque[tuple[list[int], float, int]] = deque(maxlen=options.bank_size)
        self.stats = {"draws": 0, "fallbacks": 0, "estimated_picks": 0}
        #: the candidates (index vectors) of the last draw and their loss estimates (None: not used)
        self.last_candidates: list[np.ndarray] = []
        self.last_estimate: np.ndarray | None = None

    # ---- FLOPs ----------------------------------------------------------------------------
    def flops(self, idx: np.ndarray | list[int]) -> float:
        key = tuple(int(i) for i in idx)
        f = self._flops_cache.get(key)
        if f is None:
            if len(self._flops_cache) > 50_000:
                self._flops_cache.clear()
            f = float(self.space.cost(self.space.from_indices(np.asarray(key)))["flops"])
            self._flops_cache[key] = f
        return f

    def draw(self, start: np.ndarray, lo: float, hi: float, rng: np.random.Generator,
             max_moves: int = 96) -> np.ndarray | None:
        """A child (as indices) with FLOPs in [lo, hi], reached from ``start``; None if none was found."""
        idx = self.space.mutate_indices(start, rng, self.options.mutation)[0]
        for _ in range(max_moves):
            f = self.flops(idx)
            if lo <= f <= hi:
                return self.space.to_indices(self.space.from_indices(idx))
            movable = np.flatnonzero(idx < self._card - 1) if f < lo else np.flatnonzero(idx > 0)
            if movable.size == 0:
                return None
            i = movable[int(rng.integers(movable.size))]
            idx[i] += 1 if f < lo else -1
        return None

    def sample_in_bucket(self, bucket: int, rng: np.random.Generator, tries: int = 8) -> Arch | None:
        """Any child of bucket ``bucket`` (for tests and warm starts); None if no draw found one."""
        lo, hi = self.buckets.bounds(bucket)
        for _ in range(tries):
            idx = self.draw(self.space.sample_indices(1, rng)[0], lo, hi, rng)
            if idx is not None:
                return self.space.from_indices(idx)
        return None

    # ---- performance estimate ---------------------------------------------------------------
    def estimate(self, archs: list[np.ndarray]) -> np.ndarray | None:
        """Estimated training loss of each child (lower is better); None while the bank is too small."""
        if len(self.bank) < max(self.options.min_bank, 2):
            return None
        X = self.space.encode_indices(np.stack([np.asarray(i) for i, _, _ in self.bank])).astype(np.float64)
        y = np.array([loss for _, loss, _ in self.bank], dtype=np.float64)
        steps = np.array([step for _, _, step in self.bank])
        bins = min(self.options.trend_bins, len(self.bank))
        if bins > 1:  # time-bin indicators (equal counts in step order), dropped at prediction
            order = np.argsort(steps, kind="stable")
            which = np.empty(len(steps), dtype=np.int64)
            which[order] = np.arange(len(steps)) * bins // len(steps)
            X = np.hstack([X, np.eye(bins)[which]])
        mean = y.mean()
        A = X.T @ X + self.options.ridge * np.eye(X.shape[1])
        w = np.linalg.solve(A, X.T @ (y - mean))
        Xc = self.space.encode_indices(np.stack(archs)).astype(np.float64)
        return Xc @ w[: Xc.shape[1]] + mean

    # ---- ArchSampler ------------------------------------------------------------------------
    def _next(self, prev: list[int] | None, rng: np.random.Generator) -> np.ndarray:
        n_cand = self.options.candidates if self.performance else 1
        if prev is None:
            target = int(rng.integers(self.buckets.count))
            lo, hi = self.buckets.bounds(target)
            start = self.space.sample_indices(1, rng)[0]
        else:
            start = np.asarray(prev, dtype=np.int64)
            f_prev = self.flops(start)
            target = int(np.clip(self.buckets.index(f_prev) + int(rng.integers(-1, 2)), 0, self.buckets.count - 1))
            b_lo, b_hi = self.buckets.bounds(target)
            ratio = self.options.max_flops_ratio
            lo, hi = max(b_lo, f_prev / ratio), min(b_hi, f_prev * ratio)
        found = []
        for _ in range(n_cand * 3):
            idx = self.draw(start, lo, hi, rng)
            self.stats["draws"] += 1
            if idx is not None:
                found.append(idx)
                if len(found) == n_cand:
                    break
        self.last_candidates, self.last_estimate = found, None
        if not found:
            self.stats["fallbacks"] += 1
            if prev is None:
                return self.space.to_indices(self.space.sample(rng))
            return start
        if len(found) > 1 and (self.options.exploit >= 1.0 or rng.random() < self.options.exploit):
            est = self.estimate(found)
            self.last_estimate = est
            if est is not None:
                self.stats["estimated_picks"] += 1
                return found[int(np.argmin(est))]
        return found[0]

    def sample_step(self, step: int, rng: np.random.Generator) -> list[Arch]:
        out = [self.smallest] if self.include_smallest else []
        for c in range(self.count):
            idx = self._next(self.chains[c], rng)
            self.chains[c] = [int(i) for i in idx]
            out.append(self.space.from_indices(idx))
        return out

    def observe(self, step: int, archs: list[Arch], losses: list[float]) -> None:
        """Record the losses of the children this sampler returned (the last entries of ``archs``)."""
        k = self.count + (1 if self.include_smallest else 0)
        for arch, loss in zip(archs[-k:], losses[-k:], strict=True):
            if math.isfinite(loss):
                self.bank.append(([int(i) for i in self.space.to_indices(arch)], float(loss), int(step)))

    def state_dict(self) -> dict[str, Any]:
        return {"chains": self.chains, "bank": [[i, loss, step] for i, loss, step in self.bank],
                "stats": dict(self.stats)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.chains = [None if c is None else [int(i) for i in c] for c in state["chains"]]
        self.bank.clear()
        for i, loss, *step in state["bank"]:  # checkpoints before trend_bins have no step: -1
            self.bank.append(([int(v) for v in i], float(loss), int(step[0]) if step else -1))
        self.stats.update(state.get("stats", {}))
