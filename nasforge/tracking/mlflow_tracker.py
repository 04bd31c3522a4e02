"""``MlflowTracker``: the job as MLflow runs (a view for people; never the source of truth).

Layout in MLflow: one experiment (``tracking.experiment``); one parent run per job (run name =
job id, the job spec flattened into params, progress metrics by round, tags ``nasforge.job_id``,
``nasforge.role=job``); one nested child run per evaluated candidate (run name
``c<ID>-<key prefix>``, arch choices as params, metrics, tags ``candidate_key``,
``candidate_id``, ``pareto``, ``status``, ``mlflow.parentRunId``).

Promises:

- ``log_candidates`` / ``log_progress`` / ``start_job`` only enqueue: a background thread writes.
  On a database tracking URI (``sqlite:``, ``postgresql:``, ``mysql:``) the child runs of a batch
  are written in bulk (one transaction, MLflow's own table definitions); on a tracking server
  (``http(s)://``) through ``MlflowClient`` (``create_run`` + one ``log_batch`` + end per run).
- ``finish_job`` tags the Pareto runs ``pareto=true`` (others ``false``), logs the artifacts,
  ends the parent run with the job's state and waits until everything is written.
- A resumed job (same job id, new process) reuses its parent run and does not log a candidate
  twice.
- If the tracking URI cannot be reached or written, one warning is logged (logger
  ``nasforge.tracking``), tracking stops for this tracker and no exception reaches the caller;
  HTTP retries and timeouts are capped (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` /
  ``MLFLOW_HTTP_REQUEST_TIMEOUT=5``, set in the environment only when absent) so nothing hangs
  for minutes; MLflow's telemetry and its per-run "View run at" lines are switched off the same way.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import math
import os
import queue
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from nasforge.core.interfaces import Tracker
from nasforge.core.paths import default_tracking_uri, with_installed_driver
from nasforge.core.types import Candidate, CandidateStatus, Job, JobState

log = logging.getLogger("nasforge.tracking")

DB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")
HTTP_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # else one line (and one request) per ended run
}
PARAM_VALUE_MAX = 6000
TAG_VALUE_MAX = 5000
KEY_MAX = 250
PARAMS_PER_BATCH = 100
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. :/]")
_ensured: set[str] = set()
_ensure_lock = threading.Lock()
_JOB_STATUS = {
    JobState.DONE: "FINISHED",
    JobState.FAILED: "FAILED",
    JobState.CANCELLED: "KILLED",
    JobState.INTERRUPTED: "KILLED",
}


def _scheme(uri: str) -> str:
    return urlparse(uri).scheme.split("+", 1)[0].lower()


def is_database_uri(uri: str) -> bool:
    """True for a SQLAlchemy database URI MLflow can use directly as its backend store."""
    return _scheme(uri) in DB_SCHEMES


def default_artifact_root(uri: str) -> str | None:
    """Where artifacts of a new experiment go: ``<folder of the SQLite file>/mlartifacts`` for an
    embedded SQLite store; ``None`` (the server's or MLflow's default) otherwise."""
    if _scheme(uri) != "sqlite":
        return None
    db = uri.split(":///", 1)[1] if ":///" in uri else ""
    if not db or db == ":memory:":
        return None
    return (Path(db).expanduser().resolve().parent / "mlartifacts").as_uri()


def _sqlite_path(uri: str) -> Path | None:
    if _scheme(uri) != "sqlite" or ":///" not in uri:
        return None
    db = uri.split(":///", 1)[1].split("?", 1)[0]
    return None if not db or db == ":memory:" else Path(db).expanduser().resolve()


def apply_http_env_defaults() -> None:
    """Cap MLflow's HTTP retries and timeouts (and switch off its telemetry) unless already set."""
    for k, v in HTTP_ENV_DEFAULTS.items():
        os.environ.setdefault(k, v)


