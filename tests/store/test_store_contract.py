"""The Store contract (nasforge.core.interfaces.Store) on SQLite and on PostgreSQL.

Every test runs once per backend (``store_url`` fixture). The concurrency tests use real
processes (multiprocessing, fork) writing one SQLite file / one PostgreSQL database at once.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import re
import time
import traceback
from datetime import timezone

import pytest
from sqlalchemy import inspect as sa_inspect

from nasforge.core.errors import StoreError
from nasforge.core.types import Arch, CandidateStatus, EvalResult, JobState
from nasforge.store import SqlStore, open_store
from nasforge.store.sql import CHECKPOINTS_KEPT


def archs(n: int, *, offset: int = 0, space: str = "toy") -> list[Arch]:
    return [Arch(space, 1, {"width": offset + i, "kernel": 3 + 2 * (i % 3), "act": "relu"}) for i in range(n)]


def ok(arch: Arch, acc: float = 0.5, **extra: float) -> EvalResult:
    return EvalResult(arch.key(), {"accuracy": acc, "latency_ms": 1.0 + acc, **extra},
                      device={"device": "cpu", "threads": 1}, worker="w0", duration_s=0.01)


# ---- jobs ------------------------------------------------------------------------------------
def test_create_get_list_job(store: SqlStore) -> None:
    spec = {"name": "quick start", "budget": {"evaluations": 10}, "objectives": {"accuracy": "maximize"}}
    job = store.create_job(spec, name="quick start", seed=7)
    assert re.fullmatch(r"quick-start-\d{8}-\d{6}-[0-9a-f]{4}", job.id), job.id
    assert job.state == JobState.CREATED and job.seed == 7 and dict(job.spec) == spec
    assert job.created_at.tzinfo is not None and job.started_at is None
    assert dict(job.counts) == {"pending": 0, "running": 0, "done": 0, "failed": 0}
    other = store.create_job(spec, name="quick start", seed=7)
    assert other.id != job.id
    again = store.get_job(job.id)
    assert again == job
    listed = {j.id: j for j in store.list_jobs()}
    assert {job.id, other.id} <= set(listed)
    with pytest.raises(StoreError, match="no job 'nope'"):
        store.get_job("nope")
    store.set_job_spec(job.id, {**spec, "budget": {"evaluations": 25}})  # resume --evaluations 25
    assert store.get_job(job.id).spec["budget"] == {"evaluations": 25} and store.get_job(other.id).spec == spec
    with pytest.raises(StoreError, match="no job 'nope'"):
        store.set_job_spec("nope", spec)


def test_job_state_timestamps(store: SqlStore) -> None:
    job = store.create_job({}, name="states", seed=0)
    store.set_job_state(job.id, JobState.RUNNING)
    running = store.get_job(job.id)
    assert running.state == JobState.RUNNING and running.started_at is not None and running.finished_at is None
    store.set_job_state(job.id, JobState.CANCELLED, error="cancelled by user")
    store.set_job_state(job.id, JobState.CANCELLED)  # a later None keeps the note on a final state
    cancelled = store.get_job(job.id)
    assert cancelled.finished_at is not None and cancelled.error == "cancelled by user"
    assert cancelled.started_at == running.started_at
    assert cancelled.duration_s is not None and cancelled.duration_s >= 0
    store.set_job_state(job.id, JobState.RUNNING)  # resume: running again, no end, no error
    resumed = store.get_job(job.id)
    assert resumed.finished_at is None and resumed.error is None and resumed.started_at == running.started_at
    with pytest.raises(StoreError):
        store.set_job_state("nope", JobState.DONE)


def test_run_time_counts_the_runs_not_the_time_between_them(store: SqlStore) -> None:
    """A job trained 5 s and ran 10 s, stopped, and was resumed an hour later for 20 s more: its
    duration is 35 s, not an hour; a run that ended unrecorded is closed at the time given."""
    from datetime import datetime, timedelta

    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    job = store.create_job({}, name="runs", seed=0)
    store.set_job_state(job.id, JobState.TRAINING, at=t0)
    store.set_job_state(job.id, JobState.RUNNING, at=t0 + timedelta(seconds=5))  # the same run goes on
    store.set_job_state(job.id, JobState.INTERRUPTED, error="interrupted", at=t0 + timedelta(seconds=15))
    assert store.get_job(job.id).duration_s == pytest.approx(15)
    store.set_job_state(job.id, JobState.RUNNING, at=t0 + timedelta(hours=1))
    running = store.get_job(job.id)
    assert running.active_since == t0 + timedelta(hours=1) and running.started_at == t0
    assert running.duration_s is not None and running.duration_s > 15  # the current run counts on
    store.set_job_state(job.id, JobState.DONE, at=t0 + timedelta(hours=1, seconds=20))
    done = store.get_job(job.id)
    assert done.duration_s == pytest.approx(35) and done.run_s == pytest.approx(35) and done.active_since is None
    assert done.finished_at == t0 + timedelta(hours=1, seconds=20)
    store.set_job_state(job.id, JobState.CANCELLED)  # a final state after a final state adds nothing
    assert store.get_job(job.id).duration_s == pytest.approx(35)


# ---- candidates ------------------------------------------------------------------------------
def test_add_candidates_is_ordered_and_idempotent(store: SqlStore) -> None:
    job = store.create_job({}, name="add", seed=0)
    a = archs(5)
    first = store.add_candidates(job.id, a, generation=0)
    assert [c.key for c in first] == [x.key() for x in a]
    assert [c.seq for c in first] == [1, 2, 3, 4, 5]
    assert all(c.status == CandidateStatus.PENDING and c.generation == 0 and c.job_id == job.id for c in first)
    assert [c.arch for c in first] == a
    # re-adding returns the stored rows (same ids, old generation); new ones continue the numbering;
    # a duplicate inside one batch maps to the same candidate
    b = [a[1], *archs(2, offset=100), a[1]]
    second = store.add_candidates(job.id, b, generation=3)
    assert second[0].id == first[1].id and second[0].generation == 0
    assert [c.seq for c in second[1:3]] == [6, 7] and second[1].generation == 3
    assert second[3].id == second[0].id
    assert len(store.get_candidates(job.id)) == 7
    assert store.add_candidates(job.id, [], generation=0) == []
    with pytest.raises(StoreError):
        store.add_candidates("nope", a, generation=0)


def test_results_are_recorded_exactly_once(store: SqlStore) -> None:
    job = store.create_job({}, name="results", seed=0)
    a = archs(4)
    store.add_candidates(job.id, a, generation=0)
    store.mark_running(job.id, [x.key() for x in a[:3]])
    assert store.counts(job.id) == {"pending": 1, "running": 3, "done": 0, "failed": 0}
    rec = store.record_results(job.id, [ok(a[0], 0.9), EvalResult(a[1].key(), error="worker died: OOM"),
                                        ok(a[2], float("nan"))])
    assert [c.status for c in rec] == [CandidateStatus.DONE, CandidateStatus.FAILED, CandidateStatus.DONE]
    assert rec[0].metrics["accuracy"] == 0.9 and rec[0].worker == "w0" and rec[0].duration_s == 0.01
    assert dict(rec[0].device) == {"device": "cpu", "threads": 1}
    assert rec[0].finished_at is not None and rec[0].finished_at.tzinfo == timezone.utc
    assert rec[1].error == "worker died: OOM"
    assert math.isnan(rec[2].metrics["accuracy"])
    # a second result for a done key changes nothing; a failed one may be retried
    again = store.record_results(job.id, [ok(a[0], 0.1), ok(a[1], 0.7)])
    assert again[0] == rec[0]
    assert again[1].status == CandidateStatus.DONE and again[1].metrics["accuracy"] == 0.7 and again[1].error is None
    # marking running never takes a done candidate back
    store.mark_running(job.id, [a[0].key()])
    assert store.get_candidate(job.id, a[0].key()).status == CandidateStatus.DONE
    # done then failed in the same batch: done wins
    last = store.record_results(job.id, [ok(a[3], 0.3), EvalResult(a[3].key(), error="late duplicate")])
    assert last[0].status == last[1].status == CandidateStatus.DONE
    assert store.counts(job.id) == {"pending": 0, "running": 0, "done": 4, "failed": 0}
    with pytest.raises(StoreError, match="no candidate with key"):
        store.record_results(job.id, [ok(Arch("toy", 1, {"width": -1}))])


def test_get_candidates_filters_and_order(store: SqlStore) -> None:
    job = store.create_job({}, name="filters", seed=0)
    a = archs(6)
    store.add_candidates(job.id, a[3:], generation=0)
    store.add_candidates(job.id, a[:3], generation=1)
    store.record_results(job.id, [ok(a[0]), ok(a[4]), EvalResult(a[5].key(), error="x")])
    all_c = store.get_candidates(job.id)
    assert [c.seq for c in all_c] == [1, 2, 3, 4, 5, 6]
    assert [c.arch for c in all_c] == a[3:] + a[:3]
    done = store.get_candidates(job.id, status=CandidateStatus.DONE)
    assert [c.key for c in done] == [a[4].key(), a[0].key()]
    picked = store.get_candidates(job.id, keys=[a[0].key(), a[3].key(), "absent"])
    assert [c.key for c in picked] == [a[3].key(), a[0].key()]
    assert store.get_candidates(job.id, status=CandidateStatus.RUNNING) == []
    with pytest.raises(StoreError):
        store.get_candidates("nope")


def test_get_candidate_by_id_or_key(store: SqlStore) -> None:
    job = store.create_job({}, name="one", seed=0)
    other = store.create_job({}, name="other", seed=0)
    c = store.add_candidates(job.id, archs(2), generation=0)[1]
    assert store.get_candidate(job.id, c.id) == c
    assert store.get_candidate(job.id, c.key) == c
    assert store.get_candidate(job.id, str(c.id)) == c  # the CLI passes ids as text
    with pytest.raises(StoreError, match="has no candidate"):
        store.get_candidate(other.id, c.id)  # ids are not shared across jobs
    with pytest.raises(StoreError):
        store.get_candidate(job.id, "0" * 20)


def test_get_candidate_by_key_prefix(store: SqlStore) -> None:
    """Tables print a key's first 10 characters; that is enough to name a candidate."""
    seen: dict[str, Arch] = {}
    pair: tuple[Arch, Arch] | None = None
    for a in archs(200_000):  # two archs whose keys share their first 6 characters (birthday: ~5k)
        if (b := seen.setdefault(a.key()[:6], a)) is not a:
            pair = (b, a)
            break
    assert pair is not None
    job = store.create_job({}, name="prefix", seed=0)
    c1, c2 = store.add_candidates(job.id, list(pair), generation=0)
    assert store.get_candidate(job.id, c1.key[:10]) == c1
    assert store.get_candidate(job.id, c2.key[:7 if c1.key[6] != c2.key[6] else 10]) == c2
    with pytest.raises(StoreError, match=f"key prefix '{c1.key[:6]}' matches several candidates \\(ids {c1.id}, {c2.id}\\)"):
        store.get_candidate(job.id, c1.key[:6])
    with pytest.raises(StoreError, match="has no candidate"):
        store.get_candidate(job.id, c1.key[:5])  # too short to count as a key
    with pytest.raises(StoreError, match="has no candidate"):
        store.get_candidate(job.id, c1.key[:9] + "%")  # not hex: never a LIKE pattern


