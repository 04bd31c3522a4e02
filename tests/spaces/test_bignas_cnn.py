"""bignas_cnn space: choices, canonical keys, analytic cost == counted cost, ops descriptors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasforge.core.errors import NasforgeError
from nasforge.spaces import SPACES
from nasforge.spaces.bignas_cnn import BigNASCNNSpace, op_cost
from nasforge.supernets.bignas import BigNASSupernet, build_op
from nasforge.supernets.evaluate import count_flops_params

torch.set_num_threads(1)


def test_registered_and_torch_free_names():
    space = SPACES.get("bignas_cnn")()
    names = space.names
    assert names[0] == "resolution"
    for n in ("s0.depth", "s0.width", "s0.b1.kernel", "s0.b1.expand", "s2.b2.kernel"):
        assert n in names
    assert space.choices()["s0.b0.kernel"] == (3, 5)


def test_canonicalize_merges_inactive_blocks():
    space = BigNASCNNSpace()
    a = space.make({**space.smallest().choices, "s1.depth": 1})
    b = a.replace(**{"s1.b2.kernel": 5, "s1.b2.expand": 4, "s1.b1.kernel": 5})
    assert space.validate(b) == a and space.validate(b).key() == a.key()
    c = a.replace(**{"s1.b0.kernel": 5})  # an active block: a different network
    assert space.validate(c) != a
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = space.sample(rng)
        assert space.validate(s) == s


@pytest.mark.parametrize("preset", ["mnist", "imagenet"])
def test_cost_equals_counter_on_extracted_child(preset):
    space = BigNASCNNSpace({"preset": preset})
    rng = np.random.default_rng(1)
    archs = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(4)]
    if preset == "imagenet":  # building the imagenet supernet and its largest child is slow-ish
        archs = [space.smallest(), space.sample(rng)]
        models = [BigNASSupernet.build_child(space, a) for a in archs]
    else:
        net = BigNASSupernet(space)
        models = [net.extract(a) for a in archs]
    for arch, model in zip(archs, models, strict=True):
        counted = count_flops_params(model, (space.options.in_channels, int(arch["resolution"]), int(arch["resolution"])))
        cost = space.cost(arch)
        assert counted["flops"] == cost["flops"], arch
        assert counted["params"] == cost["params"], arch
        # the latency-table ops add up to the same network
        ops = space.ops(arch)
        assert sum(op_cost(o)[0] for o in ops) == cost["flops"]
        total_params = sum(sum(p.numel() for p in build_op(o).parameters()) for o in ops)
        assert total_params == cost["params"]


def test_build_op_runs_each_op_at_its_input_size():
    space = BigNASCNNSpace()
    arch = space.sample(np.random.default_rng(3)).replace(resolution=20)
    for desc in space.ops(arch):
        op = build_op(desc).eval()
        x = torch.randn(2, desc["cin"], desc["input_hw"], desc["input_hw"])
        y = op(x)
        if desc["type"] == "pool_linear":
            assert y.shape == (2, desc["cout"])
        else:
            assert y.shape[-1] == desc["output_hw"]
            f, p = op_cost(desc)
            assert count_flops_params(op, (desc["cin"], desc["input_hw"], desc["input_hw"]))["flops"] == f


def test_mnist_preset_flops_span_and_size():
    space = BigNASCNNSpace()
    small, large = space.cost(space.smallest()), space.cost(space.largest())
    assert large["flops"] / small["flops"] >= 5
    assert large["flops"] < 10e6  # tiny: evaluated 100+ times on CPU in the quickstart


def test_bad_options_raise_nasforge_error():
    with pytest.raises(NasforgeError, match="space.options"):
        BigNASCNNSpace({"preset": "mnist", "kernels": [5, 3]})
    with pytest.raises(NasforgeError, match="space.options"):
        BigNASCNNSpace({"presett": "mnist"})
    with pytest.raises(NasforgeError, match="space.options"):
        BigNASCNNSpace({"kernels": [2, 4]})
