"""Budgeted level allocators for compression spaces: exact DP, ILP (HiGHS) and closed-form.

Each allocator is a Strategy over a ``CompressionSpace`` (anything with ``level_table()``,
``largest()``, ``arch_from_levels()`` and ``levels_of()``). The budget is the job's constraints on
additive cost metrics (``sparsity``, ``avg_bits``, ``model_bytes``, ``bops``, ``params``).

How the allocators learn per-layer curves (no torch here): they measure them through the
evaluator. ``ask`` first returns *probe* archs: the least compressed allocation (the base) and,
for every group ``g`` and level ``k``, the base with only ``g`` moved to ``k``. The distortion
``d[g, k] = m(probe) - m(base)`` of the distortion metric ``m`` (default: the first objective,
sign-adjusted to minimize, e.g. ``kl``) is one entry of the curve. Under the additivity
assumption ``m(alloc) ~ m(base) + sum_g d[g, alloc_g]`` the allocator then solves

    minimize sum_g d[g, k_g]  subject to  sum_g r_c[g, k_g] <= cap_c  for every budget c

once, asks that one arch and (option ``reference``, on by default) the uniform allocation that
uses the most of the budget, which the job reports it beside, and is done (``ask`` returns ``[]``).
Probes go through the workers like any candidate (parallel, stored, resumable); with G groups and
K levels they cost ``G * (K - 1) + 1`` evaluations (the closed-form allocator needs only ``G + 1``).

- ``DPAllocator``: exact dynamic programming over groups x levels x budget for one budget.
  Exact for integer resources (parameters, zeros, bit-params, bytes are integers); if the
  budget has more than ``max_states`` units the resources are rounded *up* to a coarser grid
  (still feasible, optimal on that grid; ``report()['exact']`` says which).
- ``ILPAllocator``: the same objective as a 0/1 integer program solved by
  ``scipy.optimize.milp`` (HiGHS); any number of budgets; exact on the real-valued resources.
- ``ClosedFormAllocator``: bit allocation (``mode: bits``): per group the noise model
  ``d_g(b) = c_g * 4**-b`` fitted from one probe at the lowest bit-width, the convex
  (reverse water-filling) solution of the budget in closed form up to one multiplier found by
  bisection, then rounded down to the allowed set and greedily raised while the budget holds.

``solve_dp`` and ``solve_ilp`` are plain functions the tests and benchmarks call directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from nasforge.core.errors import BudgetError, JobSpecError
from nasforge.core.types import Arch, Constraint, EvalResult
from nasforge.search.base import Strategy, StrategyOptions
from nasforge.spaces.compression import BUDGET_METRICS, LevelTable

BIG = 1e12


# ------------------------------------------------------------------------------------------------
# Solvers (plain arrays in, level indices out)


def solve_dp(dist: np.ndarray, cost: np.ndarray, capacity: float, *, max_states: int = 200_000
             ) -> tuple[np.ndarray, float, bool]:
    """Exact DP: minimize ``sum_g dist[g, k_g]`` s.t. ``sum_g cost[g, k_g] <= capacity``.

    ``dist`` and ``cost`` are (G, K) arrays; ``cost`` non-negative (integers for exactness;
    fractional costs are rounded up). Infinite ``dist`` marks a level as not allowed.
    Returns (level index per group, objective, exact) where ``exact`` is False when the
    budget was put on a coarser grid (``max_states`` cells at most). Raises BudgetError when no
    allocation fits.
    """
    dist = np.asarray(dist, dtype=np.float64)
    G, K = dist.shape
    c = np.ceil(np.asarray(cost, dtype=np.float64) - 1e-9).astype(np.int64)
    base = c.min(axis=1)
    c = c - base[:, None]
    cap = int(math.floor(capacity + 1e-9)) - int(base.sum())
    if cap < 0:
        raise BudgetError(f"the budget cannot be met even at the cheapest level of every group "
                          f"(short by {-cap} units)")
    cap = min(cap, int(c.max(axis=1).sum()))
    g_all = int(np.gcd.reduce(np.concatenate([c.ravel(), [cap]]))) or 1
    if g_all > 1:
        c //= g_all
        cap //= g_all
    exact = True
    if cap > max_states:
        q = math.ceil(cap / max_states)
        c = -(-c // q)
        cap = cap // q
        exact = False
    f = np.zeros(cap + 1)  # f[r]: best objective of groups so far with total cost <= r
    arg = np.zeros((G, cap + 1), dtype=np.int16 if K < 32_000 else np.int32)
    for g in range(G):
        new = np.full(cap + 1, np.inf)
        choice = arg[g]
        for k in range(K):
            ck = int(c[g, k])
            if ck > cap or not np.isfinite(dist[g, k]):
                continue
            cand = f[: cap + 1 - ck] + dist[g, k]
            better = cand < new[ck:]
            new[ck:][better] = cand[better]
            choice[ck:][better] = k
        f = new
    if not np.isfinite(f[cap]):
        raise BudgetError("no allocation of the allowed levels meets the budget")
    idx = np.zeros(G, dtype=np.int64)
    r = cap
    for g in range(G - 1, -1, -1):
        k = int(arg[g, r])
        idx[g] = k
        r -= int(c[g, k])
    value = float(dist[np.arange(G), idx].sum())
    return idx, value, exact


def solve_ilp(dist: np.ndarray, costs: Sequence[np.ndarray], capacities: Sequence[float],
              *, time_limit: float | None = None) -> tuple[np.ndarray, float]:
    """0/1 program: one level per group, ``sum cost_c <= cap_c`` for every budget c (HiGHS).

    Returns (level index per group, objective). Raises BudgetError when infeasible.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_matrix, vstack

    dist = np.asarray(dist, dtype=np.float64)
    G, K = dist.shape
    n = G * K
    allowed = np.isfinite(dist).ravel()
    obj = np.where(allowed, dist.ravel(), 0.0)
    rows = np.repeat(np.arange(G), K)
    one_hot = csr_matrix((np.ones(n), (rows, np.arange(n))), shape=(G, n))
    cons = [LinearConstraint(one_hot, 1, 1)]
    if costs:
        A = vstack([csr_matrix(np.asarray(ci, dtype=np.float64).reshape(1, n)) for ci in costs])
        cons.append(LinearConstraint(A, -np.inf, np.asarray(capacities, dtype=np.float64)))
    opts: dict[str, Any] = {"disp": False, "mip_rel_gap": 0.0}
    if time_limit is not None:
        opts["time_limit"] = time_limit
    res = milp(obj, constraints=cons, integrality=np.ones(n), bounds=Bounds(0, np.where(allowed, 1.0, 0.0)),
               options=opts)
    if res.x is None:
        raise BudgetError(f"no allocation of the allowed levels meets the budget ({res.message})")
    idx = res.x.reshape(G, K).argmax(axis=1)
    return idx.astype(np.int64), float(dist[np.arange(G), idx].sum())


