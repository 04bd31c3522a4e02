"""Scaling of candidate evaluation with 1, 2 and 4 Ray workers, and the coordinator's CPU share.

Each evaluation does a fixed amount of real CPU work: ``MATMULS`` float32 256x256 matrix products
in torch on one thread (about 40 ms of one core here), so more workers than cores cannot help.
The whole path is the real one: SearchDriver (random strategy on the toy-free bignas_cnn space's
arch encoding), the SQLite store, RayPoolEvaluator with its Ray actors on the local Ray instance.

- throughput(w) = candidates / wall time of ``SearchDriver.run()`` with w workers (worker start-up
  excluded: a fixed cost);
- ideal(w) = throughput(1) x min(w, cores): linear up to the core count, flat after it;
- efficiency_w = throughput(w) / ideal(w) (median of the repeats);
- coordinator_cpu_share = CPU time of the driver process (all its threads: loop, store writer,
  Ray client) / CPU time of driver + workers, during the 2-worker runs; ``driver_cpu_per_wall``
  is the driver's CPU time over wall time (share of one core). Ray's own daemons (raylet, GCS)
  are reported apart as ``ray_daemons_cpu_share``.

The machine is shared: the 1-minute load average is recorded before and after every run.
No GPU here, so ``gpu_latency_cv`` (CUDA-event latency spread on a GPU worker) is not measured.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from nasforge.core.spec import JobSpec
from nasforge.core.types import Arch
from nasforge.spaces import SPACES
from nasforge.spaces.base import SearchSpace
from nasforge.workers.base import Workload

MATMULS = 72
SIZE = 256


class MatmulWorkload(Workload):
    """Fixed CPU work per candidate (torch matmuls, one thread); reports the CPU time it used."""

    kind = "matmul"

    @classmethod
    def build_space(cls, spec: JobSpec) -> SearchSpace:
        return SPACES.get(spec.space.name)(spec.space.options)

    def setup(self) -> None:
        import torch

        torch.set_num_threads(1)
        self.space = self.build_space(self.spec)
        gen = torch.Generator().manual_seed(0)
        self.a = torch.randn(SIZE, SIZE, generator=gen)
        self.b = torch.randn(SIZE, SIZE, generator=gen)

    def evaluate(self, arch: Arch) -> dict[str, float]:
        import torch

        c0 = time.process_time()
        x = self.a
        for _ in range(MATMULS):
            x = torch.tanh(x @ self.b)
        cost = self.space.cost(arch)
        return {"accuracy": 1.0 / (1.0 + cost["flops"] * 1e-7), "flops": cost["flops"],
                "cpu_s": time.process_time() - c0}

    def device_profile(self) -> dict[str, Any]:
        return {"kind": "cpu-matmul", "matmuls": MATMULS, "size": SIZE, "pid": os.getpid()}

    def export(self, arch: Arch, out_dir: Path, metadata: dict[str, Any]) -> list[Path]:
        raise NotImplementedError("the benchmark workload has nothing to export")

    @classmethod
    def load_export(cls, path: Path, meta: dict[str, Any]) -> Any:
        raise NotImplementedError


def _spec(n: int, workers: int, store_url: str) -> JobSpec:
    return JobSpec.model_validate({
        "name": "scaling", "seed": 0,
        "space": {"name": "bignas_cnn", "options": {}},
        "supernet": {"name": "benchmarks.scaling:MatmulWorkload"},
        "strategy": {"name": "random"},
        "objectives": [{"metric": "accuracy", "direction": "maximize"}, {"metric": "flops", "direction": "minimize"}],
        "budget": {"evaluations": n, "batch_size": max(8, 4 * workers)},
        "workers": {"count": workers, "cpus": 1, "chunk_size": 1},
        "store": {"url": store_url},
        "tracking": {"enabled": False},
    })


def _proc_cpu(pid: int) -> float:
    """utime + stime of a process in seconds, from /proc (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _daemon_cpu() -> float:
    """CPU seconds used so far by this Ray instance's daemons (raylet, GCS, ...)."""
    import ray._private.worker as rw

    node = rw._global_node
    procs = node.all_processes if node is not None else {}
    return sum(_proc_cpu(info.process.pid) for infos in procs.values() for info in infos
               if getattr(info, "process", None) is not None)


def measure(workers: int, n: int, tmp: Path, rep: int) -> dict[str, Any]:
    from nasforge.compose import build_strategy, open_store_for
    from nasforge.core.interfaces import NullTracker
    from nasforge.search.driver import SearchDriver
    from nasforge.workers.pool import RayPoolEvaluator

    spec = _spec(n, workers, f"sqlite:///{tmp / f'store-{workers}-{rep}.db'}")
    space = MatmulWorkload.build_space(spec)
    store = open_store_for(spec)
    job = store.create_job(spec.to_dict(), name=spec.name, seed=spec.seed)
    evaluator = RayPoolEvaluator(spec, tmp / job.id, kind="benchmarks.scaling:MatmulWorkload")
    try:
        assert len(evaluator.slots) == workers
        driver = SearchDriver(job=job, space=space, strategy=build_strategy(spec, space), evaluator=evaluator,
                              store=store, tracker=NullTracker(), objectives=spec.objective_list(),
                              max_evaluations=n, batch_size=spec.budget.batch_size)
        load0 = os.getloadavg()[0]
        d0, c0, t0 = _daemon_cpu(), time.process_time(), time.perf_counter()
        summary = driver.run()
        wall = time.perf_counter() - t0
        driver_cpu = time.process_time() - c0
        daemons_cpu = _daemon_cpu() - d0
        load1 = os.getloadavg()[0]
    finally:
        evaluator.close()
    assert summary.evaluated == n, summary
    worker_cpu = sum(c.metrics.get("cpu_s", 0.0) for c in store.get_candidates(job.id))
    total = driver_cpu + worker_cpu + daemons_cpu
    return {"workers": workers, "repeat": rep, "candidates": n, "wall_s": wall, "throughput_per_s": n / wall,
            "driver_cpu_s": driver_cpu, "workers_cpu_s": worker_cpu, "ray_daemons_cpu_s": daemons_cpu,
            "coordinator_cpu_share": driver_cpu / (driver_cpu + worker_cpu),
            "driver_cpu_per_wall": driver_cpu / wall, "ray_daemons_cpu_share": daemons_cpu / total,
            "eval_cpu_ms": 1000 * worker_cpu / n, "load1_before": load0, "load1_after": load1}


def run(quick: bool = False) -> dict[str, Any]:
    import ray

    from nasforge.workers.pool import ensure_ray

    n = 40 if quick else 120
    repeats = 1 if quick else 3
    cores = os.cpu_count() or 1
    rows: list[dict[str, Any]] = []
    started = ensure_ray(num_cpus=4)  # room for 4 one-CPU workers on this 2-core machine
    try:
        with tempfile.TemporaryDirectory() as d:
            for rep in range(repeats):  # interleaved, so a burst of outside load hits every size alike
                for w in (1, 2, 4):
                    rows.append(measure(w, n, Path(d), rep))
    finally:
        if started:
            ray.shutdown()

    def median(w: int, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["workers"] == w)

    base = median(1, "throughput_per_s")
    eff = {w: median(w, "throughput_per_s") / (base * min(w, cores)) for w in (1, 2, 4)}
    return {
        "efficiency_2_workers": eff[2],
        "efficiency_4_workers": eff[4],
        "coordinator_cpu_share": median(2, "coordinator_cpu_share"),
        "driver_cpu_per_wall_2_workers": median(2, "driver_cpu_per_wall"),
        "ray_daemons_cpu_share_2_workers": median(2, "ray_daemons_cpu_share"),
        "throughput_1_worker_per_s": base,
        "throughput_2_workers_per_s": median(2, "throughput_per_s"),
        "throughput_4_workers_per_s": median(4, "throughput_per_s"),
        "gpu_latency_cv": "not measured: no GPU on this machine",
        "cores": cores,
        "load1_range": [min(r["load1_before"] for r in rows), max(r["load1_after"] for r in rows)],
        "rows": rows,
        "seeds": [0],
        "notes": (
            f"Each candidate: {MATMULS} torch matmuls {SIZE}x{SIZE} on one thread (real CPU work; eval_cpu_ms "
            "per row). ideal(w) = throughput(1 worker) x min(w, cores); efficiency = observed / ideal, "
            f"median of {repeats} interleaved repeat(s). coordinator_cpu_share = driver process CPU / (driver + "
            "workers CPU) in the 2-worker runs; Ray's daemons are reported apart. The machine was shared "
            "with other users' jobs: load1 before/after each run is in the rows, and a load above the "
            "core count lowers efficiency because the workers' cores are not ours alone."
        ),
    }
