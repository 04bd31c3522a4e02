"""The Supernet contract, run against every entry of SUPERNETS.

Each supernet class provides ``contract_config() -> (space_options, supernet_options)``, a tiny
configuration of the first space it serves; a new family gets this whole suite by registering.
Inputs come from ``net.example_input(arch, n)`` (images or token ids, per ``net.input_kind``).
"""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
import torch

from nasforge.core.types import Arch
from nasforge.spaces import SPACES
from nasforge.supernets import SUPERNETS
from nasforge.supernets.evaluate import count_flops_params, prepare_child, recalibrate_bn

torch.set_num_threads(1)
ATOL = 1e-5


@pytest.fixture(scope="module", params=SUPERNETS.names())
def case(request):
    cls = SUPERNETS.get(request.param)
    space_options, net_options = cls.contract_config()
    space = SPACES.get(cls.spaces[0])(space_options)
    torch.manual_seed(0)
    net = cls(space, net_options)
    # Move weights and BN statistics away from their initial values so equality means something.
    rng = np.random.default_rng(0)
    net.train()
    with torch.no_grad():
        for i in range(3):
            arch = space.sample(rng)
            x = _x(net, arch, n=8, seed=100 + i)
            net(x * 2 + 0.5 if x.is_floating_point() else x, arch)
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    net.eval()
    archs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(3)]
    return net, space, archs


def _x(net, arch: Arch, n: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return net.example_input(arch, n, g)


def test_forward_equals_extract(case):
    net, space, archs = case
    for arch in archs:
        child = net.extract(arch).eval()
        assert not any(isinstance(m, type(net)) for m in child.modules())
        x = _x(net, arch)
        with torch.no_grad():
            torch.testing.assert_close(child(x), net(x, arch), atol=ATOL, rtol=0)


def test_extract_is_made_of_plain_layers(case):
    net, space, archs = case
    allowed_params = (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear, torch.nn.LayerNorm,
                      torch.nn.Embedding)
    for m in net.extract(archs[0]).modules():
        if list(m.parameters(recurse=False)):
            assert isinstance(m, allowed_params), type(m)


def test_build_child_matches_extract_layout(case):
    net, space, archs = case
    for arch in archs[:3]:
        extracted = net.extract(arch).eval()
        fresh = type(net).build_child(space, arch)
        a, b = extracted.state_dict(), fresh.state_dict()
        assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
        fresh.load_state_dict(a)
        fresh.eval()
        x = _x(net, arch)
        with torch.no_grad():
            torch.testing.assert_close(fresh(x), extracted(x), atol=ATOL, rtol=0)


def test_counted_cost_equals_space_cost(case):
    net, space, archs = case
    for arch in archs:
        counted = count_flops_params(net.extract(arch), net.input_shape(arch),
                                     input_dtype=net.example_input(arch, 1).dtype)
        cost = space.cost(arch)
        assert counted["flops"] == cost["flops"] and counted["params"] == cost["params"], arch


def test_forward_is_stateless(case):
    net, space, archs = case
    a, b = archs[0], archs[1]
    xa, xb = _x(net, a, seed=1), _x(net, b, seed=2)
    with torch.no_grad():
        alone_a, alone_b = net(xa, a), net(xb, b)
        inter = [net(xa, a), net(xb, b), net(xa, a), net(xb, b)]
    assert torch.equal(inter[0], alone_a) and torch.equal(inter[2], alone_a)
    assert torch.equal(inter[1], alone_b) and torch.equal(inter[3], alone_b)


def test_bn_recalibration_is_deterministic(case):
    net, space, archs = case
    arch = archs[2]
    calib = _x(net, arch, n=40, seed=5)
    if calib.is_floating_point():
        calib = calib * 1.5 + 0.3
    one = prepare_child(net, arch, calib)
    two = prepare_child(net, arch, calib)
    for (k, v1), v2 in zip(one.state_dict().items(), two.state_dict().values(), strict=True):
        assert torch.equal(v1, v2), k
    assert not one.training
    plain = net.extract(arch)
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in plain.modules()):
        # no BN (e.g. LayerNorm transformers): recalibration must leave the weights exactly as extracted
        for (k, v1), v2 in zip(one.state_dict().items(), plain.state_dict().values(), strict=True):
            assert torch.equal(v1, v2), k
        return
    # it changed something: the statistics now fit the calibration images
    assert any(not torch.equal(v1, v2) for v1, v2 in zip(one.state_dict().values(), plain.state_dict().values(),
                                                          strict=True))
    # the exact average: the first BN's running mean is the mean of its inputs over all images
    bn = next(m for m in one.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    h = bn.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    recalibrate_bn(one, calib, batch_size=16)
    h.remove()
    inputs = torch.cat([s.transpose(0, 1).flatten(1) for s in seen], dim=1)
    torch.testing.assert_close(bn.running_mean, inputs.mean(1), atol=1e-5, rtol=1e-5)


def test_onnx_export_matches_onnxruntime(case):
    net, space, archs = case
    for arch in (archs[0], archs[1]):
        child = prepare_child(net, arch, _x(net, arch, n=16, seed=3))
        x = _x(net, arch, n=3, seed=4)
        buf = io.BytesIO()
        torch.onnx.export(child, (x,), buf, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
        x5 = _x(net, arch, n=5, seed=6)
        got = sess.run(None, {"input": x5.numpy()})[0]
        with torch.no_grad():
            ref = child(x5).numpy()
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_torch_export(case):
    net, space, archs = case
    arch = archs[2]
    child = net.extract(arch).eval()
    x = _x(net, arch)
    program = torch.export.export(child, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), child(x), atol=ATOL, rtol=0)


def test_train_mode_forward_backward_reaches_shared_weights(case):
    net, space, archs = case
    net.train()
    try:
        net.zero_grad()
        net(_x(net, archs[1], n=4), archs[1]).sum().backward()
        used = [p for p in net.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
        assert used
    finally:
        net.zero_grad(set_to_none=True)
        net.eval()
