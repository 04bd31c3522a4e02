"""Two jobs on one machine: supernet training time with torch's OpenMP threads spinning vs sleeping.

Each arm runs the real CLI (``python -m nasforge.cli submit``) on the quickstart job cut to one training
epoch and a 2-candidate search, in a fresh NASFORGE_HOME, and reads the epoch time the trainer reports
(``train_seconds``, the training loop only: no Ray start, no evaluation). Arms:

- ``spin``: what nasforge did before ``quiet_omp_threads`` (OMP_WAIT_POLICY unset: libgomp's threads
  spin between parallel regions); the CLI is started with that function disabled.
- ``passive``: the CLI as shipped (OMP_WAIT_POLICY=PASSIVE unless the user set it).

Each arm alone, then two copies at once (started together). Rounds interleave the arms and alternate
their order. Torch uses every core for training by default (``training.options.threads`` unset).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = {
    "passive": "import sys; from nasforge import cli; sys.exit(cli.main(sys.argv[1:]))",
    "spin": "import sys; from nasforge import cli; cli.quiet_omp_threads = lambda: None; sys.exit(cli.main(sys.argv[1:]))",
}


def _job(folder: Path, epochs: float) -> Path:
    spec = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    spec["name"] = "concurrent"
    spec["training"]["epochs"] = epochs
    spec["budget"] = {"evaluations": 2, "batch_size": 2}
    spec["strategy"] = {"name": "random", "options": {}}
    spec["evaluation"]["max_images"] = 200
    spec["evaluation"]["bn_recalibration_images"] = 64
    spec["evaluation"]["latency"] = {"batch_size": 1, "warmup": 1, "repeats": 3, "threads": 1}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _start(arm: str, job: Path, home: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(NASFORGE_HOME=str(home), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", LAUNCH[arm], "submit", str(job), "--quiet", "--json"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _train_seconds(proc: subprocess.Popen[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    out, _ = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"job failed ({proc.returncode}): {out[-2000:]}")
    found = re.findall(r"train_seconds=([0-9.]+)", out)
    if not found:
        raise RuntimeError(f"no train_seconds in the output: {out[-2000:]}")
    return float(found[-1]), time.perf_counter() - t0


def run(quick: bool = False) -> dict[str, Any]:
    rounds = 1 if quick else 2
    epochs = 0.3 if quick else 1.0
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nasforge-concurrent-") as tmp:
        folder = Path(tmp)
        job = _job(folder, epochs)
        n = 0
        for r in range(rounds):
            arms = ["spin", "passive"] if r % 2 == 0 else ["passive", "spin"]
            for mode in ("alone", "two at once"):
                for arm in arms:
                    copies = 1 if mode == "alone" else 2
                    procs = []
                    for _ in range(copies):
                        n += 1
                        procs.append(_start(arm, job, folder / f"home{n}"))
                    for i, p in enumerate(procs):
                        train_s, _ = _train_seconds(p)
                        rows.append({"round": r, "mode": mode, "arm": arm, "copy": i, "train_seconds": train_s})
                        print(rows[-1], flush=True)

    def med(mode: str, arm: str) -> float:
        return median(x["train_seconds"] for x in rows if x["mode"] == mode and x["arm"] == arm)

    spin_alone, passive_alone = med("alone", "spin"), med("alone", "passive")
    spin_two, passive_two = med("two at once", "spin"), med("two at once", "passive")
    return {
        "two_jobs_train_ratio_spin_vs_passive": spin_two / passive_two,
        "alone_train_ratio_passive_vs_spin": passive_alone / spin_alone,
        "two_jobs_slowdown_spin": spin_two / spin_alone,
        "two_jobs_slowdown_passive": passive_two / passive_alone,
        "train_seconds_alone_spin": spin_alone,
        "train_seconds_alone_passive": passive_alone,
        "train_seconds_two_jobs_spin": spin_two,
        "train_seconds_two_jobs_passive": passive_two,
        "epochs": epochs,
        "rounds": rounds,
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "seeds": [0],
        "notes": (__doc__ or "").strip() + " Values are medians over rounds (and over the two copies for 'two at "
                 "once'). two_jobs_slowdown_* = two at once / alone, ideal 2.0 on a machine whose training uses "
                 "every core (1.0 if the job used half of them). two_jobs_train_ratio_spin_vs_passive > 1: "
                 "sleeping threads help when jobs share the cores; alone_train_ratio_passive_vs_spin near 1: "
                 "little cost when a job has the machine to itself.",
    }
