"""A compression job through the real CLI: submit (Ray workers, store, MLflow), export, nasforge.load."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

JOB = """
name: compress-tiny
seed: 0
model: {source: "tests.compress.helpers:tiny_digits_cnn", options: {width: 8}}
space: {name: compression, options: {mode: joint, bits: [2, 4, 8], sparsities: [0.0, 0.5], calibration_images: 64}}
strategy: {name: evopress, options: {selection: [[6, 64]]}}
objectives: [{metric: kl, direction: minimize}, {metric: model_bytes, direction: minimize}]
constraints: ["model_bytes <= 3000"]
budget: {evaluations: 14, batch_size: 6}
evaluation: {dataset: {name: digits}, batch_size: 256, max_images: 200}
workers: {count: 1, cpus: 1}
tracking: {experiment: compress-tiny}
"""


@pytest.mark.slow
def test_submit_export_load(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(JOB)
    env = {**os.environ, "NASFORGE_HOME": str(tmp_path / "home")}
    root = Path(__file__).resolve().parents[2]

    def cli(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "nasforge.cli", *args, "--json"], cwd=root, env=env,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    summary = cli("submit", str(job))
    assert summary["state"] == "done"
    # what the search bought over one bit-width / sparsity everywhere (EvoPress starts from it)
    status = subprocess.run([sys.executable, "-m", "nasforge.cli", "status", summary["job_id"]], cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert "uniform allocation within the constraints (bits " in status.stdout, status.stdout
    exported = cli("export", summary["job_id"], "--best", "kl", "-o", "best")
    text = subprocess.run([sys.executable, "-m", "nasforge.cli", "export", summary["job_id"], "--best", "kl", "-o",
                           "best-text"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert text.returncode == 0, text.stderr[-2000:]
    assert re.search(r"^model\.qdq\.onnx: the weights as integer codes, [\d.]+x smaller than model\.onnx; "
                     r"onnxruntime runs it as fast as model\.onnx with the session config entry "
                     r"session\.disable_quant_qdq=1$", text.stdout, re.M), text.stdout
    assert exported["constraints_broken"] == []
    meta = json.loads((Path(exported["dir"]) / "arch.json").read_text())
    assert meta["kind"] == "compression" and meta["metrics"]["model_bytes"] <= 3000
    assert meta["packed_bytes"] == meta["metrics"]["model_bytes"]
    folder = Path(exported["dir"])
    assert {f.stat().st_mode & 0o777 for f in folder.iterdir()} == {(folder / "arch.json").stat().st_mode & 0o777}
    import nasforge

    model = nasforge.load(exported["dir"])
    x = torch.randn(3, 1, 8, 8)
    assert model(x).shape == (3, 10)
    # the input the model was scored on (digits: pixels 0..16, standardized) is recorded for deployment
    assert meta["preprocessing"]["pixel_max"] == 16 and meta["preprocessing"]["input_shape"] == [1, 8, 8]
    assert nasforge.prepare_inputs(folder, np.full((2, 8, 8), 16)).shape == (2, 1, 8, 8)
    import onnxruntime as ort

    assert "model.onnx" in meta["files"]
    onnx_out = ort.InferenceSession(str(Path(exported["dir"]) / "model.onnx")).run(None, {"input": x.numpy()})[0]
    with torch.inference_mode():
        assert torch.allclose(torch.from_numpy(onnx_out), model(x), atol=1e-4)
