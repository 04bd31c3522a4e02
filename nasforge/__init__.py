"""nasforge: neural architecture search and model compression as a service."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load(path: Any) -> Any:
    """Rebuild an exported model from an export folder (``nasforge export ... -o DIR``).

    Returns a plain ``torch.nn.Module`` in eval mode; the supernet is not needed.
    """
    from nasforge.export import load_export

    return load_export(path)


__all__ = ["__version__", "load"]
