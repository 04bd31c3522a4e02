"""A search across several Ray nodes on one machine survives losing a node mid-search.

The node is lost while its workers certainly hold candidates in flight: the kill happens from the
driver's progress callback only once both workers of that node have chunks outstanding, and each
evaluation takes long enough that the search runs on for seconds after the kill. Losing a node
means its raylet and every worker process on it die at once (SIGKILL, no graceful exit).
"""

from __future__ import annotations

import os
import signal
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

#: GCS notices a dead node in ~1.5 s instead of the default ~30 s, so the test stays short
FAST_NODE_DEATH = {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                   "health_check_initial_delay_ms": 0}
EVALS = 40
DELAY_S = 0.25


def test_node_killed_mid_search_loses_nothing(tmp_path: Path) -> None:
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "_system_config": FAST_NODE_DEATH})
    nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
    try:
        ray.init(address=cluster.address, include_dashboard=False, configure_logging=False)
        cluster.wait_for_nodes()
        (tmp_path / "eval_delay.txt").write_text(str(DELAY_S))
        spec = toy_spec(budget={"evaluations": EVALS, "batch_size": 20},
                        workers={"count": 4, "cpus": 1, "chunk_size": 2, "max_retries": 2})
        store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
        job = store.create_job(spec.to_dict(), name="multinode", seed=0)
        store.set_job_state(job.id, JobState.RUNNING)
        space = ToySpace()
        strategy = STRATEGIES.get("random")(space, objectives=spec.objective_list(), seed=0)
        evaluator = RayPoolEvaluator(spec, tmp_path, kind="tests.toy:ToyWorkload", address=cluster.address)
        doomed_node = nodes[0].node_id
        doomed = [s for s in evaluator.slots if s.node_id == doomed_node]
        assert len(evaluator.slots) == 4 and len(doomed) == 2  # two workers on each 2-CPU node
        doomed_names = {s.name for s in doomed}
        # a spare 1-CPU node joins after placement: room for exactly one replacement worker
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        kill: dict[str, float] = {}

        def progress(p) -> None:  # noqa: ANN001 - driver Progress
            if kill or p.evaluated < 6 or not all(s.in_flight for s in doomed):
                return
            kill["evaluated"] = p.evaluated
            kill["in_flight"] = sum(len(c) for s in doomed for c in s.in_flight.values())
            kill["t"] = time.monotonic()
            for s in doomed:  # the machine goes down: its workers and its raylet at once
                os.kill(s.pid, signal.SIGKILL)
            cluster.remove_node(nodes[0], allow_graceful=False)

        driver = SearchDriver(job=job, space=space, strategy=strategy, evaluator=evaluator, store=store,
                              tracker=NullTracker(), objectives=spec.objective_list(), max_evaluations=EVALS,
                              batch_size=20, on_progress=progress)
        t0 = time.monotonic()
        summary = driver.run()
        t_end = time.monotonic()
        restarts, lost, requeued = evaluator.restarts, evaluator.lost_workers, evaluator.requeued
        evaluator.close()
        cands = store.get_candidates(job.id)
        keys = [c.key for c in cands]
        ok = [c for c in cands if c.status == CandidateStatus.DONE]
        failed_on_purpose = [c for c in cands if c.status == CandidateStatus.FAILED and "toy failure" in (c.error or "")]
        by_dead = [c for c in ok if c.worker in doomed_names]
        print(f"multinode: {len(cands)} candidates, {len(ok)} done, {len(failed_on_purpose)} failed on purpose; "
              f"node killed at {kill.get('evaluated')} evaluated with {kill.get('in_flight')} candidates in flight "
              f"on it; {lost} workers lost, {requeued} candidates re-queued, {restarts} replacement started; "
              f"search ran {t_end - kill.get('t', t_end):.1f} s after the kill, {t_end - t0:.1f} s in all")
        assert kill, "the doomed node's workers never had work in flight"
        assert kill["evaluated"] < EVALS - 10  # killed mid-search, with plenty left to do
        assert summary.state == JobState.DONE
        assert len(keys) == len(set(keys)) == EVALS  # every key once
        assert len(ok) + len(failed_on_purpose) == EVALS  # none lost to the dead node
        assert lost == 2  # both workers of the removed node, noticed as dead
        # their in-flight candidates went to live workers (one chunk may have finished in the race)
        assert requeued >= max(2, kill["in_flight"] - spec.workers.chunk_size)
        assert restarts == 1  # the spare node took one replacement
        # no result came from the dead workers after the kill (one racing chunk at most)
        assert len(by_dead) <= kill["evaluated"] + spec.workers.chunk_size
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
