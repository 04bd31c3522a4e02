"""The per-layer level database (EvoPress's design) and compressing one layer at one level.

``compress_weight(w, bits, sparsity, opts, score)`` is the one definition of a compressed
weight: prune to a keep-mask, then quantize the kept weights; returns the fake-quant float
weight (what evaluation uses) plus the pieces the export packs. ``LevelDatabase.build`` stores
every searched layer at every (bits, sparsity) level once (``levels/*.safetensors`` in the job
folder); ``LevelDatabase.apply(model, levels)`` assembles a candidate by copying the stored
weights into the model's layers, so no candidate recomputes a quantizer or a pruner.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nasforge.compress.gptq import gptq_quantize, layer_hessians
from nasforge.compress.prune import magnitude_mask, nm_mask, wanda_score
from nasforge.compress.quant import QuantizedWeight, dequantize, quantize
from nasforge.core.paths import ordinary_file_mode
from nasforge.spaces.compression import CompressionSpace, CompressionSpaceOptions, LayerInfo


@dataclass
class CompressedWeight:
    """One layer at one level: the fake-quant weight and what the export packs."""

    weight: torch.Tensor  # float32, zeros where pruned
    mask: torch.Tensor | None  # bool keep-mask, None when nothing pruned
    quantized: QuantizedWeight | None  # None when bits are 16/32 (float)
    bits: int


def compress_weight(w: torch.Tensor, bits: int, sparsity: float, opts: CompressionSpaceOptions,
                    score: torch.Tensor | None = None, hessian: torch.Tensor | None = None) -> CompressedWeight:
    """Prune (magnitude, N:M or Wanda via ``score``), then quantize the kept weights
    (GPTQ-style when ``opts.rounding == "gptq"`` and the layer's input ``hessian`` is given)."""
    w = w.detach().float().cpu()
    mask = None
    if sparsity > 0:
        if opts.pruning == "nm":
            mask = nm_mask(w, opts.nm[0], opts.nm[1], score)
        else:
            mask = magnitude_mask(w, sparsity, score if opts.pruning == "wanda" else None)
        w = w * mask
    if bits in (16, 32):
        out = w.half().float() if bits == 16 else w.clone()
        return CompressedWeight(out, mask, None, bits)
    if opts.rounding == "gptq" and hessian is not None:
        q = gptq_quantize(w, hessian, bits, granularity=opts.granularity, group_size=opts.group_size,
                          symmetric=opts.symmetric, mask=mask)
    else:
        q = quantize(w, bits, granularity=opts.granularity, group_size=opts.group_size, symmetric=opts.symmetric)
    out = dequantize(q)
    if mask is not None:
        out = out * mask  # exact already (0 is on the grid); keeps -0.0 away
    return CompressedWeight(out, mask, q, bits)


def level_key(bits: int, sparsity: float) -> str:
    return f"b{int(bits)}_s{float(sparsity):.6f}"


def input_norms(model: nn.Module, layers: Iterable[LayerInfo], calib: torch.Tensor,
                batch_size: int = 256) -> dict[str, torch.Tensor]:
    """L2 norm of every input feature / channel of each layer over the calibration inputs."""
    mods = dict(model.named_modules())
    sq: dict[str, torch.Tensor] = {}
    handles = []
    for layer in layers:
        mod = mods[layer.name]

        def hook(m: nn.Module, inp: tuple, out: torch.Tensor, _n: str = layer.name) -> None:
            x = inp[0].detach().float()
            if isinstance(m, nn.Linear):
                v = x.reshape(-1, x.shape[-1]).pow(2).sum(0)
            else:
                v = x.transpose(0, 1).reshape(x.shape[1], -1).pow(2).sum(1)
            sq[_n] = sq.get(_n, 0) + v

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            for i in range(0, len(calib), batch_size):
                model(calib[i : i + batch_size])
    finally:
        for h in handles:
            h.remove()
    return {k: v.sqrt() for k, v in sq.items()}


def calibration_hessians(model: nn.Module, opts: CompressionSpaceOptions,
                         calib: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Per-layer input Hessians when the space asks for GPTQ rounding (else empty)."""
    if opts.rounding != "gptq":
        return {}
    if calib is None:
        raise ValueError("gptq rounding needs calibration inputs")
    return layer_hessians(model, opts.layers, calib)


class LevelDatabase:
    """Every searched layer precomputed at every level; ``apply`` swaps them into a model."""

    def __init__(self, root: Path, space: CompressionSpace):
        self.root = Path(root)
        self.space = space
        self._cache: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def ready_file(self) -> Path:
        return self.root / "ready.json"

    def exists(self) -> bool:
        return self.ready_file.exists()

    def levels(self) -> list[tuple[int, float]]:
        return [(b, s) for b in self.space.bit_values() for s in self.space.sparsity_values()]

    def _file(self, i: int) -> Path:
        return self.root / f"layer{i:04d}.safetensors"

    def build(self, model: nn.Module, calib: torch.Tensor | None = None) -> None:
        """Compute and save every layer at every level (resumable per layer)."""
        opts = self.space.opts
        self.root.mkdir(parents=True, exist_ok=True)
        mods = dict(model.named_modules())
        norms = {}
        if opts.pruning == "wanda":
            if calib is None:
                raise ValueError("wanda pruning needs calibration inputs")
            norms = input_norms(model, opts.layers, calib)
        hessians = calibration_hessians(model, opts, calib)
        for i, layer in enumerate(opts.layers):
            path = self._file(i)
            if path.exists():
                continue
            mod = mods[layer.name]
            w = mod.weight.detach().float().cpu()
            score = None
            if layer.name in norms and getattr(mod, "groups", 1) == 1:
                score = wanda_score(w, norms[layer.name].cpu())
            h = hessians.get(layer.name)
            tensors = {level_key(b, s): compress_weight(w, b, s, opts, score, h).weight.contiguous()
                       for b, s in self.levels()}
            tmp = path.with_suffix(".tmp")
            save_file(tensors, str(tmp), metadata={"layer": layer.name})
            ordinary_file_mode(tmp)
            tmp.replace(path)
        self.ready_file.write_text(json.dumps({"layers": len(opts.layers), "levels": len(self.levels())}))

    def weight(self, layer_index: int, bits: int, sparsity: float) -> torch.Tensor:
        i = layer_index
        name = str(i)
        if name not in self._cache:
            self._cache[name] = load_file(str(self._file(i)))
        return self._cache[name][level_key(bits, sparsity)]

    def apply(self, model: nn.Module, levels: Mapping[str, tuple[int, float]]) -> None:
        """Copy each searched layer's stored weight at its (bits, sparsity) into ``model``."""
        mods = dict(model.named_modules())
        with torch.no_grad():
            for i, layer in enumerate(self.space.opts.layers):
                b, s = levels[layer.name]
                mods[layer.name].weight.copy_(self.weight(i, b, s))
