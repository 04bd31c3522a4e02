"""``vit_sampling_long`` once more at twice its length: does the median child's loss keep closing?

Seeds 0-2, part (a) of ``vit_mos`` (``benchmarks/_vit_sampling.py``: single-path training, the same
supernet, data, children, panel and band pools, equal steps for both arms), 60 epochs (3,720
steps), two arms: ``uniform`` and ``performance`` (ElasticViT's sampler with the job defaults).
On these seeds the median child's gain was -4.1 points at 10 epochs (``vit_mos``) and -1.5 at 30
(``vit_sampling_long``). Headline: ``sampling_gain_{smallest,median,largest,panel_mean}_points``
(performance vs uniform, percentage points, mean over seeds) and ``vit_sampling_epochs``.
"""

from __future__ import annotations

from typing import Any

from benchmarks._vit_sampling import run_one_thread

ARMS = ["uniform", "performance"]
EPOCHS = 60.0
SEEDS = [0, 1, 2]


def run(quick: bool = False) -> dict[str, Any]:
    result = run_one_thread(quick, sampling="uniform", arms=ARMS, seeds=None if quick else SEEDS, epochs=EPOCHS)
    return {"vit_sampling_epochs": 2.0 if quick else EPOCHS, **result}
