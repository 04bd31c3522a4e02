"""``nasforge delete``: a finished job's store rows, folder and MLflow runs go; running jobs, jobs
another job searches on, and unconfirmed deletes are refused with nothing removed (real SQLite
store, real MLflow store)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from nasforge.cli import main
from nasforge.core.paths import job_dir
from nasforge.core.spec import JobSpec
from nasforge.core.types import EvalResult, JobState
from nasforge.spaces import SPACES
from nasforge.store import open_store
from nasforge.tracking import MlflowTracker

QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart.yaml"


def _job(store: Any, name: str, state: JobState = JobState.DONE, checkpoint: str | None = None) -> str:
    """A quickstart job with 3 done candidates, a 'supernet' file in its folder and its MLflow runs."""
    spec = JobSpec.model_validate(yaml.safe_load(QUICKSTART.read_text()))
    data = spec.model_dump(mode="json")
    if checkpoint:
        data["supernet"]["checkpoint"] = checkpoint
    space = SPACES.get(spec.space.name)(spec.space.options)
    rng = np.random.default_rng(0)
    archs = list({a.key(): a for a in (space.sample(rng) for _ in range(3))}.values())
    job = store.create_job(data, name=name, seed=0)
    store.add_candidates(job.id, archs, generation=0)
    store.record_results(job.id, [EvalResult(a.key(), {"accuracy": 0.9, "latency_ms": 1.0}) for a in archs])
    store.set_job_state(job.id, state)
    (job_dir(job.id) / "supernet").mkdir()
    (job_dir(job.id) / "supernet" / "weights.safetensors").write_bytes(b"\0" * 2_000_000)
    tracker = MlflowTracker(None, spec.tracking.experiment)
    tracker.start_job(store.get_job(job.id))
    tracker.log_candidates(job.id, store.get_candidates(job.id))
    plot = job_dir(job.id) / "pareto.png"
    plot.write_bytes(b"png")
    tracker.finish_job(job.id, state, [], {"pareto.png": plot})
    tracker.close()
    return job.id


def _runs(home: Path) -> dict[str, int]:
    with sqlite3.connect(home / "mlflow.db") as con:
        return dict(con.execute("select lifecycle_stage, count(*) from runs group by 1").fetchall())


def test_delete_removes_rows_folder_and_runs_and_refuses_what_would_lose_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    store = open_store(None)
    trained = _job(store, "train")
    search = _job(store, "search", checkpoint=str(job_dir(trained)))
    running = _job(store, "run", state=JobState.RUNNING)
    (tmp_path / "exports" / "best").mkdir(parents=True)  # an export is a copy: it stays
    assert _runs(tmp_path) == {"active": 12}
    assert len(list((tmp_path / "mlartifacts").glob("*/artifacts/pareto.png"))) == 3
    capsys.readouterr()

    def refused(argv: list[str], says: str) -> None:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
        assert {j.id for j in store.list_jobs()} == {trained, search, running}
        assert all((tmp_path / "jobs" / j / "supernet" / "weights.safetensors").exists()
                   for j in (trained, search, running))
        assert _runs(tmp_path) == {"active": 12}

    refused(["delete", trained, "--yes"], f"job(s) {search} search on, and their exports need it; delete those first")
    refused(["delete", running, "--yes"], f"stop it with `nasforge cancel {running}` first")
    refused(["delete", search, trained, running, "--yes"], f"`nasforge cancel {running}` first")  # all checked first
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    refused(["delete", search], "add --yes to confirm (nothing was deleted)")
    refused(["delete", "nosuch", "-y"], "no job 'nosuch'")

    # a driver that still runs here (this process stands in for it) is refused even once cancelled
    (job_dir(running) / "driver.pid").write_text(f"{os.getpid()} {os.uname().nodename}\n")
    store.set_job_state(running, JobState.CANCELLED)  # as `nasforge cancel` leaves it (it would SIGINT us)
    refused(["delete", running, "-y"], f"(driver process {os.getpid()} on this machine)")
    (job_dir(running) / "driver.pid").unlink()

    capsys.readouterr()
    assert main(["delete", trained, search, "--yes"]) == 0  # the search goes first, then what it searched on
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == [f"deleted job {search}", f"deleted job {trained}"]
    assert out[0].endswith("3 candidates, 2.0 MB of job files, 4 MLflow runs"), out
    assert [j.id for j in store.list_jobs()] == [running]
    assert not (tmp_path / "jobs" / trained).exists() and not (tmp_path / "jobs" / search).exists()
    assert _runs(tmp_path) == {"active": 4, "deleted": 8}
    assert len(list((tmp_path / "mlartifacts").glob("*/artifacts/pareto.png"))) == 1  # the deleted jobs' went too
    assert (tmp_path / "exports" / "best").is_dir()
    assert main(["results", running]) == 0  # the other job is whole

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["delete", running]) == 1 and [j.id for j in store.list_jobs()] == [running]
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(["delete", running]) == 0 and store.list_jobs() == []
    assert _runs(tmp_path) == {"deleted": 12}
