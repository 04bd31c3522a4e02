"""Per-operation latency profiling on this device: the data of a latency lookup table.

``profile_device(space, out=...)`` times every distinct op descriptor of ``space``
(``space.ops(arch)`` entries, found by ``nasforge.predictors.latency.distinct_ops``) as a
standalone module built by the space's op builder, and writes a JSON table keyed by the device
profile id (``nasforge.workers.latency.device_profile``). ``LatencyLUT.load`` reads it.

Measuring through noise (a shared VM's timings move +-30% from minute to minute): the ops are
timed in ``rounds`` interleaved passes, each pass over all ops in a fresh random order, each op
``warmup`` untimed calls then ``repeats`` timed calls (``measure_latency``: median of the
repeats). An op's latency is the median of its per-round medians, so a slow minute shifts one
round of every op rather than all rounds of a few ops. The spread seen is stored per op
(p10/p90 of the round medians) and summarised in the file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from nasforge.core.registry import import_object
from nasforge.predictors.latency import LUT_FORMAT, LUT_VERSION, LatencyTableError, distinct_ops, op_key
from nasforge.spaces.base import SearchSpace

#: space id -> "module:function" building one op descriptor as an nn.Module
OP_BUILDERS: dict[str, str] = {
    "bignas_cnn": "nasforge.supernets.bignas:build_op",
    "elastic_vit": "nasforge.supernets.elastic_vit:build_op",
    "pooling_layout": "nasforge.supernets.pooling_mixture:build_op",
    "lm_transformer": "nasforge.supernets.lm_transformer:build_op",
}


def op_input_shape(desc: dict[str, Any], batch_size: int) -> tuple[int, ...]:
    """Shape of the input an op descriptor's module takes, by its ``layout``: image tokens
    (N, input_hw**2, C), a sequence (N, seq, C), token ids (N, seq), or by default a map (N, C, H, W)."""
    layout = desc.get("layout")
    if layout == "ids":
        return (batch_size, int(desc["seq"]))
    if layout == "sequence":
        return (batch_size, int(desc["seq"]), int(desc["cin"]))
    hw, cin = int(desc["input_hw"]), int(desc["cin"])
    if layout == "tokens":
        return (batch_size, hw * hw, cin)
    return (batch_size, cin, hw, hw)


def op_input(desc: dict[str, Any], batch_size: int, generator: Any) -> Any:
    """A random input for an op descriptor's module: int64 ids below ``vocab`` for layout ``ids``,
    else standard normal features of ``op_input_shape``."""
    import torch

    shape = op_input_shape(desc, batch_size)
    if desc.get("layout") == "ids":
        return torch.randint(0, int(desc["vocab"]), shape, generator=generator)
    return torch.randn(*shape, generator=generator)


def op_builder(space: SearchSpace) -> Callable[[dict[str, Any]], Any]:
    if space.id not in OP_BUILDERS:
        raise LatencyTableError(
            f"no op builder for space {space.id!r}: a latency table can be built for {sorted(OP_BUILDERS)}"
        )
    return import_object(OP_BUILDERS[space.id])  # type: ignore[no-any-return]


def profile_device(
    space: SearchSpace,
    *,
    out: Path,
    warmup: int = 3,
    repeats: int = 10,
    threads: int = 1,
    batch_size: int = 1,
    rounds: int = 5,
    device: str = "cpu",
    seed: int = 0,
    statistic: str = "median",
    reference: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Time every distinct op of ``space`` on ``device``; write the table to ``out`` (JSON); return ``out``.

    In: a space with ``ops(arch)`` and an entry in ``OP_BUILDERS``; ``threads`` torch threads;
    inputs of ``batch_size`` images. Out: a file with ``format``, ``version``, ``space``
    (``space.describe()``), ``device`` (profile incl. ``id``), ``settings``, ``spread`` and
    ``ops`` (one row per op: ``key``, ``op``, ``latency_ms`` = median of round medians,
    ``p10_ms``/``p90_ms`` of the round medians). Raises LatencyTableError for a space it cannot
    profile; ValueError for non-positive counts. ``statistic`` (median or min of the repeats,
    see ``measure_latency``) is what each round records; match it to how the end-to-end
    latencies a correction is fitted to were measured. ``reference``: normalise every timing by
    the slowest op timed just before it (``ReferenceTimer``), which cancels the machine's slow
    spells; the table then holds latencies in the reference's baseline conditions.
    """
    import torch

    from nasforge.workers.latency import ReferenceTimer, device_profile, measure_latency, time_interleaved

    if min(repeats, rounds, threads, batch_size) < 1 or warmup < 0:
        raise ValueError("repeats, rounds, threads and batch_size must be >= 1 and warmup >= 0")
    if statistic not in ("median", "min"):
        raise ValueError(f"statistic must be median or min, got {statistic!r}")
    build = op_builder(space)
    dev = torch.device(device)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    descs = distinct_ops(space, seed=seed)
    g = torch.Generator().manual_seed(seed)
    modules, inputs = [], []
    with torch.no_grad():
        for d in descs:
            modules.append(build(d).to(dev).eval())
            inputs.append(op_input(d, batch_size, g).to(dev))
    if log:
        log(f"profiling {len(descs)} ops of {space.id} on {device}: {rounds} rounds x {repeats} repeats")
    timer = None
    if reference:
        first = [measure_latency(m, x, warmup=warmup, repeats=repeats, threads=threads, statistic=statistic)["latency_ms"]
                 for m, x in zip(modules, inputs, strict=True)]
        ref = int(np.argmax(first))
        timer = ReferenceTimer(modules[ref], inputs[ref], warmup=warmup, repeats=repeats, threads=threads,
                               statistic=statistic)
        timer.calibrate()
    if timer is not None:
        measure: Callable[[Any, Any], dict[str, float]] = timer.measure
    else:
        measure = partial(measure_latency, warmup=warmup, repeats=repeats, threads=threads, statistic=statistic)

    def done(r: int) -> None:
        if log:
            log(f"round {r + 1}/{rounds} done ({time.perf_counter() - t0:.1f} s)")

    per_round = time_interleaved(modules, inputs, measure, rounds=rounds, rng=np.random.default_rng(seed),
                                 after_round=done)["latency_ms"]
    med = np.median(per_round, axis=0)
    p10, p90 = np.percentile(per_round, 10, axis=0), np.percentile(per_round, 90, axis=0)
    rel_spread = (p90 - p10) / np.maximum(med, 1e-9)
    profile = device_profile(dev, threads=threads, batch_size=batch_size, dtype=torch.float32, statistic=statistic,
                             reference=reference)
    data = {
        "format": LUT_FORMAT,
        "version": LUT_VERSION,
        "space": space.describe(),
        "device": profile,
        "settings": {"warmup": warmup, "repeats": repeats, "rounds": rounds, "threads": threads,
                     "batch_size": batch_size, "seed": seed, "statistic": statistic,
                     "reference": None if timer is None else {"op": op_key(descs[ref]), "baseline_ms": timer.baseline_ms}},
        "spread": {"median_rel_p10_p90": float(np.median(rel_spread)),
                   "max_rel_p10_p90": float(rel_spread.max()),
                   "round_total_ms": [float(x) for x in per_round.sum(axis=1)]},
        "profile_s": time.perf_counter() - t0,
        "ops": [{"key": op_key(d), "op": d, "latency_ms": float(med[i]), "p10_ms": float(p10[i]),
                 "p90_ms": float(p90[i])} for i, d in enumerate(descs)],
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(out)
    return out
