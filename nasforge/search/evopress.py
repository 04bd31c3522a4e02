"""EvoPress: evolutionary search over per-group compression levels under a fixed budget.

After Sieberling et al., "EvoPress: Towards Optimal Dynamic Model Compression via Evolutionary
Search" (2024), written for nasforge's CompressionSpace (levels from ``level_table()``):

- The start is the most expensive *uniform* allocation that meets the budget (every group at the
  same bits / sparsity), or the cheapest allocation when no uniform one fits.
- ``LevelSwitchMutation``: raise one group by one level, then lower randomly chosen other groups
  one level each until every budget holds again; repeated 1..``max_switches`` times; then the
  slack left is used up by raising groups (random order) one level while the budget holds. Every
  candidate the search ever makes meets the budget (the invariant the tests check); when all
  groups have equal level steps it keeps the budget use exactly constant, as in the paper.
- (1 + lambda) selection with fitness = the distortion metric (default: the first objective,
  normally ``kl`` of the outputs to the uncompressed model). EvoPress does not assume that
  per-layer errors add up; it scores whole allocations.
- Multi-step selection: ``optimize(fitness, generations)`` scores all ``lambda`` offspring on few
  calibration samples, keeps the best, rescoring them on more samples, stage after stage
  (``selection``: ``[[offspring, samples], [survivors, samples], ..., [1, samples]]``);
  ``fitness(level_idx_matrix, samples) -> values`` is the caller's. Through the job driver
  (``ask`` / ``tell``) the workers score every offspring at the job's full calibration set, so
  the ask/tell form runs one selection step per generation (the stage sizes then only set lambda).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from nasforge.core.errors import BudgetError, JobSpecError
from nasforge.core.types import Arch, EvalResult
from nasforge.search.allocators import best_uniform, budgets_of, feasible
from nasforge.search.base import Strategy, StrategyOptions
from nasforge.spaces.compression import LevelTable


class EvoPressOptions(StrategyOptions):
    metric: str | None = Field(default=None, description="fitness metric (minimized after sign); default: first objective")
    selection: list[list[int]] = Field(
        default_factory=lambda: [[16, 64], [4, 256], [1, 1024]],
        description="multi-step selection: [offspring, samples], then [survivors, samples] per stage")
    max_switches: int = Field(default=3, ge=1, le=64, description="level switches per offspring (1..this)")
    max_tries: int = Field(default=200, ge=1, description="attempts to make a new, unseen offspring")

    @field_validator("selection")
    @classmethod
    def _stages(cls, v: list[list[int]]) -> list[list[int]]:
        if not v or any(len(s) != 2 or s[0] < 1 or s[1] < 1 for s in v):
            raise ValueError("selection: a list of [count, samples] pairs with positive entries")
        counts = [s[0] for s in v]
        if counts != sorted(counts, reverse=True):
            raise ValueError("selection: counts must not grow from stage to stage")
        return v


class LevelSwitchMutation:
    """Budget-keeping mutation on level-index vectors (see the module docstring)."""

    def __init__(self, table: LevelTable, budgets: Sequence[tuple[np.ndarray, float, Any]], max_switches: int):
        self.sizes = np.array([len(lv) for lv in table.levels])
        self.budgets = budgets
        self.max_switches = max_switches

    def __call__(self, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = idx.copy()
        G = len(out)
        for _ in range(int(rng.integers(1, self.max_switches + 1))):
            up = [g for g in range(G) if out[g] + 1 < self.sizes[g]]
            if not up or G < 2:
                break
            trial = out.copy()
            a = int(rng.choice(up))
            trial[a] += 1
            order = [int(g) for g in rng.permutation(G) if g != a]
            ok = feasible(trial, self.budgets)
            for b in order:
                if ok:
                    break
                if trial[b] > 0:
                    trial[b] -= 1
                    ok = feasible(trial, self.budgets)
            if ok:
                out = trial
        # use the slack a switch left: raise groups (random order) one level while the budget holds
        for g in rng.permutation(G):
            if out[g] + 1 < self.sizes[g]:
                out[g] += 1
                if not feasible(out, self.budgets):
                    out[g] -= 1
        return out


class EvoPress(Strategy):
    """(1 + lambda) evolution with level-switch mutation and multi-step selection."""

    Options = EvoPressOptions
    options: EvoPressOptions

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not hasattr(self.space, "level_table"):
            raise JobSpecError(f"strategy.name: 'evopress' needs the 'compression' space, not {self.space.id!r}")
        opts: EvoPressOptions = self.options  # type: ignore[assignment]
        self.table: LevelTable = self.space.level_table()  # type: ignore[attr-defined]
        self.budgets = budgets_of(self.table, self.constraints, "evopress")
        self.metric = opts.metric or self.objectives[0].metric
        self.sign = next((o.sign() for o in self.objectives if o.metric == self.metric), 1.0)
        self.mutation = LevelSwitchMutation(self.table, self.budgets, opts.max_switches)
        self.parent = self.start()
        self.parent_value = math.inf
        self.pending: list[list[int]] = [list(map(int, self.parent))]  # the start is scored first
        self.asked: list[list[int]] = []
        self.values: dict[str, float] = {}
        self.generation = 0
        self.history: list[float] = []

    # ---- pieces ----------------------------------------------------------------------------
    def start(self) -> np.ndarray:
        """Most expensive feasible uniform allocation; the cheapest allocation otherwise."""
        best = best_uniform(self.space, self.table, self.budgets)
        if best is None:
            best = np.zeros(len(self.table.groups), dtype=np.int64)
            if not feasible(best, self.budgets):
                raise BudgetError("evopress: no allocation of the allowed levels meets the budget; relax the "
                                  "constraint or allow more compressed levels")
        return np.asarray(best, dtype=np.int64)

    def arch_of(self, idx: Sequence[int] | np.ndarray) -> Arch:
        return self.space.arch_from_levels(self.table, idx)  # type: ignore[attr-defined]

    def offspring(self, count: int, seen: set[str]) -> list[np.ndarray]:
        """``count`` new, distinct mutants of the parent (fewer if the neighbourhood is exhausted)."""
        out: list[np.ndarray] = []
        tries = 0
        while len(out) < count and tries < self.options.max_tries * max(count, 1):
            tries += 1
            child = self.mutation(self.parent, self.rng)
            key = self.arch_of(child).key()
            if key in seen:
                continue
            seen.add(key)
            out.append(child)
        return out

    # ---- ask / tell (through the job driver) -------------------------------------------------
    def ask(self, n: int) -> list[Arch]:
        if not self.pending and not self.asked:
            lam = self.options.selection[0][0]
            kids = self.offspring(lam, set(self.values))
            self.pending = [list(map(int, k)) for k in kids]
        take, self.pending = self.pending[:n], self.pending[n:]
        self.asked.extend(take)
        return [self.arch_of(t) for t in take]

    def tell(self, archs: Sequence[Arch], results: Sequence[EvalResult]) -> None:
        for a, r in zip(archs, results, strict=True):
            ok = r.ok and self.metric in r.metrics
            self.values[a.key()] = self.sign * float(r.metrics[self.metric]) if ok else math.inf
        if self.pending or any(self.arch_of(t).key() not in self.values for t in self.asked):
            return  # generation not complete yet
        scored = [(self.values[self.arch_of(t).key()], i) for i, t in enumerate(self.asked)]
        if scored:
            v, i = min(scored)
            if v <= self.parent_value:
                self.parent, self.parent_value = np.array(self.asked[i], dtype=np.int64), v
        self.asked = []
        self.generation += 1
        self.history.append(self.parent_value)

    @classmethod
    def asks_uniform_reference(cls, options: Mapping[str, Any]) -> bool:
        return True  # its start

    def finished_why(self) -> str:
        value = "" if not math.isfinite(self.parent_value) else f" ({self.metric} {self.sign * self.parent_value:.4g})"
        return (f"every budget-keeping mutation of the best allocation{value} was evaluated after "
                f"{self.generation} generations (a local optimum; more groups or levels widen the neighbourhood)")

    # ---- in-process fast path with multi-step selection ----------------------------------------
    def optimize(self, fitness: Callable[[np.ndarray, int], np.ndarray], generations: int,
                 on_candidate: Callable[[np.ndarray], None] | None = None) -> tuple[np.ndarray, float]:
        """Run ``generations`` of (1 + lambda) evolution with multi-step selection in process.

        ``fitness(idx, samples)`` scores the rows of an (n, G) level-index matrix on the first
        ``samples`` calibration samples (lower is better). The parent is scored at the last
        stage's sample count and compared with the surviving offspring at that count.
        ``on_candidate`` sees every candidate made (tests check the budget invariant).
        Returns (best level indices, its final-stage fitness).
        """
        stages = self.options.selection
        final = stages[-1][1]
        if on_candidate is not None:
            on_candidate(self.parent)
        self.parent_value = float(fitness(self.parent[None, :], final)[0])
        seen = {self.arch_of(self.parent).key()}
        for _ in range(generations):
            kids = self.offspring(stages[0][0], seen)
            if not kids:
                break
            pool = np.stack(kids)
            if on_candidate is not None:
                for k in pool:
                    on_candidate(k)
            vals = fitness(pool, stages[0][1])
            for count, samples in stages[1:]:
                keep = np.argsort(vals, kind="stable")[:count]
                pool = pool[keep]
                vals = fitness(pool, samples)
            best = int(np.argmin(vals))
            best_v = float(vals[best])
            if best_v <= self.parent_value:
                self.parent, self.parent_value = pool[best].copy(), best_v
            self.generation += 1
            self.history.append(self.parent_value)
        return self.parent.copy(), self.parent_value

    # ---- state -----------------------------------------------------------------------------
    def report(self) -> dict[str, float]:
        return {"generation": float(self.generation),
                "parent_fitness": self.parent_value if math.isfinite(self.parent_value) else -1.0}

    def extra_state(self) -> dict[str, Any]:
        return {"parent": [int(i) for i in self.parent],
                "parent_value": self.parent_value if math.isfinite(self.parent_value) else None,
                "pending": self.pending, "asked": self.asked,
                "values": {k: (v if math.isfinite(v) else None) for k, v in self.values.items()},
                "generation": self.generation, "history": self.history}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.parent = np.array(state["parent"], dtype=np.int64)
        pv = state.get("parent_value")
        self.parent_value = math.inf if pv is None else float(pv)
        self.pending = [list(map(int, p)) for p in state.get("pending", [])]
        self.asked = [list(map(int, p)) for p in state.get("asked", [])]
        self.values = {k: (math.inf if v is None else float(v)) for k, v in state.get("values", {}).items()}
        self.generation = int(state.get("generation", 0))
        self.history = [float(x) for x in state.get("history", [])]
