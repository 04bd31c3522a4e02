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
