"""``vit_mos`` part (c) with a shared warm start: do the K weight models rank better when they
begin from one supernet's features?

At equal steps each of the balanced mixture's K = 3 models sees about a third of the layout
updates, and its inherited accuracy stays about 3 points below the single supernet's (part (c),
``pooling_budget``, ``pooling_margin``); the ranking follows the accuracy down. Here the
``pooling_mixture`` trainer's ``shared_warmup_fraction`` trains weight model 0 on every layout for
the first 30% of training (the share the default spends exploring), then copies it (weights, BN
statistics, momentum) into all three models; from there each layout trains on its routed model.
Nothing is tuned: 0.3 is the exploration share it replaces and z = 2 the move margin fixed before
``pooling_margin`` ran.

Arms per seed (supernet seeds 0-2, part (c)'s; standalone seeds 0-2; 15 epochs for everything):
``balanced`` (the default: exploration, learned routing), ``single`` (K = 1), ``warm`` (shared
warm start, then learned routing with ``move_margin`` 2: right after the copy the models are
identical, so any loss difference is noise) and ``warm_fixed`` (shared warm start, the initial
random balanced routing kept).

Headline: ``balanced_tau`` / ``single_tau`` / ``pooling_warm_tau`` / ``pooling_warm_fixed_tau``
(Kendall tau-b of inherited vs standalone accuracy, mean over seeds), the loss taus and mean
inherited accuracies of each arm, and the standalone seeds' own tau.
"""

from __future__ import annotations

from typing import Any

from benchmarks._pooling_mixture import COLD, K_MIXTURE, SINGLE, run_part

SHARED_FRACTION = 0.3
MARGIN_Z = 2.0
EPOCHS = 15.0


def run(quick: bool = False, *, seeds: list[int] | None = None, with_fixed: bool = True) -> dict[str, Any]:
    """``seeds``: the supernet seeds (default part (c)'s 0-2); ``with_fixed``: also the warm_fixed arm."""
    balanced, single = ("balanced", *COLD[1:]), SINGLE
    warm = {"shared_warmup_fraction": SHARED_FRACTION, "explore_fraction": 0.0}
    arms = (balanced, single, ("warm", K_MIXTURE, {**warm, "move_margin": MARGIN_Z}))
    if with_fixed:
        arms += (("warm_fixed", K_MIXTURE, {**warm, "reassign_every": 0}),)
    if quick:
        out = run_part(quick=True, epochs=2.0, standalone_epochs=1.0, arms=arms)
    else:
        out = run_part(epochs=EPOCHS, standalone_epochs=EPOCHS, seeds=seeds or [0, 1, 2], arms=arms)
    out["notes"] = (f"Shared warm start: weight model 0 trains every layout for the first {SHARED_FRACTION:g} of "
                    "training, then is copied into all K models (warm: learned routing with move_margin "
                    f"{MARGIN_Z:g}; warm_fixed: initial random routing kept). " + out["notes"])
    return out
