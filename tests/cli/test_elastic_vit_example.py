"""examples/elastic_vit.yaml through the real CLI: validate, then (slow) a small submit + export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "elastic_vit.yaml"


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NASFORGE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "nasforge.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=900)


def test_example_validates(tmp_path: Path) -> None:
    proc = _cli(tmp_path, "validate", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout.split("\n# ok")[0])
    assert resolved["space"]["name"] == "elastic_vit" and resolved["supernet"]["name"] == "elastic_vit"
    assert resolved["training"]["options"]["sampler"] == "performance"


def test_bad_sampler_option_is_one_line_exit_2(tmp_path: Path) -> None:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["training"]["options"]["sampler_options"]["max_flops_ratio"] = 0.5
    job = tmp_path / "bad.yaml"
    job.write_text(yaml.safe_dump(spec))
    proc = _cli(tmp_path, "validate", str(job))
    assert proc.returncode == 2
    assert "training.options.sampler_options.max_flops_ratio" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_example_submits_end_to_end_and_exports(tmp_path: Path) -> None:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["training"]["epochs"] = 0.3
    spec["supernet"]["options"] = {"mixture": {"experts": 2, "router_hidden": 8}}
    spec["budget"] = {"evaluations": 6, "batch_size": 6}
    spec["strategy"] = {"name": "nsga2", "options": {"population": 6}}
    spec["evaluation"]["max_images"] = 200
    spec["evaluation"]["bn_recalibration_images"] = 64
    spec["evaluation"]["latency"] = {"batch_size": 1, "warmup": 1, "repeats": 3, "threads": 1}
    job = tmp_path / "vit.yaml"
    job.write_text(yaml.safe_dump(spec))
    proc = _cli(tmp_path, "submit", str(job), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["state"] == "done" and summary["counts"]["done"] == 6, summary
    rows = json.loads(_cli(tmp_path, "results", summary["job_id"], "--format", "json").stdout)
    accs = [r["metrics"]["accuracy"] for r in rows]
    assert all(0.0 <= a <= 1.0 for a in accs) and all(r["metrics"]["flops"] > 0 for r in rows)
    # after 0.3 epochs the children are learning, not all of them past chance (0.1): on an AMD EPYC host one
    # sits at exactly 0.1 (0.10-0.37), so the check is on the set, not on every child
    assert sum(accs) / len(accs) > 0.15 and max(accs) > 0.25, accs
    out = tmp_path / "exports" / "best"
    proc = _cli(tmp_path, "export", summary["job_id"], "--best", "accuracy", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"arch.json", "model.safetensors", "model.onnx"} <= set(json.loads(proc.stdout)["files"])
