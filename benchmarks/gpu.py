"""The checks that need a GPU, in one run for a machine lent with one (``python -m benchmarks gpu``).

1. Latency predictor on the GPU (issue "Accuracy and latency predictors", figure 2 on the GPU):
   quickstart-space children (fresh weights: latency does not depend on the values) timed on CUDA
   the way the Oracle times them (CUDA events, min of 10 calls per pass normalised by the largest
   child timed just before, median over interleaved passes); a per-op table from
   ``profile_device(device="cuda")`` times a ridge correction fitted on ``TRAIN`` children; headline
   ``latency_within_10pct_gpu`` = share of ``TEST`` held-out children predicted within +-10%, beside
   ``latency_remeasure_within_10pct_gpu`` (even vs odd passes of the same children: the ceiling).
2. Supernet training where the workers evaluate: one epoch of the quickstart supernet trained by
   ``SupernetWorkload.prepare`` with ``workers.gpus`` 0 (CPU) and 0.5 (CUDA), same seed;
   ``train_speedup_gpu_vs_cpu`` = CPU seconds / GPU seconds.
3. Peak memory (``peak_memory_mb``): for ``MEMORY_CHILDREN`` quickstart-space children at batch
   32 on the GPU, the activation peak by the CUDA allocator's counter (what GPU workers report)
   over the peak by the op tracker (what CPU workers report), ``memory_allocator_over_tracker_*``:
   near 1 when the tracker sees what the pass really allocates (the allocator also rounds blocks
   up and holds kernel workspaces, so somewhat above 1).
4. A job on GPU workers: the GPU-trained supernet searched by ``run_job`` with two Ray workers of
   half a GPU each (``evaluation.latency`` on CUDA), ``JOB_EVALS`` candidates; every candidate must
   succeed with a CUDA device profile (``gpu_job_failed`` = 0, ``gpu_worker_device``).

``--quick`` runs the same code on the CPU with small counts when there is no GPU (a check of the
script, not a figure); without ``--quick`` a machine without CUDA is refused. Parts 1 and 2 need
torch, pydantic, PyYAML, scikit-learn and mlxtend only; part 3 needs Ray, SQLAlchemy (and the rest
of nasforge's dependencies) and is skipped, saying so, where Ray cannot be imported (a lent GPU
machine without them). ``scripts/gpu-wheels.sh`` downloads the wheels parts 1 and 2 need on such a
machine and says how to run this there.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

TRAIN, TEST, ROUNDS = 150, 100, 4
MEMORY_CHILDREN = 24
JOB_EVALS = 48


def _spec(gpus: float, evaluations: int, checkpoint: str | None = None) -> Any:
    import yaml

    from nasforge.core.spec import JobSpec

    data = yaml.safe_load((Path(__file__).resolve().parent.parent / "examples" / "quickstart.yaml").read_text())
    data["name"] = "gpu-check"
    data["training"]["epochs"] = 1
    data["budget"] = {"evaluations": evaluations, "batch_size": 24}
    data["workers"] = {"count": 2, "cpus": 1, "gpus": gpus}
    data["tracking"] = {"enabled": False}
    if checkpoint is not None:
        data["supernet"]["checkpoint"] = checkpoint
        data.pop("training")
    return JobSpec.model_validate(data)


def run(quick: bool = False) -> dict[str, Any]:
    import torch

    from benchmarks.predictors import other_space_latency
    from nasforge.workers.supernet_workload import SupernetWorkload

    cuda = torch.cuda.is_available()
    if not cuda and not quick:
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU (python -m benchmarks gpu --quick checks the script on CPU)")
    device = "cuda" if cuda else "cpu"
    gpus = 0.5 if cuda else 0.0
    n_train, n_test, rounds = (TRAIN, TEST, ROUNDS) if not quick else (24, 12, 2)
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if cuda else "cpu (--quick without a GPU)"}

    t0 = time.perf_counter()
    lat = other_space_latency("bignas_cnn", {"preset": "mnist"}, "bignas", n_train=n_train, n_test=n_test,
                              rounds=rounds, device=device)
    out["latency_within_10pct_gpu"] = lat["within_10pct"]
    out["latency_remeasure_within_10pct_gpu"] = lat["remeasure_within_10pct"]
    out["latency_lut_sum_kendall_tau_gpu"] = lat["lut_sum_kendall_tau"]
    out["latency_part_s"] = time.perf_counter() - t0
    out |= _memory_part(device, 8 if quick else MEMORY_CHILDREN)

    with tempfile.TemporaryDirectory(prefix="nasforge-gpu-") as tmp:
        root = Path(tmp)
        trained: dict[str, dict[str, float]] = {}
        for name, g in (("cpu", 0.0), (device, gpus)):
            if name in trained:  # --quick on a CPU machine: one arm
                continue
            trained[name] = SupernetWorkload.prepare(_spec(g, JOB_EVALS), root / f"train-{name}", log=lambda s: None)
        out["train_s_cpu"] = trained["cpu"]["train_seconds"]
        out["train_s_gpu"] = trained[device]["train_seconds"]
        out["train_speedup_gpu_vs_cpu"] = out["train_s_cpu"] / out["train_s_gpu"]
        out["largest_val_acc_cpu"] = trained["cpu"]["largest_val_acc"]
        out["largest_val_acc_gpu"] = trained[device]["largest_val_acc"]

        try:
            import ray  # noqa: F401

            from nasforge.compose import run_job
            from nasforge.store import open_store
        except ImportError as e:
            out["gpu_job"] = f"skipped: {e}"
            return _finish(out, lat, device, n_train, n_test, rounds)
        import os

        home_before = os.environ.get("NASFORGE_HOME")
        os.environ["NASFORGE_HOME"] = str(root / "home")
        spec = _spec(gpus, JOB_EVALS if not quick else 12, checkpoint=str(root / f"train-{device}" / "supernet"))
        store = open_store(f"sqlite:///{root / 'store.db'}")
        t0 = time.perf_counter()
        try:
            result = run_job(spec, store, say=lambda s: None)
        finally:
            if home_before is None:
                os.environ.pop("NASFORGE_HOME", None)
            else:
                os.environ["NASFORGE_HOME"] = home_before
        out["gpu_job_s"] = time.perf_counter() - t0
        cands = store.get_candidates(result.job.id)
        done = [c for c in cands if c.status.value == "done"]
        out["gpu_job_done"] = len(done)
        out["gpu_job_failed"] = sum(c.status.value == "failed" for c in cands)
        devices = sorted({str((c.device or {}).get("name")) for c in done})
        out["gpu_worker_device"] = ", ".join(devices)
        out["gpu_worker_kind"] = ", ".join(sorted({str((c.device or {}).get("kind")) for c in done}))
        out["gpu_job_best_accuracy"] = max((c.metrics.get("accuracy", 0.0) for c in done), default=0.0)
        store.close()
    return _finish(out, lat, device, n_train, n_test, rounds)


def _memory_part(device: str, n: int) -> dict[str, Any]:
    """Peak memory of ``n`` quickstart-space children at batch 32: the CUDA allocator's counter
    against the op tracker (what CPU workers report) on the same device and input."""
    import numpy as np
    import torch

    from nasforge.spaces import SPACES
    from nasforge.supernets import SUPERNETS
    from nasforge.workers.memory import measure_peak_memory

    space = SPACES.get("bignas_cnn")({"preset": "mnist"})
    net = SUPERNETS.get("bignas")(space, {})
    rng = np.random.default_rng(0)
    archs = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(n - 2)]
    ratios = []
    x = torch.randn(32, 1, 28, 28, device=device)
    for arch in archs:
        child = net.extract(arch).to(device).eval()
        tracked = measure_peak_memory(child, x, method="tracker")["activation_peak_mb"]
        counted = measure_peak_memory(child, x)["activation_peak_mb"]
        ratios.append(counted / tracked)
    return {"memory_allocator_over_tracker_median": float(np.median(ratios)),
            "memory_allocator_over_tracker_max": float(np.max(ratios)), "memory_children": len(archs)}


def _finish(out: dict[str, Any], lat: dict[str, Any], device: str, n_train: int, n_test: int,
            rounds: int) -> dict[str, Any]:
    out["rows"] = [{"part": "latency", **{k: v for k, v in lat.items() if not isinstance(v, dict)}}]
    out["seeds"] = [0, 7]
    out["notes"] = (f"Latency: bignas_cnn (mnist preset) children, {n_train} to fit the correction, {n_test} held "
                    f"out, {rounds} interleaved passes on {device}. Training: one epoch of the quickstart supernet "
                    "(seed 0) with workers.gpus 0 and 0.5. Job: two Ray workers of 0.5 GPU each on the GPU-trained "
                    "checkpoint, latency timed on their device.")
    return out
