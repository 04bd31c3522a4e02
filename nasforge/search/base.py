"""Strategy: ask / tell over a SearchSpace. No I/O, no workers, no store.

Contract (checked by tests/search/test_strategy_contract.py for every registered strategy):
- ``ask(n)`` returns at most ``n`` archs of the space, canonical (``space.validate(a) == a``).
  It may return fewer (e.g. an allocator that is finished returns ``[]``).
- ``tell(archs, results)`` receives results for archs it asked, in the order asked; failed
  results have ``error`` set and no metrics.
- Same seed and same told results -> same asks. The strategy owns its randomness
  (a ``numpy.random.Generator`` seeded from ``seed``).
- ``state_dict()`` is JSON-serialisable; ``load_state_dict(state_dict())`` on a fresh strategy
  built with the same arguments continues exactly where the first would have.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from nasforge.core.types import Arch, Constraint, EvalResult, Objective
from nasforge.spaces.base import SearchSpace


class StrategyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Strategy(ABC):
    Options: ClassVar[type[StrategyOptions]] = StrategyOptions
    #: ``Options`` validated (a subclass narrows the annotation to its own options model)
    options: StrategyOptions

    def __init__(
        self,
        space: SearchSpace,
        *,
        objectives: Sequence[Objective],
        constraints: Sequence[Constraint] = (),
        seed: int = 0,
        options: StrategyOptions | Mapping[str, Any] | None = None,
    ):
        self.options = options if isinstance(options, StrategyOptions) else self.Options.model_validate(dict(options or {}))
        self.space = space
        self.objectives = list(objectives)
        self.constraints = list(constraints)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    @abstractmethod
    def ask(self, n: int) -> list[Arch]: ...

    @abstractmethod
    def tell(self, archs: Sequence[Arch], results: Sequence[EvalResult]) -> None: ...

    @classmethod
    def asks_uniform_reference(cls, options: Mapping[str, Any]) -> bool:
        """Whether, on a compression space, it evaluates the uniform allocation that uses the most of
        the budget (the job's summary compares its best with that one)."""
        return False

    def finished_why(self) -> str:
        """Why an empty ``ask`` ended the search (the job's stop reason says it); "" if nothing to add."""
        return ""

    def evaluations_needed(self) -> tuple[int, str] | None:
        """The evaluations this strategy asks before it has its answer, and what they are for, when it
        knows that before the search (an allocator's probes); None: any budget is a search's budget.
        Validation refuses a job whose ``budget.evaluations`` is below it."""
        return None

    def summary(self) -> str:
        """One line the job's summary prints after the search (e.g. how good its predictors were); "" for none."""
        return ""

    # ---- state ----------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """Subclass state beyond the RNG (JSON-serialisable)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state_to_json(self.rng), "extra": self.extra_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng = rng_state_from_json(state["rng"])
        self.load_extra_state(state.get("extra", {}))

    # ---- helpers --------------------------------------------------------------------------
    def objective_matrix(self, results: Sequence[EvalResult]) -> np.ndarray:
        """(n, n_objectives) array to minimize (maximized metrics negated); failures are +inf."""
        out = np.full((len(results), len(self.objectives)), np.inf)
        for i, r in enumerate(results):
            if r.ok and all(o.metric in r.metrics for o in self.objectives):
                out[i] = [o.sign() * float(r.metrics[o.metric]) for o in self.objectives]
        return out

    def violation_vector(self, results: Sequence[EvalResult]) -> np.ndarray:
        """Total constraint violation per result (0 = feasible; failures are +inf)."""
        v = np.zeros(len(results))
        for i, r in enumerate(results):
            if not r.ok:
                v[i] = np.inf
            else:
                v[i] = sum(c.violation(r.metrics) for c in self.constraints)
        return v


def rng_state_to_json(rng: np.random.Generator) -> dict[str, Any]:
    """The generator's state as plain JSON data (numpy's state dict holds only ints and str)."""
    return dict(rng.bit_generator.state)


def rng_state_from_json(state: Mapping[str, Any]) -> np.random.Generator:
    bg = getattr(np.random, str(state["bit_generator"]))()
    bg.state = dict(state)
    return np.random.Generator(bg)
