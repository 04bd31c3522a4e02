"""RayPoolEvaluator with real Ray actors: order, failures as data, dead workers, placement."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import ray
from ray.exceptions import RayActorError

from nasforge.core.errors import ResourceUnavailableError
from nasforge.workers.pool import RayPoolEvaluator
from tests.toy import ToySpace, toy_metrics, toy_spec

pytestmark = pytest.mark.slow
KIND = "tests.toy:ToyWorkload"


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def _archs(n: int, seed: int = 0):
    space = ToySpace()
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        a = space.sample(rng)
        if a["mode"] != "raise" and a not in out:
            out.append(a)
    return out


def test_results_in_input_order_and_failures_are_data(ray_local, tmp_path: Path) -> None:
    archs = _archs(9)
    bad = archs[4].replace(mode="raise")
    archs[4] = bad
    seen = []
    with RayPoolEvaluator(toy_spec(), tmp_path, kind=KIND) as ev:
        results = ev.evaluate(archs, on_result=seen.append)
        assert len(ev.worker_names) == 2
    assert [r.arch_key for r in results] == [a.key() for a in archs]
    assert len(seen) == len(archs)
    assert not results[4].ok and "toy failure" in results[4].error
    for a, r in zip(archs, results, strict=True):
        if a is not bad:
            assert r.ok and r.metrics["accuracy"] == pytest.approx(toy_metrics(a)["accuracy"])
            assert r.device["kind"] == "toy" and r.worker


def test_dead_worker_requeues_and_repeat_killer_fails(ray_local, tmp_path: Path) -> None:
    archs = _archs(8, seed=1)
    killer = archs[3]
    (tmp_path / "kill_keys.txt").write_text(killer.key())
    ev = RayPoolEvaluator(toy_spec(), tmp_path, kind=KIND)
    try:
        results = ev.evaluate(archs)
        assert ev.restarts >= 2  # the killer took down a worker more than once
    finally:
        ev.close()
    by_key = {r.arch_key: r for r in results}
    assert len(results) == len(archs) and set(by_key) == {a.key() for a in archs}
    assert not by_key[killer.key()].ok
    assert "worker died 2 times" in by_key[killer.key()].error
    assert all(by_key[a.key()].ok for a in archs if a != killer)


def test_workers_get_the_drivers_files_through_the_object_store(ray_local, tmp_path: Path) -> None:
    """A replacement worker starts after the driver's file is gone: it can only have it from Ray's
    object store, as a worker on a node without the driver's job folder does."""
    archs = _archs(8, seed=3)
    killer = archs[2]
    (tmp_path / "kill_keys.txt").write_text(killer.key())
    (tmp_path / "bonus.txt").write_text("0.25")
    ev = RayPoolEvaluator(toy_spec(workers={"count": 2, "cpus": 1, "chunk_size": 1, "max_retries": 1}),
                          tmp_path, kind="tests.toy:ShippedToyWorkload")
    try:
        (tmp_path / "bonus.txt").unlink()
        results = ev.evaluate(archs)
        assert ev.restarts >= 1  # the killer took a worker down; its replacement started without the file
    finally:
        ev.close()
    for a, r in zip(archs, results, strict=True):
        if a != killer:
            assert r.ok, r.error
            assert r.metrics["accuracy"] == pytest.approx(toy_metrics(a)["accuracy"] + 0.25)


def test_dead_worker_keeps_finished_calls(ray_local, tmp_path: Path) -> None:
    """ray.wait may hand back the failed call before an earlier one that finished on the same
    actor; the finished one's results are kept, the others go back one arch per chunk."""
    archs = _archs(3, seed=2)
    killer = archs[1]
    (tmp_path / "kill_keys.txt").write_text(killer.key())
    ev = RayPoolEvaluator(toy_spec(workers={"count": 1, "cpus": 1, "chunk_size": 1, "max_retries": 1}),
                          tmp_path, kind=KIND)
    try:
        slot = ev.slots[0]
        refs = [slot.actor.evaluate.remote([archs[0].to_json()], False)]
        ray.wait(refs, timeout=60)  # its reply is in before the killer runs (a reply can die with the actor)
        refs += [slot.actor.evaluate.remote([a.to_json()], False) for a in archs[1:]]
        slot.in_flight = {ref: [i] for i, ref in enumerate(refs)}
        ref_to_slot = dict.fromkeys(refs, slot)
        ray.wait(refs, num_returns=len(refs), timeout=60)
        with pytest.raises(RayActorError) as died:
            ray.get(refs[1])
        recorded: dict[int, object] = {}
        failed: dict[int, str] = {}
        queue: deque[list[int]] = deque()
        deaths = [0, 0, 0]
        ev._replace(slot, ref_to_slot, queue, deaths, died.value,
                    recorded.__setitem__, failed.__setitem__)
    finally:
        ev.close()
    assert set(recorded) == {0} and recorded[0].ok  # finished before the death: kept
    assert deaths == [0, 1, 1]  # every arch without a result counts the death
    assert list(queue) == [[1], [2]] and not failed and not ref_to_slot


def test_missing_gpu_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    if ray.is_initialized():
        ray.shutdown()
    spec = toy_spec(workers={"count": 1, "gpus": 1})
    t0 = time.monotonic()
    with pytest.raises(ResourceUnavailableError, match="workers: each worker asks for .*GPU"):
        RayPoolEvaluator(spec, tmp_path, kind=KIND)
    assert time.monotonic() - t0 < 60
    assert not ray.is_initialized()  # the Ray it started is gone


def test_unknown_custom_resource_fails_fast(tmp_path: Path) -> None:
    spec = toy_spec(workers={"count": 1, "resources": {"device:a100": 1}})
    with pytest.raises(ResourceUnavailableError, match="device:a100"):
        RayPoolEvaluator(spec, tmp_path, kind=KIND)
    assert not ray.is_initialized()


def test_only_rays_token_auth_on_notice_is_left_out() -> None:
    import logging

    from nasforge.workers.pool import _token_auth_on_notice

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("ray", logging.WARNING, __file__, 1, msg, None, None)

    assert not _token_auth_on_notice(rec("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=..."))
    assert _token_auth_on_notice(rec("Token authentication is disabled for this Ray cluster. Anyone with ..."))
