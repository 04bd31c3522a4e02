"""BigNAS fidelity on MNIST-5k: inherited children vs the same children trained from scratch.

1. Train the quickstart supernet (``bignas_cnn`` preset ``mnist``, sandwich rule + in-place
   distillation, the recipe in RECIPE) on MNIST-5k; record its wall time.
2. Pick children spanning the FLOPs range (smallest, largest, and children at FLOPs quantiles of
   400 uniform samples); score each inherited child on the test split after BN recalibration on
   1,000 training images; train each alone with the same recipe and epochs (``train_standalone``)
   and score it the same way. Report per child, the mean gap (inherited - standalone, points),
   the mean absolute gap and Kendall's tau between the two accuracy orders.
3. Ablations on the same budget (same epochs, batch size, learning rate schedule):
   sandwich without in-place distillation (every child learns from the labels) and uniform
   single-path sampling (one random child per step, from the labels): largest and smallest
   child test accuracy, and the mean inherited accuracy over the same children.

Accuracies are deterministic for a seed on CPU; wall times are measured on a shared 2-core
machine and are only indicative (``load_1min`` at start and end is recorded).
``quick=True`` trains for a fraction of the epochs on 3 children (a smoke run).
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np
import torch
from scipy.stats import kendalltau

from nasforge.core.spec import DatasetSpec, TrainingSpec
from nasforge.data import load_dataset
from nasforge.spaces.bignas_cnn import BigNASCNNSpace
from nasforge.supernets.bignas import BigNASSupernet
from nasforge.supernets.trainer import SandwichTrainer
from nasforge.workers.tune import score_child, train_standalone

SEED = 0
#: the quickstart recipe (examples/quickstart.yaml ``training:``)
RECIPE = {"epochs": 10, "batch_size": 128, "lr": 0.2, "warmup_epochs": 0.5, "weight_decay": 1e-5,
          "options": {"num_random": 2}}


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _pick_children(space: BigNASCNNSpace, n: int) -> list[Any]:
    rng = np.random.default_rng(SEED)
    pool = {a.key(): a for a in (space.sample(rng) for _ in range(400))}
    archs = sorted(pool.values(), key=lambda a: space.cost(a)["flops"])
    inner = [archs[int(q * (len(archs) - 1))] for q in np.linspace(0.15, 0.85, n - 2)]
    return [space.smallest(), *inner, space.largest()]


def _train_supernet(space: BigNASCNNSpace, data: Any, spec: TrainingSpec, options: dict[str, Any]) -> tuple[Any, dict]:
    torch.manual_seed(SEED)
    net = BigNASSupernet(space)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        metrics = SandwichTrainer(net, data, spec, seed=SEED, checkpoint_dir=d, options=options).fit()
        metrics["wall_seconds"] = time.perf_counter() - t0
    return net, metrics


def run(quick: bool = False) -> dict[str, Any]:
    torch.set_num_threads(2)
    load_start = _load()
    data = load_dataset(DatasetSpec(name="mnist5k", seed=SEED))
    space = BigNASCNNSpace({"preset": "mnist"})
    recipe = dict(RECIPE)
    if quick:
        recipe["epochs"] = 0.5
    spec = TrainingSpec(**recipe)
    children = _pick_children(space, 3 if quick else 6)

    net, main = _train_supernet(space, data, spec, dict(spec.options))
    rows = []
    for arch in children:
        inherited = score_child(net, arch, data)
        alone = train_standalone(space, arch, data, spec, SEED)
        rows.append({
            "key": arch.key(), "mflops": space.cost(arch)["flops"] / 1e6, "kparams": space.cost(arch)["params"] / 1e3,
            "inherited_acc": inherited["accuracy"], "standalone_acc": alone["accuracy"],
            "gap_points": 100 * (inherited["accuracy"] - alone["accuracy"]),
            "standalone_train_s": alone["train_seconds"], "arch": arch.choices,
        })
    gaps = np.array([r["gap_points"] for r in rows])
    tau = kendalltau([r["inherited_acc"] for r in rows], [r["standalone_acc"] for r in rows]).statistic

    ablations = [{
        "recipe": "sandwich + in-place distillation", "largest_acc": main["largest_test_acc"],
        "smallest_acc": main["smallest_test_acc"],
        "children_mean_acc": float(np.mean([r["inherited_acc"] for r in rows])),
        "train_s": main["wall_seconds"],
    }]
    for label, options in (("sandwich, labels only (no distillation)", {"num_random": 2, "inplace_distill": False}),
                           ("uniform single-path", {"sampling": "uniform"})):
        other, m = _train_supernet(space, data, spec, options)
        ablations.append({
            "recipe": label, "largest_acc": m["largest_test_acc"], "smallest_acc": m["smallest_test_acc"],
            "children_mean_acc": float(np.mean([score_child(other, a, data)["accuracy"] for a in children])),
            "train_s": m["wall_seconds"],
        })
    best_largest = max(ablations, key=lambda r: r["largest_acc"])["recipe"]
    best_smallest = max(ablations, key=lambda r: r["smallest_acc"])["recipe"]
    return {
        "mean_gap_points": float(gaps.mean()),
        "mean_abs_gap_points": float(np.abs(gaps).mean()),
        "kendall_tau": float(tau),
        "largest_acc": main["largest_test_acc"],
        "smallest_acc": main["smallest_test_acc"],
        "quickstart_train_seconds": main["wall_seconds"],
        "flops_span": rows[-1]["mflops"] / rows[0]["mflops"],
        "best_recipe_largest": best_largest,
        "best_recipe_smallest": best_smallest,
        "load_1min_start": load_start,
        "load_1min_end": _load(),
        "recipe": recipe,
        "rows": rows,
        "ablations": ablations,
        "seeds": [SEED],
        "notes": (
            "MNIST-5k (4000 train / 500 val / 500 test, split seed 0), bignas_cnn preset 'mnist'. Accuracy is "
            "on the 500 test images (1 image = 0.2 points) after BN recalibration on 1000 training images, "
            "for inherited and standalone children alike. Standalone = the same trainer, recipe, epochs and "
            "batch order with the child as the only (label-trained, dropout, weight decay) arch. One seed; "
            "accuracies are deterministic on CPU, wall times are on a shared 2-core machine (see load_1min_*)."
        ),
    }
