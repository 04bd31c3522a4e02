"""What is known about a job, read from the store and the job folder, for the commands to show.

Nothing here prints: :mod:`nasforge.console` renders these rows and notes for a terminal, and
``--json`` prints them as they are. Notes are plain one-paragraph strings.
"""

from __future__ import annotations

import json
from typing import Any

from nasforge.core.errors import NasforgeError


def fmt(v: Any) -> str:
    """A metric value as tables and notes show it: 4 decimals without trailing zeros, or 3 significant
    digits for very large and very small values."""
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4f}".rstrip("0").rstrip(".")
    return str(v)


def uniform_note(spec: Any, done: list[Any]) -> str | None:
    """For a compression job: the best allocation found beside the best *uniform* one (every group
    at the same bits / sparsity) within the constraints, by the first objective; what the search
    bought over plain uniform quantization. None when no uniform allocation within them was scored,
    or when no constraint sets a budget (on model_bytes, avg_bits, sparsity, bops or params)."""
    import math

    from nasforge.spaces.compression import BUDGET_METRICS, uniform_levels

    if spec.space.name != "compression" or not spec.objectives:
        return None
    constraints, first = spec.constraint_list(), spec.objective_list()[0]
    if not any(c.metric in BUDGET_METRICS for c in constraints):
        return None  # no budget: the best by distortion is simply the largest allocation
    ok = [c for c in done if all(k.satisfied(c.metrics) for k in constraints)
          and math.isfinite(float(c.metrics.get(first.metric, math.nan)))]
    sign = 1.0 if first.direction.value == "minimize" else -1.0
    uniform = [(c, lv) for c in ok if (lv := uniform_levels(c.arch)) is not None]
    if not uniform:
        return None
    base, levels = min(uniform, key=lambda t: (sign * float(t[0].metrics[first.metric]), t[0].id))
    best = min(ok, key=lambda c: (sign * float(c.metrics[first.metric]), c.id))
    names = [o.metric for o in spec.objectives]

    def figures(c: Any) -> str:
        return ", ".join(f"{m}={fmt(float(c.metrics[m]))}" for m in names if m in c.metrics)

    level = ", ".join(f"{k} {fmt(float(v))}" for k, v in levels.items())
    # evopress starts from, and dp / ilp / closed_form (option reference) ask, the uniform allocation
    # that uses the most of the budget; other strategies meet uniform allocations only by chance
    from nasforge.search import STRATEGIES

    name = spec.strategy.name
    asked = STRATEGIES.get(name).asks_uniform_reference(spec.strategy.options or {})
    what = "uniform allocation within the constraints" if asked else \
        "best uniform allocation the search happened to evaluate within the constraints"
    text = f"{what} ({level} everywhere, candidate {base.id}): {figures(base)}"
    if best.id == base.id:
        return text + f"; no mixed allocation beat it on {first.metric}"
    a, b = float(base.metrics[first.metric]), float(best.metrics[first.metric])
    times = f"{a / b:,.0f}" if b > 0 and a / b >= 100 else f"{a / b:.3g}" if b > 0 else ""
    ratio = "" if sign < 0 or b <= 0 else f" ({first.metric} {times}x lower)"
    text += f"; best found (candidate {best.id}): {figures(best)}{ratio}"
    if not asked:
        those = [n for n in STRATEGIES.names() if STRATEGIES.get(n).asks_uniform_reference({})]
        text += (f"; strategy {name!r} does not ask for the uniform allocation that uses the most of the budget "
                 f"({', '.join(those[:-1])} and {those[-1]} do)")
    return text


def no_feasible_note(spec: Any, store: Any, job_id: str) -> str:
    """Why a job with done candidates has no Pareto front: none meets the constraints. Names each
    constraint with the closest value any candidate reached (an empty table said nothing)."""
    from nasforge.core.types import CandidateStatus

    done = store.get_candidates(job_id, status=CandidateStatus.DONE)
    constraints = spec.constraint_list()
    if any(all(k.satisfied(c.metrics) for k in constraints) for c in done):  # feasible, yet no front
        import math

        missing = sorted({o.metric for o in spec.objectives for c in done
                          if not math.isfinite(float(c.metrics.get(o.metric, math.nan)))})
        return (f"no Pareto front: the done candidates that meet the constraints lack a finite value of "
                f"{', '.join(missing) or 'an objective'}; `nasforge results {job_id}` lists every candidate")
    from nasforge.export import limit_report

    return (f"no Pareto front: none of the {len(done)} done candidates meets every constraint ("
            + limit_report(done, constraints, fmt) + "). Loosen them" + (" or train the supernet longer" if spec.supernet else "")
            + f"; `nasforge results {job_id}` lists every candidate")


