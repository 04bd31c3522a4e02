"""``model.source: package.module:factory`` kept beside the job file imports from any folder: the
job file's folder that holds the module goes into ``model.search_path`` (it had to be the cwd)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nasforge.compose import _module_root, load_and_validate
from nasforge.core.errors import JobSpecError
from nasforge.core.spec import ModelSpec

JOB = """
name: beside
model: {source: "mymodels.nets:tiny", options: {}}
space: {name: compression, options: {mode: bits, bits: [4, 8], calibration_images: 32}}
strategy: {name: random}
objectives: [{metric: kl, direction: minimize}]
budget: {evaluations: 4}
evaluation: {dataset: {name: digits}, max_images: 64}
"""

NETS = """
import torch.nn as nn

def tiny():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
"""


def test_a_module_beside_the_job_file_is_found_from_another_folder(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "mymodels").mkdir(parents=True)
    (project / "mymodels" / "nets.py").write_text(textwrap.dedent(NETS))
    (project / "jobs").mkdir()
    job = project / "jobs" / "job.yaml"
    job.write_text(JOB)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.syspath_prepend(str(elsewhere))  # not the project: only search_path can find it
    def root(source: str) -> str | None:
        return _module_root(ModelSpec(source=source), job)

    assert root("mymodels.nets:tiny") == str(project)
    assert root("timm:resnet18") is None and root("nowhere.mod:f") is None
    for source, module in (("mymodels.nets:tiny", "mymodels.nets"), ("timm:resnet18", None), ("export:best", None),
                           ("job:J:3", None), ("not a module:f", None), ("resnet18", None)):
        assert ModelSpec(source=source).module == module, source
    spec, space = load_and_validate(job)
    assert spec.model is not None and spec.model.search_path == [str(project)]
    assert space.id == "compression"
    # a module that is nowhere near the job file: the error names the fix, as before
    job.write_text(JOB.replace("mymodels.nets:tiny", "othermodels.nets:tiny"))
    with pytest.raises(JobSpecError, match="cannot import 'othermodels.nets'"):
        load_and_validate(job)
