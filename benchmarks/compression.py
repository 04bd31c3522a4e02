"""Compression allocation at equal budget: uniform vs DP vs ILP vs closed-form vs EvoPress.

Model: the trained MNIST CNN of ``examples/compress.yaml`` (5 convs + 2 linear layers, trained on
the MNIST-5k train split on first use). Calibration: the first ``calibration_images`` train
images; held-out: the validation split (500 images), never seen in training or calibration.

Per budget (sparsity 50/60/70 %, magnitude pruning, levels 0..0.95; average bits 3 and 4 with
choices {2, 3, 4, 8}, asymmetric per-channel quantization) each method's allocation is scored by
the real CompressionWorkload (level database, swapped layers): calibration ``kl`` (mean
KL(dense || compressed)), held-out ``kl_heldout``, held-out ``accuracy``. DP / ILP / closed-form
learn their curves from single-layer probes on the same calibration set (probes shared across
budgets); EvoPress runs ``optimize`` with multi-step selection (offspring on few calibration
images, survivors on more, the winner on all). ``dp_predicted_kl`` is DP's additive prediction
(base + sum of single-layer increases), beside the measured value, to show where additivity holds. Extra rows ``uniform+gptq`` / ``dp+gptq`` repeat the bit budgets
with GPTQ-style calibrated rounding (a better quantizer, not an allocator; not in the ratios).

Timing: DP vs ``scipy.optimize.milp`` on one synthetic 100 layers x 50 levels instance (integer
costs), median of repeated runs each, in the same process one after the other, so machine load
affects both alike; the ratio is the figure to read.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: methods compared with uniform round-to-nearest / magnitude compression in the headline ratios
ALLOCATORS = ("dp", "ilp", "closed_form", "evopress")


def _spec(mode: str, calibration_images: int, rounding: str = "nearest") -> Any:
    from nasforge.core.spec import JobSpec

    space: dict[str, Any] = {"mode": mode, "calibration_images": calibration_images, "symmetric": False,
                             "rounding": rounding}
    if mode == "bits":
        space["bits"] = [2, 3, 4, 8]
    else:
        space["sparsities"] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    return JobSpec.model_validate({
        "name": f"bench-{mode}",
        "model": {"source": "examples.models.mnist_cnn:trained_mnist_cnn", "options": {"seed": 0, "epochs": 3}},
        "space": {"name": "compression", "options": space},
        "strategy": {"name": "dp"},
        "objectives": [{"metric": "kl", "direction": "minimize"}],
        "evaluation": {"dataset": {"name": "mnist5k", "seed": 0}, "split": "val", "batch_size": 512},
    })


class Scorer:
    """The real workload, with an evaluation cache and KL on a prefix of the calibration set."""

    def __init__(self, spec: Any, job_dir: Path):
        from nasforge.workers.compression_workload import CompressionWorkload

        CompressionWorkload.prepare(spec, job_dir, log=lambda m: None)
        self.w = CompressionWorkload(spec, job_dir)
        self.w.setup()
        self.space = self.w.space
        self.cache: dict[str, dict[str, float]] = {}
        self.evaluations = 0

    def full(self, arch: Any) -> dict[str, float]:
        from nasforge.compress.metrics import kl_divergence, logits_of

        key = arch.key()
        if key not in self.cache:
            m = self.w.evaluate(arch)
            m["kl_heldout"] = kl_divergence(self.w.ref_eval, logits_of(self.w.model, self.w.eval_X))
            self.cache[key] = m
            self.evaluations += 1
        return self.cache[key]

    def kl_prefix(self, arch: Any, samples: int) -> float:
        from nasforge.compress.metrics import kl_divergence, logits_of

        model = self.w.compressed_model(arch)
        n = min(samples, len(self.w.calib))
        return kl_divergence(self.w.ref_calib[:n], logits_of(model, self.w.calib[:n], 512))


def _drive_allocator(name: str, scorer: Scorer, constraint: Any) -> tuple[Any, float | None, int]:
    from nasforge.core.types import Direction, EvalResult, Objective
    from nasforge.search import STRATEGIES

    # reference: False: the evaluations counted are the allocator's own (probes + solution)
    s = STRATEGIES.get(name)(scorer.space, objectives=[Objective("kl", Direction.MINIMIZE)],
                             constraints=[constraint], seed=0, options={"reference": False})
    asked = 0
    while archs := s.ask(16):
        asked += len(archs)
        s.tell(archs, [EvalResult(a.key(), scorer.full(a)) for a in archs])
    predicted = None
    if name == "dp":
        D = s.distortion()
        base = s.values[s.probe_arch(-1, -1).key()]
        predicted = float(base + D[np.arange(len(s.solution)), s.solution].sum())
    return s.solution_arch(), predicted, asked


def _evopress(scorer: Scorer, constraint: Any, generations: int, selection: list[list[int]]) -> tuple[Any, int]:
    from nasforge.core.types import Direction, Objective
    from nasforge.search import STRATEGIES

    s = STRATEGIES.get("evopress")(scorer.space, objectives=[Objective("kl", Direction.MINIMIZE)],
                                   constraints=[constraint], seed=0, options={"selection": selection})
    count = {"n": 0}

    def fitness(idx: np.ndarray, samples: int) -> np.ndarray:
        count["n"] += len(idx)
        return np.array([scorer.kl_prefix(s.arch_of(i), samples) for i in idx])

    best, _ = s.optimize(fitness, generations=generations)
    return s.arch_of(best), count["n"]


def _row(method: str, kind: str, budget: float, scorer: Scorer, arch: Any, **extra: Any) -> dict[str, Any]:
    m = scorer.full(arch)
    return {"method": method, "budget": f"{kind}={budget:g}", "kl": m["kl"], "kl_heldout": m["kl_heldout"],
            "accuracy": m["accuracy"], "avg_bits": m["avg_bits"], "sparsity": m["sparsity"],
            "model_bytes": m["model_bytes"], **extra}


def dp_vs_milp(repeats: int) -> dict[str, Any]:
    from nasforge.search.allocators import solve_dp, solve_ilp

    rng = np.random.default_rng(0)
    G, K = 100, 50
    dist = np.sort(rng.uniform(0, 1, size=(G, K)), axis=1)[:, ::-1] * rng.uniform(0.1, 10, size=(G, 1))
    cost = np.sort(rng.integers(0, 40, size=(G, K)), axis=1)
    cap = float(cost.mean() * G * 0.5)
    t_dp, t_milp = [], []
    v_dp = v_milp = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, v_dp, exact = solve_dp(dist, cost, cap)
        t_dp.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _, v_milp = solve_ilp(dist, [cost], [cap])
        t_milp.append(time.perf_counter() - t0)
    return {"dp_seconds_100x50": float(np.median(t_dp)), "milp_seconds_100x50": float(np.median(t_milp)),
            "dp_seconds_100x50_min": float(np.min(t_dp)), "milp_seconds_100x50_min": float(np.min(t_milp)),
            "milp_over_dp_time_ratio": float(np.median(t_milp) / np.median(t_dp)),
            "dp_objective_100x50": v_dp, "milp_objective_100x50": v_milp,
            "same_optimum_100x50": bool(exact and abs(v_dp - v_milp) <= 1e-9 * max(1.0, abs(v_milp)))}


def run(quick: bool = False) -> dict[str, Any]:
    import torch

    from nasforge.core.types import Constraint

    torch.set_num_threads(1)
    os.environ.setdefault("NASFORGE_HOME", str(Path(".nasforge").resolve()))
    calib = 256 if quick else 1024
    generations = 8 if quick else 40
    selection = [[16, calib // 8], [4, calib // 2], [1, calib]]
    rows: list[dict[str, Any]] = []
    head: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # ---- pruning ----------------------------------------------------------------------
        sc = Scorer(_spec("sparsity", calib), Path(tmp) / "sparsity")
        for target in (0.5, 0.6, 0.7):
            c = Constraint("sparsity", ">=", target)
            uni = _row("uniform", "sparsity", target, sc, sc.space.uniform(sparsity=target))
            rows.append(uni)
            for name in ("dp", "ilp"):
                t0 = time.perf_counter()
                arch, predicted, asked = _drive_allocator(name, sc, c)
                rows.append(_row(name, "sparsity", target, sc, arch, evaluations=asked,
                                 seconds_incl_uncached_probes=time.perf_counter() - t0,
                                 dp_predicted_kl=predicted))
            rows.append({"method": "closed_form", "budget": f"sparsity={target:g}",
                         "note": "not applicable: the closed form allocates bits only"})
            t0 = time.perf_counter()
            arch, n = _evopress(sc, c, generations, selection)
            rows.append(_row("evopress", "sparsity", target, sc, arch, fitness_calls=n,
                             seconds=time.perf_counter() - t0))
        # ---- bits ---------------------------------------------------------------------------
        sb = Scorer(_spec("bits", calib), Path(tmp) / "bits")
        for target in (3, 4):
            c = Constraint("avg_bits", "<=", float(target))
            rows.append(_row("uniform", "avg_bits", target, sb, sb.space.uniform(bits=target)))
            for name in ("dp", "ilp", "closed_form"):
                t0 = time.perf_counter()
                arch, predicted, asked = _drive_allocator(name, sb, c)
                rows.append(_row(name, "avg_bits", target, sb, arch, evaluations=asked,
                                 seconds_incl_uncached_probes=time.perf_counter() - t0,
                                 dp_predicted_kl=predicted))
            t0 = time.perf_counter()
            arch, n = _evopress(sb, c, generations, selection)
            rows.append(_row("evopress", "avg_bits", target, sb, arch, fitness_calls=n,
                             seconds=time.perf_counter() - t0))
        # ---- the same with GPTQ-style calibrated rounding (another quantizer; not in the ratios) ----
        sg = Scorer(_spec("bits", calib, rounding="gptq"), Path(tmp) / "bits_gptq")
        for target in (3, 4):
            c = Constraint("avg_bits", "<=", float(target))
            rows.append(_row("uniform+gptq", "avg_bits", target, sg, sg.space.uniform(bits=target)))
            arch, predicted, asked = _drive_allocator("dp", sg, c)
            rows.append(_row("dp+gptq", "avg_bits", target, sg, arch, evaluations=asked, dp_predicted_kl=predicted))

    def ratio(budget: str) -> tuple[float, str]:
        here = [r for r in rows if r["budget"] == budget and "kl" in r]
        uni = next(r for r in here if r["method"] == "uniform")["kl"]
        best = min((r for r in here if r["method"] in ALLOCATORS), key=lambda r: r["kl"])
        return best["kl"] / uni, best["method"]

    head["kl_ratio_best_vs_uniform_sparsity60"], head["best_method_sparsity60"] = ratio("sparsity=0.6")
    head["kl_ratio_best_vs_uniform_bits3"], head["best_method_bits3"] = ratio("avg_bits=3")
    for key, b in (("sparsity50", "sparsity=0.5"), ("sparsity70", "sparsity=0.7"), ("bits4", "avg_bits=4")):
        head[f"kl_ratio_best_vs_uniform_{key}"] = ratio(b)[0]
    head.update(dp_vs_milp(3 if quick else 9))
    head["rows"] = rows
    head["notes"] = (
        "Model: trained MNIST CNN (examples/models/mnist_cnn.py), 7 Conv/Linear layers. kl: calibration KL "
        f"({calib} train images); kl_heldout / accuracy: 500 validation images. Allocators probe every "
        "layer at every level once (probes cached across budgets); EvoPress: "
        f"{generations} generations, selection {selection}. Timings run on a shared 2-core machine: "
        "DP and MILP alternate in one loop and medians are reported, so load affects both alike.")
    return head
