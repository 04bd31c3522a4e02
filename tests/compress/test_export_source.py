"""``model.source: export:NAME``: where the folder of a `nasforge export` is looked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasforge.core.errors import JobSpecError
from nasforge.workers.compression_workload import export_source_folder


def _export(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "arch.json").write_text("{}")
    return folder


def test_the_name_given_to_export_o_is_found_in_the_exports_folder(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("NASFORGE_HOME", str(home))
    monkeypatch.chdir(elsewhere)
    best = _export(home / "exports" / "best")
    assert export_source_folder("export:best") == best.resolve()  # it said "export folder best does not exist"
    assert export_source_folder(f"export:{best}") == best.resolve()
    mine = _export(tmp_path / "project" / "mine")  # relative to the folder the job was submitted from
    assert export_source_folder("export:mine", [str(tmp_path / "project")]) == mine.resolve()
    local = _export(elsewhere / "best")  # the current folder comes before the exports folder
    assert export_source_folder("export:best") == local.resolve()
    (tmp_path / "project" / "plain").mkdir()  # a folder, but not an export
    with pytest.raises(JobSpecError, match=r"model.source: plain is not a nasforge export folder \(looked in "
                                           rf"{tmp_path / 'project'}, {elsewhere}, {home / 'exports'}\); "
                                           r"give the folder `nasforge export -o NAME` wrote, e.g. export:NAME"):
        export_source_folder("export:plain", [str(tmp_path / "project")])
    with pytest.raises(JobSpecError, match=r"model.source: /nowhere is not a nasforge export folder; give"):
        export_source_folder("export:/nowhere")


def test_an_export_is_scored_on_inputs_normalized_as_it_was_trained(tmp_path: Path) -> None:
    """Another split of the same data (another seed) fits; 0..1 pixels for a standardized model do not."""
    import json

    from nasforge.core.spec import DatasetSpec, JobSpec
    from nasforge.data import load_dataset
    from nasforge.workers.compression_workload import _check_export_inputs

    folder = _export(tmp_path / "best")
    trained_on = load_dataset(DatasetSpec(name="mnist5k", seed=0))
    (folder / "arch.json").write_text(json.dumps({"preprocessing": {"mean": list(trained_on.mean),
                                                                    "std": list(trained_on.std),
                                                                    "dataset": "mnist5k"}}))

    def job(**dataset: object) -> tuple[JobSpec, object]:
        spec = JobSpec.model_validate({"name": "t", "model": {"source": f"export:{folder}"},
                                       "space": {"name": "compression"}, "strategy": {"name": "evopress"},
                                       "objectives": [{"metric": "kl", "direction": "minimize"}],
                                       "evaluation": {"dataset": {"name": "mnist5k", **dataset}}})
        return spec, load_dataset(spec.evaluation.dataset)

    _check_export_inputs(*job(seed=2), ())  # mean 0.1316 vs 0.1311: the same inputs to the model
    with pytest.raises(JobSpecError, match=r"^evaluation.dataset.normalize: export:.* was trained on mnist5k inputs "
                                           r"normalized with mean \[0.1311\] std \[0.3083\], this job's dataset "
                                           r"gives mean \[0\] std \[1\]; use the export's dataset settings or set "
                                           r"normalize: custom, mean: \[0.1311\], std: \[0.3083\]$"):
        _check_export_inputs(*job(normalize="unit"), ())


def test_load_and_prepare_inputs_take_the_name_given_to_export_o(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`nasforge export JOB -o best` then `nasforge.load("best")` from the project folder: it said
    "best: no arch.json" (the export is under NASFORGE_HOME/exports)."""
    import json

    import numpy as np

    import nasforge
    from nasforge.core.errors import ExportError

    home = tmp_path / "home"
    monkeypatch.setenv("NASFORGE_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    pre = {"input": "image", "input_shape": [1, 4, 4], "pixel_max": 255.0, "mean": [0.5], "std": [0.25]}
    (_export(home / "exports" / "best") / "arch.json").write_text(json.dumps({"preprocessing": pre}))
    x = nasforge.prepare_inputs("best", np.full((4, 4), 255.0))
    assert x.shape == (1, 1, 4, 4) and float(x.max()) == pytest.approx(2.0)
    with pytest.raises(ExportError, match=r"prepare_inputs: nothere is not a nasforge export folder \(looked in "
                                          rf"{tmp_path}, {home / 'exports'}\)"):
        nasforge.prepare_inputs("nothere", np.zeros((4, 4)))
    with pytest.raises(ExportError, match=r"^nothere is not a nasforge export folder \(looked in .*\); give the "
                                          r"folder `nasforge export -o NAME` wrote \(or its NAME\)$"):
        nasforge.load("nothere")
