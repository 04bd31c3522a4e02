"""Part (c) of ``vit_mos``: balanced mixture of supernets vs one supernet, ranking of pooling layouts.

Space ``pooling_layout`` preset ``mnist`` (a stem, 6 basic residual blocks, 2 of them
downsampling with channel doubling: C(6, 2) = 15 layouts) on MNIST-5k. Per seed:

1. Train the supernets of ``ARMS`` for the same number of steps with the ``pooling_mixture``
   trainer (``LAYOUTS_PER_STEP`` distinct uniform layouts per step, each from the labels on the
   model it is routed to; same data order and recipe): ``balanced`` with K = ``K_MIXTURE`` weight
   models and the trainer's defaults (``SHIPPED``: a shared warm start over the first 30% of
   training, the layouts then grouped by gradient similarity, re-assignment from probe losses
   every 25 steps until 80% with a move margin), ``single`` with K = 1 (plain weight sharing:
   every layout on the one model, so routing is moot), and ``cold``, the balanced mixture as first
   measured (exploration and learned routing from K separate initializations).
2. Each layout's *inherited* accuracy: ``extract(layout)`` from the model it is routed to, BN
   recalibrated on 1,000 training images, top-1 on the test split (500 images).
   Ablation ``fixed``: K = ``K_MIXTURE`` models with the initial random balanced routing kept
   (no exploration, no re-assignment), to separate "more models" from "learned routing".
3. *Standalone* accuracy: each layout trained alone from scratch, once per standalone seed, for
   the same number of steps as the supernets (or ``standalone_epochs``) with the same recipe, scored the same way; averaged over standalone
   seeds (three). These runs are shared by all supernets. The taus between the standalone seeds'
   own rankings (``pooling_standalone_seed_tau``, ``_loss``) say how far the reference repeats.

Headline: ``balanced_tau`` / ``single_tau`` = Kendall tau-b between inherited and standalone
accuracy over the layouts, mean over supernet seeds (per-seed values in ``pooling_per_seed``);
higher is better. Also reported: tau on test loss instead of accuracy, and mean inherited
accuracy. Equal training *steps* (and equal layout forward/backward passes per step) means the
K-model mixture spends the same compute but holds K times the weights; each of its models sees
~1/K of the layout updates. Wall times on a shared 2-core machine are indicative only.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from typing import Any

import numpy as np
import torch

from nasforge.core.spec import DatasetSpec, TrainingSpec
from nasforge.data import load_dataset
from nasforge.predictors.metrics import kendall_tau
from nasforge.spaces.pooling_layout import PoolingLayoutSpace
from nasforge.supernets.pooling_mixture import (
    PoolingMixtureSupernet,
    PoolingMixtureTrainer,
    PoolingMixtureTrainerOptions,
)
from nasforge.workers.tune import score_child, train_standalone

SPACE = {"preset": "mnist"}
K_MIXTURE = 3
LAYOUTS_PER_STEP = 2
BATCH, LR = 128, 0.1
CALIB = 1000
# the balanced arm as part (c) measured it: exploration and learned routing from K initializations
# (the trainer's defaults since moved to the shared warm start that benchmarks/pooling_warm measures)
TRAINER = {"layouts_per_step": LAYOUTS_PER_STEP, "explore_fraction": 0.3, "reassign_every": 25,
           "freeze_fraction": 0.8, "probe_images": 256, "loss_ema": 0.5, "eval_images": 200,
           "calib_images": 256, "threads": 1, "shared_warmup_fraction": 0.0, "move_margin": 0.0, "split": "random"}


def _config(quick: bool) -> dict[str, Any]:
    if quick:
        return {"epochs": 1.0, "seeds": [0], "standalone_seeds": [0], "layouts": 6}
    return {"epochs": float(os.environ.get("POOLING_EPOCHS", 15)), "seeds": [0, 1, 2, 3, 4, 5],
            "standalone_seeds": [0, 1, 2], "layouts": 15}


def _layouts(space: PoolingLayoutSpace, n: int) -> list[Any]:
    """``n`` layouts spread over the enumeration (all of them when ``n`` >= the space's size)."""
    all_layouts = space.layouts()
    if n >= len(all_layouts):
        return all_layouts
    idx = np.unique(np.linspace(0, len(all_layouts) - 1, n).round().astype(int))
    return [all_layouts[i] for i in idx]


def _spec(epochs: float) -> TrainingSpec:
    return TrainingSpec(epochs=epochs, batch_size=BATCH, lr=LR, warmup_epochs=0.3, weight_decay=1e-5,
                        options=dict(TRAINER))


def _train_supernet(space: PoolingLayoutSpace, data: Any, spec: TrainingSpec, num_models: int,
                    seed: int) -> tuple[PoolingMixtureSupernet, PoolingMixtureTrainer, float]:
    torch.manual_seed(seed)
    net = PoolingMixtureSupernet(space, {"num_models": num_models, "assign_seed": seed})
    with tempfile.TemporaryDirectory() as tmp:
        trainer = PoolingMixtureTrainer(net, data, spec, seed=seed, checkpoint_dir=tmp, options=spec.options)
        t0 = time.perf_counter()
        trainer.fit()
        wall = time.perf_counter() - t0
    return net, trainer, wall


# the pooling_mixture trainer's own defaults for the options TRAINER pins to the earlier configuration
# (the shared warm start and the move margin, e86f811; the gradient split, since pooling_gradient_split):
# what a job file that leaves them out trains
SHIPPED = {name: PoolingMixtureTrainerOptions.model_fields[name].default
           for name in ("shared_warmup_fraction", "move_margin", "split")}

Arm = tuple[str, int, dict[str, Any]]
SINGLE: Arm = ("single", 1, {})
# the balanced mixture as part (c) measured it before e86f811 (TRAINER): exploration and learned
# routing from K separate initializations, any probe-loss gain moves a layout; pooling_margin and
# pooling_warm(_heldout) ran it under the label "balanced"
COLD: Arm = ("cold", K_MIXTURE, {})
# ablation: the same K models with the initial random balanced routing kept (nothing learned)
FIXED: Arm = ("fixed", K_MIXTURE, {"reassign_every": 0, "explore_fraction": 0.0})


def describe_arm(k: int, overrides: dict[str, Any]) -> str:
    """What an arm trains, in words, from its effective options (``TRAINER`` with ``overrides``)."""
    o = {**TRAINER, **overrides}
    if k == 1:
        return "one weight model"
    start = (f"a shared warm start (model 0 on every layout for {o['shared_warmup_fraction']:g} of training, "
             "then copied into all K)" if o["shared_warmup_fraction"] > 0 else "K separate initializations")
    if o.get("split") == "gradient":
        start += ", the layouts regrouped at the copy by the similarity of their loss gradients on the shared model"
    if not o["reassign_every"]:
        return f"{start}, the initial random balanced routing kept"
    margin = (f"a move needing a probe-loss gain of {o['move_margin']:g} paired standard errors"
              if o["move_margin"] > 0 else "any probe-loss gain moving a layout")
    return f"{start}, then learned balanced routing, {margin}"


ARMS: tuple[Arm, ...] = (("balanced", K_MIXTURE, dict(SHIPPED)), SINGLE, COLD, FIXED)


def run_part(quick: bool = False, *, epochs: float | None = None, standalone_epochs: float | None = None,
             seeds: list[int] | None = None,
             arms: tuple[Arm, ...] = ARMS) -> dict:
    """``epochs``: the supernets' training (default ``POOLING_EPOCHS``, 15); ``standalone_epochs``:
    the standalone reference's (default: the same); ``seeds``: the supernet seeds (default 0-5);
    ``arms``: (label, K, trainer options over ``TRAINER``) per supernet, trained per seed."""
    cfg = _config(quick)
    if epochs is not None:
        cfg["epochs"] = float(epochs)
    if seeds is not None:
        cfg["seeds"] = list(seeds)
    cfg["standalone_epochs"] = float(standalone_epochs) if standalone_epochs is not None else cfg["epochs"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = load_dataset(DatasetSpec(name="mnist5k", seed=0))
        space = PoolingLayoutSpace(SPACE)
        layouts = _layouts(space, cfg["layouts"])
        spec = _spec(cfg["epochs"])
        alone_spec = _spec(cfg["standalone_epochs"])
        t0 = time.perf_counter()

        # standalone: every layout alone, per standalone seed (shared by both supernets)
        alone: dict[str, list[dict[str, float]]] = {a.key(): [] for a in layouts}
        # the sandwich trainer with the layout as its only, label-trained child: the same recipe
        standalone_opts = {"dropout": 0.0, "label_smoothing": 0.1, "eval_images": TRAINER["eval_images"],
                           "calib_images": TRAINER["calib_images"], "threads": 1}
        for s in cfg["standalone_seeds"]:
            for arch in layouts:
                r = train_standalone(space, arch, data, TrainingSpec(**{**alone_spec.model_dump(), "options": standalone_opts}),
                                     s, supernet_name="pooling_mixture", supernet_options={"num_models": 1},
                                     calib_images=CALIB)
                alone[arch.key()].append(r)
        standalone_s = time.perf_counter() - t0
        alone_acc = np.array([np.mean([r["accuracy"] for r in alone[a.key()]]) for a in layouts])
        alone_loss = np.array([np.mean([r["loss"] for r in alone[a.key()]]) for a in layouts])
        # how well the reference ranking repeats: tau between the standalone seeds' own rankings (mean
        # over pairs); even the true order agrees with one seed's ranking only about this well
        by_seed = {m: np.array([[r[m] for r in alone[a.key()]] for a in layouts]).T for m in ("accuracy", "loss")}
        pairs = list(itertools.combinations(range(len(cfg["standalone_seeds"])), 2))
        seed_tau = {m: float(np.mean([kendall_tau(v[i], v[j]) for i, j in pairs])) if pairs else float("nan")
                    for m, v in by_seed.items()}

        rows = [{"layout": space.layout_name(a), "positions": ",".join(map(str, space.positions(a))),
                 "mflops": space.cost(a)["flops"] / 1e6, "kparams": space.cost(a)["params"] / 1e3,
                 "standalone_acc": float(alone_acc[i]),
                 **{f"standalone_acc_s{s}": alone[a.key()][j]["accuracy"]
                    for j, s in enumerate(cfg["standalone_seeds"])}}
                for i, a in enumerate(layouts)]
        per_seed: list[dict[str, Any]] = []
        for seed in cfg["seeds"]:
            for label, k, overrides in arms:
                arm_spec = spec.model_copy(update={"options": {**spec.options, **overrides}})
                net, trainer, wall = _train_supernet(space, data, arm_spec, k, seed)
                scores = [score_child(net, a, data, CALIB) for a in layouts]
                acc = np.array([sc["accuracy"] for sc in scores])
                loss = np.array([sc["loss"] for sc in scores])
                for row, a, sc in zip(rows, layouts, scores, strict=True):
                    row[f"{label}_acc_s{seed}"] = sc["accuracy"]
                    if k > 1:
                        row[f"{label}_model_s{seed}"] = net.route(a)
                hist = trainer.layout_sampler.history
                per_seed.append({
                    "seed": seed, "supernet": label, "num_models": k, "steps": trainer.step,
                    "tau_acc": kendall_tau(alone_acc, acc), "tau_loss": kendall_tau(alone_loss, loss),
                    "mean_inherited_acc": float(acc.mean()),
                    "reassignments": len(hist), "layouts_moved": int(sum(h["moved"] for h in hist)),
                    "train_s": wall,
                })
        n_test = int(data.test[1].shape[0])

        def mean_of(label: str, key: str) -> float:
            return float(np.mean([r[key] for r in per_seed if r["supernet"] == label]))

        labels = [label for label, _, _ in arms]
        by_arm: dict[str, float] = {}
        for label in labels:
            tau_key = f"{label}_tau" if label in ("balanced", "single") else f"pooling_{label}_tau"
            by_arm[tau_key] = mean_of(label, "tau_acc")
            by_arm[f"pooling_{label}_tau_loss"] = mean_of(label, "tau_loss")
            by_arm[f"pooling_{label}_mean_acc"] = mean_of(label, "mean_inherited_acc")
        return {
            **by_arm,
            "pooling_arms": {label: {"num_models": k, "trainer_options": dict(o)} for label, k, o in arms},
            "pooling_standalone_mean_acc": float(alone_acc.mean()),
            "pooling_standalone_seed_tau": seed_tau["accuracy"],
            "pooling_standalone_seed_tau_loss": seed_tau["loss"],
            "pooling_layouts": len(layouts),
            "pooling_num_models": K_MIXTURE,
            "pooling_steps": per_seed[0]["steps"],
            "pooling_epochs": cfg["epochs"],
            "pooling_standalone_epochs": cfg["standalone_epochs"],
            "pooling_standalone_s": standalone_s,
            "pooling_per_seed": per_seed,
            "rows": rows,
            "seeds": {"supernet": cfg["seeds"], "standalone": cfg["standalone_seeds"]},
            "notes": (
                f"pooling_layout (mnist preset: 6 basic blocks, 2 downsamplings) on MNIST-5k, {len(layouts)} "
                f"layouts, {per_seed[0]['steps']} steps ({cfg['epochs']:g} epochs) x {LAYOUTS_PER_STEP} layouts/step "
                f"(batch {BATCH}, lr {LR}) for every supernet; every standalone layout trained "
                f"{cfg['standalone_epochs']:g} epochs with the same recipe. Arms: "
                + "; ".join(f"{label} (K={k}{', ' if o else ''}{', '.join(f'{n}={v}' for n, v in o.items())})"
                            for label, k, o in arms)
                + f", each over the base options {TRAINER}"
                + "".join(f"; {label}: {describe_arm(k, o)}" for label, k, o in arms)
                + ". Kendall tau-b between inherited (routed model, BN recalibrated) "
                "and standalone test accuracy (mean of standalone seeds), averaged over supernet seeds "
                f"{cfg['seeds']}; standalone seeds {cfg['standalone_seeds']}. Test split {n_test} images, so "
                f"accuracies move in steps of {1 / n_test:.3f}; standalone accuracies span "
                f"{alone_acc.min():.3f}..{alone_acc.max():.3f} while the binomial standard error of one accuracy "
                f"is about {np.sqrt(alone_acc.mean() * (1 - alone_acc.mean()) / n_test):.3f}, so the accuracy "
                "ranking is close to noise; the test-loss taus (pooling_*_tau_loss) are the steadier figure. "
                "pooling_standalone_seed_tau(_loss): tau between two standalone seeds' rankings of the same layouts "
                "(mean over seed pairs), i.e. how far the reference ranking itself repeats. "
                "Read the per-seed taus before the means."
            ),
        }
    finally:
        torch.set_num_threads(threads)
