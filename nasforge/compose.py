"""Composition: a JobSpec -> space, workload, strategy, evaluator, store, tracker -> a run.

Everything is looked up in registries by name; there is no per-name branching here. ``validate``
checks every name and option before anything is written, so a bad job file leaves no row behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nasforge.core.errors import (
    BudgetError,
    JobSpecError,
    NasforgeError,
    ResourceUnavailableError,
    StoreError,
)
from nasforge.core.interfaces import NullTracker, Store, Tracker
from nasforge.core.paths import home, job_dir
from nasforge.core.spec import JobSpec, ModelSpec, load_job_file
from nasforge.core.types import ARCH_SCHEMA_VERSION, Candidate, CandidateStatus, Job, JobState
from nasforge.search import STRATEGIES
from nasforge.search.driver import DriverSummary, Progress, SearchDriver
from nasforge.spaces.base import SearchSpace
from nasforge.workers import WORKLOADS, workload_kind

log = logging.getLogger("nasforge")


def _validate_component_options(cls: Any, options: dict[str, Any], where: str) -> None:
    from nasforge.workers.supernet_workload import _validate_options

    _validate_options(cls, options, where)


def _named_metrics(spec: JobSpec) -> list[tuple[str, str]]:
    """(where in the job file, metric) of every objective and constraint."""
    named = [(f"objectives[{i}].metric", o.metric) for i, o in enumerate(spec.objectives)]
    return named + [(f"constraints[{i}]", c.to_constraint().metric) for i, c in enumerate(spec.constraints)]


def _check_device_class_metrics(spec: JobSpec) -> None:
    """``latency_ms@CLASS`` in objectives / constraints needs CLASS in the measured classes."""
    classes = set(spec.evaluation.latency.device_classes)
    for where, metric in _named_metrics(spec):
        _, _, cls = metric.partition("@")
        if cls and cls not in classes:
            raise JobSpecError(
                f"{where}: {metric!r} names device class {cls!r}, which is not measured; add it to "
                f"evaluation.latency.device_classes (now {sorted(classes) or '[]'})"
            )


def _check_measured_metrics(spec: JobSpec, measured: tuple[frozenset[str], str] | None) -> None:
    """Objectives and constraints may name only what the job's workload measures: a compression
    job asked to minimize latency_ms, or a CNN job to minimize kl, would otherwise run to the end
    with that objective missing on every candidate and no Pareto front."""
    if measured is None:
        return
    names, what = measured
    for where, metric in _named_metrics(spec):
        if metric.partition("@")[0] not in names:
            raise JobSpecError(f"{where}: {metric!r} is not measured by {what}; it measures: "
                               f"{', '.join(sorted(names))}")


#: a local instance refuses more than this many worker CPUs per core of the machine
LOCAL_OVERSUBSCRIPTION = 4
#: the job folder's summary of its best candidate (finish_artifacts)
BEST_FILE = "best.json"


def validate(spec: JobSpec, *, address: str | None = None) -> SearchSpace:
    """Check names, options and local resources. Writes nothing. Returns the built space."""
    kind = workload_kind(spec)
    workload_cls = WORKLOADS.get(kind, "workload")
    # names first: cheap, and the error is the most useful one
    strategy_cls = STRATEGIES.get(spec.strategy.name, "strategy.name")
    _validate_component_options(strategy_cls, spec.strategy.options, "strategy.options")
    if spec.predictor is not None:
        from nasforge.predictors import PREDICTORS

        pred_cls = PREDICTORS.get(spec.predictor.name, "predictor.name")
        _validate_component_options(pred_cls, spec.predictor.options, "predictor.options")
    workload_cls.validate_spec(spec)
    _check_device_class_metrics(spec)
    _check_measured_metrics(spec, workload_cls.metrics(spec))
    space = workload_cls.build_space(spec)
    if hasattr(space, "level_table"):  # a compression budget no allocation meets, whatever the strategy
        from nasforge.search.allocators import check_budgets_reachable

        check_budgets_reachable(space.level_table(), spec.constraint_list())
    strategy = build_strategy(spec, space)  # strategies check their budget/options against the space here
    needed = strategy.evaluations_needed()
    if needed is not None and spec.budget.evaluations is not None and spec.budget.evaluations < needed[0]:
        raise BudgetError(f"budget.evaluations: {spec.budget.evaluations} ends strategy {spec.strategy.name!r} before "
                          f"its answer: it asks {needed[1]}, {needed[0]} evaluations in all; give at least "
                          f"{needed[0]}")
    if spec.store.url is not None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(spec.store.url)
        except ArgumentError:
            raise JobSpecError(
                f"store.url: {spec.store.url!r} is not a SQLAlchemy URL (e.g. sqlite:///path.db, "
                "postgresql+psycopg2://user@host/db)"
            ) from None
    if address is not None:
        check_ray_address(address)
    if address is None:
        if spec.workers.gpus > 0:
            import torch

            if not torch.cuda.is_available():
                raise ResourceUnavailableError(
                    f"workers.gpus: {spec.workers.gpus:g} GPU per worker requested but this machine has no "
                    "CUDA GPU; set workers.gpus: 0 or submit with --address to a cluster with GPUs"
                )
        cores = os.cpu_count() or 1
        asked = spec.workers.count * spec.workers.cpus
        if spec.workers.cpus > LOCAL_OVERSUBSCRIPTION * cores:  # no count of workers fits: the key is cpus
            raise ResourceUnavailableError(
                f"workers.cpus: one worker asks for {spec.workers.cpus:g} CPUs on this {cores}-CPU machine, where "
                f"a local instance gives at most {LOCAL_OVERSUBSCRIPTION} worker CPUs per core; use workers.cpus "
                f"<= {LOCAL_OVERSUBSCRIPTION * cores} (torch threads while timing: evaluation.latency.threads) or "
                "submit with --address to a cluster"
            )
        if asked > LOCAL_OVERSUBSCRIPTION * cores:
            raise ResourceUnavailableError(
                f"workers.count: {spec.workers.count} workers x {spec.workers.cpus:g} CPU is {asked:g} CPUs on this "
                f"{cores}-CPU machine; each worker holds a model and times latency, so past "
                f"{LOCAL_OVERSUBSCRIPTION} per core they only queue (and distort latency); use workers.count <= "
                f"{int(LOCAL_OVERSUBSCRIPTION * cores / spec.workers.cpus)} or submit with --address to a cluster"
            )
        if spec.workers.resources:
            raise ResourceUnavailableError(
                f"workers.resources: custom resources {sorted(spec.workers.resources)} exist only on a Ray "
                "cluster; remove them or submit with --address"
            )
        if spec.evaluation.latency.device_classes:  # nodes offer them as custom resources: none here
            raise ResourceUnavailableError(
                f"evaluation.latency.device_classes: {list(spec.evaluation.latency.device_classes)} are the "
                "device classes of a Ray cluster's nodes (custom resources device:CLASS), and a local instance "
                "has none; remove them or submit with --address"
            )
    return space


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a Ray address that nothing answers at, before a job is created: a supernet job
    trains before it connects to Ray, so Ray's own error would come after the training, and
    with a traceback. ``ray://HOST[:PORT]`` (Ray Client, port 10001 by default) and
    ``HOST:PORT`` (a head's GCS) get a TCP connect; ``auto`` and the Jobs API's ``http(s)://``
    are left to Ray and to ``submit_to_cluster``."""
    import socket

    if address in ("auto", "local") or address.startswith(("http://", "https://")):
        return
    target, default_port = (address[len("ray://"):], 10001) if address.startswith("ray://") else (address, 6379)
    host, sep, port = target.rpartition(":")
    if not sep:
        host, port = target, str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or "/" in target:
        raise ResourceUnavailableError(
            f"--address {address}: not a Ray address; give ray://HEAD:10001 (Ray Client), HEAD:6379 or "
            "the Jobs API http://HEAD:8265"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ResourceUnavailableError(
            f"--address {address}: nothing answers at {host}:{port} ({e.strerror or e}); is the Ray head up and "
            "the port reachable from here? (nothing was created)"
        ) from None


def _module_root(model: ModelSpec, job_file: Path) -> str | None:
    """The folder at or above the job file from which the model's ``package.module`` imports
    (``examples.models.mnist_cnn:f`` in ``repo/examples/compress.yaml``: ``repo``)."""
    module = model.module
    if module is None:
        return None
    rel = Path(*module.split("."))
    for folder in Path(job_file).resolve().parents:
        if (folder / rel).with_suffix(".py").is_file() or (folder / rel / "__init__.py").is_file():
            return str(folder)
    return None


def _found(given: str | None, job_file: Path) -> str | None:
    """A relative file path of a job file, made absolute: from the current folder, else from the job
    file's folder (so a job file and its data move together); None when neither has it."""
    if not given or Path(given).expanduser().is_absolute():
        return None
    for base in (Path.cwd(), Path(job_file).resolve().parent):
        if (base / given).exists():
            return str((base / given).resolve())
    return None


def _absolute_paths(spec: JobSpec, job_file: Path) -> JobSpec:
    """``evaluation.dataset.path``, ``supernet.checkpoint`` and ``model.weights`` as absolute paths:
    the Ray workers, ``resume`` and ``export`` then find them from any folder. A relative
    ``strategy.options.latency_table`` is looked up in NASFORGE_HOME (where ``profile-device``
    writes) first, then the same way."""
    ds = spec.evaluation.dataset
    if (p := _found(ds.path, job_file)) is not None:
        evaluation = spec.evaluation.model_copy(update={"dataset": ds.model_copy(update={"path": p})})
        spec = spec.model_copy(update={"evaluation": evaluation})
    if spec.supernet is not None and (p := _found(spec.supernet.checkpoint, job_file)) is not None:
        spec = spec.model_copy(update={"supernet": spec.supernet.model_copy(update={"checkpoint": p})})
    if spec.model is not None and (p := _found(spec.model.weights, job_file)) is not None:
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"weights": p})})
    table = spec.strategy.options.get("latency_table")  # the guided strategy's: NASFORGE_HOME first
    if isinstance(table, str) and not (home() / table).exists() and (p := _found(table, job_file)) is not None:
        options = {**spec.strategy.options, "latency_table": p}
        spec = spec.model_copy(update={"strategy": spec.strategy.model_copy(update={"options": options})})
    return spec


