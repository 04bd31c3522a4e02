"""examples/pooling_mixture.yaml: validates, and (shrunk) runs end to end through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "pooling_mixture.yaml"


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NASFORGE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "nasforge.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=900)


def test_example_validates(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "validate", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    assert "pooling_layout" in proc.stdout


def test_example_rejects_a_bad_trainer_option(tmp_path: Path) -> None:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["training"]["options"]["reassign_evry"] = 5
    job = tmp_path / "bad.yaml"
    job.write_text(yaml.safe_dump(spec))
    proc = _cli(tmp_path, "validate", str(job))
    assert proc.returncode == 2
    assert "training.options.reassign_evry" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_example_submits_searches_and_exports(tmp_path: Path) -> None:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["training"]["epochs"] = 0.5
    spec["budget"] = {"evaluations": 6, "batch_size": 3}
    spec["evaluation"]["max_images"] = 200
    spec["evaluation"]["bn_recalibration_images"] = 64
    spec["evaluation"]["latency"] = {"batch_size": 1, "warmup": 1, "repeats": 3, "threads": 1}
    job = tmp_path / "pm.yaml"
    job.write_text(yaml.safe_dump(spec))
    proc = _cli(tmp_path, "submit", str(job), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["state"] == "done" and summary["counts"]["done"] >= 1
    rows = json.loads(_cli(tmp_path, "results", summary["job_id"], "--format", "json").stdout)
    done = [r for r in rows if r["status"] == "done"]
    assert done and all(0 <= r["metrics"]["accuracy"] <= 1 and r["metrics"]["latency_ms"] > 0 for r in done)
    out = tmp_path / "exports" / "best"
    proc = _cli(tmp_path, "export", summary["job_id"], "--best", "accuracy", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "arch.json").read_text())
    assert meta["supernet"]["name"] == "pooling_mixture" and set(meta["arch"]["choices"]) == {"pool0", "pool1"}

    import torch

    import nasforge

    os.environ["NASFORGE_HOME"] = str(tmp_path)
    model = nasforge.load(out)
    with torch.inference_mode():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
