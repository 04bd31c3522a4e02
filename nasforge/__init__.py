"""nasforge: neural architecture search and model compression as a service."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load(path: Any) -> Any:
    """Rebuild an exported model from an export folder (``nasforge export ... -o NAME``): its path,
    or the NAME (looked up in NASFORGE_HOME/exports when no such folder is here).

    Returns a plain ``torch.nn.Module`` in eval mode; the supernet is not needed.
    """
    from nasforge.export import load_export

    return load_export(path)


def prepare_inputs(path: Any, inputs: Any) -> Any:
    """Raw images (0..255 pixels, any common layout, PIL images) or texts as the export at ``path``
    takes them: scaled and standardized as its training data was (its arch.json ``preprocessing``).

    ``nasforge.load(path)(nasforge.prepare_inputs(path, images))`` gives the logits.
    """
    from nasforge.export import prepare_inputs as prepare

    return prepare(path, inputs)


__all__ = ["__version__", "load", "prepare_inputs"]
