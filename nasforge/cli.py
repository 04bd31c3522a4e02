"""``nasforge`` command line. Each command parses its arguments, then calls one function.

User errors (NasforgeError) print one line ``nasforge: error: ...`` and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nasforge.core.errors import NasforgeError

# ------------------------------------------------------------------------------------------------
# output helpers


def _console() -> Any:
    from rich.console import Console

    # not a terminal (a pipe, a CI log): wide enough that the table does not wrap
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4f}".rstrip("0").rstrip(".")
    return str(v)


#: metric -> (column title, formatter) for tables
SHOWN_METRICS: dict[str, tuple[str, Any]] = {
    "accuracy": ("acc %", lambda v: f"{100 * v:.2f}"),
    "perplexity": ("ppl", lambda v: f"{v:.3f}"),
    "latency_ms": ("lat ms", lambda v: f"{v:.3f}"),
    "latency_p90_ms": ("lat p90 ms", lambda v: f"{v:.3f}"),
    "flops": ("MFLOPs", lambda v: f"{v / 1e6:.2f}"),
    "params": ("params k", lambda v: f"{v / 1e3:.1f}"),
    "model_bytes": ("size KB", lambda v: f"{v / 1024:.1f}"),
    "peak_memory_mb": ("mem MB", lambda v: f"{v:.2f}"),
    "kl": ("KL", lambda v: f"{v:.4g}"),
    "avg_bits": ("avg bits", lambda v: f"{v:.2f}"),
    "sparsity": ("sparsity", lambda v: f"{v:.2f}"),
}


def _first_line(text: str | None, width: int = 0) -> str:
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    return line if not width or len(line) <= width else line[: width - 3] + "..."


def _candidate_table(cands: Sequence[Any], title: str) -> Any:
    from rich.table import Table

    metrics = [m for m in SHOWN_METRICS if any(m in c.metrics for c in cands)]
    # per device class columns (latency_ms@a100, ...) right after their base metric's
    per_class = sorted({k for c in cands for k in c.metrics if "@" in k and k.partition("@")[0] in SHOWN_METRICS})
    for k in per_class:
        base = k.partition("@")[0]
        at = max((i for i, m in enumerate(metrics) if m.partition("@")[0] == base), default=len(metrics) - 1)
        metrics.insert(at + 1, k)

    def shown(m: str) -> tuple[str, Any]:
        base, _, cls = m.partition("@")
        head, fmt = SHOWN_METRICS[base]
        return (f"{head} @{cls}" if cls else head), fmt

    table = Table(title=title)
    table.add_column("id", justify="right")
    table.add_column("key")
    table.add_column("status")
    for m in metrics:
        table.add_column(shown(m)[0], justify="right")
    errors = any(c.error for c in cands)  # why a candidate failed (its whole text: --format json)
    if errors:
        table.add_column("error", max_width=60, overflow="ellipsis", no_wrap=True)
    for c in cands:
        cells = [shown(m)[1](float(c.metrics[m])) if m in c.metrics else "" for m in metrics]
        if errors:
            cells.append(_first_line(c.error))
        table.add_row(str(c.id), c.key[:10], c.status.value + (" *" if c.pareto else ""), *cells)
    if any(c.pareto for c in cands):
        table.caption = "* on the Pareto front"
    return table


def _best_text(best: dict[str, float]) -> str:
    """'best: accuracy=0.95', or with several objectives 'best of each: accuracy=0.958, latency_ms=0.49'
    (each the best of any feasible candidate so far, not one candidate's figures)."""
    if not best:
        return "best: - (none within the constraints yet)"
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in best.items())
    return f"best of each: {shown}" if len(best) > 1 else f"best: {shown}"


class ProgressBar:
    """Rich progress bar: evaluated/budget, best so far, ETA."""

    def __init__(self, total: int | None, enabled: bool):
        self.enabled = enabled
        self.total = total
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[best]}"), TimeRemainingColumn())
            self._bar.__enter__()
            self._task = self._bar.add_task("search", total=self.total, best="")
        return self

    def __call__(self, p: Any) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=min(p.evaluated, self.total or p.evaluated), best=_best_text(p.best))

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


# ------------------------------------------------------------------------------------------------
# commands


def cmd_validate(args: argparse.Namespace) -> int:
    from nasforge.compose import load_and_validate

    spec, space = load_and_validate(args.job, address=args.address)
    resolved = spec.to_dict()
    print(json.dumps(resolved, indent=2) if args.json else _yaml_dump(resolved))
    if not args.json:
        print(f"# ok: space {space.id}@{space.version} with {len(space.choices())} choices; "
              f"strategy {spec.strategy.name}; budget {spec.budget.evaluations} evaluations", file=sys.stderr)
    return 0


