"""SearchDriver with the real SQLite store: budget, duplicates, failures, constraints, resume."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from nasforge.core.interfaces import NullTracker
from nasforge.core.types import Arch, CandidateStatus, Constraint, Direction, EvalResult, JobState, Objective
from nasforge.search import STRATEGIES
from nasforge.search.base import Strategy
from nasforge.search.driver import SearchDriver
from nasforge.store import open_store
from nasforge.workers.local import LocalEvaluator
from tests.toy import ToySpace, toy_metrics

OBJ = [Objective("accuracy", Direction.MAXIMIZE), Objective("latency_ms", Direction.MINIMIZE)]


@pytest.fixture
def store(tmp_path: Path):
    s = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.close()


def _driver(store, strategy: Strategy, evaluator, *, budget: int, batch: int = 8,
            constraints: Sequence[Constraint] = (), job=None) -> SearchDriver:
    job = job or store.create_job({"name": "t"}, name="t", seed=0)
    store.set_job_state(job.id, JobState.RUNNING)
    return SearchDriver(job=job, space=strategy.space, strategy=strategy, evaluator=evaluator, store=store,
                        tracker=NullTracker(), objectives=OBJ, constraints=constraints,
                        max_evaluations=budget, batch_size=batch)


def _strategy(name: str, seed: int = 0, constraints: Sequence[Constraint] = (), **options) -> Strategy:
    return STRATEGIES.get(name)(ToySpace(), objectives=OBJ, constraints=constraints, seed=seed, options=options)


def test_budget_is_respected_and_keys_are_unique(store) -> None:
    ev = LocalEvaluator(toy_metrics)
    summary = _driver(store, _strategy("random"), ev, budget=30, batch=8).run()
    cands = store.get_candidates(summary.job_id)
    assert summary.state == JobState.DONE
    assert summary.evaluated == 30 == len(cands) == ev.calls
    assert len({c.key for c in cands}) == 30
    assert summary.pareto_keys and all(c.pareto == (c.key in summary.pareto_keys) for c in cands)


class RepeatingStrategy(Strategy):
    """Asks the same few archs every round (a strategy that keeps proposing known candidates)."""

    def __init__(self, space, archs: list[Arch], **kw):
        super().__init__(space, **kw)
        self.archs = archs
        self.told = 0

    def ask(self, n: int) -> list[Arch]:
        return self.archs[:n]

    def tell(self, archs, results) -> None:
        assert all(r.ok for r in results)
        self.told += 1


def test_known_archs_are_never_evaluated_twice(store) -> None:
    space = ToySpace()
    archs = [space.make({**space.smallest().choices, "w0": w}) for w in (1, 2, 3)]
    strat = RepeatingStrategy(space, archs + archs[:1], objectives=OBJ)
    ev = LocalEvaluator(toy_metrics)
    summary = _driver(store, strat, ev, budget=50).run()
    assert ev.calls == 3
    assert "only known candidates" in summary.stop_reason
    assert strat.told >= 5  # it was told the stored results, round after round


class FinishingStrategy(RepeatingStrategy):
    """Asks its archs once, then nothing, and says why."""

    def ask(self, n: int) -> list[Arch]:
        return [] if self.told else self.archs[:n]

    def finished_why(self) -> str:
        return "it asked all it had"

    def summary(self) -> str:
        return f"told {self.told} times"


def test_a_finished_strategy_says_why_in_the_stop_reason(store) -> None:
    space = ToySpace()
    archs = [space.make({**space.smallest().choices, "w0": w}) for w in (1, 2)]
    summary = _driver(store, FinishingStrategy(space, archs, objectives=OBJ), LocalEvaluator(toy_metrics), budget=50).run()
    assert summary.state == JobState.DONE and summary.evaluated == 2
    assert summary.stop_reason == "strategy has nothing more to ask: it asked all it had"
    assert summary.strategy_note == "told 1 times"  # the strategy's own line, after the search


def test_failures_are_recorded_and_the_job_goes_on(store) -> None:
    def flaky(arch: Arch) -> dict[str, float]:
        if arch["mode"] == "raise":
            raise ValueError("boom")
        return toy_metrics(arch)

    summary = _driver(store, _strategy("random", seed=3), LocalEvaluator(flaky), budget=40).run()
    failed = store.get_candidates(summary.job_id, status=CandidateStatus.FAILED)
    done = store.get_candidates(summary.job_id, status=CandidateStatus.DONE)
    assert failed and all("ValueError: boom" in c.error for c in failed)
    assert len(done) + len(failed) == 40
    assert summary.failed == len(failed)


def test_a_job_whose_every_evaluation_fails_stops_failed_after_a_few(store) -> None:
    """A model / data / option mistake fails every candidate the same way: the job stops as failed
    after FAILED_BEFORE_ANY_DONE evaluations (it ran the whole budget and ended 'done', exit 0)."""
    from nasforge.search.driver import FAILED_BEFORE_ANY_DONE

    def broken(arch: Arch) -> dict[str, float]:
        raise RuntimeError("Expected target size [256, 256], got [256, 64]")

    ev = LocalEvaluator(broken)
    summary = _driver(store, _strategy("random"), ev, budget=200, batch=6).run()
    assert summary.state == JobState.FAILED
    assert FAILED_BEFORE_ANY_DONE <= ev.calls < FAILED_BEFORE_ANY_DONE + 6  # the round that crossed it
    assert summary.error == (f"all {ev.calls} evaluations failed, none done (the last: RuntimeError: Expected "
                             "target size [256, 256], got [256, 64]); the cause is in the setup, not in the "
                             "candidates: fix it and submit the job again")
    # a budget smaller than that ends failed too; one success keeps the job going to its budget
    small = LocalEvaluator(broken)
    assert _driver(store, _strategy("random"), small, budget=4).run().state == JobState.FAILED and small.calls == 4

    def late(arch: Arch) -> dict[str, float]:
        late.calls += 1
        if late.calls != 13:
            raise ValueError("boom")
        return toy_metrics(arch)

    late.calls = 0
    one = _driver(store, _strategy("random"), LocalEvaluator(late), budget=30, batch=13).run()
    assert one.state == JobState.DONE and one.error is None and one.evaluated == 30


def test_candidates_skipped_over_a_cost_limit_are_not_failures_of_the_setup(store) -> None:
    never = Constraint("flops", "<=", 1.0)  # no toy arch is this cheap: every candidate is skipped
    ev = LocalEvaluator(toy_metrics)
    summary = _driver(store, _strategy("random", constraints=[never]), ev, budget=24, batch=8,
                      constraints=[never]).run()
    assert ev.calls == 0 and summary.state == JobState.DONE and summary.error is None


def test_cost_constraint_skips_evaluation_and_front_is_feasible(store) -> None:
    limit = Constraint("flops", "<=", 40_000.0)
    ev = LocalEvaluator(toy_metrics)
    summary = _driver(store, _strategy("random", seed=1, constraints=[limit]), ev, budget=40,
                      constraints=[limit]).run()
    cands = store.get_candidates(summary.job_id)
    skipped = [c for c in cands if c.error and "violates constraint flops" in c.error]
    assert skipped and ev.calls == 40 - len(skipped)
    front = [c for c in cands if c.pareto]
    assert front and all(c.metrics["flops"] <= 40_000 for c in front)


class InterruptingEvaluator(LocalEvaluator):
    """Raises KeyboardInterrupt on its ``stop_at``-th evaluation, like Ctrl-C mid-round."""

    def __init__(self, fn, stop_at: int):
        super().__init__(fn)
        self.stop_at = stop_at

    def evaluate(self, archs, on_result=None) -> list[EvalResult]:
        out = []
        for a in archs:
            if self.calls + 1 == self.stop_at:
                raise KeyboardInterrupt
            out.extend(super().evaluate([a], on_result))
        return out


@pytest.mark.parametrize("stop_at", [5, 23, 38])
def test_resume_reaches_the_same_front_without_reevaluating(store, tmp_path: Path, stop_at: int) -> None:
    full_ev = LocalEvaluator(toy_metrics)
    full = _driver(store, _strategy("nsga2", seed=7, population=8), full_ev, budget=48).run()

    first = InterruptingEvaluator(toy_metrics, stop_at)
    drv = _driver(store, _strategy("nsga2", seed=7, population=8), first, budget=48)
    with pytest.raises(KeyboardInterrupt):
        drv.run()
    done_before = {c.key: c.finished_at for c in store.get_candidates(drv.job.id, status=CandidateStatus.DONE)}
    # every evaluation that finished before the interrupt is stored, also those of the unfinished round
    assert len(done_before) == stop_at - 1
    second = LocalEvaluator(toy_metrics)
    resumed = _driver(store, _strategy("nsga2", seed=7, population=8), second, budget=48, job=drv.job).run()

    assert sorted(resumed.pareto_keys) == sorted(full.pareto_keys)
    keys_full = [c.key for c in store.get_candidates(full.job_id)]
    keys_resumed = [c.key for c in store.get_candidates(resumed.job_id)]
    assert keys_resumed == keys_full  # the same candidates, asked in the same order
    after = {c.key: c.finished_at for c in store.get_candidates(resumed.job_id)}
    assert all(after[k] == t for k, t in done_before.items())  # done ones were not evaluated again
    assert len(done_before) + second.calls == 48


def test_results_reach_the_store_while_their_round_runs(store, monkeypatch) -> None:
    """A round's finished results are stored before the round ends (a kill -9 then loses at most
    RESULT_FLUSH_S of work), each once, and the job's counts are those of an unhurried run."""
    import time

    import nasforge.search.driver as driver_module

    monkeypatch.setattr(driver_module, "RESULT_FLUSH_S", 0.0)
    seen: list[int] = []

    class Peeking(LocalEvaluator):
        def evaluate(self, archs, on_result=None) -> list[EvalResult]:
            out, earlier = [], self.calls  # earlier rounds' results are all stored by the time we wait
            for i, a in enumerate(archs):
                out.extend(super().evaluate([a], on_result))
                if i == 2:  # three finished in this round: wait for the store to show them
                    deadline = time.monotonic() + 10
                    while len(store.get_candidates(drv.job.id, status=CandidateStatus.DONE)) < earlier + 3:
                        assert time.monotonic() < deadline, "results of the running round never reached the store"
                        time.sleep(0.01)
                    seen.append(i)
            return out

    drv = _driver(store, _strategy("random", seed=3), Peeking(toy_metrics), budget=16, batch=8)
    summary = drv.run()
    assert seen == [2, 2] and summary.evaluated == 16
    cands = store.get_candidates(drv.job.id)
    assert len(cands) == 16 and all(c.status == CandidateStatus.DONE for c in cands)


