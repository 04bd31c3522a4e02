"""The contracts the driver talks to. Implementations live in workers/, store/ and tracking/.

The driver (search/) sees only these, so it never imports Ray, SQLAlchemy or MLflow.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from nasforge.core.types import Arch, Candidate, CandidateStatus, EvalResult, Job, JobState


class Evaluator(ABC):
    """Evaluates architectures; batching, retries and placement are its job.

    ``evaluate`` returns one EvalResult per input arch, in input order. A candidate whose
    evaluation raised comes back with ``error`` set; ``evaluate`` itself raises only when the
    evaluator as a whole cannot go on (e.g. no worker can be started).
    ``on_result`` (if given) is called in the caller's thread as each result arrives.
    """

    @abstractmethod
    def evaluate(
        self, archs: Sequence[Arch], on_result: Callable[[EvalResult], None] | None = None
    ) -> list[EvalResult]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers. Idempotent."""

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Store(ABC):
    """Persistent record of jobs, candidates and strategy checkpoints; the source of truth.

    Thread-safety: one Store object may be used from one thread at a time; several processes
    may open the same URL at once (SQLite WAL + busy timeout, or PostgreSQL).
    All writes are idempotent where they take keys: adding an existing candidate key returns the
    stored candidate; recording a result for a candidate already done changes nothing.
    """

    @property
    def display_url(self) -> str:
        """Where the store lives, for messages (no secrets); implementations name their URL."""
        return type(self).__name__

    @abstractmethod
    def create_job(self, spec: Mapping[str, Any], *, name: str, seed: int) -> Job: ...

    @abstractmethod
    def get_job(self, job_id: str) -> Job: ...

    @abstractmethod
    def list_jobs(self) -> list[Job]: ...

    @abstractmethod
    def set_job_state(self, job_id: str, state: JobState, error: str | None = None, *,
                      at: datetime | None = None) -> None:
        """Enter ``state`` at ``at`` (default now; an earlier time closes a run that ended without
        recording it, e.g. a driver killed with -9). The job's run time counts its active spans
        (training / running) only, not the time between runs."""

    @abstractmethod
    def set_job_spec(self, job_id: str, spec: Mapping[str, Any]) -> None:
        """Replace the job's resolved job file (``resume --evaluations`` raises its budget)."""

    @abstractmethod
    def delete_job(self, job_id: str) -> int:
        """Remove the job, its candidates and its checkpoints in one transaction; returns how many
        candidates went. The metrics cache (latency by child and device) is shared and stays."""

    @abstractmethod
    def add_candidates(self, job_id: str, archs: Sequence[Arch], generation: int) -> list[Candidate]:
        """Insert new archs as pending; return the stored candidate for each arch, in order."""

    @abstractmethod
    def mark_running(self, job_id: str, keys: Sequence[str]) -> None: ...

    @abstractmethod
    def record_results(self, job_id: str, results: Sequence[EvalResult]) -> list[Candidate]:
        """Write results (done or failed). A key already done is left as it is."""

    @abstractmethod
    def get_candidates(
        self,
        job_id: str,
        *,
        status: CandidateStatus | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[Candidate]:
        """Candidates of a job ordered by ``seq`` (insertion order)."""

    @abstractmethod
    def get_candidate(self, job_id: str, ref: int | str) -> Candidate:
        """By candidate id (int), key or unique key prefix (str). Raises StoreError if absent."""

    @abstractmethod
    def set_pareto(self, job_id: str, keys: Sequence[str]) -> None:
        """Flag exactly these keys as the job's Pareto front (others unflagged)."""

    @abstractmethod
    def counts(self, job_id: str) -> dict[str, int]:
        """Number of candidates per status value, every status present (0 if none)."""

    @abstractmethod
    def save_checkpoint(self, job_id: str, step: int, state: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def load_checkpoint(self, job_id: str) -> tuple[int, dict[str, Any]] | None:
        """The latest (step, state) saved for the job, or None."""

    @abstractmethod
    def get_cached_metrics(self, keys: Sequence[str], device_id: str) -> dict[str, dict[str, float]]:
        """Latency measured earlier on device profile ``device_id`` (any job), by key, for those of
        ``keys`` that have it: one read for a whole chunk of children."""

    @abstractmethod
    def put_cached_metrics(self, key: str, device_id: str, metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Dispose connections. Idempotent."""


class Tracker(ABC):
    """A view of the job for people (MLflow). Never the source of truth; failures only warn."""

    @abstractmethod
    def start_job(self, job: Job) -> None: ...

    @abstractmethod
    def log_candidates(self, job_id: str, candidates: Sequence[Candidate]) -> None:
        """One child run per candidate (batched; may return before the data is written)."""

    @abstractmethod
    def log_progress(self, job_id: str, step: int, metrics: Mapping[str, float]) -> None: ...

    @abstractmethod
    def finish_job(
        self,
        job_id: str,
        state: JobState,
        pareto: Sequence[Candidate],
        artifacts: Mapping[str, Path],
    ) -> None:
        """Tag pareto runs, upload artifacts, end the parent run, flush everything."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and stop background work. Idempotent."""


class NullTracker(Tracker):
    """Tracks nothing: for tests and for ``tracking.enabled: false``."""

    def start_job(self, job: Job) -> None:
        pass

    def log_candidates(self, job_id: str, candidates: Sequence[Candidate]) -> None:
        pass

    def log_progress(self, job_id: str, step: int, metrics: Mapping[str, float]) -> None:
        pass

    def finish_job(
        self, job_id: str, state: JobState, pareto: Sequence[Candidate], artifacts: Mapping[str, Path]
    ) -> None:
        pass
