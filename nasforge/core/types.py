"""Frozen value types shared by every package: Arch, EvalResult, Candidate, Job, objectives.

These are the only objects that cross package boundaries (store rows and MLflow objects never do).
No torch, ray, sqlalchemy or mlflow here.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

Scalar = int | float | str | bool

ARCH_SCHEMA_VERSION = 1


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same value always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True, init=False)
class Arch(Mapping[str, Scalar]):
    """One architecture (or compression allocation): a frozen mapping choice-name -> scalar value.

    ``space`` and ``version`` name the search space it belongs to. Choices are flat scalars
    (int, float, str, bool); a space names per-block choices like ``"s1.b0.kernel"``.
    ``key()`` is a stable hash of the canonical JSON and is the candidate's unique key in a job.
    """

    space: str
    version: int
    _items: tuple[tuple[str, Scalar], ...]

    def __init__(self, space: str, version: int, choices: Mapping[str, Scalar]):
        items = []
        for name, value in sorted(choices.items()):
            if not isinstance(value, (int, float, str, bool)) and hasattr(value, "item"):
                value = value.item()  # numpy scalar -> python scalar
            if not isinstance(value, (int, float, str, bool)):
                raise TypeError(f"arch choice {name!r} must be a scalar, got {type(value).__name__}")
            items.append((str(name), value))
        object.__setattr__(self, "space", space)
        object.__setattr__(self, "version", int(version))
        object.__setattr__(self, "_items", tuple(items))

    # Mapping protocol -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Scalar:
        for k, v in self._items:
            if k == name:
                return v
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash((self.space, self.version, self._items))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Arch):
            return NotImplemented
        return (self.space, self.version, self._items) == (other.space, other.version, other._items)

    def __repr__(self) -> str:
        return f"Arch({self.space}@{self.version}, {dict(self._items)})"

    # Serialisation ----------------------------------------------------------------------------
    @property
    def choices(self) -> dict[str, Scalar]:
        return dict(self._items)

    def replace(self, **changes: Scalar) -> Arch:
        merged = self.choices
        merged.update(changes)
        return Arch(self.space, self.version, merged)

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "version": self.version, "choices": self.choices}

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Arch:
        return cls(str(data["space"]), int(data["version"]), dict(data["choices"]))

    @classmethod
    def from_json(cls, text: str) -> Arch:
        return cls.from_dict(json.loads(text))

    def key(self) -> str:
        """First 20 hex digits of sha256(canonical JSON): stable across processes and versions."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:20]


class Direction(str, enum.Enum):
    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: Direction

    def sign(self) -> float:
        """+1 for minimize, -1 for maximize: ``sign * value`` is always minimized."""
        return 1.0 if self.direction == Direction.MINIMIZE else -1.0


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}


@dataclass(frozen=True)
class Constraint:
    """A hard limit ``metric op bound``, e.g. ``latency_ms <= 5``."""

    metric: str
    op: str
    bound: float

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"constraint operator must be one of {sorted(_OPS)}, got {self.op!r}")

    def satisfied(self, metrics: Mapping[str, float]) -> bool:
        value = metrics.get(self.metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return _OPS[self.op](float(value), self.bound)

    def violation(self, metrics: Mapping[str, float]) -> float:
        """0 when satisfied, otherwise how far the metric is past the bound (inf when missing)."""
        value = metrics.get(self.metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return math.inf
        if self.satisfied(metrics):
            return 0.0
        return abs(float(value) - self.bound)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def best_per_objective(metrics: Iterable[Mapping[str, float]], objectives: Iterable[Objective],
                       constraints: Iterable[Constraint] = (),
                       best: dict[str, float] | None = None) -> dict[str, float]:
    """Each objective's best value over the metric sets that satisfy every constraint.

    The values may come from different candidates (it is a per-objective summary, not a pick).
    ``best`` is updated in place and returned, so a caller can fold results in as they arrive.
    """
    best = {} if best is None else best
    objectives, constraints = list(objectives), list(constraints)
    for m in metrics:
        if any(not c.satisfied(m) for c in constraints):
            continue
        for o in objectives:
            v = m.get(o.metric)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            cur = best.get(o.metric)
            if cur is None or o.sign() * v < o.sign() * cur:
                best[o.metric] = float(v)
    return best


@dataclass(frozen=True)
class EvalResult:
    """What an Evaluator returns for one arch. ``error`` set means the evaluation failed."""

    arch_key: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    device: Mapping[str, Any] | None = None
    worker: str | None = None
    duration_s: float = 0.0
    error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))
        if self.device is not None:
            object.__setattr__(self, "device", MappingProxyType(dict(self.device)))

    @property
    def ok(self) -> bool:
        return self.error is None


class CandidateStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class JobState(str, enum.Enum):
    CREATED = "created"
    TRAINING = "training"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Candidate:
    """A stored candidate of a job, as read back from the store."""

    id: int
    job_id: str
    key: str
    arch: Arch
    status: CandidateStatus
    seq: int
    generation: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)
    device: Mapping[str, Any] | None = None
    worker: str | None = None
    error: str | None = None
    duration_s: float | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    pareto: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``nasforge results --format json``."""
        return {
            "candidate_id": self.id,
            "job_id": self.job_id,
            "key": self.key,
            "status": self.status.value,
            "seq": self.seq,
            "generation": self.generation,
            "arch": self.arch.choices,
            "space": self.arch.space,
            "metrics": dict(self.metrics),
            "device": dict(self.device) if self.device else None,
            "worker": self.worker,
            "error": self.error,
            "duration_s": self.duration_s,
            "pareto": self.pareto,
        }


@dataclass(frozen=True)
class Job:
    """A stored job. ``spec`` is the validated job file as a plain dict."""

    id: str
    name: str
    spec: Mapping[str, Any]
    state: JobState
    seed: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    #: seconds of the job's ended runs (None: a store row from before run time was kept)
    run_s: float | None = None
    #: when the current run began (None: the job is not training or running)
    active_since: datetime | None = None

    @property
    def duration_s(self) -> float | None:
        """Seconds the job has been training or running, over all its runs: the time between an
        interrupted run and its resume does not count."""
        if self.started_at is None:
            return None
        if self.run_s is None:  # a row from before run time was kept: first start to last end
            end = self.finished_at or datetime.now(self.started_at.tzinfo)
            return (end - self.started_at).total_seconds()
        current = 0.0
        if self.active_since is not None:
            current = max(0.0, (datetime.now(self.active_since.tzinfo) - self.active_since).total_seconds())
        return self.run_s + current
