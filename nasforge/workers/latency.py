"""Real latency measurement: warm-up, then repeated timed forward passes.

CPU: ``time.perf_counter`` around each call, with the torch thread count set explicitly (a reused
Ray worker keeps whatever the last task set, so we always set it and record it).
GPU: CUDA events around each call, synchronised, so host overhead is not counted as device time.

A shared VM slows down for seconds at a time, and every model by about the same factor.
``ReferenceTimer`` times a fixed reference model right before each measured model and rescales
the measurement by ``baseline / reference now``: the figure a model would show in the
reference's baseline conditions. Here (benchmarks/predictors) that took the share of children
whose two independent re-measurements agree within 10% from about half to about 90% in a noisy
hour. ``time_interleaved`` times many models that way: in rounds, each round over all of them
in a fresh random order, so a slow spell shifts one round of every model, not all rounds of a few.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_profile(device: torch.device, *, threads: int, batch_size: int, dtype: torch.dtype,
                   statistic: str = "median", reference: bool = False) -> dict[str, Any]:
    """What a latency figure was measured on; ``id`` is a stable hash used as the cache key.

    ``statistic`` (what ``latency_ms`` reports, see ``measure_latency``) enters the id only when it
    is not the default median, so a min-of-repeats figure is never served from a median cache;
    likewise ``reference`` (figures normalised by a ``ReferenceTimer``)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        kind = "gpu"
    else:
        name = cpu_model_name()
        kind = "cpu"
    profile: dict[str, Any] = {
        "kind": kind,
        "name": name,
        "torch": torch.__version__,
        "threads": threads,
        "batch_size": batch_size,
        "dtype": str(dtype).removeprefix("torch."),
        "host_cpus": os.cpu_count(),
    }
    ident = {k: profile[k] for k in ("kind", "name", "torch", "threads", "batch_size", "dtype")}
    if statistic != "median":
        profile["statistic"] = ident["statistic"] = statistic
    if reference:
        profile["reference"] = ident["reference"] = True
    profile["id"] = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return profile


