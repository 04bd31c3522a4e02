"""DP and ILP are exact (brute force on small instances); allocators as strategies on a space."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from nasforge.core.errors import BudgetError, JobSpecError
from nasforge.core.types import Constraint, Direction, Objective
from nasforge.search import STRATEGIES
from nasforge.search.allocators import solve_dp, solve_ilp
from tests.compress.helpers import synthetic_eval, synthetic_kl, synthetic_space

KL = [Objective("kl", Direction.MINIMIZE)]


def brute_force(dist: np.ndarray, costs: list[np.ndarray], caps: list[float]) -> float:
    G, K = dist.shape
    best = np.inf
    for idx in itertools.product(range(K), repeat=G):
        g = np.arange(G)
        if all(c[g, idx].sum() <= cap for c, cap in zip(costs, caps, strict=True)):
            best = min(best, dist[g, idx].sum())
    return best


@pytest.mark.parametrize("seed", range(12))
def test_dp_and_ilp_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    G, K = int(rng.integers(2, 6)), int(rng.integers(2, 5))
    dist = rng.uniform(0, 10, size=(G, K))
    cost = rng.integers(0, 30, size=(G, K))
    cap = float(rng.integers(cost.min(1).sum(), cost.max(1).sum() + 1))
    want = brute_force(dist, [cost], [cap])
    idx, value, exact = solve_dp(dist, cost, cap)
    assert exact and value == pytest.approx(want) and cost[np.arange(G), idx].sum() <= cap
    idx2, value2 = solve_ilp(dist, [cost], [cap])
    assert value2 == pytest.approx(want) and cost[np.arange(G), idx2].sum() <= cap


def test_ilp_two_budgets_matches_brute_force() -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        dist = rng.uniform(0, 5, size=(4, 4))
        c1, c2 = rng.integers(0, 20, size=(4, 4)), rng.uniform(0, 3, size=(4, 4))
        caps = [float(c1.mean(1).sum()), float(c2.mean(1).sum())]
        want = brute_force(dist, [c1, c2], caps)
        if not np.isfinite(want):
            continue
        assert solve_ilp(dist, [c1, c2], caps)[1] == pytest.approx(want)


def test_dp_equals_milp_on_100_layers_50_levels() -> None:
    rng = np.random.default_rng(0)
    dist = np.sort(rng.uniform(0, 1, size=(100, 50)), axis=1)[:, ::-1] * rng.uniform(0.1, 10, size=(100, 1))
    cost = np.sort(rng.integers(0, 40, size=(100, 50)), axis=1)
    cap = float(cost.sum(1).mean() * 0.5 * 100 / 50)
    _, v_dp, exact = solve_dp(dist, cost, cap)
    _, v_ilp = solve_ilp(dist, [cost], [cap])
    assert exact and v_dp == pytest.approx(v_ilp, rel=1e-9)


def test_dp_infeasible_and_coarse_grid() -> None:
    with pytest.raises(BudgetError):
        solve_dp(np.zeros((2, 2)), np.array([[5, 6], [5, 6]]), 9)
    rng = np.random.default_rng(1)
    dist = rng.uniform(0, 1, size=(5, 3))
    cost = rng.integers(1000, 100_000, size=(5, 3))
    cap = float(cost.mean(1).sum())
    idx, value, exact = solve_dp(dist, cost, cap, max_states=100)
    assert not exact and cost[np.arange(5), idx].sum() <= cap  # rounded up: still feasible
    assert value >= brute_force(dist, [cost], [cap]) - 1e-12


def run(strategy, space, max_rounds: int = 100):
    asked = []
    for _ in range(max_rounds):
        archs = strategy.ask(8)
        if not archs:
            break
        asked += archs
        strategy.tell(archs, synthetic_eval(space, archs))
    return asked


@pytest.mark.parametrize("name,budget", [("dp", Constraint("avg_bits", "<=", 4.0)),
                                         ("ilp", Constraint("avg_bits", "<=", 4.0)),
                                         ("dp", Constraint("model_bytes", "<=", 3000)),
                                         ("ilp", Constraint("model_bytes", "<=", 3000))])
def test_allocator_strategy_finds_the_best_additive_allocation(name: str, budget: Constraint) -> None:
    space = synthetic_space([4, 20, 9, 33], bits=[2, 3, 4, 8])
    s = STRATEGIES.get(name)(space, objectives=KL, constraints=[budget], seed=0)
    asked = run(s, space)
    # base + probes + the solution + the uniform allocation that uses the most of the budget (reference)
    assert len(asked) <= 1 + 4 * 3 + 2 and s.ask(4) == []
    uniform = [a for a in asked if len({a[n] for n in a}) == 1 and budget.satisfied(space.cost(a))]
    assert uniform, "the reference: a uniform allocation within the budget is scored"
    plain = STRATEGIES.get(name)(space, objectives=KL, constraints=[budget], seed=0, options={"reference": False})
    assert [a.key() for a in run(plain, space)] == [a.key() for a in asked if a.key() != uniform[-1].key()]
    best = s.solution_arch()
    assert budget.satisfied(space.cost(best))
    feasible = [a for a in (space.from_indices(i) for i in itertools.product(range(4), repeat=4))
                if budget.satisfied(space.cost(a))]
    assert synthetic_kl(space, best) == pytest.approx(min(synthetic_kl(space, a) for a in feasible))


def test_sparsity_budget_and_state_round_trip() -> None:
    space = synthetic_space([4, 20, 9, 33], mode="sparsity", sparsities=[0.0, 0.3, 0.5, 0.7, 0.9])
    budget = Constraint("sparsity", ">=", 0.6)
    s1 = STRATEGIES.get("dp")(space, objectives=KL, constraints=[budget], seed=0)
    first = s1.ask(5)
    s1.tell(first, synthetic_eval(space, first))
    s2 = STRATEGIES.get("dp")(space, objectives=KL, constraints=[budget], seed=0)
    s2.load_state_dict(json.loads(json.dumps(s1.state_dict())))
    a1, a2 = run(s1, space), run(s2, space)
    assert [a.key() for a in a1] == [a.key() for a in a2]
    assert space.cost(s1.solution_arch())["sparsity"] >= 0.6


def test_closed_form_meets_budget_and_beats_uniform_on_its_model() -> None:
    space = synthetic_space([4, 20, 9, 33, 50, 2], bits=[2, 3, 4, 8])
    budget = Constraint("avg_bits", "<=", 3.0)
    s = STRATEGIES.get("closed_form")(space, objectives=KL, constraints=[budget], seed=0)
    asked = run(s, space)
    assert len(asked) <= 1 + 6 + 2  # one probe per layer, the solution, the uniform reference
    assert space.uniform(bits=3).key() in {a.key() for a in asked}
    best = s.solution_arch()
    assert space.cost(best)["avg_bits"] <= 3.0
    assert synthetic_kl(space, best) < synthetic_kl(space, space.uniform(bits=3))


def test_allocators_need_a_budget_and_the_right_space() -> None:
    space = synthetic_space([4, 8], bits=[2, 4])
    with pytest.raises(JobSpecError, match="constraints"):
        STRATEGIES.get("dp")(space, objectives=KL, constraints=[Constraint("accuracy", ">=", 0.5)])
    with pytest.raises(JobSpecError, match="closed_form"):
        STRATEGIES.get("closed_form")(synthetic_space([4], mode="sparsity"), objectives=KL,
                                      constraints=[Constraint("sparsity", ">=", 0.5)])
    with pytest.raises(JobSpecError, match="one budget"):
        STRATEGIES.get("dp")(space, objectives=KL, constraints=[Constraint("avg_bits", "<=", 3),
                                                               Constraint("model_bytes", "<=", 1e6)])


@pytest.mark.parametrize("name", ["dp", "ilp", "closed_form", "evopress"])
def test_a_budget_no_allocation_meets_is_refused_when_the_strategy_is_built(name: str) -> None:
    from nasforge.search.allocators import check_budgets_reachable

    space = synthetic_space([8, 8], mode="sparsity", sparsities=[0.0, 0.5, 0.9])
    table = space.level_table()
    for c, says in ((Constraint("avg_bits", "<=", 3.0), "has avg_bits 32"),
                    (Constraint("sparsity", ">=", 0.95), "has sparsity 0.90")):
        with pytest.raises(BudgetError, match=f"'{c.metric} {c.op} {c.bound:g}' cannot be met: .* {says}"):
            STRATEGIES.get(name)(space, objectives=[Objective("kl", Direction.MINIMIZE)], constraints=[c], options={})
        with pytest.raises(BudgetError):
            check_budgets_reachable(table, [c])
    check_budgets_reachable(table, [Constraint("sparsity", ">=", 0.5), Constraint("accuracy", ">=", 0.9)])