def test_set_pareto_flags_exactly_these(store: SqlStore) -> None:
    job = store.create_job({}, name="pareto", seed=0)
    a = archs(5)
    store.add_candidates(job.id, a, generation=0)
    store.set_pareto(job.id, [a[0].key(), a[2].key()])
    assert [c.pareto for c in store.get_candidates(job.id)] == [True, False, True, False, False]
    store.set_pareto(job.id, [a[4].key()])
    assert [c.pareto for c in store.get_candidates(job.id)] == [False, False, False, False, True]
    store.set_pareto(job.id, [])
    assert not any(c.pareto for c in store.get_candidates(job.id))


def test_counts_and_list_jobs_counts(store: SqlStore) -> None:
    job = store.create_job({}, name="counts", seed=0)
    assert store.counts(job.id) == {"pending": 0, "running": 0, "done": 0, "failed": 0}
    a = archs(3)
    store.add_candidates(job.id, a, generation=0)
    store.record_results(job.id, [ok(a[0])])
    assert store.counts(job.id) == {"pending": 2, "running": 0, "done": 1, "failed": 0}
    listed = next(j for j in store.list_jobs() if j.id == job.id)
    assert dict(listed.counts) == {"pending": 2, "running": 0, "done": 1, "failed": 0}
    with pytest.raises(StoreError):
        store.counts("nope")


