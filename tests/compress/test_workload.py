"""CompressionWorkload end to end without Ray: space, prepare, evaluate, allocate, export, load."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from nasforge.core.errors import JobSpecError
from nasforge.core.spec import JobSpec
from nasforge.core.types import Constraint, Direction, EvalResult, Objective
from nasforge.search import STRATEGIES
from nasforge.workers.base import ShippedFiles
from nasforge.workers.compression_workload import CompressionWorkload
from nasforge.workers.memory import MIB

torch.set_num_threads(1)


def spec(**space_opts) -> JobSpec:
    return JobSpec.model_validate({
        "name": "t", "model": {"source": "tests.compress.helpers:tiny_digits_cnn", "options": {"width": 8}},
        "space": {"name": "compression", "options": {"mode": "joint", "bits": [2, 4, 8], "sparsities": [0.0, 0.5],
                                                      "calibration_images": 64, **space_opts}},
        "strategy": {"name": "dp"}, "objectives": [{"metric": "kl", "direction": "minimize"}],
        "constraints": ["avg_bits <= 4"],
        "evaluation": {"dataset": {"name": "digits"}, "batch_size": 128, "max_images": 200},
    })


def test_workload_evaluate_allocate_export_load(tmp_path) -> None:
    s = spec(pruning="wanda", rounding="gptq")
    space = CompressionWorkload.build_space(s)
    assert space.names == ["bits:conv1", "sparsity:conv1", "bits:conv2", "sparsity:conv2", "bits:fc", "sparsity:fc"]
    metrics = CompressionWorkload.prepare(s, tmp_path, log=lambda m: None)
    assert metrics["layers"] == 3 and metrics["levels"] == 6
    assert CompressionWorkload.prepare(s, tmp_path) == metrics  # resumable: returns at once
    w = CompressionWorkload(s, tmp_path)
    w.setup()
    dense = w.evaluate(space.largest())
    assert dense["kl"] < 1e-3 and dense["avg_bits"] == 8 and dense["sparsity"] == 0
    low = w.evaluate(space.uniform(bits=2, sparsity=0.5))
    assert low["kl"] > 10 * dense["kl"] and low["model_bytes"] < dense["model_bytes"]
    assert 0.49 < low["sparsity"] <= 0.5 and low["avg_bits"] == 2
    # memory as deployed: packed weights + the input and activations of one pass, which no allocation changes
    for m in (dense, low):
        assert m["weight_mb"] * MIB == m["model_bytes"] and m["activation_peak_mb"] > 0
    assert low["activation_peak_mb"] == dense["activation_peak_mb"]
    assert dense["peak_memory_mb"] - low["peak_memory_mb"] == pytest.approx(dense["weight_mb"] - low["weight_mb"])
    assert low["peak_memory_mb"] > low["weight_mb"] + low["activation_peak_mb"]  # the input counts too

    # a limit on peak memory alone keeps candidates within it but is no budget an allocator solves for
    with pytest.raises(JobSpecError, match=r"needs a budget, .*; the constraints on peak_memory_mb keep candidates "
                                           r"within them but set no budget to allocate"):
        STRATEGIES.get("dp")(space, objectives=[Objective("kl", Direction.MINIMIZE)],
                             constraints=[Constraint("peak_memory_mb", "<=", 0.007)], seed=0).ask(1)
    strategy = STRATEGIES.get("dp")(space, objectives=[Objective("kl", Direction.MINIMIZE)],
                                    constraints=[Constraint("avg_bits", "<=", 4.0)], seed=0)
    asked = 0
    while archs := strategy.ask(4):
        asked += len(archs)
        strategy.tell(archs, [EvalResult(a.key(), w.evaluate(a)) for a in archs])
    # base + 5 probes per layer (+ the solution and the uniform reference, when new)
    assert 1 + 3 * 5 <= asked <= 1 + 3 * 5 + 2
    best = strategy.solution_arch()
    assert best is not None and space.cost(best)["avg_bits"] <= 4.0
    best_m = w.evaluate(best)
    assert best_m["kl"] <= w.evaluate(space.uniform(bits=4))["kl"] + 1e-9

    out = tmp_path / "export"
    files = w.export(best, out, {"metrics": best_m})
    meta = json.loads((out / "arch.json").read_text())
    assert meta["kind"] == "compression" and meta["packed_bytes"] == best_m["model_bytes"]
    assert {f.name for f in files} == {"model.safetensors", "allocation.json", "model.onnx", "model.qdq.onnx",
                                       "arch.json"}
    assert meta["files"] == ["model.safetensors", "allocation.json", "model.onnx", "model.qdq.onnx"]
    assert meta["reload_check"]["max_abs_logit_diff"] < 1e-5
    assert meta["onnx_check"]["max_abs_diff"] <= meta["onnx_check"]["atol"]
    assert meta["onnx_qdq_check"]["max_abs_diff"] <= meta["onnx_qdq_check"]["atol"]
    assert meta["onnx_qdq_check"]["weights_as_codes"] == 3 and meta["onnx_qdq_check"]["weights_as_float"] == 0
    loaded = CompressionWorkload.load_export(out, meta)
    x = w.calib[:32]
    with torch.inference_mode():
        assert torch.allclose(loaded(x), w.compressed_model(best)(x), atol=1e-5)
        # the ONNX graph computes the compressed model (any batch size), not the dense one
        import onnxruntime as ort

        got = ort.InferenceSession(str(out / "model.onnx")).run(None, {"input": x.numpy()})[0]
        assert torch.allclose(torch.from_numpy(got), loaded(x), atol=1e-4)
        qdq = ort.InferenceSession(str(out / "model.qdq.onnx")).run(None, {"input": x.numpy()})[0]
        assert torch.allclose(torch.from_numpy(qdq), loaded(x), atol=1e-4)
        w.model.load_state_dict(w.dense_state)
        dense = w.model.eval()(x)
        assert not torch.allclose(torch.from_numpy(got), dense, atol=1e-3)
    tensor_bytes = sum(t.numel() * t.element_size() for t in load_file(str(out / "model.safetensors")).values())
    assert tensor_bytes == best_m["model_bytes"] == meta["packed_bytes"]


def test_bad_space_options_name_the_key() -> None:
    with pytest.raises(JobSpecError, match="space.options.bitz"):
        CompressionWorkload.build_space(spec(bitz=[3]))
    with pytest.raises(JobSpecError, match="space.options.layers"):
        CompressionWorkload.build_space(spec(layers=[]))
    with pytest.raises(JobSpecError, match="bits"):
        CompressionWorkload.build_space(spec(bits=[1]))


def test_timm_source_with_weights_file(tmp_path) -> None:
    import timm

    model = timm.create_model("resnet10t", pretrained=False, num_classes=10, in_chans=1)
    torch.save(model.state_dict(), tmp_path / "resnet10t.pt")
    s = JobSpec.model_validate({
        "name": "t", "model": {"source": "timm:resnet10t", "weights": str(tmp_path / "resnet10t.pt"),
                               "options": {"num_classes": 10, "in_chans": 1}},
        "space": {"name": "compression", "options": {"mode": "sparsity", "sparsities": [0.0, 0.5],
                                                      "group_by": "block", "calibration_images": 16}},
        "strategy": {"name": "evopress"}, "objectives": [{"metric": "kl", "direction": "minimize"}],
        "evaluation": {"dataset": {"name": "digits"}, "max_images": 32},
    })
    space = CompressionWorkload.build_space(s)
    assert "sparsity:layer1.0" in space.names and "sparsity:fc" in space.names
    CompressionWorkload.prepare(s, tmp_path / "job", log=lambda m: None)
    w = CompressionWorkload(s, tmp_path / "job")
    w.setup()
    assert w.evaluate(space.largest())["kl"] < 1e-6
    half = w.evaluate(space.uniform(sparsity=0.5))
    assert half["kl"] > 0 and abs(half["sparsity"] - 0.5) < 1e-3


def test_a_worker_on_another_node_gets_everything_from_the_driver(tmp_path, monkeypatch) -> None:
    """What the Ray pool ships (``worker_files``) is all a worker needs: no job folder of the driver's,
    and the model's factory (which may train it, or read a weights file) is not run again."""
    import tests.compress.helpers as helpers
    from nasforge.workers import compression_workload as cw

    s = spec()
    driver_dir, worker_dir = tmp_path / "driver", tmp_path / "node2" / "job"
    CompressionWorkload.prepare(s, driver_dir, log=lambda m: None)
    assert (driver_dir / "compress" / cw.MODEL_PICKLE).is_file()
    fetches: list[str] = []

    def fetch() -> dict:
        fetches.append("files")
        return {name: (str(p), p.read_bytes()) for name, p in CompressionWorkload.worker_files(s, driver_dir).items()}

    here = CompressionWorkload(s, driver_dir)
    here.shipped = ShippedFiles(fetch)
    here.setup()
    assert fetches == []  # a worker beside the driver's folder reads it and holds no copy of the files
    space = here.space
    archs = [space.largest(), space.uniform(bits=2, sparsity=0.5), space.uniform(bits=4)]
    want = [here.evaluate(a) for a in archs]

    shipped = {name: (str(p), p.read_bytes()) for name, p in CompressionWorkload.worker_files(s, driver_dir).items()}
    assert {"dense.safetensors", "reference.safetensors", "model.json", "ready.json", cw.MODEL_PICKLE} <= set(shipped)
    assert any(name.startswith("levels/") for name in shipped)
    cw._MODEL_CACHE.clear()  # a fresh worker process
    cw._SPACE_CACHE.clear()

    def not_here(**_: object) -> None:
        raise AssertionError("the worker ran the model's factory")

    monkeypatch.setattr(helpers, "tiny_digits_cnn", not_here)
    there = CompressionWorkload(s, worker_dir)
    there.shipped = ShippedFiles(fetch)
    there.setup()
    assert fetches == ["files"]
    assert there.space.names == space.names
    for a, m in zip(archs, want, strict=True):
        got = there.evaluate(a)
        assert got == pytest.approx(m, rel=1e-6, abs=1e-9)
    assert (worker_dir / "compress" / "ready.json").is_file()
