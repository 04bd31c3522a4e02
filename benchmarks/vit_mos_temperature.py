"""Does the Mixture-of-Supernets router default (temperature 0.1) also suit the ElasticViT supernet?

``vit_mos`` part (b) chose router temperature 0.1 on the *language model* (the inheritance gap to
standalone-trained children). The ViT shares the default, unmeasured there. This check trains the
``elastic_vit`` supernet (``mnist`` preset, MNIST-5k, the sandwich recipe of ``vit_mos`` part (a)
with uniform sampling) three ways at equal steps, per seed:

- ``mos``: every linear a 4-expert mixture, router temperature 0.1 (the default);
- ``mos_soft``: the same at temperature 1.0 (the default before);
- ``plain``: ordinary weight sharing.

Metric: inherited test accuracy (BN recalibrated, no fine-tuning) of a fixed panel of children
(smallest, largest and ``PANEL`` random ones, the same for every arm and seed), in percentage
points. No standalone training here, so it compares the supernets with each other, not the
inheritance gap. Headline: ``panel_mean_acc_mos`` / ``_mos_soft`` / ``_plain`` and
``mos_minus_soft_points`` (mean over seeds of the panel-mean difference; > 0: the default is better
on the ViT too).
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import numpy as np
import torch

from nasforge.core.spec import DatasetSpec, TrainingSpec
from nasforge.data import load_dataset
from nasforge.spaces.elastic_vit import ElasticViTSpace
from nasforge.supernets.elastic_vit import ElasticViTSupernet
from nasforge.supernets.trainer import SandwichTrainer

PANEL = 10
MIXTURE = {"experts": 4, "router_hidden": 16}
ARMS = {"mos": {"mixture": MIXTURE}, "mos_soft": {"mixture": {**MIXTURE, "router_temperature": 1.0}}, "plain": {}}


def run(quick: bool = False) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seeds = [0] if quick else [0, 1, 2]
        epochs = 1.0 if quick else 6.0
        data = load_dataset(DatasetSpec(name="mnist5k", seed=0))
        space = ElasticViTSpace({"preset": "mnist"})
        panel = [space.smallest(), space.largest()] + [
            space.sample(np.random.default_rng([2025, i])) for i in range(2 if quick else PANEL)]
        spec = TrainingSpec(epochs=epochs, batch_size=64, lr=0.1, warmup_epochs=0.2, weight_decay=5e-5)
        rows: list[dict[str, Any]] = []
        for seed in seeds:
            for arm, options in ARMS.items():
                torch.manual_seed(seed)
                net = ElasticViTSupernet(space, options)
                with tempfile.TemporaryDirectory() as tmp:
                    trainer = SandwichTrainer(net, data, spec, seed=seed, checkpoint_dir=tmp, options={
                        "eval_images": 1000, "calib_images": 512, "eval_smallest": False, "threads": 1})
                    t0 = time.perf_counter()
                    trainer.fit()
                    train_s = time.perf_counter() - t0
                    accs = [trainer.evaluate(arch, "test") for arch in panel]
                rows.append({"seed": seed, "arm": arm, "steps": trainer.step, "smallest_acc": accs[0],
                             "largest_acc": accs[1], "panel_mean_acc": float(np.mean(accs)),
                             "panel_min_acc": float(np.min(accs)), "train_s": train_s})

        def mean(arm: str, key: str = "panel_mean_acc") -> float:
            return float(np.mean([r[key] for r in rows if r["arm"] == arm]))

        diffs = [100 * (a["panel_mean_acc"] - b["panel_mean_acc"]) for a in rows if a["arm"] == "mos"
                 for b in rows if b["arm"] == "mos_soft" and b["seed"] == a["seed"]]
        return {
            "panel_mean_acc_mos": mean("mos"),
            "panel_mean_acc_mos_soft": mean("mos_soft"),
            "panel_mean_acc_plain": mean("plain"),
            "mos_minus_soft_points": float(np.mean(diffs)),
            "mos_minus_soft_points_per_seed": diffs,
            "mos_minus_plain_points": 100 * (mean("mos") - mean("plain")),
            "largest_acc_mos": mean("mos", "largest_acc"),
            "largest_acc_mos_soft": mean("mos_soft", "largest_acc"),
            "largest_acc_plain": mean("plain", "largest_acc"),
            "steps": rows[0]["steps"],
            "seeds": seeds,
            "rows": rows,
            "notes": (f"elastic_vit mnist preset on MNIST-5k, {epochs:g} epochs (batch 64, SGD lr 0.1, sandwich rule, "
                      "uniform sampling) per arm and seed; MoS: 4 experts, router hidden 16; panel: smallest, largest "
                      f"and {len(panel) - 2} fixed random children, inherited test accuracy (500 images, BN "
                      "recalibrated). One core (1 thread). A check of the default router temperature on the ViT, "
                      "not a figure of the issue."),
        }
    finally:
        torch.set_num_threads(threads)
