"""Is input resolution 24 worth its FLOPs in the ElasticViT supernet? (context for ``vit_mos`` part (a))

``vit_mos`` part (a) found that the greedy performance-aware sampler (``exploit: 1``, the default
until 2026-12-07) trains resolution-24 children on 4-6% of its steps on seeds 0-3 (uniform
sampling: 25%), and the fixed median child it scores has resolution 24. This asks whether the
sampler's estimate reads the supernet right: on a supernet trained with *uniform*
sampling (every resolution equally trained; part (a)'s recipe, single-path, 10 epochs), the same
``ARCHS`` fixed random children are scored at each input resolution (all other choices kept), so
the accuracy each resolution buys can be set against its FLOPs.

Headline, per resolution R: ``acc_resR`` (mean test accuracy of the children at R, BN recalibrated)
and ``mflops_resR`` (their mean MFLOPs), means over seeds; ``res24_minus_res20_points`` (accuracy
points resolution 24 adds over 20 at the same other choices) and ``res24_over_res20_flops``.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
import torch

from nasforge.core.spec import DatasetSpec, TrainingSpec
from nasforge.data import load_dataset
from nasforge.spaces.elastic_vit import ElasticViTSpace
from nasforge.supernets.elastic_vit import ElasticViTSupernet
from nasforge.supernets.trainer import SandwichTrainer

ARCHS = 20


def run(quick: bool = False) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seeds = [0] if quick else [0, 1]
        epochs = 1.0 if quick else 10.0
        data = load_dataset(DatasetSpec(name="mnist5k", seed=0))
        space = ElasticViTSpace({"preset": "mnist"})
        resolutions = list(space.choices()["resolution"])
        archs = [space.sample(np.random.default_rng([77, i])) for i in range(4 if quick else ARCHS)]
        spec = TrainingSpec(epochs=epochs, batch_size=64, lr=0.1, warmup_epochs=0.2, weight_decay=5e-5)
        rows: list[dict[str, Any]] = []
        for seed in seeds:
            torch.manual_seed(seed)
            net = ElasticViTSupernet(space)
            with tempfile.TemporaryDirectory() as tmp:
                trainer = SandwichTrainer(net, data, spec, seed=seed, checkpoint_dir=tmp, options={
                    "sampling": "uniform", "sampler": "uniform", "eval_images": 1000, "calib_images": 512,
                    "eval_smallest": False, "threads": 1})
                trainer.fit()
                for i, arch in enumerate(archs):
                    for r in resolutions:
                        child = space.validate(arch.replace(resolution=r))
                        rows.append({"seed": seed, "arch": i, "resolution": r,
                                     "test_acc": trainer.evaluate(child, "test"),
                                     "mflops": space.cost(child)["flops"] / 1e6})

        def mean(key: str, r: int) -> float:
            return float(np.mean([row[key] for row in rows if row["resolution"] == r]))

        out: dict[str, Any] = {}
        for r in resolutions:
            out[f"acc_res{r}"] = mean("test_acc", r)
            out[f"mflops_res{r}"] = mean("mflops", r)
        out["res24_minus_res20_points"] = 100 * (out["acc_res24"] - out["acc_res20"])
        out["res24_over_res20_flops"] = out["mflops_res24"] / out["mflops_res20"]
        return {
            **out,
            "seeds": seeds,
            "rows": rows,
            "notes": (f"elastic_vit mnist preset on MNIST-5k, single-path uniform sampling, {epochs:g} epochs of batch "
                      f"64, SGD lr 0.1 (vit_mos part (a)'s uniform arm), seeds {seeds}; {len(archs)} fixed random "
                      "children (their own generator) scored at every input resolution with their other choices "
                      "kept: test accuracy on the 500-image test split after BN recalibration on 512 training "
                      "images, and counted FLOPs. One core (1 thread)."),
        }
    finally:
        torch.set_num_threads(threads)