def test_checkpoints_latest_and_pruned(store: SqlStore) -> None:
    job = store.create_job({}, name="ckpt", seed=0)
    assert store.load_checkpoint(job.id) is None
    for step in range(1, 6):
        store.save_checkpoint(job.id, step, {"strategy": {"step": step, "fitness": [1.5, math.inf, -math.inf]},
                                             "big": 2**70})
    step, state = store.load_checkpoint(job.id)  # type: ignore[misc]
    assert step == 5 and state["strategy"]["step"] == 5 and state["big"] == 2**70
    assert state["strategy"]["fitness"] == [1.5, math.inf, -math.inf]
    store.save_checkpoint(job.id, 5, {"replaced": True})
    assert store.load_checkpoint(job.id) == (5, {"replaced": True})
    from sqlalchemy import func, select

    from nasforge.store._models import checkpoints

    with store._engine.connect() as conn:
        kept = conn.execute(select(func.count()).where(checkpoints.c.job_id == job.id)).scalar()
    assert kept == CHECKPOINTS_KEPT


def test_delete_job_removes_its_rows_and_only_its_rows(store: SqlStore) -> None:
    job = store.create_job({}, name="gone", seed=0)
    kept = store.create_job({}, name="kept", seed=0)
    a = archs(3, offset=8000)
    for j in (job, kept):
        store.add_candidates(j.id, a, generation=0)
        store.record_results(j.id, [ok(a[0])])
        store.save_checkpoint(j.id, 1, {"step": 1})
    store.put_cached_metrics(a[0].key(), "cpu:test", {"latency_ms": 1.0})
    assert store.delete_job(job.id) == 3
    with pytest.raises(StoreError, match="no job"):
        store.get_job(job.id)
    with pytest.raises(StoreError, match="no job"):
        store.delete_job(job.id)
    assert store.load_checkpoint(job.id) is None
    assert len(store.get_candidates(kept.id)) == 3 and store.load_checkpoint(kept.id) == (1, {"step": 1})
    assert store.get_cached_metrics([a[0].key()], "cpu:test")  # the latency cache is shared: it stays
    assert job.id not in {j.id for j in store.list_jobs()}
    from sqlalchemy import func, select

    from nasforge.store._models import candidates

    with store._engine.connect() as conn:
        assert conn.execute(select(func.count()).where(candidates.c.job_id == job.id)).scalar() == 0


