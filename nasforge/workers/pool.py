"""RayPoolEvaluator: a pool of Ray actors, each holding the job's Workload once.

- Placement: each actor asks for ``workers.cpus`` CPUs, ``workers.gpus`` GPUs and the custom
  resources in ``workers.resources``. Before any actor is created the request is checked
  against the live nodes: a request no node can satisfy raises ResourceUnavailableError at once
  (Ray would otherwise keep the actor pending forever).
- Dispatch: archs go out in chunks of ``workers.chunk_size``; each actor has up to two chunks in
  flight so it never waits for the driver between chunks.
- Faults: when an actor dies (process or node lost) the results it had sent are kept, its other
  chunks are re-queued on live actors and a replacement actor is started. Each arch it held counts
  one death and is retried alone on an idle worker (so a later death names its arch); an arch
  whose worker died more than ``workers.max_retries`` times comes back failed, with the reason.
  Exceptions raised by the workload come back as failed results at once.
- Device classes: for each CLASS in ``evaluation.latency.device_classes`` a second pool of
  workers asks for the Ray custom resource ``device:CLASS`` (plus the workers' CPUs / GPUs) and
  only measures latency (``Workload.measure_latency``); a candidate gets one column per class,
  ``latency_ms@CLASS`` and ``latency_p90_ms@CLASS``, which objectives and constraints may name.
  A class that no node has fails at start with ResourceUnavailableError.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from nasforge.core.errors import NasforgeError, ResourceUnavailableError
from nasforge.core.interfaces import Evaluator
from nasforge.core.spec import JobSpec
from nasforge.core.types import Arch, EvalResult
from nasforge.workers.base import ShippedFiles
from nasforge.workers.latency_cache import LatencyCache

log = logging.getLogger(__name__)

SETUP_TIMEOUT_S = 900.0
#: how long a replacement worker may take to start before the pool goes on without it
REPLACEMENT_TIMEOUT_S = 60.0


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` or start a local Ray instance. Returns True if this call started it."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": True,
        "configure_logging": False,
        "ignore_reinit_error": True,
    }
    if address:
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, TimeoutError, RayError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ResourceUnavailableError(f"--address {address}: cannot connect to Ray ({first}); is the cluster "
                                           "up and reachable from here?") from None
    else:
        # "local": always a new instance of our own, even when another Ray cluster runs here. Ray
        # turns token authentication on for it and says so on every start, inviting the user to opt
        # out; nasforge keeps it on and leaves the notice out (a warning that it is off still shows)
        auth_log = logging.getLogger("ray._private.authentication.authentication_token_setup")
        auth_log.addFilter(_token_auth_on_notice)
        try:
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)
        finally:
            auth_log.removeFilter(_token_auth_on_notice)
    return True


def _token_auth_on_notice(record: logging.LogRecord) -> bool:
    """False for Ray's notice that a new local instance has token authentication on."""
    return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def worker_request(spec: JobSpec) -> dict[str, float]:
    req: dict[str, float] = {"CPU": float(spec.workers.cpus)}
    if spec.workers.gpus:
        req["GPU"] = float(spec.workers.gpus)
    for name, amount in spec.workers.resources.items():
        req[name] = float(amount)
    return req


def fits_nowhere(request: Mapping[str, float], nodes: Sequence[Mapping[str, Any]]) -> bool:
    return placeable_workers(request, nodes) == 0


