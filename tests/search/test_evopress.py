"""EvoPress: every candidate meets the budget (property test), exact budget with equal steps,
same seed -> same result, state round trip, multi-step selection, and it beats uniform."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nasforge.core.errors import BudgetError
from nasforge.core.types import Constraint, Direction, Objective
from nasforge.search import STRATEGIES
from nasforge.search.allocators import feasible
from tests.compress.helpers import synthetic_eval, synthetic_kl, synthetic_space

KL = [Objective("kl", Direction.MINIMIZE)]


def make(space, budget, seed=0, **opts):
    return STRATEGIES.get("evopress")(space, objectives=KL, constraints=[budget], seed=seed, options=opts)


def drive(s, space, rounds=6, n=5):
    asked = []
    for _ in range(rounds):
        archs = s.ask(n)
        asked += archs
        s.tell(archs, synthetic_eval(space, archs))
    return asked


BUDGETS = st.sampled_from([("avg_bits", "<=", 3.0), ("avg_bits", "<=", 4.5), ("sparsity", ">=", 0.6),
                           ("model_bytes", "<=", 4000.0), ("sparsity", ">=", 0.3)])


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 64), min_size=2, max_size=7), budget=BUDGETS, seed=st.integers(0, 10_000),
       mode=st.sampled_from(["bits", "sparsity", "joint"]))
def test_every_candidate_meets_the_budget(sizes, budget, seed, mode) -> None:
    space = synthetic_space(sizes, mode=mode, bits=[2, 3, 4, 8], sparsities=[0.0, 0.3, 0.5, 0.7, 0.9])
    metric = budget[0]
    if (mode == "bits" and metric == "sparsity") or (mode == "sparsity" and metric == "avg_bits"):
        return
    c = Constraint(*budget)
    try:
        s = make(space, c, seed=seed, selection=[[6, 8], [2, 32]], max_switches=3)
    except BudgetError:  # an unmeetable budget is refused up front
        return
    for a in drive(s, space, rounds=5):
        assert c.satisfied(space.cost(a)), (a, space.cost(a))
    made = []
    s.optimize(lambda idx, n: np.array([synthetic_kl(space, s.arch_of(i)) for i in idx]), generations=5,
               on_candidate=made.append)
    assert made and all(feasible(i, s.budgets) for i in made)


def test_equal_level_steps_keep_the_budget_exactly() -> None:
    space = synthetic_space([16] * 6, mode="sparsity", sparsities=[0.0, 0.25, 0.5, 0.75])
    c = Constraint("sparsity", ">=", 0.5)
    s = make(space, c, seed=3)
    for a in drive(s, space, rounds=8):
        assert space.cost(a)["sparsity"] == 0.5


def test_same_seed_same_result_and_state_round_trip() -> None:
    space = synthetic_space([4, 20, 9, 33, 12], bits=[2, 3, 4, 8])
    c = Constraint("avg_bits", "<=", 3.0)
    keys = [[a.key() for a in drive(make(space, c, seed=s), space)] for s in (1, 1, 2)]
    assert keys[0] == keys[1] and keys[0] != keys[2]
    s1 = make(space, c, seed=4)
    drive(s1, space, rounds=3)
    s2 = make(space, c, seed=4)
    s2.load_state_dict(json.loads(json.dumps(s1.state_dict())))
    assert [a.key() for a in drive(s1, space)] == [a.key() for a in drive(s2, space)]


def test_multi_step_selection_and_improvement_over_uniform() -> None:
    space = synthetic_space([4, 20, 9, 33, 12, 50, 7, 3], bits=[2, 3, 4, 8])
    c = Constraint("avg_bits", "<=", 3.0)
    s = make(space, c, seed=0, selection=[[12, 4], [3, 16], [1, 64]])
    calls = []

    def fitness(idx, samples):
        calls.append((len(idx), samples))
        return np.array([synthetic_kl(space, s.arch_of(i)) for i in idx])

    best, value = s.optimize(fitness, generations=30)
    assert calls[0] == (1, 64) and calls[1:4] == [(12, 4), (3, 16), (1, 64)]
    assert value == synthetic_kl(space, s.arch_of(best))
    assert value < 0.8 * synthetic_kl(space, space.uniform(bits=3))
    assert c.satisfied(space.cost(s.arch_of(best)))


def test_a_search_that_runs_out_of_new_offspring_says_why() -> None:
    # two groups, three bit-widths: the neighbourhood of the best allocation is soon all evaluated;
    # the job's stop reason then names the local optimum instead of only "nothing more to ask"
    space = synthetic_space([8, 8], bits=[2, 3, 4])
    s = make(space, Constraint("avg_bits", "<=", 3.0), selection=[[4, 8]])
    asked = drive(s, space, rounds=20, n=4)
    assert s.ask(4) == [] and len(asked) < 20 * 4
    why = s.finished_why()
    assert why.startswith("every budget-keeping mutation of the best allocation (kl ") and "local optimum" in why
