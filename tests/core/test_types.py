import json
import subprocess
import sys

import numpy as np
import pytest

from nasforge.core.errors import JobSpecError
from nasforge.core.spec import parse_job_text
from nasforge.core.types import Arch, Constraint, EvalResult


def test_arch_key_is_order_independent_and_stable_across_processes() -> None:
    a = Arch("s", 1, {"b": 2, "a": "x", "c": 0.5})
    b = Arch("s", 1, {"c": 0.5, "a": "x", "b": 2})
    assert a == b and a.key() == b.key() and hash(a) == hash(b)
    code = "from nasforge.core.types import Arch; print(Arch('s', 1, {'c': 0.5, 'b': 2, 'a': 'x'}).key())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == a.key()


def test_arch_distinguishes_space_version_and_values() -> None:
    a = Arch("s", 1, {"k": 3})
    assert a.key() != Arch("s", 2, {"k": 3}).key()
    assert a.key() != Arch("t", 1, {"k": 3}).key()
    assert a.key() != Arch("s", 1, {"k": 5}).key()


def test_arch_json_round_trip_and_numpy_scalars() -> None:
    a = Arch("s", 1, {"k": np.int64(3), "w": np.float32(0.5)})
    assert type(a["k"]) is int and type(a["w"]) is float
    assert Arch.from_json(a.to_json()) == a
    assert json.loads(a.to_json())["choices"] == {"k": 3, "w": 0.5}
    with pytest.raises(TypeError):
        Arch("s", 1, {"k": [1, 2]})  # type: ignore[dict-item]


def test_constraint_violation() -> None:
    c = Constraint("latency_ms", "<=", 5.0)
    assert c.satisfied({"latency_ms": 4.0}) and c.violation({"latency_ms": 4.0}) == 0
    assert c.violation({"latency_ms": 7.0}) == pytest.approx(2.0)
    assert not c.satisfied({}) and c.violation({}) == float("inf")


def test_eval_result_is_frozen() -> None:
    r = EvalResult("k", {"accuracy": 0.9})
    with pytest.raises(TypeError):
        r.metrics["accuracy"] = 1.0  # type: ignore[index]


GOOD = """
name: ok
space: {name: bignas_cnn}
supernet: {name: bignas}
training: {epochs: 1}
strategy: {name: random}
objectives: [{metric: accuracy, direction: maximize}, {metric: latency_ms, direction: minimize}]
constraints: ["latency_ms <= 5", {metric: flops, op: "<", bound: 1e6}]
"""


def test_job_spec_parses_constraint_forms() -> None:
    spec = parse_job_text(GOOD)
    cons = spec.constraint_list()
    assert [str(c) for c in cons] == ["latency_ms <= 5", "flops < 1e+06"]
    assert spec.workers.count == 2 and spec.budget.evaluations == 100


def test_job_spec_device_class_latency_metric() -> None:
    spec = parse_job_text(GOOD.replace("latency_ms <= 5", "latency_ms@a100 <= 5"))
    assert spec.constraint_list()[0].metric == "latency_ms@a100"
    with pytest.raises(JobSpecError, match="only latency metrics take a device class"):
        parse_job_text(GOOD.replace("latency_ms <= 5", "accuracy@a100 >= 0.5"))


def test_direction_words_and_metric_suggestions() -> None:
    text = GOOD.replace("direction: maximize}", "direction: Max}").replace("direction: minimize}", "direction: minimise}")
    assert [o.direction.value for o in parse_job_text(text).objective_list()] == ["maximize", "minimize"]
    with pytest.raises(JobSpecError, match="Input should be 'maximize' or 'minimize'"):
        parse_job_text(GOOD.replace("direction: maximize}", "direction: upwards}"))
    for wrong, meant in (("acuracy", "accuracy"), ("FLOPs", "flops"), ("latency", "latency_ms")):
        with pytest.raises(JobSpecError, match=f"unknown metric '{wrong}' \\(did you mean '{meant}'\\?\\)"):
            parse_job_text(GOOD.replace("{metric: accuracy,", f"{{metric: {wrong},"))
    with pytest.raises(JobSpecError, match="unknown metric 'top5'; known metrics"):
        parse_job_text(GOOD.replace("{metric: accuracy,", "{metric: top5,"))


def test_best_per_objective_folds_in_feasible_metrics_only() -> None:
    from nasforge.core.types import Constraint, Direction, Objective, best_per_objective

    objs = [Objective("accuracy", Direction.MAXIMIZE), Objective("latency_ms", Direction.MINIMIZE)]
    cons = [Constraint("accuracy", ">=", 0.5)]
    best = best_per_objective([{"accuracy": 0.9, "latency_ms": 3.0}, {"accuracy": 0.3, "latency_ms": 0.1},
                               {"accuracy": 0.6, "latency_ms": float("nan")}], objs, cons)
    assert best == {"accuracy": 0.9, "latency_ms": 3.0}
    assert best_per_objective([{"accuracy": 0.7, "latency_ms": 1.0}], objs, cons, best) is best
    assert best == {"accuracy": 0.9, "latency_ms": 1.0}
    assert best_per_objective([{"accuracy": 0.3}], objs, cons) == {}
