"""The compression summary line: the best allocation found beside the best uniform one."""

from __future__ import annotations

from nasforge.core.spec import JobSpec
from nasforge.core.types import Arch, Candidate, CandidateStatus
from nasforge.reports import uniform_note
from nasforge.spaces.compression import uniform_levels


def _arch(**choices: float) -> Arch:
    return Arch("compression", 1, {k.replace("__", ":"): v for k, v in choices.items()})


def _cand(i: int, arch: Arch, **metrics: float) -> Candidate:
    return Candidate(id=i, job_id="j", key=arch.key(), arch=arch, status=CandidateStatus.DONE, seq=i, metrics=metrics)


def test_uniform_levels() -> None:
    assert uniform_levels(_arch(bits__a=3, bits__b=3)) == {"bits": 3}
    assert uniform_levels(_arch(bits__a=3, bits__b=4)) is None
    assert uniform_levels(_arch(bits__a=4, sparsity__a=0.5, bits__b=4, sparsity__b=0.5)) == {"bits": 4, "sparsity": 0.5}
    assert uniform_levels(_arch(bits__a=4, sparsity__a=0.0, bits__b=4, sparsity__b=0.5)) is None
    assert uniform_levels(Arch("bignas_cnn", 1, {"s0.depth": 2})) is None


def test_the_note_compares_the_best_found_with_the_best_uniform_within_the_constraints() -> None:
    spec = JobSpec.model_validate({
        "name": "t", "model": {"source": "x.y:z"}, "space": {"name": "compression"}, "strategy": {"name": "evopress"},
        "objectives": [{"metric": "kl", "direction": "minimize"}, {"metric": "accuracy", "direction": "maximize"}],
        "constraints": ["avg_bits <= 3"],
    })
    done = [
        _cand(1, _arch(bits__a=4, bits__b=4), kl=0.01, accuracy=0.97, avg_bits=4.0),  # uniform, over budget
        _cand(2, _arch(bits__a=3, bits__b=3), kl=0.5, accuracy=0.90, avg_bits=3.0),
        _cand(3, _arch(bits__a=2, bits__b=2), kl=2.0, accuracy=0.60, avg_bits=2.0),
        _cand(4, _arch(bits__a=2, bits__b=4), kl=0.004, accuracy=0.96, avg_bits=2.9),
    ]
    assert uniform_note(spec, done) == (
        "uniform allocation within the constraints (bits 3 everywhere, candidate 2): kl=0.5, accuracy=0.9; "
        "best found (candidate 4): kl=0.004, accuracy=0.96 (kl 125x lower)")
    assert uniform_note(spec, done[:3]).endswith("; no mixed allocation beat it on kl")
    assert uniform_note(spec, [done[0], done[3]]) is None  # no uniform allocation within the constraints
    unbudgeted = JobSpec.model_validate({**spec.to_dict(), "constraints": ["accuracy >= 0.5"]})
    assert uniform_note(unbudgeted, done) is None  # without a budget the best kl is the largest allocation
    other = spec.model_copy(update={"space": spec.space.model_copy(update={"name": "bignas_cnn"})})
    assert uniform_note(other, done) is None


def test_other_strategies_say_their_uniform_allocation_was_met_by_chance() -> None:
    # a guided job on a joint space evaluated 2-bit / 0.7-sparse everywhere and no other uniform
    # allocation; the note called it "the uniform allocation within the constraints" (269x worse)
    # though 4-bit dense fitted the budget
    base = {"name": "t", "model": {"source": "x.y:z"}, "space": {"name": "compression"},
            "objectives": [{"metric": "kl", "direction": "minimize"}], "constraints": ["avg_bits <= 3"]}
    done = [_cand(1, _arch(bits__a=2, bits__b=2), kl=2.0, avg_bits=2.0),
            _cand(2, _arch(bits__a=2, bits__b=4), kl=0.004, avg_bits=3.0)]
    for strategy, asked in (({"name": "guided"}, False), ({"name": "random"}, False),
                            ({"name": "dp", "options": {"reference": False}}, False),
                            ({"name": "ilp"}, True), ({"name": "evopress"}, True)):
        note = uniform_note(JobSpec.model_validate({**base, "strategy": strategy}), done)
        assert note is not None
        if asked:
            assert note.startswith("uniform allocation within the constraints (bits 2 everywhere") and "happened" not in note
        else:
            assert note.startswith("best uniform allocation the search happened to evaluate within the constraints")
            assert note.endswith(f"strategy {strategy['name']!r} does not ask for the uniform allocation that uses "
                                 "the most of the budget (closed_form, dp, evopress and ilp do)")