# ------------------------------------------------------------------------------------------------
# Budgets from constraints


def check_budgets_reachable(table: LevelTable, constraints: Sequence[Constraint]) -> None:
    """BudgetError naming the first constraint on a cost metric that no allocation of the allowed
    levels meets (e.g. ``avg_bits <= 3`` in mode ``sparsity``, where every weight keeps
    ``fixed_bits``): any strategy would only ever ask candidates that break it."""
    for c in constraints:
        if c.metric not in BUDGET_METRICS or c.metric not in table.cost:
            continue
        res, cap = table.capacity(c.metric, c.op, c.bound)
        if sum(float(r.min()) for r in res) <= cap * (1 + 1e-12) + 1e-9:
            continue
        contrib = table.cost[c.metric]
        pick = (lambda x: float(x.min())) if c.op in ("<=", "<") else (lambda x: float(x.max()))
        best = table.offset[c.metric] + table.scale[c.metric] * sum(pick(x) for x in contrib)
        raise BudgetError(
            f"constraints: '{c.metric} {c.op} {c.bound:g}' cannot be met: the most compressed allocation of the "
            f"allowed levels has {c.metric} {best:.4g}; relax it, or allow more compressed levels in space.options "
            "(bits, sparsities, mode)")


def budgets_of(table: LevelTable, constraints: Sequence[Constraint], who: str
               ) -> list[tuple[np.ndarray, float, Constraint]]:
    """The constraints on additive cost metrics as (G, K) resource matrices and capacities."""
    check_budgets_reachable(table, constraints)
    out = []
    for c in constraints:
        if c.metric not in BUDGET_METRICS:
            continue
        res, cap = table.capacity(c.metric, c.op, c.bound)
        out.append((np.stack(res), float(cap), c))
    if not out:
        others = sorted({c.metric for c in constraints})
        kept = (f"; the constraints on {', '.join(others)} keep candidates within them but set no budget to "
                "allocate" if others else "")
        raise JobSpecError(f"constraints: strategy {who!r} needs a budget, a constraint on one of "
                           f"{', '.join(BUDGET_METRICS)} (e.g. 'sparsity >= 0.6' or 'avg_bits <= 3'){kept}")
    return out


