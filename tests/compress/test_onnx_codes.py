"""``model.qdq.onnx``: a compressed export's ONNX graph with its weights as integer codes.

The float ``model.onnx`` of a 3-bit model is as large as the dense model; the coded graph stores
uint4 / uint8 codes, scales and zero points and dequantizes them with ``DequantizeLinear``, and
onnxruntime computes the same logits as the loaded export (group-wise scales with a partial last
group, asymmetric zero points, pruned weights)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from nasforge.core.spec import JobSpec
from nasforge.workers.compression_workload import CompressionWorkload

torch.set_num_threads(1)


def _spec(**space) -> JobSpec:
    return JobSpec.model_validate({
        "name": "t", "model": {"source": "tests.compress.helpers:tiny_digits_mlp", "options": {"hidden": 100}},
        "space": {"name": "compression", "options": {"calibration_images": 64, **space}},
        "strategy": {"name": "evopress"}, "objectives": [{"metric": "kl", "direction": "minimize"}],
        "evaluation": {"dataset": {"name": "digits"}, "batch_size": 256, "max_images": 64},
    })


@pytest.mark.parametrize("space", [
    {"mode": "bits", "bits": [3, 8], "granularity": "channel", "symmetric": True},
    # rows of 100 inputs in groups of 32: the last group of each row is partial; half the weights pruned
    {"mode": "joint", "bits": [4, 8], "sparsities": [0.0, 0.5], "granularity": "group", "group_size": 32,
     "symmetric": False},
])
def test_codes_graph_computes_the_export_at_about_the_packed_size(tmp_path, space) -> None:
    s = _spec(**space)
    CompressionWorkload.prepare(s, tmp_path / "job", log=lambda m: None)
    w = CompressionWorkload(s, tmp_path / "job")
    w.setup()
    sp = w.space
    low = space["bits"][0]
    arch = sp.uniform(bits=low, sparsity=0.5) if space["mode"] == "joint" else sp.uniform(bits=low)
    out = tmp_path / "export"
    w.export(arch, out, {"metrics": w.evaluate(arch)})
    meta = json.loads((out / "arch.json").read_text())
    rec = meta["onnx_qdq_check"]
    assert "model.qdq.onnx" in meta["files"], rec
    assert rec["weights_as_codes"] == 2 and rec["weights_as_float"] == 0
    assert rec["session_config"] == {"session.disable_quant_qdq": "1"}

    graph = onnx.load(str(out / "model.qdq.onnx")).graph
    types = {t.name: t.data_type for t in graph.initializer}
    want = onnx.TensorProto.UINT4 if low <= 4 else onnx.TensorProto.UINT8
    assert types["1.weight__codes"] == want and "1.weight" not in types and "3.weight" not in types
    assert sum(n.op_type == "DequantizeLinear" for n in graph.node) == 2

    loaded = CompressionWorkload.load_export(out, meta)
    x = w.calib[:32]
    with torch.inference_mode():
        expect = loaded(x).numpy()
    for config in ({}, rec["session_config"]):
        opts = ort.SessionOptions()
        for k, v in config.items():
            opts.add_session_config_entry(k, v)
        sess = ort.InferenceSession(str(out / "model.qdq.onnx"), opts, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": x.numpy()})[0]
        np.testing.assert_allclose(got, expect, atol=1e-4)
    float_bytes = (out / "model.onnx").stat().st_size
    print(space["mode"], "float onnx", float_bytes, "qdq onnx", rec["bytes"], "packed", meta["packed_bytes"])
    assert rec["bytes"] < 0.5 * float_bytes


@pytest.mark.parametrize("kind", ["mapping", "tuple"])
def test_a_model_returning_a_mapping_or_tuple_is_scored_and_exported_on_its_logits(tmp_path, kind) -> None:
    # it failed in prepare with a traceback: 'dict' object has no attribute 'float'
    s = JobSpec.model_validate({**_spec(mode="bits", bits=[4, 8]).to_dict(), "model": {
        "source": "tests.compress.helpers:mlp_with_outputs", "options": {"kind": kind}}})
    CompressionWorkload.prepare(s, tmp_path / "job", log=lambda m: None)
    w = CompressionWorkload(s, tmp_path / "job")
    w.setup()
    arch = w.space.uniform(bits=4)
    metrics = w.evaluate(arch)
    assert 0 < metrics["kl"] < 0.5 and 0 <= metrics["accuracy"] <= 1
    out = tmp_path / "export"
    w.export(arch, out, {"metrics": metrics})
    meta = json.loads((out / "arch.json").read_text())
    assert {"model.onnx", "model.qdq.onnx"} <= set(meta["files"]), meta
    loaded = CompressionWorkload.load_export(out, meta)
    x = w.calib[:16]
    with torch.inference_mode():
        got = loaded(x)
    expect = (got["logits"] if kind == "mapping" else got[0]).numpy()  # the user's model, outputs as it makes them
    for name in ("model.onnx", "model.qdq.onnx"):
        sess = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        assert [o.name for o in sess.get_outputs()] == ["logits"]
        np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], expect, atol=1e-4)
    # the model itself is left with its own forward
    assert "forward" not in loaded.__dict__


def test_a_model_without_logits_in_its_output_is_refused_in_one_line() -> None:
    from nasforge.core.errors import JobSpecError

    s = JobSpec.model_validate({**_spec().to_dict(), "model": {
        "source": "tests.compress.helpers:mlp_with_outputs", "options": {"kind": "other"}}})
    with pytest.raises(JobSpecError, match=r"returns a mapping with keys \['scores'\]; nasforge takes its logits"):
        CompressionWorkload.validate_spec(s)
