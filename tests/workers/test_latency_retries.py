"""A timing that other load disturbed (median call > 2x the fastest) is repeated; the calmest is kept."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from nasforge.workers.latency import DISTURBED_SPREAD, measure_latency


class _Stalls(nn.Module):
    """Sleeps ``stall_s`` in the calls whose (1-based) number ``stalled(n)`` picks: a stand-in for other
    processes taking the core during a timing (the model itself is a real, cheap forward)."""

    def __init__(self, stalled, stall_s: float = 0.004):
        super().__init__()
        self.lin, self.calls, self.stalled, self.stall_s = nn.Linear(8, 8), 0, stalled, stall_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.stalled(self.calls):
            time.sleep(self.stall_s)
        return self.lin(x)


X = torch.randn(1, 8)


def test_a_disturbed_timing_is_taken_again_and_the_calm_one_reported() -> None:
    # warmup 1 + repeats 9 per attempt: calls 1-10 are the first attempt, most of its timed calls stall
    model = _Stalls(lambda n: 3 <= n <= 10)
    out = measure_latency(model, X, warmup=1, repeats=9, retries=2, pause_s=0.0)
    assert out["latency_attempts"] >= 2
    assert out["latency_median_ms"] < 2.0  # the stalled attempt (median 4 ms) is not the one reported
    assert out["latency_disturbed"] == float(out["latency_median_ms"] > DISTURBED_SPREAD * out["latency_min_ms"])


def test_a_timing_disturbed_every_time_is_flagged_after_the_retries() -> None:
    model = _Stalls(lambda n: n % 10 not in (2,))  # one calm timed call per attempt
    out = measure_latency(model, X, warmup=1, repeats=9, retries=2, pause_s=0.0)
    assert out["latency_attempts"] == 3 and out["latency_disturbed"] == 1.0
    assert out["latency_median_ms"] > DISTURBED_SPREAD * out["latency_min_ms"]


def test_no_retries_times_once_and_a_steady_timing_is_not_repeated() -> None:
    out = measure_latency(_Stalls(lambda n: n != 2), X, warmup=1, repeats=9, retries=0, pause_s=0.0)
    assert out["latency_attempts"] == 1 and out["latency_disturbed"] == 1.0
    # every call equally slow (2 ms): a steady timing, not a disturbed one
    steady = measure_latency(_Stalls(lambda n: True, stall_s=0.002), X, warmup=1, repeats=9, retries=2, pause_s=0.0)
    assert steady["latency_attempts"] == 1 and steady["latency_disturbed"] == 0.0
    with pytest.raises(ValueError, match="retries"):
        measure_latency(_Stalls(lambda n: False), X, retries=-1)


def test_the_minimum_is_taken_once_and_never_flagged() -> None:
    out = measure_latency(_Stalls(lambda n: n != 2), X, warmup=1, repeats=9, retries=2, statistic="min", pause_s=0.0)
    assert out["latency_attempts"] == 1 and out["latency_disturbed"] == 0.0
    assert out["latency_ms"] == out["latency_min_ms"] < 2.0  # the one calm call
