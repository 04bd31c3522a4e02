"""Result formats of ``nasforge results``: candidates as flat rows, and writers for CSV, JSON, Parquet.

Row shape (``candidate_rows``): fixed columns (``FIXED_COLUMNS``), then one ``arch.<choice>``
column per architecture choice, then one column per metric under the metric's own name
(``metrics.<name>`` when a metric is named like a fixed column). Columns are the union over all
candidates, sorted within the arch and metric groups; a candidate without a value has ``None``.

JSON is a list of ``Candidate.to_dict()`` objects; non-finite floats (NaN, inf), which JSON cannot
hold, are written as ``null``. Parquet (pyarrow) has the row shape with typed columns: metrics
float64, arch columns bool / int64 / float64 / string as their values allow.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nasforge.core.types import Candidate, canonical_json

FIXED_COLUMNS = (
    "candidate_id", "job_id", "key", "seq", "generation", "status", "pareto", "space",
    "worker", "duration_s", "error", "created_at", "finished_at", "device",
)
_FIXED_TYPES = {
    "candidate_id": "int64", "seq": "int64", "generation": "int64", "pareto": "bool", "duration_s": "float64",
}


def metric_column(name: str) -> str:
    return f"metrics.{name}" if name in FIXED_COLUMNS or name.startswith("arch.") else name


def columns(cands: Sequence[Candidate]) -> list[str]:
    """The column names of ``candidate_rows(cands)``, in order."""
    arch_names = sorted({name for c in cands for name in c.arch})
    metric_names = sorted({name for c in cands for name in c.metrics})
    return [*FIXED_COLUMNS, *(f"arch.{n}" for n in arch_names), *(metric_column(n) for n in metric_names)]


def candidate_rows(cands: Sequence[Candidate]) -> list[dict[str, Any]]:
    """One flat dict per candidate with every column of ``columns(cands)`` (missing -> None)."""
    cols = columns(cands)
    rows = []
    for c in cands:
        row: dict[str, Any] = dict.fromkeys(cols)
        row.update(
            candidate_id=c.id, job_id=c.job_id, key=c.key, seq=c.seq, generation=c.generation,
            status=c.status.value, pareto=c.pareto, space=c.arch.space, worker=c.worker,
            duration_s=c.duration_s, error=c.error,
            created_at=c.created_at.isoformat() if c.created_at else None,
            finished_at=c.finished_at.isoformat() if c.finished_at else None,
            device=canonical_json(dict(c.device)) if c.device else None,
        )
        for name, value in c.arch.items():
            row[f"arch.{name}"] = value
        for name, value in c.metrics.items():
            row[metric_column(name)] = float(value)
        rows.append(row)
    return rows


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def to_json(cands: Sequence[Candidate]) -> str:
    """A JSON list of ``Candidate.to_dict()`` (valid JSON: NaN/inf become null)."""
    return json.dumps([_json_safe(c.to_dict()) for c in cands], indent=2, allow_nan=False)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value).lower()
    return value


def to_csv(cands: Sequence[Candidate]) -> str:
    """CSV text with a header row; empty cells for missing values, ``true``/``false`` for flags."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    cols = columns(cands)
    writer.writerow(cols)
    for row in candidate_rows(cands):
        writer.writerow([_csv_cell(row[c]) for c in cols])
    return buf.getvalue()


def write_json(cands: Sequence[Candidate], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_json(cands) + "\n")
    return path


def write_csv(cands: Sequence[Candidate], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_csv(cands))
    return path


def _arrow_type(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int64"
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "float64"
    return "string"


def to_arrow(cands: Sequence[Candidate]) -> Any:
    """A ``pyarrow.Table`` with the row shape and typed columns (see the module docstring)."""
    import pyarrow as pa

    cols = columns(cands)
    rows = candidate_rows(cands)
    metric_cols = {metric_column(n) for c in cands for n in c.metrics}
    types = {"bool": pa.bool_(), "int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}
    arrays = []
    for col in cols:
        values = [r[col] for r in rows]
        if col in metric_cols:
            kind = "float64"
        elif col in _FIXED_TYPES:
            kind = _FIXED_TYPES[col]
        elif col.startswith("arch."):
            kind = _arrow_type(values)
        else:
            kind = "string"
        if kind == "string":
            values = [None if v is None else str(v) for v in values]
        elif kind == "float64":
            values = [None if v is None else float(v) for v in values]
        arrays.append(pa.array(values, type=types[kind]))
    return pa.Table.from_arrays(arrays, names=cols)


def write_parquet(cands: Sequence[Candidate], path: Path) -> Path:
    """Write the candidates as one Parquet file (pyarrow); returns ``path``."""
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_arrow(cands), path)
    return path