def load_and_validate(path: str | Path, *, address: str | None = None) -> tuple[JobSpec, SearchSpace]:
    spec = _absolute_paths(load_job_file(path), Path(path))
    if spec.model is not None:  # a model module beside the job file imports from any folder
        root = _module_root(spec.model, Path(path))
        if root is not None and root not in spec.model.search_path:
            model = spec.model.model_copy(update={"search_path": [*spec.model.search_path, root]})
            spec = spec.model_copy(update={"model": model})
    try:
        space = validate(spec, address=address)
    except NasforgeError as e:  # name the file, as load_job_file's own errors do (not a --flag's)
        raise (e if str(e).startswith("--") else type(e)(f"{path}: {e}")) from None
    return spec, space


def open_store_for(spec: JobSpec | None = None, url: str | None = None, job_id: str | None = None) -> Store:
    """The store named by ``url`` (--store), the job file's ``store.url``, ``NASFORGE_STORE_URL``, or,
    for a command about ``job_id``, the store that job was submitted to from this machine; else
    SQLite in NASFORGE_HOME."""
    from nasforge.store import open_store

    chosen = url or (spec.store.url if spec is not None else None) or os.environ.get("NASFORGE_STORE_URL")
    if chosen is None and job_id is not None:
        chosen = _submitted_store_url(job_id)
    return open_store(chosen)


