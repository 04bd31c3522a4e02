"""Name -> implementation registries.

Entries are ``"package.module:attribute"`` strings resolved on first use, so that listing names
(e.g. to validate a job file) imports nothing heavy, and registration never depends on the side
effects of importing a module. Each package owns one registry and lists its entries explicitly.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from nasforge.core.errors import UnknownNameError

T = TypeVar("T")


def import_object(path: str) -> Any:
    """Import ``"pkg.module:attr"`` (attr may be dotted) and return the object."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"import path must look like 'package.module:name', got {path!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """An explicit, ordered table of implementations of one interface, addressed by name."""

    def __init__(self, kind: str, entries: dict[str, str] | None = None):
        self.kind = kind
        self._paths: dict[str, str] = dict(entries or {})
        self._loaded: dict[str, T] = {}

    def add(self, name: str, target: str | T) -> None:
        """Register ``name``; ``target`` is an import path string or the object itself."""
        if name in self._paths or name in self._loaded:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if isinstance(target, str):
            self._paths[name] = target
        else:
            self._loaded[name] = target

    def names(self) -> list[str]:
        return sorted(set(self._paths) | set(self._loaded))

    def __contains__(self, name: object) -> bool:
        return name in self._paths or name in self._loaded

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def check(self, name: str, where: str = "") -> None:
        """Raise UnknownNameError naming the allowed values, without importing anything.

        A ``"package.module:attr"`` path that is not a registered name passes here; ``get`` imports
        it (code outside nasforge, e.g. a user's own workload)."""
        if ":" in name and name not in self:
            return
        if name not in self:
            loc = f"{where}: " if where else ""
            raise UnknownNameError(
                f"{loc}unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            )

    def get(self, name: str, where: str = "") -> T:
        self.check(name, where)
        if name not in self:  # an import path (see check); not added to names()
            try:
                return import_object(name)  # type: ignore[no-any-return]
            except (ImportError, AttributeError) as e:
                loc = f"{where}: " if where else ""
                raise UnknownNameError(f"{loc}cannot import {self.kind} {name!r} ({e})") from None
        if name not in self._loaded:
            self._loaded[name] = import_object(self._paths[name])
        return self._loaded[name]
