"""SearchDriver: the one loop every job runs.

ask -> record pending -> evaluate -> record -> track -> tell -> checkpoint, until the budget is
spent, the strategy has nothing more to ask, or the job is cancelled.

Exactly-once and resume: candidates are keyed by ``Arch.key()`` per job. A strategy that asks an
arch already done (after a resume, or a duplicate proposal) gets the stored result back without a
new evaluation. The strategy is checkpointed after every round, so ``resume`` restores it and
re-asks the same round; its done candidates are reused and only the rest is evaluated. Results
are stored while a round runs (every ``RESULT_FLUSH_S``, and all of them when it is interrupted),
so a resume re-evaluates little of an unfinished round. With
deterministic objectives the resumed job ends with the same Pareto front as an uninterrupted one.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nasforge.core.interfaces import Evaluator, Store, Tracker
from nasforge.core.types import (
    Arch,
    Candidate,
    CandidateStatus,
    Constraint,
    EvalResult,
    Job,
    JobState,
    Objective,
    best_per_objective,
)
from nasforge.search.base import Strategy
from nasforge.search.pareto import constrained_pareto_mask
from nasforge.spaces.base import SearchSpace

#: rounds in a row without a new evaluation after which the strategy counts as exhausted
MAX_IDLE_ROUNDS = 5
#: evaluations that all failed, with none done yet, after which the job stops as failed: the cause
#: is in the setup (model, data, options), not in the candidates, and the rest of the budget would
#: fail the same way
FAILED_BEFORE_ANY_DONE = 10
#: the end of the error of a candidate skipped over an analytic cost limit (never evaluated)
NOT_EVALUATED = "; not evaluated"
#: seconds between checks of the store for a cancellation
CANCEL_CHECK_S = 1.0
#: results of a round are handed to the store at least this often while the round runs (and all of
#: them when it is interrupted), so a driver killed mid-round loses at most this much finished work
RESULT_FLUSH_S = 1.0


class _StoreWriter:
    """Runs store and tracker writes on one background thread, in submission order.

    The driver hands writes over and goes on dispatching work; ``close`` waits for every write and
    re-raises the first error. A write that failed stops the ones after it (their order matters:
    a checkpoint must never land before the results it counts).
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="nasforge-store-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                fn, args = item
                try:
                    fn(*args)
                except BaseException as e:  # noqa: BLE001 - handed to the driver thread
                    self._error = e

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._error is not None:
            self.close()
        self._queue.put((fn, args))

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            err, self._error = self._error, None
            raise err


@dataclass(frozen=True)
class Progress:
    """What a progress display needs after each result."""

    evaluated: int
    budget: int | None
    failed: int
    round: int
    best: dict[str, float]
    elapsed_s: float


@dataclass
class DriverSummary:
    job_id: str
    state: JobState
    rounds: int
    evaluated: int
    failed: int
    reused: int
    pareto_keys: list[str] = field(default_factory=list)
    stop_reason: str = ""
    #: why a job whose every evaluation failed ended FAILED (None otherwise)
    error: str | None = None
    #: the strategy's own line for the summary (``Strategy.summary``), "" for none
    strategy_note: str = ""


def objective_matrix(cands: Sequence[Candidate], objectives: Sequence[Objective]) -> np.ndarray:
    """(n, m) matrix to minimize; NaN-free (missing metrics become +inf)."""
    out = np.full((len(cands), len(objectives)), np.inf)
    for i, c in enumerate(cands):
        for j, o in enumerate(objectives):
            v = c.metrics.get(o.metric)
            if v is not None and not math.isnan(float(v)):
                out[i, j] = o.sign() * float(v)
    return out


def pareto_front(
    cands: Sequence[Candidate], objectives: Sequence[Objective], constraints: Sequence[Constraint]
) -> list[Candidate]:
    """Done, feasible candidates that no other feasible candidate dominates."""
    done = [c for c in cands if c.status == CandidateStatus.DONE]
    if not done:
        return []
    F = objective_matrix(done, objectives)
    viol = np.array([sum(k.violation(c.metrics) for k in constraints) for c in done])
    finite = np.all(np.isfinite(F), axis=1)
    feasible = (viol == 0) & finite
    if not feasible.any():
        return []
    mask = constrained_pareto_mask(F[feasible], viol[feasible])
    chosen = [c for c, keep in zip([c for c, f in zip(done, feasible, strict=True) if f], mask, strict=True) if keep]
    return chosen


class _ResultBatch:
    """A round's results on their way to the store: handed over as they arrive, at most every
    ``RESULT_FLUSH_S`` (one write per hand-over, not per result), and the rest on :meth:`flush`."""

    def __init__(self, submit: Callable[[list[EvalResult]], None]):
        self._submit = submit
        self._arrived: list[EvalResult] = []
        self._handed: set[str] = set()
        self._last = time.monotonic()

    def add(self, result: EvalResult) -> None:
        self._arrived.append(result)
        if time.monotonic() - self._last >= RESULT_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if self._arrived:
            self._handed.update(r.arch_key for r in self._arrived)
            self._submit(list(self._arrived))
            self._arrived.clear()

    def hand(self, results: Sequence[EvalResult]) -> None:
        """The round's results as the evaluator returned them: those not handed over yet (an
        evaluator need not report each one as it finishes)."""
        self.flush()
        rest = [r for r in results if r.arch_key not in self._handed]
        if rest:
            self._handed.update(r.arch_key for r in rest)
            self._submit(rest)


