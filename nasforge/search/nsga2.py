"""NSGA2: multi-objective evolution on the space's integer index matrices (vectorized, seeded).

NSGA-II (Deb et al. 2002) in our own words: parents by tournament on (rank, crowding), offspring by
uniform crossover and per-choice resampling (the space's ``crossover_indices`` /
``mutate_indices``), survivors by non-dominated sorting with crowding distance over parents and
offspring together. Constraints use Deb's constrained domination: a feasible point beats an
infeasible one, two infeasible points compare by total violation (``Strategy.violation_vector``),
two feasible points by Pareto rank then crowding. A failed evaluation is infeasible (violation
+inf) and never chosen as a parent while anything else is available.

Two ways to run it:

- ask / tell through the SearchDriver (real evaluations). Offspring are generated one generation
  (``population`` rows) at a time into a queue; ``ask(n)`` serves any ``n`` from that queue,
  breeding a new batch whenever it runs dry. Survivor selection (a new generation) happens in
  ``tell`` once ``population`` results (``initial_samples`` for the first generation) have been
  told since the last selection; offspring still queued then are dropped, so the next asks come
  from the new parents. Until the first selection, asks beyond the initial samples are bred from
  the results told so far. No key is ever asked twice in a job (``seen`` holds every asked key;
  archs are canonical, so two index rows building the same network count once).
- ``optimize(score_fn, generations)``: the whole loop on index matrices for predictor-only search,
  with one vectorized ``score_fn`` call per generation and no Arch objects in the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from nasforge.core.types import Arch, EvalResult
from nasforge.search.base import Strategy, StrategyOptions
from nasforge.search.pareto import crowding_by_group, front_ranks


class NSGA2Options(StrategyOptions):
    population: int = Field(default=24, ge=2, le=100_000, description="survivors kept per generation")
    initial_samples: int | None = Field(
        default=None, ge=2, le=1_000_000,
        description="uniform random archs of the first generation (default: population)")
    crossover_prob: float = Field(default=0.9, ge=0, le=1, description="chance an offspring mixes two parents")
    mutation_prob: float | None = Field(
        default=None, gt=0, le=1, description="per-choice resampling chance (default 1/number of choices)"
    )
    tournament: int = Field(default=2, ge=1, le=16, description="tournament size for parent selection")
    max_tries: int = Field(default=50, ge=1, description="batches bred in a row without a new arch before ask gives up")


# ---- vectorized NSGA-II pieces (plain functions of arrays) --------------------------------------
def constrained_rank_and_crowding(F: np.ndarray, violation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank and crowding of every point under Deb's constrained domination.

    Feasible points (violation <= 0 and finite objectives) get their Pareto front number and their
    crowding distance in that front. Infeasible points rank after every feasible front, ordered by
    total violation (equal violations share a rank), with crowding 0.
    """
    F = np.asarray(F, dtype=np.float64)
    V = np.asarray(violation, dtype=np.float64)
    n = len(F)
    rank = np.zeros(n, dtype=np.int64)
    crowd = np.zeros(n)
    feasible = (V <= 0) & np.all(np.isfinite(F), axis=1)
    fi = np.flatnonzero(feasible)
    n_fronts = 0
    if fi.size:
        r = front_ranks(F[fi])
        rank[fi] = r
        crowd[fi] = crowding_by_group(F[fi], r)
        n_fronts = int(r.max()) + 1
    ii = np.flatnonzero(~feasible)
    if ii.size:
        v = np.where(np.isnan(V[ii]), np.inf, V[ii])
        _, dense = np.unique(v, return_inverse=True)
        rank[ii] = n_fronts + dense.ravel()
    return rank, crowd


def survival_order(F: np.ndarray, violation: np.ndarray) -> np.ndarray:
    """Indices best first: by constrained rank, then by crowding distance (larger first)."""
    rank, crowd = constrained_rank_and_crowding(F, violation)
    return np.lexsort((-crowd, rank))