def _submitted_store_url(job_id: str) -> str | None:
    """``store.url`` of the job file a local job was submitted with (``jobs/JOB/job.json``), so that
    ``nasforge status JOB`` finds a job whose file put it in PostgreSQL without --store."""
    if not job_id or "/" in job_id or "\\" in job_id or job_id in (".", ".."):
        return None
    return _job_file_setting(home() / "jobs" / job_id / "job.json", "store", "url")


def _job_file_setting(job_json: Path, section: str, key: str) -> str | None:
    """``section.key`` of the job file a local job was submitted with, when it is a non-empty string."""
    try:
        data = json.loads(job_json.read_text())
    except (OSError, ValueError):
        return None
    value = (data.get(section) or {}).get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def other_stores_of_local_jobs(current: str, section: str = "store", key: str = "url") -> dict[str, int]:
    """Stores other than ``current`` that jobs submitted from this NASFORGE_HOME were put in by
    their job file (``store.url``, or with ``section="tracking", key="uri"`` their MLflow store; read
    from ``jobs/*/job.json``), with how many jobs each: ``nasforge list`` and ``nasforge ui`` show
    one store, and a user who ran a job into PostgreSQL looks for it there."""
    from nasforge.store import redact_url

    found: dict[str, int] = {}
    for job_json in sorted((home() / "jobs").glob("*/job.json")):
        url = _job_file_setting(job_json, section, key)
        if url and redact_url(url) != redact_url(current):
            found[url] = found.get(url, 0) + 1
    return found


