"""Probe: predictor-only search speed of ``NSGA2.optimize`` against Optuna's NSGAIISampler.

Not a registered benchmark (the issue-5 benchmark builds on ``NSGA2.optimize``); a quick, honest
measurement of the search loop itself. The objective is synthetic and stands in for a batched
predictor: a 40-choice categorical space (3 to 7 values per choice) and two conflicting objectives
(an "error" that falls with capacity but also rewards a hidden best value per choice, and a
"latency" that grows with capacity plus pairwise interaction terms), computed in one vectorized
numpy call for a whole index matrix. Both searches get the same objective and the same number of
scored candidates (population x (generations + 1)), with the same population size.

Figures: candidates scored per second (ours: median of ``--repeats`` runs, because one run takes
only milliseconds; Optuna: one run per seed), their ratio per seed, and the hypervolume of every
candidate each scored (objectives normalized by the ideal and nadir of 20,000 random archs and the
points of both runs, reference 1.1). The machine is shared, so timings are noisy: each seed times
both searches back to back and the ratio is taken per seed; the report gives min/median/max.

    python -m benchmarks.search_speed_probe [--seeds 3] [--population 50] [--generations 19] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from typing import Any

import numpy as np

from nasforge.core.types import Arch, Direction, Objective, Scalar
from nasforge.search.nsga2 import NSGA2
from nasforge.search.pareto import hypervolume, normalize_for_hv
from nasforge.spaces.base import SearchSpace

N_CHOICES = 40


class ProbeSpace(SearchSpace):
    """40 categorical choices with 3..7 values each (fixed by a seeded generator)."""

    id = "speed_probe"
    version = 1

    def build_choices(self) -> dict[str, tuple[Scalar, ...]]:
        card = np.random.default_rng(1234).integers(3, 8, size=N_CHOICES)
        return {f"c{i:02d}": tuple(range(int(k))) for i, k in enumerate(card)}

    def cost(self, arch: Arch) -> dict[str, float]:
        idx = self.to_indices(arch)[None]
        return {"flops": float(SyntheticObjective(self)(idx)[0, 1]), "params": float(idx.sum())}


class SyntheticObjective:
    """(n, 40) index matrix -> (n, 2) objectives to minimize: [error, latency]."""

    def __init__(self, space: SearchSpace):
        rng = np.random.default_rng(99)
        card = space.cardinalities
        self.size = [np.linspace(0.0, 1.0, int(k)) for k in card]
        self.best = rng.integers(0, card)  # hidden best value per choice
        self.weight = rng.uniform(0.5, 1.5, size=len(card))
        self.pairs = rng.integers(0, len(card), size=(20, 2))
        # lookup tables so that one gather per choice scores the whole matrix
        width = int(card.max())
        self.size_tab = np.zeros((len(card), width))
        self.match_tab = np.zeros((len(card), width))
        for i, k in enumerate(card):
            self.size_tab[i, :k] = self.size[i]
            self.match_tab[i, :k] = np.abs(np.arange(k) - self.best[i]) / max(int(k) - 1, 1)
        self.cols = np.arange(len(card))

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        size = self.size_tab[self.cols, idx]  # (n, d)
        miss = self.match_tab[self.cols, idx]
        capacity = size @ self.weight
        error = 0.6 * np.exp(-capacity / 8.0) + 0.4 * (miss @ self.weight) / self.weight.sum()
        latency = capacity + 0.5 * np.sum(size[:, self.pairs[:, 0]] * size[:, self.pairs[:, 1]], axis=1)
        return np.stack([error, latency], axis=1)


def run_ours(space: SearchSpace, objective: SyntheticObjective, seed: int, population: int,
             generations: int) -> tuple[float, np.ndarray]:
    scored: list[np.ndarray] = []

    def score(idx: np.ndarray) -> np.ndarray:
        F = objective(idx)
        scored.append(F)
        return F

    objectives = [Objective("error", Direction.MINIMIZE), Objective("latency", Direction.MINIMIZE)]
    t0 = time.perf_counter()
    NSGA2(space, objectives=objectives, seed=seed, options={"population": population}).optimize(score, generations)
    return time.perf_counter() - t0, np.concatenate(scored)


def run_optuna(space: SearchSpace, objective: SyntheticObjective, seed: int, population: int,
               budget: int) -> tuple[float, np.ndarray]:
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    names = space.names
    card = [int(k) for k in space.cardinalities]
    scored: list[np.ndarray] = []

    def trial_objective(trial: Any) -> tuple[float, float]:
        row = np.array([[trial.suggest_categorical(n, list(range(k))) for n, k in zip(names, card, strict=True)]])
        f = objective(row)[0]
        scored.append(f)
        return float(f[0]), float(f[1])

    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    t0 = time.perf_counter()
    study.optimize(trial_objective, n_trials=budget)
    return time.perf_counter() - t0, np.array(scored)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--population", type=int, default=50)
    ap.add_argument("--generations", type=int, default=19)
    ap.add_argument("--repeats", type=int, default=7, help="timed runs of ours per seed (median)")
    ap.add_argument("--json", help="write the result here as JSON")
    args = ap.parse_args(argv)

    space = ProbeSpace()
    objective = SyntheticObjective(space)
    budget = args.population * (args.generations + 1)
    random_F = objective(space.sample_indices(20_000, np.random.default_rng(7)))
    rows = []
    for seed in range(args.seeds):
        times, F_ours = [], None
        for _ in range(args.repeats):
            t, F_ours = run_ours(space, objective, seed, args.population, args.generations)
            times.append(t)
        assert F_ours is not None and len(F_ours) == budget
        t_opt, F_opt = run_optuna(space, objective, seed, args.population, budget)
        allF = np.vstack([random_F, F_ours, F_opt])
        ideal, nadir = allF.min(axis=0), random_F.max(axis=0)
        ref = np.full(2, 1.1)
        hv_ours = hypervolume(normalize_for_hv(F_ours, ideal, nadir), ref)
        hv_opt = hypervolume(normalize_for_hv(F_opt, ideal, nadir), ref)
        t_ours = statistics.median(times)
        rows.append({
            "seed": seed, "candidates": budget,
            "ours_s": t_ours, "ours_s_min": min(times), "ours_s_max": max(times), "optuna_s": t_opt,
            "ours_per_s": budget / t_ours, "optuna_per_s": budget / t_opt,
            "speed_ratio": t_opt / t_ours, "hv_ours": hv_ours, "hv_optuna": hv_opt, "hv_ratio": hv_ours / hv_opt,
        })
        print(json.dumps(rows[-1]), file=sys.stderr)
    ratios = [r["speed_ratio"] for r in rows]
    hv_ratios = [r["hv_ratio"] for r in rows]
    result = {
        "population": args.population, "generations": args.generations, "candidates": budget,
        "choices": N_CHOICES, "seeds": args.seeds,
        "speed_ratio_median": statistics.median(ratios), "speed_ratio_min": min(ratios), "speed_ratio_max": max(ratios),
        "hv_ratio_median": statistics.median(hv_ratios), "hv_ratio_min": min(hv_ratios),
        "ours_per_s_median": statistics.median(r["ours_per_s"] for r in rows),
        "optuna_per_s_median": statistics.median(r["optuna_per_s"] for r in rows),
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
