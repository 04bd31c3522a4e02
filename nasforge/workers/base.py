"""Workload: everything job-kind specific that runs in the coordinator and in each worker.

One Workload class per job kind (``supernet`` for supernet search, ``compression`` for bit /
sparsity allocation), registered in ``nasforge.workers.WORKLOADS``. The driver and the Ray pool
stay generic; they call only these methods.

Life cycle:
1. coordinator: ``build_space(spec)`` -> the SearchSpace (cheap; also used by ``validate``).
2. coordinator: ``prepare(spec, job_dir, log)`` once per job before workers start (train the
   supernet, build the per-layer level database ...). Must be resumable: when its outputs are
   already in ``job_dir`` it returns at once.
3. each worker: ``Workload(spec, job_dir)`` then ``setup()`` loads the model once.
4. each worker: ``evaluate(arch) -> metrics`` many times; raising marks that candidate failed.
5. coordinator: ``export(arch, out_dir)`` writes a deployable folder that ``nasforge.load`` reads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from nasforge.core.spec import JobSpec
from nasforge.core.types import Arch
from nasforge.spaces.base import SearchSpace
from nasforge.workers.latency_cache import DISTURBED_FLAG

LogFn = Callable[[str], None]


class ShippedFiles(Mapping[str, tuple[str, bytes]]):
    """:meth:`Workload.worker_files` as a worker gets them: name -> (driver-side path, bytes),
    fetched by ``fetch`` on first use only, so a worker beside the driver's job folder, which
    reads the files from disk, never holds a copy (a compression job's level database is the
    model's size several times over)."""

    def __init__(self, fetch: Callable[[], Mapping[str, tuple[str, bytes]]] | None = None):
        self._fetch = fetch
        self._files: Mapping[str, tuple[str, bytes]] | None = None if fetch else {}

    def _get(self) -> Mapping[str, tuple[str, bytes]]:
        if self._files is None:
            assert self._fetch is not None
            self._files = dict(self._fetch())
        return self._files

    def __getitem__(self, name: str) -> tuple[str, bytes]:
        return self._get()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __bool__(self) -> bool:
        """Whether files were shipped at all, without fetching them."""
        return self._fetch is not None


class Workload(ABC):
    kind: str = ""

    def __init__(self, spec: JobSpec, job_dir: Path):
        self.spec = spec
        self.job_dir = Path(job_dir)
        #: name -> (driver-side path, bytes) of :meth:`worker_files`, set by the Ray pool before
        #: ``setup`` (fetched on first use); empty where the workload runs beside its files
        self.shipped: Mapping[str, tuple[str, bytes]] = ShippedFiles()

    @classmethod
    def worker_files(cls, spec: JobSpec, job_dir: Path) -> dict[str, Path]:
        """Files on the driver's disk that ``setup`` reads (after ``prepare``). The Ray pool sends
        their bytes to every worker through Ray's object store (``self.shipped``), so workers on
        other nodes need no folder shared with the driver. Default: none."""
        return {}

    @classmethod
    @abstractmethod
    def build_space(cls, spec: JobSpec) -> SearchSpace: ...

    @classmethod
    def validate_spec(cls, spec: JobSpec) -> None:
        """Check component names/options of the spec (raise NasforgeError); writes nothing."""
        cls.build_space(spec)

    @classmethod
    def metrics(cls, spec: JobSpec) -> tuple[frozenset[str], str] | None:
        """The metrics ``evaluate`` returns for ``spec``, with a few words on what they are (for
        the error when an objective or constraint names another); None: not declared, unchecked."""
        return None

    @classmethod
    def prepare(cls, spec: JobSpec, job_dir: Path, log: LogFn = print) -> dict[str, float]:
        """One-time, resumable preparation in the coordinator; returns metrics to track."""
        return {}

    @abstractmethod
    def setup(self) -> None:
        """Load model and data (once per worker)."""

    @abstractmethod
    def evaluate(self, arch: Arch) -> dict[str, float]:
        """Metrics of one arch (accuracy, flops, params, model_bytes, latency_ms, ...)."""

    #: the metrics ``measure_latency`` returns; a device class adds ``NAME@CLASS`` columns of these
    LATENCY_METRICS: tuple[str, ...] = ("latency_ms", "latency_p90_ms")
    #: how a timing went (``workers.latency.measure_latency``); a latency-only path passes them on
    #: beside ``LATENCY_METRICS`` so a disturbed timing on a device class is flagged and not cached
    LATENCY_FLAGS: tuple[str, ...] = ("latency_attempts", DISTURBED_FLAG)

    #: ``evaluate(arch, latency=FIGURES)`` takes latency figures recorded earlier for this child on
    #: this device (the store's latency cache) and returns them in place of timing it again
    TAKES_KNOWN_LATENCY: bool = False

    def measure_latency(self, arch: Arch) -> dict[str, float]:
        """Latency metrics of one arch measured on this worker's device (a device-class worker
        calls only this). The default runs ``evaluate`` and keeps ``LATENCY_METRICS`` and ``LATENCY_FLAGS``; a workload
        whose accuracy evaluation is costly overrides it with a latency-only path."""
        metrics = self.evaluate(arch)
        return {k: float(metrics[k]) for k in self.LATENCY_METRICS + self.LATENCY_FLAGS if k in metrics}

    @abstractmethod
    def device_profile(self) -> dict[str, Any]:
        """Where latency was measured: cpu model / gpu name, torch version, threads, dtype, batch."""

    @abstractmethod
    def export(self, arch: Arch, out_dir: Path, metadata: dict[str, Any]) -> list[Path]:
        """Write the deployable folder; ``metadata`` goes into arch.json. Returns files written.

        ``arch.json`` must hold ``"kind": cls.kind`` so ``nasforge.load`` finds ``load_export``.
        """

    @classmethod
    @abstractmethod
    def load_export(cls, path: Path, meta: dict[str, Any]) -> Any:
        """Rebuild the exported model (a plain ``nn.Module`` in eval mode) from its folder."""