def open_tracker(spec: JobSpec) -> Tracker:
    if not spec.tracking.enabled:
        return NullTracker()
    from nasforge.tracking import MlflowTracker, ensure_tracking_store

    # created once here, before any worker starts: MLflow's migrations race on a new database
    try:
        uri = ensure_tracking_store(spec.tracking.uri)
    except Exception as e:  # noqa: BLE001 - tracking is a view; the search goes on without it
        log.warning("tracking store %s unavailable (%s); the search continues untracked, the store "
                    "keeps every result", spec.tracking.uri, e)
        return NullTracker()
    return MlflowTracker(uri, spec.tracking.experiment)


def build_strategy(spec: JobSpec, space: SearchSpace) -> Any:
    cls = STRATEGIES.get(spec.strategy.name, "strategy.name")
    return cls(space, objectives=spec.objective_list(), constraints=spec.constraint_list(), seed=spec.seed,
               options=strategy_options(spec, cls))


def strategy_options(spec: JobSpec, cls: Any) -> dict[str, Any]:
    """``strategy.options``, with the job's top-level ``predictor`` section handed to a strategy
    that takes one (``guided``: its ``predictor`` / ``predictor_options``). The section used to be
    checked and then ignored."""
    options = dict(spec.strategy.options)
    if spec.predictor is None:
        return options
    fields = getattr(getattr(cls, "Options", None), "model_fields", {})
    if "predictor" not in fields:
        raise JobSpecError(f"predictor: strategy {spec.strategy.name!r} does not use a predictor; remove the "
                           "'predictor' section or use strategy: guided")
    if "predictor" in options or "predictor_options" in options:
        raise JobSpecError("predictor: the predictor is also given in strategy.options; name it in one place")
    options["predictor"] = spec.predictor.name
    if spec.predictor.options:
        options["predictor_options"] = dict(spec.predictor.options)
    return options


@dataclass
class RunResult:
    job: Job
    summary: DriverSummary
    pareto: list[Candidate]
    counts: dict[str, int]
    artifacts: dict[str, Path]


def finish_artifacts(store: Store, job: Job, spec: JobSpec, pareto: list[Candidate]) -> dict[str, Path]:
    """pareto.png, candidates.parquet and ``best.json`` in the job folder: the Pareto candidate best
    by the first objective, its arch and metrics (not an export: ``nasforge export`` makes one)."""
    from nasforge.store.export_formats import write_parquet
    from nasforge.tracking.plots import pareto_plot

    out = job_dir(job.id)
    cands = store.get_candidates(job.id)
    artifacts: dict[str, Path] = {}
    parquet = out / "candidates.parquet"
    write_parquet(cands, parquet)
    artifacts["candidates.parquet"] = parquet
    objectives = spec.objective_list()
    if len(objectives) >= 2:
        png = out / "pareto.png"
        pareto_plot(cands, objectives[1].metric, objectives[0].metric, png)
        artifacts["pareto.png"] = png
    if pareto:
        first = objectives[0]
        best = min(pareto, key=lambda c: first.sign() * float(c.metrics[first.metric]))
        best_json = out / BEST_FILE
        best_json.write_text(json.dumps({
            "schema_version": ARCH_SCHEMA_VERSION, "job_id": job.id,
            "picked_by": f"{first.direction.value} {first.metric} on the Pareto front",
            "candidate_id": best.id, "key": best.key, "arch": best.arch.to_dict(), "metrics": dict(best.metrics),
            "export": f"nasforge export {job.id} {best.id} -o NAME",
        }, indent=2) + "\n")
        artifacts[BEST_FILE] = best_json
    return artifacts


