"""What the commands show on a terminal: candidate and job tables, the progress bar, status lines,
and the foreground run of a job (progress, then the Pareto table and the job's notes, copied to its
``driver.log``).

:mod:`nasforge.reports` computes what is shown; :mod:`nasforge.cli` parses arguments and calls one
function here or in :mod:`nasforge.compose` per command. Rich is imported when something is drawn.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nasforge.reports import fmt, no_feasible_note, uniform_note

__all__ = ["SHOWN_METRICS", "DriverLog", "ProgressBar", "best_text", "candidate_table", "console",
           "first_line", "follow_log", "fmt", "qdq_hint", "run_in_terminal", "show_export", "show_jobs", "show_status",
           "training_line", "yaml_dump"]


def console() -> Any:
    from rich.console import Console

    # not a terminal (a pipe, a CI log): wide enough that the table does not wrap
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


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


def first_line(text: str | None, width: int = 0) -> str:
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    return line if not width or len(line) <= width else line[: width - 3] + "..."


def candidate_table(cands: Sequence[Any], title: str) -> Any:
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

    table = Table(title=title, min_width=len(title) + 4)  # an empty or narrow table does not wrap its title
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
            cells.append(first_line(c.error))
        table.add_row(str(c.id), c.key[:10], c.status.value + (" *" if c.pareto else ""), *cells)
    if any(c.pareto for c in cands):
        table.caption = "* on the Pareto front"
    return table


def best_text(best: dict[str, float]) -> str:
    """'best: accuracy=0.95', or with several objectives 'best of each: accuracy=0.958, latency_ms=0.49'
    (each the best of any feasible candidate so far, not one candidate's figures)."""
    if not best:
        return "best: - (none within the constraints yet)"
    shown = ", ".join(f"{k}={fmt(v)}" for k, v in best.items())
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
            self._bar.update(self._task, completed=min(p.evaluated, self.total or p.evaluated), best=best_text(p.best))

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def yaml_dump(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


class DriverLog:
    """A foreground run's lines (progress, notes, the Pareto table, the end line) also go to the
    job's ``driver.log``, appended, so ``nasforge logs JOB`` shows them later as it does for a
    --detach job (whose output is that file already: then this writes nothing)."""

    def __init__(self) -> None:
        self.file: Any = None

    def open(self, job: Any) -> None:
        from nasforge.compose import DRIVER_LOG_ENV
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


def run_in_terminal(spec: Any, store: Any, job: Any = None, *, address: str | None = None, json_out: bool = False,
                    quiet: bool = False) -> int:
    """Run a job in this process as ``submit`` / ``resume`` do in the foreground: a progress bar on a
    terminal (else a line per ten candidates), then the Pareto table, the job's notes and its end
    line; the same lines go to the job's ``driver.log``. ``json_out``: one JSON object at the end
    instead. Exit code 0 when the job ended done or cancelled, else 1."""
    log = DriverLog()
    try:
        return _run_logged(spec, store, job, log, address=address, json_out=json_out, quiet=quiet)
    finally:
        log.close()


def _run_logged(spec: Any, store: Any, job: Any, log: DriverLog, *, address: str | None, json_out: bool,
                quiet: bool) -> int:
    from nasforge.compose import run_job
    from nasforge.search.driver import summary_dict

    terse = json_out or quiet
    shown = (lambda s: print(s, file=sys.stderr)) if terse else print

    def say(text: str) -> None:
        shown(text)
        log.line(text)

    show_bar = not terse and sys.stdout.isatty()
    with ProgressBar(spec.budget.evaluations, show_bar) as bar:
        tens_shown = 0
        latest: list[Any] = [None, None]  # the last progress, the last one printed

        def line(p: Any) -> None:  # printed where no bar shows it; the log gets every one
            of = f"/{p.budget}" if p.budget else ""
            text = f"evaluated {p.evaluated}{of} (failed {p.failed}) {best_text(p.best)}"
            if not show_bar and not terse:
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
            result = run_job(spec, store, job=job, address=address, on_progress=progress, say=say, on_job=log.open)
        finally:  # where the search stopped short of a multiple of 10 (a wall-time budget, Ctrl-C)
            last, printed = latest
            if last is not None and (printed is None or printed.evaluated != last.evaluated):
                line(last)
    summary = summary_dict(result.summary, result.counts, [c.id for c in result.pareto])
    ending: list[Any] = []  # what a person reads at the end: the terminal's, and the log's
    if result.pareto:
        ending.append(candidate_table(sorted(result.pareto, key=lambda c: c.id), f"Pareto front of {result.job.id}"))
    elif result.counts.get("done", 0):
        ending.append(no_feasible_note(spec, store, result.job.id))
    from nasforge.core.types import CandidateStatus

    note = uniform_note(spec, store.get_candidates(result.job.id, status=CandidateStatus.DONE))  # compression jobs
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
    if json_out:
        print(json.dumps(summary))
    elif not quiet:
        out = console()
        for r in ending:
            out.print(r)
    return 0 if result.summary.state.value in ("done", "cancelled") else 1


def training_line(t: dict[str, Any], running: bool = True) -> str:
    """'epoch 1 of 2 trained (largest_val_acc=0.71); about 15 s to go' from :func:`nasforge.reports.training_progress`
    (for a job that stopped while training: where `resume` picks it up)."""
    m = t.get("metrics") or {}
    acc = m.get("largest_val_acc")
    text = f"epoch {t.get('epoch')}" + (f" of {t['epochs']}" if t.get("epochs") else "") + " trained"
    if isinstance(acc, (int, float)) and acc == acc:
        text += f" (largest_val_acc={fmt(float(acc))})"
    secs, left = m.get("epoch_seconds"), (t.get("epochs") or 0) - (t.get("epoch") or 0)
    if not running:
        if left > 0:
            text += "; resume trains on from there"
    elif isinstance(secs, (int, float)) and left > 0:
        text += f"; about {secs * left:.0f} s to go"
    return text


def show_jobs(rows: list[dict[str, Any]]) -> None:
    """``nasforge list``: one table row per job (rows from :func:`nasforge.reports.job_row`)."""
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
    console().print(table)


def show_status(row: dict[str, Any]) -> None:
    """``nasforge status``: the lines of one job (a row from :func:`nasforge.reports.job_status`)."""
    c, best, done = row["counts"], row["best"], row["done_candidates"]
    print(f"job {row['job_id']} ({row['name']}): {row['state']}")
    if row["training"]:
        print(f"  training: {training_line(row['training'], running=row['state'] == 'training')}")
    elif row["state"] == "training":
        print("  training: the first epoch is under way")
    of = f"/{row['budget']}" if row["budget"] else ""  # none: a wall-time budget
    print(f"  round {row['round']}; evaluated {row['evaluated']}{of}: done {c.get('done', 0)}, "
          f"pending {c.get('pending', 0) + c.get('running', 0)}, failed {c.get('failed', 0)}")
    none_feasible = f" (none of the {done} done candidates meets the constraints)" if done and not best else ""
    label = "best so far, of each objective" if len(best) > 1 else "best so far"
    print(f"  {label}: " + (", ".join(f"{k}={fmt(v)}" for k, v in best.items()) or "-" + none_feasible))
    if row["uniform_note"]:
        print(f"  {row['uniform_note']}")
    if row["last_failure"]:
        print(f"  last failure: candidate {row['last_failure']['candidate_id']}: "
              f"{first_line(row['last_failure']['error'], 160)}")
    if row["error"]:
        print(f"  note: {row['error']}")


def show_export(done: Any, job_id: str, broken: list[str], *, best: str | None, json_out: bool) -> None:
    """``nasforge export``: what was written where (``done``: :class:`nasforge.export.Exported`), a
    note on stderr when the candidate breaks the job's constraints or replaced another export."""
    cand, target, files = done.candidate, done.folder, done.files
    if broken:  # --best falls back to every done candidate when none is feasible; say so
        why = " (no done candidate meets every constraint)" if best else ""
        print(f"note: candidate {cand.id} breaks the job's constraint{'s' if len(broken) > 1 else ''} "
              f"{', '.join(broken)}{why}", file=sys.stderr)
    if json_out:
        print(json.dumps({"candidate_id": cand.id, "key": cand.key, "dir": str(target), "files": [f.name for f in files],
                          "constraints_broken": broken, "replaced": done.replaced}))
        return
    print(f"exported candidate {cand.id} ({cand.key}) to {target}: {', '.join(f.name for f in files)}")
    hint = qdq_hint(target)
    if hint:
        print(hint)
    old = done.replaced
    if old is not None and (old.get("job_id"), old.get("candidate_id")) != (job_id, cand.id):
        what = f" of candidate {old['candidate_id']} of job {old['job_id']}" if old.get("job_id") else ""
        print(f"note: it replaced the earlier export{what} in that folder", file=sys.stderr)


def qdq_hint(folder: Path) -> str | None:
    """A compression export's coded ONNX graph runs at full speed only with one onnxruntime session
    entry (arch.json says so; few read it): one line where the export has such a graph."""
    try:
        meta = json.loads((folder / "arch.json").read_text())
    except (OSError, ValueError):
        return None
    rec = meta.get("onnx_qdq_check") or {}
    if "max_abs_diff" not in rec or "session_config" not in rec:
        return None
    plain = (meta.get("onnx_check") or {}).get("bytes")
    smaller = f", {plain / rec['bytes']:.1f}x smaller than model.onnx" if plain and rec.get("bytes") else ""
    entries = ", ".join(f"{k}={v}" for k, v in rec["session_config"].items())
    return (f"model.qdq.onnx: the weights as integer codes{smaller}; onnxruntime runs it as fast as model.onnx "
            f"with the session config entry {entries}")


def follow_log(store: Any, job_id: str, log: Path, poll_s: float = 0.5) -> int:
    """``nasforge logs --follow``: print the log as it grows until the job's driver has ended (its end
    line included)."""
    import time

    from nasforge.compose import driver_process

    job = store.get_job(job_id)
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