def unique_rows(idx: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of every distinct row, in their original order."""
    if len(idx) == 0:
        return np.zeros(0, dtype=np.int64)
    small = np.ascontiguousarray(idx.astype(np.int32 if idx.max(initial=0) >= 32767 else np.int16))
    keys = small.view(np.dtype((np.void, small.dtype.itemsize * small.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)
    return np.sort(first)


def _tournament_key(rank: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """One float per point, lower is better: rank first, then larger crowding within a rank."""
    with np.errstate(invalid="ignore"):
        closeness = np.where(np.isinf(crowd), 0.0, 1.0 / (1.0 + np.maximum(crowd, 0.0)))  # in (0, 1]
    return rank.astype(np.float64) + 0.5 * closeness


class NSGA2(Strategy):
    """NSGA-II with constrained domination; see the module docstring for the ask/tell protocol."""

    Options = NSGA2Options
    options: NSGA2Options

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        d = len(self.space.cardinalities)
        self._d = d
        self.n_obj = len(self.objectives)
        self.pop_idx = np.zeros((0, d), dtype=np.int64)
        self.pop_F = np.zeros((0, self.n_obj))
        self.pop_V = np.zeros(0)
        self.buf_idx = np.zeros((0, d), dtype=np.int64)
        self.buf_F = np.zeros((0, self.n_obj))
        self.buf_V = np.zeros(0)
        self.queue: list[list[int]] = []
        self.seen: set[str] = set()
        self.generation = 0

    @property
    def _opts(self) -> NSGA2Options:
        assert isinstance(self.options, NSGA2Options)
        return self.options

    @property
    def _mutation_prob(self) -> float:
        return self._opts.mutation_prob or 1.0 / max(self._d, 1)

    @property
    def _initial_samples(self) -> int:
        return self._opts.initial_samples or self._opts.population

    # ---- variation ------------------------------------------------------------------------
    def _offspring(self, n: int, idx: np.ndarray, key: np.ndarray) -> np.ndarray:
        """``n`` children of the rows ``idx`` whose tournament keys (lower better) are ``key``."""
        k = self._opts.tournament
        cand = self.rng.integers(0, len(idx), size=(2, n, k))
        winners = np.take_along_axis(cand, np.argmin(key[cand], axis=2)[..., None], axis=2)[..., 0]
        a, b = idx[winners[0]], idx[winners[1]]
        mix = self.space.crossover_indices(a, b, self.rng)
        do_cross = self.rng.random(n) < self._opts.crossover_prob
        child = np.where(do_cross[:, None], mix, a)
        return self.space.mutate_indices(child, self.rng, self._mutation_prob)

    def _fresh_children(self, child: np.ndarray, parents: np.ndarray, passes: int = 3) -> np.ndarray:
        """Make children that repeat a parent or an earlier child differ from it by one choice
        (``passes`` rounds; a repeat may remain when a space is nearly exhausted)."""
        card = self.space.cardinalities
        movable = np.flatnonzero(card > 1)
        if movable.size == 0:
            return child
        child = child.copy()
        for _ in range(passes):
            allrows = np.concatenate([parents, child])
            first = unique_rows(allrows)
            is_first = np.zeros(len(allrows), dtype=bool)
            is_first[first] = True
            dup = np.flatnonzero(~is_first[len(parents):])
            if dup.size == 0:
                break
            pos = movable[self.rng.integers(0, movable.size, size=dup.size)]
            step = 1 + (self.rng.random(dup.size) * (card[pos] - 1)).astype(np.int64)
            child[dup, pos] = (child[dup, pos] + step) % card[pos]
        return child

    # ---- ask / tell -----------------------------------------------------------------------
    def _breeding_pool(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows, tournament keys) to breed from, or None when offspring must be random."""
        if len(self.pop_idx) >= 2:
            idx, F, V = self.pop_idx, self.pop_F, self.pop_V
        elif len(self.buf_idx) >= 2:
            idx, F, V = self.buf_idx, self.buf_F, self.buf_V
        else:
            return None
        rank, crowd = constrained_rank_and_crowding(F, V)
        return idx, _tournament_key(rank, crowd)

    def _refill(self) -> int:
        """Breed one batch into the queue; returns how many new (unseen, unqueued) archs it added."""
        pool = self._breeding_pool()
        if pool is None:
            size = self._initial_samples if self.generation == 0 and not self.queue else self._opts.population
            rows = self.space.sample_indices(size, self.rng)
        else:
            rows = self._fresh_children(self._offspring(self._opts.population, *pool), pool[0])
        queued = {self.space.from_indices(r).key() for r in self.queue}
        added = 0
        for row in rows:
            arch = self.space.from_indices(row)
            key = arch.key()
            if key in self.seen or key in queued:
                continue
            queued.add(key)
            self.queue.append(self.space.to_indices(arch).tolist())
            added += 1
        return added

    def ask(self, n: int) -> list[Arch]:
        """Up to ``n`` archs never asked before in this job (fewer only when the space looks spent)."""
        out: list[Arch] = []
        barren = 0
        while len(out) < n:
            if not self.queue:
                if self._refill() == 0:
                    barren += 1
                    if barren >= self._opts.max_tries:
                        break
                    continue
                barren = 0
            arch = self.space.from_indices(self.queue.pop(0))
            key = arch.key()
            if key in self.seen:
                continue
            self.seen.add(key)
            out.append(arch)
        return out

    def tell(self, archs: Sequence[Arch], results: Sequence[EvalResult]) -> None:
        """Record results (in ask order); selects the next generation once enough are in."""
        if len(archs) != len(results):
            raise ValueError(f"tell got {len(archs)} archs and {len(results)} results")
        if not archs:
            return
        idx = np.stack([self.space.to_indices(a) for a in archs])
        F = self.objective_matrix(results)
        F[np.isnan(F)] = np.inf
        V = self.violation_vector(results)
        V[np.isnan(V)] = np.inf
        self.buf_idx = np.concatenate([self.buf_idx, idx])
        self.buf_F = np.concatenate([self.buf_F, F])
        self.buf_V = np.concatenate([self.buf_V, V])
        need = self._initial_samples if self.generation == 0 else self._opts.population
        if len(self.buf_idx) >= need:
            self._select()

    def _select(self) -> None:
        all_idx = np.concatenate([self.pop_idx, self.buf_idx])
        all_F = np.concatenate([self.pop_F, self.buf_F])
        all_V = np.concatenate([self.pop_V, self.buf_V])
        first = unique_rows(all_idx)  # a row told twice counts once
        all_idx, all_F, all_V = all_idx[first], all_F[first], all_V[first]
        keep = survival_order(all_F, all_V)[: self._opts.population]
        self.pop_idx, self.pop_F, self.pop_V = all_idx[keep], all_F[keep], all_V[keep]
        self.buf_idx = np.zeros((0, self._d), dtype=np.int64)
        self.buf_F = np.zeros((0, self.n_obj))
        self.buf_V = np.zeros(0)
        self.queue = []  # bred from the old parents
        self.generation += 1

    # ---- predictor-only fast path ---------------------------------------------------------
    def optimize(
        self,
        score_fn: Callable[[np.ndarray], np.ndarray],
        generations: int,
        *,
        violation_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        initial: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run NSGA-II for ``generations`` generations on index matrices; return the final
        population as (indices (p, d) int64, objectives (p, m)).

        ``score_fn`` maps an (n, d) int64 index matrix to an (n, m) objective matrix to minimize, in
        one call; ``violation_fn`` (optional) maps it to (n,) total violations (<= 0 feasible).
        ``initial`` (optional) is the first population (default: ``initial_samples`` random rows).
        Calls: one per generation plus one for the initial rows; each generation scores exactly
        ``population`` children, bred to differ from their parents and each other where the space
        allows. Uses and advances this strategy's RNG; ask/tell state is not touched.
        """
        if generations < 0:
            raise ValueError(f"generations must be >= 0, got {generations}")
        pop = self._opts.population

        def evaluate(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            F = np.asarray(score_fn(rows), dtype=np.float64)
            if F.ndim == 1:
                F = F[:, None]
            if F.shape[0] != len(rows):
                raise ValueError(f"score_fn returned {F.shape[0]} rows for {len(rows)} archs")
            F = np.where(np.isnan(F), np.inf, F)
            if violation_fn is None:
                V = np.zeros(len(rows))
            else:
                V = np.asarray(violation_fn(rows), dtype=np.float64).reshape(len(rows))
                V = np.where(np.isnan(V), np.inf, V)
            return F, V

        if initial is not None:
            idx = np.asarray(initial, dtype=np.int64).reshape(-1, self._d)
        else:
            idx = self.space.sample_indices(self._initial_samples, self.rng)
        F, V = evaluate(idx)
        first = unique_rows(idx)
        idx, F, V = idx[first], F[first], V[first]
        rank, crowd = constrained_rank_and_crowding(F, V)
        if len(idx) > pop:
            keep = np.lexsort((-crowd, rank))[:pop]
            idx, F, V = idx[keep], F[keep], V[keep]
            rank, crowd = constrained_rank_and_crowding(F, V)
        for _ in range(generations):
            if len(idx) < 2:
                child = self.space.sample_indices(pop, self.rng)
            else:
                child = self._fresh_children(self._offspring(pop, idx, _tournament_key(rank, crowd)), idx)
            cF, cV = evaluate(child)
            all_idx = np.concatenate([idx, child])
            all_F = np.concatenate([F, cF])
            all_V = np.concatenate([V, cV])
            first = unique_rows(all_idx)
            all_idx, all_F, all_V = all_idx[first], all_F[first], all_V[first]
            r, c = constrained_rank_and_crowding(all_F, all_V)
            keep = np.lexsort((-c, r))[:pop]
            # survivors carry the rank and crowding they had in the merged set (as in NSGA-II)
            idx, F, V, rank, crowd = all_idx[keep], all_F[keep], all_V[keep], r[keep], c[keep]
        return idx, F

    # ---- state ----------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        def rows(a: np.ndarray) -> list[list[float | None]]:
            return [[float(x) if np.isfinite(x) else None for x in row] for row in a]

        def vec(a: np.ndarray) -> list[float | None]:
            return [float(x) if np.isfinite(x) else None for x in a]

        return {
            "pop_idx": self.pop_idx.tolist(), "pop_F": rows(self.pop_F), "pop_V": vec(self.pop_V),
            "buf_idx": self.buf_idx.tolist(), "buf_F": rows(self.buf_F), "buf_V": vec(self.buf_V),
            "queue": [list(map(int, r)) for r in self.queue],
            "seen": sorted(self.seen), "generation": self.generation,
        }

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        d, m = self._d, self.n_obj

        def rows(data: list[Any]) -> np.ndarray:
            return np.array([[np.inf if x is None else x for x in r] for r in data], dtype=np.float64).reshape(-1, m)

        def vec(data: list[Any]) -> np.ndarray:
            return np.array([np.inf if x is None else x for x in data], dtype=np.float64)

        self.pop_idx = np.array(state["pop_idx"], dtype=np.int64).reshape(-1, d)
        self.pop_F = rows(state["pop_F"])
        self.pop_V = vec(state["pop_V"])
        self.buf_idx = np.array(state["buf_idx"], dtype=np.int64).reshape(-1, d)
        self.buf_F = rows(state["buf_F"])
        self.buf_V = vec(state["buf_V"])
        self.queue = [list(map(int, r)) for r in state.get("queue", [])]
        self.seen = set(state["seen"])
        self.generation = int(state["generation"])