def placeable_workers(request: Mapping[str, float], nodes: Sequence[Mapping[str, Any]]) -> int:
    """How many workers with ``request`` fit on the live nodes' total resources."""
    total = 0
    for node in nodes:
        if not node.get("Alive", False):
            continue
        res = node.get("Resources", {})
        fits = min((int(res.get(k, 0.0) // v) if v > 0 else 10**9) for k, v in request.items())
        total += max(fits, 0)
    return total


def device_class_request(spec: JobSpec, device_class: str) -> dict[str, float]:
    """A latency worker of ``device_class``: the workers' CPUs / GPUs plus ``device:CLASS``."""
    req: dict[str, float] = {"CPU": float(spec.workers.cpus)}
    if spec.workers.gpus:
        req["GPU"] = float(spec.workers.gpus)
    req[f"device:{device_class}"] = 1.0
    return req


def check_placement(request: Mapping[str, float], count: int, device_class: str | None = None) -> int:
    """Raise ResourceUnavailableError if no node can host one worker; else the count to start."""
    nodes = ray.nodes()
    if device_class is not None and fits_nowhere(request, nodes):
        res = f"device:{device_class}"
        classes = sorted({k.removeprefix("device:") for n in nodes if n.get("Alive")
                          for k in n.get("Resources", {}) if k.startswith("device:")})
        in_class = any(n.get("Alive") and n.get("Resources", {}).get(res, 0) > 0 for n in nodes)
        why = (f"the nodes with {res} lack the CPUs/GPUs a worker asks for ({dict(request)})" if in_class
               else f"no node of the Ray cluster has the custom resource {res!r}")
        raise ResourceUnavailableError(
            f"evaluation.latency.device_classes: {device_class!r}: {why}; classes on this cluster: "
            f"{classes or 'none'}; start the nodes of that class with --resources '{{\"{res}\": 1}}' "
            "or remove the class from the job"
        )
    fits = placeable_workers(request, nodes)
    if fits == 0:
        have: dict[str, float] = {}
        for node in nodes:
            if node.get("Alive"):
                for k, v in node.get("Resources", {}).items():
                    if not k.startswith("node:") and k not in ("memory", "object_store_memory"):
                        have[k] = max(have.get(k, 0.0), v)
        missing = [k for k, v in request.items() if have.get(k, 0.0) < v]
        hint = (
            "set workers.gpus: 0 or submit with --address to a cluster that has GPUs"
            if "GPU" in missing
            else "lower workers.cpus / workers.resources or add nodes that have them"
        )
        raise ResourceUnavailableError(
            f"workers: each worker asks for {dict(request)} but no node of the Ray cluster has "
            f"{', '.join(missing) or 'that much'} (largest node has {have}); {hint}"
        )
    if fits < count:
        log.warning("workers.count=%d but the cluster fits only %d such workers; starting %d", count, fits, fits)
    return min(count, fits)


@ray.remote(max_restarts=0, max_task_retries=0)
class EvalWorker:
    """Holds one Workload; evaluates chunks of archs (as JSON) and returns result dicts."""

    def __init__(self, kind: str, spec_json: dict[str, Any], job_dir: str, threads: int, index: int,
                 files: list[Any] | None = None):
        import warnings

        import torch

        from nasforge.core.errors import NasforgeWarning
        from nasforge.core.registry import import_object
        from nasforge.workers import WORKLOADS

        warnings.simplefilter("ignore", NasforgeWarning)  # the driver said it, once, before the workers started
        self.threads = threads
        torch.set_num_threads(threads)
        self.name = f"w{index}@{socket.gethostname()}:{os.getpid()}"
        spec = JobSpec.model_validate(spec_json)
        # a registered kind, or "package.module:Class" (worker processes see only static registries)
        workload_cls = import_object(kind) if ":" in kind else WORKLOADS.get(kind)
        self.workload = workload_cls(spec, Path(job_dir))
        # ``files``: [ObjectRef] (in a list, so Ray does not fetch it before it is needed)
        self.workload.shipped = ShippedFiles((lambda ref=files[0]: ray.get(ref)) if files else None)
        self.workload.setup()
        self.profile = self.workload.device_profile()

    def ready(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.profile, "node": ray.get_runtime_context().get_node_id(),
                "pid": os.getpid()}

    def evaluate(self, archs_json: list[str], latency_only: bool = False,
                 known: dict[str, dict[str, float]] | None = None) -> list[dict[str, Any]]:
        """``known``: latency figures recorded for some of these archs on this worker's device
        profile (the store's latency cache), used in place of timing them again."""
        import torch

        torch.set_num_threads(self.threads)  # a reused process may have been changed since
        out = []
        takes = getattr(self.workload, "TAKES_KNOWN_LATENCY", False)
        for text in archs_json:
            arch = Arch.from_json(text)
            t0 = time.perf_counter()
            seen = (known or {}).get(arch.key()) if takes else None
            try:
                if latency_only:
                    metrics = self.workload.measure_latency(arch, seen) if seen else self.workload.measure_latency(arch)
                else:
                    metrics = self.workload.evaluate(arch, seen) if seen else self.workload.evaluate(arch)
                error = None
            except Exception as e:  # noqa: BLE001 - a candidate's failure is data, not a crash
                metrics = {}
                error = f"{type(e).__name__}: {e}"
                tb = traceback.format_exc(limit=3)
                log.debug("candidate %s failed: %s", arch.key(), tb)
            out.append(
                {
                    "arch_key": arch.key(),
                    "metrics": metrics,
                    "device": self.profile,
                    "worker": self.name,
                    "duration_s": time.perf_counter() - t0,
                    "error": error,
                }
            )
        return out


@dataclass
class _Slot:
    actor: Any
    name: str
    node_id: str = ""
    pid: int = 0
    in_flight: dict[Any, list[int]] = field(default_factory=dict)  # object ref -> arch indices


def _user_error_in(text: str) -> NasforgeError | None:
    """The :class:`NasforgeError` a Ray error's text ends with (an actor that died in its creation
    task carries only the text of its traceback), rebuilt; ``None`` when it is anything else (a bug)."""
    import importlib
    import re

    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    m = re.match(r"^(nasforge(?:\.\w+)*)\.(\w+): (.+)$", lines[-1]) if lines else None
    if m is None:
        return None
    try:
        cls = getattr(importlib.import_module(m.group(1)), m.group(2))
    except (ImportError, AttributeError):
        return None
    if not (isinstance(cls, type) and issubclass(cls, NasforgeError)):
        return None
    try:
        return cls(m.group(3))  # type: ignore[no-any-return]
    except TypeError:
        return NasforgeError(m.group(3))


class RayPoolEvaluator(Evaluator):
    """Evaluator over ``spec.workers.count`` Ray actors (see module docstring)."""

    def __init__(
        self,
        spec: JobSpec,
        job_dir: Path,
        *,
        kind: str,
        address: str | None = None,
        max_in_flight: int = 2,
        device_class: str | None = None,
    ):
        self.spec = spec
        self.kind = kind
        self.job_dir = Path(job_dir)
        self.max_in_flight = max_in_flight
        self.chunk_size = spec.workers.chunk_size
        self.max_retries = spec.workers.max_retries
        self.threads = spec.evaluation.latency.threads
        self.device_class = device_class
        self.class_pools: dict[str, RayPoolEvaluator] = {}
        self.device_profiles: dict[str, dict[str, Any]] = {}
        self._latency_cache: LatencyCache | None = None
        self._files_ref: Any = None  # ObjectRef of the worker files; False: the workload has none
        self._started_ray = ensure_ray(address, num_cpus=max(os.cpu_count() or 1, int(spec.workers.count * spec.workers.cpus)))
        self.request = worker_request(spec) if device_class is None else device_class_request(spec, device_class)
        try:
            self._next_index = 0
            self.slots: list[_Slot] = []
            self.restarts = 0
            self.lost_workers = 0
            self.requeued = 0  # candidates sent again after their worker died
            if device_class is None:
                classes = list(dict.fromkeys(spec.evaluation.latency.device_classes))
                for cls in classes:  # every class checked before any worker starts
                    check_placement(device_class_request(spec, cls), 1, cls)
                self.count = check_placement(self.request, spec.workers.count)
                self._start_actors(self.count)
                for cls in classes:
                    self.class_pools[cls] = RayPoolEvaluator(spec, job_dir, kind=kind, address=address,
                                                             max_in_flight=max_in_flight, device_class=cls)
            else:
                self.count = check_placement(self.request, spec.workers.count, device_class)
                self._start_actors(self.count)
        except BaseException:
            self.close()
            raise

    @property
    def latency_cache(self) -> LatencyCache | None:
        """The store's latency cache (set by the job runner; None: every child is timed)."""
        return self._latency_cache

    @latency_cache.setter
    def latency_cache(self, cache: LatencyCache | None) -> None:
        self._latency_cache = cache
        for pool in self.class_pools.values():  # keyed by device profile: each class has its own
            pool.latency_cache = cache

    # ---- actors ---------------------------------------------------------------------------
    def _new_actor(self) -> Any:
        idx = self._next_index
        self._next_index += 1
        opts: dict[str, Any] = {"num_cpus": self.request["CPU"]}
        if "GPU" in self.request:
            opts["num_gpus"] = self.request["GPU"]
        custom = {k: v for k, v in self.request.items() if k not in ("CPU", "GPU")}
        if custom:
            opts["resources"] = custom
        return EvalWorker.options(**opts).remote(  # type: ignore[attr-defined]
            self.kind, self.spec.to_dict(), str(self.job_dir), self.threads, idx, self._files()
        )

    def _files(self) -> list[Any] | None:
        """The workload's :meth:`~nasforge.workers.base.Workload.worker_files`, read once and put in
        Ray's object store: every actor, on any node, can get them from there ([ObjectRef], None:
        none); an actor fetches them only when its setup needs them."""
        if self._files_ref is None:
            from nasforge.workers import WORKLOADS

            files = {name: (str(path), Path(path).read_bytes())  # Registry.get imports "package.module:Class"
                     for name, path in WORKLOADS.get(self.kind).worker_files(self.spec, self.job_dir).items()}
            self._files_ref = ray.put(files) if files else False
        return [self._files_ref] if self._files_ref else None

    def _start_actors(self, n: int, timeout_s: float = SETUP_TIMEOUT_S) -> None:
        actors = [self._new_actor() for _ in range(n)]
        refs = [a.ready.remote() for a in actors]
        try:
            infos = ray.get(refs, timeout=timeout_s)
        except GetTimeoutError:
            for a in actors:
                ray.kill(a)
            raise ResourceUnavailableError(
                f"workers did not start within {timeout_s:.0f} s; check the cluster's free resources"
            ) from None
        except RayActorError as e:
            user = _user_error_in(str(e))
            if user is not None:  # the job's input (a file, an option) is wrong: one line, as on the driver
                raise type(user)(f"a worker could not load the workload: {user}") from None
            cause = getattr(e, "cause", None) or e
            raise RuntimeError(f"a worker failed while loading the workload: {cause}") from None
        for actor, info in zip(actors, infos, strict=True):
            self.slots.append(_Slot(actor=actor, name=info["name"], node_id=info["node"], pid=info["pid"]))
        self.node_of = {**getattr(self, "node_of", {}), **{info["name"]: info["node"] for info in infos}}
        self.device_profiles.update({info["name"]: info["device"] for info in infos})  # a replacement keeps the rest

    @property
    def worker_names(self) -> list[str]:
        return [s.name for s in self.slots]

    # ---- evaluation -----------------------------------------------------------------------
    def evaluate(
        self, archs: Sequence[Arch], on_result: Callable[[EvalResult], None] | None = None
    ) -> list[EvalResult]:
        """Results in input order; with device classes, each ok result also carries the latency
        measured on every class (a failure there fails the candidate, with the class named)."""
        if not self.class_pools:
            return self._evaluate(archs, on_result, latency_only=self.device_class is not None)
        results = self._evaluate(archs, None)
        ok = [i for i, r in enumerate(results) if r.ok]
        for cls, pool in self.class_pools.items():
            measured = pool._evaluate([archs[i] for i in ok], None, latency_only=True)
            for i, lat in zip(ok, measured, strict=True):
                r = results[i]
                if not r.ok:
                    continue
                if not lat.ok:
                    results[i] = replace(r, error=f"latency on device class {cls!r}: {lat.error}")
                    continue
                metrics = {**r.metrics, **{f"{k}@{cls}": v for k, v in lat.metrics.items()}}
                device = {**(r.device or {}), f"latency@{cls}": {"worker": lat.worker,
                                                                 "node": pool.node_of.get(lat.worker or "")}}
                results[i] = replace(r, metrics=metrics, device=device)
        if on_result is not None:
            for r in results:
                on_result(r)
        return results

    def _evaluate(
        self, archs: Sequence[Arch], on_result: Callable[[EvalResult], None] | None = None,
        latency_only: bool = False,
    ) -> list[EvalResult]:
        results: list[EvalResult | None] = [None] * len(archs)
        payload = [a.to_json() for a in archs]
        deaths = [0] * len(archs)
        queue: deque[list[int]] = deque(
            list(range(i, min(i + self.chunk_size, len(archs)))) for i in range(0, len(archs), self.chunk_size)
        )
        ref_to_slot: dict[Any, _Slot] = {}

        cache = self.latency_cache

        def record(i: int, res: EvalResult) -> None:
            results[i] = res
            if cache is not None:
                cache.record(res)
            if on_result is not None:
                on_result(res)

        def known(slot: _Slot, chunk: list[int]) -> dict[str, dict[str, float]] | None:
            """What the store's latency cache holds for this chunk on this worker's device profile."""
            device_id = (self.device_profiles.get(slot.name) or {}).get("id")
            if cache is None or not device_id:
                return None
            return cache.get([archs[i].key() for i in chunk], str(device_id)) or None

        def fail(i: int, error: str) -> None:
            record(i, EvalResult(arch_key=archs[i].key(), error=error))

        def dispatch() -> None:
            for slot in sorted(self.slots, key=lambda s: len(s.in_flight)):
                while queue and len(slot.in_flight) < self.max_in_flight:
                    if any(deaths[c[0]] for c in slot.in_flight.values()):
                        break  # a retry runs alone: nothing queues behind it
                    if deaths[queue[0][0]] and slot.in_flight:
                        break  # a retry waits for an idle worker
                    chunk = queue.popleft()
                    ref = slot.actor.evaluate.remote([payload[i] for i in chunk], latency_only, known(slot, chunk))
                    slot.in_flight[ref] = chunk
                    ref_to_slot[ref] = slot

        dispatch()
        while ref_to_slot:
            ready, _ = ray.wait(list(ref_to_slot), num_returns=1)
            ref = ready[0]
            slot = ref_to_slot[ref]
            try:
                rows = ray.get(ref)
            except RayActorError as e:
                self._replace(slot, ref_to_slot, queue, deaths, e, record, fail)
            except RayError as e:  # task-level failure not caused by actor death
                del ref_to_slot[ref]
                for i in slot.in_flight.pop(ref):
                    fail(i, f"worker error: {type(e).__name__}: {e}")
            else:
                del ref_to_slot[ref]
                for i, row in zip(slot.in_flight.pop(ref), rows, strict=True):
                    record(i, EvalResult(**row))
            dispatch()
        return [r for r in results if r is not None]

    def _replace(self, dead: _Slot, ref_to_slot: dict[Any, _Slot], queue: deque[list[int]],
                 deaths: list[int], err: Exception, record: Callable[[int, EvalResult], None],
                 fail: Callable[[int, str], None]) -> None:
        """An actor died: keep what it finished, requeue the rest one arch per chunk, fail repeat
        killers, start a new one.

        Calls that came back before the death keep their results (``ray.wait`` may hand the
        failed call back first). Which of the others killed it is unknown (a reply sent just before
        the death can be lost too), so each of their archs counts one death and goes back as a
        chunk of one that runs alone on an idle worker: from then on a death names its arch."""
        lost: list[list[int]] = []
        for ref, chunk in dead.in_flight.items():
            ref_to_slot.pop(ref, None)
            try:
                rows = ray.get(ref, timeout=REPLACEMENT_TIMEOUT_S)
            except (RayError, GetTimeoutError):
                lost.append(chunk)
                continue
            for i, row in zip(chunk, rows, strict=True):
                record(i, EvalResult(**row))
        dead.in_flight.clear()
        if dead in self.slots:
            self.slots.remove(dead)
            self.lost_workers += 1
        log.warning("worker %s died (%s); re-queueing %d candidates", dead.name, type(err).__name__,
                    sum(len(c) for c in lost))
        for c in lost:
            for i in c:
                deaths[i] += 1
                if deaths[i] > self.max_retries:
                    fail(i, f"worker died {deaths[i]} times while evaluating this candidate "
                            f"(last: {type(err).__name__}); not retried (workers.max_retries={self.max_retries})")
                else:
                    queue.append([i])
                    self.requeued += 1
        # room for a replacement on the live nodes (totals: freed resources show up with a delay)
        if placeable_workers(self.request, ray.nodes()) > len(self.slots):
            try:
                self._start_actors(1, timeout_s=REPLACEMENT_TIMEOUT_S)
                self.restarts += 1
            except Exception as e:  # noqa: BLE001 - keep going on the survivors
                log.warning("could not start a replacement worker: %s", e)
        else:
            log.warning("no room for a replacement worker; going on with %d", len(self.slots))
        if not self.slots:
            raise RuntimeError("every worker died and none could be restarted")

    def close(self) -> None:
        for pool in getattr(self, "class_pools", {}).values():
            pool.close()
        self.class_pools = {}
        for slot in getattr(self, "slots", []):
            try:
                ray.kill(slot.actor)
            except Exception:  # noqa: BLE001, S110 - already gone
                pass
        self.slots = []
        if getattr(self, "_started_ray", False) and ray.is_initialized():
            ray.shutdown()
            self._started_ray = False