def run_job(
    spec: JobSpec,
    store: Store,
    *,
    job: Job | None = None,
    address: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    say: Callable[[str], None] = print,
    on_job: Callable[[Job], None] | None = None,
) -> RunResult:
    """Run (or resume, when ``job`` is given) a job to its end. The store is the source of truth.
    ``on_job`` is called with the job once it exists (before the first ``say``)."""
    from nasforge.workers.pool import RayPoolEvaluator

    if job is not None:  # resuming: never two drivers on one job
        where, pid = driver_process(job.id)
        if where == "alive" and pid != os.getpid():
            raise StoreError(f"job {job.id} is still running (driver process {pid} on this machine); follow it "
                             f"with `nasforge logs {job.id} --follow` or stop it with `nasforge cancel {job.id}`")
    space = validate(spec, address=address)
    kind = workload_kind(spec)
    workload_cls = WORKLOADS.get(kind)
    created = job is None
    if job is None:
        job = store.create_job(spec.to_dict(), name=spec.name, seed=spec.seed)
    if on_job is not None:
        on_job(job)
    if created:
        say(f"job {job.id} created")
    elif job.started_at is None:  # `submit --detach` created it; its driver starts it now
        say(f"job {job.id} started")
    else:
        if job.state in (JobState.TRAINING, JobState.RUNNING):  # its driver ended without recording it
            store.set_job_state(job.id, JobState.INTERRUPTED, error="its driver ended without recording the job's end",
                                at=last_activity(store, job))
        counts = store.counts(job.id)
        say(f"job {job.id} resumed: {counts.get('done', 0)} done and {counts.get('failed', 0)} failed candidates "
            "are kept" + ("; training continues from its last checkpoint" if kind == "supernet" else ""))
    jdir = job_dir(job.id)
    (jdir / "job.json").write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    write_driver_pid(job.id, os.getpid())
    tracker = open_tracker(spec)
    evaluator = None
    state = JobState.FAILED
    error: str | None = None
    try:
        tracker.start_job(store.get_job(job.id))
        store.set_job_state(job.id, JobState.TRAINING if kind == "supernet" else JobState.RUNNING)
        prep = workload_cls.prepare(spec, jdir, log=say)
        if prep:
            tracker.log_progress(job.id, 0, {f"prepare_{k}": v for k, v in prep.items()})
            say("prepared: " + ", ".join(f"{k}={v:.4g}" for k, v in prep.items()))
        store.set_job_state(job.id, JobState.RUNNING)
        evaluator = RayPoolEvaluator(spec, jdir, kind=kind, address=address)
        lat = spec.evaluation.latency
        if lat.enabled and lat.cache and workload_cls.TAKES_KNOWN_LATENCY:
            from nasforge.workers.latency_cache import LatencyCache

            evaluator.latency_cache = LatencyCache(store, spec)
        strategy = build_strategy(spec, space)
        driver = SearchDriver(
            job=job, space=space, strategy=strategy, evaluator=evaluator, store=store, tracker=tracker,
            objectives=spec.objective_list(), constraints=spec.constraint_list(),
            max_evaluations=spec.budget.evaluations, wall_time_s=spec.budget.wall_time_s,
            batch_size=spec.budget.batch_size, on_progress=on_progress,
        )
        summary = driver.run()
        state, error = summary.state, summary.error
        cache = evaluator.latency_cache
        if cache is not None and cache.hits:
            say(f"latency: {cache.hits} children timed before on this device (any job in this store) were not "
                f"timed again; {cache.puts} were timed (evaluation.latency.cache: false times every one)")
        disturbed = disturbed_latency_note(store, job.id, spec) if lat.enabled else None
        if disturbed:
            say(disturbed)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C; SIGTERM becomes SystemExit once Ray is up
        state = JobState.INTERRUPTED
        error = "interrupted (Ctrl-C or SIGTERM); continue with: nasforge resume " + job.id
        raise
    except BaseException as e:
        error = f"{type(e).__name__}: {e}"
        raise
    finally:
        if evaluator is not None:
            evaluator.close()
        current = store.get_job(job.id)
        if current.state == JobState.CANCELLED:  # `nasforge cancel` interrupted us: keep its note (resume refuses it)
            state, error = JobState.CANCELLED, current.error
        store.set_job_state(job.id, state, error=error)
        pareto = [c for c in store.get_candidates(job.id) if c.pareto]
        artifacts: dict[str, Path] = {}
        if state in (JobState.DONE, JobState.CANCELLED):
            try:
                artifacts = finish_artifacts(store, job, spec, pareto)
            except Exception as e:  # noqa: BLE001 - artifacts are a view; the store has the data
                say(f"warning: could not write artifacts: {e}")
        tracker.finish_job(job.id, state, pareto, artifacts)
        tracker.close()
        (jdir / "driver.pid").unlink(missing_ok=True)
        if state == JobState.INTERRUPTED:  # the job id scrolled away long ago; say how to go on
            say(f"job {job.id} interrupted; its progress is kept; continue with: nasforge resume {job.id}")
    return RunResult(store.get_job(job.id), summary, pareto, store.counts(job.id), artifacts)


