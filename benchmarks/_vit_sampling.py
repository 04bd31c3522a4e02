"""Part (a) of ``vit_mos``: ElasticViT complexity- + performance-aware sampling vs uniform sampling.

Same supernet (``elastic_vit`` space, ``mnist`` preset), same data (MNIST-5k), same schedule and
the same number of training steps for both arms; single-path training (one child per step, from
the labels: ``sampling: uniform``) so the only difference is which child each step trains:
- ``uniform``: a uniformly random child (``sampler: uniform``);
- ``performance``: ElasticViT's sampler with the job defaults (``sampler: performance``): FLOPs
  buckets covering the space, bounded FLOPs change between adjacent steps, on half of the steps
  (``exploit: 0.5``) the best of ``candidates`` by the running loss estimate, a random candidate of
  the band on the others;
- ``complexity`` (ablation): the same buckets and FLOPs bound, a random candidate (no estimate);
- ``performance_greedy``: ``performance`` with ``exploit: 1`` (the estimated best at every step;
  the default before 2026-12-07), whose picks feed on themselves.
After training, the smallest child, the median-FLOPs child (median of 201 fixed uniform draws) and
the largest child are BN-recalibrated and scored on the test split, and so is a fixed panel of
``PANEL`` uniform random children (its mean: how the arm serves the space as a whole). What a search
over the trained supernet would find is scored too: in three FLOPs bands (the lowest, middle and
highest of 9 log-spaced buckets) ``BAND_POOL`` fixed children each, the one with the best val
accuracy is picked and its test accuracy reported (``best_{low,mid,high}_acc``, gains
``sampling_gain_best_*_points``): ElasticViT's claim is about these best-per-FLOPs children. Headline:
``sampling_gain_smallest_points`` = mean over seeds of (accuracy of the smallest child with the
ElasticViT sampler (complexity + performance-aware) - with uniform sampling), in percentage points;
also the median / largest gains, and ``complexity_only_gain_*`` for the ablation arm.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np
import torch

from nasforge.core.spec import DatasetSpec, TrainingSpec
from nasforge.core.types import Arch
from nasforge.data import load_dataset
from nasforge.spaces.elastic_vit import ElasticViTSpace
from nasforge.supernets.elastic_vit import ElasticViTSupernet
from nasforge.supernets.sampling import ComplexityAwareSampler
from nasforge.supernets.trainer import SandwichTrainer

#: arm -> (trainer sampler, extra sampler options)
ARMS = {"uniform": ("uniform", {}), "complexity": ("complexity", {}), "performance": ("performance", {}),
        "performance_greedy": ("performance", {"exploit": 1.0})}
#: seeds 0-2 are the ones the sampler's defaults were looked at on; later ones are held out
HELD_OUT_FROM = 3
PANEL = 12
SAMPLER_OPTIONS = {"max_flops_ratio": 1.5, "candidates": 4, "bank_size": 256, "min_bank": 16}
BAND_POOL = 12
#: how each ``sampling`` trains, in the notes
TRAINING = {"uniform": "single-path training (one child per step)",
            "sandwich": "sandwich training (largest + smallest + 2 sampled children per step, in-place distillation)"}
BANDS = {"low": 0, "mid": 4, "high": 8}  # buckets of 9 log-spaced FLOPs buckets


class _Recorder:
    """Wraps the trainer's sampler and records the FLOPs of every child it hands out."""

    def __init__(self, inner: Any, space: ElasticViTSpace, skip: int = 0):
        self.inner, self.space, self.flops, self.resolutions, self.skip = inner, space, [], [], skip

    def sample_step(self, step: int, rng: np.random.Generator) -> list[Arch]:
        archs = self.inner.sample_step(step, rng)
        self.flops += [self.space.cost(a)["flops"] for a in archs[self.skip:]]  # skip: the sandwich's smallest
        self.resolutions += [a["resolution"] for a in archs[self.skip:]]
        return archs

    def observe(self, step: int, archs: list[Arch], losses: list[float]) -> None:
        if hasattr(self.inner, "observe"):
            self.inner.observe(step, archs, losses)


def _median_child(space: ElasticViTSpace) -> Arch:
    pool = [space.sample(np.random.default_rng([2023, i])) for i in range(201)]
    flops = [space.cost(a)["flops"] for a in pool]
    return pool[int(np.argsort(flops)[100])]


def _panel(space: ElasticViTSpace, n: int) -> list[Arch]:
    """``n`` fixed random children (their own generator, the same for every arm and seed)."""
    return [space.sample(np.random.default_rng([2024, i])) for i in range(n)]


