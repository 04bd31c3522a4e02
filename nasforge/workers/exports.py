"""Find and load a nasforge export folder (``arch.json`` + weights), through the Workload its
``kind`` names. Writing exports is ``nasforge.export``'s; reading them is here, beside the
workloads, so that a workload that starts from an export (``model.source: export:NAME``) needs
nothing above ``workers``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nasforge.core.errors import ExportError
from nasforge.core.paths import home
from nasforge.core.types import ARCH_SCHEMA_VERSION
from nasforge.workers import WORKLOADS

#: what to give instead of a path that is not an export
GIVE_EXPORT = "give the folder `nasforge export -o NAME` wrote (or its NAME)"


def find_export(path: str | Path, search_roots: Sequence[str | Path] = ()) -> Path:
    """The export folder ``path`` names: absolute, or relative to ``search_roots`` or the current
    folder, else in the exports folder (where ``nasforge export -o NAME`` wrote it, so the NAME
    given there works here too). ExportError listing where it looked otherwise."""
    p = Path(path).expanduser()
    places = [p] if p.is_absolute() else [*(Path(r) / p for r in search_roots), Path.cwd() / p,
                                           home() / "exports" / p]
    for place in places:
        if (place / "arch.json").is_file():
            return place.resolve()
    looked = "" if p.is_absolute() else f" (looked in {', '.join(str(q.parent) for q in dict.fromkeys(places))})"
    raise ExportError(f"{path} is not a nasforge export folder{looked}")


def read_export(path: str | Path, caller: str = "") -> tuple[Path, dict[str, Any]]:
    """The export folder ``path`` names and its ``arch.json``; one-line ExportError (prefixed by
    ``caller``) when it is no export folder or its arch.json cannot be read."""
    lead = f"{caller}: " if caller else ""
    try:
        p = find_export(path)
    except ExportError as e:
        raise ExportError(f"{lead}{e}; {GIVE_EXPORT}") from None
    meta_path = p / "arch.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"{lead}{meta_path}: cannot read it ({e}); {GIVE_EXPORT}") from None
    if not isinstance(meta, dict):
        raise ExportError(f"{lead}{meta_path}: not the arch.json of an export (no JSON object); {GIVE_EXPORT}")
    return p, meta


def load_export(path: str | Path) -> Any:
    p, meta = read_export(path)
    meta_path = p / "arch.json"
    if "kind" not in meta:
        raise ExportError(f"{meta_path}: not the arch.json of an export (it names no kind); {GIVE_EXPORT}")
    if int(meta.get("schema_version", 0)) > ARCH_SCHEMA_VERSION:
        raise ExportError(f"{meta_path}: schema_version {meta['schema_version']} is newer than this nasforge reads "
                          f"({ARCH_SCHEMA_VERSION}); upgrade nasforge")
    return WORKLOADS.get(meta["kind"], f"{meta_path}: kind").load_export(p, meta)