def feasible(idx: np.ndarray, budgets: Sequence[tuple[np.ndarray, float, Constraint]]) -> bool:
    g = np.arange(len(idx))
    return all(float(R[g, idx].sum()) <= cap * (1 + 1e-12) + 1e-9 for R, cap, _ in budgets)


def best_uniform(space: Any, table: LevelTable, budgets: Sequence[tuple[np.ndarray, float, Constraint]]
                 ) -> np.ndarray | None:
    """Level indices of the uniform allocation (every group at the same bits / sparsity) that uses
    the most of the budget while meeting it; None when no uniform allocation meets it."""
    best, best_use = None, -math.inf
    for b in space.bit_values():
        for s in space.sparsity_values():
            idx = space.levels_of(table, space.uniform(bits=b, sparsity=s))
            if feasible(idx, budgets):
                use = sum(float(R[np.arange(len(idx)), idx].sum()) / max(cap, 1e-12) for R, cap, _ in budgets)
                if use > best_use:
                    best, best_use = idx, use
    return None if best is None else np.asarray(best, dtype=np.int64)


# ------------------------------------------------------------------------------------------------
# Strategies


class AllocatorOptions(StrategyOptions):
    metric: str | None = Field(default=None, description="distortion metric of the probes; default: the first objective")
    max_states: int = Field(default=200_000, ge=100, le=50_000_000, description="DP budget cells before a coarser grid")
    reference: bool = Field(
        default=True,
        description="also score the uniform allocation that uses the most of the budget (one evaluation), so "
        "the job shows what the solution bought over plain uniform quantization / pruning",
    )


