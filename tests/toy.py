"""A torch-free toy space and workload for tests of the loop, the pool and the CLI plumbing.

The space has 8 categorical choices; ``accuracy`` rises and ``latency_ms`` grows with the chosen
sizes, so the two objectives conflict. The workload is real code run by real Ray actors; it
fails on purpose for archs whose ``mode`` choice says so (``raise``), and kills its own process
when the arch key is listed in ``kill_keys.txt`` in the job folder.

Run through the CLI with ``supernet: {name: "tests.toy:ToyWorkload", options: {...}}``; options:
``delay`` (seconds of sleep per evaluation), ``spin`` (seconds of CPU-bound work per evaluation),
``eval_log`` (a file that gets one line ``KEY PID`` per finished evaluation, appended atomically).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from nasforge.core.spec import JobSpec
from nasforge.core.types import Arch, Scalar
from nasforge.spaces.base import SearchSpace
from nasforge.workers.base import Workload


class ToySpace(SearchSpace):
    id = "toy"
    version = 1

    def build_choices(self) -> dict[str, tuple[Scalar, ...]]:
        ch: dict[str, tuple[Scalar, ...]] = {f"w{i}": (1, 2, 3, 4) for i in range(6)}
        ch["depth"] = (1, 2, 3)
        ch["mode"] = ("ok", "ok2", "raise")
        return ch

    def cost(self, arch: Arch) -> dict[str, float]:
        size = sum(int(arch[f"w{i}"]) * (i + 1) for i in range(6)) * int(arch["depth"])
        return {"flops": float(size * 1000), "params": float(size * 10)}


#: the per-choice setting that raises accuracy; a search has to discover it
TOY_TARGET = (3, 1, 4, 2, 2, 3)


def toy_metrics(arch: Arch) -> dict[str, float]:
    """Latency grows with size; accuracy has diminishing returns on size plus a bonus for each
    width that matches TOY_TARGET, so random samples sit far from the front and a search can learn."""
    c = ToySpace().cost(arch)
    size = c["flops"] / 1000
    matches = sum(int(arch[f"w{i}"]) == t for i, t in enumerate(TOY_TARGET))
    acc = 0.5 * (1.0 - 1.0 / (1.0 + 0.05 * size)) + 0.5 * matches / len(TOY_TARGET)
    return {"accuracy": acc, "latency_ms": 0.1 * size + 0.05 * int(arch["w5"]), **c}


class ToyWorkload(Workload):
    kind = "toy"

    @classmethod
    def build_space(cls, spec: JobSpec) -> SearchSpace:
        return ToySpace()

    def setup(self) -> None:
        opts = dict(self.spec.supernet.options) if self.spec.supernet is not None else {}
        self.spin = float(opts.get("spin", 0.0))
        self.eval_log = opts.get("eval_log")
        kill_file = self.job_dir / "kill_keys.txt"
        self.kill_keys = set(kill_file.read_text().split()) if kill_file.exists() else set()
        delay_file = self.job_dir / "eval_delay.txt"
        self.delay = float(delay_file.read_text()) if delay_file.exists() else float(opts.get("delay", 0.0))

    def evaluate(self, arch: Arch) -> dict[str, float]:
        if arch.key() in self.kill_keys:
            os._exit(3)  # the worker process dies mid-evaluation
        if arch["mode"] == "raise":
            raise ValueError(f"toy failure for {arch.key()}")
        if self.delay:
            time.sleep(self.delay)
        if self.spin:
            cpu_spin(self.spin)
        metrics = toy_metrics(arch)
        if self.eval_log:
            fd = os.open(self.eval_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{arch.key()} {os.getpid()}\n".encode())
            finally:
                os.close(fd)
        return metrics

    def measure_latency(self, arch: Arch) -> dict[str, float]:
        """A real timing: CPU work proportional to the arch's size, timed with perf_counter."""
        size = ToySpace().cost(arch)["flops"] / 1000
        t0 = time.perf_counter()
        cpu_spin(2e-5 * size)
        ms = 1000 * (time.perf_counter() - t0)
        return {"latency_ms": ms, "latency_p90_ms": ms}

    def device_profile(self) -> dict[str, Any]:
        return {"kind": "toy", "id": "toy-device", "pid": os.getpid()}

    def export(self, arch: Arch, out_dir: Path, metadata: dict[str, Any]) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        p = out_dir / "arch.json"
        p.write_text(arch.to_json())
        return [p]

    @classmethod
    def load_export(cls, path: Path, meta: dict[str, Any]) -> Any:
        return meta


class ShippedToyWorkload(ToyWorkload):
    """The toy whose workers need a file of the driver's job folder (``bonus.txt``, a number added
    to ``accuracy``), as a trained supernet's workers need its weights: the pool ships it."""

    @classmethod
    def worker_files(cls, spec: JobSpec, job_dir: Path) -> dict[str, Path]:
        return {"bonus": Path(job_dir) / "bonus.txt"}

    def setup(self) -> None:
        super().setup()
        if "bonus" in self.shipped:
            self.bonus = float(self.shipped["bonus"][1].decode())
        else:
            self.bonus = float((self.job_dir / "bonus.txt").read_text())

    def evaluate(self, arch: Arch) -> dict[str, float]:
        metrics = super().evaluate(arch)
        return {**metrics, "accuracy": metrics["accuracy"] + self.bonus}


def cpu_spin(seconds: float) -> int:
    """Busy CPU work for ``seconds`` of this thread's CPU time (not wall time: a shared core
    still gets the same amount of work done per evaluation)."""
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        for i in range(2000):
            x = (x * 31 + i) % 1_000_003
    return x


def toy_spec(**overrides: Any) -> JobSpec:
    data: dict[str, Any] = {
        "name": "toy",
        "seed": 0,
        "space": {"name": "toy"},
        "supernet": {"name": "toy", "checkpoint": "."},
        "strategy": {"name": "random"},
        "objectives": [{"metric": "accuracy", "direction": "maximize"},
                       {"metric": "latency_ms", "direction": "minimize"}],
        "budget": {"evaluations": 40, "batch_size": 10},
        "workers": {"count": 2, "cpus": 1, "chunk_size": 2, "max_retries": 1},
        "tracking": {"enabled": False},
    }
    for k, v in overrides.items():
        data[k] = v
    return JobSpec.model_validate(data)
