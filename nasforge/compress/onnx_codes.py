"""A compressed export's ONNX graph with its quantized weights stored as codes.

``torch.onnx.export`` of the compressed model writes every weight as float32, so a 3-bit model's
ONNX file was as large as the dense model's. ``store_codes(onnx_path, tensors, layers)`` replaces
each quantized weight initializer (found by its state-dict name, and only where it holds exactly
the dequantized weight) by its integer codes (uint4 for 2..4 bits at opset >= 21, else uint8),
float32 scales and zero points, and a ``DequantizeLinear`` node whose output keeps the weight's
name, so the graph's other nodes are untouched. Group-wise scales use the same per-axis node on
the weight viewed as (rows x groups, group size), then a reshape (and a slice where rows were
padded). Pruned weights get their group's zero point as code, which dequantizes to exactly 0.

The result is the standard QDQ weight form that ONNX runtimes read; the caller checks the rewritten
graph against torch and keeps the float graph where it differs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nasforge.compress.export import layer_codes
from nasforge.compress.quant import pack_bits

#: the first opset whose DequantizeLinear takes 4-bit integers
UINT4_OPSET = 21
#: the first opset whose DequantizeLinear takes a per-axis scale
PER_AXIS_OPSET = 13


def full_codes(tensors: Mapping[str, torch.Tensor], key: str, info: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes (rows * groups, group_size), scales, zero points (rows * groups,)) of one packed layer.

    Codes of pruned weights are their group's zero point; the padding that completes a row's last
    group is too (sliced off after dequantizing)."""
    shape = tuple(int(s) for s in info["shape"])
    bits, gs = int(info["bits"]), int(info["group_size"])
    out = shape[0]
    numel = math.prod(shape)
    n = numel // out
    ng = math.ceil(n / gs)
    scale = tensors[f"{key}.__scale"].float().reshape(out, ng).numpy()
    zero_t = tensors.get(f"{key}.__zero")
    zero = (zero_t.to(torch.int64).reshape(out, ng).numpy() if zero_t is not None
            else np.full((out, ng), 2 ** (bits - 1) - 1, dtype=np.int64))
    codes = np.repeat(zero, gs, axis=1)  # (out, ng * gs): every code its group's zero point ...
    flat, mask = layer_codes(tensors, key, info)
    kept = flat.numpy().reshape(out, n)
    if mask is None:
        codes[:, :n] = kept
    else:  # ... but for the weights kept
        keep = mask.numpy().reshape(out, n)
        codes[:, :n][keep] = kept[keep]
    return (codes.reshape(out * ng, gs).astype(np.uint8), scale.reshape(-1).astype(np.float32),
            zero.reshape(-1).astype(np.uint8))


def store_codes(onnx_path: str | Path, tensors: Mapping[str, torch.Tensor], layers: Mapping[str, Any],
                dense: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Rewrite ``onnx_path`` in place with codes for every quantized weight it holds verbatim.

    ``tensors`` / ``layers``: the packed export (``read_weights``); ``dense``: the unpacked float
    state dict (``unpack_state_dict``), to recognise the initializers. Returns what was stored."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(onnx_path))
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    graph = model.graph
    where = {t.name: i for i, t in enumerate(graph.initializer)}
    nodes: list[Any] = []
    new_inits: list[Any] = []
    drop: set[str] = set()
    stored, floats = [], []
    for key, info in layers.items():
        bits = int(info["bits"])
        if bits > 8 or opset < PER_AXIS_OPSET or key not in where or info.get("group_size") is None:
            floats.append(key)
            continue
        current = numpy_helper.to_array(graph.initializer[where[key]])
        if current.shape != tuple(info["shape"]) or not np.array_equal(current, dense[key].numpy()):
            floats.append(key)  # folded or transformed by the exporter: left as it is
            continue
        codes, scale, zero = full_codes(tensors, key, info)
        four = bits <= 4 and opset >= UINT4_OPSET
        kind = TensorProto.UINT4 if four else TensorProto.UINT8
        raw = (pack_bits(torch.from_numpy(codes.reshape(-1)), 4).numpy().tobytes() if four
               else codes.tobytes())
        new_inits += [
            helper.make_tensor(f"{key}__codes", kind, list(codes.shape), raw, raw=True),
            numpy_helper.from_array(scale, f"{key}__scale"),
            helper.make_tensor(f"{key}__zero", kind, [len(zero)],
                               pack_bits(torch.from_numpy(zero), 4).numpy().tobytes() if four else zero.tobytes(),
                               raw=True),
        ]
        shape = [int(s) for s in info["shape"]]
        out, n = shape[0], math.prod(shape) // shape[0]
        padded = codes.shape[0] // out * codes.shape[1]
        nodes.append(helper.make_node("DequantizeLinear", [f"{key}__codes", f"{key}__scale", f"{key}__zero"],
                                      [f"{key}__dq"], axis=0, name=f"{key}__dequantize"))
        last = f"{key}__dq"
        if padded != n:  # group-wise with a partial last group: rows, cut to their length
            new_inits += [numpy_helper.from_array(np.array([out, padded], np.int64), f"{key}__rows"),
                          numpy_helper.from_array(np.array([0], np.int64), f"{key}__start"),
                          numpy_helper.from_array(np.array([n], np.int64), f"{key}__end"),
                          numpy_helper.from_array(np.array([1], np.int64), f"{key}__axis")]
            nodes += [helper.make_node("Reshape", [last, f"{key}__rows"], [f"{key}__padded"]),
                      helper.make_node("Slice", [f"{key}__padded", f"{key}__start", f"{key}__end", f"{key}__axis"],
                                       [f"{key}__cut"])]
            last = f"{key}__cut"
        new_inits.append(numpy_helper.from_array(np.array(shape, np.int64), f"{key}__shape"))
        nodes.append(helper.make_node("Reshape", [last, f"{key}__shape"], [key], name=f"{key}__reshape"))
        drop.add(key)
        stored.append(key)
    if not stored:
        return {"weights_as_codes": 0, "weights_as_float": len(floats), "opset": opset}
    kept = [t for t in graph.initializer if t.name not in drop]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old_nodes)  # the dequantized weights first: topological order holds
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))
    return {"weights_as_codes": len(stored), "weights_as_float": len(floats), "opset": opset,
            "code_types": sorted({"uint4" if int(layers[k]["bits"]) <= 4 and opset >= UINT4_OPSET else "uint8"
                                  for k in stored})}
