"""Every bad job file: exit code 2, one line naming the problem, nothing written to the store."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from nasforge.cli import main

BAD = Path(__file__).parent.parent / "jobs" / "bad"

#: file stem -> text the one-line message must contain (the key path or the problem)
EXPECTED = {
    "unknown_top_key": "nmae: unknown key",
    "unknown_nested_key": "budget.evaluationz: unknown key",
    "wrong_type_budget": "budget.evaluations",
    "negative_budget": "budget.evaluations",
    "negative_wall_time": "budget.wall_time_s",
    "zero_workers": "workers.count",
    "too_many_local_workers": "workers.count: 1000 workers x 1 CPU is 1000 CPUs on this",
    # no count of workers fits, so the key to change is cpus (it said "use workers.count <= 0")
    "one_worker_too_wide": "workers.cpus: one worker asks for 1024 CPUs on this",
    "unknown_space": "space.name: unknown space",
    "unknown_strategy": "strategy.name: unknown strategy",
    "unknown_supernet": "supernet.name: unknown supernet",
    "unknown_trainer": "training.trainer: unknown trainer",
    "pooling_mixture_default_trainer": "training.trainer: supernet 'pooling_mixture' is trained by trainer "
                                       "'pooling_mixture', not 'sandwich' (the default); set training.trainer: "
                                       "pooling_mixture",
    "pooling_trainer_for_bignas": "training.trainer: supernet 'bignas' is trained by trainer 'sandwich', not "
                                  "'pooling_mixture'; set training.trainer: sandwich",
    "pooling_more_models_than_layouts": "supernet.options.num_models: 20 models but the space has only 15 layouts; "
                                        "use at most 15",
    "constraint_unknown_metric": "unknown metric 'acuracy'",
    "constraint_timing_flag": "constraints.0.metric: 'latency_disturbed' records how a timing went and is not searched "
                              "on; filter the results by it with nasforge results JOB --where 'latency_disturbed < 1'",
    "constraint_bad_syntax": "must look like 'latency_ms <= 5'",
    "constraint_two_limits": "constraints.0: constraint 'accuracy >= 0.5 and latency_ms <= 5' holds 2 limits "
                             "('accuracy >= 0.5', 'latency_ms <= 5'); write one per constraint",
    "objective_unknown_metric": "objectives.0.metric: unknown metric 'top5'",
    "objective_bad_direction": "objectives.0.direction",
    "duplicate_objective": "same metric twice",
    "no_objectives": "objectives",
    "missing_name": "name: required key is missing",
    "empty_name": "name: is empty; give it a value",
    "empty_objectives": "objectives: is empty; give it a value",
    "bad_name_chars": "name:",
    "name_too_long": "name: String should have at most 128 characters",
    "both_supernet_and_model": "exactly one of 'supernet'",
    "neither_supernet_nor_model": "exactly one of 'supernet'",
    "training_without_supernet": "'training' applies to supernet jobs only",
    "export_dir_escape": "export_dir: must be a relative path inside NASFORGE_HOME",
    "export_dir_absolute": "export_dir: must be a relative path inside NASFORGE_HOME",
    "not_a_mapping": "top level must be a mapping",
    "invalid_yaml": "not valid YAML",
    "duplicate_key": "line 8: key 'budget' appears twice in one mapping (first on line 7); keep one",
    "duplicate_nested_key": "key 'preset' appears twice in one mapping",
    "yaml_bomb": "aliases/anchors are not allowed",
    "deep_nesting": "nesting deeper than",
    "bad_space_option": "space.options.no_such_option: unknown option",
    "bad_strategy_option": "strategy.options.populaton: unknown option",
    "unknown_dataset": "evaluation.dataset.name: unknown dataset",
    "dataset_path_missing": "evaluation.dataset.path: /nonexistent/images does not exist; give an existing path",
    "dataset_torchvision_name_case": "evaluation.dataset.name: 'torchvision:fashionmnist' (did you mean "
                                     "'torchvision:FashionMNIST'?)",
    "dataset_torchvision_without_root": "evaluation.dataset.path: required for dataset 'torchvision:MNIST'; set it "
                                        "to the root folder torchvision was given",
    "dataset_path_for_a_shipped_dataset": "evaluation.dataset.path: dataset mnist5k ships inside an installed "
                                          "package and reads no path; remove it, or name your files with name: "
                                          "folder, arrays or text",
    "dataset_pixel_max_for_a_shipped_dataset": "evaluation.dataset.pixel_max: applies to dataset arrays (.npz / "
                                               ".parquet pixels) only; remove it for digits",
    "bad_split": "evaluation.split",
    "zero_latency_repeats": "evaluation.latency.repeats",
    "bad_latency_statistic": "evaluation.latency.statistic",
    "missing_latency_table": "strategy.options.latency_table",
    "negative_seed": "seed",
    "lm_vocab_smaller_than_bytes": "space.options.vocab_size: the space embeds 10 tokens but dataset pystdlib has 256",
    # it reached scikit-learn's train_test_split: a traceback, exit 1
    "negative_dataset_seed": "evaluation.dataset.seed: Input should be greater than or equal to 0",
    "gpus_on_cpu_machine": "workers.gpus",
    "custom_resource_without_cluster": "workers.resources",
    "device_classes_without_cluster": "evaluation.latency.device_classes: ['a100'] are the device classes of a Ray "
                                      "cluster's nodes",
    "bad_store_url": "store.url",
    "path_escape_checkpoint": "supernet.checkpoint",
    "empty": "empty",
    "only_comments": "empty",
    "binary": "binary file",
    "not_utf8": "not UTF-8",
    "sampler_buckets_too_wide": "training.options.sampler_options.buckets",
    # the options listed are the sampler's, not the trainer's
    "unknown_sampler_option": "sampler_options.explot: unknown option (options: buckets, max_flops_ratio,",
    # objectives / constraints name only what the job measures
    "compress_latency_objective": "objectives[1].metric: 'latency_ms' is not measured by a compression job",
    # mode sparsity keeps every weight at fixed_bits (32): it validated, then ran its probes and failed
    # a check across options (pydantic gives no key): it read 'space.options.: sparsities: ...'
    "compress_sparsities_in_bits_mode": "space.options.sparsities: mode 'bits' does not use it (it searches "
                                        "bit-widths and prunes nothing); set mode: joint",
    "compress_dp_budget_below_its_probes": "budget.evaluations: 4 ends strategy 'dp' before its answer: it asks the "
                                           "base allocation and 3 probes (one per group and level it measures), then "
                                           "its solution and the uniform allocation it is compared with, 6 "
                                           "evaluations in all; give at least 6",
    "compress_nm_levels": "space.options.sparsities: with pruning 'nm' 2:4 the levels must be 0 or 0.5, got [0.3,",
    "compress_unreachable_budget": "constraints: 'avg_bits <= 3' cannot be met: the most compressed allocation of "
                                   "the allowed levels has avg_bits 32",
    "supernet_kl_constraint": "constraints[0]: 'kl' is not measured by a supernet job; it measures: accuracy,",
    "latency_objective_latency_disabled": "'latency_ms' is not measured by a supernet job with evaluation.latency.enabled: false",
    "predictor_unused_by_strategy": "predictor: strategy 'nsga2' does not use a predictor",
    "predictor_given_twice": "predictor: the predictor is also given in strategy.options; name it in one place",
    "compress_model_dataset_mismatch": "model.source: tests.compress.helpers:tiny_digits_cnn fails on an input",
}


def test_corpus_is_complete() -> None:
    files = {p.stem for p in BAD.glob("*.yaml")}
    assert files == set(EXPECTED), f"corpus and expectations differ: {files ^ set(EXPECTED)}"
    assert len(files) >= 25


def _store_rows(home: Path) -> int:
    db = home / "nasforge.db"
    if not db.exists():
        return 0
    import sqlite3

    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        return sum(conn.execute(f"select count(*) from {t}").fetchone()[0] for t in ("jobs", "candidates") if t in tables)


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_bad_job_file(stem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    if stem == "gpus_on_cpu_machine":
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU, so asking for one is not an error here")
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    code = main(["submit", str(BAD / f"{stem}.yaml")])
    out, err = capsys.readouterr()
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("nasforge: error: ")
    assert EXPECTED[stem] in lines[0], lines[0]
    assert str(BAD / f"{stem}.yaml") in lines[0], "the line names the file"
    assert _store_rows(tmp_path) == 0


def test_empty_keys_take_their_defaults(tmp_path: Path) -> None:
    """``options:`` or ``training:`` written with no value (YAML null) is the key with its defaults;
    where null means something (``budget.evaluations: null``: no limit) it keeps that meaning."""
    from nasforge.core.spec import JobSpec, parse_job_text

    text = (
        "name: empties\nseed:\nspace: {name: bignas_cnn, options:}\nsupernet:\n  name: bignas\n  options:\n"
        "training:\nstrategy: {name: random, options:}\nobjectives: [{metric: accuracy, direction: maximize}]\n"
        "constraints:\nbudget: {evaluations: null, wall_time_s: 60}\nevaluation:\nworkers:\ntracking:\n"
    )
    spec = parse_job_text(text)
    full = JobSpec.model_validate({
        "name": "empties", "space": {"name": "bignas_cnn"}, "supernet": {"name": "bignas"}, "training": {},
        "strategy": {"name": "random"}, "objectives": [{"metric": "accuracy", "direction": "maximize"}],
        "budget": {"evaluations": None, "wall_time_s": 60},
    })
    assert spec == full
    assert spec.training is not None and spec.training.epochs == full.training.epochs  # type: ignore[union-attr]
    assert spec.budget.evaluations is None
    # a stored spec keeps its nulls: a compression job's supernet / training stay absent on reload
    for example in ("quickstart", "compress"):
        stored = parse_job_text((Path(__file__).parents[2] / "examples" / f"{example}.yaml").read_text())
        assert JobSpec.model_validate(stored.to_dict()) == stored


@pytest.mark.parametrize("kind", ["arrays", "folder"])
def test_a_dataset_that_cannot_be_read_is_refused_before_a_job_exists(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """It used to pass validation, create the job, then fail in prepare: a failed row in the store."""
    import numpy as np

    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path / "home"))
    if kind == "arrays":
        path = tmp_path / "images.npz"
        np.savez(path, images=np.zeros((10, 8, 8), dtype=np.float32))
        says = "must hold the inputs as X / x / images and the labels as y / labels / label; found ['images']"
    else:
        path = tmp_path / "images"
        (path / "only_one_class").mkdir(parents=True)
        says = "must hold at least two class folders"
    job = tmp_path / "job.yaml"
    job.write_text((BAD / "dataset_path_missing.yaml").read_text().replace(
        "{name: folder, path: /nonexistent/images}", f"{{name: {kind}, path: '{path}'}}"))
    assert main(["submit", str(job)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "evaluation.dataset.path" in lines[0] and says in lines[0], lines
    assert _store_rows(tmp_path / "home") == 0


def test_the_predictor_section_reaches_the_guided_strategy() -> None:
    """``predictor: {name: gbt, options: ...}`` was checked and then ignored (guided used its default)."""
    from nasforge.compose import build_strategy
    from nasforge.core.spec import parse_job_text
    from nasforge.spaces import SPACES

    text = (BAD / "predictor_given_twice.yaml").read_text().replace(", options: {predictor: gp}", "").replace(
        "predictor: {name: gbt}", "predictor: {name: gbt, options: {n_estimators: 50}}")
    spec = parse_job_text(text)
    strategy = build_strategy(spec, SPACES.get(spec.space.name)(spec.space.options))
    assert strategy.options.predictor == "gbt"
    assert strategy.options.predictor_options == {"n_estimators": 50}


def test_huge_file_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    huge = tmp_path / "huge.yaml"
    with huge.open("w") as f:
        f.write("name: huge\ncomment: |\n")
        line = "  " + "x" * 998 + "\n"
        for _ in range(100_000):  # 100 MB
            f.write(line)
    code = main(["validate", str(huge)])
    err = capsys.readouterr().err
    assert code == 2
    assert "the limit is" in err
    assert _store_rows(tmp_path) == 0


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path))
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "no such job file" in capsys.readouterr().err
    assert main(["submit", str(tmp_path)]) == 2  # a folder
    assert "is a folder; give the job file" in capsys.readouterr().err
    assert _store_rows(tmp_path) == 0


@pytest.mark.slow
def test_exit_code_through_the_console_script(tmp_path: Path) -> None:
    """The real entry point (a new process) exits 2 with one line on stderr."""
    for stem in ("unknown_space", "yaml_bomb", "negative_budget"):
        proc = subprocess.run([sys.executable, "-m", "nasforge.cli", "submit", str(BAD / f"{stem}.yaml")],
                              capture_output=True, text=True, env={"NASFORGE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert EXPECTED[stem] in proc.stderr
    assert _store_rows(tmp_path) == 0


@pytest.mark.parametrize("change, says", [
    ("classes", "space.options.num_classes: the space has 10 classes but dataset arrays has 2; "
                "set space.options.num_classes: 2"),
    ("channels", "space.options.in_channels: the space takes 1 channels but dataset arrays has 3; "
                 "set space.options.in_channels: 3"),
    # it ran: children were timed and exported for 28x28 inputs while scored on 12x12 images
    ("size", "space.options.input_size: the space takes 28x28 images but dataset arrays has 12x12; "
             "set space.options.input_size: 12"),
])
def test_a_dataset_that_does_not_fit_the_space_is_refused_before_a_job_exists(
        change: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The trainer found it, after the job existed: a failed row in the store."""
    import numpy as np

    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path / "home"))
    rng = np.random.default_rng(0)
    channels, classes = {"classes": (1, 2), "channels": (3, 10), "size": (1, 10)}[change]
    path = tmp_path / "images.npz"
    np.savez(path, X=rng.random((60, channels, 12, 12), dtype=np.float32), y=np.arange(60) % classes)
    job = tmp_path / "job.yaml"
    job.write_text((BAD / "dataset_path_missing.yaml").read_text().replace(
        "{name: folder, path: /nonexistent/images}", f"{{name: arrays, path: '{path}'}}"))
    assert main(["submit", str(job)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], lines
    assert _store_rows(tmp_path / "home") == 0


@pytest.mark.parametrize("kind, says", [
    ("other_options", "was trained with other space/supernet options: "),
    ("not_safetensors", "cannot be read as safetensors (Error while deserializing header"),
    ("other_model", "does not match this supernet (missing ["),
    # a nasforge job's checkpoint: its job.json says what to copy into the job file
    ("other_options_job", 'use the options it was trained with; it was trained by job trainjob with space: '
                          '{name: bignas_cnn, options: {"preset":"mnist","stem_channels":24}}'),
])
def test_a_checkpoint_that_does_not_fit_is_refused_before_a_job_exists(
        kind: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Each worker found it while loading: a traceback (shapes, or a Ray task error) and a failed job."""
    import torch
    from safetensors.torch import save_file

    from nasforge.spaces import SPACES
    from nasforge.supernets import SUPERNETS

    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path / "home"))
    ckpt = tmp_path / "supernet.safetensors"
    if kind == "other_options_job":
        (tmp_path / "trainjob").mkdir()
        (tmp_path / "trainjob" / "job.json").write_text(json.dumps({
            "space": {"name": "bignas_cnn", "options": {"preset": "mnist", "stem_channels": 24}},
            "supernet": {"name": "bignas", "options": {}}}))
        ckpt = tmp_path / "trainjob" / "supernet.safetensors"
    if kind.startswith("other_options"):  # trained with 24 stem channels; the job says the preset's 16
        net = SUPERNETS.get("bignas")(SPACES.get("bignas_cnn")({"preset": "mnist", "stem_channels": 24}), {})
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(ckpt))
    elif kind == "not_safetensors":
        ckpt.write_text("not a checkpoint")
    else:
        save_file({"linear.weight": torch.zeros(2, 2)}, str(ckpt))
    job = tmp_path / "job.yaml"
    job.write_text((BAD / "dataset_path_missing.yaml").read_text()
                   .replace("supernet: {name: bignas}", f"supernet: {{name: bignas, checkpoint: '{ckpt}'}}")
                   .replace("training: {epochs: 1}\n", "")
                   .replace("{name: folder, path: /nonexistent/images}", "{name: mnist5k}"))
    assert main(["submit", str(job)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"supernet.checkpoint: {ckpt}" in lines[0] and says in lines[0], lines
    assert _store_rows(tmp_path / "home") == 0


def test_a_warmup_that_outlasts_training_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The learning rate never reaches training.lr: said once, not refused (a shortened smoke run of an
    example may mean it); the default warm-up, which the job file does not name, is not warned about."""
    from nasforge.core.errors import NasforgeWarning

    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path / "home"))
    job = tmp_path / "job.yaml"
    job.write_text((BAD / "negative_seed.yaml").read_text().replace("seed: -3", "seed: 0")
                   .replace("training: {epochs: 1}", "training: {epochs: 0.2, warmup_epochs: 0.3}"))
    with pytest.warns(NasforgeWarning, match=r"training.warmup_epochs \(0.3\) is not shorter than training.epochs "
                                              r"\(0.2\): the learning rate rises all through training"):
        assert main(["validate", str(job)]) == 0
    job.write_text(job.read_text().replace("training: {epochs: 0.2, warmup_epochs: 0.3}", "training: {epochs: 0.2}"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NasforgeWarning)
        assert main(["validate", str(job)]) == 0