class _ProbingAllocator(Strategy):
    """Probe phase, then one solved allocation, then done (see the module docstring)."""

    Options = AllocatorOptions
    options: AllocatorOptions
    name = "allocator"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not hasattr(self.space, "level_table"):
            raise JobSpecError(f"strategy.name: {self.name!r} needs the 'compression' space, not {self.space.id!r}")
        self.table: LevelTable = self.space.level_table()  # type: ignore[attr-defined]
        self.budgets = budgets_of(self.table, self.constraints, self.name)
        metric = self.options.metric or self.objectives[0].metric
        self.metric = metric
        self.sign = next((o.sign() for o in self.objectives if o.metric == metric), 1.0)
        G = len(self.table.groups)
        self.K = max(len(lv) for lv in self.table.levels)
        self.base_idx = np.array([len(lv) - 1 for lv in self.table.levels], dtype=np.int64)
        self.probes: list[tuple[int, int]] = [(-1, -1)] + self.probe_plan()
        self.values: dict[str, float] = {}
        self.next_probe = 0
        self.solution: list[int] | None = None
        self.solved_value: float | None = None
        self.done = False
        self.finals: list[list[int]] = []  # the solution and the reference, not asked yet
        self.exact = True
        self._G = G

    @classmethod
    def asks_uniform_reference(cls, options: Mapping[str, Any]) -> bool:
        return bool(cls.Options.model_validate(dict(options)).reference)  # type: ignore[attr-defined]

    def finished_why(self) -> str:
        reference = " and the uniform reference" if self.options.reference else ""
        return f"its probes, its solution{reference} are evaluated"

    def evaluations_needed(self) -> tuple[int, str] | None:
        probes = len(self.probes)
        reference = bool(self.options.reference)
        what = (f"the base allocation and {probes - 1} probes (one per group and level it measures), then its "
                "solution" + (" and the uniform allocation it is compared with" if reference else ""))
        return probes + 1 + int(reference), what

    # ---- to define -------------------------------------------------------------------------
    def probe_plan(self) -> list[tuple[int, int]]:
        """(group, level) pairs to probe besides the base."""
        return [(g, k) for g, lv in enumerate(self.table.levels) for k in range(len(lv) - 1)]

    def solve(self, dist: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # ---- helpers ---------------------------------------------------------------------------
    def probe_arch(self, g: int, k: int) -> Arch:
        idx = self.base_idx.copy()
        if g >= 0:
            idx[g] = k
        return self.space.arch_from_levels(self.table, idx)  # type: ignore[attr-defined]

    def distortion(self) -> np.ndarray:
        """(G, K) measured curves: inf where a level was not probed, failed, or does not exist."""
        D = np.full((self._G, self.K), np.inf)
        base = self.values.get(self.probe_arch(-1, -1).key(), math.inf)
        for g in range(self._G):
            D[g, self.base_idx[g]] = 0.0
        for g, k in self.probes[1:]:
            v = self.values.get(self.probe_arch(g, k).key(), math.inf)
            D[g, k] = v - base
        return D

    # ---- Strategy --------------------------------------------------------------------------
    def ask(self, n: int) -> list[Arch]:
        out: list[Arch] = []
        while len(out) < n and self.next_probe < len(self.probes):
            g, k = self.probes[self.next_probe]
            self.next_probe += 1
            out.append(self.probe_arch(g, k))
        if out:
            return out
        if self.solution is None:
            if self.probe_arch(-1, -1).key() not in self.values:
                raise BudgetError(f"{self.name}: the uncompressed base allocation failed to evaluate; "
                                  "see the failed candidate's error")
            idx = self.solve(self.distortion())
            self.solution = [int(i) for i in idx]
        if not self.done:  # the solution, then (option reference) the uniform allocation it is compared with
            self.done = True
            finals = [self.solution]
            uniform = best_uniform(self.space, self.table, self.budgets) if self.options.reference else None
            if uniform is not None:
                finals.append([int(i) for i in uniform])
            for levels in finals:
                key = self.space.arch_from_levels(self.table, levels).key()  # type: ignore[attr-defined]
                if key not in self.values and levels not in self.finals:
                    self.finals.append(levels)
        out = [self.space.arch_from_levels(self.table, levels) for levels in self.finals[:n]]  # type: ignore[attr-defined]
        self.finals = self.finals[n:]
        return out

    def tell(self, archs: Sequence[Arch], results: Sequence[EvalResult]) -> None:
        for a, r in zip(archs, results, strict=True):
            if r.ok and self.metric in r.metrics:
                self.values[a.key()] = self.sign * float(r.metrics[self.metric])

    def solution_arch(self) -> Arch | None:
        if self.solution is None:
            return None
        return self.space.arch_from_levels(self.table, self.solution)  # type: ignore[attr-defined]

    def report(self) -> dict[str, float]:
        return {"probes_asked": float(self.next_probe), "solved": float(self.solution is not None),
                "exact": float(self.exact)}

    def extra_state(self) -> dict[str, Any]:
        return {"values": self.values, "next_probe": self.next_probe, "solution": self.solution,
                "done": self.done, "exact": self.exact, "finals": self.finals}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.values = {str(k): float(v) for k, v in state.get("values", {}).items()}
        self.next_probe = int(state.get("next_probe", 0))
        self.solution = state.get("solution")
        self.done = bool(state.get("done", False))
        self.exact = bool(state.get("exact", True))
        self.finals = [[int(i) for i in idx] for idx in state.get("finals", [])]


class DPAllocator(_ProbingAllocator):
    """Layer-adaptive allocation by exact dynamic programming under one budget (see module doc)."""

    name = "dp"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if len(self.budgets) != 1:
            raise JobSpecError(f"constraints: the dp allocator takes one budget constraint, got "
                               f"{[str(b[2]) for b in self.budgets]}; use strategy 'ilp' for several")

    def solve(self, dist: np.ndarray) -> np.ndarray:
        R, cap, _ = self.budgets[0]
        idx, _, exact = solve_dp(dist, R, cap, max_states=self.options.max_states)
        self.exact = exact
        return idx


class ILPAllocator(_ProbingAllocator):
    """Allocation as a 0/1 integer program solved by HiGHS (``scipy.optimize.milp``)."""

    name = "ilp"

    def solve(self, dist: np.ndarray) -> np.ndarray:
        idx, _ = solve_ilp(dist, [R for R, _, _ in self.budgets], [cap for _, cap, _ in self.budgets])
        return idx


class ClosedFormOptions(AllocatorOptions):
    probe_bits: int | None = Field(default=None, description="bit-width probed per group; default the lowest allowed")


class ClosedFormAllocator(_ProbingAllocator):
    """BAQ-style closed-form bit allocation, rounded to the allowed set under the budget."""

    Options = ClosedFormOptions
    options: ClosedFormOptions
    name = "closed_form"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        bits_only = all(list(c) == [f"bits:{g}"] for g, lv in zip(self.table.groups, self.table.levels, strict=True)
                        for c in lv)
        if not bits_only:
            raise JobSpecError("strategy.name: 'closed_form' allocates bits only (space mode 'bits'); "
                               "use 'dp', 'ilp' or 'evopress' for sparsity or joint spaces")
        self.bits = np.array([[float(next(iter(c.values()))) for c in lv] for lv in self.table.levels])

    def probe_plan(self) -> list[tuple[int, int]]:
        want = self.options.probe_bits
        out = []
        for g, lv in enumerate(self.table.levels):
            vals = [int(next(iter(c.values()))) for c in lv]
            k = vals.index(want) if want in vals else int(np.argmin(vals))
            if k != len(lv) - 1:
                out.append((g, k))
        return out

    def model_distortion(self, dist: np.ndarray) -> np.ndarray:
        """(G, K) modelled curves c_g * 4**-b, relative to the base bit-width (0 at the base)."""
        G = dist.shape[0]
        c = np.zeros(G)
        for g, k in self.probes[1:]:
            d = dist[g, k]
            b, b0 = self.bits[g, k], self.bits[g, self.base_idx[g]]
            # d = c (4^-b - 4^-b0)
            c[g] = max(d, 1e-12) / max(4.0**-b - 4.0**-b0, 1e-300) if np.isfinite(d) else BIG
        base_b = self.bits[np.arange(G), self.base_idx]
        return c[:, None] * (4.0 ** -self.bits - 4.0 ** -base_b[:, None])

    def solve(self, dist: np.ndarray) -> np.ndarray:
        model = self.model_distortion(dist)
        G = model.shape[0]
        c = model[:, 0] / (4.0 ** -self.bits[:, 0] - 4.0 ** -self.bits[np.arange(G), self.base_idx] + 1e-300)
        c = np.maximum(c, 1e-12)
        R, cap, _ = self.budgets[0]
        # resource per extra bit of each group (the budgets are affine in b within a group)
        lo, hi = self.bits.min(axis=1), self.bits.max(axis=1)
        span = np.maximum(hi - lo, 1e-9)
        w = (R.max(axis=1) - R.min(axis=1)) / span
        w = np.maximum(w, 1e-12)
        r0 = R.min(axis=1)

        def bits_for(lam: float) -> np.ndarray:  # stationarity: 2 ln2 c 4^-b = lam w
            b = 0.5 * np.log2(2 * np.log(2) * c / (lam * w))
            return np.clip(b, lo, hi)

        def used(lam: float) -> float:
            return float((r0 + w * (bits_for(lam) - lo)).sum())

        a, z = 1e-30, 1e30
        for _ in range(200):  # bisection on log(lambda): used() falls as lambda grows
            m = math.sqrt(a * z)
            if used(m) > cap:
                a = m
            else:
                z = m
        cont = bits_for(z)
        # round down to the allowed set, then raise greedily (best modelled gain per resource)
        idx = np.array([int(np.max(np.nonzero(self.bits[g] <= cont[g] + 1e-9)[0], initial=0)) for g in range(G)])
        while not feasible(idx, self.budgets):
            cand = [g for g in range(G) if idx[g] > 0]
            if not cand:
                raise BudgetError("closed_form: no allocation of the allowed bits meets the budget")
            g = min(cand, key=lambda g: (model[g, idx[g] - 1] - model[g, idx[g]]) /
                    max(R[g, idx[g]] - R[g, idx[g] - 1], 1e-12))
            idx[g] -= 1
        while True:
            best, best_gain = -1, 0.0
            for g in range(G):
                if idx[g] + 1 >= len(self.table.levels[g]):
                    continue
                trial = idx.copy()
                trial[g] += 1
                if not feasible(trial, self.budgets):
                    continue
                gain = (model[g, idx[g]] - model[g, idx[g] + 1]) / max(R[g, idx[g] + 1] - R[g, idx[g]], 1e-12)
                if gain > best_gain:
                    best, best_gain = g, gain
            if best < 0:
                break
            idx[best] += 1
        return idx
