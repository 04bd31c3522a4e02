"""elastic_vit space: choices, canonical keys, FLOPs span, analytic cost == counted cost of the child."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasforge.core.errors import InvalidArchError, NasforgeError
from nasforge.spaces import SPACES
from nasforge.spaces.elastic_vit import ElasticViTSpace
from nasforge.supernets.elastic_vit import ElasticViTSupernet
from nasforge.supernets.evaluate import count_flops_params

torch.set_num_threads(1)


def test_registered_with_flat_elastic_choices():
    space = SPACES.get("elastic_vit")()
    ch = space.choices()
    assert space.names[0] == "resolution"
    for name in ("c0.depth", "c0.width", "c1.b1.expand", "t0.depth", "t0.dim", "t0.heads", "t0.window",
                 "t0.b1.mlp", "t1.dim", "t1.window"):
        assert name in ch, name
    assert ch["t0.dim"] == (32, 48, 64) and ch["t0.window"] == (4, 8) and ch["t0.b0.mlp"] == (1.0, 2.0, 3.0)
    arch = space.sample(np.random.default_rng(0))
    assert all(isinstance(v, int | float) for v in arch.values())


@pytest.mark.parametrize("preset", ["mnist", "imagenet"])
def test_smallest_and_largest_differ_by_more_than_10x_in_flops(preset):
    space = ElasticViTSpace({"preset": preset})
    small, large = space.cost(space.smallest()), space.cost(space.largest())
    assert large["flops"] > 10 * small["flops"]
    assert large["params"] > small["params"] and large["attn_flops"] > small["attn_flops"] > 0
    rng = np.random.default_rng(0)
    for _ in range(30):
        c = space.cost(space.sample(rng))
        assert small["flops"] <= c["flops"] <= large["flops"]


def test_canonicalize_merges_inactive_blocks_and_equivalent_windows():
    space = ElasticViTSpace()
    base = space.make({**space.smallest().choices, "resolution": 28, "t0.depth": 1})
    # t0 grid at 28 px is 7: window 4 is local (padded to 8), window 8 covers the grid (global)
    assert space.plan(base).vit_stages[0].grid == 7
    assert space.plan(base.replace(**{"t0.window": 4})).vit_stages[0].blocks[0].window == 4
    assert space.plan(base.replace(**{"t0.window": 8})).vit_stages[0].blocks[0].window == 0
    inactive = base.replace(**{"t0.b1.mlp": 3.0, "c0.b1.expand": 4})
    assert space.validate(inactive) == base.replace(**{"c0.b1.expand": space.smallest()["c0.b1.expand"]})
    assert space.validate(inactive).key() == space.validate(base).key()
    # at 16 px the t0 grid is 4, so window 8 is the same network as window 4 (both global)
    small = base.replace(resolution=16)
    assert space.validate(small.replace(**{"t0.window": 8})) == space.validate(small.replace(**{"t0.window": 4}))
    assert space.validate(small.replace(**{"t0.window": 8}))["t0.window"] == 4
    with pytest.raises(InvalidArchError):
        space.validate(base.replace(**{"t0.dim": 40}))


def test_local_windows_cost_less_attention_than_global():
    space = ElasticViTSpace()
    arch = space.make({**space.largest().choices})
    local, glob = arch.replace(**{"t0.window": 4}), arch.replace(**{"t0.window": 8})
    assert space.cost(local)["flops"] == space.cost(glob)["flops"]
    assert space.cost(local)["attn_flops"] < space.cost(glob)["attn_flops"]


def test_cost_equals_counter_on_extracted_child():
    space = ElasticViTSpace()
    net = ElasticViTSupernet(space)
    rng = np.random.default_rng(1)
    for arch in [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(4)]:
        child = net.extract(arch)
        counted = count_flops_params(child, net.input_shape(arch))
        cost = space.cost(arch)
        assert counted["flops"] == cost["flops"], arch
        assert counted["params"] == cost["params"], arch


def test_imagenet_preset_cost_equals_counter_on_built_child():
    space = ElasticViTSpace({"preset": "imagenet"})
    arch = space.smallest()
    child = ElasticViTSupernet.build_child(space, arch)
    counted = count_flops_params(child, (3, int(arch["resolution"]), int(arch["resolution"])))
    assert counted["flops"] == space.cost(arch)["flops"] and counted["params"] == space.cost(arch)["params"]


def test_bad_options_name_the_key():
    with pytest.raises(NasforgeError, match="space.options"):
        ElasticViTSpace({"vit_stages": [{"dims": [64, 32], "min_depth": 1, "max_depth": 1, "stride": 1,
                                          "heads": [1], "head_dim": 8, "windows": [4]}]})
    with pytest.raises(NasforgeError, match="mlp_ratios"):
        ElasticViTSpace({"mlp_ratios": [2.0, 1.0]})
