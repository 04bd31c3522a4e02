"""Issue 6 (c), the pooling mixture: which layouts share a weight model when the shared warm start ends.

With the trainer's defaults (a shared warm start for 0.3 of training, then learned routing with a
move margin of 2), ``vit_mos`` part (c) found that no layout ever moved after the copy: the K
models start as copies, each layout's loss is the same on all of them, and from then on a layout's
own model fits it best, so the seeded random grouping is what the mixture keeps. This benchmark
measures the other way to choose the grouping at that point, ``split: gradient``: layouts whose
loss gradients on the shared model point the same way share a model (after few-shot NAS by
gradient matching, Hu et al., 2022), so the layouts that pull the shared weights apart are the
ones that get separate weights.

Arms (15 epochs, the same recipe and steps as ``vit_mos`` part (c)): ``balanced`` (the trainer's
defaults, random grouping), ``gradient`` (the same with ``split: gradient``), ``single`` (K = 1).
Supernet seeds 0-5 (``pooling_gradient_*_heldout``: seeds 3-5 alone). Decided before the run:
``split: gradient`` becomes the default only if its mean accuracy tau and its mean loss tau over
the six seeds both exceed the balanced arm's.

Headline keys: ``balanced_tau``, ``pooling_gradient_tau``, ``single_tau`` (Kendall tau-b between
inherited and standalone test accuracy), their ``*_tau_loss`` (test loss) and ``*_mean_acc``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks._pooling_mixture import K_MIXTURE, SHIPPED, SINGLE, run_part

SEEDS = [0, 1, 2, 3, 4, 5]
EPOCHS = 15.0


def run(quick: bool = False) -> dict[str, Any]:
    # as run at 258cbdf, when random was the default split (gradient is since)
    arms = (("balanced", K_MIXTURE, {**SHIPPED, "split": "random"}),
            ("gradient", K_MIXTURE, {**SHIPPED, "split": "gradient"}), SINGLE)
    if quick:
        out = run_part(quick=True, epochs=2.0, standalone_epochs=1.0, seeds=[0], arms=arms)
    else:
        out = run_part(epochs=EPOCHS, standalone_epochs=EPOCHS, seeds=SEEDS, arms=arms)
    per_seed = out["pooling_per_seed"]
    for label, _, _ in arms:
        rows = [r for r in per_seed if r["supernet"] == label and r["seed"] >= 3]
        if rows:
            prefix = f"{label}" if label in ("balanced", "single") else f"pooling_{label}"
            out[f"{prefix}_tau_heldout"] = float(np.mean([r["tau_acc"] for r in rows]))
            out[f"{prefix}_tau_loss_heldout"] = float(np.mean([r["tau_loss"] for r in rows]))
    out["notes"] = ("Which layouts share a model after the shared warm start: balanced keeps the seeded random "
                    "grouping (the default), gradient groups layouts by the cosine similarity of their loss "
                    "gradients on the shared model (probe images, swaps to a local optimum of the within-group "
                    "similarity). *_heldout: supernet seeds 3-5 alone. " + out["notes"])
    return out
