"""``vit_mos`` part (a) trained three times longer: does the median child's loss close?

Part (a) (``benchmarks/_vit_sampling.py``) trains every arm single-path for 10 epochs (620
steps). There ElasticViT's sampler gains at the smallest child and loses at the median one
(-4.1 points on seeds 0-2 at cff2170). The sampler spreads the steps evenly over log-FLOPs
buckets, while uniform sampling puts most of them near the median FLOPs, where the median child
lies; so at a short budget part of that loss may be the steps themselves, moved from the middle
to the ends. This runs the same comparison (same supernet, data, children, panel and band pools,
equal steps for every arm) for 30 epochs (1,860 steps): if the loss is the short budget's, it
shrinks here; if it is the sampler's, it stays.

Arms: ``uniform`` (the baseline), ``performance`` (complexity- + performance-aware, the job
defaults) and ``complexity`` (the ablation without the estimate). Headline: the same keys as
``vit_mos`` part (a) (``sampling_gain_{smallest,median,largest}_points``: performance vs uniform,
percentage points, mean over seeds; ``complexity_only_gain_*``), plus ``vit_sampling_epochs``.
``VIT_SAMPLING_SEEDS=0,1`` picks seeds (default 0-5; 3-5 are also reported apart as *_heldout).
"""

from __future__ import annotations

import os
from typing import Any

from benchmarks._vit_sampling import run_one_thread

ARMS = ["uniform", "performance", "complexity"]
EPOCHS = 30.0
SEEDS = [0, 1, 2, 3, 4, 5]


def run(quick: bool = False) -> dict[str, Any]:
    seeds = None if quick or os.environ.get("VIT_SAMPLING_SEEDS") else SEEDS
    result = run_one_thread(quick, sampling="uniform", arms=ARMS, seeds=seeds, epochs=EPOCHS)
    return {"vit_sampling_epochs": 2.0 if quick else EPOCHS, **result}
