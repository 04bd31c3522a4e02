"""SIGKILL of the driver (``nasforge submit`` and everything it started) at a random point, then
``nasforge resume``: the final Pareto set equals an uninterrupted run's, and no candidate whose
result was recorded is evaluated again (the toy workload logs every finished evaluation).

An evaluation that finished on a worker but whose result the killed driver had not yet written
cannot be kept; it is evaluated again after resume. The test counts those separately.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.cli.test_end_to_end import ROOT, _cli

pytestmark = pytest.mark.slow
TRIALS = 5
EVALS = 40


def _job(home: Path, name: str) -> tuple[Path, Path]:
    log = home / f"{name}.evals"
    path = home / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "seed": 7,
        "space": {"name": "toy"},
        "supernet": {"name": "tests.toy:ToyWorkload", "options": {"delay": 0.04, "eval_log": str(log)}},
        "strategy": {"name": "nsga2", "options": {"population": 8}},
        "objectives": [{"metric": "accuracy", "direction": "maximize"},
                       {"metric": "latency_ms", "direction": "minimize"}],
        "budget": {"evaluations": EVALS, "batch_size": 8},
        "workers": {"count": 2, "cpus": 1, "chunk_size": 2},
        "tracking": {"enabled": False},
    }))
    return path, log


def _front(home: Path, job_id: str) -> dict[str, dict]:
    proc = _cli(home, "results", job_id, "--pareto", "--format", "json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {r["key"]: r["metrics"] for r in json.loads(proc.stdout)}


def _evaluated(log: Path) -> Counter[str]:
    return Counter(line.split()[0] for line in log.read_text().splitlines() if line.strip())


def test_sigkill_driver_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    from nasforge.store import open_store

    home = tmp_path
    ref_job, ref_log = _job(home, "ref")
    proc = _cli(home, "submit", str(ref_job), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref_id = json.loads(proc.stdout.strip().splitlines()[-1])["job_id"]
    ref_front = _front(home, ref_id)
    assert ref_front and max(_evaluated(ref_log).values()) == 1
    store = open_store(f"sqlite:///{home / 'nasforge.db'}")
    rng = random.Random(20261202)
    env = {**os.environ, "NASFORGE_HOME": str(home)}
    rows = []
    for trial in range(TRIALS):
        name = f"kill{trial}"
        job, log = _job(home, name)
        ref_spec = yaml.safe_load(ref_job.read_text())
        assert yaml.safe_load(job.read_text())["seed"] == ref_spec["seed"]
        kill_after = rng.randint(1, EVALS - 6)  # done candidates in the store
        extra_sleep = rng.uniform(0.0, 0.3)  # then a random instant
        t0 = time.monotonic()
        driver = subprocess.Popen([sys.executable, "-m", "nasforge.cli", "submit", str(job), "--quiet"], cwd=ROOT,
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  start_new_session=True)
        job_id = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and driver.poll() is None:
            jobs = [j for j in store.list_jobs() if j.name == name]
            if jobs:
                job_id = jobs[0].id
                if sum(c.status.value == "done" for c in store.get_candidates(job_id)) >= kill_after:
                    break
            time.sleep(0.05)
        time.sleep(extra_sleep)
        assert driver.poll() is None, f"the driver ended before the kill: {driver.stderr.read()[-2000:]!r}"
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
        driver.wait(timeout=60)
        assert job_id is not None
        recorded = {c.key for c in store.get_candidates(job_id) if c.status.value in ("done", "failed")}
        killed_at = time.monotonic()
        time.sleep(1 if trial else 4)  # workers orphaned by the kill notice their raylet is gone and exit
        resumed_at = time.monotonic()
        res = _cli(home, "resume", job_id, "--json")
        assert res.returncode == 0, res.stderr[-3000:]
        # the job's run time counts its two runs, not the time it lay dead in between
        ended = store.get_job(job_id)
        assert ended.started_at is not None and ended.finished_at is not None and ended.duration_s is not None
        first_start_to_end = (ended.finished_at - ended.started_at).total_seconds()
        assert ended.duration_s <= first_start_to_end - (resumed_at - killed_at) + 0.5, \
            (ended.duration_s, first_start_to_end, resumed_at - killed_at)
        assert json.loads(res.stdout.strip().splitlines()[-1])["state"] == "done"
        cands = store.get_candidates(job_id)
        keys = [c.key for c in cands]
        evaluated = _evaluated(log)
        done_keys = {c.key for c in cands if c.status.value == "done"}
        twice = {k for k, n in evaluated.items() if n > 1}
        # a result recorded before the kill is never recomputed
        assert not twice & recorded, f"recorded candidates evaluated again: {sorted(twice & recorded)}"
        # only evaluations the killed driver had not recorded are redone, each once more at most, and no
        # more of them than one batch plus what the workers hold in flight (2 workers x 2 chunks x 2)
        assert all(evaluated[k] <= 2 for k in evaluated) and len(twice) <= 8 + 8
        assert len(keys) == len(set(keys)) == EVALS
        assert done_keys == set(evaluated)  # every done candidate was evaluated; failures raise before logging
        front = _front(home, job_id)
        assert front == ref_front, f"trial {trial}: front differs from the uninterrupted run's"
        rows.append((trial, kill_after, len(recorded), len(twice), round(time.monotonic() - t0, 1)))
    print("driver kill trials (trial, kill after N done, recorded at kill, unrecorded redone, seconds):", rows)
    assert len({r[2] for r in rows}) > 1  # the kills fell at different points