def test_metrics_cache_across_jobs(store: SqlStore) -> None:
    key, other = (a.key() for a in archs(2, offset=7000))
    assert store.get_cached_metrics([key], "cpu:test") == {}
    assert store.get_cached_metrics([], "cpu:test") == {}
    store.put_cached_metrics(key, "cpu:test", {"latency_ms": 2.5, "latency_p90_ms": 3})
    store.put_cached_metrics(key, "cpu:test", {"latency_ms": 2.0, "latency_p90_ms": 2.5})
    assert store.get_cached_metrics([key, other, key], "cpu:test") == {key: {"latency_ms": 2.0, "latency_p90_ms": 2.5}}
    assert store.get_cached_metrics([key], "cuda:other") == {}
    many = [f"k{i}" for i in range(1203)]  # more than one IN list
    for k in many[::400]:
        store.put_cached_metrics(k, "cpu:test", {"latency_ms": 1.0})
    assert sorted(store.get_cached_metrics(many, "cpu:test")) == sorted(many[::400])


def test_data_persists_across_store_objects(store_url: str) -> None:
    s1 = open_store(store_url)
    job = s1.create_job({"x": [1, 2]}, name="persist", seed=1)
    s1.add_candidates(job.id, archs(3), generation=0)
    s1.close()
    s2 = open_store(store_url)
    assert s2.get_job(job.id).spec == {"x": [1, 2]}
    assert len(s2.get_candidates(job.id)) == 3
    s2.close()


def test_schema_comes_from_migrations_and_matches_models(store: SqlStore) -> None:
    from nasforge.store._models import Base

    insp = sa_inspect(store._engine)
    tables = set(insp.get_table_names())
    assert {"nf_jobs", "nf_candidates", "nf_checkpoints", "nf_metrics_cache", "nf_alembic_version"} <= tables
    for table in Base.metadata.sorted_tables:
        assert {c["name"] for c in insp.get_columns(table.name)} == {c.name for c in table.columns}, table.name
    uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("nf_candidates")}
    assert ("job_id", "key") in uniques
    with store._engine.connect() as conn:
        from sqlalchemy import text

        assert conn.execute(text("SELECT version_num FROM nf_alembic_version")).scalar() == "0002_job_run_time"


