"""Result formats: candidates read from a real store, written as CSV, JSON and Parquet, read back."""

from __future__ import annotations

import csv
import json
import math

import pyarrow.parquet as pq
import pytest

from nasforge.core.types import Arch, EvalResult
from nasforge.store import open_store
from nasforge.store.export_formats import (
    candidate_rows,
    columns,
    to_csv,
    to_json,
    write_csv,
    write_json,
    write_parquet,
)


@pytest.fixture
def cands(tmp_path):  # type: ignore[no-untyped-def]
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    job = store.create_job({}, name="fmt", seed=0)
    archs = [Arch("toy", 1, {"width": 8 * (i + 1), "kernel": 3, "act": "relu" if i % 2 else "gelu", "se": i == 1})
             for i in range(4)]
    store.add_candidates(job.id, archs, generation=0)
    store.record_results(job.id, [
        EvalResult(archs[0].key(), {"accuracy": 0.91, "latency_ms": 1.5, "params": 1200}, {"device": "cpu"}, "w0", 0.2),
        EvalResult(archs[1].key(), {"accuracy": 0.87, "latency_ms": float("nan")}, None, "w1", 0.3),
        EvalResult(archs[2].key(), error="worker died"),
    ])
    store.set_pareto(job.id, [archs[0].key()])
    out = store.get_candidates(job.id)
    store.close()
    return out


def test_rows_have_arch_and_metric_columns(cands) -> None:  # type: ignore[no-untyped-def]
    cols = columns(cands)
    assert cols[:3] == ["candidate_id", "job_id", "key"]
    assert {"arch.width", "arch.kernel", "arch.act", "arch.se", "accuracy", "latency_ms", "params"} <= set(cols)
    rows = candidate_rows(cands)
    assert [r["status"] for r in rows] == ["done", "done", "failed", "pending"]
    assert rows[0]["pareto"] is True and rows[0]["arch.width"] == 8 and rows[0]["accuracy"] == 0.91
    assert rows[2]["error"] == "worker died" and rows[2]["accuracy"] is None
    assert json.loads(rows[0]["device"]) == {"device": "cpu"}


def test_json_is_a_list_of_candidate_dicts(cands, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(to_json(cands))
    assert [d["key"] for d in data] == [c.key for c in cands]
    assert set(data[0]) >= {"candidate_id", "key", "status", "arch", "metrics", "pareto"}
    assert data[0]["arch"] == dict(cands[0].arch.choices) and data[0]["pareto"] is True
    assert data[1]["metrics"]["latency_ms"] is None  # NaN is not JSON: written as null
    path = write_json(cands, tmp_path / "out" / "c.json")
    assert json.loads(path.read_text()) == data


def test_csv_round_trip(cands, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = write_csv(cands, tmp_path / "c.csv")
    assert path.read_text() == to_csv(cands)
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and rows[0]["key"] == cands[0].key
    assert float(rows[0]["accuracy"]) == 0.91 and rows[0]["pareto"] == "true" and rows[3]["accuracy"] == ""
    assert rows[1]["latency_ms"] == "nan"


def test_parquet_typed_columns(cands, tmp_path) -> None:  # type: ignore[no-untyped-def]
    table = pq.read_table(write_parquet(cands, tmp_path / "c.parquet"))
    assert table.num_rows == 4
    types = {f.name: str(f.type) for f in table.schema}
    assert types["arch.width"] == "int64" and types["arch.act"] == "string" and types["arch.se"] == "bool"
    assert types["accuracy"] == "double" and types["pareto"] == "bool" and types["candidate_id"] == "int64"
    d = table.to_pydict()
    assert d["key"] == [c.key for c in cands]
    assert d["accuracy"][:2] == [0.91, 0.87] and d["accuracy"][2] is None
    assert math.isnan(d["latency_ms"][1])
    empty = pq.read_table(write_parquet([], tmp_path / "empty.parquet"))
    assert empty.num_rows == 0 and "key" in empty.column_names
