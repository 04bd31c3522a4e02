"""``SqlStore``: the nasforge store on any SQLAlchemy database (SQLite by default, PostgreSQL shared).

Promises beyond the ``Store`` contract:

- The schema is created and upgraded by the Alembic migrations in ``migrations/`` when the store
  is opened; several processes may open a brand-new database at once (the upgrade runs under a
  write lock: ``BEGIN IMMEDIATE`` on SQLite, an advisory transaction lock on PostgreSQL).
- Every write is one short transaction. SQLite runs in WAL mode with a busy timeout, and writes
  take the write lock up front (``BEGIN IMMEDIATE``), so readers never block and writers queue
  instead of failing; a "database is locked" / serialization failure that still surfaces is
  retried with backoff (``lock_retries`` counts them) until ``lock_wait_s`` is spent.
- ``add_candidates`` and ``record_results`` take batches: one transaction and a handful of
  statements per batch, whatever its size.
- Idempotence: adding a key again returns the stored candidate; a result for a candidate already
  ``done`` changes nothing (also when two processes record it at the same moment).
"""

from __future__ import annotations

import dataclasses
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from nasforge.core.errors import StoreError
from nasforge.core.interfaces import Store
from nasforge.core.paths import default_store_url, with_installed_driver
from nasforge.core.types import Arch, Candidate, CandidateStatus, EvalResult, Job, JobState
from nasforge.store._models import JsonText, candidates, checkpoints, jobs, metrics_cache

T = TypeVar("T")

VERSION_TABLE = "nf_alembic_version"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
CHECKPOINTS_KEPT = 3
_IN_CHUNK = 500  # keys per IN (...) clause; far below SQLite's bound-parameter limit
_ADVISORY_LOCK_ID = 0x6E6173666F7267  # "nasforg": serialises schema upgrades on PostgreSQL
_TERMINAL_JOB_STATES = {JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED}
_ACTIVE_JOB_STATES = {JobState.TRAINING, JobState.RUNNING}
_head_revision: str | None = None
_head_lock = threading.Lock()


def _now() -> datetime:
    """UTC now as a naive datetime (what the columns store)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _aware(dt: datetime | None) -> datetime | None:
    return None if dt is None else dt.replace(tzinfo=timezone.utc)


def _chunks(items: Sequence[T], size: int = _IN_CHUNK) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    return (s or "job")[:80]


def _is_lock_error(err: BaseException) -> bool:
    """SQLite busy/locked, or a PostgreSQL serialization failure / deadlock / lock timeout."""
    orig = getattr(err, "orig", None)
    code = getattr(orig, "pgcode", None)
    if code in ("40001", "40P01", "55P03"):
        return True
    text = str(orig if orig is not None else err).lower()
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


#: shortest key prefix ``get_candidate`` accepts
MIN_KEY_PREFIX = 6
_HEX = re.compile(r"[0-9a-f]+")


def redact_url(url: str) -> str:
    """``url`` for messages, its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for messages
        return "<unparsable url>"


def _head() -> str:
    """The newest revision of the shipped migrations (read once per process)."""
    global _head_revision
    with _head_lock:
        if _head_revision is None:
            from alembic.config import Config
            from alembic.script import ScriptDirectory

            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
            head = ScriptDirectory.from_config(cfg).get_current_head()
            assert head is not None, "the store ships no migrations"
            _head_revision = head
        return _head_revision