def ensure_tracking_store(uri: str | None = None) -> str:
    """Create or migrate the MLflow database at ``uri`` once; returns the URI used.

    Call it from the coordinator before any worker starts: MLflow's own migrations race when
    several processes open a new database. Creation is serialised across processes on this
    machine by a file lock; SQLite files are switched to WAL so the UI can read while a job
    writes. A server URI (``http(s)://``) needs nothing and is returned as is.
    Raises whatever MLflow raises when the database cannot be created.
    """
    uri = with_installed_driver(uri or default_tracking_uri())
    if not is_database_uri(uri):
        return uri
    with _ensure_lock:
        if uri in _ensured:
            return uri
        apply_http_env_defaults()
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.utils.file_utils import ExclusiveFileLock

        db_file = _sqlite_path(uri)
        if db_file is not None:
            db_file.parent.mkdir(parents=True, exist_ok=True)
            lock_path = db_file.with_name(db_file.name + ".init.lock")
        else:
            digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
            lock_path = Path(tempfile.gettempdir()) / f"nasforge-mlflow-init-{digest}.lock"
        with ExclusiveFileLock(str(lock_path)):
            if db_file is not None:
                import sqlite3

                con = sqlite3.connect(db_file, timeout=60)
                try:
                    con.execute("PRAGMA journal_mode=WAL")
                finally:
                    con.close()
            root = default_artifact_root(uri) or str(Path(tempfile.gettempdir()) / "nasforge-mlartifacts")
            SqlAlchemyStore(uri, root)  # creates the tables on an empty database, checks the schema
        _ensured.add(uri)
    return uri


def _job_run_filter(job_id: str) -> str:
    return f"tags.`nasforge.job_id` = '{job_id}' AND tags.`nasforge.role` = 'job'"


def _children_filter(parent_run_id: str) -> str:
    return f"tags.`mlflow.parentRunId` = '{parent_run_id}'"


def _search_all(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    """Every run of the experiment that matches, page by page."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def delete_job_runs(uri: str | None, experiment: str, job_id: str) -> int:
    """Mark the job's parent run and its candidates' runs deleted in MLflow (as ``mlflow runs
    delete`` does: gone from the UI; ``mlflow gc`` purges the rows) and remove the parent's
    artifacts when they are in a local folder; returns how many runs. Nothing to do when the store
    or the experiment does not exist. Raises what MLflow raises."""
    apply_http_env_defaults()
    uri = with_installed_driver(uri or default_tracking_uri())
    db_file = _sqlite_path(uri)
    if db_file is not None and not db_file.exists():
        return 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return 0

    parents = [r.info.run_id for r in _search_all(client, exp.experiment_id, _job_run_filter(job_id))]
    runs = [r.info.run_id for p in parents for r in _search_all(client, exp.experiment_id, _children_filter(p))]
    runs += parents
    for run_id in runs:
        client.delete_run(run_id)
    for run_id in parents:  # the parent's artifacts (plot, table) in a local folder go too (as `mlflow gc` would)
        artifacts = client.get_run(run_id).info.artifact_uri
        parsed = urlparse(artifacts)
        if parsed.scheme in ("", "file"):
            folder = Path(parsed.path).parent
            if folder.name == run_id:
                shutil.rmtree(folder, ignore_errors=True)
    return len(runs)


# ---- value shaping ---------------------------------------------------------------------------
def mlflow_key(name: str) -> str:
    """A metric / param / tag key MLflow accepts (bad characters -> ``_``, at most 250 chars)."""
    return _BAD_KEY_CHARS.sub("_", str(name))[:KEY_MAX] or "_"


def flatten(spec: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b.c": "value"}``; lists and scalars as JSON / text."""
    out: dict[str, str] = {}
    for k, v in spec.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            text = v if isinstance(v, str) else json.dumps(v, default=str, sort_keys=True)
            out[mlflow_key(key)] = text[:PARAM_VALUE_MAX]
    return out


def child_run_name(c: Candidate) -> str:
    return f"c{c.id}-{c.key[:8]}"


def _ms(dt: Any) -> int | None:
    return None if dt is None else int(dt.timestamp() * 1000)


@dataclass
class _ChildRow:
    """Everything one child run needs, shaped for MLflow."""

    run_id: str
    name: str
    status: str
    start_ms: int
    end_ms: int
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)


