"""``python -m benchmarks gpu``: the checks a GPU machine runs when a task is lent one. ``--quick``
runs the same code on the CPU, so the script is known to work before device time is spent on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]


def test_the_gpu_checks_run_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "NASFORGE_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "gpu", "--quick"], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert 0.0 <= out["latency_within_10pct_gpu"] <= 1.0 and out["train_s_gpu"] > 0
    assert out["gpu_job_done"] == 12 and out["gpu_job_failed"] == 0
    assert out["memory_children"] == 8 and out["memory_allocator_over_tracker_median"] == 1.0  # one method on CPU
