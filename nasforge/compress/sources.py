"""Build a trained model from a job's ``model:`` block, without any download.

Sources:
- ``timm:NAME``: ``timm.create_model(NAME, pretrained=False, **options)`` then ``weights``
  (required: a safetensors or torch state-dict file on disk).
- ``package.module:factory``: ``factory(**options)`` returns an ``nn.Module``; ``weights``
  (optional) is loaded into it. A module not importable from ``sys.path`` is also looked up
  under ``search_roots`` (the job records the directory the job was submitted from).
``export:PATH`` (a nasforge export folder) is resolved by the compression workload.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
import sysconfig
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasforge.core.errors import JobSpecError, NasforgeError


class ModelSourceError(NasforgeError):
    """``model.source`` / ``model.weights`` cannot be turned into a model."""


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only``; nested under
    ``state_dict`` / ``model`` is unwrapped)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelSourceError(f"model.weights: {path} does not exist; give a safetensors or .pt file on disk")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        import zipfile

        if "Weights only load failed" in str(e) and zipfile.is_zipfile(p):  # torch.save of objects, not tensors
            raise ModelSourceError(
                f"model.weights: {path} holds pickled Python objects (e.g. a whole model saved with "
                "torch.save(model, ...)), which nasforge does not unpickle: running code from a weights file "
                "is unsafe; save the weights with torch.save(model.state_dict(), PATH) or as .safetensors"
            ) from None
        raise ModelSourceError(f"model.weights: cannot read {path} as a torch state dict (not a file torch.save "
                               "wrote, or damaged); give a .safetensors file or a .pt state dict") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ModelSourceError(f"model.weights: {path} holds a {type(obj).__name__}, not a state dict")
    return dict(obj)


def import_factory(path: str, search_roots: Sequence[str | Path] = ()) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise JobSpecError(f"model.source: {path!r} must look like 'package.module:factory' or 'timm:NAME'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as first:
        for root in [*search_roots, Path.cwd()]:
            root = str(Path(root).resolve())
            candidate = Path(root, *module_name.split("."))
            if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
                if root not in sys.path:
                    sys.path.append(root)
                module = importlib.import_module(module_name)
                break
        else:
            raise JobSpecError(f"model.source: cannot import {module_name!r} ({first}); install it or run "
                               "from the folder that holds it") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise JobSpecError(f"model.source: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def build_model(source: str, weights: str | None, options: Mapping[str, Any],
                search_roots: Sequence[str | Path] = (), *, require_weights: bool = True) -> nn.Module:
    """The model in eval mode on CPU (see the module docstring). ``require_weights=False`` builds a
    timm architecture with random weights (for loaders that overwrite every tensor)."""
    if source.startswith("timm:"):
        import timm

        name = source.split(":", 1)[1]
        if not timm.is_model(name):  # before asking for weights: a misspelt name is the first thing to fix
            if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")):
                raise JobSpecError(f"model.source: {source!r} names a hub or folder checkpoint, which nasforge "
                                   "does not fetch; give the architecture (e.g. 'timm:resnet18') and its weights "
                                   "file as model.weights")
            close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
            raise JobSpecError(f"model.source: timm has no model {name!r}"
                               + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
                               + "; timm.list_models('*pattern*') lists its names")
        if weights is None and require_weights:
            raise JobSpecError(f"model.weights: required for {source!r} (nasforge never downloads weights); "
                               "give a safetensors / .pt state dict on disk")
        try:
            model = timm.create_model(name, pretrained=False, **dict(options))
        except (RuntimeError, TypeError, ValueError) as e:
            raise JobSpecError(f"model.source: timm cannot build {name!r} with options {dict(options)} ({e})") from None
    else:
        factory = import_factory(source, search_roots)
        model = _call_factory(source, factory, dict(options))
        if not isinstance(model, nn.Module):
            raise ModelSourceError(f"model.source: {source} returned {type(model).__name__}, not an nn.Module")
    if weights is not None:
        sd = load_state_dict_file(weights)
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ModelSourceError(f"model.weights: {weights} does not fit {source}: {_misfit(model, sd, e)}; "
                                   "check model.source and model.options (e.g. num_classes, in_chans) against "
                                   "the model the weights were saved from") from None
    return model.eval().cpu()


#: where installed packages, the standard library and nasforge live: a frame outside them is the user's
_LIBRARY_DIRS = tuple(
    d.rstrip(os.sep) + os.sep
    for d in {*(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")),
              str(Path(__file__).resolve().parents[1])})


def _call_factory(source: str, factory: Any, options: dict[str, Any]) -> Any:
    """``factory(**options)``; options it does not take, or an error it raises, become one line
    naming ``model.options`` / ``model.source`` and where in the user's code it was raised."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check before the call
        signature = None
    if signature is not None:
        try:
            signature.bind(**options)
        except TypeError as e:
            takes = ", ".join(p.name for p in signature.parameters.values()
                              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)) or "no options"
            raise JobSpecError(f"model.options: {source} cannot be called with them ({e}); it takes: {takes}") from None
    try:
        return factory(**options)
    except NasforgeError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code: say what it raised and where, in one line
        frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith(_LIBRARY_DIRS)]
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        first = (str(e).strip().splitlines() or [""])[0]
        raise ModelSourceError(f"model.source: {source}(**model.options) raised {type(e).__name__}{where}: "
                               f"{first}") from None


def _misfit(model: nn.Module, sd: Mapping[str, torch.Tensor], error: Exception, show: int = 3) -> str:
    """Why a state dict does not load, in a few names: torch's message lists every key."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} is {tuple(sd[k].shape)} in the file, {tuple(own[k].shape)} in the model"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]

    def some(names: list[str]) -> str:
        return ", ".join(names[:show]) + (f", ... ({len(names) - show} more)" if len(names) > show else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} of the model's {len(own)} tensors are not in the file ({some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} tensors of the file are not in the model ({some(unexpected)})")
    if shapes:
        parts.append(f"shapes differ: {some(shapes)}")
    return "; ".join(parts) or " ".join(str(error).split())[:300]
