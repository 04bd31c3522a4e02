"""LocalEvaluator: evaluates in the calling process, one arch after another.

For debugging a workload without Ray, and for driver tests that are about the loop and not about
placement. Same contract as every Evaluator: results in input order, failures as data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nasforge.core.interfaces import Evaluator
from nasforge.core.types import Arch, EvalResult


class LocalEvaluator(Evaluator):
    def __init__(self, evaluate_fn: Callable[[Arch], Mapping[str, float]], *, device: Mapping[str, Any] | None = None,
                 name: str = "local"):
        self.evaluate_fn = evaluate_fn
        self.device = dict(device) if device else None
        self.name = name
        self.calls = 0

    def evaluate(self, archs: Sequence[Arch], on_result: Callable[[EvalResult], None] | None = None) -> list[EvalResult]:
        out = []
        for arch in archs:
            self.calls += 1
            t0 = time.perf_counter()
            try:
                res = EvalResult(arch.key(), dict(self.evaluate_fn(arch)), self.device, self.name,
                                 time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - a candidate's failure is data
                res = EvalResult(arch.key(), {}, self.device, self.name, time.perf_counter() - t0,
                                 error=f"{type(e).__name__}: {e}")
            out.append(res)
            if on_result is not None:
                on_result(res)
        return out