def _child_row(c: Candidate, parent_run_id: str, job_id: str, user: str) -> _ChildRow:
    end = _ms(c.finished_at) or int(time.time() * 1000)
    start = end - int((c.duration_s or 0.0) * 1000) if c.duration_s is not None else (_ms(c.created_at) or end)
    params = {mlflow_key(k): str(v)[:PARAM_VALUE_MAX] for k, v in c.arch.items()}
    metrics = {mlflow_key(k): float(v) for k, v in c.metrics.items()}
    if c.duration_s is not None:
        metrics.setdefault("duration_s", float(c.duration_s))
    tags = {
        "mlflow.runName": child_run_name(c),
        "mlflow.parentRunId": parent_run_id,
        "mlflow.user": user,
        "mlflow.source.name": "nasforge",
        "nasforge.job_id": job_id,
        "nasforge.role": "candidate",
        "candidate_key": c.key,
        "candidate_id": str(c.id),
        "pareto": "true" if c.pareto else "false",
        "status": c.status.value,
        "space": f"{c.arch.space}@{c.arch.version}",
        "generation": str(c.generation),
    }
    if c.worker:
        tags["worker"] = c.worker[:TAG_VALUE_MAX]
    if c.error:
        tags["error"] = c.error[:TAG_VALUE_MAX]
    if c.device:
        tags["device"] = json.dumps(dict(c.device), default=str, sort_keys=True)[:TAG_VALUE_MAX]
    status = "FINISHED" if c.status == CandidateStatus.DONE else "FAILED"
    return _ChildRow(uuid.uuid4().hex, child_run_name(c), status, start, end, params, metrics, tags)


# ---- writers: how child runs reach MLflow ----------------------------------------------------
class _BulkDbWriter:
    """Child runs straight into MLflow's database tables, one transaction per batch.

    Uses MLflow's own table definitions (``mlflow.store.tracking.dbmodels.models``), so the rows
    are the ones ``SqlAlchemyStore.create_run`` / ``log_batch`` / ``update_run_info`` would write.
    """

    def __init__(self, uri: str) -> None:
        from sqlalchemy import create_engine, event

        self.engine = create_engine(uri, pool_pre_ping=True)
        if _scheme(uri) == "sqlite":

            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
                dbapi_conn.execute("PRAGMA busy_timeout = 60000")
                dbapi_conn.execute("PRAGMA synchronous = NORMAL")

    def write(self, experiment_id: str, artifact_location: str, rows: Sequence[_ChildRow]) -> None:
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
        from mlflow.utils.uri import append_to_uri_path
        from sqlalchemy import insert

        run_rows, tag_rows, param_rows, metric_rows, latest_rows = [], [], [], [], []
        for r in rows:
            run_rows.append(dict(
                run_uuid=r.run_id, name=r.name, source_type="UNKNOWN", source_name="", entry_point_name="",
                user_id=r.tags.get("mlflow.user"), status=r.status, start_time=r.start_ms, end_time=r.end_ms,
                deleted_time=None, source_version="", lifecycle_stage="active",
                artifact_uri=append_to_uri_path(artifact_location, r.run_id, "artifacts"),
                experiment_id=int(experiment_id),
            ))
            tag_rows.extend(dict(key=k, value=v, run_uuid=r.run_id) for k, v in r.tags.items())
            param_rows.extend(dict(key=k, value=v, run_uuid=r.run_id) for k, v in r.params.items())
            for k, v in r.metrics.items():
                is_nan = math.isnan(v)
                value = 0.0 if is_nan else max(min(v, 1.7976931348623157e308), -1.7976931348623157e308)
                row = dict(key=k, value=value, timestamp=r.end_ms, step=0, is_nan=is_nan, run_uuid=r.run_id)
                metric_rows.append(row)
                latest_rows.append(dict(row))
        with self.engine.begin() as conn:
            conn.execute(insert(SqlRun.__table__), run_rows)
            for table, data in ((SqlTag, tag_rows), (SqlParam, param_rows), (SqlMetric, metric_rows),
                                (SqlLatestMetric, latest_rows)):
                if data:
                    conn.execute(insert(table.__table__), data)

    def set_tag(self, run_ids: Sequence[str], key: str, value: str) -> None:
        from mlflow.store.tracking.dbmodels.models import SqlTag
        from sqlalchemy import update

        with self.engine.begin() as conn:
            for i in range(0, len(run_ids), 500):
                chunk = list(run_ids[i : i + 500])
                conn.execute(update(SqlTag.__table__)
                             .where(SqlTag.__table__.c.key == key, SqlTag.__table__.c.run_uuid.in_(chunk))
                             .values(value=value))

    def close(self) -> None:
        self.engine.dispose()