def job_row(job: Any, store: Any) -> dict[str, Any]:
    from nasforge.compose import driver_process, last_activity

    counts = dict(job.counts)
    budget = (job.spec.get("budget") or {}).get("evaluations")
    evaluated = counts.get("done", 0) + counts.get("failed", 0)
    state, error, duration = job.state.value, job.error, job.duration_s
    if state in ("created", "training", "running"):
        where, pid = driver_process(job.id)
        if where == "gone":  # killed -9, out of memory, a reboot: nothing recorded the end
            state = "interrupted"
            error = (f"its driver (process {pid} on this machine) ended without recording the job's end; "
                     f"continue with: nasforge resume {job.id}")
            # the row says running, so its duration would count on: the dead run ends at its last activity
            duration = None if job.run_s is None or job.active_since is None else \
                job.run_s + max(0.0, (last_activity(store, job) - job.active_since).total_seconds())
    return {
        "job_id": job.id, "name": job.name, "state": state, "error": error,
        "evaluated": evaluated, "budget": budget, "counts": counts,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "duration_s": duration,
        "training": training_progress(job.id) if state == "training" else unfinished_training(job.id, evaluated),
    }


def unfinished_training(job_id: str, evaluated: int) -> dict[str, Any] | None:
    """The training progress of a job that stopped (interrupted, failed, cancelled) before its
    supernet was trained; its 0/N evaluated said nothing of the epochs `resume` keeps."""
    t = training_progress(job_id) if evaluated == 0 else None
    if t and t.get("epochs") and (t.get("epoch") or 0) < t["epochs"]:
        return t
    return None


def training_progress(job_id: str) -> dict[str, Any] | None:
    """The last epoch a training supernet job finished ({"epoch", "epochs", "metrics"}), if any."""
    from nasforge.core.paths import SUPERNET_DIR, TRAINING_PROGRESS_FILE, home

    try:
        data = json.loads((home() / "jobs" / job_id / SUPERNET_DIR / TRAINING_PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def job_status(store: Any, job_id: str) -> dict[str, Any]:
    """``nasforge status JOB``: the job's row (:func:`job_row`) with the strategy's round, the best
    value of each objective over the done candidates within the constraints (what the submit
    progress line shows), the last failure, and the compression job's uniform-allocation note."""
    from nasforge.core.spec import JobSpec
    from nasforge.core.types import CandidateStatus, best_per_objective

    job = store.get_job(job_id)
    row = job_row(job, store)
    ckpt = store.load_checkpoint(job.id)
    row["round"] = ckpt[0] if ckpt else 0
    done = store.get_candidates(job.id, status=CandidateStatus.DONE)
    spec = JobSpec.model_validate(dict(job.spec))
    row["best"] = best_per_objective((c.metrics for c in done), spec.objective_list(), spec.constraint_list())
    row["done_candidates"] = len(done)
    # why candidates fail, without digging through the results
    failed = store.get_candidates(job.id, status=CandidateStatus.FAILED) if row["counts"].get("failed") else []
    last = max(failed, key=lambda x: x.seq, default=None)
    row["last_failure"] = {"candidate_id": last.id, "error": last.error} if last is not None and last.error else None
    row["uniform_note"] = uniform_note(spec, done)
    return row


def parse_limits(texts: list[str] | None, flag: str = "--where") -> list[Any]:
    """``--where 'accuracy >= 0.95'`` (repeatable): limits in the job file's constraint grammar."""
    from pydantic import ValidationError

    from nasforge.core.spec import ConstraintSpec

    limits = []
    for text in texts or []:
        try:
            limits.append(ConstraintSpec.model_validate(text, context={"flags": True}).to_constraint())
        except ValidationError as e:
            why = e.errors()[0]["msg"].removeprefix("Value error, ")
            if why.endswith("write one per constraint"):
                why = why.removesuffix("write one per constraint") + f"repeat {flag}, once per limit"
            raise NasforgeError(f"{flag} {text!r}: {why}") from None
    return limits


def select_candidates(store: Any, job_id: str, *, pareto: bool = False, where: list[Any] | None = None,
                      sort: str | None = None) -> tuple[list[Any], str | None]:
    """``nasforge results``: the job's candidates, only the Pareto front's with ``pareto``, only the
    done ones within every ``where`` limit, best first by ``sort`` (its objective's direction, else
    the metric's kind; candidates without it last). Returns them and, when ``where`` left none, why."""
    store.get_job(job_id)
    cands = store.get_candidates(job_id)
    if pareto:
        cands = [c for c in cands if c.pareto]
    note = None
    if where:
        from nasforge.core.types import CandidateStatus
        from nasforge.export import meeting, none_meets

        done = [c for c in cands if c.status == CandidateStatus.DONE]
        cands = meeting(done, where)
        if not cands:
            note = none_meets(done, where, "done candidates" + (" on the Pareto front" if pareto else ""))
    if sort:
        from nasforge.core.spec import JobSpec, did_you_mean
        from nasforge.core.types import Direction
        from nasforge.export import metric_direction

        sign = -1.0 if metric_direction(JobSpec.model_validate(dict(store.get_job(job_id).spec)),
                                         sort) == Direction.MAXIMIZE else 1.0
        have = [c for c in cands if sort in c.metrics]
        if cands and not have:
            names = sorted({m for c in cands for m in c.metrics})
            raise NasforgeError(f"results --sort {sort}: no candidate of job {job_id} has it"
                                f"{did_you_mean(sort, names)}; they have: {', '.join(names)}")
        cands = sorted(have, key=lambda c: (sign * float(c.metrics[sort]), c.id)) + \
            [c for c in cands if sort not in c.metrics]  # best first; failed ones last
    return cands, note