class SqlStore(Store):
    """The nasforge store on one SQLAlchemy engine. Open it with :func:`open_store`.

    ``url``: any SQLAlchemy URL (``sqlite:///path.db``, ``postgresql+psycopg2://user@host/db``).
    ``lock_wait_s``: how long a write keeps retrying a locked database before it raises.
    The schema is brought to the newest migration on construction. Beyond the contract's
    one-thread rule, one object may be shared by threads (each call checks out its own pooled
    connection) except on an in-memory SQLite URL; any number of processes may open the same URL.
    """

    def __init__(self, *, url: str, lock_wait_s: float = 120.0, migrate: bool = True) -> None:
        self.url = url
        self.lock_wait_s = lock_wait_s
        self.lock_retries = 0
        self._stats_lock = threading.Lock()
        try:
            parsed = make_url(with_installed_driver(url))
        except sa_exc.ArgumentError as e:
            raise StoreError(
                f"store url {url!r} is not a SQLAlchemy URL; use e.g. sqlite:///path/nasforge.db "
                "or postgresql+psycopg2://user@host:5432/db"
            ) from e
        self.dialect = parsed.get_backend_name()
        try:
            self._engine = self._make_engine(parsed)
            if migrate:
                self._migrate()
        except ImportError as e:  # the URL names a driver (DBAPI module) that is not installed
            raise StoreError(
                f"store url {redact_url(url)}: its database driver {e.name or str(e)!r} is not installed; install "
                "it, or name an installed one in the URL (e.g. postgresql+psycopg2://user@host:5432/db)"
            ) from None
        except sa_exc.DBAPIError as e:
            raise StoreError(
                f"cannot open the store at {redact_url(url)}: {str(e.orig).strip().splitlines()[0]}; "
                "check store.url in the job file or --store / NASFORGE_STORE_URL"
            ) from e

    # ---- engine ---------------------------------------------------------------------------
    def _make_engine(self, parsed: Any) -> Engine:
        if self.dialect != "sqlite":
            return create_engine(parsed, pool_pre_ping=True, pool_size=2, max_overflow=4)
        busy_ms = int(self.lock_wait_s * 1000)
        memory = parsed.database in (None, "", ":memory:")
        if memory:
            engine = create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            Path(parsed.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(parsed, connect_args={"timeout": self.lock_wait_s, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
            cur.execute("PRAGMA foreign_keys = ON")
            if not memory:
                deadline = time.monotonic() + self.lock_wait_s
                while True:  # switching to WAL takes a lock; a brand-new file may be busy
                    try:
                        cur.execute("PRAGMA journal_mode = WAL")
                        break
                    except Exception as e:  # sqlite3.OperationalError
                        if "locked" not in str(e) or time.monotonic() > deadline:
                            raise
                        time.sleep(0.01 + random.random() * 0.05)
                cur.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; safe with WAL
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("nasforge_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    def _run(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        """Run ``fn`` in one transaction, retrying lock errors with backoff until ``lock_wait_s``."""
        deadline = time.monotonic() + self.lock_wait_s
        delay = 0.005
        while True:
            try:
                with self._engine.connect() as conn:
                    if write:
                        conn.execution_options(nasforge_write=True)
                    with conn.begin():
                        return fn(conn)
            except sa_exc.DBAPIError as e:
                if not _is_lock_error(e) or time.monotonic() > deadline:
                    raise
                with self._stats_lock:
                    self.lock_retries += 1
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.5)

    def _migrate(self) -> None:
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext

        head = _head()
        with self._engine.connect() as conn:
            current = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
        if current == head:
            return

        def upgrade(conn: Connection) -> None:
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK_ID})")
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

        from alembic.util.exc import CommandError

        try:
            self._run(upgrade, write=True)
        except CommandError as e:  # e.g. a revision this nasforge does not know: a newer schema
            raise StoreError(
                f"the store at {redact_url(self.url)} has schema revision {current!r}, which this nasforge "
                f"(newest {head!r}) cannot upgrade: {e}; use the nasforge version that wrote it"
            ) from e

    def close(self) -> None:
        self._engine.dispose()

    @property
    def display_url(self) -> str:
        """The store URL for messages (password hidden)."""
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"SqlStore({self.display_url})"

    # ---- conversions ----------------------------------------------------------------------
    @staticmethod
    def _job(row: Any, counts: Mapping[str, int] | None = None) -> Job:
        return Job(
            id=row.id,
            name=row.name,
            spec=row.spec,
            state=JobState(row.state),
            seed=int(row.seed),
            created_at=_aware(row.created_at),  # type: ignore[arg-type]
            started_at=_aware(row.started_at),
            finished_at=_aware(row.finished_at),
            error=row.error,
            counts=dict(counts) if counts is not None else {s.value: 0 for s in CandidateStatus},
            run_s=None if row.run_s is None else float(row.run_s),
            active_since=_aware(row.active_since),
        )

    @staticmethod
    def _candidate(row: Any) -> Candidate:
        return Candidate(
            id=int(row.id),
            job_id=row.job_id,
            key=row.key,
            arch=Arch.from_dict(row.arch),
            status=CandidateStatus(row.status),
            seq=int(row.seq),
            generation=int(row.generation),
            metrics=row.metrics or {},
            device=row.device,
            worker=row.worker,
            error=row.error,
            duration_s=row.duration_s,
            created_at=_aware(row.created_at),
            finished_at=_aware(row.finished_at),
            pareto=bool(row.pareto),
        )

    def _missing_job(self, job_id: str, conn: Connection | None = None) -> StoreError:
        """No such job; with ``conn``, the newest jobs the user may have meant (a job's name, the
        start of an id): commands take the whole id, so that `cancel` never guesses."""
        hint = ""
        if conn is not None and job_id:
            like = job_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = conn.execute(select(jobs.c.id).where((jobs.c.name == job_id) | jobs.c.id.like(like, escape="\\"))
                                .order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(4)).all()
            if rows:
                ids = [r[0] for r in rows]
                more = ", or an older one" if len(ids) > 3 else ""
                hint = f"; did you mean {', '.join(ids[:3])}{more}? commands take the whole job id"
        return StoreError(f"no job {job_id!r} in the store {redact_url(self.url)}{hint or '; `nasforge list` shows the jobs'}")

    def _require_job(self, conn: Connection, job_id: str, *, lock: bool = False) -> None:
        q = select(jobs.c.id).where(jobs.c.id == job_id)
        if lock:
            q = q.with_for_update()
        if conn.execute(q).first() is None:
            raise self._missing_job(job_id)

    @staticmethod
    def _counts(conn: Connection, job_ids: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        q = select(candidates.c.job_id, candidates.c.status, func.count()).group_by(
            candidates.c.job_id, candidates.c.status
        )
        if job_ids is not None:
            q = q.where(candidates.c.job_id.in_(job_ids))
        out: dict[str, dict[str, int]] = {}
        for job_id, status, n in conn.execute(q):
            out.setdefault(job_id, {s.value: 0 for s in CandidateStatus})[status] = int(n)
        return out

    @staticmethod
    def _rows_by_key(conn: Connection, job_id: str, keys: Sequence[str], *, lock: bool = False) -> dict[str, Any]:
        """Rows of these keys; ``lock`` takes row locks (PostgreSQL ``FOR UPDATE``, in id order)."""
        out: dict[str, Any] = {}
        for chunk in _chunks(keys):
            q = select(candidates).where(candidates.c.job_id == job_id, candidates.c.key.in_(chunk))
            if lock:
                q = q.order_by(candidates.c.id).with_for_update()
            for row in conn.execute(q):
                out[row.key] = row
        return out

    # ---- jobs -----------------------------------------------------------------------------
    def create_job(self, spec: Mapping[str, Any], *, name: str, seed: int) -> Job:
        """A new job in state ``created`` with a readable unique id ``NAME-YYYYMMDD-HHMMSS-xxxx``."""
        spec_dict = dict(spec)
        for _ in range(20):
            now = _now()
            job_id = f"{_slug(name)}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
            values = dict(id=job_id, name=name, spec=spec_dict, state=JobState.CREATED.value, seed=int(seed),
                          created_at=now)
            try:
                self._run(lambda conn, v=values: conn.execute(insert(jobs).values(**v)), write=True)
            except sa_exc.IntegrityError:
                continue  # id collision (same name, same second, same 16 random bits): draw again
            return self.get_job(job_id)
        raise StoreError(f"could not allocate a unique job id for {name!r}")

    def get_job(self, job_id: str) -> Job:
        def read(conn: Connection) -> Job:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                raise self._missing_job(job_id, conn)
            return self._job(row, self._counts(conn, [job_id]).get(job_id))

        return self._run(read, write=False)

    def list_jobs(self) -> list[Job]:
        """Every job, oldest first, each with its candidate counts."""

        def read(conn: Connection) -> list[Job]:
            rows = conn.execute(select(jobs).order_by(jobs.c.created_at, jobs.c.id)).all()
            counts = self._counts(conn)
            return [self._job(r, counts.get(r.id)) for r in rows]

        return self._run(read, write=False)

    def set_job_state(self, job_id: str, state: JobState, error: str | None = None, *,
                      at: datetime | None = None) -> None:
        """Set the state, as of ``at`` (default now). Entering training/running stamps
        ``started_at`` (first time), begins a run (``active_since``) unless one is on, and clears
        ``finished_at`` and the error; entering a final state stamps ``finished_at`` and adds the
        run's seconds to ``run_s``. ``error`` given is stored; ``None`` keeps an earlier note on a
        final state."""
        state = JobState(state)

        def write(conn: Connection) -> None:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                raise self._missing_job(job_id)
            now = _now() if at is None else at.astimezone(timezone.utc).replace(tzinfo=None)
            values: dict[str, Any] = {"state": state.value}
            if state in _ACTIVE_JOB_STATES:
                if row.started_at is None:
                    values["started_at"] = now
                if row.active_since is None:  # a run begins (training -> running goes on in the same run)
                    values["active_since"] = now
                    if row.run_s is None:  # first run, or a row kept from before run time: what it ran
                        ended = row.started_at is not None and row.finished_at is not None
                        values["run_s"] = (row.finished_at - row.started_at).total_seconds() if ended else 0.0
                values["finished_at"] = None
                values["error"] = error
            elif state in _TERMINAL_JOB_STATES:
                values["finished_at"] = now
                if row.started_at is None:
                    values["started_at"] = now
                if row.active_since is not None:  # the run ends
                    values["run_s"] = float(row.run_s or 0.0) + max(0.0, (now - row.active_since).total_seconds())
                    values["active_since"] = None
                if error is not None:
                    values["error"] = error
            elif error is not None:
                values["error"] = error
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))

        self._run(write, write=True)

    def set_job_spec(self, job_id: str, spec: Mapping[str, Any]) -> None:
        def write(conn: Connection) -> None:
            self._require_job(conn, job_id, lock=True)
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(spec=dict(spec)))

        self._run(write, write=True)

    def delete_job(self, job_id: str) -> int:
        def write(conn: Connection) -> int:
            self._require_job(conn, job_id, lock=True)
            conn.execute(delete(checkpoints).where(checkpoints.c.job_id == job_id))
            gone = conn.execute(delete(candidates).where(candidates.c.job_id == job_id)).rowcount
            conn.execute(delete(jobs).where(jobs.c.id == job_id))
            return int(gone or 0)

        return self._run(write, write=True)

    # ---- candidates -----------------------------------------------------------------------
    def add_candidates(self, job_id: str, archs: Sequence[Arch], generation: int) -> list[Candidate]:
        """Insert new archs as pending (in input order, ``seq`` continuing the job's numbering);
        return the stored candidate for each arch, in order. Existing keys are returned as stored."""
        if not archs:
            return []
        keys = [a.key() for a in archs]
        first: dict[str, Arch] = {}
        for k, a in zip(keys, archs, strict=True):
            first.setdefault(k, a)
        unique = list(first)

        top_seq = select(func.max(candidates.c.seq)).where(candidates.c.job_id == job_id)

        def write(conn: Connection) -> dict[str, Candidate]:
            # The job row lock serialises seq numbering per job. The max is read by a statement of
            # its own, after the lock is held: on PostgreSQL a subquery in the locking statement
            # would see the snapshot from before the wait and hand out a seq twice.
            self._require_job(conn, job_id, lock=True)
            out = {k: self._candidate(r) for k, r in self._rows_by_key(conn, job_id, unique).items()}
            new = [k for k in unique if k not in out]
            if new:
                seq0 = (conn.execute(top_seq).scalar() or 0) + 1
                now = _now()
                params = [
                    dict(job_id=job_id, seq=seq0 + i, key=k, arch=first[k].to_dict(),
                         status=CandidateStatus.PENDING.value, generation=int(generation), metrics={},
                         created_at=now, pareto=False)
                    for i, k in enumerate(new)
                ]
                ids = conn.execute(
                    insert(candidates).returning(candidates.c.id, sort_by_parameter_order=True), params
                ).scalars().all()
                for cid, p in zip(ids, params, strict=True):
                    out[p["key"]] = Candidate(
                        id=int(cid), job_id=job_id, key=p["key"], arch=first[p["key"]], status=CandidateStatus.PENDING,
                        seq=p["seq"], generation=p["generation"], metrics={}, created_at=_aware(now), pareto=False,
                    )
            return out

        stored = self._run(write, write=True)
        return [stored[k] for k in keys]

    def mark_running(self, job_id: str, keys: Sequence[str]) -> None:
        """Pending (or failed, for a retry) candidates with these keys become running."""
        if not keys:
            return
        unique = list(dict.fromkeys(keys))

        def write(conn: Connection) -> None:
            now = _now()
            for chunk in _chunks(unique):
                conn.execute(
                    update(candidates)
                    .where(candidates.c.job_id == job_id, candidates.c.key.in_(chunk),
                           candidates.c.status.in_([CandidateStatus.PENDING.value, CandidateStatus.FAILED.value]))
                    .values(status=CandidateStatus.RUNNING.value, started_at=now)
                )

        self._run(write, write=True)

    def record_results(self, job_id: str, results: Sequence[EvalResult]) -> list[Candidate]:
        """Write results (done when ``ok``, failed otherwise), one transaction for the batch.

        A candidate already done is left as it is (also against a concurrent writer); a failed one
        may be overwritten by a later result. Returns the stored candidate for each result, in
        order. Raises StoreError for a key the job does not hold.
        """
        if not results:
            return []
        keys = [r.arch_key for r in results]
        unique = list(dict.fromkeys(keys))
        stmt = (
            update(candidates)
            .where(candidates.c.id == bindparam("b_id"), candidates.c.status != CandidateStatus.DONE.value)
            .values(
                status=bindparam("b_status"),
                metrics=bindparam("b_metrics", type_=JsonText()),
                device=bindparam("b_device", type_=JsonText()),
                worker=bindparam("b_worker"),
                error=bindparam("b_error"),
                duration_s=bindparam("b_duration"),
                finished_at=bindparam("b_finished"),
            )
        )

        def write(conn: Connection) -> dict[str, Candidate]:
            # Row locks (PostgreSQL) keep a concurrent writer out between this read and the update.
            rows = self._rows_by_key(conn, job_id, unique, lock=True)
            missing = [k for k in unique if k not in rows]
            if missing:
                self._require_job(conn, job_id)
                raise StoreError(f"job {job_id!r} has no candidate with key {missing[0]!r} "
                                 f"({len(missing)} unknown keys); add_candidates must come first")
            out = {k: self._candidate(r) for k, r in rows.items()}
            params: dict[str, dict[str, Any]] = {}
            now = _now()
            for r in results:
                cur = out[r.arch_key]
                if cur.status == CandidateStatus.DONE:
                    continue
                new = dataclasses.replace(
                    cur, status=CandidateStatus.DONE if r.ok else CandidateStatus.FAILED, metrics=dict(r.metrics),
                    device=dict(r.device) if r.device is not None else None, worker=r.worker, error=r.error,
                    duration_s=float(r.duration_s), finished_at=_aware(now),
                )
                out[r.arch_key] = new
                params[r.arch_key] = dict(
                    b_id=new.id, b_status=new.status.value, b_metrics=dict(new.metrics), b_device=new.device,
                    b_worker=new.worker, b_error=new.error, b_duration=new.duration_s, b_finished=now,
                )
            if params:
                conn.execute(stmt, list(params.values()))
            return out

        stored = self._run(write, write=True)
        return [stored[k] for k in keys]

    def get_candidates(
        self,
        job_id: str,
        *,
        status: CandidateStatus | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[Candidate]:
        """Candidates of a job ordered by ``seq``, optionally only one status and/or these keys.
        Raises StoreError when the job does not exist."""

        def read(conn: Connection) -> list[Candidate]:
            base = select(candidates).where(candidates.c.job_id == job_id)
            if status is not None:
                base = base.where(candidates.c.status == CandidateStatus(status).value)
            if keys is None:
                rows = list(conn.execute(base.order_by(candidates.c.seq, candidates.c.id)))
            else:
                rows = []
                for chunk in _chunks(list(dict.fromkeys(keys))):
                    rows.extend(conn.execute(base.where(candidates.c.key.in_(chunk))))
                rows.sort(key=lambda r: (r.seq, r.id))
            if not rows:
                self._require_job(conn, job_id)
            return [self._candidate(r) for r in rows]

        return self._run(read, write=False)

    def get_candidate(self, job_id: str, ref: int | str) -> Candidate:
        """By candidate id (int, or a string of digits that is not a key), by key (str), or by a
        unique prefix of a key of at least ``MIN_KEY_PREFIX`` characters (tables print 10)."""

        def read(conn: Connection) -> Candidate:
            row = None
            if isinstance(ref, str):
                row = conn.execute(
                    select(candidates).where(candidates.c.job_id == job_id, candidates.c.key == ref)
                ).first()
            if row is None and (isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit())):
                row = conn.execute(
                    select(candidates).where(candidates.c.job_id == job_id, candidates.c.id == int(ref))
                ).first()
            if row is None and isinstance(ref, str) and len(ref) >= MIN_KEY_PREFIX and _HEX.fullmatch(ref):
                # a key as tables print it (its first 10 characters), like a short git hash
                rows = conn.execute(
                    select(candidates).where(candidates.c.job_id == job_id, candidates.c.key.startswith(ref))
                    .order_by(candidates.c.id).limit(6)
                ).all()
                if len(rows) > 1:
                    ids = ", ".join(str(r.id) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
                    raise StoreError(f"job {job_id!r}: key prefix {ref!r} matches several candidates (ids {ids}); "
                                     "give more of the key or the candidate id")
                row = rows[0] if rows else None
            if row is None:
                self._require_job(conn, job_id)
                raise StoreError(f"job {job_id!r} has no candidate {ref!r} (give a candidate id or key; "
                                 f"`nasforge results {job_id}` lists them)")
            return self._candidate(row)

        return self._run(read, write=False)

    def set_pareto(self, job_id: str, keys: Sequence[str]) -> None:
        """Flag exactly these keys as the Pareto front; every other candidate of the job unflagged."""
        unique = list(dict.fromkeys(keys))

        def write(conn: Connection) -> None:
            self._require_job(conn, job_id)
            conn.execute(update(candidates).where(candidates.c.job_id == job_id, candidates.c.pareto.is_(True))
                         .values(pareto=False))
            for chunk in _chunks(unique):
                conn.execute(update(candidates).where(candidates.c.job_id == job_id, candidates.c.key.in_(chunk))
                             .values(pareto=True))

        self._run(write, write=True)

    def counts(self, job_id: str) -> dict[str, int]:
        def read(conn: Connection) -> dict[str, int]:
            got = self._counts(conn, [job_id]).get(job_id)
            if got is None:
                self._require_job(conn, job_id)
                got = {s.value: 0 for s in CandidateStatus}
            return got

        return self._run(read, write=False)

    # ---- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, job_id: str, step: int, state: Mapping[str, Any]) -> None:
        """Store (replace) the checkpoint of ``step``; only the newest ``CHECKPOINTS_KEPT`` remain."""
        state_dict = dict(state)

        def write(conn: Connection) -> None:
            self._require_job(conn, job_id)
            conn.execute(delete(checkpoints).where(checkpoints.c.job_id == job_id, checkpoints.c.step == int(step)))
            conn.execute(insert(checkpoints).values(job_id=job_id, step=int(step), state=state_dict,
                                                    created_at=_now()))
            keep_from = conn.execute(
                select(checkpoints.c.step).where(checkpoints.c.job_id == job_id)
                .order_by(checkpoints.c.step.desc()).offset(CHECKPOINTS_KEPT - 1).limit(1)
            ).scalar()
            if keep_from is not None:
                conn.execute(delete(checkpoints).where(checkpoints.c.job_id == job_id, checkpoints.c.step < keep_from))

        self._run(write, write=True)

    def load_checkpoint(self, job_id: str) -> tuple[int, dict[str, Any]] | None:
        def read(conn: Connection) -> tuple[int, dict[str, Any]] | None:
            row = conn.execute(
                select(checkpoints.c.step, checkpoints.c.state).where(checkpoints.c.job_id == job_id)
                .order_by(checkpoints.c.step.desc()).limit(1)
            ).first()
            return None if row is None else (int(row.step), dict(row.state))

        return self._run(read, write=False)

    # ---- metrics cache --------------------------------------------------------------------
    def get_cached_metrics(self, keys: Sequence[str], device_id: str) -> dict[str, dict[str, float]]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}

        def read(conn: Connection) -> dict[str, dict[str, float]]:
            found: dict[str, dict[str, float]] = {}
            for part in _chunks(wanted):
                rows = conn.execute(
                    select(metrics_cache.c.arch_key, metrics_cache.c.metrics).where(
                        metrics_cache.c.arch_key.in_(part), metrics_cache.c.device_id == device_id)
                )
                found.update({row.arch_key: {k: float(v) for k, v in row.metrics.items()} for row in rows})
            return found

        return self._run(read, write=False)

    def put_cached_metrics(self, key: str, device_id: str, metrics: Mapping[str, float]) -> None:
        """Insert or replace the metrics of arch ``key`` on device ``device_id`` (shared by all jobs)."""
        values = dict(arch_key=key, device_id=device_id, metrics={k: float(v) for k, v in metrics.items()},
                      created_at=_now())

        def write(conn: Connection) -> None:
            if self.dialect in ("sqlite", "postgresql"):
                if self.dialect == "sqlite":
                    from sqlalchemy.dialects.sqlite import insert as dialect_insert
                else:
                    from sqlalchemy.dialects.postgresql import insert as dialect_insert
                stmt = dialect_insert(metrics_cache).values(**values)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[metrics_cache.c.arch_key, metrics_cache.c.device_id],
                    set_={"metrics": stmt.excluded.metrics, "created_at": stmt.excluded.created_at},
                )
                conn.execute(stmt)
            else:
                conn.execute(delete(metrics_cache).where(metrics_cache.c.arch_key == key,
                                                         metrics_cache.c.device_id == device_id))
                conn.execute(insert(metrics_cache).values(**values))

        self._run(write, write=True)


def open_store(url: str | None = None, *, lock_wait_s: float = 120.0) -> SqlStore:
    """Open (creating and migrating when needed) the store at ``url``.

    ``None`` means the embedded SQLite file ``NASFORGE_HOME/nasforge.db``. Raises StoreError when
    the URL is malformed or the database cannot be reached.
    """
    return SqlStore(url=url or default_store_url(), lock_wait_s=lock_wait_s)
