"""A search across several Ray nodes on one machine survives losing a node mid-search."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from nasforge.core.interfaces import NullTracker
from nasforge.core.types import CandidateStatus, JobState
from nasforge.search import STRATEGIES
from nasforge.search.driver import SearchDriver
from nasforge.store import open_store
from nasforge.workers.pool import RayPoolEvaluator
from tests.toy import ToySpace, toy_spec

pytestmark = pytest.mark.slow


def test_node_killed_mid_search_loses_nothing(tmp_path: Path) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
    try:
        ray.init(address=cluster.address, include_dashboard=False, configure_logging=False)
        cluster.wait_for_nodes()
        (tmp_path / "eval_delay.txt").write_text("0.05")
        spec = toy_spec(budget={"evaluations": 60, "batch_size": 20},
                        workers={"count": 4, "cpus": 1, "chunk_size": 2, "max_retries": 2})
        store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
        job = store.create_job(spec.to_dict(), name="multinode", seed=0)
        store.set_job_state(job.id, JobState.RUNNING)
        space = ToySpace()
        strategy = STRATEGIES.get("random")(space, objectives=spec.objective_list(), seed=0)
        evaluator = RayPoolEvaluator(spec, tmp_path, kind="tests.toy:ToyWorkload", address=cluster.address)
        placed = {s.name for s in evaluator.slots}
        assert len(placed) == 4
        killed = threading.Event()
        seen_before_kill: list[int] = []

        def progress(p) -> None:  # noqa: ANN001 - driver Progress
            if p.evaluated >= 15 and not killed.is_set():
                killed.set()
                seen_before_kill.append(p.evaluated)
                cluster.remove_node(nodes[0], allow_graceful=False)

        driver = SearchDriver(job=job, space=space, strategy=strategy, evaluator=evaluator, store=store,
                              tracker=NullTracker(), objectives=spec.objective_list(), max_evaluations=60,
                              batch_size=20, on_progress=progress)
        t0 = time.monotonic()
        summary = driver.run()
        elapsed = time.monotonic() - t0
        restarts, lost = evaluator.restarts, evaluator.lost_workers
        evaluator.close()
        cands = store.get_candidates(job.id)
        keys = [c.key for c in cands]
        ok = [c for c in cands if c.status == CandidateStatus.DONE]
        lost_to_mode = [c for c in cands if c.status == CandidateStatus.FAILED and "toy failure" in (c.error or "")]
        print(f"multinode: {len(cands)} candidates, {len(ok)} done, {len(lost_to_mode)} failed on purpose, "
              f"{lost} workers lost with the node, {restarts} restarted, {elapsed:.1f} s")
        assert killed.is_set() and seen_before_kill[0] < 60
        assert summary.state == JobState.DONE
        assert len(keys) == len(set(keys)) == 60  # every key once
        assert len(ok) + len(lost_to_mode) == 60  # none lost to the dead node
        assert lost >= 2  # both workers of the removed node
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
