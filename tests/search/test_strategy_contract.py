"""The Strategy contract (search/base.py), run against every registered strategy that works on a
generic space, on the torch-free ``GridSpace`` of conftest.py with a synthetic evaluation.

Which strategies the generic suite covers: a strategy class declares ``needs_space`` (the id of the
only space kind it works on; ``None`` or absent = any space). Registered strategies that need a
special space are skipped here with that reason and are tested in their own files. Classes that
have not declared it yet are looked up in ``UNDECLARED_SPECIAL`` (remove an entry once its class
declares ``needs_space``). A new registry entry that is neither declared nor listed is run here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from nasforge.core.types import Arch, Constraint, EvalResult
from nasforge.search import STRATEGIES
from nasforge.search.base import Strategy
from nasforge.search.pareto import hypervolume

from .conftest import OBJECTIVES, GridSpace

#: registry entries whose classes need a special space but do not declare ``needs_space`` yet
UNDECLARED_SPECIAL = {"evopress": "compression", "dp": "compression", "ilp": "compression",
                      "closed_form": "compression"}
#: options that keep a strategy fast enough for this suite (the defaults are for real jobs)
SUITE_OPTIONS: dict[str, dict[str, Any]] = {
    "nsga2": {"population": 12},
    "optuna": {"sampler": "tpe", "sampler_options": {"n_startup_trials": 8}},
    "guided": {"predictor": "gp", "predictor_options": {"restarts": 0}, "population": 24, "generations": 4},
}


def needed_space(name: str) -> str | None:
    cls = STRATEGIES.get(name)
    declared = getattr(cls, "needs_space", None)
    return declared if declared is not None else UNDECLARED_SPECIAL.get(name)


def suite_params() -> list[Any]:
    params = []
    for name in STRATEGIES.names():
        space = needed_space(name)
        marks = [pytest.mark.skip(reason=f"{name!r} needs the {space!r} space; tested in its own file")] if space else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


Evaluate = Callable[[Sequence[Arch]], list[EvalResult]]


def make(name: str, seed: int = 0, constraints: Sequence[Constraint] = (), **options: Any) -> Strategy:
    opts = {**SUITE_OPTIONS.get(name, {}), **options}
    return STRATEGIES.get(name)(GridSpace(), objectives=OBJECTIVES, constraints=list(constraints), seed=seed,
                                options=opts)


def drive(strategy: Strategy, evaluate: Evaluate, rounds: int, n: int = 6) -> list[Arch]:
    asked: list[Arch] = []
    for _ in range(rounds):
        archs = strategy.ask(n)
        assert len(archs) <= n
        asked.extend(archs)
        strategy.tell(archs, evaluate(archs))
    return asked


def keys(archs: Sequence[Arch]) -> list[str]:
    return [a.key() for a in archs]


@pytest.mark.parametrize("name", suite_params())
def test_asks_valid_canonical_archs_never_twice(name: str, grid_evaluate: Evaluate) -> None:
    space = GridSpace()
    s = make(name)
    asked = drive(s, grid_evaluate, rounds=4, n=7) + s.ask(1) + s.ask(0)
    assert len(asked) == 29
    assert all(space.validate(a) == a for a in asked)
    assert len(set(keys(asked))) == len(asked)


@pytest.mark.parametrize("name", suite_params())
def test_same_seed_same_asks(name: str, grid_evaluate: Evaluate) -> None:
    a = keys(drive(make(name, seed=3), grid_evaluate, rounds=4))
    b = keys(drive(make(name, seed=3), grid_evaluate, rounds=4))
    c = keys(drive(make(name, seed=4), grid_evaluate, rounds=4))
    assert a == b
    assert a != c


@pytest.mark.parametrize("name", suite_params())
def test_state_round_trip_continues_identically(name: str, grid_evaluate: Evaluate) -> None:
    s1 = make(name, seed=5)
    for cut in (0, 3, 2):  # state taken fresh, mid-generation, and later
        drive(s1, grid_evaluate, rounds=cut, n=5)
        state = json.loads(json.dumps(s1.state_dict(), allow_nan=False))  # plain JSON
        s2 = make(name, seed=5)
        s2.load_state_dict(state)
        assert keys(drive(s1, grid_evaluate, rounds=2, n=5)) == keys(drive(s2, grid_evaluate, rounds=2, n=5))
        assert json.dumps(s1.state_dict(), sort_keys=True) == json.dumps(s2.state_dict(), sort_keys=True)


@pytest.mark.parametrize("name", suite_params())
def test_failed_results_are_accepted(name: str) -> None:
    space = GridSpace()
    s = make(name, seed=1)
    for _ in range(3):
        archs = s.ask(6)
        s.tell(archs, [EvalResult(a.key(), error="RuntimeError: worker lost") for a in archs])
    more = s.ask(6)
    assert len(more) == 6 and all(space.validate(a) == a for a in more)
    json.dumps(s.state_dict(), allow_nan=False)


def test_registry_entries_are_all_classified() -> None:
    """Every registered strategy either runs the generic suite or names the space it needs."""
    for name in STRATEGIES.names():
        cls = STRATEGIES.get(name)
        assert issubclass(cls, Strategy)
        declared = getattr(cls, "needs_space", None)
        assert declared is None or isinstance(declared, str)


def hv(results: Sequence[EvalResult]) -> float:
    F = np.array([[r.metrics["error"], r.metrics["latency_ms"]] for r in results if r.ok]).reshape(-1, 2)
    return hypervolume(F, np.array([0.6, 30.0]))


LIMIT = Constraint("latency_ms", "<=", 5.0)


def feasible_fraction(results: Sequence[EvalResult]) -> float:
    return float(np.mean([r.ok and LIMIT.satisfied(r.metrics) for r in results]))


@pytest.mark.parametrize("name", [p for p in suite_params() if p.values[0] != "random"])
def test_constraint_raises_feasible_share_above_random(name: str, grid_evaluate: Evaluate) -> None:
    """Later asks of a constrained search are feasible more often than uniform random samples
    (about 13% feasible here), summed over two seeds."""
    late_share = {}
    for strategy in (name, "random"):
        late = []
        for seed in (0, 1):
            s = make(strategy, seed=seed, constraints=[LIMIT])
            drive(s, grid_evaluate, rounds=6, n=8)
            late += drive(s, grid_evaluate, rounds=4, n=8)
        late_share[strategy] = feasible_fraction(grid_evaluate(late))
    assert late_share[name] > late_share["random"] + 0.1, late_share


def test_nsga2_beats_random_on_hypervolume(grid_evaluate: Evaluate) -> None:
    """Equal budget (96 evaluations), 4 seeds: NSGA2's front covers more than random's on every seed."""
    for seed in range(4):
        result = {}
        for name in ("nsga2", "random"):
            s = make(name, seed=seed)
            result[name] = hv(grid_evaluate(drive(s, grid_evaluate, rounds=12, n=8)))
        assert result["nsga2"] > result["random"], (seed, result)


@pytest.mark.parametrize("name", ["optuna"])
def test_state_saved_between_ask_and_tell_resumes_to_the_same_asks(name: str) -> None:
    """Optuna keeps asked trials open in its study; a state taken while they are untold is the
    state before them, and a strategy restored from it asks the very same archs again. (Our own
    strategies' state includes their asks; the driver checkpoints only after ``tell`` anyway.)"""
    space = GridSpace()
    s = make(name, seed=3)
    drive(s, lambda archs: [EvalResult(a.key(), {"acc": float(i % 5), "lat": float(i)}) for i, a in enumerate(archs)], 2)
    pending = s.ask(6)
    saved = json.loads(json.dumps(s.state_dict(), allow_nan=False))
    restored = make(name, seed=3)
    restored.load_state_dict(saved)
    assert keys(restored.ask(6)) == keys(pending)
    assert all(space.validate(a) == a for a in pending)