class SearchDriver:
    """Runs one job. All collaborators are passed in (see ``nasforge.compose``)."""

    def __init__(
        self,
        *,
        job: Job,
        space: SearchSpace,
        strategy: Strategy,
        evaluator: Evaluator,
        store: Store,
        tracker: Tracker,
        objectives: Sequence[Objective],
        constraints: Sequence[Constraint] = (),
        max_evaluations: int | None,
        wall_time_s: float | None = None,
        batch_size: int = 20,
        on_progress: Callable[[Progress], None] | None = None,
        cost_prefilter: bool = True,
    ):
        self.job = job
        self.space = space
        self.strategy = strategy
        self.evaluator = evaluator
        self.store = store
        self.tracker = tracker
        self.objectives = list(objectives)
        self.constraints = list(constraints)
        self.max_evaluations = max_evaluations
        self.wall_time_s = wall_time_s
        self.batch_size = batch_size
        self.on_progress = on_progress
        self.cost_prefilter = cost_prefilter

    # ---- helpers --------------------------------------------------------------------------
    def _cost_violation(self, arch: Arch) -> str | None:
        """A reason to skip evaluation when a constraint on an analytic cost already fails."""
        if not self.cost_prefilter or not self.constraints:
            return None
        cost_metrics = {"flops", "params"}
        relevant = [c for c in self.constraints if c.metric in cost_metrics]
        if not relevant:
            return None
        cost = self.space.cost(arch)
        for c in relevant:
            if c.metric in cost and not c.satisfied(cost):
                return f"violates constraint {c} ({c.metric}={cost[c.metric]:.6g}){NOT_EVALUATED}"
        return None

    def _best(self, results: Sequence[EvalResult], best: dict[str, float]) -> dict[str, float]:
        return best_per_objective((r.metrics for r in results if r.ok), self.objectives, self.constraints, best)

    # ---- the loop -------------------------------------------------------------------------
    def run(self) -> DriverSummary:
        job_id = self.job.id
        t_start = time.monotonic()
        step = 0
        elapsed_before = 0.0
        ckpt = self.store.load_checkpoint(job_id)
        if ckpt is not None:
            step, state = ckpt
            self.strategy.load_state_dict(state["strategy"])
            elapsed_before = float(state.get("elapsed_s", 0.0))
            committed = int(state.get("committed", 0))
        else:
            committed = 0
        # What the job already knows (after a resume): reused, never evaluated again.
        known: dict[str, EvalResult] = {
            c.key: EvalResult(c.key, c.metrics, c.device, c.worker, c.duration_s or 0.0, c.error)
            for c in self.store.get_candidates(job_id)
            if c.status in (CandidateStatus.DONE, CandidateStatus.FAILED)
        }
        best = self._best(list(known.values()), {})
        evaluated = len(known)
        failed = sum(not r.ok for r in known.values())
        reused = 0
        idle_rounds = 0
        summary = DriverSummary(job_id, JobState.RUNNING, step, evaluated, failed, 0)
        writer = _StoreWriter()
        cancelled = threading.Event()
        last_cancel_check = -math.inf

        def elapsed() -> float:
            return elapsed_before + (time.monotonic() - t_start)

        def check_cancelled() -> None:
            if self.store.get_job(job_id).state == JobState.CANCELLED:
                cancelled.set()

        def record(results: list[EvalResult]) -> None:
            self.tracker.log_candidates(job_id, self.store.record_results(job_id, results))

        # ``committed`` counts evaluations of finished rounds only: round sizes derive from it, so a
        # resumed job asks exactly the rounds an uninterrupted one would have asked. Store writes go
        # through ``writer`` (one background thread, in order) so workers do not wait on them.
        try:
            while True:
                if self.max_evaluations is not None and committed >= self.max_evaluations:
                    summary.stop_reason = "evaluation budget spent"
                    break
                if self.wall_time_s is not None and elapsed() >= self.wall_time_s:
                    summary.stop_reason = "wall-time budget spent"
                    break
                if time.monotonic() - last_cancel_check >= CANCEL_CHECK_S:
                    last_cancel_check = time.monotonic()
                    writer.submit(check_cancelled)
                if cancelled.is_set():
                    summary.state = JobState.CANCELLED
                    summary.stop_reason = "cancelled"
                    break
                n = self.batch_size
                if self.max_evaluations is not None:
                    n = min(n, self.max_evaluations - committed)
                archs = [self.space.validate(a) for a in self.strategy.ask(n)]
                if not archs:
                    why = getattr(self.strategy, "finished_why", lambda: "")()
                    summary.stop_reason = "strategy has nothing more to ask" + (f": {why}" if why else "")
                    break
                writer.submit(self.store.add_candidates, job_id, archs, step)
                todo: list[Arch] = []
                skipped: list[EvalResult] = []
                planned: set[str] = set()
                for arch in archs:
                    key = arch.key()
                    if key in planned:
                        continue
                    planned.add(key)
                    if key in known:
                        reused += 1
                        continue
                    reason = self._cost_violation(arch)
                    if reason is not None:
                        skipped.append(EvalResult(key, self.space.cost(arch), error=reason))
                    else:
                        todo.append(arch)
                if skipped:
                    writer.submit(record, skipped)
                    known.update((r.arch_key, r) for r in skipped)
                    evaluated += len(skipped)
                    failed += len(skipped)
                if todo:
                    idle_rounds = 0
                    writer.submit(self.store.mark_running, job_id, [a.key() for a in todo])

                    batch = _ResultBatch(lambda rs: writer.submit(record, rs))

                    def progress(res: EvalResult, _step: int = step, _batch: _ResultBatch = batch) -> None:
                        nonlocal evaluated, failed
                        evaluated += 1
                        failed += 0 if res.ok else 1
                        self._best([res], best)
                        _batch.add(res)
                        if self.on_progress is not None:
                            self.on_progress(Progress(evaluated, self.max_evaluations, failed, _step, dict(best), elapsed()))

                    try:
                        results = self.evaluator.evaluate(todo, on_result=progress)
                    finally:  # Ctrl-C, SIGTERM, a worker error: what finished is stored all the same
                        batch.flush()
                    batch.hand(results)
                    known.update((r.arch_key, r) for r in results)
                elif not skipped:
                    idle_rounds += 1
                    if idle_rounds >= MAX_IDLE_ROUNDS:
                        summary.stop_reason = f"strategy proposed only known candidates {MAX_IDLE_ROUNDS} rounds in a row"
                        break
                self.strategy.tell(archs, [known[a.key()] for a in archs])
                step += 1
                committed = evaluated = len(known)
                failed = sum(not r.ok for r in known.values())
                writer.submit(self.store.save_checkpoint, job_id, step,
                              {"strategy": self.strategy.state_dict(), "elapsed_s": elapsed(), "committed": committed})
                round_metrics: dict[str, float] = {"evaluated": float(evaluated), "failed": float(failed)}
                round_metrics.update({f"best_{k}": v for k, v in best.items()})
                report = getattr(self.strategy, "report", None)
                if callable(report):
                    round_metrics.update({f"strategy_{k}": float(v) for k, v in report().items()})
                writer.submit(self.tracker.log_progress, job_id, step, round_metrics)
                if self.on_progress is not None:
                    self.on_progress(Progress(evaluated, self.max_evaluations, failed, step, dict(best), elapsed()))
                if _all_failed(known.values()) >= FAILED_BEFORE_ANY_DONE:
                    break
        finally:
            writer.close()  # every queued write lands (or its error is raised) before we go on

        all_cands = self.store.get_candidates(job_id)
        front = pareto_front(all_cands, self.objectives, self.constraints)
        self.store.set_pareto(job_id, [c.key for c in front])
        summary.rounds = step
        summary.evaluated = evaluated
        summary.failed = failed
        summary.reused = reused
        summary.pareto_keys = [c.key for c in front]
        summary.strategy_note = getattr(self.strategy, "summary", lambda: "")()
        errors = _all_failed(known.values())
        if errors and summary.state == JobState.RUNNING:
            last = next(r for r in reversed(list(known.values())) if not r.ok and not _skipped(r))
            last_line = (str(last.error or "").strip().splitlines() or ["?"])[-1][:300]
            summary.state = JobState.FAILED
            summary.stop_reason = f"all {errors} evaluations failed"
            summary.error = (f"all {errors} evaluations failed, none done (the last: {last_line}); the cause is "
                             "in the setup, not in the candidates: fix it and submit the job again")
        if summary.state == JobState.RUNNING:
            summary.state = JobState.DONE
        return summary


def _all_failed(results: Iterable[EvalResult]) -> int:
    """How many evaluations failed when none succeeded (skipped over a cost limit do not count); 0 when any did."""
    n = 0
    for r in results:
        if r.ok:
            return 0
        n += not _skipped(r)
    return n


def _skipped(r: EvalResult) -> bool:
    return bool(r.error) and str(r.error).endswith(NOT_EVALUATED)


def summary_dict(summary: DriverSummary, counts: dict[str, int], pareto_ids: list[int]) -> dict[str, Any]:
    """The one JSON object ``submit --json`` prints."""
    return {
        "job_id": summary.job_id,
        "state": summary.state.value,
        "counts": counts,
        "rounds": summary.rounds,
        "pareto": pareto_ids,
        "stop_reason": summary.stop_reason,
        "error": summary.error,
        "strategy_note": summary.strategy_note or None,
    }