def _yaml_dump(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


#: set in the environment of a --detach driver, whose output already goes to driver.log
DRIVER_LOG_ENV = "NASFORGE_OUTPUT_IS_DRIVER_LOG"


class _DriverLog:
    """A foreground run's lines (progress, notes, the Pareto table, the end line) also go to the
    job's ``driver.log``, appended, so ``nasforge logs JOB`` shows them later as it does for a
    --detach job (whose output is that file already: then this writes nothing)."""

    def __init__(self) -> None:
        self.file: Any = None

    def open(self, job: Any) -> None:
        from nasforge.core.paths import job_dir

        if os.environ.get(DRIVER_LOG_ENV) != "1" and self.file is None:
            self.file = open(job_dir(job.id) / "driver.log", "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def line(self, text: str) -> None:
        if self.file is not None:
            self.file.write(text + "\n")
            self.file.flush()

    def render(self, *renderables: Any) -> None:
        """Rich renderables (the Pareto table) as plain text."""
        if self.file is not None:
            from rich.console import Console

            console = Console(file=self.file, width=160, color_system=None, highlight=False)
            for r in renderables:
                console.print(r)
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _run(args: argparse.Namespace, spec: Any, store: Any, job: Any = None) -> int:
    log = _DriverLog()
    try:
        return _run_logged(args, spec, store, job, log)
    finally:
        log.close()


def _run_logged(args: argparse.Namespace, spec: Any, store: Any, job: Any, log: _DriverLog) -> int:
    from nasforge.compose import run_job
    from nasforge.search.driver import summary_dict

    quiet = args.json or args.quiet
    shown = (lambda s: print(s, file=sys.stderr)) if quiet else print

    def say(text: str) -> None:
        shown(text)
        log.line(text)

    show_bar = not quiet and sys.stdout.isatty()
    with ProgressBar(spec.budget.evaluations, show_bar) as bar:
        tens_shown = 0
        latest: list[Any] = [None, None]  # the last progress, the last one printed

        def line(p: Any) -> None:  # printed where no bar shows it; the log gets every one
            of = f"/{p.budget}" if p.budget else ""
            text = f"evaluated {p.evaluated}{of} (failed {p.failed}) {_best_text(p.best)}"
            if not show_bar and not quiet:
                print(text, flush=True)
            log.line(text)
            latest[1] = p

        def progress(p: Any) -> None:
            nonlocal tens_shown
            bar(p)
            latest[0] = p
            # one line each time the count passes a multiple of 10 (results arrive in chunks, and a
            # count is reported again when only pending/failed change)
            # and the last count of the budget (48/48 after 40/48), once
            step = p.evaluated // 10 if not (p.budget and p.evaluated >= p.budget) else 1 << 62
            if step > tens_shown:
                tens_shown = step
                line(p)

        try:
            result = run_job(spec, store, job=job, address=args.address, on_progress=progress, say=say, on_job=log.open)
        finally:  # where the search stopped short of a multiple of 10 (a wall-time budget, Ctrl-C)
            last, printed = latest
            if last is not None and (printed is None or printed.evaluated != last.evaluated):
                line(last)
    summary = summary_dict(result.summary, result.counts, [c.id for c in result.pareto])
    ending: list[Any] = []  # what a person reads at the end: the terminal's, and the log's
    if result.pareto:
        ending.append(_candidate_table(sorted(result.pareto, key=lambda c: c.id), f"Pareto front of {result.job.id}"))
    elif result.counts.get("done", 0):
        ending.append(_no_feasible_note(spec, store, result.job.id))
    if spec.space.name == "compression":
        from nasforge.core.types import CandidateStatus

        note = _uniform_note(spec, store.get_candidates(result.job.id, status=CandidateStatus.DONE))
        if note:
            ending.append(note)
    if result.summary.strategy_note:
        ending.append(result.summary.strategy_note)
    ending.append(f"job {result.job.id}: {result.summary.state.value} ({result.summary.stop_reason}); "
                  f"{result.counts.get('done', 0)} done, {result.counts.get('failed', 0)} failed; "
                  f"artifacts in {next(iter(result.artifacts.values())).parent if result.artifacts else '-'}")
    if result.summary.error:
        ending.append(f"nasforge: {result.summary.error}")
    log.render(*ending)
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        console = _console()
        for r in ending:
            console.print(r)
    return 0 if result.summary.state.value in ("done", "cancelled") else 1


def _uniform_note(spec: Any, done: list[Any]) -> str | None:
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
        return ", ".join(f"{m}={_fmt(float(c.metrics[m]))}" for m in names if m in c.metrics)

    level = ", ".join(f"{k} {_fmt(float(v))}" for k, v in levels.items())
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


def _no_feasible_note(spec: Any, store: Any, job_id: str) -> str:
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
            + limit_report(done, constraints, _fmt) + "). Loosen them" + (" or train the supernet longer" if spec.supernet else "")
            + f"; `nasforge results {job_id}` lists every candidate")


def cmd_submit(args: argparse.Namespace) -> int:
    from nasforge.compose import load_and_validate, open_store_for, write_driver_pid

    spec, _ = load_and_validate(args.job, address=args.address)
    if args.address and args.address.startswith(("http://", "https://")):
        from nasforge.workers.cluster import submit_to_cluster

        return submit_to_cluster(args.job, spec, address=args.address, wait=not args.detach, json_out=args.json)
    store = open_store_for(spec)
    if args.detach:
        job = store.create_job(spec.to_dict(), name=spec.name, seed=spec.seed)
        from nasforge.core.paths import job_dir

        logf = open(job_dir(job.id) / "driver.log", "ab")  # noqa: SIM115 - handed to the child
        # not --quiet: the log gets what a foreground run prints (progress lines, the Pareto table, the
        # final line), unbuffered so that `nasforge logs` shows a running job's progress
        cmd = [sys.executable, "-m", "nasforge.cli", "resume", job.id]
        if args.address:
            cmd += ["--address", args.address]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", DRIVER_LOG_ENV: "1"}
        if spec.store.url:
            env["NASFORGE_STORE_URL"] = spec.store.url
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
        # the child rewrites this with the same pid once it runs; written here too, so that `status` and
        # `logs --follow` see the driver from the first instant (and see it gone if it dies on start)
        write_driver_pid(job.id, proc.pid)
        print(json.dumps({"job_id": job.id, "state": "created"}) if args.json else job.id)
        return 0
    return _run(args, spec, store)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def cmd_resume(args: argparse.Namespace) -> int:
    from nasforge.compose import open_store_for, validate
    from nasforge.core.spec import JobSpec

    store = open_store_for(url=args.store, job_id=getattr(args, "job_id", None))
    job = store.get_job(args.job_id)
    spec = JobSpec.model_validate(dict(job.spec))
    evaluated = job.counts.get("done", 0) + job.counts.get("failed", 0)
    if args.evaluations is not None:  # a larger budget: a done job goes on where it stopped
        if args.evaluations <= evaluated:
            raise NasforgeError(f"--evaluations {args.evaluations}: job {job.id} has evaluated {evaluated} "
                                f"candidates already; give a larger total budget")
        if job.state.value == "cancelled":
            raise NasforgeError(f"job {job.id} was cancelled; it is not continued (submit the job file again)")
        if spec.budget.wall_time_s is not None:
            raise NasforgeError(f"--evaluations: job {job.id} also has a wall-time budget (budget.wall_time_s "
                                f"{spec.budget.wall_time_s:g}), which this does not extend; submit the job file "
                                "again with the budget you want")
        budget = spec.budget.model_copy(update={"evaluations": args.evaluations})
        spec = JobSpec.model_validate({**spec.to_dict(), "budget": budget.model_dump()})
        validate(spec, address=args.address)  # before the store holds the new budget
        store.set_job_spec(job.id, spec.to_dict())
    elif job.state.value in ("done", "cancelled"):
        more = (f"; to evaluate more candidates: nasforge resume {job.id} --evaluations N (a total above "
                f"{evaluated})") if job.state.value == "done" else ""
        print(f"job {job.id} is already {job.state.value}{more}")
        return 0
    return _run(args, spec, store, job=job)


def _job_row(job: Any, store: Any) -> dict[str, Any]:
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
        "training": _training_progress(job.id) if state == "training" else _unfinished_training(job.id, evaluated),
    }


