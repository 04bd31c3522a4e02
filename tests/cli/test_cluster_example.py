"""examples/cluster.yaml: valid for a cluster, refused on one machine, and in step with infra/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "cluster.yaml"


def _validate(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NASFORGE_HOME": str(home), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "nasforge.cli", "validate", str(EXAMPLE), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_validates_for_a_cluster_and_says_why_not_here(tmp_path: Path) -> None:
    ok = _validate(tmp_path, "--address", "http://head:8265")  # the Jobs API address is left to Ray
    assert ok.returncode == 0, ok.stderr
    assert "strategy nsga2" in ok.stderr and "latency_ms@t4" in ok.stdout
    here = _validate(tmp_path)  # this machine: no GPU, no device classes
    assert here.returncode == 2
    assert len(here.stderr.strip().splitlines()) == 1 and "--address" in here.stderr
    assert not list(tmp_path.rglob("*.db"))  # validate writes nothing


def test_device_classes_are_the_cluster_launchers() -> None:
    job = yaml.safe_load(EXAMPLE.read_text())
    cluster = yaml.safe_load((ROOT / "infra" / "ray-cluster.yaml").read_text())
    offered = {k.partition(":")[2] for node in cluster["available_node_types"].values()
               for k in node.get("resources", {}) if k.startswith("device:")}
    classes = set(job["evaluation"]["latency"]["device_classes"])
    assert classes <= offered
    named = {m.partition("@")[2] for m in [o["metric"] for o in job["objectives"]] + job["constraints"]
             if "@" in m}
    assert {n.split()[0] for n in named} <= classes
