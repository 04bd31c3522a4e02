"""The store's latency cache: keyed by the network a child is and the device profile it was timed on."""

from __future__ import annotations

from pathlib import Path

import yaml

from nasforge.core.spec import JobSpec
from nasforge.core.types import EvalResult
from nasforge.store import open_store
from nasforge.workers.latency_cache import LatencyCache, network_fingerprint

QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart.yaml"


def _spec(**space_options: object) -> JobSpec:
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["space"]["options"].update(space_options)
    return JobSpec.model_validate(raw)


def test_the_same_choices_in_another_network_are_another_child() -> None:
    assert network_fingerprint(_spec()) == network_fingerprint(_spec())
    assert network_fingerprint(_spec()) != network_fingerprint(_spec(stem_channels=24))  # same arch keys, wider net
    other_supernet = _spec().model_copy(update={"supernet": _spec().supernet.model_copy(update={"name": "mos"})})
    assert network_fingerprint(_spec()) != network_fingerprint(other_supernet)


def test_put_get_and_what_record_counts(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    cache, wider = LatencyCache(store, _spec()), LatencyCache(store, _spec(stem_channels=24))
    timed = {"accuracy": 0.9, "latency_ms": 0.5, "latency_p90_ms": 0.6, "latency_cached": 0.0}
    cache.record(EvalResult("a" * 20, timed, device={"id": "dev1"}))
    cache.record(EvalResult("b" * 20, {"accuracy": 0.8}, device={"id": "dev1"}))  # not timed: nothing to keep
    cache.record(EvalResult("c" * 20, error="boom", device={"id": "dev1"}))
    assert cache.puts == 1
    assert cache.get(["a" * 20, "b" * 20, "c" * 20], "dev1") == {"a" * 20: {"latency_ms": 0.5, "latency_p90_ms": 0.6}}
    assert cache.get(["a" * 20], "dev2") == {}  # another device profile
    assert wider.get(["a" * 20], "dev1") == {}  # another network
    cache.record(EvalResult("a" * 20, {**timed, "latency_cached": 1.0}, device={"id": "dev1"}))
    assert (cache.hits, cache.puts) == (1, 1)


def test_a_disturbed_timing_is_not_kept(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    cache = LatencyCache(store, _spec())
    disturbed = {"latency_ms": 40.0, "latency_min_ms": 0.5, "latency_disturbed": 1.0, "latency_cached": 0.0}
    cache.record(EvalResult("a" * 20, disturbed, device={"id": "dev1"}))
    cache.record(EvalResult("b" * 20, {**disturbed, "latency_ms": 0.6, "latency_disturbed": 0.0}, device={"id": "dev1"}))
    assert cache.puts == 1
    assert list(cache.get(["a" * 20, "b" * 20], "dev1")) == ["b" * 20]  # the next job times 'a' again
