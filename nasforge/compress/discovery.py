"""Layer discovery: every Conv1d / Conv2d / Linear weight of an arbitrary ``nn.Module``.

``discover_layers(model, example_input, ...)`` runs one forward pass with hooks to count each
layer's MACs and to order layers by execution. Leaf modules that own a weight of two or more
dimensions but are not Conv/Linear (Embedding, ConvTranspose, custom layers) are skipped with one
warning that names them. Returns ``LayerInfo`` records (plain data for ``CompressionSpace``).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from nasforge.core.errors import NasforgeWarning
from nasforge.spaces.compression import LayerInfo

SUPPORTED = {nn.Conv1d: "conv1d", nn.Conv2d: "conv2d", nn.Linear: "linear"}
_NUMERIC = re.compile(r"^\d+$")


def block_of(name: str) -> str:
    """The block a layer belongs to: its name up to and including the first numeric part
    (``blocks.3.attn.qkv`` -> ``blocks.3``; ``layer1.0.conv1`` -> ``layer1.0``); else the name."""
    parts = name.split(".")
    for i, p in enumerate(parts):
        if _NUMERIC.match(p):
            return ".".join(parts[: i + 1])
    return name


def _kind(module: nn.Module) -> str | None:
    """``conv1d`` / ``conv2d`` / ``linear`` for those layers and their subclasses, else None."""
    for cls, kind in SUPPORTED.items():
        if isinstance(module, cls):
            return kind
    return None


def discover_layers(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    group_by: str = "layer",
    skip_first: bool = False,
    skip_last: bool = False,
    skip: Sequence[str] = (),
) -> tuple[list[LayerInfo], list[str]]:
    """Compressible layers in execution order, and the names of skipped unknown layers.

    ``example_input`` is one batch (batch size 1 preferred: MACs are per sample). Layers never
    run in the forward pass are listed after the others with their MACs as 0. ``skip`` holds
    names or name prefixes left out. A warning names every unknown layer type with weights.
    """
    model = model.eval()
    macs: dict[str, int] = {}
    order: list[str] = []
    handles = []
    unknown: list[str] = []
    for name, mod in model.named_modules():
        kind = _kind(mod)
        if kind is None:
            own = [p for p in mod.parameters(recurse=False) if p.dim() >= 2]
            if own and not any(True for _ in mod.children()):
                unknown.append(f"{name} ({type(mod).__name__})")
            continue

        def hook(m: nn.Module, inp: tuple, out: torch.Tensor, _name: str = name) -> None:
            if _name not in macs:
                order.append(_name)
                macs[_name] = 0
            per_out = m.weight[0].numel()  # MACs per output element (in/groups * kernel)
            macs[_name] += int(out[0].numel() * per_out) if out.dim() > 1 else int(out.numel() * per_out)

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(example_input[:1])
    finally:
        for h in handles:
            h.remove()
    if unknown:
        warnings.warn(f"compression: left as they are (layer types it cannot compress): {', '.join(unknown)}",
                      NasforgeWarning, stacklevel=2)
    mods = dict(model.named_modules())
    names = order + [n for n, m in mods.items() if _kind(m) is not None and n not in macs]
    if skip_first and names:
        names = names[1:]
    if skip_last and names:
        names = names[:-1]
    names = [n for n in names if not any(n == s or n.startswith(s + ".") for s in skip)]
    out = []
    for n in names:
        w = mods[n].weight
        out.append(LayerInfo(name=n, kind=_kind(mods[n]) or "", shape=list(w.shape), macs=int(macs.get(n, 0)),
                             group=block_of(n) if group_by == "block" else n))
    return out, unknown


def state_dict_split(model: nn.Module, layers: Sequence[LayerInfo]) -> tuple[int, int]:
    """(bytes, parameters) of everything in the state dict except the searched layers' weights."""
    weights = {f"{layer.name}.weight" for layer in layers}
    nbytes = sum(t.numel() * t.element_size() for k, t in model.state_dict().items() if k not in weights)
    params = sum(p.numel() for k, p in model.named_parameters() if k not in weights)
    return int(nbytes), int(params)
