"""Peak memory of one forward pass, measured while the model runs.

``measure_peak_memory(model, x)`` runs ``model(x)`` once and reports the most bytes held at once:

- ``peak_memory_mb``: weights + input + the largest total of intermediate tensors alive at one
  moment (outputs included), in MiB: what running the child at this batch size needs;
- ``activation_peak_mb``: that peak without the weights and the input;
- ``weight_mb``: parameters and buffers (a tensor shared by two of them counted once).

On CUDA the caching allocator's own peak counter (``torch.cuda.max_memory_allocated``) gives the
activations, kernel workspaces included. Elsewhere a ``TorchDispatchMode`` sees every ATen op of
the forward pass: after each op it adds the storages of its outputs that are new and drops those
that have been freed (a weak reference per storage), and keeps the largest total. This counts the
tensors PyTorch allocates; scratch memory a kernel keeps to itself (a oneDNN reorder buffer) is not
seen. Views and in-place results share a storage and are counted once. The figure does not depend
on timing, so one pass is enough and it is the same on every run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

MIB = float(1 << 20)


def _storages(tensors: Any) -> dict[int, int]:
    """data_ptr -> bytes of the storages under the tensors in a pytree (empty ones left out)."""
    found: dict[int, int] = {}
    for t in tree_flatten(tensors)[0]:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            s = t.untyped_storage()
            if s.nbytes() > 0:
                found[s.data_ptr()] = s.nbytes()
    return found


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes of tensor storages created inside the mode and still alive."""

    def __init__(self, resident: set[int]):
        super().__init__()
        self.resident = resident  # weights and input: already counted apart
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for ptr in [p for p, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(ptr)[1]
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            s = t.untyped_storage()
            ptr, size = s.data_ptr(), s.nbytes()
            if size == 0 or ptr in self.resident or ptr in self.live:
                continue
            self.live[ptr] = (StorageWeakRef(s), size)
            self.current += size
        self.peak = max(self.peak, self.current)
        return out


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers, a tensor shared by two of them counted once
    (a view's own elements only: a child sliced out of a larger tensor holds just its slice)."""
    seen: dict[tuple[int, tuple[int, ...]], int] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        seen[(t.data_ptr(), tuple(t.shape))] = t.numel() * t.element_size()
    return sum(seen.values())


@torch.inference_mode()
def measure_peak_memory(model: nn.Module, example_input: Any, method: str = "auto") -> dict[str, float]:
    """``peak_memory_mb``, ``activation_peak_mb`` and ``weight_mb`` of ``model(example_input)``
    (see the module docstring); ``example_input``: a tensor or a tuple of them, on the model's device.
    ``method``: ``auto`` (the CUDA allocator's counter for CUDA inputs, else the op tracker),
    ``allocator`` or ``tracker`` (to compare the two on a GPU)."""
    if method not in ("auto", "allocator", "tracker"):
        raise ValueError(f"method must be auto, allocator or tracker, got {method!r}")
    model.eval()
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    weights = set(_storages(list(model.parameters()) + list(model.buffers())))
    given = {p: n for p, n in _storages(inputs).items() if p not in weights}
    on_cuda = any(isinstance(t, torch.Tensor) and t.is_cuda for t in tree_flatten(inputs)[0])
    if method == "allocator" and not on_cuda:
        raise ValueError("method allocator needs CUDA inputs")
    if on_cuda and method != "tracker":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = model(*inputs)
        torch.cuda.synchronize()
        activations = torch.cuda.max_memory_allocated() - base
        del out
    else:
        with _LiveBytes(weights | set(given)) as mode:
            out = model(*inputs)
        activations = mode.peak
        del out
    w, x = weight_bytes(model), sum(given.values())
    return {
        "peak_memory_mb": (w + x + activations) / MIB,
        "activation_peak_mb": activations / MIB,
        "weight_mb": w / MIB,
    }
