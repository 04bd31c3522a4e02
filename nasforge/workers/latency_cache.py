"""Latency measured once per child and device, shared by every job in a store.

A child's latency depends on the network it is (the space and supernet with their options, and
the arch's choices) and on where and how it was timed (the device profile id: device, torch,
threads, batch size, dtype, statistic, reference). Both together key the store's metrics cache,
so a second job over the same space on the same device, a resumed job, or a search that asks a
child another job already timed, takes the recorded figures instead of timing it again
(``latency_cached`` = 1 in its metrics). ``evaluation.latency.cache: false`` times every child.
A timing that other load disturbed even after ``evaluation.latency.retries`` (``latency_disturbed``
= 1) is not recorded, so it does not outlive the busy spell it was made in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from nasforge.core.interfaces import Store
from nasforge.core.spec import JobSpec

#: set to 1.0 in the metrics of a result whose latency came from the cache, 0.0 when timed
CACHED_FLAG = "latency_cached"
#: 1.0 in the metrics of a child whose timing other load disturbed even after retries (never cached)
DISTURBED_FLAG = "latency_disturbed"


def latency_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The timing figures of a result (``latency_ms``, ``latency_p90_ms``, ``latency_cv``, ...)."""
    return {k: float(v) for k, v in metrics.items() if k.startswith("latency_") and k != CACHED_FLAG}


def network_fingerprint(spec: JobSpec) -> str:
    """What, besides the arch's choices, decides the network a child is: the space and the
    supernet with their options (16 hex digits)."""
    what: dict[str, Any] = {"space": spec.space.name, "space_options": dict(spec.space.options)}
    if spec.supernet is not None:
        what["supernet"] = spec.supernet.name
        what["supernet_options"] = dict(spec.supernet.options)
    text = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class LatencyCache:
    """Reads and writes the store's metrics cache for one job's children."""

    def __init__(self, store: Store, spec: JobSpec):
        self.store = store
        self.fingerprint = network_fingerprint(spec)
        self.hits = 0
        self.puts = 0

    def _key(self, arch_key: str) -> str:
        return f"{arch_key}:{self.fingerprint}"

    def get(self, arch_keys: Iterable[str], device_id: str) -> dict[str, dict[str, float]]:
        """Recorded latency figures of those of ``arch_keys`` timed on ``device_id``."""
        by_cache_key = {self._key(key): key for key in arch_keys}
        got = self.store.get_cached_metrics(list(by_cache_key), device_id)
        return {by_cache_key[k]: figures for k, figures in got.items() if "latency_ms" in figures}

    def put(self, arch_key: str, device_id: str, metrics: Mapping[str, float]) -> None:
        timing = latency_metrics(metrics)
        if timing.get(DISTURBED_FLAG) == 1.0:  # timed while other load took the cores: a later job times it again
            return
        if "latency_ms" in timing:
            self.store.put_cached_metrics(self._key(arch_key), device_id, timing)
            self.puts += 1

    def record(self, result: Any) -> None:
        """After a result arrives: a freshly timed child goes into the cache; one served from it is counted."""
        if not result.ok or not result.device or "id" not in result.device:
            return
        if result.metrics.get(CACHED_FLAG) == 1.0:
            self.hits += 1
        else:
            self.put(result.arch_key, str(result.device["id"]), result.metrics)
