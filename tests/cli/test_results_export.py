"""``nasforge export --best METRIC`` (which stored candidate it picks), ``nasforge results -o FILE`` and the
best-so-far of ``nasforge status``, on a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from nasforge.cli import main
from nasforge.core.errors import StoreError
from nasforge.core.spec import JobSpec
from nasforge.core.types import EvalResult
from nasforge.export import broken_constraints, pick_candidate
from nasforge.spaces import SPACES
from nasforge.store import open_store

QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart.yaml"


def _job(db: Path) -> tuple[Any, JobSpec, str, list[Any], list[int]]:
    """A quickstart job with 5 done candidates; ids in insertion order; the two best accuracies tie
    (0.96) and the older one is slower; 1 and 2 on the front; 3 breaks "accuracy >= 0.5"."""
    spec = JobSpec.model_validate(yaml.safe_load(QUICKSTART.read_text()))  # accuracy max, latency_ms min
    space = SPACES.get(spec.space.name)(spec.space.options)
    rng = np.random.default_rng(0)
    archs: list[Any] = []
    while len(archs) < 5:
        a = space.sample(rng)
        if a not in archs:
            archs.append(a)
    store = open_store(f"sqlite:///{db}")
    job = store.create_job(spec.model_dump(mode="json"), name="pick", seed=0)
    store.add_candidates(job.id, archs, generation=0)
    metrics = [{"accuracy": 0.96, "latency_ms": 2.0}, {"accuracy": 0.96, "latency_ms": 1.0},
               {"accuracy": 0.95, "latency_ms": 0.5}, {"accuracy": 0.40, "latency_ms": 0.1},
               {"accuracy": 0.90, "latency_ms": 0.9}]
    store.record_results(job.id, [EvalResult(a.key(), m) for a, m in zip(archs, metrics, strict=True)])
    cands = {c.key: c for c in store.get_candidates(job.id)}
    ids = [cands[a.key()].id for a in archs]
    store.set_pareto(job.id, [archs[i].key() for i in (1, 2)])
    return store, spec, job.id, archs, ids


def test_a_tie_on_the_metric_goes_to_the_pareto_member_then_the_better_other_objectives(tmp_path: Path) -> None:
    store, spec, job_id, archs, ids = _job(tmp_path / "store.db")

    assert pick_candidate(store, job_id, None, "accuracy", spec).id == ids[1]  # not the older, slower tie
    assert pick_candidate(store, job_id, None, "latency_ms", spec).id == ids[2]  # the infeasible 0.1 ms is skipped
    store.set_pareto(job_id, [])  # without front flags the other objective still breaks the tie
    assert pick_candidate(store, job_id, None, "accuracy", spec).id == ids[1]
    assert pick_candidate(store, job_id, str(ids[0]), None, spec).id == ids[0]  # an explicit id is taken as is
    with pytest.raises(StoreError, match=r"no done candidate with metric 'acuracy' \(did you mean 'accuracy'\?\); its "
                                         r"candidates have: accuracy, latency_ms"):
        pick_candidate(store, job_id, None, "acuracy", spec)
    # what export notes: the constraints the exported candidate breaks
    assert broken_constraints(spec, pick_candidate(store, job_id, str(ids[3]), None, spec)) == ["accuracy >= 0.5"]
    assert broken_constraints(spec, pick_candidate(store, job_id, None, "accuracy", spec)) == []
    strict = spec.model_copy(update={"constraints": [c.model_copy(update={"bound": 0.99}) for c in spec.constraints]})
    fallback = pick_candidate(store, job_id, None, "accuracy", strict)  # none feasible: the best of all
    assert fallback.id == ids[1] and broken_constraints(strict, fallback) == ["accuracy >= 0.99"]


@pytest.mark.parametrize("args, says", [(["-o", "x"], "neither was given"),
                                        (["3", "--best", "accuracy", "-o", "x"], "not both")])
def test_export_needs_exactly_one_of_candidate_and_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], args: list[str],
                                                        says: str) -> None:
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    assert main(["export", "some-job", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1


def test_results_to_a_file_takes_the_format_from_its_suffix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import pyarrow.parquet as pq

    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    _, _, job_id, _, _ = _job(tmp_path / "nasforge.db")  # the default store of NASFORGE_HOME
    assert main(["results", job_id, "-o", str(tmp_path / "all.parquet")]) == 0
    assert pq.read_table(tmp_path / "all.parquet").num_rows == 5
    assert main(["results", job_id, "--pareto", "-o", str(tmp_path / "front.csv")]) == 0
    assert len((tmp_path / "front.csv").read_text().strip().splitlines()) == 1 + 2
    capsys.readouterr()
    for argv, says in ((["-o", str(tmp_path / "out.txt")], "name a .json, .csv or .parquet file"),
                       (["--format", "table", "-o", str(tmp_path / "t.csv")], "prints to the terminal"),
                       # it wrote CSV text into t.parquet
                       (["--format", "csv", "-o", str(tmp_path / "t.parquet")],
                        "results --format csv -o " + str(tmp_path / "t.parquet") + ": the file's name says parquet")):
        assert main(["results", job_id, *argv]) == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "out.txt").exists() and not (tmp_path / "t.csv").exists()
    assert not (tmp_path / "t.parquet").exists()
    assert main(["results", job_id, "--pareto", "--where", "accuracy >= 0.96", "-o", str(tmp_path / "one.json")]) == 0
    assert capsys.readouterr().err.strip().startswith("wrote 1 candidate to ")


def test_export_of_a_job_whose_supernet_is_on_another_machine_says_where_to_export(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A store shared with a cluster lists jobs whose trained supernet is in the head's NASFORGE_HOME."""
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path / "client"))
    _, _, job_id, _, _ = _job(tmp_path / "shared.db")
    assert main(["export", job_id, "--best", "accuracy", "-o", "best", "--store", f"sqlite:///{tmp_path / 'shared.db'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"its trained supernet is not in this NASFORGE_HOME ({tmp_path / 'client'})" in err
    assert f"-- nasforge export {job_id} --best accuracy -o NAME" in err
    assert not (tmp_path / "client" / "exports" / "best").exists()


def test_status_best_so_far_skips_children_that_break_a_constraint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import json

    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    _, _, job_id, _, _ = _job(tmp_path / "nasforge.db")
    capsys.readouterr()
    assert main(["status", job_id, "--json"]) == 0
    # candidate 3 (0.1 ms) breaks "accuracy >= 0.5": the fastest allowed one is 0.5 ms, as submit's progress line says
    assert json.loads(capsys.readouterr().out)["best"] == {"accuracy": 0.96, "latency_ms": 0.5}


def test_export_folder_must_be_inside_the_output_folder_and_not_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from nasforge.core.errors import ExportError
    from nasforge.export import resolve_output

    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    spec = JobSpec.model_validate(yaml.safe_load(QUICKSTART.read_text()))
    root = (tmp_path / "exports").resolve()
    assert resolve_output(spec, "best") == root / "best"
    assert resolve_output(spec, root / "a" / "b") == root / "a" / "b"
    for out in ("", ".", str(root), "best/.."):  # the folder itself: files would sit beside every export
        with pytest.raises(ExportError, match="is the output folder .* itself; name a folder inside it"):
            resolve_output(spec, out)
    for out in ("../escape", str(tmp_path / "elsewhere")):
        with pytest.raises(ExportError, match="outside the output folder"):
            resolve_output(spec, out)
    # an earlier export is replaced; a file, or a folder of other files, is not touched
    (root / "earlier").mkdir()
    (root / "earlier" / "arch.json").write_text("{}")
    assert resolve_output(spec, "earlier") == root / "earlier"
    with pytest.raises(ExportError, match="export path .*arch.json is a file; name a folder, e.g. -o earlier"):
        resolve_output(spec, "earlier/arch.json")  # was a NotADirectoryError traceback
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a nasforge export, and exporting there would delete them"):
        resolve_output(spec, "mine")
    assert (root / "mine" / "notes.txt").read_text() == "mine"


def test_a_job_with_no_feasible_candidate_says_which_constraint_failed(tmp_path: Path) -> None:
    """In place of an empty Pareto table: each constraint, how many met it and the closest value."""
    from nasforge.reports import no_feasible_note

    store, spec, job_id, _, ids = _job(tmp_path / "store.db")
    strict = spec.model_copy(update={"constraints": [c.model_copy(update={"bound": 0.99}) for c in spec.constraints]})
    note = no_feasible_note(strict, store, job_id)
    assert note.startswith("no Pareto front: none of the 5 done candidates meets every constraint (accuracy >= 0.99: "
                           f"met by 0, closest 0.96 (candidate {ids[0]})). Loosen them or train the supernet longer; ")
    assert f"`nasforge results {job_id}`" in note
    # feasible candidates but an objective never measured: the note names it, not the constraints
    from nasforge.core.spec import ObjectiveSpec

    unmeasured = spec.model_copy(update={"objectives": [*spec.objectives, ObjectiveSpec(metric="flops", direction="minimize")]})
    assert no_feasible_note(unmeasured, store, job_id).startswith(
        "no Pareto front: the done candidates that meet the constraints lack a finite value of flops; ")


def test_commands_about_a_job_find_the_store_its_file_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A job whose file set store.url (PostgreSQL on a cluster, here another SQLite file) was only
    found with --store; the job folder on this machine records the URL, so status / results find it."""
    import json

    home = tmp_path / "home"
    monkeypatch.setenv("NASFORGE_HOME", str(home))
    monkeypatch.delenv("NASFORGE_STORE_URL", raising=False)
    store, spec, job_id, _, ids = _job(tmp_path / "elsewhere.db")
    (home / "jobs" / job_id).mkdir(parents=True)
    stored = {**spec.to_dict(), "store": {"url": f"sqlite:///{tmp_path / 'elsewhere.db'}"},
              "tracking": {"enabled": True, "uri": f"sqlite:///{tmp_path / 'runs.db'}", "experiment": "x"}}
    (home / "jobs" / job_id / "job.json").write_text(json.dumps(stored))
    assert main(["status", job_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["job_id"] == job_id
    assert main(["results", job_id, "--format", "json"]) == 0
    assert sorted(c["candidate_id"] for c in json.loads(capsys.readouterr().out)) == sorted(ids)
    assert main(["list"]) == 0  # list shows the default store, and says where this job went
    out, err = capsys.readouterr()
    assert "no jobs in the store" in out
    assert f"note: 1 job submitted from here went to the store sqlite:///{tmp_path / 'elsewhere.db'}" in err
    assert main(["list", "--store", f"sqlite:///{tmp_path / 'elsewhere.db'}"]) == 0
    out, err = capsys.readouterr()
    assert job_id in out and not err
    # what `nasforge ui` notes the same way: the MLflow store the job file chose
    from nasforge.compose import other_stores_of_local_jobs
    from nasforge.core.paths import default_tracking_uri

    assert other_stores_of_local_jobs(default_tracking_uri(), "tracking", "uri") == {f"sqlite:///{tmp_path / 'runs.db'}": 1}
    assert other_stores_of_local_jobs(f"sqlite:///{tmp_path / 'runs.db'}", "tracking", "uri") == {}
    assert main(["status", "../elsewhere"]) == 2  # a job id is not a path
    assert "no job '../elsewhere'" in capsys.readouterr().err


def test_where_limits_pick_among_candidates_for_a_deployment_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`--best accuracy` alone took the most accurate child however slow; a deployment has a budget."""
    import json

    from nasforge.core.errors import ExportError
    from nasforge.core.types import Constraint

    store, spec, job_id, archs, ids = _job(tmp_path / "nasforge.db")
    fast = [Constraint("latency_ms", "<=", 0.9)]
    assert pick_candidate(store, job_id, None, "accuracy", spec, fast).id == ids[2]  # 0.95 at 0.5 ms
    both = [Constraint("latency_ms", "<=", 0.9), Constraint("accuracy", ">=", 0.9)]
    assert pick_candidate(store, job_id, None, "latency_ms", spec, both).id == ids[2]  # not 0.90 at 0.9 ms
    with pytest.raises(StoreError, match=r"none of the 5 done candidates meets every --where limit \(latency_ms <= "
                                         r"0.05: met by 0, closest 0.1 \(candidate \d+\)\)"):
        pick_candidate(store, job_id, None, "accuracy", spec, [Constraint("latency_ms", "<=", 0.05)])
    with pytest.raises(ExportError, match="a named candidate is exported as it is"):
        pick_candidate(store, job_id, str(ids[0]), None, spec, fast)

    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    capsys.readouterr()
    assert main(["results", job_id, "--format", "json", "--where", "latency_ms <= 0.9",
                 "--where", "accuracy>=0.9"]) == 0
    assert sorted(r["candidate_id"] for r in json.loads(capsys.readouterr().out)) == sorted([ids[2], ids[4]])
    assert main(["results", job_id, "--format", "json", "--pareto", "--where", "latency_ms < 0.5"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == [] and "none of the 2 done candidates on the Pareto front" in out.err
    for bad, says in (("lat <= 1", "unknown metric 'lat'"), ("latency_ms = 1", "must look like 'latency_ms <= 5'"),
                      ("accuracy >= 0.9, latency_ms <= 1", "holds 2 limits ('accuracy >= 0.9', 'latency_ms <= 1'); "
                       "repeat --where, once per limit")):
        assert main(["export", job_id, "--best", "accuracy", "--where", bad, "-o", "x"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"nasforge: error: --where {bad!r}: ") and says in err and len(err.splitlines()) == 1
    assert not (tmp_path / "exports" / "x").exists()


def test_files_that_cannot_be_written_and_jobs_named_by_their_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`results -o` into /proc or onto a folder ended in a traceback; profile-device found out only
    after timing every op; `status quickstart` (the job's name) said only 'no job'."""
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    _, _, job_id, _, _ = _job(tmp_path / "nasforge.db")
    capsys.readouterr()
    for out, why in (("/proc/nasforge-results.json", "No such file or directory"), (str(tmp_path), "Is a directory")):
        assert main(["results", job_id, "--format", "json", "-o", out]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"nasforge: error: results -o {out}: cannot write it ({why}); name a file in a folder you can write"
    for out in ("/proc/nasforge-latency.json", str(tmp_path)):
        assert main(["profile-device", "--space", "bignas_cnn", "--out", out]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith(f"nasforge: error: --out {out}: cannot write it (") and not captured.out
    assert main(["status", "pick"]) == 2  # the name of the job _job made
    assert f"no job 'pick' in the store sqlite:///{tmp_path / 'nasforge.db'}; did you mean {job_id}? commands " \
           "take the whole job id" in capsys.readouterr().err
    assert main(["cancel", job_id[:-5]]) == 2  # the start of an id: suggested, never guessed
    assert f"did you mean {job_id}?" in capsys.readouterr().err
    assert main(["status", "pi%"]) == 2  # LIKE wildcards are taken literally
    assert "`nasforge list` shows the jobs" in capsys.readouterr().err


def test_failed_candidates_show_why_in_the_table_and_in_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The table left a failed candidate's cells empty and status counted failures: why took --format json."""
    import json

    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "250")
    store, spec, job_id, archs, ids = _job(tmp_path / "nasforge.db")
    space = SPACES.get(spec.space.name)(spec.space.options)
    rng = np.random.default_rng(1)
    extra = [a for a in (space.sample(rng) for _ in range(20)) if a not in archs][:2]
    store.add_candidates(job_id, extra, generation=1)
    store.record_results(job_id, [EvalResult(extra[0].key(), error="RuntimeError: out of memory\nTraceback ..."),
                                  EvalResult(extra[1].key(), error="ValueError: kernel 7 not in [3, 5]")])
    capsys.readouterr()
    assert main(["results", job_id]) == 0
    out = capsys.readouterr().out
    assert "error" in out and "RuntimeError: out of memory" in out and "Traceback" not in out
    assert main(["status", job_id]) == 0
    last = max((c for c in store.get_candidates(job_id) if c.status.value == "failed"), key=lambda c: c.seq)
    assert f"  last failure: candidate {last.id}: ValueError: kernel 7 not in [3, 5]\n" in capsys.readouterr().out
    assert main(["status", job_id, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["last_failure"] == {"candidate_id": last.id, "error": "ValueError: kernel 7 not in [3, 5]"}
    done = [c for c in store.get_candidates(job_id) if c.status.value == "done"]
    assert row["done_candidates"] == len(done) and row["uniform_note"] is None  # not a compression job
    assert row["counts"]["failed"] == 2 and row["job_id"] == job_id


def test_best_and_sort_know_which_way_a_metric_is_better(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`export --best perplexity` on a job steered by loss took the WORST perplexity (it was not in
    the list of metrics that go down); `results --sort` orders best first the same way."""
    import json

    from nasforge.core.types import Direction
    from nasforge.export import metric_direction

    store, spec, job_id, archs, ids = _job(tmp_path / "nasforge.db")
    assert metric_direction(spec, "accuracy") == Direction.MAXIMIZE
    for metric in ("perplexity", "avg_bits", "loss", "latency_p90_ms", "flops", "model_bytes", "kl"):
        assert metric_direction(spec, metric) == Direction.MINIMIZE, metric
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    capsys.readouterr()
    assert main(["results", job_id, "--format", "json", "--sort", "latency_ms"]) == 0
    assert [r["candidate_id"] for r in json.loads(capsys.readouterr().out)] == [ids[i] for i in (3, 2, 4, 1, 0)]
    assert main(["results", job_id, "--format", "json", "--sort", "accuracy"]) == 0  # ties: by id
    assert [r["candidate_id"] for r in json.loads(capsys.readouterr().out)] == [ids[i] for i in (0, 1, 2, 4, 3)]
    assert main(["results", job_id, "--sort", "acc"]) == 2
    assert "results --sort acc: no candidate of job" in capsys.readouterr().err
    # a short or misspelt name gets the metric it most likely meant
    assert main(["results", job_id, "--sort", "latency"]) == 2
    assert f"no candidate of job {job_id} has it (did you mean 'latency_ms'?); they have: " in capsys.readouterr().err
    assert main(["export", job_id, "--best", "acc", "-o", "x"]) == 2
    assert "has no done candidate with metric 'acc' (did you mean 'accuracy'?)" in capsys.readouterr().err


def test_an_export_replaces_an_earlier_one_whole_and_a_failed_one_leaves_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.toy import ToySpace, ToyWorkload, toy_metrics, toy_spec

    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    spec = toy_spec(supernet={"name": "tests.toy:ToyWorkload"})
    store = open_store(f"sqlite:///{tmp_path / 'nasforge.db'}")
    job = store.create_job(spec.to_dict(), name="toy", seed=0)
    archs = [ToySpace().sample(np.random.default_rng(i)) for i in range(6)]
    archs = list({a.key(): a for a in archs if a["mode"] != "raise"}.values())
    store.add_candidates(job.id, archs, generation=0)
    store.record_results(job.id, [EvalResult(a.key(), toy_metrics(a)) for a in archs])
    best_acc = max(archs, key=lambda a: toy_metrics(a)["accuracy"])
    fastest = min(archs, key=lambda a: toy_metrics(a)["latency_ms"])
    assert best_acc != fastest
    out = tmp_path / "exports" / "x"

    assert main(["export", job.id, "--best", "accuracy", "-o", "x"]) == 0
    (out / "stale.txt").write_text("left by hand")  # an earlier export's extra file does not survive
    capsys.readouterr()
    assert main(["export", job.id, "--best", "latency_ms", "-o", "x"]) == 0
    assert "note: it replaced the earlier export in that folder" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["arch.json"]
    assert (out / "arch.json").read_text() == fastest.to_json()

    def broken(self: Any, arch: Any, out_dir: Path, metadata: Any) -> list[Path]:
        out_dir.mkdir(parents=True)
        (out_dir / "arch.json").write_text("half")
        raise RuntimeError("the ONNX check failed")

    monkeypatch.setattr(ToyWorkload, "export", broken)
    with pytest.raises(RuntimeError, match="ONNX check"):
        main(["export", job.id, "--best", "accuracy", "-o", "x"])
    assert (out / "arch.json").read_text() == fastest.to_json()  # the earlier export, as it was
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["x"]  # no partial folder left


def test_the_summary_counts_the_children_whose_timing_stayed_disturbed(tmp_path: Path) -> None:
    from nasforge.compose import disturbed_latency_note

    store, spec, job_id, archs, ids = _job(tmp_path / "store.db")
    assert disturbed_latency_note(store, job_id, spec) is None
    job = store.create_job(spec.model_dump(mode="json"), name="busy", seed=0)
    store.add_candidates(job.id, archs, generation=0)
    store.record_results(job.id, [EvalResult(a.key(), {"accuracy": 0.9, "latency_ms": 40.0,
                                                       "latency_disturbed": float(i in (3, 4)),
                                                       # a child disturbed only on a device class counts too
                                                       "latency_disturbed@edge": float(i in (2, 4))})
                                  for i, a in enumerate(archs)])
    note = disturbed_latency_note(store, job.id, spec)
    assert note is not None and note.startswith("latency warning: other load on this machine disturbed the timing "
                                                "of 3 children even after 2 retries")
    assert "evaluation.latency.statistic: min" in note and "\n" not in note
    assert f"nasforge results {job.id} --where 'latency_disturbed < 1' lists the others" in note


def test_where_filters_by_the_timing_flags_that_a_job_file_may_not_name(tmp_path: Path, monkeypatch: Any,
                                                                        capsys: Any) -> None:
    from nasforge.core.errors import NasforgeError
    from nasforge.core.spec import ConstraintSpec
    from nasforge.reports import parse_limits

    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    store, spec, _, archs, _ = _job(tmp_path / "store.db")
    job = store.create_job(spec.model_dump(mode="json"), name="busy", seed=0)
    store.add_candidates(job.id, archs, generation=0)
    store.record_results(job.id, [EvalResult(a.key(), {"accuracy": 0.9, "latency_ms": 40.0 + i,
                                                       "latency_disturbed": float(i in (3, 4))})
                                  for i, a in enumerate(archs)])
    url = f"sqlite:///{tmp_path / 'store.db'}"
    capsys.readouterr()
    assert main(["results", job.id, "--store", url, "--format", "json", "--where", "latency_disturbed < 1"]) == 0
    kept = json.loads(capsys.readouterr().out)
    assert sorted(c["metrics"]["latency_ms"] - 40.0 for c in kept) == [i for i in range(len(archs)) if i not in (3, 4)]
    # in a job file it is no objective or constraint: the error says where it belongs
    with pytest.raises(ValueError, match=r"records how a timing went and is not searched on; filter the results by "
                                         r"it with nasforge results JOB --where 'latency_disturbed < 1'"):
        ConstraintSpec.model_validate("latency_disturbed < 1")
    with pytest.raises(NasforgeError, match="did you mean 'latency_disturbed'"):  # a misspelling is still refused
        parse_limits(["latency_disturbd < 1"])