def test_a_store_written_before_run_time_is_upgraded_and_keeps_its_jobs(tmp_path) -> None:
    """A SQLite store at the first schema revision, with a finished job in it: opening it adds the
    run-time columns; the old job's duration is first start to end, as it was shown before, and
    a resume of it counts from there."""
    from datetime import datetime, timedelta

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    from nasforge.store.sql import MIGRATIONS_DIR, VERSION_TABLE

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001_initial")
        conn.execute(text("INSERT INTO nf_jobs (id, name, spec, state, seed, created_at, started_at, finished_at) "
                          "VALUES ('old', 'old', '{}', 'done', 0, '2026-01-01 11:59:00', '2026-01-01 12:00:00', "
                          "'2026-01-01 12:01:40')"))
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == "0001_initial"
    engine.dispose()
    store = open_store(url)
    try:
        old = store.get_job("old")
        assert old.run_s is None and old.duration_s == pytest.approx(100)
        t = datetime(2026, 2, 1, tzinfo=timezone.utc)
        store.set_job_state("old", JobState.RUNNING, at=t)
        store.set_job_state("old", JobState.DONE, at=t + timedelta(seconds=30))
        assert store.get_job("old").duration_s == pytest.approx(130)
    finally:
        store.close()


def test_a_newer_schema_is_refused_with_a_clear_error(store: SqlStore, store_url: str) -> None:
    from sqlalchemy import text

    with store._engine.begin() as conn:
        conn.execute(text("UPDATE nf_alembic_version SET version_num = '9999_from_the_future'"))
    try:
        with pytest.raises(StoreError, match="schema revision '9999_from_the_future'"):
            open_store(store_url)
    finally:
        with store._engine.begin() as conn:
            conn.execute(text("UPDATE nf_alembic_version SET version_num = '0002_job_run_time'"))


def test_bad_urls_raise_store_error() -> None:
    with pytest.raises(StoreError, match="not a SQLAlchemy URL"):
        open_store("not a url")
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="cannot open the store"):
        open_store("postgresql+psycopg2://nobody@127.0.0.1:9/none?connect_timeout=2")
    assert time.monotonic() - t0 < 10


def test_a_url_naming_a_driver_that_is_not_installed_says_so() -> None:
    with pytest.raises(StoreError, match="its database driver 'MySQLdb' is not installed"):
        open_store("mysql://root:secret@127.0.0.1/test")
    with pytest.raises(StoreError, match="mysql://root:\\*\\*\\*@"):  # the password is not printed
        open_store("mysql://root:secret@127.0.0.1/test")


@pytest.mark.postgres
def test_a_plain_postgresql_url_uses_the_installed_driver(pg_url: str) -> None:
    """SQLAlchemy 2.1 reads ``postgresql://`` as psycopg (v3); nasforge installs psycopg2."""
    import importlib.util

    plain = pg_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    assert plain.startswith("postgresql://")
    store = open_store(plain)
    try:
        job = store.create_job({"name": "plain-url"}, name="plain-url", seed=0)
        assert store.get_job(job.id).name == "plain-url"
        expected = "psycopg" if importlib.util.find_spec("psycopg") is not None else "psycopg2"
        assert store._engine.dialect.driver == expected
    finally:
        store.close()


def test_one_store_object_shared_by_threads(store: SqlStore) -> None:
    import threading

    jobs = [store.create_job({}, name=f"thread{t}", seed=t) for t in range(3)]
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(0, 60, 6):
                batch = archs(6, offset=t * 1000 + i)
                store.add_candidates(jobs[t].id, batch, generation=i)
                store.record_results(jobs[t].id, [ok(a) for a in batch])
                store.counts(jobs[t].id)
        except BaseException as e:  # noqa: BLE001 - checked below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert [store.counts(j.id)["done"] for j in jobs] == [60, 60, 60]


# ---- several processes ---------------------------------------------------------------------
N_PROCS = 4
OWN = 240  # candidates each process writes into its own job
SHARED = 60  # candidates every process writes into the one shared job
BATCH = 12


