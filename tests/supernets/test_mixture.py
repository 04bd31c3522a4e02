"""MixtureLinear: collapse equals forward, gradients reach experts and router, E=1 is a dynamic linear."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nasforge.supernets.layers import DynamicLinear
from nasforge.supernets.mixture import MixtureLinear

torch.set_num_threads(1)


def _enc(dim: int, hot: list[int]) -> np.ndarray:
    e = np.zeros(dim, dtype=np.float32)
    e[hot] = 1.0
    return e


def test_to_linear_equals_forward_for_every_width():
    torch.manual_seed(0)
    layer = MixtureLinear(12, 10, experts=4, encoding_dim=6, router_hidden=8)
    with torch.no_grad():
        layer.bias.normal_()
    for hot, (cin, cout) in [([0, 3], (12, 10)), ([1, 4], (5, 7)), ([2, 5], (8, 3))]:
        enc = _enc(6, hot)
        x = torch.randn(3, 2, cin)
        plain = layer.to_linear(enc, cin, cout)
        assert type(plain) is nn.Linear and plain.weight.shape == (cout, cin)
        assert not any(isinstance(m, MixtureLinear) for m in plain.modules())
        with torch.no_grad():
            torch.testing.assert_close(plain(x), layer(x, enc, cin, cout), atol=1e-6, rtol=0)


def test_different_archs_get_different_weights():
    torch.manual_seed(0)
    layer = MixtureLinear(6, 6, experts=3, encoding_dim=4)
    a = layer.mixing_weights(_enc(4, [0]))
    b = layer.mixing_weights(_enc(4, [3]))
    torch.testing.assert_close(a.sum(), torch.tensor(1.0))
    assert not torch.allclose(a, b)
    wa, _ = layer.active_weight(_enc(4, [0]), 6, 6)
    wb, _ = layer.active_weight(_enc(4, [3]), 6, 6)
    assert not torch.allclose(wa, wb)


def test_gradients_reach_experts_and_router():
    torch.manual_seed(0)
    layer = MixtureLinear(8, 8, experts=3, encoding_dim=5, router_hidden=4)
    x = torch.randn(4, 6)
    layer(x, _enc(5, [1, 2]), out_features=5).pow(2).sum().backward()
    assert layer.weight.grad is not None
    # only the active block of each expert gets a gradient, and every expert gets one
    assert torch.all(layer.weight.grad[:, :5, :6].abs().sum(dim=(1, 2)) > 0)
    assert torch.all(layer.weight.grad[:, 5:, :] == 0) and torch.all(layer.weight.grad[:, :, 6:] == 0)
    assert layer.bias.grad is not None and torch.all(layer.bias.grad[:, :5].abs() > 0)
    for p in layer.router.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_single_expert_is_a_dynamic_linear():
    torch.manual_seed(0)
    layer = MixtureLinear(9, 7, experts=1, encoding_dim=3)
    dyn = DynamicLinear(9, 7)
    with torch.no_grad():
        layer.bias.normal_()
        dyn.weight.copy_(layer.weight[0])
        dyn.bias.copy_(layer.bias[0])
    x = torch.randn(5, 4)
    for enc in (_enc(3, [0]), _enc(3, [1, 2])):
        torch.testing.assert_close(layer.mixing_weights(enc), torch.ones(1))
        torch.testing.assert_close(layer(x, enc, out_features=6), dyn(x, out_features=6))


def test_bad_sizes_and_encodings_are_rejected():
    layer = MixtureLinear(4, 4, experts=2, encoding_dim=3)
    with pytest.raises(ValueError, match="does not fit"):
        layer(torch.randn(1, 4), _enc(3, [0]), out_features=5)
    with pytest.raises(ValueError, match="in_features"):
        layer(torch.randn(1, 4), _enc(3, [0]), in_features=3)
    with pytest.raises(ValueError, match="encoding"):
        layer(torch.randn(1, 4), _enc(2, [0]))
    with pytest.raises(ValueError, match="experts"):
        MixtureLinear(4, 4, experts=0, encoding_dim=3)


def test_router_temperature_sharpens_the_mixture_and_options_build_it():
    """A lower router temperature gives each arch a sharper (lower-entropy) mixture from the same
    router; ``MixtureOptions`` (the job-file block shared by the ViT and LM supernets) builds the
    layer with it, and a non-positive temperature is refused."""
    from pydantic import ValidationError

    from nasforge.supernets.mixture import MixtureOptions

    torch.manual_seed(0)
    soft = MixtureLinear(6, 6, experts=4, encoding_dim=5, router_hidden=8, temperature=1.0)
    sharp = MixtureOptions(experts=4, router_hidden=8).linear(6, 6, 5)  # the default, 0.1
    assert sharp.temperature == pytest.approx(0.1) and soft.temperature == 1.0
    sharp.load_state_dict({k: v for k, v in soft.state_dict().items() if k != "router_temperature"}, strict=False)
    assert sharp.temperature == pytest.approx(0.1)
    assert float(soft.state_dict()["router_temperature"]) == 1.0  # a checkpoint records it

    def entropy(a: torch.Tensor) -> float:
        return float(-(a * a.clamp_min(1e-12).log()).sum())

    for hot in ([0], [2, 4], [1, 3]):
        a, b = soft.mixing_weights(_enc(5, hot)), sharp.mixing_weights(_enc(5, hot))
        assert entropy(b) < entropy(a)
        assert int(a.argmax()) == int(b.argmax())  # same router, same preferred expert
    with pytest.raises(ValidationError):
        MixtureOptions(experts=2, router_temperature=0)
    with pytest.raises(ValueError, match="temperature"):
        MixtureLinear(4, 4, experts=2, encoding_dim=3, temperature=-1.0)


def test_a_checkpoint_records_its_router_temperature_and_a_job_with_another_is_refused(tmp_path):
    """The router temperature shapes every child's weights: a MoS checkpoint loaded under another
    temperature would give other children than it was trained for, so it is refused naming the key;
    a checkpoint written before the temperature was recorded loads as configured."""
    from safetensors.torch import save_file

    from nasforge.spaces.lm_transformer import LMTransformerSpace
    from nasforge.supernets.lm_transformer import LMTransformerSupernet
    from nasforge.supernets.trainer import CheckpointError, load_trained_supernet

    space = LMTransformerSpace({"vocab_size": 256, "context": 8, "head_dim": 4, "depths": [1, 2],
                                "embed_dims": [8, 16], "heads": [1, 2], "mlp_ratios": [2]})
    options = {"mixture": {"experts": 2, "router_hidden": 4}}
    net = LMTransformerSupernet(space, options)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    assert sum(k.endswith("router_temperature") for k in state) > 0
    save_file(state, str(tmp_path / "model.safetensors"))
    loaded = load_trained_supernet(space, "lm_transformer", options, tmp_path)
    x = torch.randint(0, 256, (2, 8))
    assert torch.equal(loaded(x, space.largest()), net.eval()(x, space.largest()))
    hot = {"mixture": {**options["mixture"], "router_temperature": 1.0}}
    with pytest.raises(CheckpointError, match=r"trained with supernet.options.mixture.router_temperature 0.1, this "
                                              r"job has 1; set router_temperature: 0.1"):
        load_trained_supernet(space, "lm_transformer", hot, tmp_path)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    save_file({k: v for k, v in state.items() if not k.endswith("router_temperature")}, str(legacy / "model.safetensors"))
    assert load_trained_supernet(space, "lm_transformer", hot, legacy)  # no record: as configured
