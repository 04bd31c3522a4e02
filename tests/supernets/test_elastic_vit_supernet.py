"""ElasticViT supernet: window attention, the Mixture-of-Supernets option, training on MNIST-5k.

The generic contract (forward == extract, plain layers, ONNX, torch.export, cost) runs in
test_supernet_contract.py; these are the parts specific to this family.
"""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from nasforge.core.spec import DatasetSpec, TrainingSpec
from nasforge.data import load_dataset
from nasforge.spaces.elastic_vit import ElasticViTSpace
from nasforge.supernets.elastic_vit import ElasticViTSupernet, window_attention
from nasforge.supernets.evaluate import evaluate_classifier, prepare_child
from nasforge.supernets.mixture import MixtureLinear
from nasforge.supernets.trainer import SandwichTrainer

torch.set_num_threads(1)


def _reference_attention(q, k, v, grid, window):
    """Dense attention where a token sees the tokens of its own window (window 0: all tokens)."""
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    if window == 0:
        allowed = torch.ones(grid * grid, grid * grid, dtype=torch.bool)
    else:
        wid = (ys // window * grid + xs // window).flatten()
        allowed = wid[:, None] == wid[None, :]
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


@pytest.mark.parametrize("grid,window", [(4, 0), (4, 2), (6, 4), (7, 4), (5, 2), (3, 2)])
def test_window_attention_equals_dense_masked_attention(grid, window):
    g = torch.Generator().manual_seed(grid * 10 + window)
    q, k, v = (torch.randn(2, 3, grid * grid, 4, generator=g) for _ in range(3))
    got = window_attention(q, k, v, grid, window)
    torch.testing.assert_close(got, _reference_attention(q, k, v, grid, window), atol=1e-5, rtol=1e-5)


def _tiny_space() -> ElasticViTSpace:
    space_options, _ = ElasticViTSupernet.contract_config()
    return ElasticViTSpace(space_options)


def test_mixture_option_forward_equals_collapsed_child_and_exports():
    space = _tiny_space()
    torch.manual_seed(0)
    net = ElasticViTSupernet(space, {"mixture": {"experts": 3, "router_hidden": 8}}).eval()
    plain = ElasticViTSupernet(space).eval()
    assert any(isinstance(m, MixtureLinear) for m in net.modules())
    rng = np.random.default_rng(0)
    for arch in [space.largest(), space.smallest(), space.sample(rng), space.sample(rng)]:
        x = torch.randn(3, *net.input_shape(arch))
        child = net.extract(arch).eval()
        assert not any(isinstance(m, MixtureLinear) for m in child.modules())
        # same structure as a child of the plain supernet: no mixture overhead after extraction
        assert {k: v.shape for k, v in child.state_dict().items()} == {
            k: v.shape for k, v in plain.extract(arch).state_dict().items()}
        with torch.no_grad():
            torch.testing.assert_close(child(x), net(x, arch), atol=1e-5, rtol=0)
    arch = space.sample(rng)
    child = net.extract(arch).eval()
    buf = io.BytesIO()
    x = torch.randn(2, *net.input_shape(arch))
    torch.onnx.export(child, (x,), buf, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    x5 = torch.randn(5, *net.input_shape(arch))
    got = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"input": x5.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, child(x5).numpy(), atol=1e-4, rtol=0)


def test_mixture_routes_by_arch_and_trains_the_router():
    space = _tiny_space()
    torch.manual_seed(0)
    net = ElasticViTSupernet(space, {"mixture": {"experts": 2, "router_hidden": 4}}).train()
    a, b = space.largest(), space.smallest()
    layer = net.vit_stages[0][0].q
    enc_a, enc_b = net.plan_and_encoding(a)[1], net.plan_and_encoding(b)[1]
    assert not torch.equal(layer.mixing_weights(enc_a), layer.mixing_weights(enc_b))
    net.zero_grad()
    F.cross_entropy(net(torch.randn(4, *net.input_shape(a)), a), torch.tensor([0, 1, 2, 3])).backward()
    assert layer.router[0].weight.grad is not None and layer.router[0].weight.grad.abs().sum() > 0
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_bad_mixture_option_is_rejected():
    with pytest.raises(ValueError, match="experts"):
        ElasticViTSupernet(_tiny_space(), {"mixture": {"experts": 0}})
    with pytest.raises(ValueError, match="router_hiden"):
        ElasticViTSupernet(_tiny_space(), {"mixture": {"experts": 2, "router_hiden": 3}})


def test_trains_on_mnist5k_with_complexity_aware_sampling_loss_goes_down(tmp_path):
    data = load_dataset(DatasetSpec(name="mnist5k", seed=0))
    space = ElasticViTSpace({"preset": "mnist", "resolutions": [16, 20], "mlp_ratios": [1.0, 2.0]})
    torch.manual_seed(0)
    net = ElasticViTSupernet(space)
    calib, (Xv, yv) = data.train[0][:128], (data.val[0][:300], data.val[1][:300])
    probes = [space.smallest(), space.largest()]

    def val_losses() -> list[float]:
        net.eval()
        return [evaluate_classifier(prepare_child(net, a, calib), Xv, yv)["loss"] for a in probes]

    before = val_losses()
    spec = TrainingSpec(epochs=1, batch_size=64, lr=0.1, warmup_epochs=0.1)
    trainer = SandwichTrainer(net, data, spec, seed=0, checkpoint_dir=tmp_path,
                              options={"sampling": "uniform", "sampler": "complexity", "eval_images": 300,
                                       "calib_images": 128, "eval_smallest": False})
    trainer.fit()
    assert len(trainer.sampler.bank) == trainer.total_steps >= 50  # every step trained a sampled child
    after = val_losses()
    for b, a in zip(before, after, strict=True):
        assert a < b - 0.3, (before, after)