def test_random_search_that_exhausts_a_small_space_says_so() -> None:
    from tests.compress.helpers import synthetic_space

    space = synthetic_space([8, 8], bits=[2, 3])  # 4 allocations
    s = STRATEGIES.get("random")(space, objectives=[Objective("kl", Direction.MINIMIZE)], seed=0,
                                 options={"max_tries": 50})
    assert len(s.ask(10)) == 4 and s.ask(10) == []
    assert s.finished_why() == "the space looks exhausted: 4 architectures asked, none new in 50 samples each"


def test_job_folder_best_json_names_its_candidate_and_is_no_export(store, tmp_path, monkeypatch) -> None:
    """finish_artifacts writes best.json (versioned, the first objective's best on the front, how to
    export it); nasforge.load on the job folder says it is no export instead of a KeyError."""
    import json

    import nasforge
    from nasforge.compose import BEST_FILE, finish_artifacts
    from nasforge.core.errors import ExportError
    from nasforge.core.paths import job_dir
    from nasforge.core.types import ARCH_SCHEMA_VERSION
    from tests.toy import toy_spec

    monkeypatch.setenv("NASFORGE_HOME", str(tmp_path / "home"))
    summary = _driver(store, _strategy("random"), LocalEvaluator(toy_metrics), budget=16).run()
    job = store.get_job(summary.job_id)
    front = [c for c in store.get_candidates(job.id) if c.pareto]
    spec = toy_spec(objectives=[{"metric": m, "direction": d} for m, d in
                                (("accuracy", "maximize"), ("latency_ms", "minimize"))])
    artifacts = finish_artifacts(store, job, spec, front)
    best = json.loads(artifacts[BEST_FILE].read_text())
    top = max(front, key=lambda c: c.metrics["accuracy"])
    assert best["schema_version"] == ARCH_SCHEMA_VERSION and best["candidate_id"] == top.id
    assert best["arch"] == top.arch.to_dict() and best["metrics"]["accuracy"] == top.metrics["accuracy"]
    assert best["export"] == f"nasforge export {job.id} {top.id} -o NAME"
    (job_dir(job.id) / "arch.json").write_text(json.dumps(best))  # a folder with an arch.json of another kind
    with pytest.raises(ExportError, match=r"not the arch\.json of an export \(it names no kind\); give the folder"):
        nasforge.load(job_dir(job.id))
