"""Compressed exports as ONNX: file size and onnxruntime latency of ``model.onnx`` (dequantized
float32 weights) against ``model.qdq.onnx`` (uint4 / uint8 codes + DequantizeLinear).

Models: timm ``resnet10t`` and ``mobilenetv3_small_050`` (1 input channel, 10 classes), trained
here on the MNIST-5k train split (2 epochs, AdamW), then compressed by the real
CompressionWorkload (asymmetric per-channel round-to-nearest) at uniform 8, 4 and 3 bits and
exported as a user's ``nasforge export`` does. Per export: bytes of the packed safetensors and of
both ONNX files, the largest |onnxruntime - torch| logit difference of each, and onnxruntime CPU
latency at batch 1, one thread, for three sessions: the float graph, the coded graph with default
session options (weights dequantized on every call) and the coded graph with
``session.disable_quant_qdq = 1`` (decoded once at load). Noise: ``rounds`` interleaved rounds
(the three sessions in a shuffled order per round), each the median of ``calls`` calls; the figure
is the median over rounds, and every ratio is taken within the same run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MODELS = ("resnet10t", "mobilenetv3_small_050")
BITS = (8, 4, 3)


def _train(name: str, out: Path, epochs: int, seed: int = 0) -> float:
    """Trains timm ``name`` on the MNIST-5k train split; writes safetensors; returns val accuracy."""
    import timm
    import torch
    from safetensors.torch import save_file

    from nasforge.core.spec import DatasetSpec
    from nasforge.data import load_dataset

    data = load_dataset(DatasetSpec(name="mnist5k", seed=0))
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, in_chans=1, num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    X, y = data.train
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 100):
            idx = perm[i:i + 100]
            loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    save_file(model.state_dict(), str(out))
    with torch.no_grad():
        return float((model(data.val[0]).argmax(1) == data.val[1]).float().mean())


def _latencies(paths: dict[str, tuple[Path, dict[str, str]]], x: np.ndarray, rounds: int, calls: int,
               seed: int) -> dict[str, dict[str, float]]:
    import onnxruntime as ort

    sessions = {}
    for name, (path, config) in paths.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        for k, v in config.items():
            opts.add_session_config_entry(k, v)
        t0 = time.perf_counter()
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        load_ms = (time.perf_counter() - t0) * 1e3
        for _ in range(5):
            sess.run(None, {"input": x})
        sessions[name] = (sess, load_ms)
    per_round: dict[str, list[float]] = {n: [] for n in sessions}
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        for name in rng.permutation(list(sessions)):
            sess = sessions[name][0]
            times = []
            for _ in range(calls):
                t = time.perf_counter()
                sess.run(None, {"input": x})
                times.append((time.perf_counter() - t) * 1e3)
            per_round[name].append(float(np.median(times)))
    return {n: {"ms": float(np.median(v)), "spread": float((max(v) - min(v)) / np.median(v)),
                "load_ms": sessions[n][1]} for n, v in per_round.items()}


def run(quick: bool = False) -> dict[str, Any]:
    import torch

    from nasforge.core.spec import JobSpec
    from nasforge.workers.compression_workload import CompressionWorkload

    torch.set_num_threads(1)
    models = MODELS[:1] if quick else MODELS
    bits_list = BITS[1:2] if quick else BITS
    rounds, calls = (3, 10) if quick else (7, 40)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in models:
            weights = root / f"{name}.safetensors"
            t0 = time.perf_counter()
            acc = _train(name, weights, epochs=1 if quick else 2)
            train_s = time.perf_counter() - t0
            spec = JobSpec.model_validate({
                "name": "b", "seed": 0,
                "model": {"source": f"timm:{name}", "weights": str(weights),
                          "options": {"in_chans": 1, "num_classes": 10}},
                "space": {"name": "compression", "options": {"mode": "bits", "bits": list(BITS),
                                                              "symmetric": False, "calibration_images": 128}},
                "strategy": {"name": "evopress"}, "objectives": [{"metric": "kl", "direction": "minimize"}],
                "evaluation": {"dataset": {"name": "mnist5k", "seed": 0}, "batch_size": 500},
            })
            job = root / f"job-{name}"
            CompressionWorkload.prepare(spec, job, log=lambda m: None)
            w = CompressionWorkload(spec, job)
            w.setup()
            x = w.calib[:1].numpy()
            for bits in bits_list:
                arch = w.space.uniform(bits=bits)
                metrics = w.evaluate(arch)
                out = root / f"export-{name}-{bits}"
                t0 = time.perf_counter()
                w.export(arch, out, {"metrics": metrics})
                export_s = time.perf_counter() - t0
                import json

                meta = json.loads((out / "arch.json").read_text())
                plain, qdq = meta["onnx_check"], meta["onnx_qdq_check"]
                lat = _latencies({"float": (out / "model.onnx", {}),
                                  "qdq_default": (out / "model.qdq.onnx", {}),
                                  "qdq_decoded": (out / "model.qdq.onnx", qdq["session_config"])},
                                 x, rounds, calls, seed=bits)
                rows.append({
                    "model": name, "bits": bits, "dense_val_accuracy": acc, "accuracy": metrics["accuracy"],
                    "kl": metrics["kl"], "packed_bytes": meta["packed_bytes"], "onnx_bytes": plain["bytes"],
                    "qdq_bytes": qdq["bytes"], "size_ratio_float_vs_qdq": plain["bytes"] / qdq["bytes"],
                    "qdq_over_packed": qdq["bytes"] / meta["packed_bytes"],
                    "onnx_max_abs_diff": plain["max_abs_diff"], "qdq_max_abs_diff": qdq["max_abs_diff"],
                    "weights": qdq["weights"],
                    "float_ms": lat["float"]["ms"], "qdq_default_ms": lat["qdq_default"]["ms"],
                    "qdq_decoded_ms": lat["qdq_decoded"]["ms"],
                    "ratio_qdq_default_vs_float": lat["qdq_default"]["ms"] / lat["float"]["ms"],
                    "ratio_qdq_decoded_vs_float": lat["qdq_decoded"]["ms"] / lat["float"]["ms"],
                    "spread_float": lat["float"]["spread"], "spread_qdq_decoded": lat["qdq_decoded"]["spread"],
                    "load_ms_float": lat["float"]["load_ms"], "load_ms_qdq_decoded": lat["qdq_decoded"]["load_ms"],
                    "train_s": train_s, "export_s": export_s,
                })
    four = [r for r in rows if r["bits"] == 4]
    return {
        "size_ratio_float_vs_qdq_4bit": float(np.median([r["size_ratio_float_vs_qdq"] for r in four])),
        "qdq_over_packed_4bit": float(np.median([r["qdq_over_packed"] for r in four])),
        "latency_ratio_qdq_default_vs_float": float(np.median([r["ratio_qdq_default_vs_float"] for r in rows])),
        "latency_ratio_qdq_decoded_vs_float": float(np.median([r["ratio_qdq_decoded_vs_float"] for r in rows])),
        "qdq_max_abs_diff": float(max(r["qdq_max_abs_diff"] for r in rows)),
        "models": list(models), "bits": list(bits_list), "rounds": rounds, "calls": calls, "seeds": [0],
        "rows": rows,
        "notes": "Ratios are medians over the models (and bit-widths, for latency), each taken within one run. "
                 "size_ratio_float_vs_qdq = model.onnx bytes / model.qdq.onnx bytes; qdq_over_packed = "
                 "model.qdq.onnx bytes / packed safetensors bytes (codes of 3 bits sit in 4-bit containers, scales "
                 "are float32 in ONNX, fp16 in safetensors, plus graph overhead). Latency: onnxruntime CPU, batch 1, "
                 "one thread; qdq_default = the coded graph with default session options (dequantizes the weights "
                 "on every call), qdq_decoded = with session.disable_quant_qdq=1 (decoded once at load).",
    }
