"""Why Mixture-of-Supernets matches plain weight sharing here: what the routers and experts learn.

``vit_mos`` part (b) found the inheritance gap of the Mixture-of-Supernets language model equal to
plain weight sharing's. This diagnostic trains the same MoS supernet (``benchmarks/_mos.py``'s
space, data, optimizer and sandwich recipe) for ``STEPS`` steps, once per (expert ``init_spread``,
``router_temperature``) in ``CONFIGS``, plus the plain supernet for reference, and reads every :class:`~nasforge.supernets.mixture.MixtureLinear` afterwards, over the six
children part (b) scores:

- ``router_departure``: mean over layers of max over children and experts of |a_e - 1/E| (0: every
  router still outputs the uniform mixture);
- ``router_child_l1``: mean over layers of the mean L1 distance between two children's mixing
  vectors (0: every child gets the same mixture; at most 2);
- ``expert_divergence``: mean over layers of ||W_e - mean_e W|| / (||mean_e W|| sqrt(E)), the
  experts' relative spread (the init sets it to about ``init_spread``);
- ``mean_child_loss``: the six children's mean test loss (nats per token) after extraction.

If the experts stay as alike as at initialisation, the mixture is effectively one matrix whatever
the router says, and the method reduces to plain weight sharing.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

STEPS = 300
#: (init_spread, router_temperature): soft routing (the default until vit_mos (b) led to 0.1), diverse
#: experts, sharp routing (the default since)
CONFIGS = ((0.1, 1.0), (1.0, 1.0), (0.1, 0.1))


def _readout(net: Any, encodings: list[torch.Tensor]) -> dict[str, float]:
    from nasforge.supernets.mixture import MixtureLinear

    departure, child_l1, divergence = [], [], []
    with torch.no_grad():
        for m in net.modules():
            if not isinstance(m, MixtureLinear):
                continue
            A = torch.stack([m.mixing_weights(e) for e in encodings])
            departure.append(float((A - 1.0 / m.experts).abs().max()))
            child_l1.append(float(torch.cdist(A, A, p=1).mean()))
            W = m.weight
            mean = W.mean(0, keepdim=True)
            divergence.append(float((W - mean).norm() / mean.norm() / W.shape[0] ** 0.5))
    return {"router_departure": float(np.mean(departure)), "router_child_l1": float(np.mean(child_l1)),
            "expert_divergence": float(np.mean(divergence)), "mixture_layers": len(departure)}


def run(quick: bool = False) -> dict[str, Any]:
    from benchmarks import _mos
    from nasforge.core.spec import DatasetSpec
    from nasforge.data import load_dataset
    from nasforge.spaces.lm_transformer import LMTransformerSpace
    from nasforge.supernets.lm_transformer import LMTransformerSupernet

    torch.set_num_threads(1)
    steps = 30 if quick else STEPS
    space = LMTransformerSpace(_mos.SPACE)
    data = load_dataset(DatasetSpec(name="pystdlib", seed=0, seq_len=_mos.SEQ_LEN))
    children = _mos._children(space, 6)
    encodings = [torch.from_numpy(space.encode([a])[0]).float() for a in children]
    rows = []
    for spread, temperature in CONFIGS:
        torch.manual_seed(0)
        mixture = {"experts": _mos.EXPERTS, "router_hidden": _mos.ROUTER_HIDDEN, "init_spread": spread,
                   "router_temperature": temperature}
        net = LMTransformerSupernet(space, {"mixture": mixture})
        init = _readout(net, encodings)
        t0 = time.perf_counter()
        _mos._train(net, data, steps, 0, _mos.LR)
        net.eval()
        after = _readout(net, encodings)
        rows.append({"supernet": "mos", "init_spread": spread, "router_temperature": temperature, "steps": steps,
                     **after, "expert_divergence_at_init": init["expert_divergence"],
                     "mean_child_loss": float(np.mean([_mos._score(net, a, data) for a in children])),
                     "train_s": time.perf_counter() - t0})
    torch.manual_seed(0)
    plain = LMTransformerSupernet(space, {})
    t0 = time.perf_counter()
    _mos._train(plain, data, steps, 0, _mos.LR)
    plain.eval()
    rows.append({"supernet": "plain", "steps": steps,
                 "mean_child_loss": float(np.mean([_mos._score(plain, a, data) for a in children])),
                 "train_s": time.perf_counter() - t0})
    low, diverse, sharp, ref = rows
    return {
        "router_departure": low["router_departure"],
        "router_child_l1": low["router_child_l1"],
        "expert_divergence": low["expert_divergence"],
        "expert_divergence_at_init": low["expert_divergence_at_init"],
        "mean_child_loss": low["mean_child_loss"],
        "mean_child_loss_spread_1": diverse["mean_child_loss"],
        "router_child_l1_temperature_0_1": sharp["router_child_l1"],
        "expert_divergence_temperature_0_1": sharp["expert_divergence"],
        "mean_child_loss_temperature_0_1": sharp["mean_child_loss"],
        "mean_child_loss_plain": ref["mean_child_loss"],
        "rows": rows,
        "seeds": [0],
        "notes": (f"Mixture-of-Supernets LM of benchmarks/_mos.py ({_mos.EXPERTS} experts, router hidden "
                  f"{_mos.ROUTER_HIDDEN}, Adam lr {_mos.LR}, sandwich recipe), {steps} steps, seed 0, one run per "
                  f"(init_spread, router_temperature) in {list(CONFIGS)} and one plain supernet; headline keys "
                  "without a suffix are for (0.1, 1.0), soft routing (the default until the router temperature default became 0.1). mean_child_loss is the inherited test loss "
                  "(nats/token) of the six children vit_mos part (b) scores, no standalone training here, so "
                  "it compares the supernets with each other, not the inheritance gap. One seed, 300 steps: a "
                  "lead for vit_mos, not a result of it; see the module docstring."),
    }
