"""Quantizers, pruners, packing and the exact packed size."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nasforge.compress.discovery import discover_layers, state_dict_split
from nasforge.compress.export import pack_state_dict, unpack_state_dict
from nasforge.compress.levels import compress_weight
from nasforge.compress.prune import magnitude_mask, nm_mask, wanda_score
from nasforge.compress.quant import dequantize, fake_quant, pack_bits, quantize, unpack_bits
from nasforge.spaces.compression import CompressionSpace
from tests.compress.helpers import TinyDigitsCNN, synthetic_space

torch.set_num_threads(1)


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity", ["channel", "group"])
def test_quantization_grid_and_error(bits: int, symmetric: bool, granularity: str) -> None:
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(6, 50, generator=g)
    w[0, :5] = 0.0
    q = quantize(w, bits, granularity=granularity, group_size=16, symmetric=symmetric)
    assert int(q.codes.max()) < 2**bits
    assert q.scale.shape == ((6, 1) if granularity == "channel" else (6, 4))
    d = dequantize(q)
    assert torch.all(d[0, :5] == 0)  # zero is on the grid
    # round-to-nearest: error at most half a step of each group's scale
    step = q.scale.float().repeat_interleave(q.group_size, dim=1)[:, :50]
    assert torch.all((d - w).abs() <= step / 2 + 1e-4)
    assert torch.equal(fake_quant(w, bits, granularity=granularity, group_size=16, symmetric=symmetric), d)


def test_more_bits_less_error() -> None:
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    errs = [float((fake_quant(w, b) - w).pow(2).mean()) for b in (2, 3, 4, 6, 8)]
    assert errs == sorted(errs, reverse=True) and errs[-1] < 1e-4


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_pack_unpack_round_trip(bits: int) -> None:
    v = torch.randint(0, 2**bits, (101,), generator=torch.Generator().manual_seed(bits))
    packed = pack_bits(v, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-101 * bits // 8)
    assert torch.equal(unpack_bits(packed, bits, 101), v)


def test_magnitude_and_nm_masks() -> None:
    w = torch.randn(8, 30, generator=torch.Generator().manual_seed(1))
    for s in (0.0, 0.3, 0.5, 0.77):
        m = magnitude_mask(w, s)
        assert int((~m).sum()) == math.ceil(s * w.numel() - 1e-9)
        if 0 < s:
            assert w.abs()[~m].max() <= w.abs()[m].min()
    m = nm_mask(w, 2, 4)
    blocks = m[:, :28].reshape(8, 7, 4)
    assert torch.all(blocks.sum(-1) == 2) and torch.all(m[:, 28:])
    kept = w.abs()[:, :28].reshape(8, 7, 4)
    assert torch.all(kept.masked_fill(~blocks, float("inf")).amin(-1) >= kept.masked_fill(blocks, -1).amax(-1))


def test_uniform_sparsity_level_meets_its_own_constraint() -> None:
    # rounding each layer's zero count down left every uniform level just under itself overall
    # (64x64, 64x64, 10x64 at 0.6: 0.59986), so `sparsity >= 0.6` rejected uniform 0.6
    for sizes in ([64, 64, 10], [7, 13, 3], [1, 5]):
        space = synthetic_space(sizes, mode="sparsity")
        for s in space.sparsity_values():
            assert space.cost(space.uniform(sparsity=s))["sparsity"] >= s - 1e-12, (sizes, s)
    w = torch.randn(1, 3)
    assert int((~magnitude_mask(w, 0.9)).sum()) == 2  # one weight always stays


def test_wanda_saliency_uses_input_norms() -> None:
    w = torch.ones(2, 4)
    score = wanda_score(w, torch.tensor([1.0, 5.0, 2.0, 0.1]))
    m = magnitude_mask(w, 0.5, score)
    assert m[:, 1].all() and m[:, 2].all() and not m[:, 0].any() and not m[:, 3].any()


@pytest.mark.parametrize("opts", [
    {"mode": "joint", "bits": [2, 3, 4, 8, 16], "sparsities": [0.0, 0.5, 0.7], "symmetric": False},
    {"mode": "joint", "bits": [3, 32], "sparsities": [0.0, 0.5], "pruning": "nm", "granularity": "group", "group_size": 8},
    {"mode": "sparsity", "sparsities": [0.0, 0.6]},
])
def test_packed_export_size_equals_cost_and_unpacks_to_fake_quant(opts) -> None:
    model = TinyDigitsCNN()
    layers, _ = discover_layers(model, torch.randn(1, 1, 8, 8))
    ob, op = state_dict_split(model, layers)
    space = CompressionSpace({**opts, "layers": layers, "other_bytes": ob, "other_params": op})
    rng = np.random.default_rng(0)
    for _ in range(4):
        arch = space.sample(rng)
        tensors, meta = pack_state_dict(model, space, arch)
        assert sum(t.numel() * t.element_size() for t in tensors.values()) == space.cost(arch)["model_bytes"]
        sd = unpack_state_dict(tensors, meta)
        levels = space.layer_levels(arch)
        for la in layers:
            b, s = levels[la.name]
            want = compress_weight(dict(model.named_modules())[la.name].weight, b, s, space.opts).weight
            assert torch.equal(sd[f"{la.name}.weight"], want)
            zeros = int((want == 0).sum()) - int((dict(model.named_modules())[la.name].weight == 0).sum())
            assert zeros >= 0


def test_gptq_rounding_lowers_output_error_and_keeps_the_grid_and_mask() -> None:
    from nasforge.compress.gptq import gptq_quantize

    g = torch.Generator().manual_seed(0)
    mix = torch.randn(32, 32, generator=g)
    X = torch.randn(512, 32, generator=g) @ mix  # correlated inputs
    w = torch.randn(16, 32, generator=g)
    H = X.T @ X / len(X)
    for bits, symmetric in ((3, True), (3, False), (4, False)):
        rtn = dequantize(quantize(w, bits, symmetric=symmetric))
        q = gptq_quantize(w, H, bits, symmetric=symmetric)
        gp = dequantize(q)
        assert int(q.codes.max()) < 2**bits
        assert torch.equal(q.scale, quantize(w, bits, symmetric=symmetric).scale)  # same grid: packs alike
        err = lambda m: float((X @ (w - m).T).pow(2).mean())  # noqa: E731
        assert err(gp) < 0.8 * err(rtn)
    mask = magnitude_mask(w, 0.5)
    gp = dequantize(gptq_quantize(w, H, 4, mask=mask))
    assert torch.all(gp[~mask] == 0)