def _open_fresh(url: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    try:
        s = open_store(url)
        s.create_job({}, name="fresh", seed=0)
        s.close()
        queue.put(("ok", None))
    except BaseException:  # noqa: BLE001 - reported to the parent
        queue.put(("error", traceback.format_exc()))


def _writer(url: str, worker: int, shared_job: str, start: float, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    """One job of its own plus the shared job: add in batches, mark running, record, checkpoint."""
    try:
        while time.time() < start:
            time.sleep(0.001)
        s = open_store(url)
        t0 = time.perf_counter()
        own = s.create_job({"worker": worker}, name=f"writer{worker}", seed=worker)
        s.set_job_state(own.id, JobState.RUNNING)
        mine = archs(OWN, offset=worker * 10_000)
        shared = archs(SHARED, offset=900_000)
        shared = shared[worker:] + shared[:worker]  # each process in its own order
        writes = 0
        for step, i in enumerate(range(0, OWN, BATCH)):
            batch = mine[i : i + BATCH]
            cands = s.add_candidates(own.id, batch, generation=step)
            s.mark_running(own.id, [c.key for c in cands])
            s.record_results(own.id, [ok(a, acc=(hash(a.key()) % 1000) / 1000) for a in batch])
            s.save_checkpoint(own.id, step, {"step": step})
            writes += 4
            j = (i // BATCH) * 3 % SHARED
            sb = shared[j : j + 3]
            s.add_candidates(shared_job, sb, generation=worker)
            s.record_results(shared_job, [ok(a, acc=worker / 10) for a in sb])
            writes += 2
        s.add_candidates(shared_job, shared, generation=worker)
        s.record_results(shared_job, [ok(a, acc=worker / 10) for a in shared])
        s.set_job_state(own.id, JobState.DONE)
        elapsed = time.perf_counter() - t0
        queue.put(("ok", {"job": own.id, "writes": writes + 4, "seconds": elapsed, "lock_retries": s.lock_retries}))
        s.close()
    except BaseException:  # noqa: BLE001 - reported to the parent
        queue.put(("error", traceback.format_exc()))


def _run_procs(target, args_list: list[tuple]) -> list:  # type: ignore[no-untyped-def,type-arg]
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, queue)) for args in args_list]
    for p in procs:
        p.start()
    out = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [detail for status, detail in out if status != "ok"]
    assert not errors, "\n\n".join(errors)
    return [detail for _, detail in out]


def test_brand_new_database_opened_by_four_processes_at_once(store_url: str, request: pytest.FixtureRequest) -> None:
    if store_url.startswith("sqlite"):
        url = store_url.replace("store.db", "fresh.db")
    else:
        url = request.getfixturevalue("fresh_pg_url")
    _run_procs(_open_fresh, [(url,)] * N_PROCS)
    s = open_store(url)
    assert sum(1 for j in s.list_jobs() if j.name == "fresh") == N_PROCS
    s.close()


def test_four_processes_write_concurrently(store: SqlStore, store_url: str) -> None:
    shared = store.create_job({}, name="shared", seed=0)
    start = time.time() + 0.5
    t0 = time.perf_counter()
    stats = _run_procs(_writer, [(store_url, w, shared.id, start) for w in range(N_PROCS)])
    wall = time.perf_counter() - t0 - 0.5
    # zero lost rows, each key once, each result recorded
    for st in stats:
        job = store.get_job(st["job"])
        assert job.state == JobState.DONE
        cands = store.get_candidates(job.id)
        assert len(cands) == OWN and len({c.key for c in cands}) == OWN
        assert [c.seq for c in cands] == list(range(1, OWN + 1))
        assert all(c.status == CandidateStatus.DONE for c in cands)
        assert store.load_checkpoint(job.id)[0] == OWN // BATCH - 1  # type: ignore[index]
    shared_cands = store.get_candidates(shared.id)
    assert len(shared_cands) == SHARED and len({c.key for c in shared_cands}) == SHARED
    assert sorted(c.seq for c in shared_cands) == list(range(1, SHARED + 1))
    assert all(c.status == CandidateStatus.DONE for c in shared_cands)
    writes = sum(st["writes"] for st in stats)
    rows = N_PROCS * OWN + SHARED
    retries = sum(st["lock_retries"] for st in stats)
    print(f"\n[{store.dialect}] {N_PROCS} processes: {writes} write transactions, {rows} candidate rows, "
          f"{wall:.2f} s wall ({writes / wall:.0f} tx/s), lock errors 0, lock retries {retries}, lost rows 0, "
          f"per-process seconds {[round(st['seconds'], 2) for st in stats]}")