def last_activity(store: Store, job: Job, max_files: int = 10_000) -> datetime:
    """When a job whose driver ended unrecorded (killed -9, out of memory, a reboot) last did
    something: its newest candidate result or file in its folder (checkpoints, logs), not before
    its run began. A resume closes the dead run there, so the time in between is not run time."""
    seen = [t for t in (job.active_since, job.started_at, job.created_at) if t is not None][:1]
    seen += [c.finished_at for c in store.get_candidates(job.id) if c.finished_at is not None]
    folder = home() / "jobs" / job.id
    if folder.is_dir():
        for i, path in enumerate(folder.rglob("*")):
            if i >= max_files:
                break
            try:
                seen.append(datetime.fromtimestamp(path.stat().st_mtime, timezone.utc))
            except OSError:  # removed meanwhile
                continue
    return max(seen)


def write_driver_pid(job_id: str, pid: int) -> None:
    """Record ``pid`` on this host as the job's driver (read by :func:`driver_process`)."""
    (job_dir(job_id) / "driver.pid").write_text(f"{pid} {socket.gethostname()}\n")


def driver_process(job_id: str) -> tuple[str, int | None]:
    """Where this job's driver process stands, as far as this machine can tell.

    ``("alive", pid)``: the process that wrote ``driver.pid`` still runs here; ``("gone", pid)``: the
    driver ran on this machine and ended without recording the job's end (killed, out of memory,
    reboot); ``("unknown", None)``: no driver of this job ran here from this NASFORGE_HOME (or it ended
    cleanly, which removes the pid file), or it runs on another host.
    """
    pid_file = home() / "jobs" / job_id / "driver.pid"
    try:
        fields = pid_file.read_text().split()
        pid = int(fields[0])
        written = pid_file.stat().st_mtime
    except (OSError, ValueError, IndexError):
        return "unknown", None
    if len(fields) > 1 and fields[1] != socket.gethostname():
        return "unknown", None
    return ("alive" if _runs_since(pid, written) else "gone"), pid


