"""``vit_mos`` part (a) under the sandwich rule: ElasticViT's sampling vs uniform sampling.

Part (a) of ``vit_mos`` trains single-path (one child per step), so that the sampler alone decides
what is trained. ElasticViT itself trains with the sandwich rule (the largest child, the smallest,
and two children from its sampler at every step, the others distilled from the largest), and so
does ``examples/elastic_vit.yaml``. This runs the same comparison (``benchmarks/_vit_sampling.py``:
same supernet, data, children, panel and band pools, equal steps) in that recipe: every arm trains
the largest and the smallest at every step, and the arms differ only in how the two other children
are drawn (``uniform``; ``performance``: complexity- + performance-aware with the job's default
options, ``exploit: 0.5``; ``complexity``: the ablation without the estimate). At 33b0156, when
the default was the greedy ``exploit: 1``, the same run gave smallest -0.1, median -8.7 and
largest +0.7 points.

Headline: ``sampling_gain_{smallest,median,largest}_points`` (performance vs uniform, percentage
points, mean over seeds), the same keys as ``vit_mos`` part (a), plus the panel and best-per-band
gains and ``complexity_only_gain_*``. ``VIT_SAMPLING_SEEDS=0,1`` picks seeds (default 0,1,2).
"""

from __future__ import annotations

from typing import Any

from benchmarks._vit_sampling import run_one_thread

ARMS = ["uniform", "performance", "complexity"]


def run(quick: bool = False) -> dict[str, Any]:
    return run_one_thread(quick, sampling="sandwich", arms=ARMS)
