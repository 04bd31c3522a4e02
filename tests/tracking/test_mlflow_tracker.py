"""MlflowTracker against a real MLflow SQLite store, read back through MLflow's own client."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import time
import traceback
from pathlib import Path

import pytest

from nasforge.core.types import CandidateStatus, JobState
from nasforge.store.export_formats import write_parquet
from nasforge.tracking import MlflowTracker, ensure_tracking_store
from nasforge.tracking.plots import pareto_plot
from tests.tracking.helpers import PG_SERVER, LoggedJob, fresh_pg_database, make_job


def _client(uri: str):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(uri: str, experiment: str) -> list:  # type: ignore[type-arg]
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} was not created"
    return client.search_runs([exp.experiment_id], max_results=1000)


def _artifacts(lj: LoggedJob, out: Path) -> dict[str, Path]:
    """The three finish artifacts, made by the real writers."""
    front = [c for c in lj.candidates if c.pareto]
    art = {"candidates.parquet": write_parquet(lj.candidates, out / "candidates.parquet"),
           "pareto.png": pareto_plot(lj.candidates, "latency_ms", "accuracy", out / "pareto.png")}
    (out / "front-best.json").write_text(json.dumps({"key": front[0].key}) + "\n")
    art["best.json"] = out / "front-best.json"  # logged under the artifact name, not the file name
    return art


def test_parent_and_child_runs(mlflow_uri: str, experiment: str, logged_job: LoggedJob, tmp_path: Path) -> None:
    lj = logged_job
    tracker = MlflowTracker(mlflow_uri, experiment)
    tracker.start_job(lj.job)
    t0 = time.perf_counter()
    tracker.log_candidates(lj.job.id, lj.candidates[:6])
    tracker.log_candidates(lj.job.id, lj.candidates[6:])
    tracker.log_candidates(lj.job.id, lj.candidates[:3])  # logged again: no second run
    returned_in = time.perf_counter() - t0
    tracker.log_progress(lj.job.id, 1, {"evaluated": 6.0, "best_accuracy": 0.7})
    tracker.log_progress(lj.job.id, 2, {"evaluated": 12.0, "best_accuracy": 0.9})
    lj.store.set_pareto(lj.job.id, [lj.candidates[-2].key, lj.candidates[3].key])
    lj.candidates = lj.store.get_candidates(lj.job.id)
    pareto = [c for c in lj.candidates if c.pareto]
    tracker.finish_job(lj.job.id, JobState.DONE, pareto, _artifacts(lj, tmp_path))
    tracker.close()
    assert tracker.disabled_reason is None
    assert returned_in < 0.5, f"log_candidates blocked for {returned_in:.3f} s"

    runs = _runs(mlflow_uri, experiment)
    parents = [r for r in runs if r.data.tags.get("nasforge.role") == "job"]
    children = [r for r in runs if r.data.tags.get("nasforge.role") == "candidate"]
    assert len(parents) == 1 and len(children) == len(lj.candidates) == 12
    parent = parents[0]
    assert parent.info.run_name == lj.job.id and parent.info.status == "FINISHED"
    assert parent.data.params["budget.evaluations"] == "12" and parent.data.params["strategy.name"] == "random"
    assert parent.data.tags["nasforge.state"] == "done"
    history = _client(mlflow_uri).get_metric_history(parent.info.run_id, "evaluated")
    assert [(m.step, m.value) for m in history] == [(1, 6.0), (2, 12.0)]

    by_key = {r.data.tags["candidate_key"]: r for r in children}
    assert set(by_key) == {c.key for c in lj.candidates}
    for c in lj.candidates:
        r = by_key[c.key]
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.data.tags["candidate_id"] == str(c.id)
        assert r.info.run_name == f"c{c.id}-{c.key[:8]}"
        assert r.data.params == {k: str(v) for k, v in c.arch.items()}
        assert r.data.tags["pareto"] == ("true" if c.pareto else "false")
        if c.status == CandidateStatus.DONE:
            assert r.info.status == "FINISHED"
            assert r.data.metrics["latency_ms"] == c.metrics["latency_ms"]
            assert r.info.end_time - r.info.start_time == pytest.approx(50, abs=2)
        else:
            assert r.info.status == "FAILED" and r.data.tags["error"] == c.error
    assert str(by_key[lj.candidates[1].key].data.metrics["accuracy"]) == "nan"

    arts = {a.path for a in _client(mlflow_uri).list_artifacts(parent.info.run_id)}
    assert arts == {"candidates.parquet", "pareto.png", "best.json"}


def test_resumed_job_reuses_runs_and_retags_the_front(mlflow_uri: str, experiment: str, logged_job: LoggedJob) -> None:
    lj = logged_job
    first = MlflowTracker(mlflow_uri, experiment)
    first.start_job(lj.job)
    first.log_candidates(lj.job.id, lj.candidates[:8])
    first.finish_job(lj.job.id, JobState.INTERRUPTED, [lj.candidates[0]], {})
    first.close()
    runs = _runs(mlflow_uri, experiment)
    assert next(r for r in runs if r.data.tags.get("nasforge.role") == "job").info.status == "KILLED"

    second = MlflowTracker(mlflow_uri, experiment)  # a new process would start the same way
    second.start_job(lj.job)
    second.log_candidates(lj.job.id, lj.candidates)  # 8 known, 4 new
    second.finish_job(lj.job.id, JobState.DONE, [lj.candidates[2], lj.candidates[10]], {})
    second.close()
    runs = _runs(mlflow_uri, experiment)
    parents = [r for r in runs if r.data.tags.get("nasforge.role") == "job"]
    children = [r for r in runs if r.data.tags.get("nasforge.role") == "candidate"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 12 and len({r.data.tags["candidate_key"] for r in children}) == 12
    flagged = {r.data.tags["candidate_key"] for r in children if r.data.tags["pareto"] == "true"}
    assert flagged == {lj.candidates[2].key, lj.candidates[10].key}


def test_unreachable_tracking_server_warns_once_and_never_blocks(
    logged_job: LoggedJob, caplog: pytest.LogCaptureFixture
) -> None:
    lj = logged_job
    caplog.set_level(logging.WARNING, logger="nasforge.tracking")
    t0 = time.perf_counter()
    tracker = MlflowTracker("http://127.0.0.1:9", "unreachable", flush_timeout_s=60)
    tracker.start_job(lj.job)
    for _ in range(3):
        tracker.log_candidates(lj.job.id, lj.candidates)
        tracker.log_progress(lj.job.id, 1, {"evaluated": 1.0})
    tracker.finish_job(lj.job.id, JobState.DONE, lj.candidates[:1], {})
    tracker.close()
    tracker.close()  # idempotent
    elapsed = time.perf_counter() - t0
    assert elapsed < 20, f"an unreachable tracking server held the job for {elapsed:.1f} s"
    assert tracker.disabled_reason is not None
    warnings = [r for r in caplog.records if r.name == "nasforge.tracking" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "127.0.0.1:9" in warnings[0].getMessage()


def test_pareto_plot_highlights_the_front(logged_job: LoggedJob, tmp_path: Path) -> None:
    import matplotlib.image as mpimg
    import numpy as np

    lj = logged_job
    lj.store.set_pareto(lj.job.id, [lj.candidates[0].key, lj.candidates[-2].key])
    cands = lj.store.get_candidates(lj.job.id)
    png = pareto_plot(cands, "latency_ms", "accuracy", tmp_path / "sub" / "pareto.png")
    img = mpimg.imread(png)
    assert img.shape[:2] == (480, 640)
    front_red = np.array([0xD1, 0x49, 0x5B]) / 255
    others_grey = np.array([0x9A, 0xA5, 0xB1]) / 255
    assert (np.abs(img[..., :3] - front_red).max(axis=-1) < 0.05).sum() > 50  # the front is drawn
    assert (np.abs(img[..., :3] - others_grey).max(axis=-1) < 0.08).sum() > 20  # and the other points
    # no front flagged: no red at all
    plain = pareto_plot(lj.candidates, "latency_ms", "accuracy", tmp_path / "plain.png")
    assert (np.abs(mpimg.imread(plain)[..., :3] - front_red).max(axis=-1) < 0.05).sum() == 0


def _ensure_in_process(uri: str, n: int, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    from datetime import datetime, timezone

    from nasforge.core.types import Job

    try:
        ensure_tracking_store(uri)
        tracker = MlflowTracker(uri, "shared")
        job = Job(id=f"coordinator-{n}", name="coordinator", spec={"n": n}, state=JobState.RUNNING, seed=n,
                  created_at=datetime.now(timezone.utc))
        tracker.start_job(job)
        tracker.finish_job(job.id, JobState.DONE, [], {})
        tracker.close()
        queue.put(("ok", tracker.disabled_reason))
    except BaseException:  # noqa: BLE001 - reported to the parent
        queue.put(("error", traceback.format_exc()))


@pytest.mark.slow
def test_three_coordinators_create_a_new_tracking_store_at_once(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_process, args=(uri, n, queue)) for n in range(3)]
    for p in procs:
        p.start()
    out = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert all(status == "ok" and detail is None for status, detail in out), out
    runs = _runs(uri, "shared")
    assert sorted(r.info.run_name for r in runs) == ["coordinator-0", "coordinator-1", "coordinator-2"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_many_candidates_are_logged_in_bulk(mlflow_uri: str, experiment: str, tmp_path: Path) -> None:
    lj = make_job(tmp_path / "big.db", n=300, name="bulk")
    tracker = MlflowTracker(mlflow_uri, experiment)
    tracker.start_job(lj.job)
    tracker.flush()
    t0 = time.perf_counter()
    for i in range(0, 300, 50):
        tracker.log_candidates(lj.job.id, lj.candidates[i : i + 50])
    tracker.finish_job(lj.job.id, JobState.DONE, [], {})
    elapsed = time.perf_counter() - t0
    tracker.close()
    assert len(_runs(mlflow_uri, experiment)) == 301
    print(f"\n300 candidate runs written in {elapsed:.2f} s ({elapsed / 300 * 1e3:.2f} ms per candidate)")
    assert elapsed < 30


@pytest.mark.slow
@pytest.mark.postgres
def test_tracking_on_a_postgresql_backend(tmp_path: Path) -> None:
    """The cluster profile: MLflow's backend on PostgreSQL, child runs written in bulk."""
    with fresh_pg_database("mlflow") as uri:
        if uri is None:
            pytest.skip(f"PostgreSQL server {PG_SERVER} unreachable; set NASFORGE_TEST_PG to a server URL")
        lj = make_job(tmp_path / "store.db", n=20, name="pg-job")
        lj.store.set_pareto(lj.job.id, [lj.candidates[0].key, lj.candidates[2].key])
        cands = lj.store.get_candidates(lj.job.id)
        # the plain URL a user writes: SQLAlchemy 2.1 reads it as psycopg v3, which is not installed
        tracker = MlflowTracker(uri.replace("postgresql+psycopg2://", "postgresql://", 1), "on-postgres")
        tracker.start_job(lj.job)
        tracker.log_candidates(lj.job.id, cands)
        tracker.finish_job(lj.job.id, JobState.DONE, [c for c in cands if c.pareto], {})
        tracker.close()
        assert tracker.disabled_reason is None
        runs = _runs(uri, "on-postgres")
        children = [r for r in runs if r.data.tags.get("nasforge.role") == "candidate"]
        assert len(runs) == 21 and len(children) == 20
        assert {r.data.tags["candidate_key"] for r in children if r.data.tags["pareto"] == "true"} == {
            cands[0].key, cands[2].key}
        nan_run = next(r for r in children if r.data.tags["candidate_key"] == cands[1].key)
        assert str(nan_run.data.metrics["accuracy"]) == "nan"
