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