def _unfinished_training(job_id: str, evaluated: int) -> dict[str, Any] | None:
    """The training progress of a job that stopped (interrupted, failed, cancelled) before its
    supernet was trained; its 0/N evaluated said nothing of the epochs `resume` keeps."""
    t = _training_progress(job_id) if evaluated == 0 else None
    if t and t.get("epochs") and (t.get("epoch") or 0) < t["epochs"]:
        return t
    return None


def _training_progress(job_id: str) -> dict[str, Any] | None:
    """The last epoch a training supernet job finished ({"epoch", "epochs", "metrics"}), if any."""
    from nasforge.core.paths import SUPERNET_DIR, TRAINING_PROGRESS_FILE, home

    try:
        data = json.loads((home() / "jobs" / job_id / SUPERNET_DIR / TRAINING_PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _training_line(t: dict[str, Any], running: bool = True) -> str:
    """'epoch 1 of 2 trained (largest_val_acc=0.71); about 15 s to go' from ``_training_progress``
    (for a job that stopped while training: where `resume` picks it up)."""
    m = t.get("metrics") or {}
    acc = m.get("largest_val_acc")
    text = f"epoch {t.get('epoch')}" + (f" of {t['epochs']}" if t.get("epochs") else "") + " trained"
    if isinstance(acc, (int, float)) and acc == acc:
        text += f" (largest_val_acc={_fmt(float(acc))})"
    secs, left = m.get("epoch_seconds"), (t.get("epochs") or 0) - (t.get("epoch") or 0)
    if not running:
        if left > 0:
            text += "; resume trains on from there"
    elif isinstance(secs, (int, float)) and left > 0:
        text += f"; about {secs * left:.0f} s to go"
    return text


def _note_other_stores(current: str, section: str, key: str, went: str, command: str) -> None:
    """Say where the jobs are that this NASFORGE_HOME submitted into other stores by their job file's
    ``section.key`` (store.url, tracking.uri), which `list` / `ui` on the default store do not show."""
    from nasforge.compose import other_stores_of_local_jobs
    from nasforge.store import redact_url

    for url, n in other_stores_of_local_jobs(current, section, key).items():
        print(f"note: {n} job{'s' if n > 1 else ''} submitted from here {went} {redact_url(url)} "
              f"(its job file's {section}.{key}): {command} '{redact_url(url)}'", file=sys.stderr)


def _note_other_job_stores(args: argparse.Namespace, store: Any) -> None:
    if not (args.store or os.environ.get("NASFORGE_STORE_URL")):
        _note_other_stores(store.url, "store", "url", "went to the store", "nasforge list --store")


def cmd_list(args: argparse.Namespace) -> int:
    from nasforge.compose import open_store_for

    store = open_store_for(url=args.store, job_id=getattr(args, "job_id", None))
    rows = [_job_row(j, store) for j in store.list_jobs()]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"no jobs in the store {store.display_url}; `nasforge submit JOB.yaml` runs one")
        _note_other_job_stores(args, store)
        return 0
    from rich.table import Table

    table = Table(title="jobs")
    for col in ("job", "state", "progress", "started", "duration"):
        table.add_column(col)
    for r in rows:
        prog = f"{r['evaluated']}/{r['budget']}" if r["budget"] else str(r["evaluated"])
        if r["training"]:
            t = r["training"]
            prog = f"epoch {t.get('epoch')}" + (f"/{t['epochs']}" if t.get("epochs") else "")
        dur = f"{r['duration_s']:.0f} s" if r["duration_s"] is not None else "-"
        table.add_row(r["job_id"], r["state"], prog, (r["started_at"] or "-")[:19], dur)
    _console().print(table)
    _note_other_job_stores(args, store)
    return 0


def _cluster_address(args: argparse.Namespace) -> str | None:
    """The Ray Jobs API address when the command targets a cluster (``--address http://...``)."""
    address = getattr(args, "address", None)
    if address and not address.startswith(("http://", "https://")):
        raise NasforgeError(f"--address {address!r}: status, logs and cancel take the Ray Jobs API address "
                            "http(s)://HEAD:8265")
    return address


def cmd_status(args: argparse.Namespace) -> int:
    from nasforge.compose import open_store_for

    address = _cluster_address(args)
    if address:
        from nasforge.workers.cluster import cluster_status

        return cluster_status(args.job_id, address=address, json_out=args.json)
    from nasforge.core.spec import JobSpec
    from nasforge.core.types import CandidateStatus, best_per_objective

    store = open_store_for(url=args.store, job_id=getattr(args, "job_id", None))
    job = store.get_job(args.job_id)
    row = _job_row(job, store)
    ckpt = store.load_checkpoint(job.id)
    row["round"] = ckpt[0] if ckpt else 0
    done = store.get_candidates(job.id, status=CandidateStatus.DONE)
    spec = JobSpec.model_validate(dict(job.spec))
    # the same summary the submit progress line shows: per objective, over children within the constraints
    best = best_per_objective((c.metrics for c in done), spec.objective_list(), spec.constraint_list())
    row["best"] = best
    # why candidates fail, without digging through the results
    failed = store.get_candidates(job.id, status=CandidateStatus.FAILED) if row["counts"].get("failed") else []
    last = max(failed, key=lambda x: x.seq, default=None)
    row["last_failure"] = {"candidate_id": last.id, "error": last.error} if last is not None and last.error else None
    if args.json:
        print(json.dumps(row))
        return 0
    c = row["counts"]
    print(f"job {job.id} ({job.name}): {row['state']}")
    if row["training"]:
        print(f"  training: {_training_line(row['training'], running=row['state'] == 'training')}")
    elif row["state"] == "training":
        print("  training: the first epoch is under way")
    of = f"/{row['budget']}" if row["budget"] else ""  # none: a wall-time budget
    print(f"  round {row['round']}; evaluated {row['evaluated']}{of}: done {c.get('done', 0)}, "
          f"pending {c.get('pending', 0) + c.get('running', 0)}, failed {c.get('failed', 0)}")
    none_feasible = f" (none of the {len(done)} done candidates meets the constraints)" if done and not best else ""
    label = "best so far, of each objective" if len(best) > 1 else "best so far"
    print(f"  {label}: " + (", ".join(f"{k}={_fmt(v)}" for k, v in best.items()) or "-" + none_feasible))
    note = _uniform_note(spec, done)
    if note:
        print(f"  {note}")
    if row["last_failure"]:
        print(f"  last failure: candidate {row['last_failure']['candidate_id']}: "
              f"{_first_line(row['last_failure']['error'], 160)}")
    if row["error"]:
        print(f"  note: {row['error']}")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from nasforge.compose import open_store_for
    from nasforge.store import export_formats

    fmt = args.format
    suffixes = {".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
    named = suffixes.get(Path(args.output).suffix.lower()) if args.output else None
    if fmt == "table" and args.output:
        raise NasforgeError("results --format table prints to the terminal; with -o FILE use --format json|csv|parquet")
    if fmt is not None and named is not None and fmt != named:  # it wrote CSV text into out.parquet
        raise NasforgeError(f"results --format {fmt} -o {args.output}: the file's name says {named}; "
                            "drop --format or name the file for the format")
    if fmt is None:  # from the output file's suffix, else the terminal table
        fmt = named if args.output else "table"
        if fmt is None:
            raise NasforgeError(f"results -o {args.output}: name a .json, .csv or .parquet file, or give "
                                "--format json|csv|parquet")
    if fmt == "parquet" and not args.output:
        raise NasforgeError("results --format parquet needs -o FILE (Parquet is binary)")
    store = open_store_for(url=args.store, job_id=getattr(args, "job_id", None))
    store.get_job(args.job_id)
    cands = store.get_candidates(args.job_id)
    if args.pareto:
        cands = [c for c in cands if c.pareto]
    where = _where(args)
    if where:
        from nasforge.core.types import CandidateStatus
        from nasforge.export import meeting, none_meets

        done = [c for c in cands if c.status == CandidateStatus.DONE]
        cands = meeting(done, where)
        if not cands:  # an empty table (or [] for a script), and why on stderr
            print("note: " + none_meets(done, where, "done candidates" + (" on the Pareto front" if args.pareto else "")),
                  file=sys.stderr)
    if args.sort:
        from nasforge.core.spec import JobSpec, did_you_mean
        from nasforge.core.types import Direction
        from nasforge.export import metric_direction

        sign = -1.0 if metric_direction(JobSpec.model_validate(dict(store.get_job(args.job_id).spec)),
                                         args.sort) == Direction.MAXIMIZE else 1.0
        have = [c for c in cands if args.sort in c.metrics]
        if cands and not have:
            names = sorted({m for c in cands for m in c.metrics})
            raise NasforgeError(f"results --sort {args.sort}: no candidate of job {args.job_id} has it"
                                f"{did_you_mean(args.sort, names)}; they have: {', '.join(names)}")
        cands = sorted(have, key=lambda c: (sign * float(c.metrics[args.sort]), c.id)) + \
            [c for c in cands if args.sort not in c.metrics]  # best first; failed ones last
    if fmt == "table":
        _console().print(_candidate_table(cands, f"candidates of {args.job_id}"))
        return 0
    if args.output:
        writer = {"json": export_formats.write_json, "csv": export_formats.write_csv,
                  "parquet": export_formats.write_parquet}[fmt]
        try:
            writer(cands, Path(args.output))
        except OSError as e:  # a folder not writable, /proc, a path that is a folder: one line
            raise NasforgeError(f"results -o {args.output}: cannot write it ({e.strerror or e}); "
                                "name a file in a folder you can write") from None
        print(f"wrote {len(cands)} candidate{'' if len(cands) == 1 else 's'} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(export_formats.to_json(cands) if fmt == "json" else export_formats.to_csv(cands))
        sys.stdout.write("\n")
    return 0


def _where(args: argparse.Namespace) -> list[Any]:
    """``--where 'accuracy >= 0.95'`` (repeatable): limits in the job file's constraint grammar."""
    from pydantic import ValidationError

    from nasforge.core.spec import ConstraintSpec

    limits = []
    for text in args.where or []:
        try:
            limits.append(ConstraintSpec.model_validate(text, context={"flags": True}).to_constraint())
        except ValidationError as e:
            why = e.errors()[0]["msg"].removeprefix("Value error, ")
            if why.endswith("write one per constraint"):
                why = why.removesuffix("write one per constraint") + "repeat --where, once per limit"
            raise NasforgeError(f"--where {text!r}: {why}") from None
    return limits


def cmd_export(args: argparse.Namespace) -> int:
    from nasforge.compose import open_store_for
    from nasforge.export import broken_constraints, export_candidate

    if (args.candidate is None) == (args.best is None):
        which = "neither was given" if args.candidate is None else "not both"
        raise NasforgeError(f"export: give a CANDIDATE (id or key) or --best METRIC ({which})")
    where = _where(args)
    store = open_store_for(url=args.store, job_id=getattr(args, "job_id", None))
    done = export_candidate(store, args.job_id, args.output, ref=args.candidate, best=args.best, where=where)
    cand, target, files = done.candidate, done.folder, done.files
    from nasforge.core.spec import JobSpec

    broken = broken_constraints(JobSpec.model_validate(dict(store.get_job(args.job_id).spec)), cand)
    if broken:  # --best falls back to every done candidate when none is feasible; say so
        why = " (no done candidate meets every constraint)" if args.best else ""
        print(f"note: candidate {cand.id} breaks the job's constraint{'s' if len(broken) > 1 else ''} "
              f"{', '.join(broken)}{why}", file=sys.stderr)
    if args.json:
        print(json.dumps({"candidate_id": cand.id, "key": cand.key, "dir": str(target), "files": [f.name for f in files],
                          "constraints_broken": broken, "replaced": done.replaced}))
    else:
        print(f"exported candidate {cand.id} ({cand.key}) to {target}: {', '.join(f.name for f in files)}")
        _qdq_hint(target)
        old = done.replaced
        if old is not None and (old.get("job_id"), old.get("candidate_id")) != (args.job_id, cand.id):
            what = f" of candidate {old['candidate_id']} of job {old['job_id']}" if old.get("job_id") else ""
            print(f"note: it replaced the earlier export{what} in that folder", file=sys.stderr)
    return 0


def _qdq_hint(folder: Path) -> None:
    """A compression export's coded ONNX graph runs at full speed only with one onnxruntime session
    entry (arch.json says so; few read it): one line where the export has such a graph."""
    try:
        meta = json.loads((folder / "arch.json").read_text())
    except (OSError, ValueError):
        return
    rec = meta.get("onnx_qdq_check") or {}
    if "max_abs_diff" not in rec or "session_config" not in rec:
        return
    plain = (meta.get("onnx_check") or {}).get("bytes")
    smaller = f", {plain / rec['bytes']:.1f}x smaller than model.onnx" if plain and rec.get("bytes") else ""
    entries = ", ".join(f"{k}={v}" for k, v in rec["session_config"].items())
    print(f"model.qdq.onnx: the weights as integer codes{smaller}; onnxruntime runs it as fast as model.onnx "
          f"with the session config entry {entries}")


def cmd_logs(args: argparse.Namespace) -> int:
    from nasforge.workers.cluster import cluster_logs

    address = _cluster_address(args)
    if address:
        return cluster_logs(args.job_id, address=address, follow=args.follow)
    from nasforge.core.paths import home

    log = home() / "jobs" / args.job_id / "driver.log"
    if not log.exists():
        raise NasforgeError(f"job {args.job_id}: no driver.log here (the job has not run on this machine; "
                            "for a cluster job give --address http://HEAD:8265)")
    if not args.follow:
        sys.stdout.write(log.read_text(errors="replace"))
        return 0
    return _follow_log(args, log)


def _follow_log(args: argparse.Namespace, log: Path, poll_s: float = 0.5) -> int:
    """Print the log as it grows until the job's driver has ended (its end line included)."""
    import time

    from nasforge.compose import driver_process, open_store_for

    store = open_store_for(url=args.store, job_id=getattr(args, "job_id", None))
    job = store.get_job(args.job_id)
    with open(log, "rb") as f:
        while True:
            where = driver_process(job.id)[0]
            state = store.get_job(job.id).state.value
            # "unknown" with a live state: not started yet, or it runs elsewhere; keep waiting
            ended = where == "gone" or (where == "unknown" and state not in ("created", "training", "running"))
            chunk = f.read()
            if chunk:
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            if ended:  # read once more after seeing the end, so the last lines are printed
                sys.stdout.write(f.read().decode(errors="replace"))
                return 0
            time.sleep(poll_s)


def cmd_cancel(args: argparse.Namespace) -> int:
    from nasforge.compose import cancel_job, open_store_for

    address = _cluster_address(args)
    if address:
        from nasforge.workers.cluster import cluster_cancel

        changed = cluster_cancel(args.job_id, address=address)
        print(f"ray job {args.job_id} stopped" if changed else f"ray job {args.job_id} had already ended")
        return 0

    store = open_store_for(url=args.store, job_id=getattr(args, "job_id", None))
    changed = cancel_job(args.job_id, store)
    print(f"job {args.job_id} cancelled" if changed else f"job {args.job_id} was not running")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from nasforge.compose import check_deletable, delete_job, open_store_for

    ids = list(dict.fromkeys(args.job_ids))
    store = open_store_for(url=args.store, job_id=ids[0])
    jobs = [check_deletable(j, store, along=ids) for j in ids]  # all checked before any is removed
    if not args.yes:
        listing = ", ".join(f"{j.id} ({j.state.value}, {sum(j.counts.values())} candidates)" for j in jobs)
        if not sys.stdin.isatty():
            raise NasforgeError(f"delete {listing}: add --yes to confirm (nothing was deleted)")
        answer = input(f"delete {listing} with its files and MLflow runs? exports are kept [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    # a job that searches on another's supernet goes before it
    for job in sorted(jobs, key=lambda j: j.created_at, reverse=True):
        gone = delete_job(job.id, store)
        for w in gone.warnings:
            print(f"warning: job {job.id}: {w}", file=sys.stderr)
        print(f"deleted job {job.id}: {gone.candidates} candidates, {gone.folder_bytes / 1e6:.1f} MB of job files, "
              f"{gone.mlflow_runs} MLflow runs")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from nasforge.core.paths import default_tracking_uri
    from nasforge.tracking.ui import run_ui

    if args.uri is None:  # like `list`: say where the runs are of jobs whose file chose another MLflow store
        _note_other_stores(default_tracking_uri(), "tracking", "uri", "logged to the MLflow store", "nasforge ui --uri")
    return run_ui(args.uri, host="127.0.0.1", port=args.port)


def cmd_profile_device(args: argparse.Namespace) -> int:
    from nasforge.core.paths import home
    from nasforge.spaces import SPACES
    from nasforge.workers.profile import profile_device

    space = SPACES.get(args.space, "--space")(args.options or {})
    out_path = Path(args.out) if args.out else home() / "latency" / f"{args.space}.json"
    try:  # checked before minutes of timing, not after
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if out_path.is_dir():
            raise IsADirectoryError(21, "a folder")
        import tempfile

        with tempfile.NamedTemporaryFile(dir=out_path.parent, prefix=f".{out_path.name}."):
            pass  # the table is written as a temporary file beside it, then renamed
    except OSError as e:
        raise NasforgeError(f"--out {out_path}: cannot write it ({e.strerror or e}); name a .json file in a folder "
                            "you can write") from None
    out = profile_device(space, out=out_path, warmup=args.warmup, repeats=args.repeats,
                         threads=args.threads, batch_size=args.batch_size, rounds=args.rounds,
                         statistic=args.statistic, reference=args.reference, log=print)
    print(f"latency table written to {out}")
    return 0


# ------------------------------------------------------------------------------------------------
# parser


_JOB_HELP = "job file (YAML); see examples/ and docs/job-file.md"
_QUIET_HELP = "no progress lines and no tables; the job's messages go to stderr"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nasforge", description="Neural architecture search and compression service.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)

    def with_store(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--store", default=None, help="SQLAlchemy URL of the store (default: NASFORGE_STORE_URL or SQLite in NASFORGE_HOME)")

    sp = sub.add_parser("validate", help="check a job file and print the resolved job")
    sp.add_argument("job", help=_JOB_HELP)
    sp.add_argument("--address", default=None, help="check it for this Ray cluster (the address submit would take): "
                    "that something answers there, and no local CPU / GPU limits")
    sp.add_argument("--json", action="store_true", help="print the resolved job as JSON instead of YAML")
    sp.set_defaults(func=cmd_validate)

    sp = sub.add_parser("submit", help="run a job (foreground by default)")
    sp.add_argument("job", help=_JOB_HELP)
    sp.add_argument("--address", default=None, help="Ray cluster: ray://HOST:10001 or the Jobs API http://HEAD:8265")
    sp.add_argument("--detach", action="store_true", help="return the job id at once; the job runs in the background")
    sp.add_argument("--json", action="store_true", help="print one JSON object when the job ends")
    sp.add_argument("--quiet", action="store_true", help=_QUIET_HELP)
    sp.set_defaults(func=cmd_submit)

    sp = sub.add_parser("resume", help="continue an interrupted job, or a done one with a larger budget")
    sp.add_argument("job_id", help="job id, as submit and list print it")
    sp.add_argument("--evaluations", type=_positive_int, default=None, metavar="N",
                    help="raise the job's evaluation budget to N in all and go on: a done job continues its search "
                         "where it stopped (same strategy state, no candidate evaluated twice)")
    sp.add_argument("--address", default=None, help="Ray cluster to run it on: ray://HOST:10001 or HEAD:6379")
    sp.add_argument("--json", action="store_true", help="print one JSON object when the job ends")
    sp.add_argument("--quiet", action="store_true", help=_QUIET_HELP)
    with_store(sp)
    sp.set_defaults(func=cmd_resume)

    sp = sub.add_parser("list", help="jobs with state, progress, start and duration")
    sp.add_argument("--json", action="store_true", help="one JSON array of the jobs")
    with_store(sp)
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("status", help="one job: round, evaluated/pending/failed, best so far")
    sp.add_argument("job_id", help="job id, or the Ray submission id with --address")
    sp.add_argument("--json", action="store_true", help="one JSON object")
    sp.add_argument("--address", default=None, help="Ray Jobs API http://HEAD:8265 (job_id is the submission id)")
    with_store(sp)
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("results", help="candidates of a job")
    sp.add_argument("job_id", help="job id, as submit and list print it")
    sp.add_argument("--pareto", action="store_true", help="only the Pareto front")
    sp.add_argument("--format", choices=("table", "json", "csv", "parquet"), default=None,
                    help="default: from the -o file's suffix, else a table on the terminal")
    sp.add_argument("-o", "--output", default=None, help="write to this file instead of the terminal")
    sp.add_argument("--where", action="append", metavar="LIMIT", help="only done candidates within this limit, "
                    "e.g. --where 'latency_ms <= 0.8' (repeatable; the job file's constraint grammar); "
                    "--where 'latency_disturbed < 1' drops the children whose timing other load disturbed")
    sp.add_argument("--sort", metavar="METRIC", default=None, help="best first by METRIC (its objective's "
                    "direction; else costs and losses ascending, accuracy descending); default: by id")
    with_store(sp)
    sp.set_defaults(func=cmd_results)

    sp = sub.add_parser("export", help="export a candidate for deployment")
    sp.add_argument("job_id", help="job id, as submit and list print it")
    sp.add_argument("candidate", nargs="?", default=None, help="candidate id, key, or the start of a key as tables print it")
    sp.add_argument("--best", default=None, metavar="METRIC", help="export the best done candidate by METRIC (feasible ones first; "
                    "ties go to a Pareto-front member, then to the better other objectives)")
    sp.add_argument("--where", action="append", metavar="LIMIT", help="with --best: only among done candidates within "
                    "this limit, e.g. --best accuracy --where 'latency_ms <= 0.8' (repeatable)")
    sp.add_argument("-o", "--output", required=True, help="folder inside NASFORGE_HOME/exports")
    sp.add_argument("--json", action="store_true", help="print what was written as one JSON object")
    with_store(sp)
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("cancel", help="cancel a running job")
    sp.add_argument("job_id", help="job id, or the Ray submission id with --address")
    sp.add_argument("--address", default=None, help="Ray Jobs API http://HEAD:8265 (job_id is the submission id)")
    with_store(sp)
    sp.set_defaults(func=cmd_cancel)

    sp = sub.add_parser("delete", help="remove finished jobs: store rows, job folder, MLflow runs (exports stay)")
    sp.add_argument("job_ids", nargs="+", metavar="job_id", help="job id, as submit and list print it (several at once)")
    sp.add_argument("-y", "--yes", action="store_true", help="do not ask; needed when not at a terminal")
    with_store(sp)
    sp.set_defaults(func=cmd_delete)

    sp = sub.add_parser("logs", help="the driver log of a job (a cluster job's with --address)")
    sp.add_argument("job_id", help="job id (--detach jobs), or the Ray submission id with --address")
    sp.add_argument("--address", default=None, help="Ray Jobs API http://HEAD:8265")
    sp.add_argument("--follow", action="store_true", help="keep printing as the log grows until the job ends")
    with_store(sp)
    sp.set_defaults(func=cmd_logs)

    sp = sub.add_parser("ui", help="the MLflow UI on this project's tracking store (127.0.0.1)")
    from nasforge.tracking.ui import port_number  # stdlib + core only at import

    sp.add_argument("--port", type=port_number, default=5000, help="port on 127.0.0.1 (default 5000)")
    sp.add_argument("--uri", default=None, help="tracking URI (default: SQLite in NASFORGE_HOME)")
    sp.set_defaults(func=cmd_ui)

    sp = sub.add_parser("profile-device", help="build a per-operation latency table on this device")
    from nasforge.spaces import SPACES  # no torch at import

    sp.add_argument("--space", required=True, help="search space: " + ", ".join(n for n in SPACES.names() if n != "compression"))
    sp.add_argument("--options", type=json_object, default=None,
                    help='space options as a JSON object, e.g. \'{"preset": "mnist"}\'')
    sp.add_argument("--out", default=None, help="JSON file (default NASFORGE_HOME/latency/SPACE.json)")
    sp.add_argument("--warmup", type=int_in(0), default=3, help="untimed calls before each op's repeats (default 3)")
    sp.add_argument("--repeats", type=int_in(1), default=10, help="timed calls per op and round (default 10)")
    sp.add_argument("--threads", type=int_in(1), default=1, help="torch threads, as the job's evaluation.latency.threads (default 1)")
    sp.add_argument("--batch-size", type=int_in(1), default=1, help="batch of the timed inputs, as the job's "
                    "evaluation.latency.batch_size (default 1)")
    sp.add_argument("--rounds", type=int_in(1), default=5, help="interleaved passes over all ops (median of rounds)")
    sp.add_argument("--statistic", choices=["median", "min"], default="median",
                    help="per round, median or min of the repeats (min: steadier on a shared machine)")
    sp.add_argument("--reference", action="store_true",
                    help="normalise each timing by a reference op timed just before it (cancels slow spells)")
    sp.set_defaults(func=cmd_profile_device)
    return p


def int_in(low: int) -> Any:
    """argparse type: an integer >= ``low`` (argparse turns the error into one usage line, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is out of range; give an integer >= {low}")
        return value

    return parse


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object (a bad one is one usage line naming the problem, exit 2)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid JSON ({e.msg} at column {e.colno}); "
                                         'give an object such as \'{"preset": "mnist"}\'') from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is a JSON {type(value).__name__}; give an object "
                                         'such as \'{"preset": "mnist"}\'')
    return value


def _version() -> str:
    from nasforge import __version__

    return f"nasforge {__version__}"


def _interrupt_on_sigterm() -> None:
    """SIGTERM (``ray job stop``, ``kill``, a pod shutting down) ends a run like Ctrl-C: the job is
    recorded as interrupted, workers are released, and ``nasforge resume`` continues it."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (main() called from a thread): leave it alone
        pass


def quiet_omp_threads() -> None:
    """OpenMP threads that wait by sleeping, not spinning, unless the user chose otherwise.

    torch's OpenMP threads spin between parallel regions by default; with a second job, a test run or
    Ray workers on the same cores the spinning threads take each other's time (with two jobs at once a
    supernet training epoch took 4.2x as long as with sleeping threads; alone, sleeping costs ~1.2x:
    ``python -m benchmarks concurrent_jobs``). Read
    once, when torch is first imported, so this runs before any command imports it; Ray workers started
    by this process inherit it.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _one_line_warnings() -> None:
    """nasforge's own warnings (:class:`NasforgeWarning`) print as one line (``nasforge: warning:
    ...``), not as Python's file:line report with a source line; other libraries' warnings keep
    their form, also where they point at nasforge code (torch's tracer warnings during export)."""
    import warnings

    from nasforge.core.errors import NasforgeWarning

    default = warnings.formatwarning

    def fmt(message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
        if issubclass(category, NasforgeWarning):
            return f"nasforge: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = fmt  # type: ignore[assignment]


def main(argv: Sequence[str] | None = None) -> int:
    quiet_omp_threads()
    _one_line_warnings()
    if not sys.stdout.isatty():  # a log file or a pipe (detached jobs, CI): Ray's worker lines without ANSI colours
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    parser = build_parser()
    args = parser.parse_args(argv)
    _interrupt_on_sigterm()
    try:
        return int(args.func(args) or 0)
    except NasforgeError as e:
        msg = " ".join(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(e)).split())  # one line, no terminal codes
        print(f"nasforge: error: {msg}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("nasforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `nasforge results JOB --format csv | head` closed the pipe: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit flush must not raise again
        return 141  # 128 + SIGPIPE, as a shell reports a command the pipe stopped


if __name__ == "__main__":
    sys.exit(main())
