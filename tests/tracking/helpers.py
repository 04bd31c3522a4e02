"""Shared helpers of the tracking tests: a real job with candidates in a real nasforge store."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasforge.core.types import Arch, Candidate, EvalResult, Job, JobState


@dataclass
class LoggedJob:
    store: Any
    job: Job
    candidates: list[Candidate]


def make_job(db: Path, n: int = 12, name: str = "tracked") -> LoggedJob:
    """A real job in a real store: ``n`` candidates, every 5th failed, one accuracy NaN."""
    from nasforge.store import open_store

    store = open_store(f"sqlite:///{db}")
    job = store.create_job({"name": name, "budget": {"evaluations": n}, "strategy": {"name": "random"},
                            "objectives": [{"metric": "accuracy", "direction": "maximize"}]}, name=name, seed=3)
    store.set_job_state(job.id, JobState.RUNNING)
    archs = [Arch("toy", 1, {"width": 8 * (i + 1), "kernel": 3 + 2 * (i % 2), "s1.b0.act": "relu"})
             for i in range(n)]
    store.add_candidates(job.id, archs, generation=0)
    results = []
    for i, a in enumerate(archs):
        if i % 5 == 4:
            results.append(EvalResult(a.key(), error=f"worker died on candidate {i}", worker="w1", duration_s=0.1))
        else:
            acc = float("nan") if i == 1 else 0.5 + i / (2 * n)
            results.append(EvalResult(a.key(), {"accuracy": acc, "latency_ms": 1.0 + i * 0.25, "flops": 1e6 * (i + 1)},
                                      {"device": "cpu", "threads": 1}, "w0", 0.05))
    cands = store.record_results(job.id, results)
    return LoggedJob(store, store.get_job(job.id), cands)


PG_SERVER = os.environ.get("NASFORGE_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")


@contextlib.contextmanager
def fresh_pg_database(tag: str) -> Iterator[str | None]:
    """A new, empty PostgreSQL database (dropped afterwards); yields None when the server does not
    answer (the caller skips)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"nasforge_{tag}_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError:
        admin.dispose()
        yield None
        return
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