def _runs_since(pid: int, written: float) -> bool:
    """Whether process ``pid`` runs and was started before ``written`` (the pid file's time): a pid
    reused by a process started after the driver died does not count, nor does a zombie."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # PermissionError: another user's process, not our driver
        return False
    try:  # Linux: state and start time (clock ticks after boot) from /proc
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        started = boot + int(stat[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return True  # elsewhere the pid exists, which is all this can tell
    if stat[0] in ("Z", "X"):
        return False
    return started <= written + 2.0  # btime is whole seconds


#: set in the environment of a --detach driver, whose output already goes to driver.log
DRIVER_LOG_ENV = "NASFORGE_OUTPUT_IS_DRIVER_LOG"


def start_detached(spec: JobSpec, store: Store, *, address: str | None = None) -> Job:
    """``submit --detach``: record the job and start its driver as a process of its own (``nasforge
    resume JOB``), whose output goes to the job's ``driver.log``; returns the job at once."""
    import subprocess
    import sys

    job = store.create_job(spec.to_dict(), name=spec.name, seed=spec.seed)
    logf = open(job_dir(job.id) / "driver.log", "ab")  # noqa: SIM115 - handed to the child
    # not --quiet: the log gets what a foreground run prints (progress lines, the Pareto table, the
    # final line), unbuffered so that `nasforge logs` shows a running job's progress
    cmd = [sys.executable, "-m", "nasforge.cli", "resume", job.id]
    if address:
        cmd += ["--address", address]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", DRIVER_LOG_ENV: "1"}
    if spec.store.url:
        env["NASFORGE_STORE_URL"] = spec.store.url
    with logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    # the child rewrites this with the same pid once it runs; written here too, so that `status` and
    # `logs --follow` see the driver from the first instant (and see it gone if it dies on start)
    write_driver_pid(job.id, proc.pid)
    return job


def resume_plan(job_id: str, store: Store, *, evaluations: int | None = None,
                address: str | None = None) -> tuple[Job, JobSpec | None, str | None]:
    """What ``nasforge resume JOB [--evaluations N]`` runs: ``(job, spec, None)``, the spec with the
    budget raised to ``evaluations`` in all (stored before it runs, so a later resume keeps it), or
    ``(job, None, why)`` when there is nothing to run (a done or cancelled job without a larger
    budget). A budget the job has already spent, a cancelled job, or a wall-time budget is refused."""
    job = store.get_job(job_id)
    spec = JobSpec.model_validate(dict(job.spec))
    evaluated = job.counts.get("done", 0) + job.counts.get("failed", 0)
    if evaluations is not None:  # a larger budget: a done job goes on where it stopped
        if evaluations <= evaluated:
            raise NasforgeError(f"--evaluations {evaluations}: job {job.id} has evaluated {evaluated} "
                                f"candidates already; give a larger total budget")
        if job.state == JobState.CANCELLED:
            raise NasforgeError(f"job {job.id} was cancelled; it is not continued (submit the job file again)")
        if spec.budget.wall_time_s is not None:
            raise NasforgeError(f"--evaluations: job {job.id} also has a wall-time budget (budget.wall_time_s "
                                f"{spec.budget.wall_time_s:g}), which this does not extend; submit the job file "
                                "again with the budget you want")
        budget = spec.budget.model_copy(update={"evaluations": evaluations})
        spec = JobSpec.model_validate({**spec.to_dict(), "budget": budget.model_dump()})
        validate(spec, address=address)  # before the store holds the new budget
        store.set_job_spec(job.id, spec.to_dict())
        return job, spec, None
    if job.state in (JobState.DONE, JobState.CANCELLED):
        more = (f"; to evaluate more candidates: nasforge resume {job.id} --evaluations N (a total above "
                f"{evaluated})") if job.state == JobState.DONE else ""
        return job, None, f"job {job.id} is already {job.state.value}{more}"
    return job, spec, None


@dataclass(frozen=True)
class Deleted:
    """What ``delete_job`` removed."""

    job_id: str
    candidates: int
    folder_bytes: int
    mlflow_runs: int
    warnings: tuple[str, ...] = ()


def jobs_depending_on(job_id: str, store: Store) -> list[str]:
    """Other jobs whose job file reads a file from this job's folder (``supernet.checkpoint``: a
    search on its trained supernet, whose exports need those weights; or ``model.weights``)."""
    folder = (home() / "jobs" / job_id).resolve()
    found = []
    for other in store.list_jobs():
        if other.id == job_id:
            continue
        spec = other.spec or {}
        paths = [(spec.get("supernet") or {}).get("checkpoint"), (spec.get("model") or {}).get("weights")]
        for p in paths:
            if isinstance(p, str) and p and Path(p).expanduser().resolve().is_relative_to(folder):
                found.append(other.id)
                break
    return found