#: a timing whose median call took more than this many times its fastest call was disturbed by
#: other load on the machine (undisturbed CPU and GPU timings of one model stay well within 2x)
DISTURBED_SPREAD = 2.0


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    warmup: int = 5,
    repeats: int = 20,
    threads: int | None = 1,
    statistic: str = "median",
    retries: int = 0,
    pause_s: float = 0.1,
) -> dict[str, float]:
    """Latency (ms) of ``model(example_input)`` on the input's device over ``repeats`` timed calls.

    ``threads`` sets ``torch.set_num_threads`` for the measurement (CPU); ``None`` leaves it.
    ``statistic`` picks what ``latency_ms`` reports: ``median`` (the typical call) or ``min`` (the
    uncontended call: on a shared VM, where neighbours slow whole seconds down, the minimum of 10
    calls reproduces within 10% far more often than their median; see benchmarks/predictors).
    Also returns ``latency_median_ms``, ``latency_min_ms``, ``latency_p90_ms``, ``latency_mean_ms``,
    ``latency_cv`` (std/mean of the repeats) and ``latency_threads``.

    With ``statistic`` median, a timing whose median exceeds ``DISTURBED_SPREAD`` times its fastest
    call was disturbed (other processes took the cores meanwhile); it is repeated up to ``retries``
    times, ``pause_s`` * attempt seconds later each, and the attempt with the lowest median is
    reported. ``latency_attempts`` counts the timings made; ``latency_disturbed`` is 1.0 when even
    the reported one was disturbed. With ``min`` a timing is taken once and never flagged: the
    fastest call already reads through such load.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    if statistic not in ("median", "min"):
        raise ValueError(f"statistic must be median or min, got {statistic!r}")
    if retries < 0:
        raise ValueError("retries must be >= 0")
    if threads is not None:
        torch.set_num_threads(int(threads))
    model.eval()
    best: np.ndarray | None = None
    attempts = 0
    while True:
        arr = _timed_calls(model, example_input, warmup=warmup, repeats=repeats)
        attempts += 1
        if best is None or np.median(arr) < np.median(best):
            best = arr
        disturbed = statistic == "median" and bool(np.median(best) > DISTURBED_SPREAD * best.min())
        if not disturbed or attempts > retries:
            break
        time.sleep(pause_s * attempts)
    mean = float(best.mean())
    median = float(np.median(best))
    return {
        "latency_ms": median if statistic == "median" else float(best.min()),
        "latency_median_ms": median,
        "latency_min_ms": float(best.min()),
        "latency_p90_ms": float(np.percentile(best, 90)),
        "latency_mean_ms": mean,
        "latency_cv": float(best.std() / mean) if mean > 0 else 0.0,
        "latency_threads": float(torch.get_num_threads()),
        "latency_attempts": float(attempts),
        "latency_disturbed": float(disturbed),
    }


def _timed_calls(model: nn.Module, example_input: torch.Tensor, *, warmup: int, repeats: int) -> np.ndarray:
    """``warmup`` untimed then ``repeats`` timed calls; milliseconds per timed call."""
    device = example_input.device
    times: list[float] = []
    if device.type == "cuda":
        for _ in range(warmup):
            model(example_input)
        torch.cuda.synchronize(device)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        for s, e in zip(starts, ends, strict=True):
            s.record()
            model(example_input)
            e.record()
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)]
    else:
        for _ in range(warmup):
            model(example_input)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(example_input)
            times.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(times, dtype=np.float64)


class ReferenceTimer:
    """Latency normalised by a reference model timed just before each measurement.

    ``calibrate()`` sets ``baseline_ms``, the reference's median over ``rounds`` timings (each
    ``statistic`` of ``repeats`` calls). ``measure(model, x)`` times the reference, then the model,
    and returns ``measure_latency``'s dict with every ``latency*_ms`` value multiplied by
    ``baseline_ms / reference_now_ms``, plus ``latency_raw_ms`` (unscaled) and
    ``latency_reference_scale``. Reference and measured models must run on the same device.
    """

    def __init__(self, reference: nn.Module, example_input: torch.Tensor, *, warmup: int = 3, repeats: int = 10,
                 threads: int | None = 1, statistic: str = "min", retries: int = 0):
        self.reference, self.example_input = reference, example_input
        self.kw: dict[str, Any] = {"warmup": warmup, "repeats": repeats, "threads": threads, "statistic": statistic,
                                   "retries": retries}
        self.baseline_ms: float | None = None

    def reference_ms(self) -> float:
        return measure_latency(self.reference, self.example_input, **self.kw)["latency_ms"]

    def calibrate(self, rounds: int = 7) -> float:
        self.baseline_ms = float(np.median([self.reference_ms() for _ in range(max(1, rounds))]))
        return self.baseline_ms

    def measure(self, model: nn.Module, example_input: torch.Tensor) -> dict[str, float]:
        if self.baseline_ms is None:
            self.calibrate()
        assert self.baseline_ms is not None
        scale = self.baseline_ms / max(self.reference_ms(), 1e-9)
        out = measure_latency(model, example_input, **self.kw)
        raw = out["latency_ms"]
        out = {k: (v * scale if k.endswith("_ms") else v) for k, v in out.items()}
        out["latency_raw_ms"] = raw
        out["latency_reference_scale"] = scale
        return out


def time_interleaved(
    models: Sequence[nn.Module],
    inputs: Sequence[torch.Tensor],
    measure: Callable[[nn.Module, torch.Tensor], dict[str, float]],
    *,
    rounds: int,
    rng: np.random.Generator,
    after_round: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Time every ``models[i]`` on ``inputs[i]`` once per round, ``rounds`` rounds, each in a
    fresh order drawn from ``rng``. ``measure`` is ``measure_latency`` with its settings bound, or a
    ``ReferenceTimer``'s ``measure``. Returns every value ``measure`` reports as a (rounds, n)
    array under its key (e.g. ``latency_ms``), or nothing when ``models`` is empty; ``after_round(r)``
    is called after round r (0-based)."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    if len(models) != len(inputs):
        raise ValueError(f"{len(models)} models but {len(inputs)} inputs")
    out: dict[str, np.ndarray] = {}
    for r in range(rounds):
        for i in rng.permutation(len(models)):
            for k, v in measure(models[i], inputs[i]).items():
                if k not in out:
                    out[k] = np.full((rounds, len(models)), np.nan)
                out[k][r, i] = v
        if after_round is not None:
            after_round(r)
    return out
