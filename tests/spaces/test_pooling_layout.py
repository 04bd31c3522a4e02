"""pooling_layout space: every index vector is one valid layout, layouts enumerated, cost == counted cost."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from nasforge.core.errors import InvalidArchError, JobSpecError
from nasforge.core.types import Arch
from nasforge.spaces import SPACES
from nasforge.spaces.pooling_layout import PoolingLayoutSpace
from nasforge.supernets.evaluate import count_flops_params
from nasforge.supernets.pooling_mixture import PoolingMixtureSupernet

torch.set_num_threads(1)


def test_registered_with_position_choices():
    space = SPACES.get("pooling_layout")()
    assert space.names == ["pool0", "pool1"]
    assert space.choices() == {"pool0": (0, 1, 2, 3, 4), "pool1": (1, 2, 3, 4, 5)}
    assert space.num_layouts == math.comb(6, 2) == len(space.layouts())


def test_every_index_vector_is_one_valid_layout():
    space = PoolingLayoutSpace({"num_blocks": 7, "num_downsamples": 3})
    layouts = space.layouts()
    assert len(layouts) == math.comb(7, 3) == len({a.key() for a in layouts})
    seen = set()
    for idx in itertools.product(*(range(c) for c in space.cardinalities)):
        arch = space.from_indices(idx)
        pos = space.positions(arch)
        assert list(pos) == sorted(set(pos)) and len(pos) == 3 and 0 <= pos[0] and pos[-1] < 7
        assert space.validate(arch) == arch  # canonical is a fixed point
        seen.add(arch.key())
    assert seen == {a.key() for a in layouts}  # and every layout is reachable
    # collisions move to the next free block
    assert space.positions(space.make({"pool0": 2, "pool1": 2, "pool2": 4})) == (2, 3, 4)
    assert space.positions(space.make({"pool0": 4, "pool1": 1, "pool2": 5})) == (1, 4, 5)


def test_validate_rejects_values_outside_the_space():
    space = PoolingLayoutSpace()
    with pytest.raises(InvalidArchError):
        space.validate(Arch("pooling_layout", 1, {"pool0": 5, "pool1": 5}))  # pool0 can be at most 4
    with pytest.raises(InvalidArchError):
        space.validate(Arch("pooling_layout", 1, {"pool0": 0}))


def test_sample_mutate_crossover_stay_in_the_space_and_sample_covers_it():
    space = PoolingLayoutSpace()
    rng = np.random.default_rng(0)
    drawn = [space.sample(rng) for _ in range(600)]
    counts = np.bincount([space.layout_index(a) for a in drawn], minlength=space.num_layouts)
    assert counts.min() > 15  # uniform over 15 layouts: 40 expected each
    for a, b in zip(drawn[:50], drawn[50:100], strict=True):
        for child in (space.mutate(a, rng, 0.5), space.crossover(a, b, rng)):
            assert space.validate(child) == child
    assert space.encode(drawn[:4]).shape == (4, int(space.cardinalities.sum()))


def test_layout_names_and_resnet20():
    space = PoolingLayoutSpace({"preset": "resnet20"})
    arch = space.make({"pool0": 3, "pool1": 6})
    assert space.layout_name(arch) == "3-3-3"
    plan = space.plan(arch)
    assert [b.cout for b in plan.blocks] == [16] * 3 + [32] * 3 + [64] * 3
    assert [b.output_hw for b in plan.blocks] == [32] * 3 + [16] * 3 + [8] * 3
    cost = space.cost(arch)
    # ResNet-20's published 0.27M params are with parameter-free (option A) shortcuts; ours are
    # 1x1 conv + BN projections: 16*32 + 32*64 weights and 2*(32+64) BN params more.
    assert cost["params"] - (16 * 32 + 32 * 64 + 2 * (32 + 64)) == 269_722
    assert 40e6 < cost["flops"] < 42e6


@pytest.mark.parametrize("options", [
    {"preset": "mnist"},
    {"preset": "mnist", "widen": False, "stem_stride": 1, "input_size": 13},
    {"preset": "mnist", "num_blocks": 5, "num_downsamples": 3, "in_channels": 3, "num_classes": 4},
])
def test_cost_equals_counter_on_built_child(options):
    space = PoolingLayoutSpace(options)
    o = space.options
    for arch in space.layouts():
        model = PoolingMixtureSupernet.build_child(space, arch)
        counted = count_flops_params(model, (o.in_channels, o.input_size, o.input_size))
        cost = space.cost(arch)
        assert counted["flops"] == cost["flops"] and counted["params"] == cost["params"], space.positions(arch)
    flops = [space.cost(a)["flops"] for a in space.layouts()]
    assert space.cost(space.largest())["flops"] == max(flops)
    assert space.cost(space.smallest())["flops"] == min(flops)


def test_bad_options_name_the_key():
    with pytest.raises(JobSpecError, match="space.options.*num_downsamples"):
        PoolingLayoutSpace({"num_blocks": 3, "num_downsamples": 4})
    with pytest.raises(JobSpecError, match="space.options"):
        PoolingLayoutSpace({"blocks": 3})


@pytest.mark.parametrize("name", ["random", "nsga2", "optuna", "guided"])
def test_generic_strategies_search_the_space(name):
    from nasforge.core.types import Direction, EvalResult, Objective
    from nasforge.search import STRATEGIES

    space = PoolingLayoutSpace()
    options = {"nsga2": {"population": 6}, "optuna": {"sampler": "tpe", "sampler_options": {"n_startup_trials": 4}},
               "guided": {"predictor": "gp", "predictor_options": {"restarts": 0}, "population": 8,
                          "generations": 2}}.get(name, {})
    objectives = [Objective("accuracy", Direction.MAXIMIZE), Objective("flops", Direction.MINIMIZE)]
    strategy = STRATEGIES.get(name)(space, objectives=objectives, seed=0, options=options)
    asked: list[Arch] = []
    for _ in range(3):
        archs = strategy.ask(4)
        asked += archs
        strategy.tell(archs, [EvalResult(a.key(), {"accuracy": 0.5 + 0.05 * space.positions(a)[0],
                                                   "flops": space.cost(a)["flops"]}) for a in archs])
    # a strategy may return fewer than asked when index rows collapse to layouts it has seen
    assert len(asked) >= 6 and all(space.validate(a) == a for a in asked)
    assert len({a.key() for a in asked}) == len(asked)  # no layout asked twice


@pytest.mark.parametrize("seed", [0, 15])
@pytest.mark.parametrize("name", ["random", "nsga2", "optuna", "guided"])
def test_every_strategy_asks_all_15_layouts_when_the_budget_allows(name, seed):
    """A budget larger than the space: each of the 15 layouts is asked once (Optuna's TPE stopped
    at 14 with seed 15, finding the last layout only by chance among its repeats)."""
    from nasforge.core.types import Direction, EvalResult, Objective
    from nasforge.search import STRATEGIES

    space = PoolingLayoutSpace()
    objectives = [Objective("accuracy", Direction.MAXIMIZE), Objective("flops", Direction.MINIMIZE)]
    strategy = STRATEGIES.get(name)(space, objectives=objectives, seed=seed)
    asked: list[Arch] = []
    empty = 0
    while empty < 3 and len(asked) < 30:  # the driver, too, stops after rounds that ask nothing new
        archs = strategy.ask(5)
        empty = 0 if archs else empty + 1
        asked += archs
        strategy.tell(archs, [EvalResult(a.key(), {"accuracy": 0.5 + 0.05 * space.positions(a)[0],
                                                   "flops": space.cost(a)["flops"]}) for a in archs])
    assert len({a.key() for a in asked}) == len(asked) == 15