def _band_pools(space: ElasticViTSpace, n: int) -> dict[str, list[Arch]]:
    """``n`` fixed distinct children in each FLOPs band (their own generators, the same for every arm)."""
    finder = ComplexityAwareSampler(space, 1, options={"buckets": 9})
    pools: dict[str, list[Arch]] = {}
    for band, bucket in BANDS.items():
        pool: list[Arch] = []
        for i in range(20 * n):
            arch = finder.sample_in_bucket(bucket, np.random.default_rng([2025, bucket, i]))
            if arch is not None and arch not in pool:
                pool.append(arch)
            if len(pool) == n:
                break
        pools[band] = pool
    return pools


def run_part(quick: bool = False, *, sampling: str = "uniform", arms: list[str] | None = None,
             seeds: list[int] | None = None, epochs: float = 10.0) -> dict:
    """Part (a). ``sampling``: the trainer's ``sampling`` option, ``uniform`` (single-path, the
    default: one child per step, the sampler's) or ``sandwich`` (the largest, the smallest and
    ``num_random`` (2) children of the sampler per step, in-place distillation: ElasticViT's own
    recipe, and ``examples/elastic_vit.yaml``'s); ``arms``: a subset of ``ARMS`` (``uniform`` always
    runs, it is the baseline); ``epochs``: training length of every arm (``quick``: 2)."""
    env_seeds = [int(x) for x in os.environ.get("VIT_SAMPLING_SEEDS", "").split(",") if x.strip()]
    seeds = seeds if seeds is not None else ([0] if quick else env_seeds or [0, 1, 2])
    epochs = 2.0 if quick else float(epochs)
    arm_names = ["uniform"] + [a for a in (arms or list(ARMS)) if a != "uniform"]
    unknown = sorted(set(arm_names) - set(ARMS))
    if unknown:
        raise SystemExit(f"unknown sampling arm(s) {unknown}; choose from {sorted(ARMS)}")
    data = load_dataset(DatasetSpec(name="mnist5k", seed=0))
    space = ElasticViTSpace({"preset": "mnist"})
    children = {"smallest": space.smallest(), "median": _median_child(space), "largest": space.largest()}
    panel = _panel(space, 3 if quick else PANEL)
    bands = _band_pools(space, 2 if quick else BAND_POOL)
    spec = TrainingSpec(epochs=epochs, batch_size=64, lr=0.1, warmup_epochs=0.2, weight_decay=5e-5)
    rows: list[dict] = []
    for seed in seeds:
        for arm in arm_names:
            sampler, extra = ARMS[arm]
            torch.manual_seed(seed)
            net = ElasticViTSupernet(space)
            with tempfile.TemporaryDirectory() as tmp:
                trainer = SandwichTrainer(net, data, spec, seed=seed, checkpoint_dir=tmp, options={
                    "sampling": sampling, "sampler": sampler, "sampler_options": {**SAMPLER_OPTIONS, **extra},
                    "eval_images": 1000, "calib_images": 512, "eval_smallest": False, "threads": 1})
                recorder = _Recorder(trainer.sampler, space, skip=1 if sampling == "sandwich" else 0)
                trainer.sampler = recorder
                t0 = time.perf_counter()
                trainer.fit()
                seconds = time.perf_counter() - t0
                accs = {name: trainer.evaluate(arch, "test") for name, arch in children.items()}
                panel_accs = [trainer.evaluate(arch, "test") for arch in panel]
                best = {}
                for band, pool in bands.items():
                    val = [trainer.evaluate(arch, "val") for arch in pool]
                    pick = pool[int(np.argmax(val))]
                    best[band] = (trainer.evaluate(pick, "test"), max(val), space.cost(pick)["flops"])
                eval_seconds = time.perf_counter() - t0 - seconds
            f = np.array(recorder.flops)
            chains = f.reshape(trainer.step, -1)  # one column per child drawn at each step (sampler chain)
            smallest_f, largest_f = space.cost(children["smallest"])["flops"], space.cost(children["largest"])["flops"]
            low_band = smallest_f * (largest_f / smallest_f) ** 0.25  # cheapest quarter of log-FLOPs
            stats = getattr(recorder.inner, "stats", {})
            rows.append({
                "seed": seed, "sampler": arm, "steps": trainer.step,
                "smallest_acc": accs["smallest"], "median_acc": accs["median"], "largest_acc": accs["largest"],
                "panel_mean_acc": float(np.mean(panel_accs)), "panel_min_acc": float(np.min(panel_accs)),
                **{f"best_{band}_acc": b[0] for band, b in best.items()},
                **{f"best_{band}_val_acc": b[1] for band, b in best.items()},
                **{f"best_{band}_mflops": b[2] / 1e6 for band, b in best.items()},
                "trained_mflops_mean": float(f.mean() / 1e6),
                "trained_share_cheapest_quarter": float(np.mean(f <= low_band)),
                "max_adjacent_flops_ratio": float(np.max(np.maximum(chains[1:] / chains[:-1],
                                                                     chains[:-1] / chains[1:]))),
                **{f"trained_share_res{r}": float(np.mean(np.array(recorder.resolutions) == r))
                   for r in space.choices()["resolution"]},
                "estimated_picks": int(stats.get("estimated_picks", 0)),
                "train_seconds": round(seconds, 1), "eval_seconds": round(eval_seconds, 1),
            })
            print(f"vit_sampling seed={seed} arm={arm}: {rows[-1]}", flush=True)

    def gain(key: str, arm: str = "performance", among: list[int] | None = None) -> float:
        by = {(r["seed"], r["sampler"]): r[key] for r in rows}
        return float(np.mean([100 * (by[(s, arm)] - by[(s, "uniform")]) for s in (among or seeds)]))

    steps = {r["steps"] for r in rows}
    assert len(steps) == 1, steps  # equal training steps for every arm
    ran = set(arm_names)
    keys = ("smallest", "median", "largest", "panel_mean", "best_low", "best_mid", "best_high")
    gains: dict[str, Any] = {}
    held_out = [s for s in seeds if s >= HELD_OUT_FROM]
    if "performance" in ran:
        gains |= {f"sampling_gain_{k}_points": gain(f"{k}_acc") for k in keys}
        if held_out and len(held_out) < len(seeds):
            gains |= {f"sampling_gain_{k}_points_heldout": gain(f"{k}_acc", among=held_out)
                      for k in ("smallest", "median", "largest", "panel_mean")}
    if "complexity" in ran:
        gains |= {f"complexity_only_gain_{k}_points": gain(f"{k}_acc", "complexity") for k in keys}
    if "performance_greedy" in ran:
        gains |= {f"greedy_gain_{k}_points": gain(f"{k}_acc", "performance_greedy") for k in keys}
    return {
        **gains,
        "vit_sampling_panel": len(panel),
        "vit_sampling_band_pool": {band: len(pool) for band, pool in bands.items()},
        "vit_sampling_steps": steps.pop(),
        "vit_sampling_flops_span": space.cost(children["largest"])["flops"] / space.cost(children["smallest"])["flops"],
        "seeds": seeds,
        "rows": rows,
        "notes": (
            "ElasticViT sampling (complexity-aware buckets, max_flops_ratio 1.5, + performance-aware: on half of "
            "the steps (exploit 0.5, the default) the best of 4 by a ridge loss estimate over the last 256 steps, "
            "a random candidate of the band otherwise) vs uniform sampling, plus a complexity-only ablation arm "
            "and a greedy arm (performance_greedy: exploit 1, the estimated best at every step; keys "
            f"greedy_gain_*); *_heldout: seeds from {HELD_OUT_FROM} on only, which were not looked at when the "
            "defaults were chosen; elastic_vit mnist preset on "
            f"MNIST-5k, {TRAINING[sampling]}, {epochs:g} epochs of batch 64 (the same steps for every arm), SGD lr 0.1; "
            "accuracies on the 500-image test split after BN recalibration on 512 training images. "
            f"Gains are percentage points, mean over seeds {seeds}. panel: the mean accuracy of {len(panel)} fixed "
            "uniform random children (one generator for every arm and seed), i.e. the supernet as a whole rather "
            "than three named children. best_*: in the lowest, middle and highest of 9 log-spaced FLOPs buckets, "
            f"{BAND_POOL} fixed children each (the same for every arm); the one with the best val accuracy (500 "
            "images) is picked and its test accuracy reported: what a search over the supernet would return. "
            f"trained_share_res*: the share of the sampler's children at each input resolution (uniform: 1/4 each; the "
            f"median child has resolution {children['median']['resolution']})."
        ),
    }


def run_one_thread(quick: bool = False, **kwargs: Any) -> dict:
    """:func:`run_part` with torch at one thread for the whole run, scoring included (the trainer
    pins training alone): what the benchmarks built on part (a) run, so that their figures do not
    depend on the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_part(quick=quick, **kwargs)
    finally:
        torch.set_num_threads(threads)
