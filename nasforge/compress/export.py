"""Packed export of a compressed model and its loader.

``model.safetensors`` holds every tensor of the state dict that is not a searched weight as is,
and for each searched layer ``NAME.weight``:

- ``NAME.weight.__codes``: b-bit integer codes of the kept weights, bit-packed (uint8), row-major,
  or ``NAME.weight.__values`` (float16 / float32) when the layer is not quantized;
- ``NAME.weight.__scale``: float16 scales, (out_channels, groups per row);
- ``NAME.weight.__zero``: uint8 zero points (asymmetric only);
- ``NAME.weight.__mask``: the keep-mask, one bit per weight (only when pruned).

The tensor bytes equal ``CompressionSpace.cost(arch)["model_bytes"]`` exactly. The safetensors
metadata ``layers`` (JSON) records shape, bits, sparsity and quantizer settings per layer, so
``unpack_state_dict`` needs nothing else. ``load_compressed(dir)`` rebuilds the model from
``arch.json`` (its ``model`` block) and loads the unpacked weights; the result equals the
fake-quant model that was evaluated.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from nasforge.compress.levels import calibration_hessians, compress_weight, input_norms
from nasforge.compress.prune import wanda_score
from nasforge.compress.quant import QuantizedWeight, dequantize, pack_bits, unpack_bits
from nasforge.compress.sources import build_model
from nasforge.core.types import Arch
from nasforge.spaces.compression import CompressionSpace

WEIGHTS_FILE = "model.safetensors"


def pack_state_dict(model: nn.Module, space: CompressionSpace, arch: Arch,
                    calib: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, per-layer metadata) of the packed export of ``model`` compressed as ``arch``."""
    opts = space.opts
    levels = space.layer_levels(arch)
    mods = dict(model.named_modules())
    norms = input_norms(model, opts.layers, calib) if opts.pruning == "wanda" and calib is not None else {}
    hessians = calibration_hessians(model, opts, calib) if calib is not None else {}
    searched = {f"{layer.name}.weight" for layer in opts.layers}
    tensors: dict[str, torch.Tensor] = {
        k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in searched
    }
    meta: dict[str, Any] = {}
    for layer in opts.layers:
        bits, sparsity = levels[layer.name]
        mod = mods[layer.name]
        w = mod.weight.detach().float().cpu()
        score = None
        if layer.name in norms and getattr(mod, "groups", 1) == 1:
            score = wanda_score(w, norms[layer.name].cpu())
        cw = compress_weight(w, bits, sparsity, opts, score, hessians.get(layer.name))
        key = f"{layer.name}.weight"
        flat_mask = cw.mask.reshape(-1) if cw.mask is not None else None
        if cw.quantized is None:
            vals = cw.weight.reshape(-1)
            if flat_mask is not None:
                vals = vals[flat_mask]
            tensors[f"{key}.__values"] = vals.to(torch.float16 if bits == 16 else torch.float32).contiguous()
        else:
            q = cw.quantized
            codes = q.codes.reshape(-1)
            if flat_mask is not None:
                codes = codes[flat_mask]
            tensors[f"{key}.__codes"] = pack_bits(codes, bits)
            tensors[f"{key}.__scale"] = q.scale.contiguous()
            if q.zero is not None:
                tensors[f"{key}.__zero"] = q.zero.contiguous()
        if flat_mask is not None:
            tensors[f"{key}.__mask"] = pack_bits(flat_mask.to(torch.int64), 1)
        meta[key] = {"shape": list(w.shape), "bits": bits, "sparsity": sparsity,
                     "group_size": cw.quantized.group_size if cw.quantized is not None else None,
                     "symmetric": opts.symmetric, "pruned": flat_mask is not None}
    return tensors, meta


def layer_codes(tensors: Mapping[str, torch.Tensor], key: str, info: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(codes, keep-mask) of one packed quantized layer, both flat over the weight (row-major):
    int64 codes (0 at pruned positions) and the bool mask, None when the layer is not pruned."""
    numel = int(torch.Size(tuple(info["shape"])).numel())
    mask = unpack_bits(tensors[f"{key}.__mask"], 1, numel).bool() if info["pruned"] else None
    n_kept = numel if mask is None else int(mask.sum())
    codes = unpack_bits(tensors[f"{key}.__codes"], int(info["bits"]), n_kept)
    if mask is None:
        return codes, None
    full = torch.zeros(numel, dtype=torch.int64)
    full[mask] = codes
    return full, mask


def unpack_state_dict(tensors: Mapping[str, torch.Tensor], layers: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Inverse of ``pack_state_dict``: a plain float state dict."""
    out = {k: v for k, v in tensors.items() if ".__" not in k}
    for key, info in layers.items():
        shape = tuple(info["shape"])
        numel = int(torch.Size(shape).numel())
        bits = int(info["bits"])
        if bits in (16, 32):
            mask = unpack_bits(tensors[f"{key}.__mask"], 1, numel).bool() if info["pruned"] else None
            vals = tensors[f"{key}.__values"].float()
            full = torch.zeros(numel)
            if mask is None:
                full = vals.clone()
            else:
                full[mask] = vals
            out[key] = full.reshape(shape)
            continue
        full_codes, mask = layer_codes(tensors, key, info)  # pruned positions: dequantized then masked to 0 below
        q = QuantizedWeight(full_codes.reshape(shape).to(torch.uint8), tensors[f"{key}.__scale"],
                            tensors.get(f"{key}.__zero"), bits, int(info["group_size"]), shape)
        w = dequantize(q)
        if mask is not None:
            w = w * mask.reshape(shape)
        out[key] = w
    return out


def write_weights(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], path: Path) -> int:
    """Write the packed tensors; returns their payload bytes (what ``model_bytes`` counts)."""
    save_file(dict(tensors), str(path), metadata={"layers": json.dumps(meta)})
    return int(sum(t.numel() * t.element_size() for t in tensors.values()))


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("layers", "{}"))
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    return tensors, meta


def load_compressed(path: str | Path, build: Callable[[Mapping[str, Any]], nn.Module] | None = None) -> nn.Module:
    """Rebuild the compressed model of an export folder (``arch.json`` + ``model.safetensors``).

    ``build(model_block)`` makes the uncompressed architecture; by default ``build_model`` of the
    recorded ``source`` / ``options`` (no weights file needed: every tensor is overwritten).
    """
    p = Path(path)
    meta = json.loads((p / "arch.json").read_text())
    block = meta["model"]
    if build is None:
        model = build_model(block["source"], None, block.get("options", {}), block.get("search_roots", []),
                            require_weights=False)
    else:
        model = build(block)
    tensors, layers = read_weights(p / WEIGHTS_FILE)
    model.load_state_dict(unpack_state_dict(tensors, layers), strict=True)
    return model.eval()
