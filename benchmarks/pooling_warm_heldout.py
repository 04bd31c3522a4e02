"""``pooling_warm`` on held-out supernet seeds 3-5: the shared warm start against the default
balanced mixture and the single supernet, on seeds that played no part when the warm start was
built and first measured (``pooling_warm`` used part (c)'s seeds 0-2). Same configuration:
shared share 0.3, move margin 2, 15 epochs, standalone seeds 0-2. The ``warm_fixed`` arm is left
out: on seeds 0-2 the margin kept every layout where it started, so it equalled ``warm``.

Headline keys as ``pooling_warm``'s.
"""

from __future__ import annotations

from typing import Any

from benchmarks.pooling_warm import run as run_warm

HELD_OUT_SEEDS = [3, 4, 5]


def run(quick: bool = False) -> dict[str, Any]:
    out = run_warm(quick, seeds=HELD_OUT_SEEDS, with_fixed=False)
    out["notes"] = f"Held-out supernet seeds {HELD_OUT_SEEDS}. " + out["notes"]
    return out
