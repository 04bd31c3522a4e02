"""SearchSpace: what can be searched, with no torch in sight.

A space is a fixed, ordered list of named categorical choices. Everything a strategy or predictor
needs is derived from that one definition: sampling, mutation, crossover, validation, encodings
and an integer index form (``to_indices`` / ``from_indices``) that vectorized strategies use.
Subclasses define ``choices()`` and ``cost()``; they may override ``canonicalize`` so that two
archs that build the same network (e.g. settings of blocks beyond the active depth) share a key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from nasforge.core.errors import InvalidArchError, JobSpecError
from nasforge.core.types import Arch, Scalar


class SpaceOptions(BaseModel):
    """Base of every space's options model (unknown keys rejected)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PresetOptions(SpaceOptions):
    """Options with named presets: the ``preset`` key (default ``mnist``) fills every key the
    user did not give from ``PRESETS[preset]``; an unknown preset is left to the field's check."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "mnist")
        if preset not in cls.PRESETS:
            return data  # the Literal check reports it
        return {**cls.PRESETS[preset], **data}


class SearchSpace(ABC):
    """A space of architectures. ``id`` and ``version`` are stamped on every Arch it makes."""

    id: ClassVar[str]
    version: ClassVar[int] = 1
    Options: ClassVar[type[SpaceOptions]] = SpaceOptions
    #: ``Options`` validated (a subclass narrows the annotation to its own options model)
    options: SpaceOptions

    def __init__(self, options: SpaceOptions | Mapping[str, Any] | None = None):
        if isinstance(options, SpaceOptions):
            self.options = options
        else:
            try:
                self.options = self.Options.model_validate(dict(options or {}))
            except ValidationError as e:  # one line naming the key, as for every job-file error
                first = e.errors()[0]
                where = ".".join(["space.options", *map(str, first["loc"])])
                msg = "unknown option" if first["type"] == "extra_forbidden" else first["msg"]
                raise JobSpecError(f"{where}: {msg}") from None
        self._choices: dict[str, tuple[Scalar, ...]] | None = None

    # ---- to define ------------------------------------------------------------------------
    @abstractmethod
    def build_choices(self) -> dict[str, tuple[Scalar, ...]]:
        """Ordered mapping choice name -> allowed values (smallest/cheapest value first)."""

    @abstractmethod
    def cost(self, arch: Arch) -> dict[str, float]:
        """Analytic cost of a child without building it: at least ``flops`` (MACs) and ``params``."""

    def canonicalize(self, arch: Arch) -> Arch:
        """Map archs that build the same network to one representative. Default: identity."""
        return arch

    # ---- derived --------------------------------------------------------------------------
    def choices(self) -> dict[str, tuple[Scalar, ...]]:
        if self._choices is None:
            self._choices = self.build_choices()
        return self._choices

    @property
    def names(self) -> list[str]:
        return list(self.choices())

    @property
    def cardinalities(self) -> np.ndarray:
        return np.array([len(v) for v in self.choices().values()], dtype=np.int64)

    def make(self, choices: Mapping[str, Scalar]) -> Arch:
        """Build, validate and canonicalize an Arch from a plain mapping."""
        arch = Arch(self.id, self.version, dict(choices))
        return self.validate(arch)

    def validate(self, arch: Arch) -> Arch:
        """Return the canonical form of ``arch``; raise InvalidArchError if it is not in the space."""
        if arch.space != self.id or arch.version != self.version:
            raise InvalidArchError(
                f"arch belongs to space {arch.space}@{arch.version}, not {self.id}@{self.version}"
            )
        ch = self.choices()
        missing = [n for n in ch if n not in arch]
        extra = [n for n in arch if n not in ch]
        if missing or extra:
            raise InvalidArchError(f"arch choices differ from the space: missing {missing}, unknown {extra}")
        for name, allowed in ch.items():
            if arch[name] not in allowed:
                raise InvalidArchError(f"choice {name}={arch[name]!r} not in {list(allowed)}")
        return self.canonicalize(arch)

    def to_indices(self, arch: Arch) -> np.ndarray:
        return np.array([allowed.index(arch[n]) for n, allowed in self.choices().items()], dtype=np.int64)

    def from_indices(self, idx: Sequence[int] | np.ndarray) -> Arch:
        ch = self.choices()
        values = {n: allowed[int(i)] for (n, allowed), i in zip(ch.items(), idx, strict=True)}
        return self.canonicalize(Arch(self.id, self.version, values))

    def sample_indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` uniform random archs as an (n, num_choices) integer matrix."""
        card = self.cardinalities
        return (rng.random((n, len(card))) * card).astype(np.int64)

    def sample(self, rng: np.random.Generator) -> Arch:
        return self.from_indices(self.sample_indices(1, rng)[0])

    def largest(self) -> Arch:
        return self.from_indices(self.cardinalities - 1)

    def smallest(self) -> Arch:
        return self.from_indices(np.zeros(len(self.cardinalities), dtype=np.int64))

    def mutate_indices(self, idx: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
        """Resample each choice with probability ``prob`` (rows are archs). Vectorized."""
        idx = np.atleast_2d(idx).copy()
        card = self.cardinalities
        mask = rng.random(idx.shape) < prob
        fresh = (rng.random(idx.shape) * card).astype(np.int64)
        idx[mask] = fresh[mask]
        return idx

    def mutate(self, arch: Arch, rng: np.random.Generator, prob: float = 0.1) -> Arch:
        return self.from_indices(self.mutate_indices(self.to_indices(arch), rng, prob)[0])

    def crossover_indices(self, a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Uniform crossover of matching rows of ``a`` and ``b``. Vectorized."""
        a, b = np.atleast_2d(a), np.atleast_2d(b)
        take_a = rng.random(a.shape) < 0.5
        return np.where(take_a, a, b)

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        return self.from_indices(self.crossover_indices(self.to_indices(a), self.to_indices(b), rng)[0])

    def encode_indices(self, idx: np.ndarray) -> np.ndarray:
        """Predictor features: one-hot of every choice, float32, shape (n, sum(cardinalities))."""
        idx = np.atleast_2d(idx)
        card = self.cardinalities
        offsets = np.concatenate([[0], np.cumsum(card)[:-1]])
        out = np.zeros((idx.shape[0], int(card.sum())), dtype=np.float32)
        rows = np.repeat(np.arange(idx.shape[0]), idx.shape[1])
        out[rows, (idx + offsets).ravel()] = 1.0
        return out

    def encode(self, archs: Sequence[Arch]) -> np.ndarray:
        if not archs:
            return np.zeros((0, int(self.cardinalities.sum())), dtype=np.float32)
        return self.encode_indices(np.stack([self.to_indices(a) for a in archs]))

    def cost_many(self, archs: Sequence[Arch]) -> dict[str, np.ndarray]:
        """Costs of many archs as arrays (subclasses may vectorize)."""
        rows = [self.cost(a) for a in archs]
        return {k: np.array([r[k] for r in rows], dtype=np.float64) for k in (rows[0] if rows else {})}

    def describe(self) -> dict[str, Any]:
        """Plain-data description stored with exports (space id, version, options)."""
        return {"id": self.id, "version": self.version, "options": self.options.model_dump(mode="json")}
