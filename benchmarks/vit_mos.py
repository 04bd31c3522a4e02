"""Issue "ElasticViT and Mixture-of-Supernets": three methods, each against its own baseline.

Parts (each in its own module, each ``run_part(quick: bool) -> dict``):
  a  benchmarks/_vit_sampling.py    complexity- + performance-aware sampling vs uniform sampling
  b  benchmarks/_mos.py             Mixture-of-Supernets vs plain weight sharing (inheritance gap)
  c  benchmarks/_pooling_mixture.py balanced mixture of supernets vs one supernet (Kendall tau)

``VIT_MOS_PARTS=a,c python -m benchmarks vit_mos`` runs a subset; the keys of parts not run are
carried over from the previous ``benchmarks/results/vit_mos.json`` (marked in ``parts_carried``),
so each part can be rerun on its own without losing the others' figures (the previous file is read
when the run ends, so runs of different parts may overlap).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

PARTS = {"a": "benchmarks._vit_sampling", "b": "benchmarks._mos", "c": "benchmarks._pooling_mixture"}
PREVIOUS = Path(__file__).parent / "results" / "vit_mos.json"
_META = {"name", "machine", "commit", "date", "wall_s"}


def run(quick: bool = False) -> dict:
    wanted = [p.strip() for p in os.environ.get("VIT_MOS_PARTS", "a,b,c").split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        raise SystemExit(f"VIT_MOS_PARTS: unknown part(s) {unknown}; choose from {sorted(PARTS)}")
    fresh = {part: importlib.import_module(module_name).run_part(quick=quick)
             for part, module_name in PARTS.items() if part in wanted}
    # read after the run, so two runs of different parts at once each keep the other's figures
    previous = json.loads(PREVIOUS.read_text()) if PREVIOUS.exists() and not quick else {}
    out: dict = {}
    rows: list[dict] = []
    notes: list[str] = []
    seeds: dict[str, list] = {}
    carried: list[str] = []
    for part in PARTS:
        if part in fresh:
            result = fresh[part]
        else:
            result = previous.get("parts", {}).get(part)
            if result is None:
                continue
            carried.append(part)
        for key, value in result.items():
            if key == "rows":
                rows += [{"part": part, **row} for row in value]
            elif key == "notes":
                notes.append(f"({part}) {value}")
            elif key == "seeds":
                seeds[part] = value
            elif key != "carried_from_commit":  # bookkeeping of a carried part, not a figure
                out[key] = value
        out.setdefault("parts", {})[part] = result
    for part in carried:  # keep the commit a carried part was first measured at
        out["parts"][part].setdefault("carried_from_commit", previous.get("commit"))
    out["parts_carried"] = ",".join(carried) or "none"
    out["seeds"] = seeds
    out["rows"] = rows
    out["notes"] = "\n\n".join(notes)
    return out
