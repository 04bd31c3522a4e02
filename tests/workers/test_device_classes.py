"""Latency per device class on a multi-node Ray cluster whose nodes expose ``device:*`` resources."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from nasforge.compose import validate
from nasforge.core.errors import JobSpecError, ResourceUnavailableError
from nasforge.core.interfaces import NullTracker
from nasforge.core.types import CandidateStatus, JobState
from nasforge.search import STRATEGIES
from nasforge.search.driver import SearchDriver
from nasforge.store import open_store
from nasforge.store.export_formats import to_json
from nasforge.workers.pool import RayPoolEvaluator
from tests.toy import ToySpace, toy_spec

pytestmark = pytest.mark.slow
KIND = "tests.toy:ToyWorkload"


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = {"small": c.add_node(num_cpus=2, resources={"device:small": 1}),
             "big": c.add_node(num_cpus=2, resources={"device:big": 1})}
    ray.init(address=c.address, include_dashboard=False, configure_logging=False)
    c.wait_for_nodes()
    yield c, {cls: n.node_id for cls, n in nodes.items()}
    ray.shutdown()
    c.shutdown()


def _spec(classes: list[str], **over: object):
    return toy_spec(
        objectives=[{"metric": "accuracy", "direction": "maximize"},
                    {"metric": "latency_ms@big", "direction": "minimize"}],
        evaluation={"latency": {"device_classes": classes}},
        workers={"count": 2, "cpus": 1, "chunk_size": 2},
        budget={"evaluations": 16, "batch_size": 8}, **over)


def test_one_latency_column_per_class_measured_on_that_class(cluster, tmp_path: Path) -> None:
    c, node_of_class = cluster
    spec = _spec(["small", "big"])
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    job = store.create_job(spec.to_dict(), name="classes", seed=0)
    store.set_job_state(job.id, JobState.RUNNING)
    space = ToySpace()
    strategy = STRATEGIES.get("random")(space, objectives=spec.objective_list(), seed=0)
    with RayPoolEvaluator(spec, tmp_path, kind=KIND, address=c.address) as ev:
        assert set(ev.class_pools) == {"small", "big"}
        for cls, pool in ev.class_pools.items():  # each class pool sits on its class's node only
            assert {s.node_id for s in pool.slots} == {node_of_class[cls]}
        summary = SearchDriver(job=job, space=space, strategy=strategy, evaluator=ev, store=store,
                               tracker=NullTracker(), objectives=spec.objective_list(), max_evaluations=16,
                               batch_size=8).run()
    assert summary.state == JobState.DONE
    cands = store.get_candidates(job.id)
    done = [c for c in cands if c.status == CandidateStatus.DONE]
    assert len(cands) == 16 and done
    for cand in done:
        for cls in ("small", "big"):
            assert cand.metrics[f"latency_ms@{cls}"] > 0 and cand.metrics[f"latency_p90_ms@{cls}"] > 0
            assert cand.device[f"latency@{cls}"]["node"] == node_of_class[cls]
        assert cand.metrics["latency_ms"] > 0  # the main worker's own column stays
    # the Pareto front is over latency_ms@big, and the column reaches the results export
    front = [c for c in cands if c.pareto]
    assert front and all("latency_ms@big" in c.metrics for c in front)
    assert "latency_ms@small" in to_json(done)
    lat = sorted((c.metrics["latency_ms@big"], c.metrics["accuracy"]) for c in front)
    assert all(a1 < a2 for (_, a1), (_, a2) in zip(lat, lat[1:], strict=False))  # a real trade-off
    print("device classes:", [(round(c.metrics["latency_ms@small"], 2), round(c.metrics["latency_ms@big"], 2))
                              for c in done[:5]])


def test_a_class_no_node_has_fails_fast(cluster, tmp_path: Path) -> None:
    c, _ = cluster
    t0 = time.monotonic()
    with pytest.raises(ResourceUnavailableError, match=r"device_classes: 'a100'.*'device:a100'.*\['big', 'small'\]"):
        RayPoolEvaluator(_spec(["big", "a100"]), tmp_path, kind=KIND, address=c.address)
    assert time.monotonic() - t0 < 30
    time.sleep(1)
    from ray.util.state import list_actors

    alive = [a for a in list_actors(filters=[("state", "=", "ALIVE")]) if "EvalWorker" in a.class_name]
    assert not alive  # nothing was started for the classes that do exist either


def test_metric_of_an_unmeasured_class_is_rejected() -> None:
    with pytest.raises(JobSpecError, match=r"objectives\[1\]\.metric: 'latency_ms@big'.*device_classes"):
        validate(_spec(["small"], supernet={"name": KIND}), address="ray://cluster")


def test_supernet_workload_measures_latency_without_scoring(tmp_path: Path) -> None:
    """A device-class worker of a supernet job times the child; it does not evaluate accuracy."""
    import numpy as np

    from tests.workers.quickstart_workload import quickstart_workload

    wl, space = quickstart_workload(tmp_path, bn_recalibration_images=16,
                                    latency={"warmup": 1, "repeats": 3, "threads": 1})
    arch = space.sample(np.random.default_rng(0))
    lat = wl.measure_latency(arch)
    # the figures, and how the timing went: a disturbed one is flagged (and kept out of the cache) here too
    assert set(lat) == {"latency_ms", "latency_p90_ms", "latency_attempts", "latency_disturbed"}
    assert lat["latency_p90_ms"] >= lat["latency_ms"] > 0 and lat["latency_attempts"] >= 1
    assert "accuracy" in wl.evaluate(arch)  # the full path scores; the latency path above did not


def test_supernet_workload_reference_normalised_latency(tmp_path: Path) -> None:
    """evaluation.latency.reference: each timing is rescaled by the largest child timed just
    before it; the raw figure and the scale are kept, and the device profile id changes."""
    import numpy as np

    from tests.workers.quickstart_workload import quickstart_workload

    profiles = []
    for reference in (False, True):
        wl, space = quickstart_workload(tmp_path, bn_recalibration_images=16, max_images=32, latency={
            "warmup": 1, "repeats": 3, "threads": 1, "statistic": "min", "reference": reference})
        m = wl.evaluate(space.sample(np.random.default_rng(0)))
        assert m["latency_p90_ms"] >= m["latency_ms"] == m["latency_min_ms"] > 0  # statistic: min
        if reference:
            assert m["latency_reference_scale"] > 0
            assert m["latency_ms"] == pytest.approx(m["latency_raw_ms"] * m["latency_reference_scale"])
        else:
            assert "latency_raw_ms" not in m
        profiles.append(wl.device_profile()["id"])
    assert profiles[0] != profiles[1]


def test_reference_timer_rescales_by_the_reference_now() -> None:
    """The arithmetic, with the reference's 'now' pinned: twice its baseline halves the figure."""
    import torch

    from nasforge.workers.latency import ReferenceTimer

    class Pinned(ReferenceTimer):
        def reference_ms(self) -> float:
            return 2.0

    model, x = torch.nn.Linear(8, 8), torch.randn(1, 8)
    t = Pinned(model, x, warmup=1, repeats=3)
    t.baseline_ms = 1.0
    out = t.measure(model, x)
    assert out["latency_reference_scale"] == 0.5
    assert out["latency_ms"] == pytest.approx(out["latency_raw_ms"] / 2)
    assert out["latency_min_ms"] <= out["latency_p90_ms"]
