"""Ray actors that hold a model once and evaluate candidates; latency measurement; Tune glue."""

from nasforge.core.registry import Registry

WORKLOADS: Registry = Registry(
    "workload",
    {
        "supernet": "nasforge.workers.supernet_workload:SupernetWorkload",
        "compression": "nasforge.workers.compression_workload:CompressionWorkload",
    },
)


def workload_kind(spec) -> str:  # type: ignore[no-untyped-def]
    """``supernet`` when the job names a supernet, ``compression`` when it names a model.

    A ``supernet.name`` of the form ``package.module:Class`` names a Workload class outside
    nasforge (e.g. the torch-free toy of the tests); that path is the kind, and every worker
    imports it."""
    if spec.supernet is not None and ":" in spec.supernet.name:
        return str(spec.supernet.name)
    return "supernet" if spec.supernet is not None else "compression"


__all__ = ["WORKLOADS", "workload_kind"]