class _ClientWriter:
    """Child runs through ``MlflowClient`` (tracking servers): three calls per run."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def write(self, experiment_id: str, artifact_location: str, rows: Sequence[_ChildRow]) -> list[str]:
        from mlflow.entities import Metric, Param

        ids = []
        for r in rows:
            run = self.client.create_run(experiment_id, start_time=r.start_ms, tags=r.tags, run_name=r.name)
            metrics = [Metric(k, v, r.end_ms, 0) for k, v in r.metrics.items()]
            params = [Param(k, v) for k, v in r.params.items()]
            for i in range(0, max(len(params), 1), PARAMS_PER_BATCH):
                self.client.log_batch(run.info.run_id, metrics=metrics if i == 0 else [],
                                      params=params[i : i + PARAMS_PER_BATCH])
            self.client.set_terminated(run.info.run_id, r.status, end_time=r.end_ms)
            ids.append(run.info.run_id)
        return ids

    def set_tag(self, run_ids: Sequence[str], key: str, value: str) -> None:
        for run_id in run_ids:
            self.client.set_tag(run_id, key, value)

    def close(self) -> None:
        pass


# ---- the tracker -----------------------------------------------------------------------------
@dataclass
class _JobRuns:
    parent_run_id: str
    children: dict[str, str] = field(default_factory=dict)  # candidate key -> run id
    pareto: dict[str, bool] = field(default_factory=dict)  # candidate key -> pareto tag written


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


class MlflowTracker(Tracker):
    """Logs jobs and candidates to MLflow at ``uri`` (default: ``NASFORGE_HOME/mlflow.db``).

    ``uri``: a tracking URI (``sqlite:///…``, ``postgresql://…``, ``http://host:5000``).
    ``experiment``: experiment name (created when absent; artifacts of a new experiment on an
    embedded SQLite store go to ``mlartifacts/`` beside the database file).
    ``flush_timeout_s``: the longest ``finish_job`` / ``close`` wait for the writer thread.
    Construction creates the MLflow database when needed (:func:`ensure_tracking_store`); a
    failure there only warns. See the module docstring for what is logged and the promises.
    """

    def __init__(self, uri: str | None = None, experiment: str = "nasforge", *, flush_timeout_s: float = 120.0
                 ) -> None:
        apply_http_env_defaults()
        self.uri = with_installed_driver(uri or default_tracking_uri())
        self.experiment = experiment
        self.flush_timeout_s = flush_timeout_s
        self.disabled_reason: str | None = None
        self.user = _user()
        self._jobs: dict[str, _JobRuns] = {}
        self._experiment_id: str | None = None
        self._artifact_location = ""
        self._client: Any = None
        self._writer: Any = None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        try:
            ensure_tracking_store(self.uri)
        except Exception as e:  # noqa: BLE001 - tracking is a view: warn and go on
            self._disable(f"cannot create the MLflow store: {e}")
        self._thread = threading.Thread(target=self._loop, name="nasforge-mlflow-writer", daemon=True)
        self._thread.start()

    # ---- Tracker API (all non-blocking except finish_job / close) ---------------------------
    def start_job(self, job: Job) -> None:
        self._put(("start", job))

    def log_candidates(self, job_id: str, candidates: Sequence[Candidate]) -> None:
        if candidates:
            self._put(("candidates", job_id, list(candidates)))

    def log_progress(self, job_id: str, step: int, metrics: Mapping[str, float]) -> None:
        self._put(("progress", job_id, int(step), dict(metrics), int(time.time() * 1000)))

    def finish_job(
        self, job_id: str, state: JobState, pareto: Sequence[Candidate], artifacts: Mapping[str, Path]
    ) -> None:
        self._put(("finish", job_id, JobState(state), [c.key for c in pareto], dict(artifacts)))
        self.flush()

    def flush(self) -> bool:
        """Wait until everything queued so far is written (or dropped); False on timeout."""
        if self._closed or not self._thread.is_alive():
            return True
        marker = _Flush()
        self._queue.put(marker)
        ok = marker.done.wait(self.flush_timeout_s)
        if not ok:
            log.warning("MLflow tracking: writer did not finish within %.0f s; some runs may be missing "
                        "(the store has every result)", self.flush_timeout_s)
        return ok

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=self.flush_timeout_s)
        if self._writer is not None:
            self._writer.close()

    def run_id(self, job_id: str) -> str | None:
        """The parent run of a job logged by this tracker (after a flush), or None."""
        runs = self._jobs.get(job_id)
        return runs.parent_run_id if runs else None

    # ---- background thread ----------------------------------------------------------------
    def _put(self, op: Any) -> None:
        if not self._closed and self.disabled_reason is None:
            self._queue.put(op)

    def _disable(self, reason: str) -> None:
        if self.disabled_reason is None:
            self.disabled_reason = reason
            log.warning("MLflow tracking at %s (experiment %r) failed and is off for this tracker: %s. "
                        "The search goes on; the store keeps every result.", _redact(self.uri), self.experiment,
                        reason)

    def _loop(self) -> None:
        while True:
            ops = [self._queue.get()]
            while True:  # drain what is already queued: one bulk write per burst
                try:
                    ops.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = False
            pending: list[Any] = []
            for op in ops:
                if op is None:
                    stop = True
                elif isinstance(op, _Flush):
                    self._run_ops(pending)
                    pending = []
                    op.done.set()
                else:
                    pending.append(op)
            self._run_ops(pending)
            if stop:
                return

    def _run_ops(self, ops: list[Any]) -> None:
        i = 0
        while i < len(ops):
            if self.disabled_reason is not None:
                return
            op = ops[i]
            try:
                if op[0] == "candidates":  # merge consecutive candidate batches of one job
                    cands = list(op[2])
                    while i + 1 < len(ops) and ops[i + 1][0] == "candidates" and ops[i + 1][1] == op[1]:
                        i += 1
                        cands.extend(ops[i][2])
                    self._do_candidates(op[1], cands)
                elif op[0] == "progress":
                    batch = [op]
                    while i + 1 < len(ops) and ops[i + 1][0] == "progress" and ops[i + 1][1] == op[1]:
                        i += 1
                        batch.append(ops[i])
                    self._do_progress(op[1], batch)
                elif op[0] == "start":
                    self._do_start(op[1])
                elif op[0] == "finish":
                    self._do_finish(*op[1:])
            except Exception as e:  # noqa: BLE001 - tracking is a view: warn once, stop
                self._disable(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
            i += 1

    # ---- operations (writer thread only) ---------------------------------------------------
    def _connect(self) -> None:
        if self._client is not None:
            return
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.uri)
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                client.create_experiment(self.experiment, artifact_location=default_artifact_root(self.uri))
            except MlflowException as e:  # created meanwhile by another coordinator
                if "already exists" not in str(e).lower():
                    raise
            exp = client.get_experiment_by_name(self.experiment)
        if exp.lifecycle_stage != "active":
            client.restore_experiment(exp.experiment_id)
        self._experiment_id = exp.experiment_id
        self._artifact_location = exp.artifact_location
        self._writer = _BulkDbWriter(self.uri) if is_database_uri(self.uri) else _ClientWriter(client)
        self._client = client

    def _job_runs(self, job_id: str, job: Job | None = None) -> _JobRuns:
        """The job's parent run: the one logged earlier (a resumed job) or a new one."""
        self._connect()
        runs = self._jobs.get(job_id)
        if runs is not None:
            return runs
        client = self._client
        found = client.search_runs([self._experiment_id], filter_string=_job_run_filter(job_id), max_results=1)
        if found:
            parent = found[0].info.run_id
            if found[0].info.status != "RUNNING":
                client.update_run(parent, status="RUNNING")
            runs = _JobRuns(parent)
            for r in _search_all(client, self._experiment_id, _children_filter(parent)):  # logged before the restart
                key = r.data.tags.get("candidate_key")
                if key:
                    runs.children[key] = r.info.run_id
                    runs.pareto[key] = r.data.tags.get("pareto") == "true"
        else:
            tags = {"nasforge.job_id": job_id, "nasforge.role": "job", "mlflow.user": self.user,
                    "mlflow.source.name": "nasforge"}
            start_ms = None
            if job is not None:
                tags.update({"nasforge.job_name": job.name, "nasforge.seed": str(job.seed)})
                start_ms = _ms(job.started_at or job.created_at)
            run = client.create_run(self._experiment_id, start_time=start_ms, tags=tags, run_name=job_id)
            runs = _JobRuns(run.info.run_id)
            if job is not None:
                from mlflow.entities import Param

                params = [Param(k, v) for k, v in flatten(job.spec).items()]
                for i in range(0, len(params), PARAMS_PER_BATCH):
                    client.log_batch(runs.parent_run_id, params=params[i : i + PARAMS_PER_BATCH])
        self._jobs[job_id] = runs
        return runs

    def _do_start(self, job: Job) -> None:
        self._job_runs(job.id, job)

    def _do_candidates(self, job_id: str, cands: list[Candidate]) -> None:
        runs = self._job_runs(job_id)
        rows: list[_ChildRow] = []
        keys: list[str] = []
        for c in cands:
            if c.key in runs.children or c.key in keys:
                continue
            if c.status not in (CandidateStatus.DONE, CandidateStatus.FAILED):
                continue
            rows.append(_child_row(c, runs.parent_run_id, job_id, self.user))
            keys.append(c.key)
        if not rows:
            return
        ids = self._writer.write(self._experiment_id, self._artifact_location, rows)
        for n, (key, row) in enumerate(zip(keys, rows, strict=True)):
            runs.children[key] = ids[n] if ids else row.run_id
            runs.pareto[key] = row.tags["pareto"] == "true"

    def _do_progress(self, job_id: str, batch: list[Any]) -> None:
        from mlflow.entities import Metric

        runs = self._job_runs(job_id)
        metrics = [Metric(mlflow_key(k), float(v), ts, step)
                   for _, _, step, values, ts in batch for k, v in values.items()]
        for i in range(0, len(metrics), 1000):
            self._client.log_batch(runs.parent_run_id, metrics=metrics[i : i + 1000])

    def _do_finish(self, job_id: str, state: JobState, pareto_keys: list[str], artifacts: dict[str, Path]) -> None:
        runs = self._job_runs(job_id)
        front = set(pareto_keys)
        to_true = [runs.children[k] for k in runs.children if k in front and not runs.pareto.get(k)]
        to_false = [runs.children[k] for k in runs.children if k not in front and runs.pareto.get(k)]
        if to_true:
            self._writer.set_tag(to_true, "pareto", "true")
        if to_false:
            self._writer.set_tag(to_false, "pareto", "false")
        for k in runs.children:
            runs.pareto[k] = k in front
        client = self._client
        for name, path in artifacts.items():
            path = Path(path)
            if not path.is_file():
                log.warning("MLflow tracking: artifact %s not found at %s; skipped", name, path)
                continue
            if path.name == name:
                client.log_artifact(runs.parent_run_id, str(path))
            else:
                with tempfile.TemporaryDirectory() as d:
                    renamed = Path(d) / name
                    shutil.copyfile(path, renamed)
                    client.log_artifact(runs.parent_run_id, str(renamed))
        client.set_tag(runs.parent_run_id, "nasforge.state", state.value)
        client.set_tag(runs.parent_run_id, "nasforge.pareto_size", str(len(front)))
        status = _JOB_STATUS.get(state)
        if status is not None:
            client.set_terminated(runs.parent_run_id, status)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "nasforge"


def _redact(uri: str) -> str:
    p = urlparse(uri)
    if p.password:
        return uri.replace(f":{p.password}@", ":***@")
    return uri
