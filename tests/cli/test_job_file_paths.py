"""Relative paths in a job file: from the current folder, else from the job file's folder; stored
absolute, so the workers, resume and export find them from any folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nasforge.compose import load_and_validate
from nasforge.core.errors import JobSpecError

JOB = """
name: paths
space: {name: bignas_cnn}
supernet: {name: bignas}
training: {epochs: 1}
strategy: {name: random}
objectives: [{metric: accuracy, direction: maximize}]
budget: {evaluations: 4}
evaluation: {dataset: {name: arrays, path: DATA}}
"""


def test_a_path_relative_to_the_job_file_is_found_from_another_folder(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "jobs").mkdir()
    rng = np.random.default_rng(0)
    # 28x28: the default space (preset mnist) takes them; a 12x12 dataset is refused before its path matters
    np.savez(project / "data" / "images.npz", X=rng.random((60, 28, 28), dtype=np.float32), y=np.arange(60) % 10)
    job = project / "jobs" / "job.yaml"
    job.write_text(JOB.replace("DATA", "../data/images.npz"))
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)  # it said "evaluation.dataset.path: ../data/images.npz does not exist"
    spec, _ = load_and_validate(job)
    assert spec.evaluation.dataset.path == str(project / "data" / "images.npz")
    monkeypatch.chdir(project)  # from the current folder first, stored absolute as well
    job.write_text(JOB.replace("DATA", "data/images.npz"))
    spec, _ = load_and_validate(job)
    assert spec.evaluation.dataset.path == str(project / "data" / "images.npz")
    monkeypatch.chdir(tmp_path)
    job.write_text(JOB.replace("DATA", "data/nowhere.npz"))
    with pytest.raises(JobSpecError, match="evaluation.dataset.path: data/nowhere.npz does not exist"):
        load_and_validate(job)


def test_a_latency_table_beside_the_job_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guided strategy's table: NASFORGE_HOME first (where profile-device writes it), then the
    current folder or the job file's folder, as other paths of a job file."""
    from nasforge.compose import _absolute_paths
    from nasforge.core.spec import load_job_file

    home, project = tmp_path / "home", tmp_path / "project"
    (home / "latency").mkdir(parents=True)
    project.mkdir()
    monkeypatch.setenv("NASFORGE_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    job = project / "job.yaml"
    job.write_text(JOB.replace("strategy: {name: random}", "strategy: {name: guided, options: {latency_table: t.json}}"))
    spec = _absolute_paths(load_job_file(job), job)
    assert spec.strategy.options["latency_table"] == "t.json"  # nowhere: left to the strategy's error
    (project / "t.json").write_text("{}")
    spec = _absolute_paths(load_job_file(job), job)
    assert spec.strategy.options["latency_table"] == str(project / "t.json")
    (home / "t.json").write_text("{}")  # NASFORGE_HOME's comes first
    assert _absolute_paths(load_job_file(job), job).strategy.options["latency_table"] == "t.json"


def test_validating_a_job_on_a_handful_of_images_warns_that_accuracy_is_coarse(tmp_path: Path) -> None:
    from nasforge.core.errors import NasforgeWarning

    rng = np.random.default_rng(1)
    np.savez(tmp_path / "few.npz", X=rng.random((150, 28, 28), dtype=np.float32), y=np.arange(150) % 10)
    job = tmp_path / "job.yaml"
    job.write_text(JOB.replace("DATA", str(tmp_path / "few.npz")))
    # (each message is given once per process: a size no other test uses)
    with pytest.warns(NasforgeWarning, match=r"evaluation.split: candidates are scored on 15 val images, so one "
                                             r"image moves accuracy by 6.7 points.*raise evaluation.dataset.val_fraction"):
        load_and_validate(job)
