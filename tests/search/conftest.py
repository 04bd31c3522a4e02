"""A torch-free toy space and a deterministic synthetic evaluation for the strategy tests.

``GridSpace`` has 12 categorical choices (ints, strings and a bool) and a depth choice that makes
canonicalization real: settings of blocks beyond the active depth are reset to their smallest
value, so many index rows build the same arch. ``grid_metrics`` gives two conflicting objectives:
``error`` falls with capacity but also rewards a hidden best kernel/activation setting (so a search
has something to learn), ``latency_ms`` grows with capacity. Archs with ``act == "silu"`` and
``kernel0 == 7`` fail (about 1 in 9), like a broken evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from nasforge.core.types import Arch, Direction, EvalResult, Objective, Scalar
from nasforge.spaces.base import SearchSpace

N_BLOCKS = 4
#: the setting of each block's kernel that lowers the error; a search has to discover it
HIDDEN_KERNELS = (5, 3, 7, 5)
HIDDEN_ACT = "gelu"


class GridSpace(SearchSpace):
    """12 choices: depth, 4 widths, 4 kernels, activation, expansion, squeeze-excite."""

    id = "grid_toy"
    version = 1

    def build_choices(self) -> dict[str, tuple[Scalar, ...]]:
        ch: dict[str, tuple[Scalar, ...]] = {"depth": (2, 3, 4)}
        ch.update({f"width{b}": (8, 16, 24, 32) for b in range(N_BLOCKS)})
        ch.update({f"kernel{b}": (3, 5, 7) for b in range(N_BLOCKS)})
        ch["act"] = ("relu", "gelu", "silu")
        ch["expand"] = (2, 4, 6)
        ch["use_se"] = (False, True)
        return ch

    def canonicalize(self, arch: Arch) -> Arch:
        depth = int(arch["depth"])
        changes: dict[str, Scalar] = {}
        for b in range(depth, N_BLOCKS):
            changes[f"width{b}"] = 8
            changes[f"kernel{b}"] = 3
        return arch.replace(**changes) if changes else arch

    def cost(self, arch: Arch) -> dict[str, float]:
        depth = int(arch["depth"])
        se = 1.25 if arch["use_se"] else 1.0
        flops = params = 0.0
        for b in range(depth):
            w, k = int(arch[f"width{b}"]), int(arch[f"kernel{b}"])
            flops += w * w * k * k * int(arch["expand"]) * se
            params += w * k * k * int(arch["expand"]) * se
        return {"flops": flops, "params": params}


def grid_metrics(space: GridSpace, arch: Arch) -> dict[str, float]:
    c = space.cost(arch)
    capacity = c["flops"] / 1e4
    depth = int(arch["depth"])
    misses = sum(int(arch[f"kernel{b}"]) != HIDDEN_KERNELS[b] for b in range(depth)) / depth
    error = 0.05 + 0.45 / (1.0 + capacity) + 0.2 * misses + (0.0 if arch["act"] == HIDDEN_ACT else 0.05)
    latency = 0.5 + capacity + {"relu": 0.0, "gelu": 0.3, "silu": 0.2}[str(arch["act"])]
    return {"error": error, "latency_ms": latency, **c}


def fails(arch: Arch) -> bool:
    return arch["act"] == "silu" and int(arch["kernel0"]) == 7


OBJECTIVES = [Objective("error", Direction.MINIMIZE), Objective("latency_ms", Direction.MINIMIZE)]


@pytest.fixture
def grid_space() -> GridSpace:
    return GridSpace()


@pytest.fixture
def grid_objectives() -> list[Objective]:
    return list(OBJECTIVES)


@pytest.fixture
def grid_evaluate() -> Callable[[Sequence[Arch]], list[EvalResult]]:
    """The synthetic evaluation: deterministic metrics, or an error for the failing archs."""
    space = GridSpace()

    def evaluate(archs: Sequence[Arch]) -> list[EvalResult]:
        return [EvalResult(a.key(), error="RuntimeError: toy evaluation failed on purpose") if fails(a)
                else EvalResult(a.key(), grid_metrics(space, a)) for a in archs]

    return evaluate