def disturbed_latency_note(store: Store, job_id: str, spec: JobSpec) -> str | None:
    """The line a job's summary prints when other load disturbed the timing of some of its children
    even after ``evaluation.latency.retries`` (``latency_disturbed`` = 1); None when none was."""
    from nasforge.workers.latency import DISTURBED_SPREAD
    from nasforge.workers.latency_cache import DISTURBED_FLAG

    def disturbed(metrics: dict[str, float]) -> bool:  # on the job's workers or on a device class (NAME@CLASS)
        return any(v == 1.0 and k.partition("@")[0] == DISTURBED_FLAG for k, v in metrics.items())

    n = sum(disturbed(c.metrics) for c in store.get_candidates(job_id, status=CandidateStatus.DONE))
    if not n:
        return None
    return (f"latency warning: other load on this machine disturbed the timing of {n} "
            f"{'child' if n == 1 else 'children'} even after {spec.evaluation.latency.retries} retries (the median "
            f"call took over {DISTURBED_SPREAD:g}x the fastest; {DISTURBED_FLAG}=1, not cached), so their latency_ms "
            f"reads high (nasforge results {job_id} --where '{DISTURBED_FLAG} < 1' lists the others); run the job on "
            "a quieter machine, or set evaluation.latency.statistic: min, which reads through such load")


def check_deletable(job_id: str, store: Store, along: Collection[str] = ()) -> Job:
    """The job, when :func:`delete_job` may remove it; else StoreError saying why and what to do.
    ``along``: jobs deleted in the same command (a job that depends on this one may be among them)."""
    job = store.get_job(job_id)
    where, pid = driver_process(job_id)
    if where == "alive":
        raise StoreError(f"job {job_id} is {job.state.value} (driver process {pid} on this machine); "
                         f"stop it with `nasforge cancel {job_id}` first, then delete it")
    if job.state in (JobState.CREATED, JobState.TRAINING, JobState.RUNNING) and where != "gone":
        raise StoreError(f"job {job_id} is {job.state.value}, and its driver is not on this machine (a cluster or "
                         f"another host); stop it with `nasforge cancel {job_id}` first, then delete it")
    users = [u for u in jobs_depending_on(job_id, store) if u not in along]
    if users:
        raise StoreError(f"job {job_id}'s folder holds the trained supernet (or weights) that job(s) "
                         f"{', '.join(users)} search on, and their exports need it; delete those first")
    return job


def delete_job(job_id: str, store: Store) -> Deleted:
    """Remove a job that no driver runs: its store rows (candidates, checkpoints), its folder
    (``NASFORGE_HOME/jobs/JOB``: supernet weights, logs, plots) and its MLflow runs. Exports are
    copies and stay; so does the latency cache, which any job on the same device reuses.

    Refused (StoreError, nothing removed) while the job may still run (cancel it first) or while
    another job reads files from its folder (delete that one first): :func:`check_deletable`.
    """
    job = check_deletable(job_id, store)
    spec = dict(job.spec or {})
    folder = home() / "jobs" / job_id
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0
    gone = store.delete_job(job_id)  # the source of truth first: a failure below leaves files, not a half job
    warnings = []
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        pass
    except OSError as e:
        warnings.append(f"could not remove {folder} ({e.strerror or e}); remove it by hand")
    runs = 0
    tracking = spec.get("tracking") or {}
    if tracking.get("enabled", True):
        from nasforge.tracking.mlflow_tracker import delete_job_runs

        try:
            runs = delete_job_runs(tracking.get("uri"), tracking.get("experiment") or "nasforge", job_id)
        except Exception as e:  # noqa: BLE001 - tracking is a view; the job is gone from the store
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            warnings.append(f"its MLflow runs remain ({first}); delete them in the MLflow UI")
    return Deleted(job_id, gone, size, runs, tuple(warnings))


def cancel_job(job_id: str, store: Store) -> bool:
    """Mark the job cancelled; interrupt its driver process if it runs on this machine."""
    job = store.get_job(job_id)
    if job.state in (JobState.DONE, JobState.CANCELLED, JobState.FAILED):
        return False
    store.set_job_state(job_id, JobState.CANCELLED, error="cancelled by user")
    where, pid = driver_process(job_id)
    if where == "alive" and pid is not None:
        try:
            os.kill(pid, signal.SIGINT)
        except (ProcessLookupError, PermissionError):
            pass
    return True
