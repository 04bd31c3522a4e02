"""``guided``: predictor-guided evolution with active learning.

Each round, ``ask(n)``:
1. fits (if new results arrived) one predictor per learned objective metric on every real result
   so far (features: ``nasforge.predictors.features.arch_features``); objectives whose metric is
   an analytic cost of the space (``flops``, ``params``, ``bytes``) are computed, not predicted;
2. runs NSGA2's vectorized ``optimize`` on the predicted objectives (index matrices, one batched
   predictor call per generation), seeded with the real Pareto front;
   Failed evaluations train one more predictor (of failure, 0/1); archs predicted to fail rank
   behind every arch predicted to succeed, like constraint violators;
3. returns ``n`` unmeasured archs: the ``n - n_uncertain`` most promising (predicted Pareto rank,
   then crowding distance) and the ``n_uncertain`` most uncertain (largest predicted spread among
   the rest of the evolved candidates) -- active learning.
The first round (fewer than ``initial`` real results) is uniform random.

With ``latency_table`` (a file written by ``nasforge profile-device`` on the workers' device),
``latency_ms`` is predicted as the table's per-op sum times a learned correction
(``nasforge.predictors.latency.LatencyPredictor``) refitted on every measured latency, instead of
a generic predictor on the encoding: it predicts before any child was timed, and ``report()``
adds the share of new results within 10% of their measured latency and whether the results came
from the device profile the table was built on (``latency_table_device_match``; a mismatch is
also logged once: the correction then carries the whole device difference).

Only asked archs are measured, so the front the driver builds from the store consists only of
candidates measured for real; the predictor never chooses the final answer unseen.

``report()`` gives the predictor's ranking quality on the newest real results *before* the refit
that uses them (Kendall tau, Spearman rho, RMSE per learned metric), for the driver to log.
torch is never imported here: the predictor is resolved by name through PREDICTORS.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from nasforge.core.errors import JobSpecError
from nasforge.core.types import Arch, EvalResult
from nasforge.predictors import PREDICTORS
from nasforge.predictors.base import Predictor
from nasforge.predictors.features import arch_features, cost_matrix
from nasforge.predictors.latency import LatencyLUT, LatencyPredictor, LatencyTableError
from nasforge.predictors.metrics import kendall_tau, rmse, spearman_rho
from nasforge.search.base import Strategy, StrategyOptions
from nasforge.search.pareto import crowding_distance, non_dominated_sort

log = logging.getLogger(__name__)

#: pseudo-metric learned from failed evaluations (1 = failed): archs predicted to fail are avoided
FAILED = "__failed__"


class GuidedOptions(StrategyOptions):
    predictor: str = Field(default="mlp_ensemble", description="name in PREDICTORS (mlp_ensemble, gbt, gp)")
    predictor_options: dict[str, Any] = Field(default_factory=dict, description="options of that predictor")
    cost_features: bool = Field(default=True, description="append log FLOPs/params to the arch encoding")
    pretrain: bool = Field(default=False, description="pretrain on FLOPs/params of sampled archs (FBNetV3); mlp_ensemble only")
    pretrain_samples: int = Field(default=2000, ge=1, description="sampled archs for proxy pretraining")
    initial: int = Field(default=0, ge=0, description="random archs before the predictor is used (0 = the first round)")
    uncertain_fraction: float = Field(default=0.25, ge=0, le=1, description="share of each round chosen by predicted spread")
    population: int = Field(default=128, ge=4, description="evolution population on the predictor")
    generations: int = Field(default=30, ge=0, description="evolution generations per round")
    mutation_prob: float = Field(default=0.1, gt=0, le=1, description="per-choice resampling probability")
    latency_table: str | None = Field(
        default=None,
        description="latency table from `nasforge profile-device` (path; relative = inside NASFORGE_HOME): "
        "latency_ms is predicted as its per-op sum times a learned correction",
    )
    latency_correction: Literal["ridge", "huber", "gbt", "none"] = Field(
        default="ridge", description="the learned correction of the latency table's sum")

#: the latency metric a latency table predicts
LUT_METRIC = "latency_ms"
#: measured latencies needed before the table's correction is fitted (the plain sum before)
LUT_MIN_ROWS = 5


def _order(F: np.ndarray, violation: np.ndarray) -> np.ndarray:
    """Indices best first: feasible before infeasible (by violation), then Pareto front, then crowding."""
    F = np.nan_to_num(np.asarray(F, dtype=np.float64), nan=1e300, posinf=1e300, neginf=-1e300)
    ranks = np.zeros(len(F), dtype=np.int64)
    crowd = np.zeros(len(F))
    for r, front in enumerate(non_dominated_sort(F)):
        ranks[front] = r
        crowd[front] = crowding_distance(F[front])
    return np.lexsort((-crowd, ranks, violation))


class PredictorGuidedSearch(Strategy):
    """Evolution on predictors; real evaluations = most promising + most uncertain (see module doc)."""

    Options = GuidedOptions
    options: GuidedOptions

    def __init__(self, space: Any, **kwargs: Any):
        super().__init__(space, **kwargs)
        o = self.options
        PREDICTORS.check(o.predictor, "strategy.options.predictor")
        if o.pretrain and not hasattr(PREDICTORS.get(o.predictor), "pretrain"):
            raise JobSpecError(f"strategy.options.pretrain: predictor {o.predictor!r} cannot be pretrained; "
                               "use predictor: mlp_ensemble or set pretrain: false")
        cost_keys = set(space.cost(space.smallest()))
        self.learned = [ob.metric for ob in self.objectives if ob.metric not in cost_keys]
        self.learned += [c.metric for c in self.constraints if c.metric not in cost_keys and c.metric not in self.learned]
        self._cost_keys = cost_keys
        self._latency: dict[str, LatencyPredictor] = {}
        if o.latency_table is not None and LUT_METRIC in self.learned:
            self._latency[LUT_METRIC] = LatencyPredictor(self._load_table(o.latency_table), seed=self.seed,
                                                         correction=o.latency_correction)
        self.history: list[tuple[Arch, dict[str, float] | None]] = []  # every told arch, in order
        self._asked: set[str] = set()
        self._predictors: dict[str, Predictor] = {}
        self._dirty = True
        self._report: dict[str, float] = {}
        #: metric -> [(measured, predicted before it was measured)] over the whole job
        self._pooled: dict[str, list[tuple[float, float]]] = {}
        self._device_match: float | None = None

    def _load_table(self, name: str) -> LatencyLUT:
        from nasforge.core.paths import home

        path = Path(name) if Path(name).is_absolute() else home() / name
        try:
            lut = LatencyLUT.load(path)
        except LatencyTableError as e:
            raise JobSpecError(f"strategy.options.latency_table: {e}") from None
        if lut.space_id != self.space.id:
            raise JobSpecError(f"strategy.options.latency_table: {path} was built for space {lut.space_id!r}, not "
                               f"{self.space.id!r}; build one with `nasforge profile-device --space {self.space.id}`")
        probe = [self.space.smallest(), self.space.largest()]
        probe += [self.space.from_indices(r) for r in self.space.sample_indices(64, np.random.default_rng(0))]
        try:  # the same space with other options has other ops: refuse it now, not mid-search
            lut.predict(self.space, probe)
        except LatencyTableError as e:
            raise JobSpecError(f"strategy.options.latency_table: {path} does not cover this space's options ({e}); "
                               f"rebuild it with `nasforge profile-device --space {self.space.id} --options "
                               "'<space.options as JSON>'`") from None
        return lut

    # ---- features and predictions ------------------------------------------------------------
    def _features(self, archs: Sequence[Arch]) -> np.ndarray:
        return arch_features(self.space, archs, with_cost=self.options.cost_features)

    def _make_predictor(self, metric: str) -> Predictor:
        o = self.options
        pred = PREDICTORS.get(o.predictor)(o.predictor_options, seed=self.seed)
        if o.pretrain:
            rng = np.random.default_rng(self.seed + 104729)
            idx = self.space.sample_indices(o.pretrain_samples, rng)
            archs = [self.space.from_indices(r) for r in idx]
            pred.pretrain(self._features(archs), cost_matrix(self.space, archs))  # type: ignore[attr-defined]
        return pred

    def _refit(self) -> None:
        if not self._dirty:
            return
        done = [(a, m) for a, m in self.history if m is not None]
        fail_rows = [(a, 0.0 if m is not None else 1.0) for a, m in self.history]
        if any(v for _, v in fail_rows) and not all(v for _, v in fail_rows):
            if FAILED not in self._predictors:
                self._predictors[FAILED] = self._make_predictor(FAILED)
            self._predictors[FAILED].fit(self._features([a for a, _ in fail_rows]),
                                         np.array([v for _, v in fail_rows]))
        else:
            self._predictors.pop(FAILED, None)
        for metric in self.learned:
            rows = [(a, m[metric]) for a, m in done if metric in m and math.isfinite(m[metric])]
            if metric in self._latency:
                rows = [(a, v) for a, v in rows if v > 0]
                if len(rows) >= LUT_MIN_ROWS:
                    self._latency[metric].fit(self.space, [a for a, _ in rows], np.array([v for _, v in rows]))
                continue
            if len(rows) < 2:
                self._predictors.pop(metric, None)
                continue
            if metric not in self._predictors:
                self._predictors[metric] = self._make_predictor(metric)
            X = self._features([a for a, _ in rows])
            self._predictors[metric].fit(X, np.array([v for _, v in rows]))
        self._dirty = False

    def predict_metrics(self, archs: Sequence[Arch]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(means, stds) per metric (learned and cost) for ``archs``; learned ones need a fit."""
        means: dict[str, np.ndarray] = {}
        stds: dict[str, np.ndarray] = {}
        if archs:
            cost = self.space.cost_many(archs)
            for k in self._cost_keys:
                means[k], stds[k] = np.asarray(cost[k], dtype=np.float64), np.zeros(len(archs))
            X = self._features(archs)
            for metric, pred in self._predictors.items():
                means[metric], stds[metric] = pred.predict(X)
            for metric, lp in self._latency.items():
                means[metric], stds[metric] = lp.predict(self.space, archs)
        return means, stds

    def _objectives_and_violation(self, means: Mapping[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
        F = np.zeros((n, len(self.objectives)))
        for j, ob in enumerate(self.objectives):
            F[:, j] = ob.sign() * means[ob.metric] if ob.metric in means else 0.0
        viol = np.zeros(n)
        if FAILED in means:  # predicted to fail: treated like a constraint violation
            viol += np.where(means[FAILED] > 0.5, means[FAILED], 0.0)
        for c in self.constraints:
            if c.metric in means:
                viol += np.array([c.violation({c.metric: float(v)}) for v in means[c.metric]])
        return F, viol

    # ---- ask / tell ---------------------------------------------------------------------------
    def _known(self) -> set[str]:
        return self._asked | {a.key() for a, _ in self.history}

    def _random(self, n: int, known: set[str]) -> list[Arch]:
        out: list[Arch] = []
        for _ in range(50):
            if len(out) >= n:
                break
            for row in self.space.sample_indices(2 * n, self.rng):
                a = self.space.from_indices(row)
                if a.key() not in known:
                    known.add(a.key())
                    out.append(a)
                    if len(out) >= n:
                        break
        return out

    def ask(self, n: int) -> list[Arch]:
        if n <= 0:
            return []
        known = self._known()
        n_done = sum(1 for _, m in self.history if m is not None)
        if n_done < max(self.options.initial, 2) or (self.learned and not self._fit_ready()):
            out = self._random(n, known)
        else:
            out = self._guided(n, known)
        self._asked.update(a.key() for a in out)
        return out

    def _fit_ready(self) -> bool:
        self._refit()
        return all(m in self._predictors or m in self._latency for m in self.learned)

    def _guided(self, n: int, known: set[str]) -> list[Arch]:
        o = self.options
        self._refit()
        space = self.space
        pop_idx = self._initial_population(o.population)
        pool: dict[str, Arch] = {}

        def score(idx: np.ndarray) -> tuple[list[Arch], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
            archs = [space.from_indices(r) for r in idx]
            means, stds = self.predict_metrics(archs)
            F, viol = self._objectives_and_violation(means, len(archs))
            for a in archs:
                if a.key() not in known:
                    pool.setdefault(a.key(), a)
            return archs, F, viol, stds

        last: dict[str, np.ndarray] = {}

        def objectives_fn(idx: np.ndarray) -> np.ndarray:
            _, F, viol, _ = score(idx)
            last["idx"], last["viol"] = idx, viol
            return F

        def violation_fn(idx: np.ndarray) -> np.ndarray:
            return last["viol"] if last.get("idx") is idx else score(idx)[2]

        from nasforge.search.nsga2 import NSGA2

        evolution = NSGA2(space, objectives=self.objectives, constraints=self.constraints,
                          seed=int(self.rng.integers(2**31)),
                          options={"population": o.population, "mutation_prob": o.mutation_prob})
        evolution.optimize(objectives_fn, o.generations, violation_fn=violation_fn, initial=pop_idx)
        cands = list(pool.values())
        if not cands:
            return self._random(n, known)
        means, stds = self.predict_metrics(cands)
        Fp, vp = self._objectives_and_violation(means, len(cands))
        n_unc = int(round(n * o.uncertain_fraction)) if self._predictors or self._latency else 0
        n_prom = n - n_unc
        order = _order(Fp, vp)
        chosen = list(order[:n_prom])
        rest = order[n_prom:]
        if n_unc and rest.size:
            spread = np.zeros(len(cands))
            for metric in self.learned:
                scale = float(np.std(means[metric])) or 1.0
                spread += stds[metric] / scale
            # most uncertain among the feasible-looking rest (predicted Pareto rank in the better half)
            rest = rest[: max(n_unc, rest.size // 2)]
            chosen += list(rest[np.argsort(-spread[rest], kind="stable")[:n_unc]])
        out = [cands[i] for i in chosen]
        if len(out) < n:
            out += self._random(n - len(out), known | {a.key() for a in out})
        return out

    def _initial_population(self, size: int) -> np.ndarray:
        """The real Pareto front (index rows), topped up with random archs."""
        done = [(a, m) for a, m in self.history if m is not None]
        rows: list[np.ndarray] = []
        if done:
            F, viol = self._objectives_and_violation(
                {k: np.array([m.get(k, np.nan) for _, m in done]) for k in self._metrics_needed()}, len(done))
            F = np.where(np.isfinite(F), F, np.inf)
            for i in _order(F, viol)[: size // 2]:
                rows.append(self.space.to_indices(done[i][0]))
        fill = self.space.sample_indices(size - len(rows), self.rng)
        return np.concatenate([np.array(rows, dtype=np.int64).reshape(-1, len(self.space.cardinalities)), fill])

    def _metrics_needed(self) -> set[str]:
        return {ob.metric for ob in self.objectives} | {c.metric for c in self.constraints}

    def tell(self, archs: Sequence[Arch], results: Sequence[EvalResult]) -> None:
        new: list[tuple[Arch, dict[str, float]]] = []
        for a, r in zip(archs, results, strict=True):
            metrics = {k: float(v) for k, v in r.metrics.items()} if r.ok else None
            self.history.append((a, metrics))
            self._asked.discard(a.key())
            if metrics is not None:
                new.append((a, metrics))
        self._report = self._score_before_refit(new)
        self._check_device(results)
        self._dirty = True
        self._refit()

    def _check_device(self, results: Sequence[EvalResult]) -> None:
        """Compare the latency table's device profile id with the one the results were timed on."""
        if not self._latency:
            return
        ids = {str(r.device["id"]) for r in results if r.ok and r.device and "id" in r.device}
        if not ids:
            return
        table_id = next(iter(self._latency.values())).lut.device_id
        match = float(table_id in ids)
        if not match and self._device_match != 0.0:
            log.warning("latency table was built on device profile %s but results were timed on %s; rebuild it "
                        "with `nasforge profile-device` on the workers' device with the same evaluation.latency "
                        "settings (threads, batch size, statistic, reference)", table_id, ", ".join(sorted(ids)))
        self._device_match = match
        self._report["latency_table_device_match"] = match

    def _score_before_refit(self, new: Sequence[tuple[Arch, dict[str, float]]]) -> dict[str, float]:
        out: dict[str, float] = {}
        if not new or not (self._predictors or self._latency):
            return out
        means, _ = self.predict_metrics([a for a, _ in new])
        for metric in self.learned:
            if metric not in means:
                continue
            truth = np.array([m.get(metric, np.nan) for _, m in new])
            ok = np.isfinite(truth)
            if ok.sum() < 2:
                continue
            self._pooled.setdefault(metric, []).extend(
                (float(t), float(p)) for t, p in zip(truth[ok], means[metric][ok], strict=True))
            out[f"{metric}_kendall_tau"] = kendall_tau(truth[ok], means[metric][ok])
            out[f"{metric}_spearman_rho"] = spearman_rho(truth[ok], means[metric][ok])
            out[f"{metric}_rmse"] = rmse(truth[ok], means[metric][ok])
            out[f"{metric}_n"] = float(ok.sum())
            if metric in self._latency:
                rel = np.abs(means[metric][ok] / truth[ok] - 1)
                out[f"{metric}_within_10pct"] = float(np.mean(rel <= 0.10))
        return out

    def report(self) -> dict[str, float]:
        """Predictor ranking quality on the newest told results, measured before refitting on them,
        and (``job_*``) over every candidate of the job so far, each predicted before it was measured."""
        out = dict(self._report)
        for metric, pairs in self._pooled.items():
            if len(pairs) < 2:
                continue
            truth, pred = np.array(pairs).T
            out[f"job_{metric}_kendall_tau"] = kendall_tau(truth, pred)
            out[f"job_{metric}_rmse"] = rmse(truth, pred)
            out[f"job_{metric}_n"] = float(len(pairs))
            if metric in self._latency:
                out[f"job_{metric}_within_10pct"] = float(np.mean(np.abs(pred / truth - 1) <= 0.10))
        return out

    def summary(self) -> str:
        """The predictors' quality over the job, one line for the job's summary ("" before any)."""
        rep = self.report()
        parts = []
        for metric in self.learned:
            n = rep.get(f"job_{metric}_n")
            if not n:
                continue
            text = f"{metric} Kendall tau {rep[f'job_{metric}_kendall_tau']:.2f}, RMSE {rep[f'job_{metric}_rmse']:.3g}"
            if f"job_{metric}_within_10pct" in rep:
                text += f", within 10% for {rep[f'job_{metric}_within_10pct']:.0%}"
            parts.append(text + f" ({int(n)} candidates)")
        if not parts:
            return ""
        return "predictors, each candidate predicted before it was measured: " + "; ".join(parts)

    # ---- state --------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {
            "history": [{"arch": a.to_dict(), "metrics": m} for a, m in self.history],
            "asked": sorted(self._asked),
            "report": self._report,
            "pooled": self._pooled,
        }

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self.history = [(Arch.from_dict(h["arch"]), h["metrics"]) for h in state.get("history", [])]
        self._asked = set(state.get("asked", []))
        self._report = dict(state.get("report", {}))
        self._pooled = {k: [(float(t), float(p)) for t, p in v] for k, v in state.get("pooled", {}).items()}
        self._predictors = {}
        self._dirty = True  # predictors are refit (deterministically, same seed) from the history
