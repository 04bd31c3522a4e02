"""The quickstart job's SupernetWorkload on a fresh, untrained bignas supernet (for worker tests
that need a real child, not a trained one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from nasforge.core.spec import JobSpec
from nasforge.supernets import SUPERNETS
from nasforge.workers.supernet_workload import SupernetWorkload

QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart.yaml"


def quickstart_workload(folder: Path, **evaluation: Any) -> tuple[SupernetWorkload, Any]:
    """``(workload, space)``, set up: the quickstart job without training, its evaluation keys
    overridden by ``evaluation``, and its supernet freshly built and saved under ``folder`` (once:
    a second workload in the same folder uses the same weights)."""
    torch.set_num_threads(1)
    data = yaml.safe_load(QUICKSTART.read_text())
    data.pop("training", None)
    data["evaluation"].update(evaluation)
    checkpoint = Path(folder) / "model.safetensors"
    space = SupernetWorkload.build_space(JobSpec.model_validate({**data, "supernet": {"name": "bignas"}}))
    if not checkpoint.exists():
        net = SUPERNETS.get("bignas")(space, {})
        save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(checkpoint))
    spec = JobSpec.model_validate({**data, "supernet": {"name": "bignas", "checkpoint": str(checkpoint)}})
    wl = SupernetWorkload(spec, Path(folder))
    wl.setup()
    return wl, space
